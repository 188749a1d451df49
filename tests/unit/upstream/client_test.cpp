// Client tests: a real loop against a scripted server thread with blocking sockets on
// 127.0.0.1, port 0. Each test ends by destroying everything and asserting the loop closes
// with no live handle.
#include <doctest/doctest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "support/certs.h"
#include "upstream/client.h"

namespace {

using namespace keypool::upstream;
using keypool::testing::TestPki;

const TestPki& pki() {
  static TestPki p = keypool::testing::make_test_pki("/tmp/keypool-test-pki");
  return p;
}

// One accepted connection, plain or TLS, as the server script sees it.
class ServerConn {
 public:
  ServerConn(int fd, SSL* ssl) : fd_(fd), ssl_(ssl) {}
  // Reads until the end of a request head; false on EOF/timeout. Anything after the head
  // stays in extra().
  bool read_head(std::string* head) {
    for (;;) {
      auto pos = buf_.find("\r\n\r\n");
      if (pos != std::string::npos) {
        *head = buf_.substr(0, pos + 4);
        buf_.erase(0, pos + 4);
        return true;
      }
      if (!recv_more()) return false;
    }
  }
  // Reads exactly n bytes (after any head already read).
  bool read_exact(size_t n, std::string* out) {
    while (buf_.size() < n)
      if (!recv_more()) return false;
    *out = buf_.substr(0, n);
    buf_.erase(0, n);
    return true;
  }
  bool recv_more() {
    char tmp[4096];
    ssize_t n = ssl_ ? SSL_read(ssl_, tmp, sizeof tmp) : ::recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0) return false;
    buf_.append(tmp, static_cast<size_t>(n));
    return true;
  }
  void send(const std::string& s) {
    if (ssl_) {
      SSL_write(ssl_, s.data(), static_cast<int>(s.size()));
    } else {
      size_t off = 0;
      while (off < s.size()) {
        ssize_t n = ::send(fd_, s.data() + off, s.size() - off, MSG_NOSIGNAL);
        if (n <= 0) return;
        off += static_cast<size_t>(n);
      }
    }
  }
  // Waits (bounded) until the client closes.
  void wait_eof() {
    while (recv_more()) {
    }
  }
  std::string& buffered() { return buf_; }
  // The close that follows the script sends a reset instead of a FIN.
  void reset_on_close() {
    linger l{1, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  }

 private:
  int fd_;
  SSL* ssl_;
  std::string buf_;
};

// Accepts connections one after another and runs the script on each.
class TestServer {
 public:
  using Script = std::function<void(ServerConn&, int index)>;
  explicit TestServer(Script script, const TestPki* tls = nullptr, std::string cert = "", std::string key = "")
      : script_(std::move(script)) {
    if (tls) {
      ctx_ = SSL_CTX_new(TLS_server_method());
      REQUIRE(SSL_CTX_use_certificate_chain_file(ctx_, (cert.empty() ? tls->server_cert : cert).c_str()) == 1);
      REQUIRE(SSL_CTX_use_PrivateKey_file(ctx_, (key.empty() ? tls->server_key : key).c_str(), SSL_FILETYPE_PEM) == 1);
    }
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd_, 16) == 0);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~TestServer() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
    if (ctx_) SSL_CTX_free(ctx_);
  }
  uint16_t port = 0;
  std::atomic<int> accepted{0};
  std::atomic<int> closed{0};
  std::atomic<int> handshakes_failed{0};

 private:
  void run() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      int index = accepted++;
      // Bounded: no test waits on a socket for more than 3 s.
      timeval tv{3, 0};
      ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      ::setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      SSL* ssl = nullptr;
      if (ctx_) {
        ssl = SSL_new(ctx_);
        SSL_set_fd(ssl, c);
        if (SSL_accept(ssl) != 1) {
          ++handshakes_failed;
          ERR_clear_error();
          SSL_free(ssl);
          ::close(c);
          continue;
        }
      }
      ServerConn conn(c, ssl);
      script_(conn, index);
      if (ssl) {
        SSL_shutdown(ssl);
        SSL_free(ssl);
      }
      ::close(c);
      ++closed;
    }
  }
  Script script_;
  SSL_CTX* ctx_ = nullptr;
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

