#pragma once
// A libuv loop for the Redis tests: run until a condition holds (bounded), and on
// destruction check that the loop closes with no live handle.
#include <doctest/doctest.h>
#include <uv.h>

#include <chrono>
#include <functional>

namespace keypool::redis_test {

class TestLoop {
 public:
  TestLoop() { uv_loop_init(&loop_); }
  ~TestLoop() {
    uv_run(&loop_, UV_RUN_DEFAULT);  // lets closing handles finish
    CHECK(uv_loop_close(&loop_) == 0);
  }
  uv_loop_t* get() { return &loop_; }

  // Runs the loop until done() (true) or timeout_ms passed (false). A ticking timer keeps
  // the loop from blocking with nothing to do, so done() is checked at least every 2 ms.
  bool run_until(const std::function<bool()>& done, int timeout_ms = 10000) {
    uv_timer_t tick;
    uv_timer_init(&loop_, &tick);
    uv_timer_start(&tick, [](uv_timer_t*) {}, 2, 2);
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    bool ok = true;
    while (!done()) {
      if (std::chrono::steady_clock::now() > until) {
        ok = false;
        break;
      }
      uv_run(&loop_, UV_RUN_ONCE);
    }
    uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
    uv_run(&loop_, UV_RUN_NOWAIT);
    return ok;
  }
  void run_for(int ms) {
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    run_until([&] { return std::chrono::steady_clock::now() >= until; }, ms + 1000);
  }

 private:
  uv_loop_t loop_;
};

}  // namespace keypool::redis_test
