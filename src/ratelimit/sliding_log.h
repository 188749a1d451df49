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

// A log of the in-window grant times, oldest first. Times are whole milliseconds, so grants
// sharing a millisecond are kept as one run (time, how many): a hot key's burst costs one
// entry, not one per grant.
//
// Spans are half-open: a grant at t stops counting at exactly t + window_ms, so a grant at t
// and the (limit+1)-th grant at t + window_ms are both allowed; at t + window_ms - 1 the
// latter is refused.
//
// Memory: bounded by the distinct milliseconds in the window (at most window_ms runs of 16
// bytes), whatever the budget, so a 1,000,000 rpm key costs at most about 1 MB rather than
// 8 MB. The ring starts empty, doubles as runs arrive, and is released once every grant has
// left the window, so an idle key costs a few words.
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

  // Runs held (distinct grant times still stored). Exposed so tests can pin the memory bound,
  // which no other public result reveals.
  size_t runs() const { return size_; }

 private:
  // Grants are numbered in the order they were recorded; a run keeps the number one past
  // its last grant rather than its own count. Counts then come from subtraction, so the
  // live total and the grant at any position are found by binary search even when queries
  // (which cannot drop) see a long expired prefix.
  struct Run {
    int64_t t;
    int64_t end;
  };

  // The ring's capacity is a power of two so indexing is a mask, not a division.
  const Run& run(size_t i) const { return ring_[(head_ + i) & (ring_.size() - 1)]; }
  Run& run(size_t i) { return ring_[(head_ + i) & (ring_.size() - 1)]; }
  // Number of the first grant in run i; i == size_ gives the next grant's number.
  int64_t begin_of(size_t i) const { return i == 0 ? first_grant_ : run(i - 1).end; }
  int64_t total() const { return begin_of(size_) - first_grant_; }
  // Index of the first run with time > bound (times are non-decreasing).
  size_t first_after(int64_t bound) const;
  // Index of the run holding grant number n, searching from run `from` on.
  size_t run_holding(int64_t n, size_t from) const;
  void drop_expired(int64_t now_ms);
  void record(int64_t t);
  void erase(size_t i);
  void grow();

  std::vector<Run> ring_;    // capacity grows lazily; see class comment
  size_t head_ = 0;          // ring slot of the oldest run
  size_t size_ = 0;          // runs stored, oldest first, none empty
  int64_t first_grant_ = 0;  // number of the oldest stored grant
  int64_t limit_;
  int64_t window_ms_;
  int64_t last_grant_ms_ = 0;
};

}  // namespace keypool::ratelimit