struct Recorder : ExchangeHandler {
  std::optional<ResponseHead> head;
  std::string body;
  int ends = 0;
  std::optional<ErrorKind> error;
  std::string error_message;
  int writable = 0;
  int blocked = 0;
  std::function<void()> on_head_hook;
  std::function<void(std::string_view)> on_body_hook;

  void on_response_head(ResponseHead& h) override {
    head = h;
    if (on_head_hook) on_head_hook();
  }
  void on_response_body(std::string_view d) override {
    body.append(d);
    if (on_body_hook) on_body_hook(d);
  }
  void on_response_end() override { ++ends; }
  void on_error(ErrorKind k, const std::string& m) override {
    error = k;
    error_message = m;
  }
  void on_write_blocked() override { ++blocked; }
  void on_writable() override { ++writable; }
  bool done() const { return ends > 0 || error.has_value(); }
};

// A loop per test. run_until spins it (bounded) with a ticking timer so that a blocked
// UV_RUN_ONCE always wakes to re-check the condition.
struct Loop {
  uv_loop_t loop;
  Loop() { uv_loop_init(&loop); }
  bool run_until(const std::function<bool()>& pred, int timeout_ms = 5000) {
    uv_timer_t tick;
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, [](uv_timer_t*) {}, 5, 5);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    bool ok = false;
    while (std::chrono::steady_clock::now() < deadline) {
      if (pred()) {
        ok = true;
        break;
      }
      uv_run(&loop, UV_RUN_ONCE);
    }
    uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
    uv_run(&loop, UV_RUN_NOWAIT);
    return ok;
  }
  void sleep_ms(int ms) {
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    run_until([&] { return std::chrono::steady_clock::now() >= until; }, ms + 100);
  }
  // Everything must have been destroyed: the loop then drains the close callbacks and has
  // no live handle left.
  ~Loop() {
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
  }
};

std::unique_ptr<Client> make_client(uv_loop_t* loop, ClientOptions o = {}) {
  auto c = Client::create(loop, std::move(o));
  REQUIRE(c.ok());
  return std::move(c.value());
}

Origin local(uint16_t port, bool tls = false, std::string host = "127.0.0.1") { return Origin{tls, host, port}; }

std::string get_request(const std::string& path = "/") {
  return "GET " + path + " HTTP/1.1\r\nHost: test\r\n\r\n";
}

}  // namespace

TEST_CASE("upstream: GET with a Content-Length response") {
  std::string seen;
  TestServer server([&](ServerConn& c, int) {
    if (!c.read_head(&seen)) return;
    c.send("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Test: yes\r\n\r\nhello");
    c.wait_eof();
  });
  Loop l;
  {
    auto client = make_client(&l.loop);
    Recorder r;
    auto ex = client->start(local(server.port), "GET", &r);
    CHECK(!ex->reused());
    ex->write("GET /a HTTP/1.1\r\n");
    ex->write("Host: test\r\n\r\n");
    CHECK(ex->queued_bytes() > 0);
    REQUIRE(l.run_until([&] { return r.done(); }));
    CHECK(!r.error);
    REQUIRE(r.head);
    CHECK(r.head->status == 200);
    CHECK(r.head->content_length == 5u);
    CHECK(r.head->keep_alive);
    CHECK(r.body == "hello");
    CHECK(ex->queued_bytes() == 0);
    CHECK(seen == "GET /a HTTP/1.1\r\nHost: test\r\n\r\n");
    CHECK(client->open_connections() == 1);
    ex.reset();
    CHECK(client->idle_connections() == 1);
  }
}

