// MovingDeadline on a real libuv loop: the timer fires early, re-arms for the rest, and
// reports the deadline exactly once; a cleared deadline fires into nothing.
#include <doctest/doctest.h>

#include <uv.h>

#include "base/deadline.h"

namespace {

struct Fixture {
  uv_loop_t loop;
  uv_timer_t timer;
  keypool::MovingDeadline deadline{&timer, &Fixture::on_timer};
  int firings = 0;
  int reached = 0;
  uint64_t reached_at = 0;

  Fixture() {
    uv_loop_init(&loop);
    uv_timer_init(&loop, &timer);
    timer.data = this;
  }
  ~Fixture() {
    uv_close(reinterpret_cast<uv_handle_t*>(&timer), nullptr);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
  }
  static void on_timer(uv_timer_t* t) {
    auto* f = static_cast<Fixture*>(t->data);
    f->firings++;
    if (!f->deadline.reached()) return;
    f->reached++;
    f->reached_at = uv_now(&f->loop);
  }
};

}  // namespace

TEST_CASE("MovingDeadline: a later deadline re-arms when the early timer fires") {
  Fixture f;
  uint64_t start = uv_now(&f.loop);
  f.deadline.set_in(30);
  f.deadline.set_in(80);  // moved later: the armed timer is kept
  uv_run(&f.loop, UV_RUN_DEFAULT);  // returns once the timer is inactive
  CHECK(f.firings == 2);
  CHECK(f.reached == 1);
  CHECK(f.reached_at >= start + 80);
}

TEST_CASE("MovingDeadline: an earlier deadline re-arms at once; a cleared one fires into nothing") {
  Fixture f;
  uint64_t start = uv_now(&f.loop);
  f.deadline.set_in(5000);
  f.deadline.set_in(20);  // moved earlier: the timer must move too
  uv_run(&f.loop, UV_RUN_DEFAULT);
  CHECK(f.firings == 1);
  CHECK(f.reached == 1);
  CHECK(f.reached_at >= start + 20);
  CHECK(f.reached_at < start + 5000);

  f.deadline.set_in(20);
  f.deadline.clear();
  uv_run(&f.loop, UV_RUN_DEFAULT);
  CHECK(f.firings == 2);
  CHECK(f.reached == 1);
}
