// Foundation: the server, the encrypted store, tiers, keys and GET /key, driven through the
// real binary on loopback.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "fixture.h"

using namespace keypool::testing;
using nlohmann::json;

TEST_CASE("health answers without auth and admin endpoints need the token") {
  Keypool kp;
  auto r = kp.get("/health");
  CHECK(r.status == 200);
  CHECK(r.json()["status"] == "ok");
  CHECK(kp.get("/admin/tiers").status == 401);
  auto wrong = kp.get("/admin/tiers", {{"Authorization", "Bearer nope"}});
  CHECK(wrong.status == 401);
  CHECK(wrong.json()["error"]["code"] == "unauthorized");
  CHECK(kp.admin("GET", "/admin/tiers").status == 200);
}

namespace {

// The one error shape: {"error":{"code":"...","message":"..."}} as application/json.
void check_error(const Response& r, int status, const std::string& code, const std::string& mentions = "") {
  INFO("status " << r.status << " body: " << r.body);
  CHECK(r.status == status);
  CHECK(r.header("Content-Type").find("application/json") == 0);
  auto j = json::parse(r.body, nullptr, false);
  REQUIRE_FALSE(j.is_discarded());
  REQUIRE(j.is_object());
  REQUIRE(j.contains("error"));
  REQUIRE(j["error"].is_object());
  CHECK(j["error"]["code"] == code);
  REQUIRE(j["error"]["message"].is_string());
  CHECK_FALSE(j["error"]["message"].get<std::string>().empty());
  if (!mentions.empty()) CHECK(j["error"]["message"].get<std::string>().find(mentions) != std::string::npos);
}

Response raw_admin(Keypool& kp, const std::string& method, const std::string& path, const std::string& body) {
  return request(kp.port, method, path,
                 {{"Authorization", "Bearer " + kAdminToken}, {"Content-Type", "application/json"}}, body);
}

Response get_key(Keypool& kp, const std::string& feature, const std::string& credential = kAdminToken) {
  return kp.get("/key?feature=" + feature, {{"Authorization", "Bearer " + credential}});
}

json make_tier(Keypool& kp, const std::string& name, json features) {
  auto r = kp.admin("POST", "/admin/tiers", {{"name", name}, {"features", features}});
  INFO(r.body);
  REQUIRE(r.status == 201);
  return r.json();
}

int64_t make_key(Keypool& kp, const std::string& name, const std::string& value, const std::string& tier) {
  auto r = kp.admin("POST", "/admin/keys", {{"name", name}, {"key", value}, {"tier", tier}});
  INFO(r.body);
  REQUIRE(r.status == 201);
  CHECK(r.body.find(value) == std::string::npos);  // never echoed
  return r.json()["id"].get<int64_t>();
}

// allow_key_handout: these tests take keys out through GET /key with the token.
std::pair<int64_t, std::string> make_token(Keypool& kp, const std::string& name, const std::string& tier) {
  auto r = kp.admin("POST", "/admin/tokens", {{"name", name}, {"tier", tier}, {"allow_key_handout", true}});
  INFO(r.body);
  REQUIRE(r.status == 201);
  auto j = r.json();
  REQUIRE(j["token"].is_string());
  return {j["id"].get<int64_t>(), j["token"].get<std::string>()};
}

// Secrets must never reach the log (checked after the process stopped, so it is complete).
void check_log_clean(Keypool& kp, const std::vector<std::string>& secrets) {
  std::string log = kp.proc->log_contents();
  CHECK_FALSE(log.empty());
  for (const auto& s : secrets) {
    INFO("secret found in log: " << s);
    CHECK(log.find(s) == std::string::npos);
  }
  CHECK(log.find(kAdminToken) == std::string::npos);
  CHECK(log.find(kEncryptionKey) == std::string::npos);
}

std::set<std::string> names_of(const json& arr, const char* field = "name") {
  std::set<std::string> out;
  for (const auto& e : arr) out.insert(e[field].get<std::string>());
  return out;
}

}  // namespace

