#pragma once
// LoopPost: run a function on a given uv loop from any thread (the store thread posts its
// results back this way). Jobs run in order on the loop thread.
#include <uv.h>

#include <functional>
#include <mutex>
#include <vector>

namespace keypool::server {

class LoopPost {
 public:
  explicit LoopPost(uv_loop_t* loop);
  LoopPost(const LoopPost&) = delete;
  LoopPost& operator=(const LoopPost&) = delete;
  // Must be closed on the loop thread before the loop stops; owner keeps it alive until
  // the close callback (the destructor asserts nothing is pending).
  void post(std::function<void()> fn);
  void close(std::function<void()> on_closed);
  ~LoopPost() = default;

 private:
  static void on_async(uv_async_t* h);
  uv_async_t async_;
  std::mutex mu_;
  std::vector<std::function<void()>> jobs_;
  bool closed_ = false;
  std::function<void()> on_closed_;
};

}  // namespace keypool::server
