#pragma once
// The upstream HTTP/1.1 client: how keypool calls the real API.
//
// One Client per worker loop keeps a keep-alive pool of connections per origin. Client::start
// hands out an Exchange: one request/response on one connection, opened on demand (async DNS,
// TCP, TLS with SNI and hostname verification) or taken from the pool. The proxy writes the
// request as raw bytes (it frames head and body itself) and gets the response back as a head,
// decoded body pieces and an end, through an ExchangeHandler. This room does not rewrite,
// retry, or know about keys; it only promises to wipe the request bytes it was given.
//
// Lifetimes: the proxy owns the Exchange (unique_ptr) and may destroy it at any time, also
// from inside any ExchangeHandler callback; no callback follows. Connections own themselves
// and are freed in their libuv close callbacks, never while one of their callbacks runs.
#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "base/result.h"
#include "http/response_parser.h"

namespace keypool::tls {
class ClientContext;
}

namespace keypool::upstream {

struct Origin {
  bool tls = false;
  std::string host;  // DNS name or IP literal ("[::1]" accepted)
  uint16_t port = 0;
  // "https://host:port": the pool's key.
  std::string key() const;
  void key_into(std::string& out) const;  // the same, into a caller's buffer
};

struct ClientOptions {
  int64_t connect_timeout_ms = 5000;   // DNS + TCP + TLS handshake
  int64_t head_timeout_ms = 120000;    // since the start or the last request write, until the head
  int64_t idle_timeout_ms = 120000;    // no byte either way while the body (or tunnel) flows
  int64_t pool_idle_ms = 30000;        // an unused pooled connection is closed after this
  int64_t dns_cache_ms = 30000;        // a looked-up name's addresses serve new connections this long; 0 = none
  int64_t max_idle_per_origin = 32;
  int64_t max_response_header_bytes = 65536;
  std::string extra_ca_file;           // PEM CAs trusted in addition to the system store
  // Exchange::queued_bytes() above this calls on_write_blocked(), then on_writable() once
  // it falls to half. keypool sets it from proxy.write_high_watermark.
  int64_t write_high_watermark = 256 * 1024;
};

enum class ErrorKind {
  Dns,
  Connect,
  Tls,
  ConnectTimeout,
  HeadTimeout,
  IdleTimeout,
  Protocol,
  Closed,  // EOF or reset before the response completed
  // A connection taken from the keep-alive pool was closed (EOF, reset or a refused write)
  // before a single response byte came back: the upstream dropped it as idle just as the
  // request went out. The request can be sent again on a new connection.
  Stale,
};
const char* error_kind_name(ErrorKind kind);

using ResponseHead = http::ResponseHead;

class ExchangeHandler {  // implemented by the proxy
 public:
  virtual ~ExchangeHandler() = default;
  virtual void on_response_head(ResponseHead& head) = 0;
  // Decoded payload (chunked framing removed), or raw tunnel bytes after a 101.
  virtual void on_response_body(std::string_view data) = 0;
  // The response is complete (or the upstream closed a tunnel).
  virtual void on_response_end() = 0;
  // The exchange failed; the message names host and port, never a secret. Nothing follows.
  virtual void on_error(ErrorKind kind, const std::string& message) = 0;
  // The write queue is this connection's to watch: it says when queued_bytes() passes the
  // high watermark (ClientOptions::write_high_watermark), then when it falls to the low one
  // (half of it). The handler stops feeding it in between.
  virtual void on_write_blocked() = 0;
  virtual void on_writable() = 0;
};

class Connection;
class Client;

class Exchange {
 public:
  // Raw request bytes, queued until connected. Every buffer given here is wiped
  // (OPENSSL_cleanse) once written, so request heads carrying a key leave no copy behind.
  // After an error or once the connection closed, the bytes are wiped and dropped.
  void write(std::string bytes);
  // An empty buffer for the next write(), with the capacity of one this connection wrote
  // (and wiped) before: a request head built into it costs no allocation.
  std::string take_buffer();
  // Bytes given to write() that the socket has not yet taken (for backpressure).
  size_t queued_bytes() const;
  // Stops/restarts reading the response, e.g. while the downstream client is slow. Bytes
  // already read may still be delivered after pause_read().
  void pause_read();
  void resume_read();
  // The connection came from the keep-alive pool. Its failure before any response byte is
  // reported as ErrorKind::Stale, which the caller may retry on a fresh connection.
  bool reused() const { return reused_; }
  // The caller did not finish writing its request: the connection is closed, not pooled,
  // when this exchange is destroyed.
  void forbid_reuse();
  // If the response completed, every written byte was flushed and keep-alive allows it, the
  // connection returns to the idle pool; otherwise it is closed.
  ~Exchange();

  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;