TEST_CASE("tiers: create, list, delete and their errors") {
  Keypool kp;
  auto t = make_tier(kp, "pro", {{"img", 100}, {"chat", 20}});
  CHECK(t["name"] == "pro");
  CHECK(t["features"]["img"] == 100);
  auto w = kp.admin("POST", "/admin/tiers", {{"name", "slow"}, {"features", {{"img", 1}}}, {"max_wait_ms", 500}});
  CHECK(w.status == 201);
  CHECK(w.json()["max_wait_ms"] == 500);

  auto list = kp.admin("GET", "/admin/tiers");
  REQUIRE(list.status == 200);
  CHECK(names_of(list.json()["tiers"]) == std::set<std::string>{"pro", "slow"});

  SUBCASE("duplicate name -> 409") {
    check_error(kp.admin("POST", "/admin/tiers", {{"name", "pro"}, {"features", {{"img", 1}}}}), 409, "conflict");
  }
  SUBCASE("malformed JSON and wrong types name the field") {
    check_error(raw_admin(kp, "POST", "/admin/tiers", "{\"name\": "), 400, "bad_request");
    check_error(raw_admin(kp, "POST", "/admin/tiers", "[1,2]"), 400, "bad_request");
    check_error(raw_admin(kp, "POST", "/admin/tiers", ""), 400, "bad_request");
    check_error(kp.admin("POST", "/admin/tiers", {{"name", 5}, {"features", {{"img", 1}}}}), 400, "bad_request",
                "'name'");
    check_error(kp.admin("POST", "/admin/tiers", {{"name", "x"}}), 400, "bad_request", "'features'");
    check_error(kp.admin("POST", "/admin/tiers", {{"name", "x"}, {"features", {{"img", "many"}}}}), 400,
                "bad_request", "features.img");
    check_error(kp.admin("POST", "/admin/tiers", {{"name", "x"}, {"features", {{"img", 0}}}}), 400, "bad_request",
                "features.img");
    check_error(kp.admin("POST", "/admin/tiers", {{"name", "x"}, {"features", {{"img", 1}}}, {"max_wait_ms", "1"}}),
                400, "bad_request", "'max_wait_ms'");
    check_error(kp.admin("POST", "/admin/tiers", {{"name", "x"}, {"features", {{"img", 1}}}, {"colour", 1}}), 400,
                "bad_request", "colour");
    check_error(kp.admin("POST", "/admin/tiers", {{"name", "bad name!"}, {"features", {{"img", 1}}}}), 400,
                "bad_request", "'name'");
  }
  SUBCASE("delete: 409 while a key uses it, 404 when unknown, 200 otherwise") {
    int64_t id = make_key(kp, "k", "sk-tier-delete-0001", "pro");
    check_error(kp.admin("DELETE", "/admin/tiers/pro"), 409, "conflict");
    check_error(kp.admin("DELETE", "/admin/tiers/nope"), 404, "not_found");
    CHECK(kp.admin("DELETE", "/admin/keys/" + std::to_string(id)).status == 200);
    auto d = kp.admin("DELETE", "/admin/tiers/pro");
    CHECK(d.status == 200);
    CHECK(d.json()["deleted"] == "pro");
    CHECK(names_of(kp.admin("GET", "/admin/tiers").json()["tiers"]) == std::set<std::string>{"slow"});
    // Its features are gone with it.
    check_error(get_key(kp, "chat"), 404, "not_found");
  }
}

