// Hardening: what a hostile or broken peer on either side can make keypool do. Request
// framing that two parsers could read differently (smuggling), odd request lines and
// targets, slow and idle clients, the connection cap, upstream answers that are malformed or
// quote the key, a client that vanishes mid-response, a kill -9 during a burst of admin
// writes, and rotating the master key. Every refused request is checked to have reached no
// upstream, and every 400 to close the connection.
#include <doctest/doctest.h>

#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <set>
#include <thread>

#include "fixture.h"
#include "proxy_helpers.h"
#include "support/fake_upstream.h"

using namespace keypool::testing;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

const std::string kKey = "sk-hard-QWERTYUIOPasdfghjkl-12345678";



// A FakeUpstream, a keypool with service "svc" pointing at it, tier "t", one key (kKey) and a
// team token.
struct Rig {
  FakeUpstream up;
  Keypool kp;
  std::string token;
  explicit Rig(Handler h = json_ok(), const std::map<std::string, std::string>& cfg = {})
      : up(std::move(h)), kp({}, false) {
    if (!cfg.empty()) kp.write_config(cfg);
    kp.write_service("svc", service_yaml("svc", up.base_url()));
    kp.start();
    token = setup_pool(kp, "svc", {kKey});
  }
  std::string auth() const { return "Authorization: Bearer " + token + "\r\n"; }
};

// The one error shape, as JSON.
void check_json_error(const Response& r, int status, const std::string& code = "") {
  INFO("status " << r.status << " body: " << r.body);
  CHECK(r.status == status);
  CHECK(r.header("content-type").find("application/json") == 0);
  auto j = json::parse(r.body, nullptr, false);
  REQUIRE_FALSE(j.is_discarded());
  REQUIRE(j.contains("error"));
  if (!code.empty()) CHECK(j["error"]["code"] == code);
}

// Sends raw bytes that keypool must refuse with `status`; checks the JSON error, that
// keypool closes the connection afterwards, and that nothing reached the upstream.
void expect_refused(Rig& rig, const std::string& raw, int status, const std::string& code = "") {
  auto c = Connection::connect("127.0.0.1", rig.kp.port, 5000);
  c.send_raw(raw);
  Response r;
  try {
    r = c.read_response();
  } catch (const std::exception& e) {
    FAIL("no response to a request keypool must refuse: " << std::string(e.what()));
    return;
  }
  check_json_error(r, status, code);
  CHECK(c.closed_by_peer(3000));
  sleep_ms(100);  // anything keypool had started upstream would have arrived by now
  CHECK(rig.up.request_count() == 0);
  CHECK(rig.up.connections_accepted() == 0);
  // And keypool is fine afterwards.
  CHECK(rig.kp.get("/health").status == 200);
}

std::string proxied_get(const std::string& headers, const std::string& target = "/v1/svc/x",
                        const std::string& version = "HTTP/1.1") {
  return "GET " + target + " " + version + "\r\n" + headers + "\r\n";
}

}  // namespace

// ---------------------------------------------------------------- request framing

TEST_CASE("hardening: Content-Length together with Transfer-Encoding is refused") {
  Rig rig;
  expect_refused(rig,
                 "POST /v1/svc/x HTTP/1.1\r\nHost: x\r\n" + rig.auth() +
                     "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v1/svc/smuggled HTTP/1.1\r\n",
                 400, "bad_framing");
}

TEST_CASE("hardening: two differing Content-Length headers are refused") {
  Rig rig;
  expect_refused(rig,
                 "POST /v1/svc/x HTTP/1.1\r\nHost: x\r\n" + rig.auth() +
                     "Content-Length: 3\r\nContent-Length: 10\r\n\r\nabcdefghij",
                 400, "bad_framing");
}

TEST_CASE("hardening: repeated identical Content-Length headers are refused") {
  Rig rig;
  expect_refused(rig,
                 "POST /v1/svc/x HTTP/1.1\r\nHost: x\r\n" + rig.auth() +
                     "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
                 400, "bad_framing");
}

TEST_CASE("hardening: a comma list in Content-Length is refused") {
  Rig rig;
  expect_refused(rig,
                 "POST /v1/svc/x HTTP/1.1\r\nHost: x\r\n" + rig.auth() + "Content-Length: 3, 3\r\n\r\nabc", 400);
}

