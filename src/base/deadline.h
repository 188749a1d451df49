#pragma once
// MovingDeadline: a deadline that moves on every request (a connection's head, body, idle
// and pool timeouts) kept on one libuv timer without a timer-heap update per move. The
// timer stays armed for the earliest deadline set; when it fires before the current one,
// it re-arms for what is left. Times are uv_now() milliseconds of the timer's loop.
#include <uv.h>

#include <cstdint>

namespace keypool {

class MovingDeadline {
 public:
  // timer: initialised by the owner and outliving this; cb: its callback, which must call
  // reached() first.
  MovingDeadline(uv_timer_t* timer, uv_timer_cb cb) : timer_(timer), cb_(cb) {}

  void set_in(uint64_t ms) { set_at(uv_now(timer_->loop) + ms); }
  void set_at(uint64_t due_ms) {
    due_ms_ = due_ms;
    if (uv_is_active(reinterpret_cast<uv_handle_t*>(timer_)) && armed_ms_ <= due_ms) return;
    arm();
  }
  // No deadline: a timer still armed fires into reached() == false.
  void clear() { due_ms_ = 0; }

  // In the timer callback: true when the deadline has come (it is then cleared); false
  // when there is none or the timer was re-armed for the rest.
  bool reached() {
    if (due_ms_ == 0) return false;
    if (due_ms_ > uv_now(timer_->loop)) {
      arm();
      return false;
    }
    due_ms_ = 0;
    return true;
  }

 private:
  void arm() {
    armed_ms_ = due_ms_;
    uint64_t now = uv_now(timer_->loop);
    uv_timer_start(timer_, cb_, due_ms_ > now ? due_ms_ - now : 0, 0);
  }

  uv_timer_t* timer_;
  uv_timer_cb cb_;
  uint64_t due_ms_ = 0;    // 0: none
  uint64_t armed_ms_ = 0;  // when the libuv timer is due, while it is active
};

}  // namespace keypool
