// Compressed answers (issue 16): SDKs send Accept-Encoding (httpx: gzip, deflate, and br and
// zstd when installed), and provider edges compress. keypool reads answers (usage, key
// masking), so it asks the upstream for identity, and decodes what an edge compresses
// anyway. What the client gets is always text it can read, with the key masked in errors
// and the usage counted.
#include "support/compress.h"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "codec/codec.h"
#include "fixture.h"
#include "proxy_helpers.h"
#include "support/fake_upstream.h"

using namespace keypool::testing;
using nlohmann::json;

namespace {

const std::string kKey = "sk-proj-Zq3vKx81mTr0aBcDeFgHiJkLmN";
// What httpx sends with brotli and zstandard installed.
const std::string kSdkAccept = "gzip, deflate, br, zstd";

// One service "svc" at the fake upstream, one key, a team token.
struct Rig {
  FakeUpstream up;
  Keypool kp;
  std::string token;
  int64_t key_id = 0;
  explicit Rig(Handler h) : up(std::move(h)), kp({}, false) {
    kp.write_service("svc", service_yaml("svc", up.base_url()));
    kp.start();
    add_tier(kp, "t", {{"svc", 10000}});
    key_id = add_key(kp, "k", kKey, "t", "svc");
    token = add_token(kp, {{"tier", "t"}})["token"].get<std::string>();
  }
  HeaderList headers(const std::string& accept_encoding) const {
    HeaderList h{{"Authorization", "Bearer " + token}, {"Content-Type", "application/json"}};
    if (!accept_encoding.empty()) h.emplace_back("Accept-Encoding", accept_encoding);
    return h;
  }
  Response post(const std::string& accept_encoding,
                const std::string& path = "/v1/svc/v1/chat/completions") {
    return request(kp.port, "POST", path, headers(accept_encoding), R"({"model":"m"})");
  }
};

// The body as the client's HTTP library would read it: decoded per Content-Encoding.
std::string readable(const Response& r) {
  auto coding = keypool::codec::classify_content_encoding(r.header("content-encoding"));
  if (coding == keypool::codec::Coding::Identity) return r.body;
  auto dec = keypool::codec::Decoder::make(coding);
  REQUIRE_MESSAGE(dec, "undecodable Content-Encoding " << r.header("content-encoding"));
  std::string out;
  dec->push(r.body);
  for (;;) {
    auto piece = dec->next();
    REQUIRE_MESSAGE(piece, piece.error().message);
    if (piece->empty()) break;
    out.append(*piece);
  }
  REQUIRE(dec->finish());
  return out;
}

// The key's usage counters once `requests` requests landed (the store gets usage each second).
json key_counters(Keypool& kp, int64_t key, int requests) {
  json counters;
  for (int i = 0; i < 150; ++i) {
    json keys = kp.admin("GET", "/admin/keys").json()["keys"];  // held: the loop reads into it
    for (const auto& k : keys)
      if (k["id"] == key && k.contains("counters")) counters = k["counters"];
    if (!counters.is_null() && counters["requests"] == requests) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return counters;
}

const std::string kChatAnswer =
    R"({"id":"chatcmpl-1","object":"chat.completion","model":"m","choices":[{"index":0,)"
    R"("message":{"role":"assistant","content":"Hello from the pool"},"finish_reason":"stop"}],)"
    R"("usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}})";

Handler chat_answer() {
  return [](const RecordedRequest&, ResponseWriter& w) {
    w.head(200, {{"Content-Type", "application/json"},
                 {"Content-Length", std::to_string(kChatAnswer.size())}});
    w.body(kChatAnswer);
  };
}

// What OpenAI answers to a wrong key: the key, quoted whole.
Handler echo_key_error(int status) {
  return [status](const RecordedRequest& req, ResponseWriter& w) {
    std::string body = R"({"error":{"message":"Incorrect API key provided: )" +
                       req.header("authorization").substr(7) +
                       R"(.","type":"invalid_request_error"}})";
    w.head(status,
           {{"Content-Type", "application/json"}, {"Content-Length", std::to_string(body.size())}});
    w.body(body);
  };
}