TEST_CASE("hardening: Transfer-Encoding: gzip, chunked is refused") {
  Rig rig;
  expect_refused(rig,
                 "POST /v1/svc/x HTTP/1.1\r\nHost: x\r\n" + rig.auth() +
                     "Transfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                 400, "bad_framing");
}

TEST_CASE("hardening: Transfer-Encoding: chunked, gzip is refused") {
  Rig rig;
  expect_refused(rig,
                 "POST /v1/svc/x HTTP/1.1\r\nHost: x\r\n" + rig.auth() +
                     "Transfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                 400);
}

TEST_CASE("hardening: two Transfer-Encoding: chunked headers are refused") {
  Rig rig;
  expect_refused(rig,
                 "POST /v1/svc/x HTTP/1.1\r\nHost: x\r\n" + rig.auth() +
                     "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                 400);
}

TEST_CASE("hardening: chunked on HTTP/1.0 is refused") {
  Rig rig;
  expect_refused(rig,
                 "POST /v1/svc/x HTTP/1.0\r\nHost: x\r\n" + rig.auth() +
                     "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                 400, "bad_framing");
}

TEST_CASE("hardening: obs-fold (a header line starting with a space) is refused") {
  Rig rig;
  expect_refused(rig, proxied_get("Host: x\r\n" + rig.auth() + "X-Folded: first\r\n second\r\n"), 400, "bad_header");
}

TEST_CASE("hardening: obs-fold with a tab, after an empty value, or split across writes is refused") {
  SUBCASE("tab") {
    Rig rig;
    expect_refused(rig, proxied_get("Host: x\r\n" + rig.auth() + "X-Folded: first\r\n\tsecond\r\n"), 400, "bad_header");
  }
  SUBCASE("after an empty value") {
    Rig rig;
    expect_refused(rig, proxied_get("Host: x\r\n" + rig.auth() + "Transfer-Encoding:\r\n chunked\r\n"), 400,
                   "bad_header");
  }
  SUBCASE("the fold's line break and its blank in separate writes") {
    Rig rig;
    auto c = Connection::connect("127.0.0.1", rig.kp.port, 5000);
    c.send_raw("GET /v1/svc/x HTTP/1.1\r\nHost: x\r\n" + rig.auth() + "X-Folded: first\r\n");
    sleep_ms(100);  // keypool has read and parsed the first part
    c.send_raw(" second\r\n\r\n");
    auto r = c.read_response();
    check_json_error(r, 400, "bad_header");
    CHECK(c.closed_by_peer(3000));
    CHECK(rig.up.request_count() == 0);
  }
}

TEST_CASE("hardening: bare LF line endings are refused") {
  Rig rig;
  expect_refused(rig, "GET /v1/svc/x HTTP/1.1\nHost: x\nAuthorization: Bearer " + rig.token + "\n\n", 400);
}

TEST_CASE("hardening: a bare LF ending one header line among CRLF lines is refused") {
  Rig rig;
  expect_refused(rig, proxied_get("Host: x\r\nX-A: a\nX-B: b\r\n" + rig.auth()), 400);
}

TEST_CASE("hardening: a bare CR in the head is refused") {
  Rig rig;
  expect_refused(rig, proxied_get("Host: x\r\nX-A: a\rX-B: b\r\n" + rig.auth()), 400);
}

TEST_CASE("hardening: an invalid chunk size is refused and no complete request reaches the upstream") {
  Rig rig;
  auto c = Connection::connect("127.0.0.1", rig.kp.port, 5000);
  c.send_raw("POST /v1/svc/x HTTP/1.1\r\nHost: x\r\n" + rig.auth() +
             "Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n");
  Response r;
  REQUIRE_NOTHROW(r = c.read_response());
  check_json_error(r, 400);
  CHECK(c.closed_by_peer(3000));
  sleep_ms(200);
  // The head may already be on its way upstream when the body turns out broken (keypool
  // streams); the upstream must at most see an aborted request, never a complete one.
  for (const auto& seen : rig.up.requests()) CHECK_FALSE(seen.complete);
  CHECK(rig.kp.get("/health").status == 200);
}

TEST_CASE("hardening: NUL in a header value is refused") {
  Rig rig;
  expect_refused(rig, proxied_get("Host: x\r\n" + rig.auth() + std::string("X-Nul: a\0b\r\n", 12)), 400);
}

TEST_CASE("hardening: an empty header name is refused") {
  Rig rig;
  expect_refused(rig, proxied_get("Host: x\r\n" + rig.auth() + ": x\r\n"), 400);
}

TEST_CASE("hardening: whitespace between a header name and its colon is refused") {
  Rig rig;
  expect_refused(rig,
                 "POST /v1/svc/x HTTP/1.1\r\nHost: x\r\n" + rig.auth() +
                     "Transfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\nabc",
                 400);
}

TEST_CASE("hardening: a missing Host on HTTP/1.1 is refused") {
  Rig rig;
  expect_refused(rig, proxied_get(rig.auth()), 400, "bad_host");
}

TEST_CASE("hardening: two Host headers are refused") {
  Rig rig;
  expect_refused(rig, proxied_get("Host: x\r\nHost: y\r\n" + rig.auth()), 400, "bad_host");
}

TEST_CASE("hardening: request line GET / HTTP/2.0 is refused") {
  Rig rig;
  expect_refused(rig, proxied_get("Host: x\r\n" + rig.auth(), "/v1/svc/x", "HTTP/2.0"), 400);
}

TEST_CASE("hardening: HTTP/0.9-style request lines are refused") {
  SUBCASE("no version at all") {
    Rig rig;
    expect_refused(rig, "GET /v1/svc/x\r\n\r\n", 400);
  }
  SUBCASE("HTTP/0.9 spelled out") {
    Rig rig;
    expect_refused(rig, proxied_get("Host: x\r\n" + rig.auth(), "/v1/svc/x", "HTTP/0.9"), 400);
  }
}

// ---------------------------------------------------------------- targets and methods

TEST_CASE("hardening: an absolute-form target goes to the service's upstream, never to its authority") {
  Rig rig(echo());
  auto c = Connection::connect("127.0.0.1", rig.kp.port, 5000);
  c.send_raw("GET http://evil.example/v1/svc/x?q=1 HTTP/1.1\r\nHost: evil.example\r\n" + rig.auth() + "\r\n");
  auto r = c.read_response();
  INFO(r.body);
  REQUIRE(r.status == 200);
  REQUIRE(rig.up.request_count() == 1);
  auto seen = rig.up.requests()[0];
  CHECK(seen.path == "/x");
  CHECK(seen.query == "q=1");
  CHECK(seen.header("host") == "127.0.0.1:" + std::to_string(rig.up.port()));
  CHECK_FALSE(upstream_saw(seen, "evil"));
}

// A refused upgrade (CONNECT, h2c, WebSocket) is answered with Connection: close; the
// connection must then close like after any other refusal, not wait for a 101 that never
// comes. drain_ms is short so that a connection held open does not stall keypool's stop.
TEST_CASE("hardening: CONNECT with an authority-form target is refused") {
  Rig rig(json_ok(), {{"drain_ms", "300"}});
  expect_refused(rig, "CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n" + rig.auth() + "\r\n", 405);
}

TEST_CASE("hardening: TRACE is refused") {
  Rig rig;
  auto c = Connection::connect("127.0.0.1", rig.kp.port, 5000);
  c.send_raw("TRACE /v1/svc/x HTTP/1.1\r\nHost: x\r\n" + rig.auth() + "\r\n");
  auto r = c.read_response();
  check_json_error(r, 405, "method_not_allowed");
  CHECK(r.body.find(rig.token) == std::string::npos);  // TRACE would echo the credential
  sleep_ms(100);
  CHECK(rig.up.request_count() == 0);
}

TEST_CASE("hardening: a WebSocket upgrade with a bad token is refused and the connection closed") {
  Rig rig(upgrade_echo(), {{"drain_ms", "300"}});
  expect_refused(rig,
                 proxied_get("Host: x\r\nAuthorization: Bearer not-a-token\r\nConnection: Upgrade\r\n"
                             "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
                 401, "unauthorized");
}

// ---------------------------------------------------------------- trailers

namespace {

// A one-connection upstream that keeps every byte it reads, so a test can see what a
// parser would have dropped (trailers). Answers 200 "ok" once the chunked body's last
// chunk and blank line arrived.
class RawUpstream {
 public:
  RawUpstream() {
    fd_ = listen_loopback(&port_);
    thread_ = std::thread([this] { run(); });
  }
  ~RawUpstream() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
    ::close(fd_);
  }
  uint16_t port() const { return port_; }
  std::string bytes() {
    std::lock_guard<std::mutex> l(mu_);
    return bytes_;
  }

 private:
  void run() {
    pollfd p{fd_, POLLIN, 0};
    auto t0 = Clock::now();
    while (!stop_ && ms_since(t0) < 10000) {
      if (::poll(&p, 1, 100) <= 0) continue;
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      char buf[4096];
      pollfd q{c, POLLIN, 0};
      while (!stop_ && ms_since(t0) < 10000) {
        if (::poll(&q, 1, 100) <= 0) continue;
        ssize_t n = ::read(c, buf, sizeof buf);
        if (n <= 0) break;
        std::string all;
        {
          std::lock_guard<std::mutex> l(mu_);
          bytes_.append(buf, static_cast<size_t>(n));
          all = bytes_;
        }
        auto head_end = all.find("\r\n\r\n");
        if (head_end != std::string::npos && all.size() >= head_end + 9 &&
            all.compare(all.size() - 5, 5, "0\r\n\r\n") == 0) {
          std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
          (void)!::write(c, resp.data(), resp.size());
          sleep_ms(200);  // anything keypool sends after the terminator is kept too
          while (::poll(&q, 1, 0) > 0 && (n = ::read(c, buf, sizeof buf)) > 0) {
            std::lock_guard<std::mutex> l(mu_);
            bytes_.append(buf, static_cast<size_t>(n));
          }
          break;
        }
      }
      ::close(c);
      return;
    }
  }
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::string bytes_;
  std::thread thread_;
};

}  // namespace

TEST_CASE("hardening: request trailers never reach the upstream") {
  RawUpstream up;
  Keypool kp({}, false);
  kp.write_service("svc", service_yaml("svc", "http://127.0.0.1:" + std::to_string(up.port())));
  kp.start();
  std::string token = setup_pool(kp, "svc", {kKey});
  auto c = Connection::connect("127.0.0.1", kp.port, 5000);
  c.send_raw("POST /v1/svc/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token +
             "\r\nTrailer: Authorization, Content-Length, X-Evil\r\nTransfer-Encoding: chunked\r\n\r\n"
             "5\r\nhello\r\n0\r\nAuthorization: Bearer evil\r\nContent-Length: 999\r\nX-Evil: evil\r\n\r\n");
  auto r = c.read_response();
  INFO(r.body);
  CHECK(r.status == 200);
  CHECK(r.body == "ok");
  std::string seen = up.bytes();
  INFO("upstream saw: " << seen);
  CHECK(seen.find("hello") != std::string::npos);
  CHECK(seen.find("evil") == std::string::npos);
  CHECK(seen.find("999") == std::string::npos);
  CHECK(seen.find(token) == std::string::npos);
  // Exactly one Authorization (the pooled key) and no Content-Length next to chunked.
  size_t auths = 0;
  for (size_t p = seen.find("Authorization:"); p != std::string::npos; p = seen.find("Authorization:", p + 1)) ++auths;
  CHECK(auths == 1);
  std::string lower = seen;
  for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  CHECK(lower.find("content-length") == std::string::npos);
  CHECK(seen.size() >= 5);
  if (seen.size() >= 5) CHECK(seen.compare(seen.size() - 5, 5, "0\r\n\r\n") == 0);
}

// ---------------------------------------------------------------- slow and idle clients

TEST_CASE("hardening: a head trickling past request_head_ms gets 408 then close") {
  Rig rig(json_ok(), {{"request_head_ms", "500"}});
  auto c = Connection::connect("127.0.0.1", rig.kp.port, 5000);
  auto t0 = Clock::now();
  std::string line = proxied_get("Host: x\r\n" + rig.auth());
  std::string got;
  // A byte every 100 ms: each gap is short, the whole head is not.
  for (size_t i = 0; i + 4 < line.size() && i < 30 && got.empty(); ++i) {
    try {
      c.send_raw(line.substr(i, 1));
    } catch (...) {
      break;
    }
    got = c.read_raw(4096, 100);
  }
  if (got.empty()) got = c.read_raw(4096, 1000);
  auto ms = ms_since(t0);
  INFO("after " << ms << " ms got: " << got);
  CHECK(got.rfind("HTTP/1.1 408", 0) == 0);
  CHECK(got.find("application/json") != std::string::npos);
  CHECK(ms >= 400);
  CHECK(ms < 2000);
  CHECK(c.closed_by_peer(3000));
  CHECK(rig.up.request_count() == 0);
}

TEST_CASE("hardening: an idle keep-alive connection is closed after idle_keepalive_ms") {
  Rig rig(json_ok(), {{"idle_keepalive_ms", "600"}});
  auto c = Connection::connect("127.0.0.1", rig.kp.port, 5000);
  c.send("GET", "/health");
  REQUIRE(c.read_response().status == 200);
  auto t0 = Clock::now();
  CHECK_FALSE(c.closed_by_peer(300));  // not before its time
  CHECK(c.closed_by_peer(3000));
  auto ms = ms_since(t0);
  CHECK(ms >= 450);
  CHECK(ms < 3000);
}

TEST_CASE("hardening: past server.max_connections the next connection gets 503") {
  Rig rig(json_ok(), {{"max_connections", "3"}});
  std::vector<Connection> open;
  for (int i = 0; i < 3; ++i) {
    open.push_back(Connection::connect("127.0.0.1", rig.kp.port, 5000));
    open.back().send("GET", "/health");
    REQUIRE(open.back().read_response().status == 200);  // accepted and kept open
  }
  auto c = Connection::connect("127.0.0.1", rig.kp.port, 5000);
  c.send_raw(proxied_get("Host: x\r\n" + rig.auth()));
  Response r;
  REQUIRE_NOTHROW(r = c.read_response());
  check_json_error(r, 503, "overloaded");
  CHECK(c.closed_by_peer(3000));
  CHECK(rig.up.request_count() == 0);
  // The three kept connections still work; once one goes, a new one is served.
  open[0].send("GET", "/health");
  CHECK(open[0].read_response().status == 200);
  c.close();  // a refused connection keeps its slot while it lingers
  open[2].close();
  int status = 0;
  for (int i = 0; i < 40 && status != 200; ++i) {
    sleep_ms(50);
    try {
      status = request(rig.kp.port, "GET", "/health").status;
    } catch (...) {
    }
  }
  CHECK(status == 200);
}

// ---------------------------------------------------------------- upstream answers

TEST_CASE("hardening: an upstream error quoting the key reaches the client masked") {
  Rig rig([](const RecordedRequest& req, ResponseWriter& w) {
    std::string body = "{\"error\":{\"message\":\"Incorrect API key provided: " + req.header("authorization") +
                       "\",\"type\":\"invalid_request_error\"}}";
    w.head(401, {{"Content-Type", "application/json"}, {"Content-Length", std::to_string(body.size())}});
    w.body(body);
  });
  auto r = request(rig.kp.port, "POST", "/v1/svc/chat", {{"Authorization", "Bearer " + rig.token}}, "{}");
  INFO(r.body);
  CHECK(r.status == 401);
  CHECK(r.body.find("Incorrect API key provided") != std::string::npos);
  CHECK(r.body.find(kKey) == std::string::npos);
  CHECK(r.body.find(kKey.substr(kKey.size() - 8)) == std::string::npos);
  for (const auto& [k, v] : r.headers) CHECK(v.find(kKey.substr(kKey.size() - 8)) == std::string::npos);
  CHECK(rig.up.request_count() == 1);
}

TEST_CASE("hardening: an upstream with a malformed status line gives a clean 502 JSON") {
  Rig rig([](const RecordedRequest&, ResponseWriter& w) { w.raw("HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok"); });
  auto r = request(rig.kp.port, "GET", "/v1/svc/x", {{"Authorization", "Bearer " + rig.token}});
  check_json_error(r, 502, "bad_gateway");
  CHECK(rig.kp.get("/health").status == 200);
}

TEST_CASE("hardening: an upstream sending a 70 KiB response header gives a clean 502 JSON") {
  Rig rig([](const RecordedRequest&, ResponseWriter& w) {
    w.raw("HTTP/1.1 200 OK\r\nX-Big: " + std::string(70 * 1024, 'a') + "\r\nContent-Length: 2\r\n\r\nok");
  });
  auto r = request(rig.kp.port, "GET", "/v1/svc/x", {{"Authorization", "Bearer " + rig.token}});
  check_json_error(r, 502, "bad_gateway");
  CHECK(r.body.find("aaaaaaaa") == std::string::npos);
  CHECK(rig.kp.get("/health").status == 200);
}

TEST_CASE("hardening: an upstream closing short of its Content-Length gives the client a broken response") {
  Rig rig([](const RecordedRequest&, ResponseWriter& w) {
    w.raw("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n" + std::string(100, 'b'));
  });
  auto c = Connection::connect("127.0.0.1", rig.kp.port, 5000);
  c.send("GET", "/v1/svc/x", {{"Authorization", "Bearer " + rig.token}});
  bool broken = false;
  uint64_t bytes = 0;
  try {
    auto head = c.read_head();
    CHECK(head.status == 200);
    CHECK(head.header("content-length") == "1000");
    while (auto chunk = c.read_chunk(5000)) bytes += chunk->size();
  } catch (const TimeoutError&) {
    FAIL("keypool neither finished nor broke the response");
  } catch (const std::exception&) {
    broken = true;  // EOF or reset mid-message
  }
  CHECK(broken);
  CHECK(bytes < 1000);
  CHECK(rig.kp.get("/health").status == 200);
}

TEST_CASE("hardening: an invalid 1xx followed by garbage gives a clean 502 JSON") {
  Rig rig([](const RecordedRequest&, ResponseWriter& w) {
    w.raw("HTTP/1.1 150 Weird\r\nX-A: b\r\n\r\n\x01\x02garbage not http\r\n\r\n");
  });
  auto c = Connection::connect("127.0.0.1", rig.kp.port, 5000);
  c.send("GET", "/v1/svc/x", {{"Authorization", "Bearer " + rig.token}});
  Response r;
  REQUIRE_NOTHROW(r = c.read_response());
  // keypool must not pass the odd 1xx on: the first thing the client sees is the 502.
  check_json_error(r, 502, "bad_gateway");
  CHECK(rig.kp.get("/health").status == 200);
}

TEST_CASE("hardening: a 302 from the upstream passes to the client unchanged, not followed") {
  Rig rig([](const RecordedRequest&, ResponseWriter& w) {
    w.head(302, {{"Location", "http://127.0.0.1:1/elsewhere?a=b"}, {"Content-Length", "0"}});
  });
  auto r = request(rig.kp.port, "GET", "/v1/svc/x", {{"Authorization", "Bearer " + rig.token}});
  CHECK(r.status == 302);
  CHECK(r.header("location") == "http://127.0.0.1:1/elsewhere?a=b");
  CHECK(rig.up.request_count() == 1);
}

// ---------------------------------------------------------------- client goes away

TEST_CASE("hardening: a client that disconnects mid-response does not kill keypool") {
  Rig rig(big_download(256ull << 20));
  for (int round = 0; round < 3; ++round) {
    CAPTURE(round);
    auto c = Connection::connect("127.0.0.1", rig.kp.port, 5000);
    c.send("GET", "/v1/svc/big", {{"Authorization", "Bearer " + rig.token}});
    auto head = c.read_head();
    REQUIRE(head.status == 200);
    auto first = c.read_raw(64 * 1024, 3000);
    CHECK_FALSE(first.empty());
    // Closing with unread bytes queued sends RST: keypool's next write fails (EPIPE).
    c.close();
    sleep_ms(300);
    REQUIRE(rig.kp.proc->running());
    CHECK(rig.kp.get("/health").status == 200);
  }
}

// ---------------------------------------------------------------- crash consistency

TEST_CASE("hardening: kill -9 during a burst of admin writes loses no acknowledged write") {
  Keypool kp;
  add_tier(kp, "base", {{"img", 1000}});
  std::mutex mu;
  std::vector<std::string> acked_tiers, acked_keys, key_values;
  std::atomic<int> answered{0};
  const uint16_t port = kp.port;
  const HeaderList h{{"Authorization", "Bearer " + kAdminToken}, {"Content-Type", "application/json"}};
  // Two writers, tiers and keys, that keep writing until keypool is gone (bounded), so the
  // kill always lands mid-burst. Only a 2xx counts as acknowledged.
  std::atomic<int> cut_off{0};  // writers whose request the kill interrupted
  auto writer = [&](bool keys) {
    for (int i = 0; i < 20000; ++i) {
      std::string name = (keys ? "crash-k" : "crash-t") + std::to_string(i);
      json body = json{{"name", name}, {"features", {{"img", 5}}}};
      if (keys) {
        std::string value = "sk-crash-" + std::to_string(i) + "-ZXCVBNMasdfgh";
        body = json{{"name", name}, {"key", value}, {"tier", "base"}};
        std::lock_guard<std::mutex> l(mu);
        key_values.push_back(value);
      }
      Response r;
      try {
        r = request(port, "POST", keys ? "/admin/keys" : "/admin/tiers", h, body.dump());
      } catch (...) {
        ++cut_off;  // keypool is gone
        return;
      }
      ++answered;
      if (r.status / 100 == 2) {
        std::lock_guard<std::mutex> l(mu);
        (keys ? acked_keys : acked_tiers).push_back(name);
      }
    }
  };
  std::thread tiers_writer(writer, false), keys_writer(writer, true);
  // Kill once the burst is under way (some writes answered), not at a fixed time.
  for (int i = 0; i < 500 && answered.load() < 100; ++i) sleep_ms(10);
  kp.kill9();
  tiers_writer.join();
  keys_writer.join();
  for (const auto& v : key_values) kp.remember_secret(v);
  MESSAGE("acknowledged before kill -9: " << acked_tiers.size() << " tiers, " << acked_keys.size() << " keys; "
                                          << answered.load() << " requests answered");
  CHECK(acked_tiers.size() + acked_keys.size() > 0);
  CHECK(cut_off.load() == 2);  // both writers were still writing when the kill landed

  kp.start();
  auto tiers = kp.admin("GET", "/admin/tiers");
  REQUIRE(tiers.status == 200);
  auto keys = kp.admin("GET", "/admin/keys");
  REQUIRE(keys.status == 200);
  json tiers_j = tiers.json(), keys_j = keys.json();  // kept: a range-for over a temporary's member dangles
  std::set<std::string> tier_names, key_names;
  for (const auto& t : tiers_j["tiers"]) tier_names.insert(t["name"].get<std::string>());
  for (const auto& k : keys_j["keys"]) key_names.insert(k["name"].get<std::string>());
  CHECK(tier_names.count("base") == 1);
  for (const auto& t : acked_tiers) {
    INFO("acknowledged tier missing after restart: " << t);
    CHECK(tier_names.count(t) == 1);
  }
  for (const auto& k : acked_keys) {
    INFO("acknowledged key missing after restart: " << k);
    CHECK(key_names.count(k) == 1);
  }
  // The store is usable after the crash: a new write and a hand-out work.
  add_tier(kp, "after-crash", {{"img", 1}});
  if (!acked_keys.empty())
    CHECK(kp.get("/key?feature=img", {{"Authorization", "Bearer " + kAdminToken}}).status == 200);
}

// ---------------------------------------------------------------- master key rotation

TEST_CASE("hardening: rotate-encryption-key re-encrypts; the new key serves, the old one is refused") {
  const std::string new_key = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  Keypool kp;
  kp.remember_secret(new_key);
  add_tier(kp, "pro", {{"img", 1000}});
  std::vector<std::string> values = {"sk-rotate-one-AAAAAAAAAAAA", "sk-rotate-two-BBBBBBBBBBBB"};
  for (size_t i = 0; i < values.size(); ++i) {
    auto r = kp.admin("POST", "/admin/keys", {{"name", "k" + std::to_string(i)}, {"key", values[i]}, {"tier", "pro"}});
    REQUIRE(r.status == 201);
  }
  REQUIRE(kp.stop() == 0);

  std::string config = source_dir() + "/config/keypool.yaml";
  auto env = kp.env;  // ENCRYPTION_KEY = the old key, DB_PATH into the temp dir
  env["NEW_ENCRYPTION_KEY"] = new_key;
  auto rot = run_command({keypool_bin(), "--config", config, "rotate-encryption-key"}, env, "", 15000);
  INFO("rotate: " << rot.output);
  REQUIRE(rot.exit_code == 0);
  for (const auto& v : values) CHECK(rot.output.find(v) == std::string::npos);
  CHECK(rot.output.find(new_key) == std::string::npos);
  CHECK(rot.output.find(kEncryptionKey) == std::string::npos);

  // The old key no longer opens the store: start-up fails, nothing is served.
  auto old_env = kp.env;
  auto old = run_command({keypool_bin(), "--config", config}, old_env, "", 5000);
  INFO("start with the old key: " << old.output);
  CHECK_FALSE(old.timed_out);
  CHECK(old.exit_code != 0);
  CHECK(old.exit_code < 128);
  CHECK(old.output.find("\"listening\"") == std::string::npos);

  // The new key serves the same values.
  kp.env["ENCRYPTION_KEY"] = new_key;
  kp.start();
  std::set<std::string> got;
  for (int i = 0; i < 4; ++i) {
    auto r = kp.get("/key?feature=img", {{"Authorization", "Bearer " + kAdminToken}});
    REQUIRE_MESSAGE(r.status == 200, r.body);
    got.insert(r.json()["value"].get<std::string>());
  }
  CHECK(got == std::set<std::string>(values.begin(), values.end()));
}

// ---------------------------------------------------------------- strict HTTP/1.1 (issue 17)

TEST_CASE("hardening: a field name that is not an RFC 9110 token is refused") {
  SUBCASE("a space inside the name") {
    Rig rig;
    expect_refused(rig, proxied_get("Host: x\r\n" + rig.auth() + "X Forwarded: a\r\n"), 400);
  }
  SUBCASE("a space inside a framing header's name") {
    Rig rig;
    expect_refused(rig,
                   "POST /v1/svc/x HTTP/1.1\r\nHost: x\r\n" + rig.auth() +
                       "Content Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                   400);
  }
  SUBCASE("a space before the colon of a name llhttp does not know") {
    Rig rig;
    expect_refused(rig, proxied_get("Host: x\r\n" + rig.auth() + "X-Trace : a\r\n"), 400);
  }
  SUBCASE("a tab before the colon") {
    Rig rig;
    expect_refused(rig, proxied_get("Host: x\r\n" + rig.auth() + "X-Trace\t: a\r\n"), 400);
  }
  SUBCASE("a separator in the name") {
    Rig rig;
    expect_refused(rig, proxied_get("Host: x\r\n" + rig.auth() + "X(Trace): a\r\n"), 400);
  }
  SUBCASE("a byte above 0x7f in the name") {
    Rig rig;
    expect_refused(rig, proxied_get("Host: x\r\n" + rig.auth() + "X-Tr\xc3\xa4" "ce: a\r\n"), 400);
  }
}

TEST_CASE("hardening: a Host that is not uri-host [\":\" port] is refused") {
  for (const std::string host : {"x y", "user@x", "user:pw@x", "x/path", "x?q=1", "x#f", "x:80x", "x:123456",
                                 "[::1", "[zz::1]", "x\\y", ""}) {
    CAPTURE(host);
    Rig rig;
    expect_refused(rig, proxied_get("Host: " + host + "\r\n" + rig.auth()), 400, "bad_host");
  }
}

TEST_CASE("hardening: valid Host forms are served") {
  Rig rig(echo());
  for (const std::string host : {"api.example.com", "api.example.com:8080", "127.0.0.1:1", "[::1]:443", "[::1]",
                                 "xn--bcher-kva.example", "a_b.example", "host:"}) {
    CAPTURE(host);
    auto r = request(rig.kp.port, "GET", "/v1/svc/x", {{"Host", host}, {"Authorization", "Bearer " + rig.token}});
    CHECK(r.status == 200);
  }
}

TEST_CASE("hardening: a request line with more than one space between its parts is refused") {
  SUBCASE("between method and target") {
    Rig rig;
    expect_refused(rig, "GET  /v1/svc/x HTTP/1.1\r\nHost: x\r\n" + rig.auth() + "\r\n", 400, "bad_request_line");
  }
  SUBCASE("between target and version") {
    Rig rig;
    expect_refused(rig, "GET /v1/svc/x  HTTP/1.1\r\nHost: x\r\n" + rig.auth() + "\r\n", 400, "bad_request_line");
  }
  SUBCASE("a tab between target and version") {
    Rig rig;
    expect_refused(rig, "GET /v1/svc/x\tHTTP/1.1\r\nHost: x\r\n" + rig.auth() + "\r\n", 400);
  }
  SUBCASE("split across writes, the second space alone") {
    Rig rig;
    auto c = Connection::connect("127.0.0.1", rig.kp.port, 5000);
    c.send_raw("GET ");
    sleep_ms(100);  // keypool has parsed the method and its space
    c.send_raw(" /v1/svc/x HTTP/1.1\r\nHost: x\r\n" + rig.auth() + "\r\n");
    check_json_error(c.read_response(), 400, "bad_request_line");
    CHECK(c.closed_by_peer(3000));
    CHECK(rig.up.request_count() == 0);
  }
}

TEST_CASE("hardening: chunk data not followed by exactly CRLF is refused and no complete request reaches the upstream") {
  for (const std::string after : {"XX", "\n", "\r", " \r\n"}) {
    CAPTURE(after);
    Rig rig;
    auto c = Connection::connect("127.0.0.1", rig.kp.port, 5000);
    c.send_raw("POST /v1/svc/x HTTP/1.1\r\nHost: x\r\n" + rig.auth() + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc" +
               after + "0\r\n\r\n");
    Response r;
    REQUIRE_NOTHROW(r = c.read_response());
    check_json_error(r, 400);
    CHECK(c.closed_by_peer(3000));
    sleep_ms(200);
    for (const auto& seen : rig.up.requests()) CHECK_FALSE(seen.complete);
    CHECK(rig.kp.get("/health").status == 200);
  }
}

TEST_CASE("hardening: header names with '_' never reach the upstream") {
  Rig rig(echo());
  auto c = Connection::connect("127.0.0.1", rig.kp.port, 5000);
  c.send_raw("POST /v1/svc/x HTTP/1.1\r\nHost: x\r\n" + rig.auth() +
             "X_Api_Key: sk-evil-1\r\nXi_Api_Key: sk-evil-2\r\nApi_Key: sk-evil-3\r\nProxy_Authorization: evil-4\r\n"
             "authorization_: evil-5\r\nTransfer_Encoding: chunked\r\nContent_Length: 999\r\nHo_st: evil.example\r\n"
             "X_Custom: evil-6\r\nX-Kept: yes\r\nContent-Length: 5\r\n\r\nhello");
  auto r = c.read_response();
  INFO(r.body);
  REQUIRE(r.status == 200);
  REQUIRE(rig.up.request_count() == 1);
  auto seen = rig.up.requests()[0];
  CHECK(seen.body == "hello");
  CHECK(seen.header("x-kept") == "yes");
  CHECK(seen.header("authorization") == "Bearer " + kKey);  // the pooled key, not a look-alike
  // Not a structured binding: CAPTURE captures it in a lambda, which clang 14 refuses.
  for (const auto& header : seen.headers) {
    const std::string& name = header.first;
    CAPTURE(name);
    CHECK(name.find('_') == std::string::npos);
    CHECK(header.second.find("evil") == std::string::npos);
  }
  // The connection stays usable: dropping a header is no refusal.
  c.send("GET", "/v1/svc/y", {{"Authorization", "Bearer " + rig.token}});
  CHECK(c.read_response().status == 200);
}

TEST_CASE("hardening: a percent-encoded '%' before an escaped dot, slash or backslash is refused") {
  for (const std::string target : {"/v1/svc/%252e%252e/admin", "/v1/svc/a%252fb", "/v1/svc/a%252Fb",
                                   "/v1/svc/%252E%252E/x", "/v1/svc/a%255cb", "/v1/svc/a%255Cb",
                                   "/v1/svc/x%252e", "/v1/svc/%25%32%65%25%32%65/x", "/v1/svc/%2e%2e/x"}) {
    CAPTURE(target);
    Rig rig;
    expect_refused(rig, proxied_get("Host: x\r\n" + rig.auth(), target), 400, "bad_request");
  }
}

TEST_CASE("hardening: an h2c upgrade offer is ignored and the request served over HTTP/1.1") {
  Rig rig(echo(), {{"drain_ms", "300"}});
  auto c = Connection::connect("127.0.0.1", rig.kp.port, 5000);
  // What curl --http2 sends on an http:// URL.
  c.send_raw(proxied_get("Host: x\r\n" + rig.auth() +
                         "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
                         "X-Kept: yes\r\n"));
  auto r = c.read_response();
  INFO(r.body);
  REQUIRE(r.status == 200);
  CHECK_FALSE(has_header(r.headers, "upgrade"));
  REQUIRE(rig.up.request_count() == 1);
  auto seen = rig.up.requests()[0];
  CHECK(seen.header("x-kept") == "yes");
  CHECK_FALSE(has_header(seen.headers, "upgrade"));
  CHECK_FALSE(has_header(seen.headers, "http2-settings"));
  CHECK_FALSE(header_lists_token(seen.headers, "connection", "upgrade"));
  CHECK_FALSE(header_lists_token(seen.headers, "connection", "http2-settings"));
  // Still HTTP/1.1 on a keep-alive connection.
  c.send("GET", "/v1/svc/y", {{"Authorization", "Bearer " + rig.token}});
  CHECK(c.read_response().status == 200);
  CHECK(rig.up.request_count() == 2);
}

TEST_CASE("hardening: HTTP2-Settings with h2c but no Connection token is still served, without it") {
  Rig rig(echo());
  auto r = request(rig.kp.port, "GET", "/v1/svc/x",
                   {{"Authorization", "Bearer " + rig.token}, {"Upgrade", "h2c"}, {"HTTP2-Settings", "AAMAAABkAAQAAP__"}});
  INFO(r.body);
  REQUIRE(r.status == 200);
  REQUIRE(rig.up.request_count() == 1);
  CHECK_FALSE(has_header(rig.up.requests()[0].headers, "upgrade"));
  CHECK_FALSE(has_header(rig.up.requests()[0].headers, "http2-settings"));
}

TEST_CASE("hardening: an Upgrade offer keypool does not tunnel is ignored and served") {
  SUBCASE("another protocol on a proxy route") {
    Rig rig(echo());
    auto r = request(rig.kp.port, "GET", "/v1/svc/x",
                     {{"Authorization", "Bearer " + rig.token}, {"Connection", "Upgrade"}, {"Upgrade", "IRC/6.9"}});
    INFO(r.body);
    REQUIRE(r.status == 200);
    REQUIRE(rig.up.request_count() == 1);
    CHECK_FALSE(has_header(rig.up.requests()[0].headers, "upgrade"));
  }
  SUBCASE("a WebSocket offer to the admin API") {
    Rig rig(echo(), {{"drain_ms", "300"}});
    auto c = Connection::connect("127.0.0.1", rig.kp.port, 5000);
    c.send_raw("GET /health HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
               "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n");
    auto r = c.read_response();
    INFO(r.body);
    CHECK(r.status == 200);
    CHECK_FALSE(has_header(r.headers, "upgrade"));
  }
}

TEST_CASE("hardening: a 101 the client did not ask for is a 502 and opens no tunnel") {
  Rig rig([](const RecordedRequest&, ResponseWriter& w) {
    w.raw("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nTUNNEL-BYTES");
  });
  auto c = Connection::connect("127.0.0.1", rig.kp.port, 5000);
  c.send_raw(proxied_get("Host: x\r\n" + rig.auth()));
  Response r;
  REQUIRE_NOTHROW(r = c.read_response());
  check_json_error(r, 502, "bad_gateway");
  c.send_raw("CLIENT-BYTES");
  std::string rest = c.read_raw(4096, 500);
  CHECK(rest.find("TUNNEL-BYTES") == std::string::npos);
  CHECK(r.body.find("TUNNEL-BYTES") == std::string::npos);
  CHECK(rig.kp.get("/health").status == 200);
}

TEST_CASE("hardening: obs-fold in an upstream response is a 502, never relayed") {
  for (const std::string fold : {"X-Folded: first\r\n second\r\n", "X-Folded: first\r\n\tsecond\r\n",
                                 "X-Folded:\r\n second\r\n"}) {
    CAPTURE(fold);
    Rig rig([fold](const RecordedRequest&, ResponseWriter& w) {
      w.raw("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" + fold + "Content-Length: 2\r\n\r\nok");
    });
    auto r = request(rig.kp.port, "GET", "/v1/svc/x", {{"Authorization", "Bearer " + rig.token}});
    check_json_error(r, 502, "bad_gateway");
    CHECK_FALSE(has_header(r.headers, "x-folded"));
    CHECK(r.body.find("second") == std::string::npos);
  }
}

namespace {

// A one-connection upstream that reads nothing for a while, then reads slowly (small
// socket buffer, small reads), counts the body of a Content-Length request and answers
// 200 with the count. Makes keypool's upstream write queue back up.
class SlowReader {
 public:
  explicit SlowReader(int wait_ms) : wait_ms_(wait_ms) {
    fd_ = listen_loopback(&port_);
    int small = 16 * 1024;
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    thread_ = std::thread([this] { run(); });
  }
  ~SlowReader() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
    ::close(fd_);
  }
  uint16_t port() const { return port_; }
  uint64_t body_bytes() const { return body_bytes_; }

 private:
  void run() {
    pollfd p{fd_, POLLIN, 0};
    auto t0 = Clock::now();
    while (!stop_ && ::poll(&p, 1, 100) <= 0)
      if (ms_since(t0) > 30000) return;
    int c = ::accept(fd_, nullptr, nullptr);
    if (c < 0) return;
    for (int waited = 0; waited < wait_ms_ && !stop_; waited += 50) sleep_ms(50);
    std::string head;
    uint64_t want = 0;
    bool in_body = false;
    char buf[4096];
    pollfd q{c, POLLIN, 0};
    while (!stop_ && ms_since(t0) < 60000) {
      if (::poll(&q, 1, 100) <= 0) continue;
      ssize_t n = ::read(c, buf, sizeof buf);
      if (n <= 0) break;
      if (!in_body) {
        head.append(buf, static_cast<size_t>(n));
        auto end = head.find("\r\n\r\n");
        if (end == std::string::npos) continue;
        auto cl = head.find("Content-Length: ");
        if (cl != std::string::npos) want = std::stoull(head.substr(cl + 16));
        body_bytes_ += head.size() - end - 4;
        in_body = true;
      } else {
        body_bytes_ += static_cast<uint64_t>(n);
      }
      if (in_body && body_bytes_ >= want) {
        std::string count = std::to_string(body_bytes_.load());
        std::string resp = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(count.size()) + "\r\n\r\n" + count;
        (void)!::write(c, resp.data(), resp.size());
        break;
      }
      if (body_bytes_ % (256 * 1024) < sizeof buf) sleep_ms(1);  // slow, but not absurdly
    }
    sleep_ms(200);
    ::close(c);
  }
  int wait_ms_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> body_bytes_{0};
  std::thread thread_;
};

}  // namespace

TEST_CASE("hardening: a large upload to a slow upstream with a small write_high_watermark completes") {
  SlowReader up(1500);
  Keypool kp({}, false);
  kp.write_config({{"write_high_watermark", "16384"}});
  kp.write_service("svc", service_yaml("svc", "http://127.0.0.1:" + std::to_string(up.port())));
  kp.start();
  std::string token = setup_pool(kp, "svc", {kKey});
  const size_t total = 8 * 1024 * 1024;
  auto c = Connection::connect("127.0.0.1", kp.port, 10000);
  c.send_raw("POST /v1/svc/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token +
             "\r\nContent-Length: " + std::to_string(total) + "\r\n\r\n");
  // write_all gives up after 10 s without progress: an upload paused for good fails here.
  REQUIRE_NOTHROW(c.send_raw(std::string(total, 'u')));
  Response r;
  REQUIRE_NOTHROW(r = c.read_response());
  INFO(r.body);
  CHECK(r.status == 200);
  CHECK(r.body == std::to_string(total));
}