TEST_CASE("keys: create, list, patch, rotate, delete and their errors") {
  Keypool kp;
  make_tier(kp, "pro", {{"img", 100}});
  // The key is tagged with service openai: GET /key?feature=img reaches it only when img is
  // that service's feature.
  REQUIRE(kp.admin("POST", "/admin/services", {{"name", "openai"}, {"base_url", "https://api.openai.com"},
                                               {"auth_scheme", "bearer"}, {"feature", "img"}})
              .status == 201);
  const std::string v1 = "sk-foundation-key-value-AAAA1111";
  auto r = kp.admin("POST", "/admin/keys", {{"name", "first"}, {"key", v1}, {"tier", "pro"}, {"service", "openai"},
                                           {"expires_at", "2099-01-01T00:00:00Z"}, {"max_concurrent", 3}});
  INFO(r.body);
  REQUIRE(r.status == 201);
  auto k = r.json();
  int64_t id = k["id"].get<int64_t>();
  CHECK(id > 0);
  CHECK(k["name"] == "first");
  CHECK(k["tier"] == "pro");
  CHECK(k["service"] == "openai");
  CHECK(k["max_concurrent"] == 3);
  CHECK(k["expires_at"] == "2099-01-01T00:00:00Z");
  REQUIRE(k["hint"].is_string());
  CHECK(k["hint"].get<std::string>() != v1);
  CHECK(r.body.find(v1) == std::string::npos);

  auto list = kp.admin("GET", "/admin/keys");
  REQUIRE(list.status == 200);
  CHECK(list.body.find(v1) == std::string::npos);
  REQUIRE(list.json()["keys"].size() == 1);
  CHECK(list.json()["keys"][0]["id"] == id);

  SUBCASE("duplicate value -> 409, unknown tier -> 404") {
    check_error(kp.admin("POST", "/admin/keys", {{"name", "again"}, {"key", v1}, {"tier", "pro"}}), 409, "conflict");
    check_error(kp.admin("POST", "/admin/keys", {{"name", "n"}, {"key", "sk-other-1"}, {"tier", "ghost"}}), 404,
                "not_found");
    CHECK(kp.admin("GET", "/admin/keys").json()["keys"].size() == 1);
  }
  SUBCASE("wrong types and malformed JSON name the field") {
    check_error(raw_admin(kp, "POST", "/admin/keys", "{not json"), 400, "bad_request");
    check_error(kp.admin("POST", "/admin/keys", {{"name", "n"}, {"tier", "pro"}}), 400, "bad_request", "'key'");
    check_error(kp.admin("POST", "/admin/keys", {{"name", "n"}, {"key", 42}, {"tier", "pro"}}), 400, "bad_request",
                "'key'");
    check_error(kp.admin("POST", "/admin/keys", {{"name", "n"}, {"key", "sk-x y"}, {"tier", "pro"}}), 400,
                "bad_request", "'key'");
    check_error(kp.admin("POST", "/admin/keys", {{"name", 7}, {"key", "sk-x"}, {"tier", "pro"}}), 400, "bad_request",
                "'name'");
    check_error(kp.admin("POST", "/admin/keys", {{"name", "n"}, {"key", "sk-x"}, {"tier", true}}), 400,
                "bad_request", "'tier'");
    check_error(kp.admin("POST", "/admin/keys", {{"name", "n"}, {"key", "sk-x"}, {"tier", "pro"}, {"max_concurrent", "3"}}),
                400, "bad_request", "'max_concurrent'");
    check_error(kp.admin("POST", "/admin/keys", {{"name", "n"}, {"key", "sk-x"}, {"tier", "pro"}, {"expires_at", "soon"}}),
                400, "bad_request", "'expires_at'");
    check_error(kp.admin("PATCH", "/admin/keys/" + std::to_string(id), {{"enabled", "no"}}), 400, "bad_request",
                "'enabled'");
    check_error(kp.admin("POST", "/admin/keys/" + std::to_string(id) + "/rotate", {{"key", 1}}), 400, "bad_request",
                "'key'");
  }
  SUBCASE("404 for unknown ids") {
    check_error(kp.admin("DELETE", "/admin/keys/99999"), 404, "not_found");
    check_error(kp.admin("DELETE", "/admin/keys/abc"), 404, "not_found");
    check_error(kp.admin("PATCH", "/admin/keys/99999", {{"name", "x"}}), 404, "not_found");
    check_error(kp.admin("POST", "/admin/keys/99999/rotate", {{"key", "sk-new-0"}}), 404, "not_found");
  }
  SUBCASE("patch disables and re-enables; GET /key follows") {
    auto g = get_key(kp, "img");
    REQUIRE(g.status == 200);
    CHECK(g.json()["value"] == v1);
    auto p = kp.admin("PATCH", "/admin/keys/" + std::to_string(id), {{"enabled", false}, {"reason", "testing"}});
    INFO(p.body);
    REQUIRE(p.status == 200);
    CHECK(p.json()["enabled"] == false);
    CHECK(p.json()["disabled_reason"] == "testing");
    auto none = get_key(kp, "img");
    CHECK(none.status != 200);
    CHECK(none.body.find(v1) == std::string::npos);
    auto rename = kp.admin("PATCH", "/admin/keys/" + std::to_string(id), {{"enabled", true}, {"name", "renamed"}});
    REQUIRE(rename.status == 200);
    CHECK(rename.json()["name"] == "renamed");
    auto again = get_key(kp, "img");
    REQUIRE(again.status == 200);
    CHECK(again.json()["name"] == "renamed");
  }
  SUBCASE("rotate serves the new value; delete removes the key") {
    const std::string v2 = "sk-foundation-rotated-BBBB2222";
    auto rot = kp.admin("POST", "/admin/keys/" + std::to_string(id) + "/rotate", {{"key", v2}});
    INFO(rot.body);
    REQUIRE(rot.status == 200);
    CHECK(rot.body.find(v2) == std::string::npos);
    CHECK(rot.json()["hint"] != k["hint"]);
    auto g = get_key(kp, "img");
    REQUIRE(g.status == 200);
    CHECK(g.json()["value"] == v2);
    CHECK(g.json()["key_id"] == id);
    auto d = kp.admin("DELETE", "/admin/keys/" + std::to_string(id));
    CHECK(d.status == 200);
    CHECK(kp.admin("GET", "/admin/keys").json()["keys"].empty());
    CHECK(get_key(kp, "img").status != 200);
    kp.stop();
    check_log_clean(kp, {v1, v2});
  }
}

TEST_CASE("tokens: create once, list without the secret, revoke") {
  Keypool kp;
  make_tier(kp, "pro", {{"img", 100}});
  make_key(kp, "k", "sk-token-test-key-0001", "pro");
  auto [tid, tok] = make_token(kp, "team-a", "pro");
  CHECK(tok.rfind("kp_", 0) == 0);
  auto list = kp.admin("GET", "/admin/tokens");
  REQUIRE(list.status == 200);
  CHECK(list.body.find(tok) == std::string::npos);
  REQUIRE(list.json()["tokens"].size() == 1);
  CHECK(list.json()["tokens"][0]["id"] == tid);
  CHECK(list.json()["tokens"][0]["revoked"] == false);

  check_error(kp.admin("POST", "/admin/tokens", {{"name", "t"}, {"tier", 5}}), 400, "bad_request", "'tier'");
  check_error(kp.admin("POST", "/admin/tokens", {{"tier", "pro"}}), 400, "bad_request", "'name'");
  check_error(kp.admin("POST", "/admin/tokens", {{"name", "t"}, {"tier", "pro"}, {"rpm", "fast"}}), 400,
              "bad_request", "'rpm'");
  check_error(raw_admin(kp, "POST", "/admin/tokens", "{\"name\":\"t\",}"), 400, "bad_request");
  check_error(kp.admin("POST", "/admin/tokens", {{"name", "t"}, {"tier", "ghost"}}), 404, "not_found");
  check_error(kp.admin("DELETE", "/admin/tokens/424242"), 404, "not_found");

  // A team token is not an admin token.
  check_error(kp.get("/admin/tiers", {{"Authorization", "Bearer " + tok}}), 401, "unauthorized");

  CHECK(get_key(kp, "img", tok).status == 200);
  CHECK(kp.get("/key?feature=img", {{"x-api-key", tok}}).status == 200);
  auto rev = kp.admin("DELETE", "/admin/tokens/" + std::to_string(tid));
  CHECK(rev.status == 200);
  check_error(get_key(kp, "img", tok), 401, "unauthorized");
  CHECK(kp.admin("GET", "/admin/tokens").json()["tokens"][0]["revoked"] == true);
  kp.stop();
  check_log_clean(kp, {tok, "sk-token-test-key-0001"});
}

