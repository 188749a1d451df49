#include "ratelimit/sliding_log.h"

#include <algorithm>
#include <cassert>

namespace keypool::ratelimit {

namespace {
// Rings smaller than this are kept when they empty; larger ones are freed.
constexpr size_t kKeepCapacity = 64;
constexpr size_t kMinCapacity = 4;
}  // namespace

SlidingLog::SlidingLog(int64_t limit, int64_t window_ms) : limit_(limit), window_ms_(window_ms) {
  assert(window_ms_ > 0);
}

bool SlidingLog::try_acquire(int64_t now_ms) {
  drop_expired(now_ms);
  if (static_cast<int64_t>(count_) >= limit_) return false;
  // A clock that stepped back must not break the ordering the binary searches rely on.
  const int64_t t = count_ > 0 ? std::max(now_ms, at(count_ - 1)) : now_ms;
  push(t);
  last_grant_ms_ = t;
  return true;
}

int64_t SlidingLog::retry_after_ms(int64_t now_ms) const {
  if (limit_ <= 0) return window_ms_;  // nothing will ever be granted; say "a window"
  const size_t first = first_after(now_ms - window_ms_);
  const int64_t live = static_cast<int64_t>(count_ - first);
  if (live < limit_) return 0;
  // The grant that must leave before live drops below limit. With a steady limit live ==
  // limit and this is the oldest; after a lowered limit it is further in.
  const int64_t blocker = at(first + static_cast<size_t>(live - limit_));
  return blocker + window_ms_ - now_ms;  // > 0: blocker is inside the window
}

int64_t SlidingLog::used(int64_t now_ms) const {
  const size_t first = first_after(now_ms - window_ms_);
  const size_t last = first_after(now_ms);  // excludes grants recorded after a clock step back
  return static_cast<int64_t>(last - first);
}

int64_t SlidingLog::reset_in_ms(int64_t now_ms) const {
  const size_t first = first_after(now_ms - window_ms_);
  if (first == count_) return 0;
  return at(first) + window_ms_ - now_ms;
}

void SlidingLog::refund(int64_t at_ms) {
  // Search from the newest end: a refund normally follows its grant closely.
  size_t i = count_;
  while (i > 0 && at(i - 1) > at_ms) --i;
  if (i == 0 || at(i - 1) != at_ms) return;
  for (size_t j = i - 1; j + 1 < count_; ++j) at(j) = at(j + 1);
  --count_;
}

size_t SlidingLog::first_after(int64_t bound) const {
  size_t lo = 0, hi = count_;
  while (lo < hi) {
    const size_t mid = lo + (hi - lo) / 2;
    if (at(mid) > bound) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

void SlidingLog::drop_expired(int64_t now_ms) {
  const size_t gone = first_after(now_ms - window_ms_);
  if (gone == 0) return;
  count_ -= gone;
  head_ = count_ == 0 ? 0 : (head_ + gone) % ring_.size();
  if (count_ == 0 && ring_.size() > kKeepCapacity) ring_ = {};
}

void SlidingLog::push(int64_t t) {
  if (count_ == ring_.size()) grow();
  ring_[(head_ + count_) % ring_.size()] = t;
  ++count_;
}

void SlidingLog::grow() {
  // Double, but never past what the limit can ever need.
  const size_t cap_by_limit = static_cast<size_t>(std::max<int64_t>(limit_, 1));
  size_t cap = std::max(ring_.size() * 2, kMinCapacity);
  cap = std::max(std::min(cap, cap_by_limit), count_ + 1);
  std::vector<int64_t> next(cap);
  for (size_t i = 0; i < count_; ++i) next[i] = at(i);
  ring_ = std::move(next);
  head_ = 0;
}

}  // namespace keypool::ratelimit
