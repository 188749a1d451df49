#include "server/timer.h"

#include <memory>

namespace keypool::server {
namespace {

struct OneShot {
  uv_timer_t timer;
  std::function<void()> fn;
};

}  // namespace

void run_after(uv_loop_t* loop, int64_t ms, std::function<void()> fn) {
  auto shot = std::make_unique<OneShot>();
  shot->fn = std::move(fn);
  uv_timer_init(loop, &shot->timer);
  OneShot* raw = shot.release();  // adopted back in the close callback
  raw->timer.data = raw;
  uv_timer_start(&raw->timer, [](uv_timer_t* t) {
    auto* s = static_cast<OneShot*>(t->data);
    auto fn = std::move(s->fn);
    uv_close(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) {
      std::unique_ptr<OneShot> owned(static_cast<OneShot*>(h->data));
    });
    fn();
  }, static_cast<uint64_t>(ms < 0 ? 0 : ms), 0);
}

}  // namespace keypool::server
