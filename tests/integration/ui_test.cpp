// The admin console over HTTP: its assets (security headers, ETag/304, gzip), login and
// logout, and the browser session standing in for the admin token on /admin/* (cookie
// flags, CSRF, cross-origin refusal, idle and absolute expiry, several workers). The console
// itself, in a real browser, is tests in ui/test/browser.test.mjs.
#include "ui/ui.h"

#include <doctest/doctest.h>

#include <chrono>
#include <thread>

#include "fixture.h"
#include "proxy_helpers.h"
#include "support/fake_upstream.h"

using namespace keypool::testing;
using nlohmann::json;

namespace {

struct Login {
  std::string cookie;      // "kp_session=..."
  std::string set_cookie;  // the whole Set-Cookie value
  std::string csrf;
};

Login login(Keypool& kp, HeaderList extra = {}) {
  extra.push_back({"Content-Type", "application/json"});
  auto r = request(kp.port, "POST", "/ui/login", extra, json{{"token", kAdminToken}}.dump());
  INFO(r.body);
  REQUIRE(r.status == 200);
  Login l;
  l.set_cookie = r.header("set-cookie");
  l.cookie = l.set_cookie.substr(0, l.set_cookie.find(';'));
  l.csrf = json::parse(r.body)["csrf"].get<std::string>();
  return l;
}

HeaderList with(const Login& l, HeaderList h = {}) {
  h.push_back({"Cookie", "other=1; " + l.cookie});
  return h;
}

std::string error_code(const Response& r) {
  auto j = json::parse(r.body, nullptr, false);
  return j.is_object() && j.contains("error") ? j["error"].value("code", "") : "";
}

const std::string kTier = R"({"name":"ui-tier","features":{"svc":10}})";

}  // namespace

TEST_CASE("ui: login sets an HttpOnly, SameSite=Strict, Path=/ cookie; Secure behind TLS only") {
  Keypool kp;
  auto l = login(kp);
  CHECK(l.cookie.rfind("kp_session=kps_", 0) == 0);
  CHECK(l.set_cookie.find("; HttpOnly") != std::string::npos);
  CHECK(l.set_cookie.find("; SameSite=Strict") != std::string::npos);
  CHECK(l.set_cookie.find("; Path=/") != std::string::npos);
  CHECK(l.set_cookie.find("Max-Age=43200") != std::string::npos);
  CHECK(l.set_cookie.find("Secure") == std::string::npos);
  CHECK(l.csrf.size() >= 40);
  auto tls = login(kp, {{"X-Forwarded-Proto", "https"}});
  CHECK(tls.set_cookie.find("; Secure") != std::string::npos);
  // The session id is not the admin token, nor derived from it in any visible way.
  CHECK(l.set_cookie.find(kAdminToken) == std::string::npos);
}

TEST_CASE("ui: login refuses a wrong token, a malformed body and another origin") {
  Keypool kp;
  HeaderList json_type{{"Content-Type", "application/json"}};
  auto wrong =
      request(kp.port, "POST", "/ui/login", json_type, R"({"token":"adm_not_it_0123456789"})");
  CHECK(wrong.status == 401);
  CHECK(wrong.header("set-cookie").empty());
  CHECK(request(kp.port, "POST", "/ui/login", json_type, "{not json").status == 400);
  CHECK(request(kp.port, "POST", "/ui/login", json_type, R"({"token":42})").status == 400);
  CHECK(request(kp.port, "GET", "/ui/login").status == 405);
  HeaderList evil{{"Content-Type", "application/json"}, {"Origin", "http://evil.example"}};
  auto cross = request(kp.port, "POST", "/ui/login", evil, json{{"token", kAdminToken}}.dump());
  CHECK(cross.status == 403);
  CHECK(cross.header("set-cookie").empty());
}

