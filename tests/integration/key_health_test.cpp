// Key health end to end: the real binary in front of a FakeUpstream that answers like the
// providers do (OpenAI and Anthropic error bodies for 401, 403, 404, 429 insufficient_quota
// and 5xx), with the bundled services.d files pointed at it. What an answer means for the key
// (suspend, cool down, pass, fail over), the blast-radius cap, health probes that bring a key
// back, POST /admin/keys {"validate": true}, POST /admin/keys/{id}/test and `keypool keys test`.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "fixture.h"
#include "proxy_helpers.h"
#include "support/compress.h"
#include "support/fake_upstream.h"

using namespace keypool::testing;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// Bodies as the providers send them (TRAFFIC.md).
const std::string kOpenAiInvalid =
    R"({"error":{"message":"Incorrect API key provided: sk-proj-****abcd. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}})";
const std::string kOpenAiQuota =
    R"({"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}})";
const std::string kOpenAiForbidden =
    R"({"error":{"message":"Project proj_abc does not have access to model gpt-4o-realtime","type":"invalid_request_error","param":null,"code":"model_not_found"}})";
const std::string kOpenAiNotFound =
    R"({"error":{"message":"The model `gpt-9` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}})";
const std::string kOpenAi500 =
    R"({"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}})";
const std::string kAnthropicPermission =
    R"({"type":"error","error":{"type":"permission_error","message":"Your API key does not have permission to use the specified resource."}})";
const std::string kAnthropicAuth =
    R"({"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}})";

HeaderList bearer_of(const std::string& token) { return {{"Authorization", "Bearer " + token}}; }

void reply(ResponseWriter& w, int status, const std::string& body) {
  w.head(status, {{"Content-Type", "application/json"}, {"Content-Length", std::to_string(body.size())}});
  w.body(body);
}

template <class Pred>
bool wait_until(Pred pred, int timeout_ms, int step_ms = 25) {
  auto t0 = Clock::now();
  for (;;) {
    if (pred()) return true;
    if (std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count() >= timeout_ms) return pred();
    std::this_thread::sleep_for(std::chrono::milliseconds(step_ms));
  }
}

json key_row(Keypool& kp, int64_t id) {
  auto r = kp.admin("GET", "/admin/keys");
  REQUIRE_MESSAGE(r.status == 200, r.body);
  json keys = r.json()["keys"];
  for (const auto& k : keys)
    if (k["id"] == id) return k;
  return nullptr;
}

std::string state_of(Keypool& kp, int64_t id) { return key_row(kp, id).value("state", ""); }



// Audit rows of one action for one key, newest first (flushed before the answer).
json audit_rows(Keypool& kp, const std::string& action, int64_t key_id) {
  auto r = kp.admin("GET", "/admin/audit?action=" + action);
  REQUIRE_MESSAGE(r.status == 200, r.body);
  json out = json::array();
  json rows = r.json()["audit"];
  for (const auto& x : rows)
    if (x["target"] == std::to_string(key_id)) out.push_back(x);
  return out;
}

// The shipped services.d file for `name`, with its base_url pointed at the fake.
std::string bundled_service(const std::string& name, const std::string& base_url) {
  std::ifstream in(source_dir() + "/services.d/" + name + ".yaml");
  REQUIRE_MESSAGE(in, "services.d/" << name << ".yaml");
  std::string line, out;
  while (std::getline(in, line)) out += (line.rfind("base_url:", 0) == 0 ? "base_url: " + base_url : line) + "\n";
  return out;
}

// Which key (by value) a request carried: bearer for openai, x-api-key for anthropic.
std::string key_of(const RecordedRequest& r) {
  auto auth = r.header("authorization");
  if (auth.rfind("Bearer ", 0) == 0) return auth.substr(7);
  return r.header("x-api-key");
}