// A lookup goes through libuv's thread pool: an origin given as an address skips it, and a
// name's addresses serve new connections for dns_cache_ms.
TEST_CASE("upstream: IP addresses are not looked up; names are, then cached") {
  TestServer server([&](ServerConn& c, int) {
    std::string h;
    if (!c.read_head(&h)) return;
    c.send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
  });
  auto fetch = [&](Loop& l, Client& client, const std::string& host, uint16_t port) {
    Recorder r;
    auto ex = client.start(local(port, false, host), "GET", &r);
    ex->write(get_request());
    REQUIRE(l.run_until([&] { return r.done(); }));
    ex.reset();
    client.close_idle();  // the next fetch needs a new connection, hence addresses
    return r.error ? std::optional<ErrorKind>(r.error) : std::nullopt;
  };
  SUBCASE("cached") {
    Loop l;
    auto client = make_client(&l.loop);
    CHECK(!fetch(l, *client, "127.0.0.1", server.port));
    CHECK(client->dns_lookups() == 0);
    CHECK(!fetch(l, *client, "localhost", server.port));
    CHECK(client->dns_lookups() == 1);
    CHECK(!fetch(l, *client, "localhost", server.port));
    CHECK(client->dns_lookups() == 1);  // the cached addresses
    // Another port of the same name is another origin: its addresses carry its port.
    uint16_t closed_port = 0;
    {
      TestServer gone([](ServerConn&, int) {});
      closed_port = gone.port;
    }
    CHECK(fetch(l, *client, "localhost", closed_port) == ErrorKind::Connect);
    CHECK(client->dns_lookups() == 2);
    // Addresses that would not connect are not trusted again.
    CHECK(fetch(l, *client, "localhost", closed_port) == ErrorKind::Connect);
    CHECK(client->dns_lookups() == 3);
    CHECK(!fetch(l, *client, "localhost", server.port));
    CHECK(client->dns_lookups() == 3);
    client.reset();
  }
  SUBCASE("not cached with dns_cache_ms 0") {
    Loop l;
    ClientOptions o;
    o.dns_cache_ms = 0;
    auto client = make_client(&l.loop, o);
    CHECK(!fetch(l, *client, "localhost", server.port));
    CHECK(!fetch(l, *client, "localhost", server.port));
    CHECK(client->dns_lookups() == 2);
    client.reset();
  }
}

TEST_CASE("upstream: chunked response delivered in pieces") {
  TestServer server([&](ServerConn& c, int) {
    std::string h;
    if (!c.read_head(&h)) return;
    c.send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    c.send("3\r\nabc\r");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    c.send("\n4\r\ndefg\r\n");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    c.send("0\r\n\r\n");
    c.wait_eof();
  });
  Loop l;
  auto client = make_client(&l.loop);
  Recorder r;
  int pieces = 0;
  r.on_body_hook = [&](std::string_view) { ++pieces; };
  auto ex = client->start(local(server.port), "GET", &r);
  ex->write(get_request());
  REQUIRE(l.run_until([&] { return r.done(); }));
  CHECK(!r.error);
  CHECK(r.head->chunked);
  CHECK(r.body == "abcdefg");
  CHECK(pieces >= 2);
  CHECK(r.ends == 1);
  ex.reset();
  client.reset();
}

TEST_CASE("upstream: keep-alive reuse, and a pooled connection the peer closes is dropped") {
  TestServer server([&](ServerConn& c, int) {
    std::string h;
    for (int i = 0; i < 2; ++i) {
      if (!c.read_head(&h)) return;
      c.send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nr" + std::to_string(i));
    }
    // After the second response the server hangs up; the idle client must notice.
  });
  Loop l;
  auto client = make_client(&l.loop);
  for (int i = 0; i < 2; ++i) {
    Recorder r;
    auto ex = client->start(local(server.port), "GET", &r);
    CHECK(ex->reused() == (i == 1));
    ex->write(get_request());
    REQUIRE(l.run_until([&] { return r.done(); }));
    CHECK(!r.error);
    CHECK(r.body == "r" + std::to_string(i));
    ex.reset();
    // The second response may arrive together with the server's FIN, which drops it at once.
    if (i == 0) CHECK(client->idle_connections() == 1);
  }
  CHECK(server.accepted == 1);
  CHECK(l.run_until([&] { return client->idle_connections() == 0; }));
  CHECK(client->open_connections() == 0);
}

