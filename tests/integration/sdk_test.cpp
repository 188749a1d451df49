// The official OpenAI Node SDK against keypool: what a team really runs. The SDK talks to
// keypool with a team token; keypool forwards to a FakeUpstream standing in for
// api.openai.com with a pooled key. Needs `npm install` in tests/sdk (node_modules is not
// checked in); without it this test fails, it never skips.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include "fixture.h"
#include "proxy_helpers.h"
#include "support/fake_upstream.h"

using namespace keypool::testing;
using nlohmann::json;

namespace {

// Enough of the Chat Completions API for the SDK: JSON for a plain call, SSE chunks ending in
// [DONE] for stream:true.
Handler fake_openai() {
  return [](const RecordedRequest& req, ResponseWriter& w) {
    if (req.method != "POST" || req.path != "/v1/chat/completions") {
      std::string body = R"({"error":{"message":"unknown path","type":"invalid_request_error"}})";
      w.head(404, {{"Content-Type", "application/json"}, {"Content-Length", std::to_string(body.size())}});
      w.body(body);
      return;
    }
    json in = json::parse(req.body, nullptr, false);
    bool stream = in.is_object() && in.value("stream", false);
    std::string model = in.is_object() ? in.value("model", "gpt-4o-mini") : "gpt-4o-mini";
    if (!stream) {
      json out = {{"id", "chatcmpl-plain"},
                  {"object", "chat.completion"},
                  {"created", 1700000000},
                  {"model", model},
                  {"choices", {{{"index", 0},
                                {"message", {{"role", "assistant"}, {"content", "Hello from the pool"}}},
                                {"finish_reason", "stop"}}}},
                  {"usage", {{"prompt_tokens", 3}, {"completion_tokens", 4}, {"total_tokens", 7}}}};
      std::string body = out.dump();
      w.head(200, {{"Content-Type", "application/json"}, {"Content-Length", std::to_string(body.size())}});
      w.body(body);
      return;
    }
    // "long-stream": what a reasoning model does, with the shipped default timeouts in front
    // of it: a head after a second, then one event a second for 16 s (longer than every
    // default timeout but the idle one).
    const bool long_stream = model == "long-stream";
    if (long_stream) w.sleep_ms(1000);
    w.head(200, {{"Content-Type", "text/event-stream"}, {"Cache-Control", "no-cache"}});
    std::vector<std::string> pieces = {"Hel", "lo ", "stream"};
    if (long_stream) pieces.assign(16, "tick ");
    for (const auto& p : pieces) {
      json chunk = {{"id", "chatcmpl-stream"},
                    {"object", "chat.completion.chunk"},
                    {"created", 1700000000},
                    {"model", model},
                    {"choices", {{{"index", 0}, {"delta", {{"content", p}}}, {"finish_reason", nullptr}}}}};
      w.body("data: " + chunk.dump() + "\n\n");
      w.sleep_ms(long_stream ? 1000 : 20);
    }
    json last = {{"id", "chatcmpl-stream"},
                 {"object", "chat.completion.chunk"},
                 {"created", 1700000000},
                 {"model", model},
                 {"choices", {{{"index", 0}, {"delta", json::object()}, {"finish_reason", "stop"}}}}};
    w.body("data: " + last.dump() + "\n\n");
    w.body("data: [DONE]\n\n");
    w.end();
  };
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

}  // namespace

TEST_CASE("sdk: the OpenAI Node SDK works through keypool, plain, streamed and a 17 s stream") {
  const std::string sdk_dir = source_dir() + "/tests/sdk";
  REQUIRE_MESSAGE(exists(sdk_dir + "/node_modules/openai/package.json"),
                  "tests/sdk/node_modules is missing: run `cd tests/sdk && npm install --no-audit "
                  "--no-fund` before the integration tests");
  auto node = run_command({"node", "--version"}, {}, "", 10000);
  REQUIRE_MESSAGE(node.exit_code == 0, "node is not runnable: " << node.output);

  FakeUpstream up(fake_openai());
  Keypool kp({}, false);
  kp.write_service("openai", service_yaml("openai", up.base_url(), "bearer"));
  kp.start();
  std::string token = setup_pool(kp, "openai", {"sk-pooled-openai-1234"});

  std::string base = "http://127.0.0.1:" + std::to_string(kp.port) + "/v1/openai/v1";
  auto res = run_command({"node", sdk_dir + "/openai_chat.mjs", base, token}, {}, "", 60000);
  INFO("node output: " << res.output);
  REQUIRE_FALSE(res.timed_out);
  REQUIRE(res.exit_code == 0);

  // The summary is the last line of stdout (node may print warnings before it).
  auto nl = res.output.find_last_of('\n', res.output.size() >= 2 ? res.output.size() - 2 : 0);
  std::string last = res.output.substr(nl == std::string::npos ? 0 : nl + 1);
  json summary = json::parse(last, nullptr, false);
  REQUIRE(summary.is_object());
  CHECK(summary["ok"] == true);
  CHECK(summary["plain"]["content"] == "Hello from the pool");
  CHECK(summary["plain"]["usage"]["total_tokens"] == 7);
  CHECK(summary["stream"]["content"] == "Hello stream");
  CHECK(summary["stream"]["chunks"] == 4);
  // The long stream outlived request_head_ms (10 s by default) and arrived whole.
  CHECK(summary["long"]["chunks"] == 17);
  std::string ticks;
  for (int i = 0; i < 16; ++i) ticks += "tick ";
  CHECK(summary["long"]["content"] == ticks);
  CHECK(summary["long"]["seconds"].get<double>() >= 15.0);

  auto seen = up.requests();
  REQUIRE(seen.size() == 3);
  for (const auto& r : seen) {
    CAPTURE(r.body);
    CHECK(r.method == "POST");
    CHECK(r.path == "/v1/chat/completions");
    CHECK(r.header("authorization") == "Bearer sk-pooled-openai-1234");
    CHECK_FALSE(upstream_saw(r, token));
  }
  CHECK(json::parse(seen[0].body).value("stream", false) == false);
  CHECK(json::parse(seen[1].body)["stream"] == true);
  CHECK(json::parse(seen[2].body)["model"] == "long-stream");
}
