#include "store/store_thread.h"

#include <cassert>
#include <exception>
#include <future>

#include "telemetry/log.h"

namespace keypool::store {

StoreThread::StoreThread(std::unique_ptr<Store> store)
    : store_(std::move(store)), thread_([this] { run(); }) {
  assert(store_);
}

StoreThread::~StoreThread() { stop(); }

void StoreThread::post(Job job) {
  {
    std::lock_guard lock(mu_);
    if (!stopping_) {
      queue_.push_back(std::move(job));
      cv_.notify_one();
      return;
    }
  }
  log::warn("store job dropped: store thread stopped");
}

bool StoreThread::post_and_wait(Job job) {
  std::promise<void> done;
  std::future<void> ran = done.get_future();
  {
    std::lock_guard lock(mu_);
    if (stopping_) return false;
    // Released on every path, or a throwing job would leave the caller blocked forever.
    queue_.push_back([&job, &done](Store& s) {
      try {
        job(s);
      } catch (...) {
        done.set_value();
        throw;
      }
      done.set_value();
    });
    cv_.notify_one();
  }
  ran.wait();
  return true;
}

void StoreThread::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

// Takes one job at a time and runs it outside the lock, so posting never waits on SQLite.
void StoreThread::run() {
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything queued has run
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    // A throwing job (bad_alloc, a JSON error) must not take the store thread down with
    // it; jobs are meant to report failures as values.
    try {
      job(*store_);
    } catch (const std::exception& e) {
      log::error("store job threw", {{"error", e.what()}});
    } catch (...) {
      log::error("store job threw");
    }
  }
}

}  // namespace keypool::store
