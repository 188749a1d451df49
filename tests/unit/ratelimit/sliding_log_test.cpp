#include "ratelimit/sliding_log.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <deque>
#include <random>
#include <utility>
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

TEST_CASE("sliding log: half a million grants in 10 ms stay exact in 10 runs") {
  SlidingLog log(1'000'000);
  for (int i = 0; i < 500'000; ++i) REQUIRE(log.try_acquire(i / 50'000));  // 50k per ms, 0..9
  CHECK(log.runs() == 10);  // one per distinct ms, not one per grant
  CHECK(log.used(9) == 500'000);
  CHECK(log.used(4) == 250'000);  // grants after now (0..4 of 0..9) are not counted
  CHECK(log.retry_after_ms(9) == 0);
  CHECK(log.reset_in_ms(9) == 60'000 - 9);
  for (int i = 0; i < 500'000; ++i) REQUIRE(log.try_acquire(10 + i / 50'000));  // ms 10..19
  CHECK(log.runs() == 20);
  CHECK_FALSE(log.try_acquire(19));
  CHECK(log.retry_after_ms(19) == 60'000 - 19);
  CHECK(log.used(59'999) == 1'000'000);
  CHECK(log.used(60'000) == 950'000);  // ms 0 left
  // At 60'000 exactly the 50k grants at ms 0 have left; the next ms must wait for ms 1.
  for (int i = 0; i < 50'000; ++i) REQUIRE(log.try_acquire(60'000));
  CHECK_FALSE(log.try_acquire(60'000));
  CHECK(log.retry_after_ms(60'000) == 1);
  CHECK(log.runs() == 20);  // ms 1..19 plus 60'000
  log.set_limit(100'000);   // the blocker is now 900k grants in: inside the run at ms 19
  CHECK(log.retry_after_ms(60'000) == 19);
  CHECK(log.used(200'000) == 0);
  CHECK(log.try_acquire(200'000));
  CHECK(log.runs() == 1);
}

TEST_CASE("sliding log: refund in the middle of a run takes one grant from it") {
  SlidingLog log(9, 1000);
  for (int64_t t : {5, 5, 5, 6, 6, 6, 7, 7, 7}) CHECK(log.try_acquire(t));
  CHECK(log.runs() == 3);
  log.refund(6);
  CHECK(log.runs() == 3);
  CHECK(log.used(7) == 8);
  CHECK(log.used(6) == 5);
  // With the limit lowered to 4 the blocker is the 5th of 8 live: 5,5,5,6,[6],7,7,7.
  log.set_limit(4);
  CHECK(log.retry_after_ms(7) == 6 + 1000 - 7);
  log.refund(6);
  log.refund(6);  // the run at 6 empties and goes; 5 and 7 are untouched
  CHECK(log.runs() == 2);
  CHECK(log.used(7) == 6);
  CHECK(log.used(6) == 3);
  CHECK(log.retry_after_ms(7) == 5 + 1000 - 7);  // 3rd of 5,5,[5],7,7,7
  log.set_limit(2);
  CHECK(log.retry_after_ms(7) == 7 + 1000 - 7);  // 5th of 5,5,5,7,[7],7
  log.refund(6);  // nothing left at 6
  CHECK(log.used(7) == 6);
  log.set_limit(9);
  CHECK(log.try_acquire(7));
  CHECK(log.try_acquire(8));
  CHECK(log.try_acquire(8));
  CHECK_FALSE(log.try_acquire(8));
  CHECK(log.runs() == 3);
  CHECK(log.reset_in_ms(8) == 5 + 1000 - 8);
}

TEST_CASE("sliding log: a clock stepping back merges into the newest run") {
  SlidingLog log(5, 1000);
  CHECK(log.try_acquire(100));
  CHECK(log.try_acquire(90));
  CHECK(log.try_acquire(50));
  CHECK(log.last_grant_ms() == 100);
  CHECK(log.runs() == 1);
  CHECK(log.used(100) == 3);
  CHECK(log.used(99) == 0);  // recorded later than 99, so not within (99 - window, 99]
  CHECK(log.retry_after_ms(50) == 0);
  CHECK(log.reset_in_ms(99) == 100 + 1000 - 99);
  log.refund(log.last_grant_ms());
  CHECK(log.used(100) == 2);
  CHECK(log.try_acquire(60));
  CHECK(log.try_acquire(70));
  CHECK(log.try_acquire(80));
  CHECK_FALSE(log.try_acquire(80));
  CHECK(log.runs() == 1);
  CHECK(log.retry_after_ms(80) == 100 + 1000 - 80);  // may exceed a window; erring strict
  CHECK(log.try_acquire(1100));
  CHECK(log.runs() == 1);
}

TEST_CASE("sliding log: a lowered limit finds the blocker inside a run") {
  SlidingLog log(12, 1000);
  for (int64_t t : {0, 100, 200})
    for (int i = 0; i < 4; ++i) CHECK(log.try_acquire(t));
  // Live grants by position: 0-3 at 0, 4-7 at 100, 8-11 at 200. The blocker is position
  // live - limit.
  const std::pair<int64_t, int64_t> cases[] = {{12, 0}, {9, 0}, {8, 100}, {5, 100}, {4, 200}, {1, 200}};
  for (const auto& c : cases) {
    const int64_t limit = c.first, blocker = c.second;  // no structured binding: clang-14 cannot CAPTURE one
    CAPTURE(limit);
    log.set_limit(limit);
    CHECK(log.retry_after_ms(300) == blocker + 1000 - 300);
  }
  log.set_limit(0);
  CHECK(log.retry_after_ms(300) == 1000);
  CHECK_FALSE(log.try_acquire(300));
  log.set_limit(5);
  CHECK_FALSE(log.try_acquire(1099));
  CHECK(log.used(1100) == 4);  // 0 and 100 have left
  CHECK(log.try_acquire(1100));
  CHECK_FALSE(log.try_acquire(1100));
  CHECK(log.retry_after_ms(1100) == 100);
}

namespace {
// The log as it was before runs: one timestamp per grant. Slow but obviously right.
class ReferenceLog {
 public:
  ReferenceLog(int64_t limit, int64_t window) : limit_(limit), window_(window) {}
  bool try_acquire(int64_t now) {
    while (!q_.empty() && q_.front() <= now - window_) q_.pop_front();
    if (static_cast<int64_t>(q_.size()) >= limit_) return false;
    last_ = q_.empty() ? now : std::max(now, q_.back());
    q_.push_back(last_);
    return true;
  }
  int64_t retry_after_ms(int64_t now) const {
    if (limit_ <= 0) return window_;
    const size_t first = after(now - window_);
    const int64_t live = static_cast<int64_t>(q_.size() - first);
    if (live < limit_) return 0;
    return q_[first + static_cast<size_t>(live - limit_)] + window_ - now;
  }
  int64_t used(int64_t now) const { return static_cast<int64_t>(after(now) - after(now - window_)); }
  int64_t reset_in_ms(int64_t now) const {
    const size_t first = after(now - window_);
    return first == q_.size() ? 0 : q_[first] + window_ - now;
  }
  void refund(int64_t at) {
    auto it = std::upper_bound(q_.begin(), q_.end(), at);
    if (it != q_.begin() && *(it - 1) == at) q_.erase(it - 1);
  }
  size_t distinct() const {
    size_t n = 0;
    for (size_t i = 0; i < q_.size(); ++i) n += i == 0 || q_[i] != q_[i - 1];
    return n;
  }
  void set_limit(int64_t limit) { limit_ = limit; }
  int64_t last_grant_ms() const { return last_; }
  const std::deque<int64_t>& grants() const { return q_; }

 private:
  size_t after(int64_t bound) const {
    return static_cast<size_t>(std::upper_bound(q_.begin(), q_.end(), bound) - q_.begin());
  }
  std::deque<int64_t> q_;
  int64_t limit_;
  int64_t window_;
  int64_t last_ = 0;
};
}  // namespace

TEST_CASE("sliding log: randomized, every result matches a one-entry-per-grant log") {
  std::mt19937_64 rng(20240611);
  auto below = [&](int64_t n) { return static_cast<int64_t>(rng() % static_cast<uint64_t>(n)); };
  int64_t refused = 0, refunded = 0, stepped_back = 0;
  for (const int64_t window : {10, 100, 1000, 60'000}) {
    CAPTURE(window);
    int64_t limit = 1 + below(40);
    SlidingLog log(limit, window);
    ReferenceLog ref(limit, window);
    int64_t now = 1'000'000;
    for (int step = 0; step < 30'000; ++step) {
      CAPTURE(step);
      const int64_t r = below(100);
      if (r < 55) {
        const bool ok = ref.try_acquire(now);
        REQUIRE(log.try_acquire(now) == ok);
        if (ok) REQUIRE(log.last_grant_ms() == ref.last_grant_ms());
        refused += !ok;
      } else if (r < 65) {
        // Mostly the latest grant, as the pool does; sometimes one further back or unknown.
        const auto& q = ref.grants();
        int64_t at = ref.last_grant_ms();
        if (!q.empty() && below(3) == 0) at = q[static_cast<size_t>(below(static_cast<int64_t>(q.size())))];
        if (below(10) == 0) at = now - below(window * 2);
        ref.refund(at);
        log.refund(at);
        ++refunded;
      } else if (r < 68) {
        limit = below(80);  // includes 0, which refuses everything
        ref.set_limit(limit);
        log.set_limit(limit);
      } else if (r < 96) {
        now += below(4);
      } else if (r < 99) {
        now -= 1 + below(window + 5);
        ++stepped_back;
      } else {
        now += window + below(window);
      }
      REQUIRE(log.limit() == limit);
      REQUIRE(log.runs() == ref.distinct());
      // Probe around now too, so grants recorded ahead of a stepped-back clock are covered.
      for (const int64_t at : {now, now + below(window + 5), now - below(window + 5)}) {
        CAPTURE(at);
        REQUIRE(log.used(at) == ref.used(at));
        REQUIRE(log.retry_after_ms(at) == ref.retry_after_ms(at));
        REQUIRE(log.reset_in_ms(at) == ref.reset_in_ms(at));
      }
    }
  }
  CHECK(refused > 1000);
  CHECK(refunded > 1000);
  CHECK(stepped_back > 100);
}
