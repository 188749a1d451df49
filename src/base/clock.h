#pragma once
// Time is injected so rate windows, cooldowns and expiry are tested without sleeping.
#include <atomic>
#include <chrono>
#include <cstdint>

namespace keypool {

class Clock {
 public:
  virtual ~Clock() = default;
  // Milliseconds since the Unix epoch.
  virtual int64_t now_ms() const = 0;
  int64_t now_s() const { return now_ms() / 1000; }
};

class SystemClock final : public Clock {
 public:
  // offset_ms lets an integration test move keypool's time forward (KEYPOOL_TEST_CLOCK_FILE).
  int64_t now_ms() const override {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count() +
           offset_ms_.load(std::memory_order_relaxed);
  }
  void set_offset_ms(int64_t off) { offset_ms_.store(off, std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> offset_ms_{0};
};

// A clock that only moves when told to; for unit tests.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(int64_t start_ms = 1'700'000'000'000) : now_(start_ms) {}
  int64_t now_ms() const override { return now_.load(); }
  void advance_ms(int64_t d) { now_ += d; }
  void set_ms(int64_t t) { now_ = t; }

 private:
  std::atomic<int64_t> now_;
};

}  // namespace keypool