int count_key(const FakeUpstream& up, const std::string& value) {
  int n = 0;
  for (const auto& r : up.requests()) n += key_of(r) == value;
  return n;
}

}  // namespace

TEST_CASE("key health: a client hammering a forbidden endpoint leaves every key active; other teams are served") {
  FakeUpstream up([](const RecordedRequest& req, ResponseWriter& w) {
    if (req.path == "/v1/realtime/sessions") return reply(w, 403, kOpenAiForbidden);
    if (req.path == "/v1/messages/forbidden") return reply(w, 403, kAnthropicPermission);
    if (req.path == "/v1/chat/completions" && req.body.find("gpt-9") != std::string::npos)
      return reply(w, 404, kOpenAiNotFound);
    if (req.path == "/v1/bad") return reply(w, 400, R"({"error":{"message":"bad","code":null}})");
    if (req.path == "/v1/unprocessable") return reply(w, 422, R"({"detail":"nope"})");
    reply(w, 200, R"({"ok":true})");
  });
  Keypool kp({}, false);
  kp.write_service("openai", bundled_service("openai", up.base_url()));
  kp.write_service("anthropic", bundled_service("anthropic", up.base_url()));
  kp.start();
  add_tier(kp, "t", {{"openai", 10000}, {"anthropic", 10000}});
  std::vector<int64_t> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(add_key(kp, "o" + std::to_string(i), "sk-forbid-" + std::to_string(i) + "-abcdef", "t", "openai"));
  for (int i = 0; i < 2; ++i) ids.push_back(add_key(kp, "a" + std::to_string(i), "sk-ant-forbid-" + std::to_string(i) + "-abcdef", "t", "anthropic"));
  std::string team_a = add_token(kp, {{"tier", "t"}, {"name", "a"}})["token"];
  std::string team_b = add_token(kp, {{"tier", "t"}, {"name", "b"}})["token"];

  const int kHammer = 12;
  for (int i = 0; i < kHammer; ++i) {
    CAPTURE(i);
    auto r = request(kp.port, "POST", "/v1/openai/v1/realtime/sessions", bearer_of(team_a), R"({"model":"gpt-4o-realtime"})");
    CHECK(r.status == 403);
    CHECK(r.body == kOpenAiForbidden);  // unchanged
    auto a = request(kp.port, "POST", "/v1/anthropic/v1/messages/forbidden",
                     {{"x-api-key", team_a}, {"anthropic-version", "2023-06-01"}}, "{}");
    CHECK(a.status == 403);
    CHECK(a.body == kAnthropicPermission);
    auto nf = request(kp.port, "POST", "/v1/openai/v1/chat/completions", bearer_of(team_a), R"({"model":"gpt-9"})");
    CHECK(nf.status == 404);
    CHECK(nf.body == kOpenAiNotFound);
  }
  CHECK(kp.get("/v1/openai/v1/bad", bearer_of(team_a)).status == 400);
  CHECK(kp.get("/v1/openai/v1/unprocessable", bearer_of(team_a)).status == 422);
  // Never a failover: one upstream request per client request.
  CHECK(up.request_count() == static_cast<size_t>(3 * kHammer + 2));
  for (int64_t id : ids) {
    CAPTURE(id);
    CHECK(state_of(kp, id) == "active");
  }
  // The other team is served, by every key in turn.
  std::set<std::string> served_by;
  for (int i = 0; i < 8; ++i) {
    auto r = kp.get("/v1/openai/v1/models", bearer_of(team_b));
    CHECK(r.status == 200);
    served_by.insert(r.header("X-Keypool-Key-Id"));
  }
  CHECK(served_by.size() == 4);
  auto m = metrics_text(kp);
  CHECK(metric_value(m, R"(keypool_key_outcomes_total{service="openai",outcome="refused"})") == 2 * kHammer + 2);
  CHECK(metric_value(m, R"(keypool_key_outcomes_total{service="anthropic",outcome="refused"})") == kHammer);
  CHECK(metric_value(m, R"(keypool_failovers_total{service="openai"})") == 0);
  CHECK(audit_rows(kp, "key.suspend", ids[0]).empty());
}