TEST_CASE("auth, 404 and 405 across the admin API") {
  Keypool kp;
  for (const char* path : {"/admin/tiers", "/admin/keys", "/admin/tokens", "/admin/health", "/admin/audit"}) {
    CAPTURE(path);
    check_error(kp.get(path), 401, "unauthorized");
    check_error(kp.get(path, {{"Authorization", "Bearer wrong-token-wrong-token"}}), 401, "unauthorized");
    check_error(kp.get(path, {{"Authorization", "Basic " + kAdminToken}}), 401, "unauthorized");
    check_error(kp.get(path, {{"x-api-key", kAdminToken}}), 401, "unauthorized");
  }
  // Wrong token on a write changes nothing.
  auto w = request(kp.port, "POST", "/admin/tiers", {{"Authorization", "Bearer " + kAdminToken + "x"}},
                   json{{"name", "t"}, {"features", {{"img", 1}}}}.dump());
  check_error(w, 401, "unauthorized");
  CHECK(kp.admin("GET", "/admin/tiers").json()["tiers"].empty());

  check_error(kp.admin("GET", "/admin/nothing-here"), 404, "not_found");
  check_error(kp.get("/nothing-here"), 404, "not_found");

  auto m = kp.admin("PUT", "/admin/tiers", json::object());
  check_error(m, 405, "method_not_allowed");
  CHECK(m.header("Allow").find("GET") != std::string::npos);
  CHECK(m.header("Allow").find("POST") != std::string::npos);
  auto m2 = kp.admin("GET", "/admin/keys/1");
  check_error(m2, 405, "method_not_allowed");
  CHECK(m2.header("Allow").find("DELETE") != std::string::npos);
  CHECK(m2.header("Allow").find("PATCH") != std::string::npos);
  auto m3 = kp.admin("GET", "/admin/keys/1/rotate");
  check_error(m3, 405, "method_not_allowed");
  CHECK(m3.header("Allow") == "POST");
  auto m4 = request(kp.port, "POST", "/health", {}, "{}");
  check_error(m4, 405, "method_not_allowed");
  CHECK(m4.header("Allow") == "GET");
  auto m5 = request(kp.port, "DELETE", "/key?feature=x", {{"Authorization", "Bearer " + kAdminToken}});
  check_error(m5, 405, "method_not_allowed");
  CHECK(m5.header("Allow") == "GET");

  auto h = kp.admin("GET", "/admin/health");
  REQUIRE(h.status == 200);
  CHECK(h.json().is_object());
}

TEST_CASE("GET /key hand-outs are audited as counts, one row per caller, key and minute") {
  Keypool kp;
  make_tier(kp, "pro", {{"img", 100}});
  int64_t id = make_key(kp, "k", "sk-count-value-DDDD4444", "pro");
  auto [tid, tok] = make_token(kp, "t", "pro");
  for (int i = 0; i < 5; ++i) REQUIRE(get_key(kp, "img").status == 200);
  for (int i = 0; i < 3; ++i) REQUIRE(get_key(kp, "img", tok).status == 200);
  auto a = kp.admin("GET", "/admin/audit?action=key.handout");
  INFO(a.body);
  REQUIRE(a.status == 200);
  std::map<std::string, int64_t> by_actor;
  const json audit = a.json();
  for (const auto& row : audit["audit"]) {
    CHECK(row["target"] == std::to_string(id));
    const json& details = row["details"];
    REQUIRE(details.is_object());
    CHECK(details["features"]["img"] == details["count"]);
    CHECK(details["tier"] == "pro");
    // The row's time is the minute's start; the last hand-out falls within that minute.
    CHECK(row["at_ms"].get<int64_t>() % 60000 == 0);
    CHECK(details["last_at"].get<int64_t>() >= row["at_ms"].get<int64_t>());
    CHECK(details["last_at"].get<int64_t>() < row["at_ms"].get<int64_t>() + 60000);
    by_actor[row["actor"].get<std::string>()] += details["count"].get<int64_t>();
  }
  CHECK(by_actor["admin"] == 5);
  CHECK(by_actor["token:" + std::to_string(tid)] == 3);
  CHECK(by_actor.size() == 2);
  // Later flushes within the same minute add to the same row rather than writing new ones.
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  for (int i = 0; i < 4; ++i) REQUIRE(get_key(kp, "img").status == 200);
  auto again = kp.admin("GET", "/admin/audit?action=key.handout").json()["audit"];
  std::map<std::pair<std::string, int64_t>, int> rows_per_minute;
  int64_t admin_total = 0;
  for (const auto& row : again) {
    ++rows_per_minute[{row["actor"].get<std::string>(), row["at_ms"].get<int64_t>()}];
    if (row["actor"] == "admin") admin_total += row["details"]["count"].get<int64_t>();
  }
  CHECK(admin_total == 9);
  for (const auto& [k, n] : rows_per_minute) CHECK(n == 1);
  // At most two minutes were touched (a minute boundary may fall inside the test).
  CHECK(again.size() <= 4);
}

