#pragma once
// ratelimit: the exact per-(key, feature) window. A SlidingLog promises that no span of
// window_ms ever holds more than `limit` grants, while still allowing a burst of `limit`
// at once. GCRA with a burst of `limit`, fixed windows and sliding counters all let up to
// twice the budget through at some span, so they are not used (see DESIGN.md).
//
// Pure and single-threaded: the caller (pool) serialises access. Time is passed in, never
// read, so tests need no clock and no sleeps.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace keypool::ratelimit {

// A log of the in-window grant times, oldest first, kept in a ring.
//
// Spans are half-open: a grant at t stops counting at exactly t + window_ms, so a grant at t
// and the (limit+1)-th grant at t + window_ms are both allowed; at t + window_ms - 1 the
// latter is refused.
//
// Memory: the ring starts empty and doubles as grants arrive (capped at `limit`), and is
// released once every entry has left the window, so an idle key with a 100000 rpm budget
// costs a few words rather than 800 KB.
class SlidingLog {
 public:
  explicit SlidingLog(int64_t limit, int64_t window_ms = 60'000);

  // Records a grant at now_ms if fewer than `limit` grants lie in (now - window, now].
  bool try_acquire(int64_t now_ms);
  // 0 when a grant is possible now; otherwise the ms until enough grants leave the window.
  // With a steady limit that is oldest + window - now.
  int64_t retry_after_ms(int64_t now_ms) const;
  // Grants within (now - window, now].
  int64_t used(int64_t now_ms) const;
  int64_t limit() const { return limit_; }
  int64_t window_ms() const { return window_ms_; }
  // ms until the oldest in-window grant leaves (0 if none).
  int64_t reset_in_ms(int64_t now_ms) const;
  // Undoes the most recent grant recorded at at_ms (a leased key that was never used).
  // Does nothing if that grant has already left the window.
  void refund(int64_t at_ms);

  // Time the last successful try_acquire was recorded at. Equal to its now_ms unless the
  // clock stepped backwards, in which case the grant is recorded at the newest earlier
  // time to keep the log ordered (erring on the strict side). Pass this to refund().
  int64_t last_grant_ms() const { return last_grant_ms_; }
  // A tier's budget changed. History is kept: while more than the new limit are in the
  // window, grants wait until enough of them leave.
  void set_limit(int64_t limit) { limit_ = limit; }

 private:
  int64_t at(size_t i) const { return ring_[(head_ + i) % ring_.size()]; }
  int64_t& at(size_t i) { return ring_[(head_ + i) % ring_.size()]; }
  // Index of the first entry with time > bound (entries are non-decreasing).
  size_t first_after(int64_t bound) const;
  void drop_expired(int64_t now_ms);
  void push(int64_t t);
  void grow();

  std::vector<int64_t> ring_;  // capacity grows lazily; see class comment
  size_t head_ = 0;            // index of the oldest entry
  size_t count_ = 0;           // entries in the ring, oldest first
  int64_t limit_;
  int64_t window_ms_;
  int64_t last_grant_ms_ = 0;
};

}  // namespace keypool::ratelimit