TEST_CASE("key health: invalid and out-of-quota keys are suspended and failed over; 5xx fails over and leaves the key") {
  FakeUpstream up([](const RecordedRequest& req, ResponseWriter& w) {
    std::string k = key_of(req);
    if (k == "sk-bad-invalid-0001") return reply(w, 401, kOpenAiInvalid);
    if (k == "sk-bad-quota-00003") return reply(w, 429, kOpenAiQuota);
    if (k == "sk-bad-down-000004") return reply(w, 500, kOpenAi500);
    if (k == "sk-ant-bad-invalid1") return reply(w, 401, kAnthropicAuth);
    reply(w, 200, R"({"ok":true})");
  });
  Keypool kp({}, false);
  kp.write_service("openai", bundled_service("openai", up.base_url()));
  kp.write_service("anthropic", bundled_service("anthropic", up.base_url()));
  kp.start();
  add_tier(kp, "t", {{"openai", 10000}, {"anthropic", 10000}});
  int64_t a = add_key(kp, "A", "sk-bad-invalid-0001", "t", "openai");
  int64_t b = add_key(kp, "B", "sk-good-000000002", "t", "openai");
  int64_t c = add_key(kp, "C", "sk-bad-quota-00003", "t", "openai");
  int64_t d = add_key(kp, "D", "sk-bad-down-000004", "t", "openai");
  int64_t e = add_key(kp, "E", "sk-good-000000005", "t", "openai");
  int64_t x = add_key(kp, "X", "sk-ant-bad-invalid1", "t", "anthropic");
  int64_t y = add_key(kp, "Y", "sk-ant-good-000002", "t", "anthropic");
  std::string token = add_token(kp, {{"tier", "t"}})["token"];

  // Round-robin from A: A (401) -> B.
  auto r1 = kp.get("/v1/openai/v1/models", bearer_of(token));
  CHECK(r1.status == 200);
  CHECK(r1.header("X-Keypool-Key-Id") == std::to_string(b));
  // Then C (429 insufficient_quota) -> D (500) -> E.
  auto r2 = kp.get("/v1/openai/v1/models", bearer_of(token));
  CHECK(r2.status == 200);
  CHECK(r2.header("X-Keypool-Key-Id") == std::to_string(e));
  auto r3 = request(kp.port, "POST", "/v1/anthropic/v1/messages", {{"x-api-key", token}}, "{}");
  CHECK(r3.status == 200);
  CHECK(r3.header("X-Keypool-Key-Id") == std::to_string(y));

  json ra = key_row(kp, a), rc = key_row(kp, c), rd = key_row(kp, d), rx = key_row(kp, x);
  CAPTURE(ra.dump());
  CAPTURE(rc.dump());
  CHECK(ra["state"] == "suspended");
  CHECK(ra["suspended_reason"] == "invalid");
  CHECK(ra["enabled"] == true);
  CHECK(ra.contains("next_probe_at"));
  CHECK(rc["state"] == "suspended");
  CHECK(rc["suspended_reason"] == "quota");
  CHECK_FALSE(rc.contains("cooling_until"));  // not retried every Retry-After
  CHECK(rd["state"] == "active");
  CHECK(rx["state"] == "suspended");
  CHECK(rx["suspended_reason"] == "invalid");
  CHECK(state_of(kp, b) == "active");
  CHECK(state_of(kp, e) == "active");

  // Suspended keys get no more traffic; D still does (its 500 was the upstream's fault).
  for (int i = 0; i < 6; ++i) kp.get("/v1/openai/v1/models", bearer_of(token));
  CHECK(count_key(up, "sk-bad-invalid-0001") == 1);
  CHECK(count_key(up, "sk-bad-quota-00003") == 1);
  CHECK(count_key(up, "sk-bad-down-000004") >= 2);

  auto m = metrics_text(kp);
  CHECK(metric_value(m, R"(keypool_key_outcomes_total{service="openai",outcome="invalid"})") == 1);
  CHECK(metric_value(m, R"(keypool_key_outcomes_total{service="openai",outcome="quota"})") == 1);
  CHECK(metric_value(m, R"(keypool_key_outcomes_total{service="openai",outcome="upstream_failed"})") >= 1);
  CHECK(metric_value(m, R"(keypool_keys{service="openai",tier="t",state="suspended"})") == 2);
  auto h = kp.admin("GET", "/admin/health").json();
  CHECK(h["keys"]["suspended"] == 3);
  CHECK(h["tiers"]["t"]["suspended"] == 3);

  // Audited as keypool's doing, with the state; kept over a restart.
  CHECK(wait_until([&] { return !audit_rows(kp, "key.suspend", c).empty(); }, 3000));
  json row = audit_rows(kp, "key.suspend", c)[0];
  CHECK(row["actor"] == "system");
  CHECK(row["details"]["reason"] == "quota");
  CHECK(row["details"]["status"] == 429);
  CHECK(row["details"]["state"] == "suspended");
  kp.restart();
  CHECK(state_of(kp, a) == "suspended");
  CHECK(key_row(kp, c)["suspended_reason"] == "quota");
  CHECK(state_of(kp, d) == "active");
  // An admin's enable lifts a suspension.
  auto p = kp.admin("PATCH", "/admin/keys/" + std::to_string(c), {{"enabled", true}});
  REQUIRE_MESSAGE(p.status == 200, p.body);
  CHECK(state_of(kp, c) == "active");
  CHECK(audit_rows(kp, "key.resume", c).size() == 1);
  auto enabled = kp.admin("GET", "/admin/audit?action=key.enable").json()["audit"];
  REQUIRE(enabled.size() == 1);
  CHECK(enabled[0]["details"]["state"] == "active");
  // So does a new value: the suspension was the old one's.
  auto rot = kp.admin("POST", "/admin/keys/" + std::to_string(a) + "/rotate", {{"key", "sk-rotated-good-0001"}});
  REQUIRE_MESSAGE(rot.status == 200, rot.body);
  CHECK(state_of(kp, a) == "active");
  CHECK(kp.get("/v1/openai/v1/models", bearer_of(token)).status == 200);
}

