// SystemClock answers from a worker loop's cached time on the thread where a LoopWallClock
// is installed, and from the system clock everywhere else; the test offset applies to both.
#include <doctest/doctest.h>

#include <uv.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "base/clock.h"

namespace {

int64_t system_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

struct Loop {
  uv_loop_t loop;
  Loop() { uv_loop_init(&loop); }
  ~Loop() { uv_loop_close(&loop); }
  // Runs the loop until a timer of ms has fired: the loop's time moves on by at least ms.
  void run_for(uint64_t ms) {
    uv_timer_t timer;
    uv_timer_init(&loop, &timer);
    uv_timer_start(&timer, [](uv_timer_t*) {}, ms, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer), nullptr);
    uv_run(&loop, UV_RUN_DEFAULT);
  }
};

struct Installed {
  explicit Installed(keypool::LoopWallClock& c) { keypool::LoopWallClock::installed() = &c; }
  ~Installed() { keypool::LoopWallClock::installed() = nullptr; }
};

}  // namespace

TEST_CASE("clock: an installed loop clock keeps to the wall clock and moves with its loop") {
  Loop l;
  keypool::SystemClock clock;
  keypool::LoopWallClock loop_clock(&l.loop);
  Installed installed(loop_clock);

  const int64_t before = system_ms();
  const int64_t first = clock.now_ms();
  CHECK(std::llabs(first - before) < 50);

  // Between loop iterations the answer does not move: no clock read per question.
  uv_update_time(&l.loop);
  const int64_t same_iteration = clock.now_ms();
  CHECK(clock.now_ms() == same_iteration);

  l.run_for(30);
  const int64_t later = clock.now_ms();
  CHECK(later - same_iteration >= 30);
  CHECK(std::llabs(later - system_ms()) < 50);

  // The test offset still moves keypool's time.
  clock.set_offset_ms(3'600'000);
  CHECK(clock.now_ms() - later >= 3'600'000);
}

TEST_CASE("clock: other threads read the system clock") {
  Loop l;
  keypool::SystemClock clock;
  keypool::LoopWallClock loop_clock(&l.loop);
  Installed installed(loop_clock);
  // This thread's answer goes stale on purpose: its loop does not run during the sleep.
  const int64_t here = clock.now_ms();
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  CHECK(clock.now_ms() == here);
  int64_t elsewhere = 0;
  std::thread([&] { elsewhere = clock.now_ms(); }).join();
  CHECK(elsewhere - here >= 60);
  CHECK(std::llabs(elsewhere - system_ms()) < 20);
}
