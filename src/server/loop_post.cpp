#include "server/loop_post.h"

namespace keypool::server {

LoopPost::LoopPost(uv_loop_t* loop) {
  uv_async_init(loop, &async_, &LoopPost::on_async);
  async_.data = this;
}

void LoopPost::post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;  // the loop is shutting down; the result has no one to go to
    jobs_.push_back(std::move(fn));
  }
  uv_async_send(&async_);
}

void LoopPost::on_async(uv_async_t* h) {
  auto* self = static_cast<LoopPost*>(h->data);
  std::vector<std::function<void()>> jobs;
  {
    std::lock_guard<std::mutex> lock(self->mu_);
    jobs.swap(self->jobs_);
  }
  for (auto& job : jobs) job();
}

void LoopPost::close(std::function<void()> on_closed) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
  }
  on_async(&async_);  // run what is already queued
  on_closed_ = std::move(on_closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&async_), [](uv_handle_t* h) {
    auto* self = static_cast<LoopPost*>(h->data);
    if (self->on_closed_) self->on_closed_();
  });
}

}  // namespace keypool::server