TEST_CASE("key health: the blast-radius cap stops suspending at half a pool; the client gets the upstream's answer") {
  // Every key "invalid": an upstream having a bad minute, or a rule matching too much.
  FakeUpstream up([](const RecordedRequest&, ResponseWriter& w) { reply(w, 401, kOpenAiInvalid); });
  Keypool kp({}, false);
  kp.write_service("openai", bundled_service("openai", up.base_url()));
  kp.start();
  add_tier(kp, "t", {{"openai", 10000}});
  std::vector<int64_t> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(add_key(kp, "k" + std::to_string(i), "sk-cap-key-" + std::to_string(i) + "-zz", "t", "openai"));
  std::string token = add_token(kp, {{"tier", "t"}})["token"];

  for (int i = 0; i < 5; ++i) {
    CAPTURE(i);
    auto r = kp.get("/v1/openai/v1/models", bearer_of(token));
    CHECK(r.status == 401);  // the upstream's own answer, never keypool's 503
    CHECK(r.body.find("invalid_api_key") != std::string::npos);
  }
  int suspended = 0, active = 0;
  for (int64_t id : ids) {
    auto s = state_of(kp, id);
    suspended += s == "suspended";
    active += s == "active";
  }
  CHECK(suspended == 2);
  CHECK(active == 2);
  auto m = metrics_text(kp);
  CHECK(metric_value(m, R"(keypool_suspensions_capped_total{service="openai",tier="t"})") >= 5);
  auto h = kp.admin("GET", "/admin/health").json();
  CAPTURE(h.dump());
  REQUIRE(h["suspension_cap"].size() == 1);
  CHECK(h["suspension_cap"][0]["service"] == "openai");
  CHECK(h["suspension_cap"][0]["tier"] == "t");
  CHECK(h["suspension_cap"][0]["capped"].get<int>() >= 5);
  CHECK(h["suspension_cap"][0]["suspended_last_60s"] == 2);
  auto capped = kp.admin("GET", "/admin/audit?action=key.suspend_capped").json()["audit"];
  CHECK(capped.size() >= 5);
  CHECK(capped[0]["details"]["state"] == "active");
}

