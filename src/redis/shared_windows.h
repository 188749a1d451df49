#pragma once
// SharedWindows: the pool's per-key state (windows, in-flight leases, holds, the
// round-robin cursor) and per-token windows kept in Redis, so that many keypool instances
// act as one pool. Each operation is one script run, one round trip, atomic on the server.
//
// Shaped for the key-policy room's state interface (lease/report): admit() is the lease
// side, release()/refund()/hold() the report side. It is not wired into the proxy yet.
//
// Redis layout, all under "{<prefix>:<tier>}" so that every key one admission touches
// hashes to one Redis Cluster slot (a key's hold and leases are per key, shared by all its
// features, hence the tier rather than the feature in the tag):
//   {p:tier}:cursor:<group>        the group's round-robin position
//   {p:tier}:w:<key>:<feature>     window runs "ms:count", oldest first
//   {p:tier}:n:<key>:<feature>     grants in the window
//   {p:tier}:lease:<key>           in-flight leases, a sorted set scored by expiry ms
//   {p:tier}:hold:<key>            "cooling" | "suspended" | "disabled", with a TTL
//   {p:token:<id>}:w / :n          a token's window
// Every one of them has a TTL, so state left by a dead instance or a removed key expires.
//
// On a timeout or a lost connection the caller gets Timeout/Unavailable and the script may
// or may not have run: a grant it recorded stays counted (strict, never generous) and its
// lease expires after lease_ttl_ms.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "redis/client.h"

namespace keypool::redis {

struct SharedOptions {
  std::string prefix = "keypool";   // namespaces a fleet, so fleets can share one Redis
  int64_t window_ms = 60'000;
  // A lease whose release never comes (its instance died) frees after this.
  int64_t lease_ttl_ms = 10 * 60'000;
  int64_t cursor_ttl_ms = 24 * 3'600'000;
};

// One key the admission may pick, in the pool's order.
struct Candidate {
  int64_t key_id = 0;
  int64_t rpm = 0;             // this (key, feature)'s budget per window; <= 0 serves nothing
  int64_t max_concurrent = 0;  // 0 = unlimited
};

struct AdmitQuery {
  std::string tier;
  std::string feature;
  std::string group;  // names the round-robin cursor; "" = the feature
  std::vector<Candidate> candidates;
};

// A granted key; pass it to exactly one of release() or refund().
struct SharedLease {
  std::string tier, feature;
  int64_t key_id = 0;
  std::string lease_id;
  int64_t granted_at_ms = 0;        // Redis time of the window grant
  bool counts_concurrency = false;  // holds an in-flight slot
};

struct Admission {
  std::optional<SharedLease> lease;
  // Without a lease: ms until the earliest candidate frees up, by Redis time; -1 when none
  // will by waiting (no budget, or held without end).
  int64_t retry_after_ms = 0;
  int64_t now_ms = 0;  // Redis TIME at the admission
};

struct TokenAdmission {
  bool granted = false;
  int64_t retry_after_ms = 0;  // when refused
  int64_t granted_at_ms = 0;   // when granted
};

enum class Hold { Cooling, Suspended, Disabled };
const char* hold_name(Hold h);

class SharedWindows {
 public:
  // The client must outlive this. Errors: Invalid when the prefix holds '{' or '}'.
  static Result<std::unique_ptr<SharedWindows>> create(Client& client, SharedOptions opts);

  // Errors: Invalid for a tier, feature or group with '{' or '}' or no candidates;
  // Timeout / Unavailable from the client.
  void admit(const AdmitQuery& q, std::function<void(Result<Admission>)> cb);
  // The request ended: frees the in-flight slot; the window grant stays.
  void release(const SharedLease& l, std::function<void(Result<void>)> cb = {});
  // The key was never used upstream: frees the slot and gives the window grant back.
  void refund(const SharedLease& l, std::function<void(Result<void>)> cb = {});
  // Holds a key for ms (a longer hold stays); ms <= 0 lifts any hold.
  void hold(const std::string& tier, int64_t key_id, Hold kind, int64_t ms,
            std::function<void(Result<void>)> cb = {});
  void cool_down(const std::string& tier, int64_t key_id, int64_t ms, std::function<void(Result<void>)> cb = {}) {
    hold(tier, key_id, Hold::Cooling, ms, std::move(cb));
  }
  // One grant from a token's own window of rpm per window_ms.
  void admit_token(const std::string& token_id, int64_t rpm, std::function<void(Result<TokenAdmission>)> cb);

  // Key names, for tests and for operators reading Redis.
  std::string tag(const std::string& tier) const;
  std::string window_key(const std::string& tier, int64_t key_id, const std::string& feature) const;
  std::string total_key(const std::string& tier, int64_t key_id, const std::string& feature) const;
  std::string lease_key(const std::string& tier, int64_t key_id) const;
  std::string hold_key(const std::string& tier, int64_t key_id) const;
  std::string cursor_key(const std::string& tier, const std::string& group) const;
  std::string token_window_key(const std::string& token_id) const;
  std::string token_total_key(const std::string& token_id) const;

 private:
  SharedWindows(Client& client, SharedOptions opts);
  std::string next_lease_id();
  void end_lease(const SharedLease& l, bool give_back, std::function<void(Result<void>)> cb);

  Client& client_;
  SharedOptions opts_;
  std::string instance_;  // random, so lease ids from different instances never collide
  uint64_t next_lease_ = 0;
};

}  // namespace keypool::redis
