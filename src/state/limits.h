#pragma once
// Limits that sit beside the key pool: per-token rpm caps and 429-storm detection.
#include <algorithm>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "ratelimit/sliding_log.h"

namespace keypool::state {

// Per-team-token requests-per-minute cap, enforced before a key is picked.
class TokenLimits {
 public:
  // 0 when granted (or no cap), else milliseconds until a slot opens.
  int64_t acquire(int64_t token_id, int64_t rpm, int64_t now_ms) {
    if (rpm <= 0) return 0;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = logs_.find(token_id);
    if (it == logs_.end()) it = logs_.emplace(token_id, ratelimit::SlidingLog(rpm)).first;
    else if (it->second.limit() != rpm) it->second.set_limit(rpm);
    if (it->second.try_acquire(now_ms)) return 0;
    return std::max<int64_t>(1, it->second.retry_after_ms(now_ms));
  }

 private:
  std::mutex mu_;
  std::unordered_map<int64_t, ratelimit::SlidingLog> logs_;
};

// When most keys of a pool get 429 within a few seconds, the limit is on keypool's address,
// not on the keys: cooling every key for a minute would take the whole pool down for
// nothing. A storm lasts kHoldMs after it is detected; meanwhile 429s are passed through
// without failover and keys cool only briefly.
class StormDetector {
 public:
  static constexpr int64_t kWindowMs = 5'000;
  static constexpr int64_t kHoldMs = 5'000;
  static constexpr size_t kMinKeys = 3;

  // Records a 429 of key_id in pool `scope`; returns true when this makes (or continues) a storm.
  // hit_keys (optional) receives every key with a 429 in the window while a storm is on.
  bool note_429(const std::string& scope, int64_t key_id, int64_t now_ms, size_t pool_keys,
                std::vector<int64_t>* hit_keys = nullptr) {
    std::lock_guard<std::mutex> lock(mu_);
    auto& s = scopes_[scope];
    s.hits.push_back({now_ms, key_id});
    while (!s.hits.empty() && s.hits.front().first <= now_ms - kWindowMs) s.hits.pop_front();
    std::set<int64_t> distinct;
    for (const auto& h : s.hits) distinct.insert(h.second);
    if (distinct.size() >= kMinKeys && distinct.size() * 2 >= std::max<size_t>(pool_keys, 1))
      s.until_ms = now_ms + kHoldMs;
    if (hit_keys && now_ms < s.until_ms) hit_keys->assign(distinct.begin(), distinct.end());
    return now_ms < s.until_ms;
  }
  bool active(const std::string& scope, int64_t now_ms) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = scopes_.find(scope);
    return it != scopes_.end() && now_ms < it->second.until_ms;
  }

 private:
  struct Scope {
    std::deque<std::pair<int64_t, int64_t>> hits;  // (time, key id)
    int64_t until_ms = 0;
  };
  std::mutex mu_;
  std::map<std::string, Scope> scopes_;
};

// Blast radius: keypool suspends keys on the upstream's word, and a wrong word (a provider
// answering 401 to a bad request, a rule that matches too much) must not take a whole pool
// out. Within any kWindowMs, at most half of a pool's keys may be suspended; past that the
// answer goes to the client as it came and the key stays in. One scope per (service, tier).
class SuspensionGuard {
 public:
  static constexpr int64_t kWindowMs = 60'000;

  // Counts a suspension of a key of `scope` (pool_keys keys) and returns true when it is
  // allowed; false (counted as capped) when half the pool was suspended in the window.
  bool allow(const std::string& scope, int64_t now_ms, size_t pool_keys) {
    std::lock_guard<std::mutex> lock(mu_);
    auto& s = scopes_[scope];
    while (!s.recent.empty() && s.recent.front() <= now_ms - kWindowMs) s.recent.pop_front();
    if (s.recent.size() * 2 >= std::max<size_t>(pool_keys, 1)) {
      s.capped++;
      s.last_capped_ms = now_ms;
      return false;
    }
    s.recent.push_back(now_ms);
    return true;
  }

  struct Report {
    std::string scope;
    uint64_t capped = 0;
    int64_t last_capped_ms = 0;
    size_t recent = 0;  // suspensions in the window
  };
  // Scopes that were ever capped, for /admin/health and /metrics.
  std::vector<Report> capped(int64_t now_ms) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<Report> out;
    for (auto& [scope, s] : scopes_) {
      if (!s.capped) continue;
      size_t recent = std::count_if(s.recent.begin(), s.recent.end(), [&](int64_t t) { return t > now_ms - kWindowMs; });
      out.push_back({scope, s.capped, s.last_capped_ms, recent});
    }
    return out;
  }

 private:
  struct Scope {
    std::deque<int64_t> recent;  // suspension times
    uint64_t capped = 0;
    int64_t last_capped_ms = 0;
  };
  std::mutex mu_;
  std::map<std::string, Scope> scopes_;
};

}  // namespace keypool::state
