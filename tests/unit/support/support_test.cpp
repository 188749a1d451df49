// Self-tests of the integration-test kit: the fake upstream seen through the test client, so
// that a failing integration test points at keypool and not at its tools.
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <thread>

#include "support/certs.h"
#include "support/fake_upstream.h"
#include "support/http_client.h"
#include "support/process.h"

using namespace keypool::testing;
using Clock = std::chrono::steady_clock;

namespace {

int64_t ms_since(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

// Sets an environment variable for one scope, restoring the old value after.
struct ScopedEnv {
  std::string name;
  std::optional<std::string> old;
  ScopedEnv(std::string n, const std::string& value) : name(std::move(n)) {
    if (const char* v = std::getenv(name.c_str())) old = v;
    ::setenv(name.c_str(), value.c_str(), 1);
  }
  ~ScopedEnv() { old ? ::setenv(name.c_str(), old->c_str(), 1) : ::unsetenv(name.c_str()); }
};

}  // namespace

TEST_CASE("fake upstream: echo shows what reached it") {
  FakeUpstream up(echo());
  Response r =
      request(up.port(), "POST", "/v1/images?size=2", {{"Authorization", "Bearer k1"}}, "hello");
  REQUIRE(r.status == 200);
  CHECK(r.reason == "OK");
  CHECK(r.header("content-type") == "application/json");
  auto j = r.json();
  CHECK(j["method"] == "POST");
  CHECK(j["target"] == "/v1/images?size=2");
  CHECK(j["path"] == "/v1/images");
  CHECK(j["query"] == "size=2");
  CHECK(j["headers"]["authorization"] == "Bearer k1");
  CHECK(j["headers"]["content-length"] == "5");
  CHECK(j["body_bytes"] == 5);
  CHECK(j["body"] == "hello");
  auto reqs = up.requests();
  REQUIRE(reqs.size() == 1);
  CHECK(reqs[0].header("AUTHORIZATION") == "Bearer k1");
  CHECK(reqs[0].body == "hello");
  CHECK(reqs[0].complete);
}

TEST_CASE("fake upstream: chunked upload is decoded, or only counted") {
  FakeUpstream up(json_ok());
  std::string chunked = "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
  {
    Connection c = Connection::connect("127.0.0.1", up.port());
    c.send("POST", "/up", {{"Transfer-Encoding", "chunked"}}, chunked);
    Response r = c.read_response();
    CHECK(r.status == 200);
    CHECK(r.body == R"({"ok":true})");
  }
  up.set_store_bodies(false);
  {
    Connection c = Connection::connect("127.0.0.1", up.port());
    c.send("POST", "/up", {{"Transfer-Encoding", "chunked"}}, chunked);
    CHECK(c.read_response().status == 200);
  }
  auto reqs = up.requests();
  REQUIRE(reqs.size() == 2);
  CHECK(reqs[0].body == "hello world");
  CHECK(reqs[0].body_bytes == 11);
  CHECK(reqs[1].body.empty());
  CHECK(reqs[1].body_bytes == 11);
}

TEST_CASE("fake upstream: keep-alive reuses one connection, pipelining included") {
  FakeUpstream up(echo());
  Connection c = Connection::connect("127.0.0.1", up.port());
  for (int i = 0; i < 3; ++i) {
    c.send("GET", "/r" + std::to_string(i));
    Response r = c.read_response();
    CHECK(r.json()["target"] == "/r" + std::to_string(i));
    CHECK(r.json()["connection_id"] == 1);
  }
  // Two requests in one write: answered in order on the same connection.
  c.send_raw("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(c.read_response().json()["target"] == "/a");
  CHECK(c.read_response().json()["target"] == "/b");
  CHECK(up.connections_accepted() == 1);
  request(up.port(), "GET", "/other");
  CHECK(up.connections_accepted() == 2);
  CHECK(up.requests().back().connection_id == 2);
  CHECK(up.request_count() == 6);
  // request() asks for Connection: close, so the upstream hangs up after answering.
  c.send("GET", "/last", {{"Connection", "close"}});
  CHECK(c.read_response().status == 200);
  CHECK(c.closed_by_peer(2000));
}

TEST_CASE("fake upstream: SSE events arrive one by one") {
  FakeUpstream up(sse(4, 150));
  Connection c = Connection::connect("127.0.0.1", up.port());
  c.send("GET", "/stream");
  ResponseHeadOnly h = c.read_head();
  CHECK(h.status == 200);
  CHECK(h.header("content-type") == "text/event-stream");
  CHECK(h.header("transfer-encoding") == "chunked");
  auto t = Clock::now();
  std::vector<int64_t> arrivals;
  for (int i = 0; i < 4; ++i) {
    auto chunk = c.read_chunk(2000);
    REQUIRE(chunk);
    CHECK(*chunk == "data: {\"i\":" + std::to_string(i) + "}\n\n");
    arrivals.push_back(ms_since(t));
  }
  CHECK_FALSE(c.read_chunk(2000));
  // Each event came on its own, roughly a gap after the one before.
  for (size_t i = 1; i < arrivals.size(); ++i) CHECK(arrivals[i] - arrivals[i - 1] >= 100);
}

TEST_CASE("fake upstream: big download streams the pattern with Content-Length") {
  uint64_t size = (1 << 20) + 7;
  FakeUpstream up(big_download(size));
  Response r = request(up.port(), "GET", "/file");
  CHECK(r.header("content-length") == std::to_string(size));
  REQUIRE(r.body.size() == size);
  CHECK(r.body == download_pattern(0, size));
  Response head = request(up.port(), "HEAD", "/file");
  CHECK(head.header("content-length") == std::to_string(size));
  CHECK(head.body.empty());
}

TEST_CASE("fake upstream: upgrade then raw echo") {
  FakeUpstream up(upgrade_echo());
  Connection c = Connection::connect("127.0.0.1", up.port());
  // Bytes right behind the head must reach the echo too, not stay in a parser buffer.
  c.send_raw(
      "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nearly");
  ResponseHeadOnly h = c.read_head();
  CHECK(h.status == 101);
  CHECK(h.header("upgrade") == "websocket");
  std::string got;
  while (got.size() < 5) got += c.read_raw(100, 2000);
  CHECK(got == "early");
  c.send_raw("ping");
  CHECK(c.read_raw(100, 2000) == "ping");
  c.shutdown_write();
  CHECK(c.closed_by_peer(2000));
}

TEST_CASE("fake upstream: scripted failures") {
  SUBCASE("close_now resets the connection") {
    FakeUpstream up([](const RecordedRequest&, ResponseWriter& w) { w.close_now(); });
    Connection c = Connection::connect("127.0.0.1", up.port());
    c.send("GET", "/");
    CHECK(c.closed_by_peer(2000));
  }
  SUBCASE("raw bytes: a close-delimited response") {
    FakeUpstream up([](const RecordedRequest&, ResponseWriter& w) {
      w.raw("HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nhello");
    });
    Response r = request(up.port(), "GET", "/");
    CHECK(r.header("x-a") == "1");
    CHECK(r.body == "hello");
  }
  SUBCASE("head cut short mid-body: the client throws") {
    FakeUpstream up([](const RecordedRequest&, ResponseWriter& w) {
      w.head(200, {{"Content-Length", "10"}});
      w.body("abc");
      w.close_now();
    });
    Connection c = Connection::connect("127.0.0.1", up.port());
    c.send("GET", "/");
    CHECK_THROWS_AS(c.read_response(), std::runtime_error);
  }
  SUBCASE("a handler that writes nothing gives 500") {
    FakeUpstream up([](const RecordedRequest&, ResponseWriter&) {});
    CHECK(request(up.port(), "GET", "/").status == 500);
  }
  SUBCASE("a silent upstream makes the client time out") {
    FakeUpstream up([](const RecordedRequest&, ResponseWriter& w) { w.sleep_ms(2000); });
    Connection c = Connection::connect("127.0.0.1", up.port(), 200);
    c.send("GET", "/");
    CHECK_THROWS_AS(c.read_response(), TimeoutError);
  }
}

TEST_CASE("fake upstream: Expect 100-continue gets an interim response") {
  FakeUpstream up(echo());
  Connection c = Connection::connect("127.0.0.1", up.port());
  c.send_raw("POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
  CHECK(c.read_response().status == 100);
  c.send_raw("abc");
  Response r = c.read_response();
  CHECK(r.status == 200);
  CHECK(r.json()["body"] == "abc");
}

TEST_CASE("fake upstream: sees a client that goes away, and an aborted upload") {
  std::atomic<bool> saw_gone{false};
  FakeUpstream up([&](const RecordedRequest&, ResponseWriter& w) {
    w.head(200, {{"Content-Type", "text/event-stream"}});
    for (int i = 0; i < 200 && !w.client_gone(); ++i) w.sleep_ms(10);
    saw_gone = w.client_gone();
  });
  {
    Connection c = Connection::connect("127.0.0.1", up.port());
    c.send("GET", "/");
    CHECK(c.read_head().status == 200);
  }
  {
    Connection c = Connection::connect("127.0.0.1", up.port());
    c.send_raw("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly-this");
  }
  auto t = Clock::now();
  while (up.request_count() < 2 && ms_since(t) < 2000)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  while (!saw_gone && ms_since(t) < 3000)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(saw_gone);
  auto reqs = up.requests();
  REQUIRE(reqs.size() == 2);
  auto upload = reqs[0].method == "POST" ? reqs[0] : reqs[1];
  CHECK_FALSE(upload.complete);
  CHECK(upload.body_bytes == 9);
}

TEST_CASE("fake upstream: stop() is prompt with streams and idle connections open") {
  auto up = std::make_unique<FakeUpstream>(sse(1000, 50));
  Connection idle = Connection::connect("127.0.0.1", up->port());
  Connection streaming = Connection::connect("127.0.0.1", up->port());
  streaming.send("GET", "/");
  CHECK(streaming.read_head().status == 200);
  auto t = Clock::now();
  up.reset();
  CHECK(ms_since(t) < 2000);
}

TEST_CASE("http client: IPv6 loopback") {
  int fd = ::socket(AF_INET6, SOCK_STREAM, 0);
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(fd, 1) != 0) {
    if (fd >= 0) ::close(fd);
    MESSAGE("no ::1 here; skipped");
    return;
  }
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  std::thread server([fd] {
    int c = ::accept(fd, nullptr, nullptr);
    char buf[1024];
    ssize_t n = ::read(c, buf, sizeof buf);
    (void)n;
    const char resp[] = "HTTP/1.1 204 No Content\r\n\r\n";
    n = ::write(c, resp, sizeof resp - 1);
    ::close(c);
  });
  Connection c = Connection::connect("::1", ntohs(a.sin6_port));
  c.send("GET", "/");
  CHECK(c.read_response().status == 204);
  server.join();
  ::close(fd);
}

TEST_CASE("fake upstream over TLS, verified against the test CA") {
  TempDir tmp;
  TestPki pki = make_test_pki(tmp.path + "/pki");
  FakeUpstream up(echo(), true, &pki);
  CHECK(up.base_url().rfind("https://127.0.0.1:", 0) == 0);
  for (std::string host : {"127.0.0.1", "localhost"}) {
    Connection c = Connection::connect_tls(host, up.port(), pki.ca_cert);
    c.send("POST", "/tls", {}, "secret");
    Response r = c.read_response();
    CHECK(r.status == 200);
    CHECK(r.json()["body"] == "secret");
    c.send("GET", "/again");
    CHECK(c.read_response().json()["connection_id"] == r.json()["connection_id"]);
  }
  TestPki other = make_test_pki(tmp.path + "/other", "DNS:other.example");
  CHECK_THROWS_AS(Connection::connect_tls("localhost", up.port(), other.ca_cert),
                  std::runtime_error);
  FakeUpstream wrong_name(echo(), true, &other);
  CHECK_THROWS_AS(Connection::connect_tls("localhost", wrong_name.port(), other.ca_cert),
                  std::runtime_error);
}

TEST_CASE("run_command: exit code, merged output, stdin, hermetic env, timeout") {
  CommandResult r = run_command({"sh", "-c", "cat; echo err >&2; echo \"[$HOME][$FOO]\"; exit 3"},
                                {{"FOO", "x"}}, "hello\n");
  CHECK(r.exit_code == 3);
  CHECK_FALSE(r.timed_out);
  CHECK(r.output == "hello\nerr\n[][x]\n");
  auto t = Clock::now();
  CommandResult slow = run_command({"sleep", "5"}, {}, "", 200);
  CHECK(slow.timed_out);
  CHECK(slow.exit_code == 128 + SIGKILL);
  CHECK(ms_since(t) < 2000);
}

TEST_CASE("KeypoolProcess against a stand-in binary") {
  TempDir tmp;
  std::string script = tmp.path + "/fake-keypool";
  std::ofstream(script)
      << "#!/bin/sh\n"
         "echo \"cwd=$(pwd) args=$* mode=$MODE\"\n"
         "if [ \"$MODE\" = pretty ]; then echo '2024-01-01T00:00:00.000Z info listening "
         "addr=127.0.0.1 port=4321'\n"
         "else echo '{\"ts\":\"t\",\"level\":\"info\",\"msg\":\"listening\",\"port\":4321}'; fi\n"
         "exec sleep 30\n";
  ::chmod(script.c_str(), 0755);
  ScopedEnv bin("KEYPOOL_BIN", script);
  for (std::string mode : {"json", "pretty"}) {
    KeypoolProcess p({"serve", "--x"}, {{"MODE", mode}}, tmp.path);
    CHECK(p.wait_for_port(5000) == 4321);
    CHECK(p.running());
    CHECK(p.log_contents().find("cwd=" + tmp.path + " args=serve --x mode=" + mode) !=
          std::string::npos);
    CHECK(p.stop() == 128 + SIGTERM);
    CHECK_FALSE(p.running());
  }
  std::ofstream(script) << "#!/bin/sh\necho boom\nexit 2\n";
  KeypoolProcess dies({}, {}, tmp.path);
  CHECK_THROWS_WITH_AS(dies.wait_for_port(5000), doctest::Contains("boom"), std::runtime_error);
  CHECK(dies.stop() == 2);
}
