#include <doctest/doctest.h>

#include "state/limits.h"

using keypool::state::SuspensionGuard;

TEST_CASE("suspension guard: at most half of a pool within 60 s, per pool") {
  SuspensionGuard g;
  // A pool of 4: two suspensions, then the cap.
  CHECK(g.allow("svc/t", 1000, 4));
  CHECK(g.allow("svc/t", 2000, 4));
  CHECK_FALSE(g.allow("svc/t", 3000, 4));
  CHECK_FALSE(g.allow("svc/t", 4000, 4));
  // Another pool is not affected.
  CHECK(g.allow("svc/u", 4000, 4));
  auto capped = g.capped(4000);
  REQUIRE(capped.size() == 1);
  CHECK(capped[0].scope == "svc/t");
  CHECK(capped[0].capped == 2);
  CHECK(capped[0].last_capped_ms == 4000);
  CHECK(capped[0].recent == 2);
  // 60 s after the first suspension, one more is allowed.
  CHECK(g.allow("svc/t", 61'000, 4));
  CHECK_FALSE(g.allow("svc/t", 61'500, 4));
  // A pool of one key: its key may be suspended (a single bad key must go), once a minute.
  CHECK(g.allow("one/t", 0, 1));
  CHECK_FALSE(g.allow("one/t", 10, 1));
  // A pool of 3: one, then 2 * 2 >= 3 is not yet... 1 * 2 < 3 allows the second.
  CHECK(g.allow("three/t", 0, 3));
  CHECK(g.allow("three/t", 1, 3));
  CHECK_FALSE(g.allow("three/t", 2, 3));
}