const char* kCodings[] = {"gzip", "deflate", "deflate-raw", "br"};

// The peak VmRSS of a process, sampled every 10 ms on a thread until finish().
class PeakRss {
 public:
  explicit PeakRss(pid_t pid)
      : pid_(pid), thread_([this] {
          while (!stop_) {
            peak_ = std::max(peak_.load(), rss_kib(pid_));
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
          }
        }) {}
  ~PeakRss() { finish(); }
  long finish() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    return std::max(peak_.load(), rss_kib(pid_));
  }

 private:
  pid_t pid_;
  std::atomic<bool> stop_{false};
  std::atomic<long> peak_{0};
  std::thread thread_;
};

}  // namespace

TEST_CASE("compress: the upstream is asked for identity, whatever the client accepts") {
  Rig rig(chat_answer());
  rig.up.set_compression(Compression::Honour);  // an edge that compresses when asked
  for (std::string accept : {kSdkAccept, std::string("gzip"), std::string()}) {
    CAPTURE(accept);
    rig.up.clear_requests();
    auto r = rig.post(accept);
    CHECK(r.status == 200);
    CHECK(r.header("content-encoding").empty());
    CHECK(r.body == kChatAnswer);
    REQUIRE(rig.up.request_count() == 1);
    CHECK(rig.up.requests()[0].header("accept-encoding") == "identity");
    CHECK(header_count(rig.up.requests()[0].headers, "accept-encoding") == 1);
  }
  json counters = key_counters(rig.kp, rig.key_id, 3);
  CHECK(counters["input_tokens"] == 33);
  CHECK(counters["output_tokens"] == 21);
}

// The measured bug: a gzip 400 that echoed the key reached the client unmasked.
TEST_CASE("compress: a compressed error body that quotes the key reaches the client masked") {
  Rig rig(echo_key_error(400));
  for (const char* coding : kCodings) {
    CAPTURE(coding);
    rig.up.set_compression(Compression::Force, coding);  // an edge that ignores identity
    for (std::string accept : {kSdkAccept, std::string()}) {
      CAPTURE(accept);
      auto r = rig.post(accept);
      CHECK(r.status == 400);
      std::string text = readable(r);
      INFO(text);
      CHECK(text.find("Incorrect API key provided") != std::string::npos);
      CHECK(text.find(kKey) == std::string::npos);
      CHECK(text.find(kKey.substr(kKey.size() - 8)) == std::string::npos);
      // Forwarded decoded: the client gets text with its own length.
      CHECK(r.header("content-encoding").empty());
      CHECK(json::parse(r.body)["error"]["type"] == "invalid_request_error");
    }
  }
}

TEST_CASE("compress: a compressed answer's usage is counted, and the client reads it as text") {
  Rig rig(chat_answer());
  int n = 0;
  for (const char* coding : kCodings) {
    CAPTURE(coding);
    rig.up.set_compression(Compression::Force, coding);
    for (std::string accept : {kSdkAccept, std::string()}) {
      CAPTURE(accept);
      auto r = rig.post(accept);
      ++n;
      CHECK(r.status == 200);
      CHECK(r.header("content-encoding").empty());  // a client without Accept-Encoding above all
      CHECK(r.body == kChatAnswer);
    }
  }
  json counters = key_counters(rig.kp, rig.key_id, n);
  CAPTURE(counters.dump());
  CHECK(counters["requests"] == n);
  CHECK(counters["input_tokens"] == 11 * n);
  CHECK(counters["output_tokens"] == 7 * n);
}