TEST_CASE("key health: a probe re-enables a suspended key once the upstream takes it again") {
  std::atomic<bool> valid{false};
  FakeUpstream up([&](const RecordedRequest& req, ResponseWriter& w) {
    if (key_of(req) == "sk-probe-A-0000001" && !valid) return reply(w, 401, kOpenAiInvalid);
    if (req.path == "/v1/models") return reply(w, 200, R"({"object":"list","data":[]})");
    reply(w, 200, R"({"ok":true})");
  });
  Keypool kp({}, false);
  kp.write_service("openai", bundled_service("openai", up.base_url()));
  kp.write_config({{"probe_initial_s", "1"}, {"probe_max_s", "2"}});
  kp.start();
  add_tier(kp, "t", {{"openai", 10000}});
  int64_t a = add_key(kp, "A", "sk-probe-A-0000001", "t", "openai");
  int64_t b = add_key(kp, "B", "sk-probe-B-0000002", "t", "openai");
  std::string token = add_token(kp, {{"tier", "t"}})["token"];

  auto r = kp.get("/v1/openai/v1/chat/completions", bearer_of(token));
  CHECK(r.status == 200);
  CHECK(r.header("X-Keypool-Key-Id") == std::to_string(b));
  REQUIRE(state_of(kp, a) == "suspended");
  // Probes fail while the key is invalid, and say so in the audit log.
  REQUIRE(wait_until([&] { return audit_rows(kp, "key.probe", a).size() >= 2; }, 15000, 100));
  json failed = audit_rows(kp, "key.probe", a)[0];
  CHECK(failed["details"]["result"] == "fail");
  CHECK(failed["details"]["status"] == 401);
  CHECK(failed["details"]["outcome"] == "invalid");
  CHECK(state_of(kp, a) == "suspended");
  // Each probe went to the health_check path with the key, as the auth scheme says.
  bool probed = false;
  for (const auto& q : up.requests()) probed = probed || (q.path == "/v1/models" && q.method == "GET" && key_of(q) == "sk-probe-A-0000001");
  CHECK(probed);

  valid = true;
  CHECK(wait_until([&] { return state_of(kp, a) == "active"; }, 15000, 100));
  CHECK(audit_rows(kp, "key.probe", a)[0]["details"]["result"] == "pass");
  json resumed = audit_rows(kp, "key.resume", a);
  REQUIRE(resumed.size() == 1);
  CHECK(resumed[0]["actor"] == "system");
  CHECK(resumed[0]["details"]["state"] == "active");
  // Back in rotation.
  std::set<std::string> served_by;
  for (int i = 0; i < 4; ++i) served_by.insert(kp.get("/v1/openai/v1/x", bearer_of(token)).header("X-Keypool-Key-Id"));
  CHECK(served_by.count(std::to_string(a)) == 1);
  CHECK(metric_value(metrics_text(kp), R"(keypool_health_probes_total{service="openai",result="pass"})") == 1);
}