TEST_CASE("ui: the session cookie opens /admin/*; writes need its X-CSRF-Token") {
  Keypool kp;
  CHECK(request(kp.port, "GET", "/admin/tiers").status == 401);
  auto l = login(kp);
  CHECK(request(kp.port, "GET", "/admin/tiers", with(l)).status == 200);
  CHECK(request(kp.port, "GET", "/metrics", with(l)).status == 200);

  auto no_csrf = request(kp.port, "POST", "/admin/tiers", with(l), kTier);
  CHECK(no_csrf.status == 403);
  CHECK(error_code(no_csrf) == "forbidden");
  CHECK(no_csrf.header("content-type") == "application/json");
  CHECK(request(kp.port, "POST", "/admin/tiers", with(l, {{"X-CSRF-Token", "wrong"}}), kTier)
            .status == 403);
  auto other = login(kp);
  CHECK(request(kp.port, "POST", "/admin/tiers", with(l, {{"X-CSRF-Token", other.csrf}}), kTier)
            .status == 403);
  // Nothing was written by the refused requests.
  CHECK(json::parse(kp.admin("GET", "/admin/tiers").body)["tiers"].empty());

  auto ok = request(kp.port, "POST", "/admin/tiers", with(l, {{"X-CSRF-Token", l.csrf}}), kTier);
  CHECK(ok.status == 201);
  CHECK(request(kp.port, "DELETE", "/admin/tiers/ui-tier", with(l)).status == 403);
  CHECK(request(kp.port, "DELETE", "/admin/tiers/ui-tier", with(l, {{"X-CSRF-Token", l.csrf}}))
            .status == 200);
  // GET /ui/session gives a reloaded page its CSRF token back.
  auto s = request(kp.port, "GET", "/ui/session", with(l));
  CHECK(s.status == 200);
  CHECK(json::parse(s.body)["csrf"] == l.csrf);
  CHECK(request(kp.port, "GET", "/ui/session").status == 401);
}

TEST_CASE("ui: a cross-origin request with the session cookie is refused, read or write") {
  Keypool kp;
  auto l = login(kp);
  std::string self = "http://127.0.0.1:" + std::to_string(kp.port);
  auto cross = request(kp.port, "GET", "/admin/keys", with(l, {{"Origin", "http://evil.example"}}));
  CHECK(cross.status == 403);
  CHECK(error_code(cross) == "forbidden");
  CHECK(request(kp.port, "GET", "/admin/keys", with(l, {{"Sec-Fetch-Site", "same-site"}})).status ==
        403);
  CHECK(request(kp.port, "POST", "/admin/tiers",
                with(l, {{"Origin", "http://localhost:1"}, {"X-CSRF-Token", l.csrf}}), kTier)
            .status == 403);
  CHECK(request(kp.port, "GET", "/admin/keys",
                with(l, {{"Origin", self}, {"Sec-Fetch-Site", "same-origin"}}))
            .status == 200);
  // The bearer token is not a browser credential: the origin checks do not apply to it.
  CHECK(
      request(kp.port, "GET", "/admin/keys",
              {{"Authorization", "Bearer " + kAdminToken}, {"Origin", "http://elsewhere.example"}})
          .status == 200);
}

TEST_CASE("ui: logout ends the session and clears the cookie") {
  Keypool kp;
  auto l = login(kp);
  auto out = request(kp.port, "POST", "/ui/logout", with(l));
  CHECK(out.status == 200);
  CHECK(
      out.header("set-cookie").find("kp_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict") ==
      0);
  auto after = request(kp.port, "GET", "/admin/keys", with(l));
  CHECK(after.status == 401);
  CHECK(json::parse(after.body)["error"]["message"].get<std::string>().find("session") !=
        std::string::npos);
}

TEST_CASE("ui: a session ends after its idle time, and after its absolute time however busy") {
  using namespace std::chrono;
  SUBCASE("idle") {
    Keypool kp(std::map<std::string, std::string>{{"UI_SESSION_IDLE_S", "1"}});
    auto l = login(kp);
    CHECK(request(kp.port, "GET", "/admin/keys", with(l)).status == 200);
    std::this_thread::sleep_for(milliseconds(1300));
    CHECK(request(kp.port, "GET", "/admin/keys", with(l)).status == 401);
  }
  SUBCASE("absolute") {
    Keypool kp({{"UI_SESSION_IDLE_S", "60"}, {"UI_SESSION_MAX_S", "2"}});
    auto l = login(kp);
    auto deadline = steady_clock::now() + seconds(10);
    int last = 200;
    while (last == 200 && steady_clock::now() < deadline) {
      last = request(kp.port, "GET", "/admin/keys", with(l)).status;
      std::this_thread::sleep_for(milliseconds(200));
    }
    CHECK(last == 401);  // used every 200 ms, still gone after 2 s
  }
}