// Each event is flushed by the edge, so it decodes on arrival: the client gets it before the
// next is written, and the usage in the last event counts.
TEST_CASE(
    "compress: a compressed SSE stream arrives event by event, decoded, and its usage counts") {
  const int events = 4, gap_ms = 300;
  Rig rig([&](const RecordedRequest&, ResponseWriter& w) {
    w.head(200, {{"Content-Type", "text/event-stream"}, {"Cache-Control", "no-cache"}});
    for (int i = 0; i < events; ++i) {
      if (i > 0) w.sleep_ms(gap_ms);
      w.body("data: {\"choices\":[{\"delta\":{\"content\":\"t" + std::to_string(i) +
             "\"}}],\"usage\":null}\n\n");
    }
    w.body(
        "data: "
        "{\"choices\":[],\"usage\":{\"prompt_tokens\":13,\"completion_tokens\":4,\"total_tokens\":"
        "17}}\n\n");
    w.body("data: [DONE]\n\n");
    w.end();
  });
  int n = 0;
  for (const char* coding : kCodings) {
    CAPTURE(coding);
    rig.up.set_compression(Compression::Force, coding);
    auto c = Connection::connect("127.0.0.1", rig.kp.port, 10000);
    c.send("POST", "/v1/svc/v1/chat/completions", rig.headers(kSdkAccept), R"({"stream":true})");
    auto head = c.read_head();
    ++n;
    REQUIRE(head.status == 200);
    CHECK(head.header("content-encoding").empty());
    CHECK(head.header("content-type") == "text/event-stream");
    // The first event, whole and readable, long before the stream ends.
    auto t0 = std::chrono::steady_clock::now();
    std::string got;
    while (got.find("\n\n") == std::string::npos) {
      auto chunk = c.read_chunk(5000);
      REQUIRE(chunk);
      got += *chunk;
    }
    auto first_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
            .count();
    CHECK(got.rfind("data: {\"choices\":[{\"delta\":{\"content\":\"t0\"}}]", 0) == 0);
    CHECK(first_ms < (events - 1) * gap_ms);
    while (auto chunk = c.read_chunk(5000)) got += *chunk;
    CHECK(got.find("\"t3\"") != std::string::npos);
    CHECK(got.size() >= 6);
    CHECK(got.substr(got.size() - 14) == "data: [DONE]\n\n");
  }
  json counters = key_counters(rig.kp, rig.key_id, n);
  CAPTURE(counters.dump());
  CHECK(counters["input_tokens"] == 13 * n);
  CHECK(counters["output_tokens"] == 4 * n);
}

TEST_CASE("compress: an uncompressed SSE stream passes as before, event by event") {
  Rig rig(sse(3, 200));
  rig.up.set_compression(Compression::Honour);
  auto c = Connection::connect("127.0.0.1", rig.kp.port, 10000);
  c.send("GET", "/v1/svc/stream", rig.headers(kSdkAccept));
  auto head = c.read_head();
  REQUIRE(head.status == 200);
  CHECK(head.header("content-encoding").empty());
  std::string got;
  while (auto chunk = c.read_chunk(5000)) got += *chunk;
  CHECK(got == "data: {\"i\":0}\n\ndata: {\"i\":1}\n\ndata: {\"i\":2}\n\n");
  CHECK(rig.up.requests()[0].header("accept-encoding") == "identity");
}

// zstd (or any coding keypool does not decode) sent despite identity: relayed only where
// keypool need not read it and the client can, else refused.
TEST_CASE("compress: a coding keypool cannot decode is never relayed blind where it must be read") {
  const std::string zstd_bytes("\x28\xb5\x2f\xfd\x00\x58\x31\x00\x00{\"ok\":1}",
                               17);  // opaque to keypool
  int status = 200;
  Rig rig([&](const RecordedRequest&, ResponseWriter& w) {
    w.head(status, {{"Content-Type", "application/json"},
                    {"Content-Encoding", "zstd"},
                    {"Content-Length", std::to_string(zstd_bytes.size())}});
    w.body(zstd_bytes);
  });
  SUBCASE("a success the client can read goes through untouched (its usage cannot be counted)") {
    auto r = rig.post(kSdkAccept);
    CHECK(r.status == 200);
    CHECK(r.header("content-encoding") == "zstd");
    CHECK(r.body == zstd_bytes);
  }
  SUBCASE("a success the client did not accept is a 502") {
    for (std::string accept :
         {std::string(), std::string("gzip, br"), std::string("zstd;q=0, *")}) {
      CAPTURE(accept);
      auto r = rig.post(accept);
      CHECK(r.status == 502);
      CHECK(r.header("content-encoding").empty());
      CHECK(json::parse(r.body)["error"]["code"] == "upstream_encoding");
    }
  }
  SUBCASE("an error body, which may quote the key, is a 502 even when the client accepts it") {
    status = 400;
    auto r = rig.post(kSdkAccept);
    CHECK(r.status == 502);
    CHECK(r.header("content-encoding").empty());
    CHECK(r.body.find(zstd_bytes) == std::string::npos);
    CHECK(json::parse(r.body)["error"]["code"] == "upstream_encoding");
  }
}