TEST_CASE("GET /key returns values with quotes and backslashes, and non-ASCII names, exactly") {
  Keypool kp;
  make_tier(kp, "pro", {{"q", 100}});
  make_tier(kp, "other", {{"u", 100}});
  const std::string quoted = "sk-\"quoted\"\\back/slash";
  make_key(kp, "plain name", quoted, "pro");
  auto r = get_key(kp, "q");
  INFO(r.body);
  REQUIRE(r.status == 200);
  CHECK(r.json()["value"] == quoted);
  CHECK(r.json()["name"] == "plain name");
  CHECK(r.json()["tier"] == "pro");
  // Key values are visible ASCII (checked at POST /admin/keys); names may be any UTF-8.
  make_key(kp, "n\xC3\xA4me \xD0\xBA\xD0\xBB\xD1\x8E\xD1\x87", "sk-utf8-name", "other");
  auto u = get_key(kp, "u");
  INFO(u.body);
  REQUIRE(u.status == 200);
  CHECK(u.json()["value"] == "sk-utf8-name");
  CHECK(u.json()["name"] == "n\xC3\xA4me \xD0\xBA\xD0\xBB\xD1\x8E\xD1\x87");
}

TEST_CASE("audit lists admin actions without secrets") {
  Keypool kp;
  make_tier(kp, "pro", {{"img", 10}});
  const std::string v = "sk-audit-value-CCCC3333";
  int64_t id = make_key(kp, "k", v, "pro");
  auto [tid, tok] = make_token(kp, "t", "pro");
  REQUIRE(get_key(kp, "img").status == 200);
  auto a = kp.admin("GET", "/admin/audit");
  INFO(a.body);
  REQUIRE(a.status == 200);
  std::set<std::string> actions;
  const json audit = a.json();
  for (const auto& row : audit["audit"]) actions.insert(row["action"].get<std::string>());
  CHECK(actions.count("tier.create") == 1);
  CHECK(actions.count("key.create") == 1);
  CHECK(actions.count("token.create") == 1);
  CHECK(actions.count("key.handout") == 1);
  CHECK(a.body.find(v) == std::string::npos);
  CHECK(a.body.find(tok) == std::string::npos);
  auto only = kp.admin("GET", "/admin/audit?action=key.create");
  REQUIRE(only.status == 200);
  REQUIRE(only.json()["audit"].size() == 1);
  CHECK(only.json()["audit"][0]["target"] == std::to_string(id));
  check_error(kp.admin("GET", "/admin/audit?limit=0"), 400, "bad_request", "limit");
  (void)tid;
}

TEST_CASE("GET /key: errors, round-robin order, 429 with Retry-After") {
  Keypool kp;
  check_error(kp.get("/key?feature=img"), 401, "unauthorized");
  check_error(get_key(kp, "img", "kp_not_a_real_token_at_all"), 401, "unauthorized");
  check_error(kp.get("/key", {{"Authorization", "Bearer " + kAdminToken}}), 400, "bad_request", "feature");
  check_error(get_key(kp, ""), 400, "bad_request", "feature");
  check_error(get_key(kp, "nosuchfeature"), 404, "not_found");

  make_tier(kp, "rr", {{"img", 100}});
  std::map<int64_t, std::string> values;
  for (int i = 0; i < 3; ++i) {
    std::string v = "sk-rr-value-" + std::to_string(i) + "-DDDD";
    values[make_key(kp, "rr" + std::to_string(i), v, "rr")] = v;
  }
  std::vector<int64_t> order;
  for (int i = 0; i < 9; ++i) {
    auto g = get_key(kp, "img");
    INFO(g.body);
    REQUIRE(g.status == 200);
    auto j = g.json();
    CHECK(j["tier"] == "rr");
    int64_t id = j["key_id"].get<int64_t>();
    REQUIRE(values.count(id) == 1);
    CHECK(j["value"] == values[id]);
    order.push_back(id);
  }
  // Each key once per round, in the same order every round.
  CHECK(std::set<int64_t>(order.begin(), order.begin() + 3).size() == 3);
  for (size_t i = 3; i < order.size(); ++i) CHECK(order[i] == order[i - 3]);

  make_tier(kp, "tight", {{"tts", 2}});
  make_key(kp, "only", "sk-tight-value-EEEE", "tight");
  CHECK(get_key(kp, "tts").status == 200);
  CHECK(get_key(kp, "tts").status == 200);
  auto spent = get_key(kp, "tts");
  check_error(spent, 429, "rate_limited");
  CHECK(spent.body.find("sk-tight-value-EEEE") == std::string::npos);
  auto ra = spent.header("Retry-After");
  REQUIRE_FALSE(ra.empty());
  int secs = std::stoi(ra);
  CHECK(secs >= 1);
  CHECK(secs <= 60);
  CHECK(secs >= 55);  // both grants were just now: the window frees up about a minute later
  auto body = spent.json();
  REQUIRE(body["error"].contains("retry_after"));
  CHECK(body["error"]["retry_after"] == secs);
  kp.stop();
  std::vector<std::string> secrets{"sk-tight-value-EEEE"};
  for (auto& [id, v] : values) secrets.push_back(v);
  check_log_clean(kp, secrets);
}