TEST_CASE("key health: POST /admin/keys with validate probes first and refuses an invalid key") {
  std::atomic<int> models_status{200};
  FakeUpstream up([&](const RecordedRequest& req, ResponseWriter& w) {
    if (req.path != "/v1/models") return reply(w, 200, R"({"ok":true})");
    if (key_of(req) == "sk-validate-bad-001") return reply(w, 401, kOpenAiInvalid);
    if (models_status != 200) return reply(w, models_status, kOpenAi500);
    reply(w, 200, R"({"object":"list","data":[]})");
  });
  Keypool kp({}, false);
  kp.write_service("openai", bundled_service("openai", up.base_url()));
  kp.write_service("plain", service_yaml("plain", up.base_url()));
  kp.start();
  add_tier(kp, "t", {{"openai", 100}, {"plain", 100}});
  auto count_keys = [&] { return kp.admin("GET", "/admin/keys").json()["keys"].size(); };

  auto bad = kp.admin("POST", "/admin/keys",
                      {{"name", "bad"}, {"key", "sk-validate-bad-001"}, {"tier", "t"}, {"service", "openai"}, {"validate", true}});
  CHECK(bad.status == 422);
  CAPTURE(bad.body);
  CHECK(bad.json()["error"]["code"] == "invalid_key");
  CHECK(bad.json()["error"]["upstream_status"] == 401);
  CHECK(bad.json()["error"]["outcome"] == "invalid");
  CHECK(bad.body.find("sk-validate-bad-001") == std::string::npos);
  CHECK(count_keys() == 0);

  auto good = kp.admin("POST", "/admin/keys",
                       {{"name", "good"}, {"key", "sk-validate-good-01"}, {"tier", "t"}, {"service", "openai"}, {"validate", true}});
  CHECK(good.status == 201);
  CHECK(good.json()["state"] == "active");
  CHECK(count_keys() == 1);

  models_status = 503;  // the upstream failing says nothing about the key: 502, not stored
  auto down = kp.admin("POST", "/admin/keys",
                       {{"name", "maybe"}, {"key", "sk-validate-maybe-1"}, {"tier", "t"}, {"service", "openai"}, {"validate", true}});
  CHECK(down.status == 502);
  CHECK(down.json()["error"]["code"] == "validation_failed");
  CHECK(down.json()["error"]["upstream_status"] == 503);
  CHECK(count_keys() == 1);

  // Nothing to validate with: a clear 400.
  auto no_check = kp.admin("POST", "/admin/keys",
                           {{"name", "p"}, {"key", "sk-validate-plain-1"}, {"tier", "t"}, {"service", "plain"}, {"validate", true}});
  CHECK(no_check.status == 400);
  CHECK(no_check.json()["error"]["message"].get<std::string>().find("no health_check") != std::string::npos);
  auto no_service = kp.admin("POST", "/admin/keys", {{"name", "p"}, {"key", "sk-validate-plain-2"}, {"tier", "t"}, {"validate", true}});
  CHECK(no_service.status == 400);
  CHECK(count_keys() == 1);
}

