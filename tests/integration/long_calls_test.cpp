// Long calls, the way LLM APIs make them: answers whose head comes after many seconds,
// streams that last minutes, uploads that trickle in. Each timeout limits its own phase and
// nothing else; here every phase lasts longer than the shortest other timeout, which is set
// short (request_head_ms 400 ms), so a limit that outlives its phase shows at once.
#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <thread>

#include "fixture.h"
#include "proxy_helpers.h"
#include "support/fake_upstream.h"

using namespace keypool::testing;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

const std::string kKey = "sk-long-calls-0123456789abcdef";
constexpr int kHeadMs = 400;  // request_head_ms in these tests



// A keypool in front of a FakeUpstream running `h`, with request_head_ms short and the
// other timeouts as given (or their long defaults).
struct Rig {
  FakeUpstream up;
  Keypool kp;
  std::string token;
  explicit Rig(Handler h, std::map<std::string, std::string> cfg = {}) : up(std::move(h)), kp({}, false) {
    cfg.emplace("request_head_ms", std::to_string(kHeadMs));
    kp.write_config(cfg);
    kp.write_service("svc", service_yaml("svc", up.base_url()));
    kp.start();
    token = setup_pool(kp, "svc", {kKey});
  }
  HeaderList auth() const { return {{"Authorization", "Bearer " + token}}; }
  Connection connect() const { return Connection::connect("127.0.0.1", kp.port, 10000); }
};

// The upstream thinks for `ms`, then answers a JSON body.
Handler slow_answer(int ms, std::string body) {
  return [ms, body](const RecordedRequest&, ResponseWriter& w) {
    w.sleep_ms(ms);
    w.head(200, {{"Content-Type", "application/json"}, {"Content-Length", std::to_string(body.size())}});
    w.body(body);
  };
}

// Reads a chunked SSE answer to its end; returns the events' data lines in order.
std::vector<std::string> read_events(Connection& c) {
  std::string all;
  while (auto chunk = c.read_chunk(10000)) all += *chunk;
  std::vector<std::string> events;
  size_t at = 0;
  while ((at = all.find("data: ", at)) != std::string::npos) {
    size_t end = all.find("\n\n", at);
    if (end == std::string::npos) break;
    events.push_back(all.substr(at + 6, end - at - 6));
    at = end + 2;
  }
  return events;
}

}  // namespace

TEST_CASE("long calls: an answer whose head comes after twice request_head_ms arrives whole") {
  const std::string body = R"({"id":"chatcmpl-slow","choices":[{"message":{"content":"thought hard"}}]})";
  Rig rig(slow_answer(2 * kHeadMs + 400, body));
  auto c = rig.connect();
  auto t0 = Clock::now();
  c.send("GET", "/v1/svc/v1/chat/completions", rig.auth());
  Response r;
  REQUIRE_NOTHROW(r = c.read_response());
  CHECK(ms_since(t0) >= 2 * kHeadMs);
  CHECK(r.status == 200);
  CHECK(r.body == body);

  // The same keep-alive connection serves the next call, which is slow too.
  c.send("POST", "/v1/svc/v1/chat/completions", rig.auth(), R"({"model":"m"})");
  REQUIRE_NOTHROW(r = c.read_response());
  CHECK(r.status == 200);
  CHECK(r.body == body);
  CHECK(rig.up.request_count() == 2);
}

TEST_CASE("long calls: an SSE stream lasting three times request_head_ms delivers every event") {
  const int events = 8, gap = 3 * kHeadMs / 6;  // 7 gaps: ~3.5x request_head_ms in all
  Rig rig(sse(events, gap));
  auto c = rig.connect();
  auto t0 = Clock::now();
  c.send("GET", "/v1/svc/stream", rig.auth());
  auto head = c.read_head();
  REQUIRE(head.status == 200);
  CHECK(head.header("transfer-encoding") == "chunked");
  auto got = read_events(c);  // returns at the last chunk: the stream ended cleanly
  CHECK(ms_since(t0) >= 3 * kHeadMs);
  REQUIRE(got.size() == static_cast<size_t>(events));
  for (int i = 0; i < events; ++i) CHECK(got[i] == "{\"i\":" + std::to_string(i) + "}");
  // And the connection is still good for another request.
  c.send("GET", "/v1/svc/stream", rig.auth());
  CHECK(c.read_head().status == 200);
  CHECK(read_events(c).size() == static_cast<size_t>(events));
}

TEST_CASE("long calls: a request body uploaded slowly, past request_head_ms, arrives whole") {
  Rig rig(echo());
  const std::string piece(1000, 'u');
  const int pieces = 12, gap = kHeadMs / 2;  // ~2.2 s of upload, each gap well inside the limit

  SUBCASE("with Content-Length") {
    auto c = rig.connect();
    c.send_raw("POST /v1/svc/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + rig.token +
               "\r\nContent-Type: application/octet-stream\r\nContent-Length: " +
               std::to_string(piece.size() * pieces) + "\r\n\r\n");
    for (int i = 0; i < pieces; ++i) {
      sleep_ms(gap);
      c.send_raw(piece);
    }
    auto r = c.read_response();
    REQUIRE(r.status == 200);
    auto seen = r.json();
    CHECK(seen["body_bytes"] == piece.size() * pieces);
    CHECK(seen["body"] == std::string(piece.size() * pieces, 'u'));
  }
  SUBCASE("chunked, as SDKs send files") {
    auto c = rig.connect();
    c.send_raw("POST /v1/svc/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + rig.token +
               "\r\nTransfer-Encoding: chunked\r\n\r\n");
    char size_line[16];
    std::snprintf(size_line, sizeof size_line, "%zx\r\n", piece.size());
    for (int i = 0; i < pieces; ++i) {
      sleep_ms(gap);
      c.send_raw(size_line + piece + "\r\n");
    }
    c.send_raw("0\r\n\r\n");
    auto r = c.read_response();
    REQUIRE(r.status == 200);
    CHECK(r.json()["body_bytes"] == piece.size() * pieces);
  }
}