TEST_CASE("GET /key with a team token stays in the token's tier") {
  Keypool kp;
  make_tier(kp, "gold", {{"img", 100}});
  make_tier(kp, "free", {{"img", 100}, {"txt", 100}});
  int64_t g1 = make_key(kp, "g1", "sk-gold-1-FFFF", "gold");
  int64_t g2 = make_key(kp, "g2", "sk-gold-2-FFFF", "gold");
  make_key(kp, "f1", "sk-free-1-FFFF", "free");
  make_key(kp, "f2", "sk-free-2-FFFF", "free");
  auto [tid, tok] = make_token(kp, "gold-team", "gold");
  for (int i = 0; i < 8; ++i) {
    auto r = get_key(kp, "img", tok);
    INFO(r.body);
    REQUIRE(r.status == 200);
    auto j = r.json();
    CHECK(j["tier"] == "gold");
    int64_t id = j["key_id"].get<int64_t>();
    CHECK((id == g1 || id == g2));
    CHECK(j["value"].get<std::string>().rfind("sk-gold-", 0) == 0);
  }
  // A feature only another tier covers is not handed out to this token.
  auto other = get_key(kp, "txt", tok);
  CHECK(other.status == 404);
  CHECK(other.body.find("sk-free") == std::string::npos);
  // The admin token reaches every tier.
  auto adm = get_key(kp, "txt");
  REQUIRE(adm.status == 200);
  CHECK(adm.json()["tier"] == "free");
  (void)tid;
  kp.stop();
  check_log_clean(kp, {tok, "sk-gold-1-FFFF", "sk-gold-2-FFFF", "sk-free-1-FFFF", "sk-free-2-FFFF"});
}