TEST_CASE("upstream: an exchange in a caller's slot; a pooled connection lends its written buffer back") {
  std::string seen[2];
  TestServer server([&](ServerConn& c, int) {
    for (int i = 0; i < 2; ++i) {
      if (!c.read_head(&seen[i])) return;
      c.send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nr" + std::to_string(i));
    }
    c.wait_eof();
  });
  Loop l;
  auto client = make_client(&l.loop);
  std::optional<Exchange> slot;
  size_t first_capacity = 0;
  for (int i = 0; i < 2; ++i) {
    Recorder r;
    Exchange& ex = client->start(slot, local(server.port), "GET", &r);
    CHECK(&ex == &*slot);
    CHECK(ex.reused() == (i == 1));
    std::string buf = ex.take_buffer();
    CHECK(buf.empty());
    if (i == 1) CHECK(buf.capacity() == first_capacity);  // the first request's storage
    buf.assign(get_request("/long/enough/to/leave/the/small/string/buffer/" + std::to_string(i)));
    if (i == 0) first_capacity = buf.capacity();
    ex.write(std::move(buf));
    REQUIRE(l.run_until([&] { return r.done(); }));
    CHECK(!r.error);
    CHECK(r.body == "r" + std::to_string(i));
    slot.reset();
    if (i == 0) CHECK(client->idle_connections() == 1);
  }
  CHECK(seen[1] == get_request("/long/enough/to/leave/the/small/string/buffer/1"));
  CHECK(server.accepted == 1);
  client.reset();
}