TEST_CASE("key health: POST /admin/keys/{id}/test and keypool keys test probe on demand") {
  std::atomic<bool> valid{false};
  FakeUpstream up([&](const RecordedRequest& req, ResponseWriter& w) {
    if (key_of(req) == "sk-test-flaky-0001" && !valid) return reply(w, 401, kOpenAiInvalid);
    reply(w, 200, R"({"object":"list","data":[]})");
  });
  Keypool kp({}, false);
  kp.write_service("openai", bundled_service("openai", up.base_url()));
  kp.start();
  add_tier(kp, "t", {{"openai", 10000}});
  int64_t flaky = add_key(kp, "flaky", "sk-test-flaky-0001", "t", "openai");
  int64_t good = add_key(kp, "good", "sk-test-good-00002", "t", "openai");
  std::string token = add_token(kp, {{"tier", "t"}})["token"];
  auto test = [&](int64_t id) { return kp.admin("POST", "/admin/keys/" + std::to_string(id) + "/test"); };

  auto t = test(good);
  REQUIRE_MESSAGE(t.status == 200, t.body);
  CHECK(t.json()["result"] == "pass");
  CHECK(t.json()["upstream_status"] == 200);
  CHECK(t.json()["state"] == "active");
  CHECK(t.json()["resumed"] == false);

  // A failing test is reported and changes nothing.
  t = test(flaky);
  REQUIRE(t.status == 200);
  CHECK(t.json()["result"] == "fail");
  CHECK(t.json()["upstream_status"] == 401);
  CHECK(t.json()["outcome"] == "invalid");
  CHECK(t.json()["state"] == "active");
  CHECK(t.body.find("sk-test-flaky-0001") == std::string::npos);

  // Suspended by a request, then tested after the key works again: the test lifts it.
  kp.get("/v1/openai/v1/x", bearer_of(token));
  REQUIRE(state_of(kp, flaky) == "suspended");
  std::map<std::string, std::string> env{{"ADMIN_TOKEN", kAdminToken}, {"KEYPOOL_URL", "http://127.0.0.1:" + std::to_string(kp.port)}};
  auto cli_fail = run_command({keypool_bin(), "keys", "test", std::to_string(flaky)}, env, "", 20000);
  CAPTURE(cli_fail.output);
  CHECK(cli_fail.exit_code == 1);
  CHECK(cli_fail.output.find("fail (upstream 401, invalid)") != std::string::npos);
  CHECK(cli_fail.output.find("state suspended") != std::string::npos);
  valid = true;
  auto cli_pass = run_command({keypool_bin(), "keys", "test", std::to_string(flaky)}, env, "", 20000);
  CAPTURE(cli_pass.output);
  CHECK(cli_pass.exit_code == 0);
  CHECK(cli_pass.output.find("pass (upstream 200, ok), suspension lifted; state active") != std::string::npos);
  CHECK(state_of(kp, flaky) == "active");
  json probes = audit_rows(kp, "key.probe", flaky);
  REQUIRE(probes.size() == 3);
  CHECK(probes[0]["actor"] == "admin");
  CHECK(probes[0]["details"]["trigger"] == "test");
  CHECK(probes[0]["details"]["result"] == "pass");
  // The CLI lists the state and the reason.
  CHECK(run_command({keypool_bin(), "keys", "list"}, env, "", 20000).output.find("active") != std::string::npos);

  CHECK(test(9999).status == 404);
  auto bad_cli = run_command({keypool_bin(), "keys", "test", "abc"}, env, "", 20000);
  CHECK(bad_cli.exit_code == 2);
}

TEST_CASE("key health: error bodies are read in pieces, judged on their first 16 KiB, and passed on whole") {
  // A rule that needs the body of a 403; the answers arrive chunked, in small pieces.
  const std::string big_refusal = R"({"error":{"message":")" + std::string(40 * 1024, 'x') + R"(","code":"nope"}})";
  FakeUpstream up([&](const RecordedRequest& req, ResponseWriter& w) {
    auto send_chunked = [&](int status, const std::string& body) {
      w.head(status, {{"Content-Type", "application/json"}});  // chunked
      for (size_t i = 0; i < body.size(); i += 7) w.body(body.substr(i, 7));
      w.end();
    };
    if (key_of(req) == "sk-chunk-disabled-01") return send_chunked(403, R"({"error":{"message":"Your organization has been disabled."}})");
    if (key_of(req) == "sk-chunk-quota-0002") return send_chunked(429, kOpenAiQuota);
    if (req.path == "/big") return send_chunked(403, big_refusal);
    reply(w, 200, R"({"ok":true})");
  });
  Keypool kp({}, false);
  kp.write_service("svc", service_yaml("svc", up.base_url(), "bearer",
                                       "key_errors:\n  - {status: 403, body_contains: organization has been disabled, action: suspend}\n"));
  kp.start();
  add_tier(kp, "t", {{"svc", 10000}});
  int64_t disabled = add_key(kp, "D", "sk-chunk-disabled-01", "t", "svc");
  int64_t quota = add_key(kp, "Q", "sk-chunk-quota-0002", "t", "svc");
  int64_t good = add_key(kp, "G", "sk-chunk-good-00003", "t", "svc");
  int64_t good2 = add_key(kp, "H", "sk-chunk-good-00004", "t", "svc");
  (void)good2;
  std::string token = add_token(kp, {{"tier", "t"}})["token"];

  // D (403 + the rule's body) -> Q (429 insufficient_quota) -> G.
  auto r = kp.get("/v1/svc/x", bearer_of(token));
  CHECK(r.status == 200);
  CHECK(r.header("X-Keypool-Key-Id") == std::to_string(good));
  CHECK(state_of(kp, disabled) == "suspended");
  CHECK(key_row(kp, quota)["suspended_reason"] == "quota");
  // A 403 whose body the rule does not match goes to the client byte for byte, past 16 KiB.
  auto big = kp.get("/v1/svc/big", bearer_of(token));
  CHECK(big.status == 403);
  CHECK(big.body.size() == big_refusal.size());
  CHECK((big.body == big_refusal));  // (not printed: 40 KiB)
  CHECK(state_of(kp, good) == "active");
}

