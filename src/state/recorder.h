#pragma once
// Recorder: audit rows and usage counters gathered on the event loops and written by the
// store thread in batches (flush() is called every second and at shutdown), so no request
// ever waits for SQLite. After kill -9 at most the last second of these is lost; admin
// changes do not go through here: they are committed before they are acknowledged.
//
// GET /key hand-outs are audited as counts: one `key.handout` row per (caller, key,
// feature) and flush, with how many there were and when the first and last happened. A row
// per hand-out would cost the store thread more than serving the request and, at full
// speed, grow the audit table by billions of rows a day.
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
    auto it = handouts_.find(BasicHandoutKey<std::string_view>{token_id, key_id, feature});
    if (it == handouts_.end())
      it = handouts_.emplace(HandoutKey{token_id, key_id, std::string(feature)}, Handouts{std::string(tier), 0, now_ms, now_ms})
               .first;
    it->second.count++;
    it->second.last_at = std::max(it->second.last_at, now_ms);
  }
  // Hands everything gathered so far to the store thread as one job.
  void flush() {
    std::vector<store::AuditRow> audit;
    std::vector<store::UsageDelta> usage;
    {
      std::lock_guard<std::mutex> lock(mu_);
      audit.swap(audit_);
      for (auto& [k, h] : handouts_) audit.push_back(handout_row(k, h));
      handouts_.clear();
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
  // Heterogeneous lookup: a hand-out finds its counter without building a key string.
  template <class S>
  struct BasicHandoutKey {
    int64_t token_id, key_id;
    S feature;
  };
  using HandoutKey = BasicHandoutKey<std::string>;
  struct HandoutLess {
    using is_transparent = void;
    template <class K>
    static std::tuple<int64_t, int64_t, std::string_view> view(const K& k) {
      return {k.token_id, k.key_id, k.feature};
    }
    template <class A, class B>
    bool operator()(const A& a, const B& b) const {
      return view(a) < view(b);
    }
  };
  struct Handouts {
    std::string tier;
    int64_t count, first_at, last_at;
  };

  // Feature and tier names are restricted to [A-Za-z0-9_.-] when tiers are created, so
  // they need no JSON escaping.
  static store::AuditRow handout_row(const HandoutKey& k, const Handouts& h) {
    return store::AuditRow{0,
                           h.first_at,
                           k.token_id == 0 ? "admin" : "token:" + std::to_string(k.token_id),
                           "key.handout",
                           std::to_string(k.key_id),
                           "{\"feature\":\"" + k.feature + "\",\"tier\":\"" + h.tier +
                               "\",\"count\":" + std::to_string(h.count) +
                               ",\"last_at\":" + std::to_string(h.last_at) + "}"};
  }

  store::StoreThread& store_;
  std::mutex mu_;
  std::vector<store::AuditRow> audit_;
  std::map<std::pair<int64_t, int64_t>, store::UsageDelta> usage_;
  std::map<HandoutKey, Handouts, HandoutLess> handouts_;
};

}  // namespace keypool::state
