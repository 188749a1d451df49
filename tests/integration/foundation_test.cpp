// Foundation: the server, the encrypted store, tiers, keys and GET /key, driven through the
// real binary on loopback.
#include <doctest/doctest.h>

#include <thread>

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
