#include "ratelimit/sliding_log.h"

#include <algorithm>
#include <bit>
#include <cassert>

namespace keypool::ratelimit {

namespace {
// Rings smaller than this are kept when they empty; larger ones are freed.
constexpr size_t kKeepCapacity = 64;
constexpr int64_t kMinCapacity = 4;
}  // namespace

SlidingLog::SlidingLog(int64_t limit, int64_t window_ms) : limit_(limit), window_ms_(window_ms) {
  assert(window_ms_ > 0);
}

bool SlidingLog::try_acquire(int64_t now_ms) {
  drop_expired(now_ms);
  if (total() >= limit_) return false;
  // A clock that stepped back must not break the ordering the binary searches rely on.
  const int64_t t = size_ > 0 ? std::max(now_ms, run(size_ - 1).t) : now_ms;
  record(t);
  last_grant_ms_ = t;
  return true;
}

int64_t SlidingLog::retry_after_ms(int64_t now_ms) const {
  if (limit_ <= 0) return window_ms_;  // nothing will ever be granted; say "a window"
  const size_t first = first_after(now_ms - window_ms_);
  const int64_t oldest = begin_of(first);
  const int64_t live = begin_of(size_) - oldest;
  if (live < limit_) return 0;
  // The grant that must leave before live drops below limit. With a steady limit live ==
  // limit and this is the oldest; after a lowered limit it is further in.
  const int64_t blocker = run(run_holding(oldest + (live - limit_), first)).t;
  return blocker + window_ms_ - now_ms;  // > 0: blocker is inside the window
}

int64_t SlidingLog::used(int64_t now_ms) const {
  const size_t first = first_after(now_ms - window_ms_);
  const size_t last = first_after(now_ms);  // excludes grants recorded after a clock step back
  return begin_of(last) - begin_of(first);
}

int64_t SlidingLog::reset_in_ms(int64_t now_ms) const {
  const size_t first = first_after(now_ms - window_ms_);
  if (first == size_) return 0;
  return run(first).t + window_ms_ - now_ms;
}

void SlidingLog::refund(int64_t at_ms) {
  const size_t after = first_after(at_ms);
  if (after == 0 || run(after - 1).t != at_ms) return;
  // Every later run's grants are renumbered down by one; a refund normally hits the newest
  // run, so this is usually a single decrement.
  const size_t i = after - 1;
  for (size_t j = i; j < size_; ++j) --run(j).end;
  if (run(i).end == begin_of(i)) erase(i);
}

size_t SlidingLog::first_after(int64_t bound) const {
  // The ends settle the common cases: nothing expired, or nothing recorded after a step back.
  if (size_ == 0 || run(0).t > bound) return 0;
  if (run(size_ - 1).t <= bound) return size_;
  // Galloping from the front: at a steady rate, each grant sees a run or two expire, so
  // the answer is near the start. A busy key's log holds a run per millisecond (60,000 of
  // them, about a megabyte), and a plain binary search touched a cold cache line at each
  // of its 16 steps on every lease; this touches one or two.
  size_t lo = 1, hi = 1;
  for (size_t step = 1; hi < size_ - 1 && run(hi).t <= bound; step *= 2) {
    lo = hi + 1;
    hi = std::min(size_ - 1, hi + step);
  }
  // The answer is in [lo, hi]: run(hi) is after the bound (or hi is the last run, which is).
  while (lo < hi) {
    const size_t mid = lo + (hi - lo) / 2;
    if (run(mid).t > bound) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

size_t SlidingLog::run_holding(int64_t n, size_t from) const {
  assert(n >= begin_of(from) && n < begin_of(size_));
  if (run(from).end > n) return from;  // steady limit: the blocker is the oldest live run
  size_t lo = from + 1, hi = size_ - 1;
  while (lo < hi) {
    const size_t mid = lo + (hi - lo) / 2;
    if (run(mid).end > n) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

void SlidingLog::drop_expired(int64_t now_ms) {
  const size_t gone = first_after(now_ms - window_ms_);
  if (gone == 0) return;
  first_grant_ = begin_of(gone);
  size_ -= gone;
  head_ = size_ == 0 ? 0 : (head_ + gone) & (ring_.size() - 1);
  if (size_ == 0 && ring_.size() > kKeepCapacity) ring_ = {};
}

void SlidingLog::record(int64_t t) {
  if (size_ > 0 && run(size_ - 1).t == t) {
    ++run(size_ - 1).end;
    return;
  }
  if (size_ == ring_.size()) grow();
  const int64_t n = begin_of(size_);
  ++size_;
  run(size_ - 1) = Run{t, n + 1};
}

void SlidingLog::erase(size_t i) {
  for (size_t j = i; j + 1 < size_; ++j) run(j) = run(j + 1);
  --size_;
}

void SlidingLog::grow() {
  // A low limit never needs more than `limit` runs; start no bigger than that.
  const size_t first = std::bit_ceil(static_cast<size_t>(std::clamp<int64_t>(limit_, 1, kMinCapacity)));
  const size_t cap = ring_.empty() ? first : ring_.size() * 2;
  std::vector<Run> next(cap);
  for (size_t i = 0; i < size_; ++i) next[i] = run(i);
  ring_ = std::move(next);
  head_ = 0;
}

}  // namespace keypool::ratelimit
