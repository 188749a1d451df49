#pragma once
// Client: one connection to one Redis server, driven by a libuv loop, never blocking it.
//
// Commands are pipelined: each is written as soon as the connection is ready and its
// callback waits in a FIFO for the reply in the same position. Every command has a
// deadline (ClientOptions::timeout_ms from the call): when it passes, the callback gets a
// Timeout error at once, and the reply, if it comes later, is read and dropped. A command
// still unsent at its deadline is never sent. The connection is re-made after it drops,
// with a capped exponential backoff; while it is down, commands fail at once with
// Unavailable instead of queueing (the caller decides what to do without Redis).
//
// What this does not do: RESP3, pub/sub, MULTI, cluster redirections (MOVED/ASK replies
// come back as error values), or several connections.
//
// Callbacks always run from the loop, never inside the call that issued the command. A
// callback may destroy the Client; the remaining callbacks then get Unavailable.
#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/result.h"
#include "redis/resp.h"
#include "redis/url.h"

namespace keypool::redis {

enum class ConnState {
  Resolving,       // looking up the host name
  Connecting,      // TCP connect in progress
  Handshaking,     // TLS handshake
  Authenticating,  // AUTH / SELECT sent, commands wait for their answers
  Ready,           // commands go out as they come
  Backoff,         // the connection failed; waiting to try again, commands fail at once
  Closed,          // the Client is gone
};

const char* state_name(ConnState s);

struct ClientOptions {
  int64_t timeout_ms = 50;           // per command, from the call to the callback
  int64_t connect_timeout_ms = 1000; // lookup + connect + TLS + AUTH/SELECT
  int64_t backoff_min_ms = 50;       // first wait after a failure, doubling up to the cap
  int64_t backoff_max_ms = 2000;
  // A reply overdue this long means the server or the path is gone (a paused server, a
  // black hole): the connection is dropped and re-made rather than waited on forever.
  int64_t stall_ms = 2000;
  size_t max_pending = 65536;        // commands waiting for replies; more fail at once
  std::string extra_ca_file;         // rediss://: PEM CAs to trust beside the system ones
  ParserLimits limits;
};

// A Reply, which may be a Redis error value; or Timeout / Unavailable when no reply came.
using ReplyCallback = std::function<void(Result<Reply>)>;

// A Lua script and its SHA1, for EVALSHA.
struct Script {
  explicit Script(std::string source);
  std::string source;
  std::string sha1;  // lowercase hex
};

class Client {
 public:
  // Starts connecting at once. Errors: Invalid for a TLS context that cannot be made (a bad
  // extra_ca_file). The URL's password is kept for AUTH on every reconnect, wiped at the end.
  static Result<std::unique_ptr<Client>> create(uv_loop_t* loop, Url url, ClientOptions opts = {});
  // Pending callbacks get Unavailable now; handles close on the loop, which must run again
  // for their memory to be freed.
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  void command(std::vector<std::string> args, ReplyCallback cb);
  // EVALSHA; on NOSCRIPT (a restarted or flushed server) SCRIPT LOAD and EVALSHA again,
  // both within the first call's deadline.
  void eval(const Script& script, const std::vector<std::string>& keys, const std::vector<std::string>& args,
            ReplyCallback cb);

  // Calls cb with error from the loop: for a caller that refuses a request before sending
  // anything but must not call back inside its own call either.
  void answer_later(Error error, ReplyCallback cb);

  ConnState state() const;
  // Connections that reached Ready so far (reconnects show as more than one).
  uint64_t connects() const;
  // The server, in a form safe to log (no password).
  std::string where() const;

 private:
  class Core;
  explicit Client(Core* core) : core_(core) {}
  Core* core_;  // frees itself once its handles have closed (after ~Client)
};

}  // namespace keypool::redis