TEST_CASE("ui: one session works on every worker") {
  Keypool kp(std::map<std::string, std::string>{{"WORKERS", "3"}});
  auto l = login(kp);
  // New connections spread over the workers; each must know the session.
  for (int i = 0; i < 12; ++i) {
    auto r = request(kp.port, "POST", "/admin/tiers", with(l, {{"X-CSRF-Token", l.csrf}}),
                     R"({"name":"t)" + std::to_string(i) + R"(","features":{"svc":1}})");
    CHECK(r.status == 201);
  }
}

TEST_CASE("ui: assets have the security headers, an ETag answering 304, and gzip") {
  Keypool kp;
  auto redirect = request(kp.port, "GET", "/ui");
  CHECK(redirect.status == 308);
  CHECK(redirect.header("location") == "/ui/");
  auto r = request(kp.port, "GET", "/ui/", {{"Accept-Encoding", "gzip"}});
  CHECK(r.header("content-security-policy").find("frame-ancestors 'none'") != std::string::npos);
  CHECK(r.header("content-security-policy").find("script-src 'self'") != std::string::npos);
  CHECK(r.header("x-content-type-options") == "nosniff");
  CHECK(r.header("referrer-policy") == "no-referrer");
  CHECK(request(kp.port, "POST", "/ui/app.js").status == 405);
  if (keypool::ui::embedded().assets.empty()) {
    // Built without npm: keypool runs, and says why the console is missing.
    CHECK(r.status == 503);
    CHECK(error_code(r) == "ui_not_built");
    return;
  }
  REQUIRE(r.status == 200);
  CHECK(r.header("content-encoding") == "gzip");
  CHECK(static_cast<unsigned char>(r.body.at(0)) == 0x1f);
  std::string etag = r.header("etag");
  REQUIRE_FALSE(etag.empty());
  auto again =
      request(kp.port, "GET", "/ui/", {{"Accept-Encoding", "gzip"}, {"If-None-Match", etag}});
  CHECK(again.status == 304);
  CHECK(again.body.empty());
  auto plain = request(kp.port, "GET", "/ui/app.js");
  CHECK(plain.status == 200);
  CHECK(plain.header("content-encoding").empty());
  CHECK(plain.header("content-type") == "text/javascript; charset=utf-8");
  CHECK(plain.body.size() > 1000);
  CHECK(request(kp.port, "GET", "/ui/app.js", {{"If-None-Match", plain.header("etag")}}).status ==
        304);
  auto head = request(kp.port, "HEAD", "/ui/app.css");
  CHECK(head.status == 200);
  CHECK(request(kp.port, "GET", "/ui/nope.js").status == 404);
}

TEST_CASE("ui: GET /admin/stats gives 60 minutes and totals") {
  Keypool kp;
  auto r = kp.admin("GET", "/admin/stats");
  REQUIRE(r.status == 200);
  auto j = json::parse(r.body);
  CHECK(j["minutes"].size() == 60);
  for (const char* f : {"requests", "errors", "rate_limited", "failovers"})
    CHECK(j["totals"].contains(f));
}

TEST_CASE("ui: the session cookie a browser sends with a proxied call never reaches the upstream") {
  FakeUpstream up(echo());
  Keypool kp({}, false);
  kp.write_service("svc", service_yaml("svc", up.base_url()));
  kp.start();
  std::string token = setup_pool(kp, "svc", {"sk-ui-cookie-0123456789"});
  Login l = login(kp);
  std::string session_id = l.cookie.substr(l.cookie.find('=') + 1);
  REQUIRE(session_id.size() >= 16);
  kp.remember_secret(session_id);  // and it must not reach the log either
  auto r = request(kp.port, "GET", "/v1/svc/x", with(l, {{"Authorization", "Bearer " + token}}));
  REQUIRE(r.status == 200);
  REQUIRE(up.request_count() == 1);
  auto seen = up.requests()[0];
  CHECK(seen.header("cookie") == "other=1");
  CHECK_FALSE(upstream_saw(seen, session_id));
}