// A pooled connection whose peer reset it while the loop was busy elsewhere: the first write
// fails in the kernel. The exchange's owner calls write() in the middle of its own work
// (ProxyExchange writes the head, then the held body); an error handed back inside that call
// made it fail over under its own feet and send the body twice, or write through an exchange
// it had just dropped.
TEST_CASE("upstream: a write the socket refuses is reported from the loop, never inside write()") {
  std::atomic<bool> answered{false};
  TestServer server([&](ServerConn& c, int) {
    std::string h;
    if (!c.read_head(&h)) return;
    c.send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    // Reset only once the client has read the answer: a reset discards unread bytes.
    for (int i = 0; i < 3000 && !answered; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    c.reset_on_close();
  });
  Loop l;
  auto client = make_client(&l.loop);
  {
    Recorder r;
    auto ex = client->start(local(server.port), "GET", &r);
    ex->write(get_request());
    REQUIRE(l.run_until([&] { return r.done(); }));
    REQUIRE(!r.error);
    ex.reset();
    REQUIRE(client->idle_connections() == 1);
  }
  answered = true;
  // Wait for the reset without running the loop, so the pool has not seen it yet.
  for (int i = 0; i < 3000 && server.closed == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  REQUIRE(server.closed == 1);

  struct Watcher : Recorder {
    bool inside_write = false;
    bool called_inside = false;
    void on_error(ErrorKind k, const std::string& m) override {
      if (inside_write) called_inside = true;
      Recorder::on_error(k, m);
    }
  } w;
  auto ex = client->start(local(server.port), "GET", &w);
  REQUIRE(ex->reused());
  w.inside_write = true;
  ex->write(get_request());
  ex->write("and the body after it");
  w.inside_write = false;
  CHECK_FALSE(w.called_inside);
  CHECK_FALSE(w.error);
  REQUIRE(l.run_until([&] { return w.done(); }));
  CHECK(w.error == ErrorKind::Stale);  // pooled, and nothing came back: the caller may retry
  CHECK(w.ends == 0);
  ex.reset();
  CHECK(l.run_until([&] { return client->open_connections() == 0; }));
}

// Stale tells the caller that sending the request again on a new connection is safe as far as
// the connection can tell: it came from the pool and not one response byte came back. A new
// connection, or one that had started to answer, fails as Closed.
TEST_CASE("upstream: a pooled connection that dies before answering is Stale; Reuse::Fresh skips the pool") {
  enum class Second { Fin, Reset, PartialHead };
  Second second = Second::Fin;
  SUBCASE("FIN") { second = Second::Fin; }
  SUBCASE("reset") { second = Second::Reset; }
  SUBCASE("part of a head, then FIN") { second = Second::PartialHead; }
  // The server takes one connection at a time: connection 0 answers once, then meets the
  // subcase's ending on its second request; every later connection closes without answering.
  TestServer server([&](ServerConn& c, int index) {
    std::string h;
    if (!c.read_head(&h) || index > 0) return;
    c.send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    if (!c.read_head(&h)) return;
    if (second == Second::Reset) c.reset_on_close();
    if (second == Second::PartialHead) c.send("HTTP/1.1 200 OK\r\nContent-Le");
  });
  Loop l;
  auto client = make_client(&l.loop);
  std::optional<Exchange> slot;
  auto fetch = [&](Client::Reuse reuse, bool want_reused) {
    Recorder r;
    Exchange& ex = client->start(slot, local(server.port), "GET", &r, reuse);
    CHECK(ex.reused() == want_reused);
    ex.write(get_request());
    REQUIRE(l.run_until([&] { return r.done(); }));
    slot.reset();
    CHECK(r.ends + (r.error ? 1 : 0) == 1);
    return r.error;
  };
  CHECK(!fetch(Client::Reuse::Pooled, false));
  REQUIRE(client->idle_connections() == 1);
  // Fresh: a new connection although one is idle, which stays in the pool.
  client->start(slot, local(server.port), "GET", nullptr, Client::Reuse::Fresh);
  CHECK(!slot->reused());
  CHECK(client->open_connections() == 2);
  CHECK(client->idle_connections() == 1);
  slot.reset();
  // The pooled connection, closed before (or while) answering.
  auto err = fetch(Client::Reuse::Pooled, true);
  REQUIRE(err);
  CHECK(*err == (second == Second::PartialHead ? ErrorKind::Closed : ErrorKind::Stale));
  CHECK(std::string(error_kind_name(*err)) == (second == Second::PartialHead ? "closed" : "stale_connection"));
  // A new connection closed before answering is Closed: only a pooled one can be stale.
  CHECK(fetch(Client::Reuse::Pooled, false) == ErrorKind::Closed);
  client.reset();
}

TEST_CASE("upstream: pooled connections expire after pool_idle_ms, close_idle empties the pool") {
  TestServer server([&](ServerConn& c, int) {
    std::string h;
    if (!c.read_head(&h)) return;
    c.send("HTTP/1.1 204 No Content\r\n\r\n");
    c.wait_eof();
  });
  Loop l;
  ClientOptions o;
  o.pool_idle_ms = 100;
  auto client = make_client(&l.loop, o);
  for (int round = 0; round < 2; ++round) {
    Recorder r;
    auto ex = client->start(local(server.port), "GET", &r);
    ex->write(get_request());
    REQUIRE(l.run_until([&] { return r.done(); }));
    CHECK(r.head->status == 204);
    ex.reset();
    CHECK(client->idle_connections() == 1);
    if (round == 0) {
      CHECK(l.run_until([&] { return client->idle_connections() == 0; }, 2000));
    } else {
      client->close_idle();
      CHECK(client->idle_connections() == 0);
      CHECK(client->open_connections() == 0);
    }
  }
}

TEST_CASE("upstream: HEAD response has no body and keeps the connection") {
  TestServer server([&](ServerConn& c, int) {
    std::string h;
    if (!c.read_head(&h)) return;
    c.send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
    c.wait_eof();
  });
  Loop l;
  auto client = make_client(&l.loop);
  Recorder r;
  auto ex = client->start(local(server.port), "HEAD", &r);
  ex->write("HEAD / HTTP/1.1\r\nHost: test\r\n\r\n");
  REQUIRE(l.run_until([&] { return r.done(); }));
  CHECK(!r.error);
  CHECK(r.head->content_length == 100u);
  CHECK(r.body.empty());
  ex.reset();
  CHECK(client->idle_connections() == 1);
}

TEST_CASE("upstream: body delimited by EOF completes; truncated body is Closed") {
  TestServer server([&](ServerConn& c, int index) {
    std::string h;
    if (!c.read_head(&h)) return;
    if (index == 0) {
      c.send("HTTP/1.1 200 OK\r\n\r\nuntil ");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      c.send("close");
    } else {
      c.send("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    }
  });
  Loop l;
  auto client = make_client(&l.loop);
  {
    Recorder r;
    auto ex = client->start(local(server.port), "GET", &r);
    ex->write(get_request());
    REQUIRE(l.run_until([&] { return r.done(); }));
    CHECK(!r.error);
    CHECK(r.body == "until close");
    CHECK(!r.head->keep_alive);
  }
  {
    Recorder r;
    auto ex = client->start(local(server.port), "GET", &r);
    CHECK(!ex->reused());
    ex->write(get_request());
    REQUIRE(l.run_until([&] { return r.done(); }));
    REQUIRE(r.error);
    CHECK(*r.error == ErrorKind::Closed);
    CHECK(r.body == "abc");
    CHECK(ex->queued_bytes() == 0);
    ex->write("ignored after the error");
  }
  CHECK(l.run_until([&] { return client->open_connections() == 0; }));
}

TEST_CASE("upstream: malformed status line is a Protocol error") {
  TestServer server([&](ServerConn& c, int) {
    std::string h;
    if (!c.read_head(&h)) return;
    c.send("HTTP/1.1 2x0 Fine\r\n\r\n");
    c.wait_eof();
  });
  Loop l;
  auto client = make_client(&l.loop);
  Recorder r;
  auto ex = client->start(local(server.port), "GET", &r);
  ex->write(get_request());
  REQUIRE(l.run_until([&] { return r.done(); }));
  REQUIRE(r.error);
  CHECK(*r.error == ErrorKind::Protocol);
  CHECK(!r.head);
}

TEST_CASE("upstream: oversized response head is a Protocol error") {
  TestServer server([&](ServerConn& c, int) {
    std::string h;
    if (!c.read_head(&h)) return;
    c.send("HTTP/1.1 200 OK\r\nX-Big: " + std::string(2000, 'x') + "\r\n\r\n");
    c.wait_eof();
  });
  Loop l;
  ClientOptions o;
  o.max_response_header_bytes = 1024;
  auto client = make_client(&l.loop, o);
  Recorder r;
  auto ex = client->start(local(server.port), "GET", &r);
  ex->write(get_request());
  REQUIRE(l.run_until([&] { return r.done(); }));
  REQUIRE(r.error);
  CHECK(*r.error == ErrorKind::Protocol);
}

TEST_CASE("upstream: connection refused is a Connect error, delivered from the loop") {
  // Find a port nobody listens on: bind, note, close.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  uint16_t port = ntohs(a.sin_port);
  ::close(fd);

  Loop l;
  auto client = make_client(&l.loop);
  Recorder r;
  auto ex = client->start(local(port), "GET", &r);
  CHECK(!r.done());
  ex->write(get_request());
  REQUIRE(l.run_until([&] { return r.done(); }));
  REQUIRE(r.error);
  CHECK(*r.error == ErrorKind::Connect);
  CHECK(r.error_message.find("127.0.0.1:" + std::to_string(port)) != std::string::npos);
  ex.reset();
  CHECK(client->open_connections() == 0);
}

TEST_CASE("upstream: no head in time is a HeadTimeout") {
  TestServer server([&](ServerConn& c, int) {
    std::string h;
    if (!c.read_head(&h)) return;
    c.wait_eof();  // never answers
  });
  Loop l;
  ClientOptions o;
  o.head_timeout_ms = 200;
  auto client = make_client(&l.loop, o);
  Recorder r;
  auto start = std::chrono::steady_clock::now();
  auto ex = client->start(local(server.port), "GET", &r);
  ex->write(get_request());
  REQUIRE(l.run_until([&] { return r.done(); }));
  auto took = std::chrono::steady_clock::now() - start;
  REQUIRE(r.error);
  CHECK(*r.error == ErrorKind::HeadTimeout);
  CHECK(took >= std::chrono::milliseconds(190));
}

TEST_CASE("upstream: a reused connection waits its whole head timeout, not the pool deadline it had") {
  // The timer stays armed for the earliest deadline and re-arms when it fires early: the
  // pool's 100 ms must not cut the next request's 400 ms head timeout short.
  TestServer server([&](ServerConn& c, int) {
    std::string h;
    if (!c.read_head(&h)) return;
    c.send("HTTP/1.1 204 No Content\r\n\r\n");
    if (!c.read_head(&h)) return;
    c.wait_eof();  // the second request is never answered
  });
  Loop l;
  ClientOptions o;
  o.pool_idle_ms = 100;
  o.head_timeout_ms = 400;
  auto client = make_client(&l.loop, o);
  {
    Recorder r;
    auto ex = client->start(local(server.port), "GET", &r);
    ex->write(get_request());
    REQUIRE(l.run_until([&] { return r.done(); }));
    REQUIRE(r.head->status == 204);
  }
  REQUIRE(client->idle_connections() == 1);
  Recorder r;
  auto start = std::chrono::steady_clock::now();
  auto ex = client->start(local(server.port), "GET", &r);
  CHECK(ex->reused());
  ex->write(get_request());
  REQUIRE(l.run_until([&] { return r.done(); }, 3000));
  auto took = std::chrono::steady_clock::now() - start;
  REQUIRE(r.error);
  CHECK(*r.error == ErrorKind::HeadTimeout);
  CHECK(took >= std::chrono::milliseconds(390));
  CHECK(took < std::chrono::milliseconds(2000));
}

TEST_CASE("upstream: a stalled body is an IdleTimeout") {
  TestServer server([&](ServerConn& c, int) {
    std::string h;
    if (!c.read_head(&h)) return;
    c.send("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab");
    c.wait_eof();
  });
  Loop l;
  ClientOptions o;
  o.idle_timeout_ms = 150;
  auto client = make_client(&l.loop, o);
  Recorder r;
  auto ex = client->start(local(server.port), "GET", &r);
  ex->write(get_request());
  REQUIRE(l.run_until([&] { return r.done(); }));
  REQUIRE(r.error);
  CHECK(*r.error == ErrorKind::IdleTimeout);
  CHECK(r.body == "ab");
}

TEST_CASE("upstream: HTTPS with the test CA as extra_ca_file, by name and by IP, reused") {
  TestServer server(
      [&](ServerConn& c, int) {
        std::string h;
        while (c.read_head(&h)) c.send("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure");
      },
      &pki());
  Loop l;
  ClientOptions o;
  o.extra_ca_file = pki().ca_cert;
  auto client = make_client(&l.loop, o);
  int round = 0;
  for (const char* host : {"localhost", "127.0.0.1", "127.0.0.1"}) {
    CAPTURE(host);
    ++round;
    Recorder r;
    auto ex = client->start(local(server.port, true, host), "GET", &r);
    ex->write(get_request());
    REQUIRE(l.run_until([&] { return r.done(); }));
    CHECK(r.error_message == "");
    CHECK(!r.error);
    CHECK(r.body == "secure");
    CHECK(ex->reused() == (round == 3));
  }
  CHECK(server.accepted == 2);  // localhost and 127.0.0.1 are different origins
}

TEST_CASE("upstream: HTTPS with an untrusted CA or a wrong name is a Tls error") {
  TestServer server([&](ServerConn& c, int) { c.wait_eof(); }, &pki());
  Loop l;
  {
    auto client = make_client(&l.loop);  // system trust store only
    Recorder r;
    auto ex = client->start(local(server.port, true), "GET", &r);
    ex->write(get_request());
    REQUIRE(l.run_until([&] { return r.done(); }));
    REQUIRE(r.error);
    CHECK(*r.error == ErrorKind::Tls);
    CHECK(r.error_message.find("certificate verify failed") != std::string::npos);
    CHECK(r.error_message.find("local issuer") != std::string::npos);
  }
  auto other = keypool::testing::make_test_pki("/tmp/keypool-test-pki-other", "DNS:other.example");
  TestServer wrong([&](ServerConn& c, int) { c.wait_eof(); }, &other);
  {
    ClientOptions o;
    o.extra_ca_file = other.ca_cert;
    auto client = make_client(&l.loop, o);
    for (const char* host : {"localhost", "127.0.0.1"}) {
      CAPTURE(host);
      Recorder r;
      auto ex = client->start(local(wrong.port, true, host), "GET", &r);
      REQUIRE(l.run_until([&] { return r.done(); }));
      REQUIRE(r.error);
      CHECK(*r.error == ErrorKind::Tls);
      CHECK(r.error_message.find("mismatch") != std::string::npos);
    }
  }
}

TEST_CASE("upstream: an unreadable extra CA file fails Client::create") {
  uv_loop_t loop;
  uv_loop_init(&loop);
  ClientOptions o;
  o.extra_ca_file = "/nonexistent/ca.pem";
  auto c = Client::create(&loop, o);
  REQUIRE(!c.ok());
  CHECK(c.error().message.find("/nonexistent/ca.pem") != std::string::npos);
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("upstream: 101 upgrade then bytes both ways until the upstream closes") {
  TestServer server([&](ServerConn& c, int) {
    std::string h;
    if (!c.read_head(&h)) return;
    c.send("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nhi|");
    std::string got;
    if (!c.read_exact(4, &got)) return;
    c.send(got);  // echo, then hang up
  });
  Loop l;
  auto client = make_client(&l.loop);
  Recorder r;
  auto ex = client->start(local(server.port), "GET", &r);
  ex->write("GET / HTTP/1.1\r\nHost: t\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n");
  REQUIRE(l.run_until([&] { return r.body == "hi|"; }));
  CHECK(r.head->status == 101);
  CHECK(r.head->upgrade);
  ex->write("ping");
  REQUIRE(l.run_until([&] { return r.done(); }));
  CHECK(!r.error);
  CHECK(r.body == "hi|ping");
  CHECK(r.ends == 1);
  ex.reset();
  CHECK(client->idle_connections() == 0);
}

TEST_CASE("upstream: destroying the Exchange inside a callback is safe") {
  TestServer server([&](ServerConn& c, int) {
    std::string h;
    while (c.read_head(&h)) c.send("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc");
  });
  Loop l;
  auto client = make_client(&l.loop);
  {
    Recorder r;
    std::unique_ptr<Exchange> ex;
    r.on_head_hook = [&] { ex.reset(); };
    ex = client->start(local(server.port), "GET", &r);
    ex->write(get_request());
    REQUIRE(l.run_until([&] { return r.head.has_value(); }));
    CHECK(!ex);
    CHECK(r.body.empty());  // no callback after the exchange went away
    CHECK(r.ends == 0);
    CHECK(l.run_until([&] { return client->open_connections() == 0; }));
  }
  {
    // Destroyed in on_response_end: the connection goes back to the pool mid-callback.
    Recorder r;
    std::unique_ptr<Exchange> ex;
    ex = client->start(local(server.port), "GET", &r);
    struct EndKiller : Recorder {
      std::unique_ptr<Exchange>* ex;
      void on_response_end() override {
        Recorder::on_response_end();
        ex->reset();
      }
    } k;
    k.ex = &ex;
    ex = client->start(local(server.port), "GET", &k);
    ex->write(get_request());
    REQUIRE(l.run_until([&] { return k.done(); }));
    CHECK(!ex);
    CHECK(client->idle_connections() == 1);
  }
}

TEST_CASE("upstream: write backpressure reports on_writable after draining") {
  // The server reads the request body slowly only after a pause, so the queue builds up.
  const size_t total = 4 * 1024 * 1024;
  TestServer server([&](ServerConn& c, int) {
    std::string h;
    if (!c.read_head(&h)) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::string body;
    if (!c.read_exact(total, &body)) return;
    c.send("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    c.wait_eof();
  });
  Loop l;
  ClientOptions o;
  o.write_high_watermark = 64 * 1024;
  auto client = make_client(&l.loop, o);
  Recorder r;
  auto ex = client->start(local(server.port), "POST", &r);
  ex->write("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(total) + "\r\n\r\n");
  ex->write(std::string(total, 'b'));
  CHECK(ex->queued_bytes() > 64 * 1024);
  CHECK(r.blocked == 1);
  REQUIRE(l.run_until([&] { return r.done(); }));
  CHECK(!r.error);
  CHECK(r.blocked == 1);
  CHECK(r.writable == 1);
  CHECK(ex->queued_bytes() == 0);
}
