#pragma once
// Recorder: audit rows and usage counters gathered on the event loops and written by the
// store thread in batches (flush() is called every second and at shutdown), so no request
// ever waits for SQLite. After kill -9 at most the last second of these is lost; admin
// changes do not go through here: they are committed before they are acknowledged.
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "store/store.h"
#include "store/store_thread.h"

namespace keypool::state {

class Recorder {
 public:
  explicit Recorder(store::StoreThread& st) : store_(st) {}
  void audit(store::AuditRow row) {
    std::lock_guard<std::mutex> lock(mu_);
    audit_.push_back(std::move(row));
  }
  void usage(const store::UsageDelta& d) {
    std::lock_guard<std::mutex> lock(mu_);
    auto& u = usage_[{d.key_id, d.token_id}];
    u.key_id = d.key_id;
    u.token_id = d.token_id;
    u.requests += d.requests;
    u.errors += d.errors;
    u.input_tokens += d.input_tokens;
    u.output_tokens += d.output_tokens;
    u.cost += d.cost;
    if (d.last_used_at > u.last_used_at) u.last_used_at = d.last_used_at;
    if (!d.last_error.empty()) u.last_error = d.last_error;
  }
  // Hands everything gathered so far to the store thread as one job.
  void flush() {
    std::vector<store::AuditRow> audit;
    std::vector<store::UsageDelta> usage;
    {
      std::lock_guard<std::mutex> lock(mu_);
      audit.swap(audit_);
      for (auto& [_, d] : usage_) usage.push_back(std::move(d));
      usage_.clear();
    }
    if (audit.empty() && usage.empty()) return;
    store_.post([audit = std::move(audit), usage = std::move(usage)](store::Store& s) {
      if (!audit.empty()) (void)s.append_audit(audit);
      if (!usage.empty()) (void)s.add_usage(usage);
    });
  }

 private:
  store::StoreThread& store_;
  std::mutex mu_;
  std::vector<store::AuditRow> audit_;
  std::map<std::pair<int64_t, int64_t>, store::UsageDelta> usage_;
};

}  // namespace keypool::state
