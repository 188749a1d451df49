#pragma once
// A real redis-server for tests: started as a child process on a free loopback port with
// its own temp dir and no persistence, waited for until it is ready, stopped at the end.
// A missing redis-server throws (the test fails): install it with
// packaging/install-deps.sh --test. Never skips.
//
// The server is killed if the thread that started it dies (PR_SET_PDEATHSIG), so a crashed
// or timed-out test run leaves no server behind: start servers from the test's own thread.
//
// call() is a small blocking client on the plain port for the test's own setup and checks
// (it uses redis/resp.h, so it is not a second protocol implementation).
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "redis/resp.h"
#include "support/certs.h"
#include "support/process.h"

namespace keypool::testing {

struct RedisServerOptions {
  std::string password;               // requirepass (the default user)
  std::vector<std::string> acl_users; // ACL lines without "user", e.g. "alice on >pw ~* &* +@all"
  bool tls = false;                   // also a TLS port (test PKI, no client certificates)
  std::string tls_san;                // the certificate's names instead of localhost/127.0.0.1/::1
  bool cluster = false;               // cluster mode; start() assigns it every slot
  std::vector<std::string> config;    // extra redis.conf lines
};

class RedisServer {
 public:
  explicit RedisServer(RedisServerOptions opts = {});
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  uint16_t port() const { return port_; }
  uint16_t tls_port() const { return tls_port_; }
  const TestPki& pki() const { return pki_; }
  // redis://127.0.0.1:<port> with no credentials.
  std::string url() const;

  void pause();     // SIGSTOP: the socket stays open and nothing answers
  void resume();    // SIGCONT
  void stop();      // SIGTERM, then SIGKILL after a bound
  // Stops and starts again on the same ports, empty (no persistence).
  void restart();
  bool running() const { return pid_ > 0; }
  std::string log() const;

  // One command on the plain port, authenticated as the default user when there is a
  // password. Throws on a connection or protocol failure; error replies are values.
  redis::Reply call(const std::vector<std::string>& args) const;

 private:
  void start();
  void write_config() const;
  void wait_ready();

  RedisServerOptions opts_;
  TempDir dir_;
  TestPki pki_;
  uint16_t port_ = 0;
  uint16_t tls_port_ = 0;
  uint16_t bus_port_ = 0;  // cluster bus, given explicitly: by default it is port + 10000
  pid_t pid_ = -1;
  int runs_ = 0;
};

}  // namespace keypool::testing
