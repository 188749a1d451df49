#pragma once
// StoreThread: the one thread that owns the Store once keypool is running. Event loops
// post jobs (usage flushes, audit rows, admin changes) and go on; SQLite's fsyncs happen
// here, never on a loop. Jobs run one at a time in the order they were posted. A job that
// must answer a loop carries its own way back (e.g. a uv_async_t), so this room stays
// free of libuv.
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "store/store.h"

namespace keypool::store {

class StoreThread {
 public:
  using Job = std::function<void(Store&)>;

  explicit StoreThread(std::unique_ptr<Store> store);
  ~StoreThread();  // stop()
  StoreThread(const StoreThread&) = delete;
  StoreThread& operator=(const StoreThread&) = delete;

  // Queues a job. After stop() the job is dropped (and a warning logged).
  void post(Job job);
  // Runs a job on the store thread and blocks until it has run. For start-up and shutdown
  // code only; never call it from an event loop. Returns false if the thread was stopped.
  bool post_and_wait(Job job);
  // Runs every job already queued, then joins. Idempotent.
  void stop();

 private:
  void run();

  std::unique_ptr<Store> store_;  // touched only by thread_ while it runs
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;  // guarded by mu_
  bool stopping_ = false;  // guarded by mu_
  std::thread thread_;     // last: started once everything above exists
};

}  // namespace keypool::store