TEST_CASE("key health: compressed error bodies are judged on their decoded text") {
  // Provider edges compress JSON error bodies whatever was asked for (TRAFFIC.md).
  const std::string big_refusal = R"({"error":{"message":")" + std::string(40 * 1024, 'y') + R"(","code":"nope"}})";
  FakeUpstream up([&](const RecordedRequest& req, ResponseWriter& w) {
    auto gz = [&](int status, const std::string& body) {
      std::string z = compress("gzip", body);
      w.head(status, {{"Content-Type", "application/json"}, {"Content-Encoding", "gzip"},
                      {"Content-Length", std::to_string(z.size())}});
      w.body(z);
    };
    if (req.path == "/big") return gz(403, big_refusal);
    if (key_of(req) == "sk-gz-quota-000001") return gz(429, kOpenAiQuota);
    if (key_of(req) == "sk-gz-orgoff-00002") return gz(403, R"({"error":{"message":"Your organization has been disabled."}})");
    reply(w, 200, R"({"ok":true})");
  });
  Keypool kp({}, false);
  kp.write_service("svc", service_yaml("svc", up.base_url(), "bearer",
                                       "key_errors:\n  - {status: 403, body_contains: organization has been disabled, action: suspend}\n"));
  kp.start();
  add_tier(kp, "t", {{"svc", 10000}});
  int64_t quota = add_key(kp, "Q", "sk-gz-quota-000001", "t", "svc");
  int64_t orgoff = add_key(kp, "O", "sk-gz-orgoff-00002", "t", "svc");
  int64_t good = add_key(kp, "G", "sk-gz-good-0000003", "t", "svc");
  add_key(kp, "H", "sk-gz-good-0000004", "t", "svc");
  add_key(kp, "I", "sk-gz-good-0000005", "t", "svc");
  std::string token = add_token(kp, {{"tier", "t"}})["token"];

  auto r = kp.get("/v1/svc/x", bearer_of(token));
  CHECK(r.status == 200);
  CHECK(r.header("X-Keypool-Key-Id") == std::to_string(good));
  CHECK(key_row(kp, quota)["suspended_reason"] == "quota");
  CHECK(key_row(kp, orgoff)["suspended_reason"] == "invalid");
  // Not matched: passed on, decoded for a client that did not ask for gzip, whole.
  auto big = kp.get("/v1/svc/big", bearer_of(token));
  CHECK(big.status == 403);
  CHECK(big.body.size() == big_refusal.size());
  CHECK((big.body == big_refusal));
  CHECK(state_of(kp, good) == "active");
}