TEST_CASE("compress: a corrupt or truncated compressed answer never ends cleanly") {
  const std::string good = compress("gzip", kChatAnswer);
  std::string mode;
  int status = 200;
  Rig rig([&](const RecordedRequest&, ResponseWriter& w) {
    std::string body = good;
    if (mode == "corrupt") body.replace(12, 8, "XXXXXXXX");
    if (mode == "truncated") body.resize(body.size() - 6);
    w.head(status,
           {{"Content-Type", "application/json"}, {"Content-Encoding", "gzip"}});  // chunked
    w.body(body);
  });
  for (std::string m : {"corrupt", "truncated"}) {
    CAPTURE(m);
    mode = m;
    SUBCASE("a success: the client sees a broken response") {
      status = 200;
      auto c = Connection::connect("127.0.0.1", rig.kp.port, 10000);
      c.send("POST", "/v1/svc/v1/chat/completions", rig.headers(kSdkAccept), "{}");
      bool broken = false;
      try {
        auto head = c.read_head();
        CHECK(head.status == 200);
        while (auto chunk = c.read_chunk(5000)) {
        }
      } catch (const TimeoutError&) {
        FAIL("keypool neither finished nor broke the response");
      } catch (const std::exception&) {
        broken = true;
      }
      CHECK(broken);
    }
    SUBCASE("an error body (held for masking): a clean 502") {
      status = 400;
      auto r = rig.post(kSdkAccept);
      CHECK(r.status == 502);
      CHECK(json::parse(r.body)["error"]["code"] == "bad_gateway");
      CHECK(r.body.find("gzip") != std::string::npos);
    }
  }
  CHECK(rig.kp.get("/health").status == 200);
}

// gzip shrinks a run of one byte about 1000 times: each 64 KiB the upstream sends is 64 MiB
// of text. keypool decodes only as fast as the client reads, so its memory stays flat.
TEST_CASE("compress: a body that expands a thousandfold is decoded as fast as the client reads") {
  const int mib = 96;
  const std::string block(1 << 20, 'a');
  Rig rig([&](const RecordedRequest&, ResponseWriter& w) {
    w.head(200, {{"Content-Type", "text/plain"}});
    for (int i = 0; i < mib; ++i) w.body(block);
    w.end();
  });
  rig.up.set_compression(Compression::Force, "gzip");
  long idle = rss_kib(rig.kp.proc->pid());
  REQUIRE(idle > 0);
  PeakRss sampler(rig.kp.proc->pid());
  auto c = Connection::connect("127.0.0.1", rig.kp.port, 30000);
  c.send("GET", "/v1/svc/big", rig.headers(kSdkAccept));
  auto head = c.read_head();
  REQUIRE(head.status == 200);
  CHECK(head.header("content-encoding").empty());
  uint64_t got = 0;
  bool only_a = true;
  while (auto chunk = c.read_chunk(10000)) {
    got += chunk->size();
    only_a = only_a && chunk->find_first_not_of('a') == std::string::npos;
  }
  long peak = sampler.finish();
  CHECK(got == uint64_t{mib} << 20);
  CHECK(only_a);
  MESSAGE("decoded " << got << " bytes: idle RSS " << idle << " KiB, peak " << peak << " KiB");
  CHECK(peak - idle <= 32 * 1024);
}