TEST_CASE("long calls: a WebSocket tunnel stays open past every request timeout") {
  Rig rig(upgrade_echo(), {{"upstream_idle_ms", "5000"}});
  auto c = rig.connect();
  auto h = rig.auth();
  h.insert(h.end(), {{"Connection", "Upgrade"},
                     {"Upgrade", "websocket"},
                     {"Sec-WebSocket-Version", "13"},
                     {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}});
  c.send("GET", "/v1/svc/realtime", h);
  REQUIRE(c.read_head().status == 101);
  for (int i = 0; i < 3; ++i) {
    sleep_ms(kHeadMs + 300);  // each pause outlasts request_head_ms
    std::string msg = "frame-" + std::to_string(i);
    c.send_raw(msg);
    CHECK(c.read_raw(msg.size(), 5000) == msg);
  }
}

TEST_CASE("long calls: an upstream silent past upstream_head_ms gets a 504, not a cut") {
  Rig rig(slow_answer(6000, "{}"), {{"upstream_head_ms", "1200"}});
  auto c = rig.connect();
  auto t0 = Clock::now();
  c.send("GET", "/v1/svc/think", rig.auth());
  Response r;
  REQUIRE_NOTHROW(r = c.read_response());
  auto ms = ms_since(t0);
  INFO("after " << ms << " ms: " << r.status << " " << r.body);
  CHECK(r.status == 504);
  CHECK(r.header("content-type").find("application/json") == 0);
  CHECK(r.json()["error"]["code"] == "upstream_timeout");
  CHECK(ms >= 1100);  // its own limit, not request_head_ms
  CHECK(ms < 5000);
}

TEST_CASE("long calls: a stream silent past upstream_idle_ms is cut and looks cut") {
  Rig rig([](const RecordedRequest&, ResponseWriter& w) {
    w.head(200, {{"Content-Type", "text/event-stream"}});
    w.body("data: {\"i\":0}\n\n");
    w.sleep_ms(8000);  // the model went quiet for good
    w.body("data: {\"i\":1}\n\n");
    w.end();
  }, {{"upstream_idle_ms", "1500"}});
  auto c = rig.connect();
  auto t0 = Clock::now();
  c.send("GET", "/v1/svc/stream", rig.auth());
  REQUIRE(c.read_head().status == 200);
  auto first = c.read_chunk(5000);
  REQUIRE(first);
  CHECK(first->find("\"i\":0") != std::string::npos);
  // No last chunk: the client sees a truncated body, never a clean end.
  bool truncated = false;
  try {
    auto more = c.read_chunk(8000);
    INFO("unexpected chunk: " << (more ? *more : std::string("(the last chunk)")));
  } catch (const TimeoutError&) {
    FAIL("the stream was not cut within upstream_idle_ms");
  } catch (const std::exception&) {
    truncated = true;
  }
  CHECK(truncated);
  auto ms = ms_since(t0);
  CHECK(ms >= 1400);
  CHECK(ms < 7000);
}

TEST_CASE("long calls: a request body that stalls gets 408 after the body gap limit, not request_head_ms") {
  Rig rig(echo(), {{"upstream_idle_ms", "1500"}});
  auto c = rig.connect();
  auto t0 = Clock::now();
  c.send_raw("POST /v1/svc/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + rig.token +
             "\r\nContent-Length: 100\r\n\r\nonly part");
  Response r;
  REQUIRE_NOTHROW(r = c.read_response());
  auto ms = ms_since(t0);
  CHECK(r.status == 408);
  CHECK(r.json()["error"]["code"] == "request_timeout");
  CHECK(ms >= 1400);
  CHECK(ms < 5000);
  CHECK(c.closed_by_peer(4000));
}

TEST_CASE("long calls: the optional request_total_ms caps a call that keeps moving") {
  SUBCASE("before the answer began: 504") {
    Rig rig(slow_answer(5000, "{}"), {{"request_total_ms", "1200"}});
    auto t0 = Clock::now();
    auto r = request(rig.kp.port, "GET", "/v1/svc/think", rig.auth());
    CHECK(r.status == 504);
    CHECK(r.json()["error"]["code"] == "request_timeout");
    CHECK(ms_since(t0) >= 1100);
  }
  SUBCASE("mid-stream: cut, and the client sees it cut") {
    Rig rig(sse(40, 100), {{"request_total_ms", "1500"}});  // a 4 s stream
    auto c = rig.connect();
    auto t0 = Clock::now();
    c.send("GET", "/v1/svc/stream", rig.auth());
    REQUIRE(c.read_head().status == 200);
    int chunks = 0;
    bool truncated = false;
    try {
      while (c.read_chunk(5000)) ++chunks;
    } catch (const TimeoutError&) {
    } catch (const std::exception&) {
      truncated = true;
    }
    CHECK(truncated);
    CHECK(chunks > 3);
    CHECK(chunks < 40);
    CHECK(ms_since(t0) >= 1400);
  }
}
