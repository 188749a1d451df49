#include "session/session.h"

#include <doctest/doctest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

using keypool::http::Headers;
using keypool::session::Limits;
using keypool::session::Store;
using keypool::session::Verdict;
namespace session = keypool::session;

namespace {

Headers with_cookie(const std::string& id, Headers extra = {}) {
  extra.push_back({"Cookie", "theme=dark; kp_session=" + id + "; other=1"});
  extra.push_back({"Host", "127.0.0.1:8080"});
  return extra;
}

}  // namespace

TEST_CASE("session: a session lives until idle or absolute expiry, whichever comes first") {
  Store store(Limits{1000, 5000, 16});
  auto s = store.open(10'000);
  CHECK(s.id.rfind("kps_", 0) == 0);
  CHECK(s.csrf.size() >= 40);
  CHECK(s.expires_at_ms == 15'000);
  // Used every 900 ms: idle never runs out, but the absolute limit does.
  for (int64_t t = 10'900; t < 15'000; t += 900) REQUIRE(store.touch(s.id, t));
  CHECK_FALSE(store.touch(s.id, 15'000));
  CHECK(store.size() == 0);  // dropped on the spot

  auto idle = store.open(20'000);
  CHECK(store.touch(idle.id, 20'999));
  CHECK_FALSE(store.touch(idle.id, 21'999));  // 1000 ms since the last use
}

TEST_CASE("session: close ends a session; unknown and empty ids are refused") {
  Store store;
  auto a = store.open(0), b = store.open(0);
  CHECK(a.id != b.id);
  CHECK(a.csrf != b.csrf);
  store.close(a.id);
  CHECK_FALSE(store.touch(a.id, 1));
  CHECK(store.touch(b.id, 1));
  CHECK_FALSE(store.touch("", 1));
  CHECK_FALSE(store.touch("kps_made_up", 1));
}

TEST_CASE("session: a login storm drops the least recently used session, not the new one") {
  Store store(Limits{60'000, 60'000, 3});
  auto a = store.open(0), b = store.open(1), c = store.open(2);
  REQUIRE(store.touch(a.id, 3));  // a is now the most recent; b the least
  auto d = store.open(4);
  CHECK(store.size() == 3);
  CHECK_FALSE(store.touch(b.id, 5));
  CHECK(store.touch(a.id, 5));
  CHECK(store.touch(c.id, 5));
  CHECK(store.touch(d.id, 5));
}

TEST_CASE("session: check wants a same-origin request and, for writes, the session's CSRF token") {
  Store store;
  auto s = store.open(0);
  CHECK(session::check(store, {{"Host", "h"}}, "GET", 1) == Verdict::NoSession);
  CHECK(session::check(store, with_cookie(s.id), "GET", 1) == Verdict::Ok);
  CHECK(session::check(store, with_cookie(s.id), "HEAD", 1) == Verdict::Ok);
  CHECK(session::check(store, with_cookie(s.id), "POST", 1) == Verdict::BadCsrf);
  CHECK(session::check(store, with_cookie(s.id, {{"X-CSRF-Token", "nope"}}), "PATCH", 1) ==
        Verdict::BadCsrf);
  CHECK(session::check(store, with_cookie(s.id, {{"X-CSRF-Token", s.csrf + "x"}}), "DELETE", 1) ==
        Verdict::BadCsrf);
  CHECK(session::check(store, with_cookie(s.id, {{"x-csrf-token", s.csrf}}), "DELETE", 1) ==
        Verdict::Ok);
  // Another session's CSRF token does not fit this one.
  auto other = store.open(0);
  CHECK(session::check(store, with_cookie(s.id, {{"X-CSRF-Token", other.csrf}}), "POST", 1) ==
        Verdict::BadCsrf);
  // Cross-origin, by either header, even for a read with a valid token.
  CHECK(session::check(store, with_cookie(s.id, {{"Origin", "http://evil.example"}}), "GET", 1) ==
        Verdict::CrossOrigin);
  CHECK(session::check(
            store, with_cookie(s.id, {{"Sec-Fetch-Site", "same-site"}, {"X-CSRF-Token", s.csrf}}),
            "POST", 1) == Verdict::CrossOrigin);
  CHECK(session::check(store, with_cookie(s.id, {{"Sec-Fetch-Site", "cross-site"}}), "GET", 1) ==
        Verdict::CrossOrigin);
  CHECK(session::check(store,
                       with_cookie(s.id, {{"Origin", "http://127.0.0.1:8080"},
                                          {"Sec-Fetch-Site", "same-origin"},
                                          {"X-CSRF-Token", s.csrf}}),
                       "POST", 1) == Verdict::Ok);
  CHECK(session::check(store, with_cookie("kps_forged"), "GET", 1) == Verdict::Expired);
}

TEST_CASE("session: same_origin compares Origin's authority with Host") {
  CHECK(session::same_origin({}));
  CHECK(session::same_origin({{"Host", "localhost:8080"}, {"Origin", "http://localhost:8080"}}));
  CHECK(session::same_origin({{"Host", "kp.internal"}, {"Origin", "https://KP.internal"}}));
  CHECK_FALSE(
      session::same_origin({{"Host", "localhost:8080"}, {"Origin", "http://localhost:8081"}}));
  CHECK_FALSE(session::same_origin({{"Host", "localhost:8080"}, {"Origin", "null"}}));
  CHECK_FALSE(
      session::same_origin({{"Origin", "http://localhost:8080"}}));  // no Host to compare with
  CHECK_FALSE(session::same_origin({{"Host", "a"}, {"Origin", "http://a/path"}}));
  CHECK(session::same_origin({{"Sec-Fetch-Site", "none"}}));
  CHECK_FALSE(session::same_origin({{"Sec-Fetch-Site", "same-site"}}));
}

TEST_CASE("session: the cookie is HttpOnly, SameSite=Strict, Path=/, and Secure only behind TLS") {
  session::Issued s{"kps_abc", "csrf", 3'600'000};
  auto plain = session::set_cookie(s, 0, false);
  CHECK(plain == "kp_session=kps_abc; Path=/; Max-Age=3600; HttpOnly; SameSite=Strict");
  CHECK(session::set_cookie(s, 0, true) == plain + "; Secure");
  CHECK(session::clear_cookie(false) ==
        "kp_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict");
  CHECK(session::came_over_tls({{"X-Forwarded-Proto", "https"}}));
  CHECK_FALSE(session::came_over_tls({{"X-Forwarded-Proto", "http"}}));
  CHECK_FALSE(session::came_over_tls({}));
}

TEST_CASE("session: cookie() finds the named cookie among others and in any Cookie header") {
  CHECK(session::cookie({{"Cookie", "a=1; kp_session=x; b=2"}}, "kp_session") == "x");
  CHECK(session::cookie({{"Cookie", "a=1"}, {"cookie", "kp_session=y"}}, "kp_session") == "y");
  CHECK_FALSE(session::cookie({{"Cookie", "xkp_session=z"}}, "kp_session"));
  CHECK_FALSE(session::cookie({}, "kp_session"));
}

TEST_CASE("session: workers opening, touching and closing sessions at once") {
  Store store(Limits{60'000, 60'000, 100'000});
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 500; ++i) {
        auto s = store.open(i);
        if (!store.touch(s.id, i + 1) || store.touch(s.id, i + 1)->csrf != s.csrf) failures++;
        store.close(s.id);
        if (store.touch(s.id, i + 2)) failures++;
      }
    });
  for (auto& th : threads) th.join();
  CHECK(failures == 0);
  CHECK(store.size() == 0);
}
