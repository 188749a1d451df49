#pragma once
// Recorder: audit rows and usage counters gathered on the event loops and written by the
// store thread in batches (flush() is called every second and at shutdown), so no request
// ever waits for SQLite. After kill -9 at most the last second of these is lost; admin
// changes do not go through here: they are committed before they are acknowledged.
//
// GET /key hand-outs are audited as counts: one `key.handout` row per (caller, key,
// minute), with how many there were, per feature, and when the last happened. Each flush
// adds its counts to the minute's row (Store::add_handouts). A row per hand-out would cost
// the store thread more than serving the request and, at full speed, grow the audit table
// by billions of rows a day; a row per second still grew it by 86,400 a day per caller.
//
// The audit table is also pruned here: rows older than audit.retention_days are deleted by
// the store thread in bounded batches, so neither a loop nor other store jobs wait long.
#include <algorithm>
#include <map>
#include <string>
#include <string_view>
#include <tuple>
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
  // token_id 0: the admin token.
  void handout(int64_t token_id, int64_t key_id, std::string_view feature, std::string_view tier, int64_t now_ms) {
    std::lock_guard<std::mutex> lock(mu_);
    auto& h = handouts_[HandoutKey{token_id, key_id, now_ms - now_ms % kMinuteMs}];
    if (h.tier != tier) h.tier.assign(tier);
    auto f = h.features.find(feature);
    if (f == h.features.end()) f = h.features.emplace(std::string(feature), 0).first;
    f->second++;
    h.count++;
    h.last_at = std::max(h.last_at, now_ms);
  }
  // Hands everything gathered so far to the store thread as one job.
  void flush() {
    std::vector<store::AuditRow> audit;
    std::vector<store::UsageDelta> usage;
    std::vector<store::HandoutCount> handouts;
    {
      std::lock_guard<std::mutex> lock(mu_);
      audit.swap(audit_);
      for (auto& [k, h] : handouts_)
        handouts.push_back(store::HandoutCount{k.token_id == 0 ? "admin" : "token:" + std::to_string(k.token_id),
                                               k.key_id, k.minute_at, std::move(h.tier), std::move(h.features),
                                               h.count, h.last_at});
      handouts_.clear();
      for (auto& [_, d] : usage_) usage.push_back(std::move(d));
      usage_.clear();
    }
    if (audit.empty() && usage.empty() && handouts.empty()) return;
    store_.post([audit = std::move(audit), usage = std::move(usage), handouts = std::move(handouts)](store::Store& s) {
      if (!audit.empty()) (void)s.append_audit(audit);
      if (!handouts.empty()) (void)s.add_handouts(handouts);
      if (!usage.empty()) (void)s.add_usage(usage);
    });
  }
  // Deletes audit rows older than retention_days (0: none), one batch per store job; a full
  // batch queues the next one behind whatever the loops posted meanwhile.
  void prune_audit(int64_t now_ms, int64_t retention_days) {
    if (retention_days <= 0) return;
    post_prune(store_, now_ms - retention_days * 86'400'000);
  }

 private:
  static constexpr int64_t kMinuteMs = 60'000;
  static constexpr int64_t kPruneBatch = 10'000;

  static void post_prune(store::StoreThread& st, int64_t before_ms) {
    st.post([&st, before_ms](store::Store& s) {
      auto n = s.prune_audit(before_ms, kPruneBatch);
      if (n && *n == kPruneBatch) post_prune(st, before_ms);
    });
  }

  struct HandoutKey {
    int64_t token_id, key_id, minute_at;
    auto operator<=>(const HandoutKey&) const = default;
  };
  struct Handouts {
    std::string tier;
    std::map<std::string, int64_t, std::less<>> features;
    int64_t count = 0, last_at = 0;
  };

  store::StoreThread& store_;
  std::mutex mu_;
  std::vector<store::AuditRow> audit_;
  std::map<std::pair<int64_t, int64_t>, store::UsageDelta> usage_;
  std::map<HandoutKey, Handouts> handouts_;
};

}  // namespace keypool::state
