// Scoped team tokens and GET /key: which keys a caller may take out, proxy-only tokens,
// token PATCH and rotation with a grace period, tier PATCH, ?api_key= only where a service
// opts in, and the audit table's retention.
#include <doctest/doctest.h>

#include <chrono>
#include <set>
#include <string>
#include <thread>

#include "auth/auth.h"
#include "crypto/crypto.h"
#include "proxy_helpers.h"
#include "store/store.h"

using namespace keypool;
using namespace keypool::testing;
using nlohmann::json;

namespace {

Response get_key(Keypool& kp, const std::string& query, const std::string& credential = kAdminToken) {
  return kp.get("/key?" + query, {{"Authorization", "Bearer " + credential}});
}

std::string error_message(const Response& r) {
  auto j = json::parse(r.body, nullptr, false);
  if (!j.is_object() || !j.contains("error")) return "";
  return j["error"].value("message", "");
}

bool mentions(const Response& r, const std::string& text) { return error_message(r).find(text) != std::string::npos; }

// Polls fn until it returns true or timeout_ms passes.
template <class F>
bool eventually(F fn, int timeout_ms = 10000) {
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < until) {
    if (fn()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return fn();
}

// Three services: openai and sse with their own features, and two that share feature "search".
Keypool& with_services(Keypool& kp, const std::string& base_url) {
  kp.write_service("openai", service_yaml("openai", base_url));
  kp.write_service("sse", service_yaml("sse", base_url));
  kp.write_service("exa", service_yaml("exa", base_url, "x-api-key", "feature: search\n"));
  kp.write_service("tavily", service_yaml("tavily", base_url, "bearer", "feature: search\n"));
  kp.start();
  return kp;
}

}  // namespace

TEST_CASE("GET /key: a tagged key serves only its service, an untagged one any feature of its tier") {
  FakeUpstream up(json_ok());
  Keypool kp({}, false);
  with_services(kp, up.base_url());
  add_tier(kp, "t", {{"openai", 100}, {"sse", 100}, {"search", 100}, {"misc", 100}});
  int64_t openai_key = add_key(kp, "o", "sk-openai-key-000001", "t", "openai");
  int64_t sse_key = add_key(kp, "s", "sk-sse-key-00000001", "t", "sse");

  // The measured bug: ?feature=sse answered with the openai key.
  for (int i = 0; i < 6; ++i) {
    auto r = get_key(kp, "feature=sse");
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK(r.json()["key_id"] == sse_key);
    auto o = get_key(kp, "feature=openai");
    REQUIRE_MESSAGE(o.status == 200, o.body);
    CHECK(o.json()["key_id"] == openai_key);
  }
  auto by_service = get_key(kp, "service=sse");
  REQUIRE(by_service.status == 200);
  CHECK(by_service.json()["key_id"] == sse_key);
  CHECK(get_key(kp, "service=sse&feature=sse").status == 200);
  auto mismatch = get_key(kp, "service=sse&feature=openai");
  CHECK(mismatch.status == 400);
  CHECK(mentions(mismatch, "feature 'sse'"));
  CHECK(get_key(kp, "service=nope").status == 404);
  CHECK(get_key(kp, "").status == 400);

  // A feature that no service has: only keys tagged with no service serve it.
  auto none = get_key(kp, "feature=misc");
  CHECK(none.status == 503);
  CHECK(none.body.find("sk-") == std::string::npos);
  int64_t untagged = add_key(kp, "u", "sk-untagged-key-0001", "t", "");
  auto misc = get_key(kp, "feature=misc");
  REQUIRE(misc.status == 200);
  CHECK(misc.json()["key_id"] == untagged);
  // ...and, in keypooler's model, any other feature of its tier too.
  std::set<int64_t> seen;
  for (int i = 0; i < 6; ++i) seen.insert(get_key(kp, "feature=sse").json()["key_id"].get<int64_t>());
  CHECK(seen == std::set<int64_t>{sse_key, untagged});

  // Two services budgeted as the same feature: the feature alone does not say which.
  add_key(kp, "e", "sk-exa-key-000000001", "t", "exa");
  auto ambiguous = get_key(kp, "feature=search");
  CHECK(ambiguous.status == 400);
  CHECK(mentions(ambiguous, "ambiguous"));
  CHECK(mentions(ambiguous, "exa"));
  CHECK(mentions(ambiguous, "tavily"));
  CHECK(mentions(ambiguous, "?service="));
  std::set<std::string> exa;  // the exa key, and the untagged one
  for (int i = 0; i < 4; ++i) {
    auto r = get_key(kp, "service=exa");
    REQUIRE(r.status == 200);
    exa.insert(r.json()["value"].get<std::string>());
  }
  CHECK(exa == std::set<std::string>{"sk-exa-key-000000001", "sk-untagged-key-0001"});
}

TEST_CASE("GET /key: a team token gets keys only of the services it may use") {
  FakeUpstream up(json_ok());
  Keypool kp({}, false);
  with_services(kp, up.base_url());
  add_tier(kp, "t", {{"openai", 100}, {"sse", 100}, {"search", 100}, {"misc", 100}});
  add_key(kp, "o", "sk-openai-key-000002", "t", "openai");
  add_key(kp, "s", "sk-sse-key-00000002", "t", "sse");
  add_key(kp, "x", "sk-exa-key-000000002", "t", "exa");
  add_key(kp, "u", "sk-untagged-key-0002", "t", "");
  std::string tok = add_token(kp, {{"tier", "t"}, {"services", {"openai", "exa"}}, {"allow_key_handout", true}})["token"];

  auto o = get_key(kp, "feature=openai", tok);
  REQUIRE_MESSAGE(o.status == 200, o.body);
  // The leak: another feature of the same tier.
  auto sse = get_key(kp, "feature=sse", tok);
  CHECK(sse.status == 403);
  CHECK(sse.body.find("sk-") == std::string::npos);
  CHECK(get_key(kp, "service=sse", tok).status == 403);
  CHECK(get_key(kp, "feature=misc", tok).status == 403);  // belongs to no service it may use
  // "search" is ambiguous in general, but this token may use only one of its services.
  auto search = get_key(kp, "feature=search", tok);
  REQUIRE_MESSAGE(search.status == 200, search.body);
  CHECK(search.json()["value"] == "sk-exa-key-000000002");

  // A token for every service still gets only the scoped keys.
  std::string all = add_token(kp, {{"name", "all"}, {"tier", "t"}, {"allow_key_handout", true}})["token"];
  CHECK(get_key(kp, "feature=sse", all).status == 200);
  CHECK(get_key(kp, "feature=search", all).status == 400);
}

TEST_CASE("allow_key_handout: tokens are proxy-only by default") {
  FakeUpstream up(json_ok());
  Keypool kp({}, false);
  kp.write_service("openai", service_yaml("openai", up.base_url()));
  kp.start();
  add_tier(kp, "t", {{"openai", 100}});
  add_key(kp, "o", "sk-handout-key-00001", "t", "openai");
  auto created = add_token(kp, {{"tier", "t"}});
  std::string tok = created["token"];
  CHECK(created["allow_key_handout"] == false);

  auto refused = get_key(kp, "feature=openai", tok);
  CHECK(refused.status == 403);
  CHECK(mentions(refused, "allow_key_handout"));
  CHECK(refused.body.find("sk-handout") == std::string::npos);
  // Proxying is what such a token is for.
  CHECK(kp.get("/v1/openai/x", {{"Authorization", "Bearer " + tok}}).status == 200);

  auto id = std::to_string(created["id"].get<int64_t>());
  auto p = kp.admin("PATCH", "/admin/tokens/" + id, {{"allow_key_handout", true}});
  REQUIRE(p.status == 200);
  CHECK(p.json()["allow_key_handout"] == true);
  CHECK(get_key(kp, "feature=openai", tok).status == 200);

  // A credential in the URL is never taken for GET /key.
  auto in_url = kp.get("/key?feature=openai&api_key=" + tok);
  CHECK(in_url.status == 401);
  CHECK(in_url.body.find("sk-handout") == std::string::npos);
}

TEST_CASE("PATCH /admin/tokens/{id} changes name, services, rpm, expiry and hand-out at once") {
  FakeUpstream up(json_ok());
  Keypool kp({}, false);
  kp.write_service("openai", service_yaml("openai", up.base_url()));
  kp.write_service("sse", service_yaml("sse", up.base_url()));
  kp.start();
  add_tier(kp, "t", {{"openai", 1000}, {"sse", 1000}});
  add_key(kp, "o", "sk-patch-key-0000001", "t", "openai");
  add_key(kp, "s", "sk-patch-key-0000002", "t", "sse");
  auto created = add_token(kp, {{"tier", "t"}, {"services", {"openai"}}});
  std::string tok = created["token"];
  std::string id = std::to_string(created["id"].get<int64_t>());
  HeaderList auth{{"Authorization", "Bearer " + tok}};
  CHECK(kp.get("/v1/sse/x", auth).status == 403);

  auto p = kp.admin("PATCH", "/admin/tokens/" + id, {{"name", "renamed"}, {"services", json::array()}, {"rpm", 2}});
  INFO(p.body);
  REQUIRE(p.status == 200);
  CHECK(p.json()["name"] == "renamed");
  CHECK(p.json()["services"].empty());
  CHECK(p.json()["rpm"] == 2);
  // On the same keep-alive connection as before: the change applies to the next request.
  CHECK(kp.get("/v1/sse/x", auth).status == 200);
  CHECK(kp.get("/v1/openai/x", auth).status == 200);
  CHECK(kp.get("/v1/openai/x", auth).status == 429);  // rpm 2, now spent

  auto expired = kp.admin("PATCH", "/admin/tokens/" + id, {{"expires_at", 1000000000}, {"rpm", 0}});
  REQUIRE(expired.status == 200);
  auto e = kp.get("/v1/openai/x", auth);
  CHECK(e.status == 401);
  CHECK(mentions(e, "expired"));
  REQUIRE(kp.admin("PATCH", "/admin/tokens/" + id, {{"expires_at", nullptr}}).status == 200);
  CHECK(kp.get("/v1/sse/x", auth).status == 200);

  CHECK(kp.admin("PATCH", "/admin/tokens/" + id, {{"tier", "t"}}).status == 400);  // not patchable
  CHECK(kp.admin("PATCH", "/admin/tokens/" + id, {{"rpm", -1}}).status == 400);
  CHECK(kp.admin("PATCH", "/admin/tokens/" + id, {{"services", {"Bad Name"}}}).status == 400);
  CHECK(kp.admin("PATCH", "/admin/tokens/99999", {{"rpm", 1}}).status == 404);
  auto audit = kp.admin("GET", "/admin/audit?action=token.update").json()["audit"];
  CHECK(audit.size() == 3);
  CHECK(audit[0]["target"] == id);
}

TEST_CASE("POST /admin/tokens/{id}/rotate: a new secret, the old one valid for grace_s") {
  FakeUpstream up(json_ok());
  Keypool kp({}, false);
  kp.write_service("openai", service_yaml("openai", up.base_url()));
  kp.start();
  add_tier(kp, "t", {{"openai", 10000}});
  add_key(kp, "o", "sk-rotate-key-000001", "t", "openai");
  auto created = add_token(kp, {{"tier", "t"}});
  std::string old_tok = created["token"];
  std::string id = std::to_string(created["id"].get<int64_t>());
  auto call = [&](const std::string& t) { return kp.get("/v1/openai/x", {{"Authorization", "Bearer " + t}}).status; };
  REQUIRE(call(old_tok) == 200);

  CHECK(kp.admin("POST", "/admin/tokens/" + id + "/rotate", {{"grace_s", 86401}}).status == 400);
  CHECK(kp.admin("POST", "/admin/tokens/" + id + "/rotate", {{"grace_s", -1}}).status == 400);
  CHECK(kp.admin("POST", "/admin/tokens/99999/rotate", json::object()).status == 404);

  auto r = kp.admin("POST", "/admin/tokens/" + id + "/rotate", {{"grace_s", 3}});
  INFO(r.body);
  REQUIRE(r.status == 200);
  std::string new_tok = r.json()["token"];
  CHECK(new_tok.rfind("kp_", 0) == 0);
  CHECK(new_tok != old_tok);
  CHECK(r.json()["id"].get<int64_t>() == created["id"].get<int64_t>());
  CHECK_FALSE(r.json()["previous_valid_until"].is_null());
  CHECK(call(new_tok) == 200);
  CHECK(call(old_tok) == 200);  // within the grace period
  // Then the old secret stops working, and the new one goes on.
  CHECK(eventually([&] { return call(old_tok) == 401; }, 15000));
  CHECK(call(new_tok) == 200);

  // Without grace_s the old secret stops at once.
  auto r2 = kp.admin("POST", "/admin/tokens/" + id + "/rotate");
  REQUIRE(r2.status == 200);
  CHECK(call(new_tok) == 401);
  CHECK(call(r2.json()["token"].get<std::string>()) == 200);
  auto audit = kp.admin("GET", "/admin/audit?action=token.rotate").json()["audit"];
  CHECK(audit.size() == 2);
  CHECK(audit.dump().find("kp_") == std::string::npos);

  // A restart keeps the grace state: the store holds the previous hash until it ends.
  auto r3 = kp.admin("POST", "/admin/tokens/" + id + "/rotate", {{"grace_s", 600}});
  REQUIRE(r3.status == 200);
  std::string third = r3.json()["token"];
  kp.restart();
  CHECK(call(third) == 200);
  CHECK(call(r2.json()["token"].get<std::string>()) == 200);
}

TEST_CASE("PATCH /admin/tiers/{name}: takes effect on the next request and keeps the windows") {
  Keypool kp;
  REQUIRE(kp.admin("POST", "/admin/tiers", {{"name", "t"}, {"features", {{"img", 2}}}}).status == 201);
  REQUIRE(kp.admin("POST", "/admin/keys", {{"name", "k"}, {"key", "sk-tier-patch-00001"}, {"tier", "t"}}).status == 201);
  CHECK(get_key(kp, "feature=img").status == 200);
  CHECK(get_key(kp, "feature=img").status == 200);
  CHECK(get_key(kp, "feature=img").status == 429);

  auto p = kp.admin("PATCH", "/admin/tiers/t", {{"features", {{"img", 3}, {"txt", 5}}}, {"max_wait_ms", 100}});
  INFO(p.body);
  REQUIRE(p.status == 200);
  CHECK(p.json()["features"]["img"] == 3);
  CHECK(p.json()["max_wait_ms"] == 100);
  // The two hand-outs already in the window still count: one more, not three.
  CHECK(get_key(kp, "feature=img").status == 200);
  CHECK(get_key(kp, "feature=img").status == 429);
  CHECK(get_key(kp, "feature=txt").status == 200);  // a feature the tier did not have
  auto listed = kp.admin("GET", "/admin/tiers").json()["tiers"][0];
  CHECK(listed["features"]["txt"] == 5);
  CHECK(listed["max_wait_ms"] == 100);
  // Lowering it applies at once too.
  REQUIRE(kp.admin("PATCH", "/admin/tiers/t", {{"features", {{"txt", 1}}}}).status == 200);
  CHECK(get_key(kp, "feature=txt").status == 429);
  CHECK(get_key(kp, "feature=img").status == 404);  // no longer covered

  CHECK(kp.admin("PATCH", "/admin/tiers/ghost", {{"max_wait_ms", 1}}).status == 404);
  CHECK(kp.admin("PATCH", "/admin/tiers/t", {{"features", json::object()}}).status == 400);
  CHECK(kp.admin("PATCH", "/admin/tiers/t", {{"features", {{"img", 0}}}}).status == 400);
  CHECK(kp.admin("PATCH", "/admin/tiers/t", {{"max_wait_ms", 60001}}).status == 400);
  CHECK(kp.admin("PATCH", "/admin/tiers/t", {{"name", "u"}}).status == 400);
  CHECK(kp.admin("GET", "/admin/audit?action=tier.update").json()["audit"].size() == 2);
}

TEST_CASE("accept_query_token: ?api_key= is taken only for services that opt in") {
  FakeUpstream up(json_ok());
  Keypool kp({}, false);
  kp.write_service("plain", service_yaml("plain", up.base_url()));
  kp.write_service("ws", service_yaml("ws", up.base_url(), "x-api-key", "accept_query_token: true\n"));
  kp.start();
  add_tier(kp, "t", {{"plain", 1000}, {"ws", 1000}});
  add_key(kp, "p", "sk-query-plain-00001", "t", "plain");
  add_key(kp, "w", "sk-query-ws-0000001", "t", "ws");
  std::string tok = add_token(kp, {{"tier", "t"}})["token"];

  auto refused = kp.get("/v1/plain/x?api_key=" + tok);
  CHECK(refused.status == 401);
  CHECK(mentions(refused, "accept_query_token"));
  CHECK(up.request_count() == 0);
  CHECK(kp.get("/v1/plain/x", {{"Authorization", "Bearer " + tok}}).status == 200);
  auto ok = kp.get("/v1/ws/x?api_key=" + tok + "&a=1");
  CHECK(ok.status == 200);
  auto reqs = up.requests();
  REQUIRE(reqs.size() == 2);
  CHECK(reqs[1].query == "a=1");  // the token never goes upstream

  auto services = kp.admin("GET", "/admin/services").json()["services"];
  for (const auto& s : services) CHECK(s["accept_query_token"] == (s["name"] == "ws"));
}

TEST_CASE("the bundled services opt in to ?api_key= only where their clients need it") {
  Keypool kp({{"SERVICES_DIR", source_dir() + "/services.d"}});
  auto services = kp.admin("GET", "/admin/services").json()["services"];
  REQUIRE(services.size() >= 10);
  for (const auto& s : services) {
    CAPTURE(s["name"]);
    // Cartesia's WebSocket API takes the key in the URL; every other SDK sends a header.
    CHECK(s["accept_query_token"] == (s["name"] == "cartesia"));
  }
}

TEST_CASE("audit: rows older than audit.retention_days are pruned by the store thread") {
  Keypool kp({}, false);
  kp.write_config({{"retention_days", "2"}});
  kp.start();
  REQUIRE(kp.admin("POST", "/admin/tiers", {{"name", "t"}, {"features", {{"img", 5}}}}).status == 201);
  kp.stop();
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  {
    auto master = crypto::MasterKey::from_hex(kEncryptionKey);
    REQUIRE(master.ok());
    auto s = store::Store::open(kp.dir.path + "/data/pool.db", *master);
    REQUIRE(s.ok());
    std::vector<store::AuditRow> rows;
    for (int i = 0; i < 25; ++i) rows.push_back({0, now - 3 * 86'400'000LL - i * 1000, "admin", "old.row", "", "{}"});
    rows.push_back({0, now - 1 * 86'400'000LL, "admin", "recent.row", "", "{}"});
    REQUIRE((*s)->append_audit(rows).ok());
  }
  kp.start();
  CHECK(eventually([&] { return kp.admin("GET", "/admin/audit?action=old.row").json()["audit"].empty(); }));
  CHECK(kp.admin("GET", "/admin/audit?action=recent.row").json()["audit"].size() == 1);
  CHECK(kp.admin("GET", "/admin/audit?action=tier.create").json()["audit"].size() == 1);
}
