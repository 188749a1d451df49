#include "ratelimit/sliding_log.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <vector>

using keypool::ratelimit::SlidingLog;

TEST_CASE("sliding log: window boundary is half-open") {
  struct Case {
    const char* name;
    int64_t second_at;  // ms after the first grant, limit 1, window 60 s
    bool granted;
    int64_t retry_after;  // retry_after_ms just before the second attempt
  };
  const Case cases[] = {
      {"same instant", 0, false, 60'000},
      {"1 ms in", 1, false, 59'999},
      {"1 ms before the window ends", 59'999, false, 1},
      {"exactly at the window end", 60'000, true, 0},
      {"1 ms after", 60'001, true, 0},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    SlidingLog log(1);
    REQUIRE(log.try_acquire(1000));
    CHECK(log.retry_after_ms(1000 + c.second_at) == c.retry_after);
    CHECK(log.try_acquire(1000 + c.second_at) == c.granted);
  }
}

TEST_CASE("sliding log: burst of limit, then refusal until the oldest leaves") {
  SlidingLog log(5, 10'000);
  for (int i = 0; i < 5; ++i) CHECK(log.try_acquire(100 + i));
  CHECK_FALSE(log.try_acquire(105));
  CHECK(log.used(105) == 5);
  CHECK(log.limit() == 5);
  CHECK(log.retry_after_ms(105) == 100 + 10'000 - 105);
  CHECK(log.reset_in_ms(105) == 100 + 10'000 - 105);
  CHECK_FALSE(log.try_acquire(10'099));
  CHECK(log.try_acquire(10'100));  // grant at 100 left; 101..104 still in
  CHECK_FALSE(log.try_acquire(10'100));
  CHECK(log.retry_after_ms(10'100) == 1);  // 101 leaves at 10'101
  CHECK(log.used(10'100) == 5);
  CHECK(log.used(30'000) == 0);
  CHECK(log.reset_in_ms(30'000) == 0);
  CHECK(log.retry_after_ms(30'000) == 0);
}

TEST_CASE("sliding log: retry_after is exact at every step of a full window") {
  SlidingLog log(3, 1000);
  CHECK(log.try_acquire(0));
  CHECK(log.try_acquire(200));
  CHECK(log.try_acquire(700));
  for (int64_t t = 700; t < 1000; t += 37) CHECK(log.retry_after_ms(t) == 1000 - t);
  CHECK(log.retry_after_ms(1000) == 0);
  CHECK(log.try_acquire(1000));
  CHECK(log.retry_after_ms(1000) == 200);  // the grant at 200 leaves at 1200
}

TEST_CASE("sliding log: refund returns exactly the refunded grant") {
  SlidingLog log(2, 1000);
  CHECK(log.try_acquire(10));
  CHECK(log.try_acquire(20));
  CHECK_FALSE(log.try_acquire(30));
  log.refund(20);
  CHECK(log.used(30) == 1);
  CHECK(log.try_acquire(30));
  // Refunding an unknown time changes nothing.
  log.refund(25);
  CHECK(log.used(30) == 2);
  // Refunding the older one leaves the newer one blocking until it leaves.
  log.refund(10);
  CHECK(log.retry_after_ms(31) == 0);
  CHECK(log.try_acquire(31));
  CHECK(log.retry_after_ms(32) == 30 + 1000 - 32);
  // A grant that already left the window is not refundable.
  CHECK(log.try_acquire(5000));
  log.refund(31);
  CHECK(log.used(5000) == 1);
}

TEST_CASE("sliding log: refund picks the most recent of equal times") {
  SlidingLog log(3, 1000);
  CHECK(log.try_acquire(5));
  CHECK(log.try_acquire(5));
  CHECK(log.try_acquire(5));
  log.refund(5);
  CHECK(log.used(5) == 2);
  CHECK(log.try_acquire(6));
  CHECK(log.reset_in_ms(6) == 999);
}

TEST_CASE("sliding log: a lowered limit waits for enough history to leave") {
  SlidingLog log(4, 1000);
  for (int64_t t : {0, 100, 200, 300}) CHECK(log.try_acquire(t));
  log.set_limit(2);
  CHECK_FALSE(log.try_acquire(400));
  CHECK(log.retry_after_ms(400) == 1200 - 400);  // two must leave: 0 and 100
  CHECK_FALSE(log.try_acquire(1199));
  CHECK(log.try_acquire(1200));
  log.set_limit(10);
  CHECK(log.try_acquire(1200));
}

TEST_CASE("sliding log: a clock stepping back never breaks the promise") {
  SlidingLog log(2, 1000);
  CHECK(log.try_acquire(5000));
  CHECK(log.try_acquire(4000));  // recorded at 5000, the newest earlier time
  CHECK(log.last_grant_ms() == 5000);
  CHECK_FALSE(log.try_acquire(5999));
  CHECK(log.try_acquire(6000));
}

TEST_CASE("sliding log: large limits do not allocate up front and bursts fill it") {
  SlidingLog log(100'000);
  CHECK(log.retry_after_ms(0) == 0);
  for (int i = 0; i < 100'000; ++i) REQUIRE(log.try_acquire(i / 10));
  CHECK_FALSE(log.try_acquire(10'000));
  CHECK(log.retry_after_ms(10'000) == 60'000 - 10'000);
  CHECK(log.try_acquire(60'000));  // the 10 grants at 0 left
  CHECK(log.used(60'000) == 100'000 - 10 + 1);
  // Everything leaves; the ring is released and refills from scratch.
  CHECK(log.used(200'000) == 0);
  CHECK(log.try_acquire(200'000));
  CHECK(log.used(200'000) == 1);
}

// Every span [s, s + window) over the granted times must hold at most limit grants. Checking
// spans that start at each grant suffices: any heavier span can slide right to one.
static void check_every_window(std::vector<int64_t> grants, int64_t limit, int64_t window) {
  std::sort(grants.begin(), grants.end());
  size_t hi = 0;
  for (size_t lo = 0; lo < grants.size(); ++lo) {
    while (hi < grants.size() && grants[hi] < grants[lo] + window) ++hi;
    REQUIRE(static_cast<int64_t>(hi - lo) <= limit);
  }
}

TEST_CASE("sliding log: randomized, no 60 s span ever exceeds the limit") {
  std::mt19937_64 rng(12345);
  for (int round = 0; round < 40; ++round) {
    const int64_t limit = 1 + static_cast<int64_t>(rng() % 20);
    const int64_t window = 60'000;
    SlidingLog log(limit, window);
    std::vector<int64_t> granted;
    int64_t now = 0;
    int64_t retry_checked = 0;
    for (int i = 0; i < 3000; ++i) {
      // Mix bursts (same ms), small steps and long gaps.
      const auto r = rng() % 10;
      now += r < 3 ? 0 : r < 8 ? static_cast<int64_t>(rng() % 2000) : static_cast<int64_t>(rng() % 70'000);
      const int64_t retry = log.retry_after_ms(now);
      const bool ok = log.try_acquire(now);
      CHECK(ok == (retry == 0));
      if (ok) {
        granted.push_back(now);
        // Occasionally refund, as a lease that never reached upstream would.
        if (rng() % 17 == 0) {
          log.refund(log.last_grant_ms());
          granted.pop_back();
        }
      } else {
        // retry_after is exact: one ms earlier is refused, at it a grant is possible.
        CHECK(log.retry_after_ms(now + retry - 1) > 0);
        CHECK(log.retry_after_ms(now + retry) == 0);
        ++retry_checked;
      }
      CHECK(log.used(now) <= limit);
    }
    CHECK(retry_checked > 0);
    check_every_window(granted, limit, window);
  }
}
