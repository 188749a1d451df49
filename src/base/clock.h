#pragma once
// Time is injected so rate windows, cooldowns and expiry are tested without sleeping.
#include <atomic>
#include <uv.h>

#include <chrono>
#include <climits>
#include <cstdint>

namespace keypool {

class Clock {
 public:
  virtual ~Clock() = default;
  // Milliseconds since the Unix epoch.
  virtual int64_t now_ms() const = 0;
  int64_t now_s() const { return now_ms() / 1000; }
};

// The wall clock as a worker's event loop sees it: libuv's loop time (milliseconds,
// monotonic, read once per loop iteration, after the poll) plus an offset to the wall
// clock, taken again every second so that a stepped system clock is followed. A proxied
// request asks for the time several times (token expiry, key windows, usage); this answers
// them without a clock read each, as nginx does with its cached time.
class LoopWallClock {
 public:
  explicit LoopWallClock(const uv_loop_t* loop) : loop_(loop) {}
  int64_t now_ms() {
    const auto loop_ms = static_cast<int64_t>(uv_now(loop_));
    if (loop_ms - calibrated_at_ms_ >= kCalibrateEveryMs) calibrate(loop_ms);
    return loop_ms + wall_minus_loop_ms_;
  }

  // While an instance is installed on a thread, SystemClock answers from it there.
  static LoopWallClock*& installed() {
    thread_local LoopWallClock* clock = nullptr;
    return clock;
  }

 private:
  static constexpr int64_t kCalibrateEveryMs = 1000;
  void calibrate(int64_t loop_ms) {
    using namespace std::chrono;
    wall_minus_loop_ms_ = duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count() - loop_ms;
    calibrated_at_ms_ = loop_ms;
  }

  const uv_loop_t* loop_;
  int64_t calibrated_at_ms_ = INT64_MIN / 2;  // calibrates on first use
  int64_t wall_minus_loop_ms_ = 0;
};

class SystemClock final : public Clock {
 public:
  // offset_ms lets an integration test move keypool's time forward (KEYPOOL_TEST_CLOCK_FILE).
  int64_t now_ms() const override {
    return wall_ms() + offset_ms_.load(std::memory_order_relaxed);
  }
  void set_offset_ms(int64_t off) { offset_ms_.store(off, std::memory_order_relaxed); }

 private:
  static int64_t wall_ms() {
    if (LoopWallClock* loop_clock = LoopWallClock::installed()) return loop_clock->now_ms();
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
  }

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