  // Only a Client makes exchanges: the constructor is public for std::make_unique, but the
  // key it takes can be built by Client alone.
  class Key {
    friend class Client;
    Key() = default;
  };
  explicit Exchange(Key) {}

 private:
  friend class Client;
  friend class Connection;

  Connection* conn_ = nullptr;  // null once the connection closed or failed
  bool reused_ = false;
};

class Client {
 public:
  // Fails when the TLS context cannot be built (e.g. an unreadable extra_ca_file).
  static Result<std::unique_ptr<Client>> create(uv_loop_t* loop, ClientOptions opts);
  // Starts an exchange on a pooled connection for the origin or a new one. `method` tells
  // whether the response can have a body (HEAD). Callbacks run on this loop, never inside
  // start() itself.
  std::unique_ptr<Exchange> start(const Origin& origin, std::string_view method, ExchangeHandler* handler);
  // The same, in a slot the caller owns (an exchange already there is destroyed first), so
  // that an exchange per request costs no allocation. The slot must not move while it holds
  // the exchange: the connection points at it. Reuse::Fresh skips the pool, e.g. to retry
  // after ErrorKind::Stale (the other pooled connections may be as old as the one that died).
  enum class Reuse { Pooled, Fresh };
  Exchange& start(std::optional<Exchange>& slot, const Origin& origin, std::string_view method,
                  ExchangeHandler* handler, Reuse reuse = Reuse::Pooled);
  size_t open_connections() const { return conns_.size(); }
  size_t idle_connections() const;
  // Name lookups started so far (an origin given as an IP address needs none).
  uint64_t dns_lookups() const { return dns_lookups_; }
  // Closes every pooled connection (shutdown).
  void close_idle();
  // Closes everything. Exchanges should be destroyed first; any left are cut loose silently.
  ~Client();

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

 private:
  friend class Connection;
  Client(uv_loop_t* loop, ClientOptions opts, std::unique_ptr<tls::ClientContext> tls);

  void begin(Exchange& ex, const Origin& origin, std::string_view method, ExchangeHandler* handler,
             Reuse reuse);

  // Called by connections.
  bool offer_idle(Connection* c);  // false when the origin's pool is full
  void forget(Connection* c);      // c is closing
  Connection* take_idle(const std::string& key);

  uv_loop_t* loop_;
  ClientOptions opts_;
  std::unique_ptr<tls::ClientContext> tls_;
  std::unordered_set<Connection*> conns_;  // every connection not yet closing
  // Idle connections per origin key, most recently used at the back (it is the warmest).
  std::unordered_map<std::string, std::vector<Connection*>> idle_;
  std::string key_buf_;  // start()'s scratch for the origin key
  uint64_t dns_lookups_ = 0;  // counted by connections as they start a lookup

  // Addresses of names looked up lately, so that a burst of new connections to one origin
  // does not queue a lookup each on libuv's small thread pool. getaddrinfo gives no TTL:
  // entries live dns_cache_ms, and a name whose addresses all failed to connect is dropped.
  struct ResolvedName {
    std::vector<sockaddr_storage> addrs;
    uint64_t expires_ms = 0;  // uv_now
  };
  // Keyed by origin (the port is in the addresses).
  const std::vector<sockaddr_storage>* cached_addresses(const std::string& origin_key);
  void remember_addresses(const std::string& origin_key, const std::vector<sockaddr_storage>& addrs);
  void forget_addresses(const std::string& origin_key) { resolved_.erase(origin_key); }
  std::unordered_map<std::string, ResolvedName> resolved_;
};

}  // namespace keypool::upstream