TEST_CASE("200 concurrent GET /key never over-serve the budget") {
  Keypool kp(std::map<std::string, std::string>{{"WORKERS", "4"}});
  make_tier(kp, "burst", {{"img", 5}});
  std::map<int64_t, std::string> values;
  for (int i = 0; i < 3; ++i) {
    std::string v = "sk-burst-" + std::to_string(i) + "-GGGG";
    values[make_key(kp, "b" + std::to_string(i), v, "burst")] = v;
  }
  std::atomic<int> ok{0}, limited{0}, other{0}, bad_value{0};
  std::mutex mu;
  std::map<int64_t, int> per_key;
  std::vector<std::thread> threads;
  for (int t = 0; t < 20; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        try {
          auto r = get_key(kp, "img");
          if (r.status == 200) {
            ++ok;
            auto j = r.json();
            int64_t id = j["key_id"].get<int64_t>();
            std::lock_guard<std::mutex> lock(mu);
            ++per_key[id];
            if (!values.count(id) || j["value"] != values[id]) ++bad_value;
          } else if (r.status == 429 && !r.header("Retry-After").empty()) {
            ++limited;
          } else {
            ++other;
          }
        } catch (...) {
          ++other;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(ok.load() == 15);
  CHECK(limited.load() == 185);
  CHECK(other.load() == 0);
  CHECK(bad_value.load() == 0);
  for (auto& kv : values) {
    const auto& id = kv.first;  // a named copy: clang < 16 cannot capture structured bindings
    CAPTURE(id);
    CHECK(per_key[id] == 5);
  }
  CHECK(kp.get("/health").status == 200);
}

namespace {

struct Seeded {
  std::map<int64_t, std::string> keys;  // id -> value, all in tier "keep"
  int64_t disabled_id = 0;
  int64_t deleted_id = 0;
  std::string token;
  std::string revoked_token;
};

Seeded seed(Keypool& kp) {
  Seeded s;
  make_tier(kp, "keep", {{"img", 1000}});
  make_tier(kp, "spare", {{"aud", 7}});
  for (int i = 0; i < 4; ++i) {
    std::string v = "sk-persist-" + std::to_string(i) + "-HHHH-" + std::string(40, static_cast<char>('a' + i));
    s.keys[make_key(kp, "p" + std::to_string(i), v, "keep")] = v;
  }
  s.disabled_id = make_key(kp, "off", "sk-persist-disabled-IIII", "keep");
  REQUIRE(kp.admin("PATCH", "/admin/keys/" + std::to_string(s.disabled_id), {{"enabled", false}}).status == 200);
  s.deleted_id = make_key(kp, "gone", "sk-persist-deleted-JJJJ", "keep");
  REQUIRE(kp.admin("DELETE", "/admin/keys/" + std::to_string(s.deleted_id)).status == 200);
  // Rotated: the new value must be the one that survives.
  int64_t rot = s.keys.begin()->first;
  std::string rotated = "sk-persist-rotated-KKKK";
  REQUIRE(kp.admin("POST", "/admin/keys/" + std::to_string(rot) + "/rotate", {{"key", rotated}}).status == 200);
  s.keys[rot] = rotated;
  s.token = make_token(kp, "live", "keep").second;
  auto [rid, rtok] = make_token(kp, "dead", "keep");
  s.revoked_token = rtok;
  REQUIRE(kp.admin("DELETE", "/admin/tokens/" + std::to_string(rid)).status == 200);
  return s;
}

void verify(Keypool& kp, const Seeded& s) {
  auto tiers = kp.admin("GET", "/admin/tiers");
  REQUIRE(tiers.status == 200);
  CHECK(names_of(tiers.json()["tiers"]) == std::set<std::string>{"keep", "spare"});
  const json tiers_j = tiers.json();
  for (const auto& t : tiers_j["tiers"])
    if (t["name"] == "spare") CHECK(t["features"]["aud"] == 7);

  auto keys = kp.admin("GET", "/admin/keys");
  INFO(keys.body);
  REQUIRE(keys.status == 200);
  std::set<int64_t> ids;
  const json keys_j = keys.json();
  for (const auto& k : keys_j["keys"]) {
    int64_t id = k["id"].get<int64_t>();
    ids.insert(id);
    CHECK(k["enabled"] == (id != s.disabled_id));
  }
  std::set<int64_t> want;
  for (auto& [id, v] : s.keys) want.insert(id);
  want.insert(s.disabled_id);
  INFO("disabled " << s.disabled_id << " deleted " << s.deleted_id);
  CHECK(ids == want);

  // Every enabled key comes back decrypted to exactly its value; the disabled one never.
  std::map<int64_t, int> seen;
  for (size_t i = 0; i < s.keys.size() * 2; ++i) {
    auto g = get_key(kp, "img", i % 2 ? s.token : kAdminToken);
    INFO(g.body);
    REQUIRE(g.status == 200);
    int64_t id = g.json()["key_id"].get<int64_t>();
    REQUIRE(s.keys.count(id) == 1);
    CHECK(g.json()["value"] == s.keys.at(id));
    ++seen[id];
  }
  CHECK(seen.size() == s.keys.size());
  check_error(get_key(kp, "img", s.revoked_token), 401, "unauthorized");
  auto toks = kp.admin("GET", "/admin/tokens");
  REQUIRE(toks.status == 200);
  CHECK(toks.json()["tokens"].size() == 2);
  // The duplicate check survives as well.
  check_error(kp.admin("POST", "/admin/keys", {{"name", "dup"}, {"key", s.keys.begin()->second}, {"tier", "keep"}}),
              409, "conflict");
}

}  // namespace

TEST_CASE("persistence across a clean restart") {
  Keypool kp;
  Seeded s = seed(kp);
  verify(kp, s);
  CHECK(kp.stop() == 0);
  kp.start();
  verify(kp, s);
  CHECK(kp.stop() == 0);
  std::vector<std::string> secrets{s.token, s.revoked_token, "sk-persist-disabled-IIII", "sk-persist-deleted-JJJJ"};
  for (auto& [id, v] : s.keys) secrets.push_back(v);
  check_log_clean(kp, secrets);
}

TEST_CASE("persistence across kill -9") {
  Keypool kp;
  Seeded s = seed(kp);
  kp.kill9();  // right after the last acknowledged write
  kp.start();
  verify(kp, s);
  // And once more, killed while idle after reads.
  kp.kill9();
  kp.start();
  verify(kp, s);
}

TEST_CASE("a wrong ENCRYPTION_KEY at restart stops start-up and serves nothing") {
  Keypool kp;
  make_tier(kp, "pro", {{"img", 10}});
  const std::string v = "sk-wrong-master-LLLL";
  make_key(kp, "k", v, "pro");
  REQUIRE(kp.stop() == 0);
  auto env = kp.env;
  env["ENCRYPTION_KEY"] = "0000000000000000000000000000000000000000000000000000000000000001";
  auto r = run_command({keypool_bin(), "--config", source_dir() + "/config/keypool.yaml"}, env, "", 15000);
  INFO(r.output);
  CHECK_FALSE(r.timed_out);
  CHECK(r.exit_code != 0);
  CHECK(r.exit_code < 128);  // exited, not crashed
  CHECK(r.output.find("ENCRYPTION_KEY") != std::string::npos);
  CHECK(r.output.find("\"listening\"") == std::string::npos);
  CHECK(r.output.find(v) == std::string::npos);
  CHECK(r.output.find(env["ENCRYPTION_KEY"]) == std::string::npos);
  // The right key still works: the failed start damaged nothing.
  kp.start();
  auto g = get_key(kp, "img");
  REQUIRE(g.status == 200);
  CHECK(g.json()["value"] == v);
}

TEST_CASE("invalid configuration exits 2 with one line naming the field") {
  Keypool kp({}, false);
  auto run = [&](std::map<std::string, std::string> env) {
    return run_command({keypool_bin(), "--config", source_dir() + "/config/keypool.yaml"}, env, "", 15000);
  };
  auto lines = [](const std::string& s) {
    int n = 0;
    for (char c : s) n += c == '\n';
    if (!s.empty() && s.back() != '\n') ++n;
    return n;
  };
  SUBCASE("SERVER_PORT=70000") {
    auto env = kp.env;
    env["SERVER_PORT"] = "70000";
    auto r = run(env);
    INFO(r.output);
    CHECK(r.exit_code == 2);
    CHECK(lines(r.output) == 1);
    CHECK(r.output.find("SERVER_PORT") != std::string::npos);
  }
  SUBCASE("missing ADMIN_TOKEN") {
    auto env = kp.env;
    env.erase("ADMIN_TOKEN");
    auto r = run(env);
    INFO(r.output);
    CHECK(r.exit_code == 2);
    CHECK(lines(r.output) == 1);
    CHECK(r.output.find("ADMIN_TOKEN") != std::string::npos);
  }
  SUBCASE("ENCRYPTION_KEY not hex") {
    auto env = kp.env;
    env["ENCRYPTION_KEY"] = std::string(64, 'z');
    auto r = run(env);
    INFO(r.output);
    CHECK(r.exit_code == 2);
    CHECK(lines(r.output) == 1);
    CHECK(r.output.find("ENCRYPTION_KEY") != std::string::npos);
    CHECK(r.output.find(std::string(64, 'z')) == std::string::npos);
  }
  SUBCASE("config file value out of range") {
    std::string path = kp.write_config({{"request_head_ms", "-5"}});
    auto r = run_command({keypool_bin(), "--config", path}, kp.env, "", 15000);
    INFO(r.output);
    CHECK(r.exit_code == 2);
    CHECK(lines(r.output) == 1);
    CHECK(r.output.find("request_head_ms") != std::string::npos);
  }
}

TEST_CASE("server limits: 431, 413, keep-alive, pipelining, slow head 408") {
  Keypool kp({}, false);
  kp.write_config({{"request_head_ms", "500"}});
  kp.start();

  SUBCASE("oversized header section -> 431") {
    auto r = request(kp.port, "GET", "/health", {{"X-Big", std::string(70 * 1024, 'x')}});
    CHECK(r.status == 431);
    CHECK(kp.get("/health").status == 200);
  }
  SUBCASE("oversized admin body -> 413 (declared length)") {
    auto c = Connection::connect("127.0.0.1", kp.port);
    c.send_raw("POST /admin/tiers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + kAdminToken +
               "\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n\r\n{\"name\":");
    auto r = c.read_response();
    check_error(r, 413, "payload_too_large");
  }
  SUBCASE("oversized admin body -> 413 (sent whole)") {
    std::string body = "{\"name\":\"big\",\"features\":{\"img\":1},\"pad\":\"" + std::string(1100 * 1024, 'p') + "\"}";
    auto r = raw_admin(kp, "POST", "/admin/tiers", body);
    check_error(r, 413, "payload_too_large");
    CHECK(kp.admin("GET", "/admin/tiers").json()["tiers"].empty());
  }
  SUBCASE("keep-alive: two requests on one connection") {
    auto c = Connection::connect("127.0.0.1", kp.port);
    c.send("GET", "/health");
    auto a = c.read_response();
    CHECK(a.status == 200);
    c.send("GET", "/admin/tiers", {{"Authorization", "Bearer " + kAdminToken}});
    auto b = c.read_response();
    CHECK(b.status == 200);
    CHECK(b.json().contains("tiers"));
  }
  SUBCASE("pipelining: two requests in one write, answered in order") {
    auto c = Connection::connect("127.0.0.1", kp.port);
    // The first goes through the store thread and is slower than the second.
    std::string body = json{{"name", "piped"}, {"features", {{"img", 3}}}}.dump();
    c.send_raw("POST /admin/tiers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + kAdminToken +
               "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" +
               body + "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    auto a = c.read_response();
    auto b = c.read_response();
    INFO(a.body << " / " << b.body);
    CHECK(a.status == 201);
    CHECK(a.json()["name"] == "piped");
    CHECK(b.status == 200);
    CHECK(b.json()["status"] == "ok");
  }
  // request_head_ms is 500 here (idle_keepalive_ms stays 60 s): a head that is not complete
  // within about half a second gets 408 and the connection closes. Reads are bounded at 3 s.
  auto expect_408 = [](Connection& c, std::chrono::steady_clock::time_point t0) {
    std::string got = c.read_raw(4096, 3000);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    INFO("after " << ms << " ms got: " << got);
    CHECK(got.rfind("HTTP/1.1 408", 0) == 0);
    CHECK(got.find("\"error\"") != std::string::npos);
    CHECK(ms >= 400);
    CHECK(ms < 2000);
    if (got.rfind("HTTP/1.1 408", 0) == 0) CHECK(c.closed_by_peer(2000));
  };
  SUBCASE("slow head (half a request line) -> 408 and close") {
    auto c = Connection::connect("127.0.0.1", kp.port, 5000);
    auto t0 = std::chrono::steady_clock::now();
    c.send_raw("GET /hea");
    expect_408(c, t0);
  }
  SUBCASE("slow head on a kept-alive connection's second request -> 408") {
    auto c = Connection::connect("127.0.0.1", kp.port, 5000);
    c.send("GET", "/health");
    REQUIRE(c.read_response().status == 200);
    auto t0 = std::chrono::steady_clock::now();
    c.send_raw("GET /health HTTP/1.1\r\nHost: x\r\n");  // no blank line
    expect_408(c, t0);
  }
  SUBCASE("a head trickled a byte at a time still has to finish within request_head_ms") {
    auto c = Connection::connect("127.0.0.1", kp.port, 5000);
    auto t0 = std::chrono::steady_clock::now();
    std::string line = "GET /health HTTP/1.1\r\nX-Slow: aaaaa";  // a byte every ~150 ms
    std::string got;
    for (size_t i = 0; i < line.size() && i < 20 && got.empty(); ++i) {  // at most ~3 s
      try {
        c.send_raw(line.substr(i, 1));
      } catch (...) {
        break;  // closed on us: read what it said
      }
      got = c.read_raw(4096, 150);
    }
    if (got.empty()) got = c.read_raw(4096, 500);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    INFO("after " << ms << " ms got: " << got);
    CHECK(got.rfind("HTTP/1.1 408", 0) == 0);
    CHECK(ms < 2000);
  }
  CHECK(kp.stop() == 0);
}
