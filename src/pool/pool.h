#pragma once
// pool: the shared set of upstream keys and the policy for handing them out. lease() picks
// the next eligible key round-robin, skipping disabled, expired, cooling, excluded, busy
// and spent keys, and takes one grant from that key's exact window for the feature
// (ratelimit::SlidingLog). When nothing is usable it says precisely when to retry.
//
// All worker threads share one Pool. One mutex guards everything; critical sections are a
// scan over one group's keys and some bookkeeping, never I/O. Per round-robin group the
// pool caches what the scan needs (the group's keys, their rpm and windows), so a lease
// looks nothing up by name per key; configuration changes invalidate the caches. The pool
// does not load or store keys, decrypt values or talk upstream: the store feeds it, the
// proxy and admin lease from it.
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/clock.h"
#include "base/result.h"
#include "base/secret.h"
#include "pool/affinity.h"
#include "ratelimit/sliding_log.h"

namespace keypool::pool {

struct TierPolicy {
  std::string name;
  std::map<std::string, int64_t> features;  // feature -> rpm per key; rpm <= 0 serves nothing
  int64_t max_wait_ms = 0;
};

struct KeyInfo {
  int64_t id = 0;
  std::string name, tier, service;  // service "" = none
  bool enabled = true;
  std::string disabled_reason;
  int64_t expires_at_ms = 0;   // 0 = never
  int64_t max_concurrent = 0;  // 0 = unlimited
};

// A granted key; pass it back to exactly one of release() or refund().
struct Lease {
  int64_t key_id = 0;
  std::string key_name, tier;
  // Shared so a rotation (set_value) never pulls a value out from under a running request.
  std::shared_ptr<const Secret> value;
  bool counts_concurrency = false;  // holds an in-flight slot (key has max_concurrent)
  int64_t granted_at_ms = 0;        // the window entry; refund() removes exactly this one
  std::string feature;
};

// What lease() reads: borrowed views, so the proxy can ask for a key per request without
// copying names. Everything viewed must stay alive for the lease() call only.
struct QueryView {
  std::string_view feature;
  std::optional<std::string_view> tier;
  std::optional<std::string_view> service;
  bool or_untagged = false;
  int64_t fallback_rpm = 0;
  std::span<const int64_t> exclude;
  std::string_view affinity;
};

// The owning form, for callers that keep a query around (admin GET /key retries later).
struct Query {
  std::string feature;                  // required
  std::optional<std::string> tier;      // only keys of this tier (team token); nullopt = any tier covering the feature (admin GET /key)
  std::optional<std::string> service;   // only keys whose service equals this (proxy); nullopt = any
  // With `service`: keys tagged with no service match too (GET /key: an untagged key serves
  // any feature of its tier, a tagged one only its service).
  bool or_untagged = false;
  int64_t fallback_rpm = 0;             // budget when the tier does not list the feature (service default); 0 = tier must list it
  std::vector<int64_t> exclude;         // keys already tried by this request (failover)
  std::string affinity;                 // X-Keypool-Session: prefer the key last used with this value while it has budget

  QueryView view() const {
    QueryView v{feature, std::nullopt, std::nullopt, or_untagged, fallback_rpm, exclude, affinity};
    if (tier) v.tier = *tier;
    if (service) v.service = *service;
    return v;
  }
};

// Disabled is an admin's decision; Suspended is keypool's, after the upstream said the key
// is invalid or out of quota, and a passing health probe lifts it.
enum class KeyState { Active, Cooling, Suspended, Disabled, Expired };

// "active", "cooling", "suspended", "disabled", "expired": the names the admin API, the CLI,
// metrics and audit show.
inline const char* state_name(KeyState s) {
  switch (s) {
    case KeyState::Active: return "active";
    case KeyState::Cooling: return "cooling";
    case KeyState::Suspended: return "suspended";
    case KeyState::Disabled: return "disabled";
    case KeyState::Expired: return "expired";
  }
  return "active";
}

// A key taken out by keypool. Probes start probe_backoff_ms after the suspension and the
// wait doubles after each failed one (the caller computes it; the pool only keeps it).
struct Suspension {
  std::string reason;  // "invalid", "quota" or a key_errors rule's reason
  int64_t at_ms = 0;
  int64_t next_probe_ms = 0;
  int64_t probe_backoff_ms = 0;
};

// A suspended key whose probe is due, handed to the health monitor.
struct ProbeTask {
  int64_t key_id = 0;
  std::string service;
  std::shared_ptr<const Secret> value;
  int64_t probe_backoff_ms = 0;
};

struct FeatureUsage {
  std::string feature;
  int64_t used = 0, limit = 0, reset_in_s = 0;
};

struct KeyStatus {
  KeyInfo info;
  KeyState state = KeyState::Active;
  int64_t cooling_until_ms = 0;
  std::optional<Suspension> suspension;
  int64_t inflight = 0;
  std::vector<FeatureUsage> usage;  // the tier's features, then any fallback-budget windows
};

class Pool {
 public:
  explicit Pool(const Clock& clock);
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  // Tier changes keep every window's history; a changed rpm applies at the next lease.
  void set_tiers(std::vector<TierPolicy> tiers);  // replaces all
  void upsert_tier(TierPolicy t);
  void remove_tier(const std::string& name);

  // Insert or update metadata and value; an update keeps windows, cooldown and in-flight.
  void upsert_key(KeyInfo info, Secret value);
  void update_key(KeyInfo info);  // metadata only; unknown ids are ignored
  // Rotation: new leases get the new value; existing Lease objects keep the old one.
  void set_value(int64_t id, Secret value);
  void remove_key(int64_t id);

  // Errors: NotFound "unknown feature 'x'" when no tier (the query's, if given) covers the
  // feature and fallback_rpm == 0; Unavailable when no key matches the filters, or when every
  // match is disabled, expired or excluded (nothing will free up by waiting); RateLimited
  // with retry_after_s (>= 1) = ceil(seconds until the earliest match frees up) otherwise.
  Result<Lease> lease(const QueryView& q);
  Result<Lease> lease(const Query& q) { return lease(q.view()); }
  void release(const Lease& l);  // frees the in-flight slot (not the window grant)
  void refund(const Lease& l);   // never used upstream: release() and return the grant too

  // Skipped until until_ms. Never shortens a longer cooldown (two workers may report the
  // same key); an until_ms already past clears the cooldown.
  void cool_down(int64_t key_id, int64_t until_ms);
  // Shortens a key's cooldown to end by until_ms at the latest (a 429 storm: the limit is
  // on our address, not on the key). A key not cooling stays as it is.
  void cap_cooldown(int64_t key_id, int64_t until_ms);
  void disable(int64_t key_id, std::string reason);

  // Takes the key out of rotation until unsuspend(). False when the key is unknown or
  // already suspended (two workers may report the same key): nothing changed then.
  bool suspend(int64_t key_id, Suspension s);
  // True when the key was suspended (and now is not).
  bool unsuspend(int64_t key_id);
  // Suspended keys whose next probe is due at now_ms; each is handed out once, until
  // probe_failed() (or unsuspend()) settles it.
  std::vector<ProbeTask> take_due_probes(int64_t now_ms);
  // The probe did not pass: the next one is at next_probe_ms, after waiting backoff_ms.
  void probe_failed(int64_t key_id, int64_t next_probe_ms, int64_t backoff_ms);
  // The key's value and service, for an on-demand probe; nullopt for an unknown id.
  std::optional<ProbeTask> probe_task(int64_t key_id) const;

  std::optional<KeyStatus> status(int64_t key_id) const;
  std::vector<KeyStatus> statuses() const;  // in id order
  bool tier_exists(const std::string& name) const;
  bool feature_known(const std::string& feature) const;  // some tier lists it
  std::optional<int64_t> tier_max_wait_ms(const std::string& tier) const;
  size_t key_count() const;
  // Keys of one (service, tier) pool, whatever their state; counted under the lock, no copies.
  size_t pool_size(std::string_view service, std::string_view tier) const;

 private:
  struct KeyEntry {
    KeyInfo info;
    std::shared_ptr<const Secret> value;
    int64_t cooling_until_ms = 0;
    std::optional<Suspension> suspension;
    bool probing = false;  // handed out by take_due_probes, not settled yet
    int64_t inflight = 0;  // leases holding a concurrency slot
    // feature -> window, created at the first lease of that feature. Map nodes never move,
    // so groups may point at a window for as long as its key exists.
    std::map<std::string, ratelimit::SlidingLog, std::less<>> windows;
  };

  // A key as one group sees it: what lease() would otherwise look up by name per key.
  struct Member {
    int64_t id;
    KeyEntry* key;                  // valid while the group's build is current
    int64_t tier_rpm;               // the key's tier's rpm for the feature; 0 = not listed
    ratelimit::SlidingLog* window;  // the key's window for the feature; null until it has one
  };

  // A round-robin group's name: (tier, feature, service) as the query gives them; nullopt
  // is "any".
  struct GroupName {
    std::optional<std::string> tier;
    std::string feature;
    std::optional<std::string> service;
    bool or_untagged = false;
  };
  // The same, borrowed from a query: the lookup builds no strings.
  struct GroupRef {
    std::optional<std::string_view> tier;
    std::string_view feature;
    std::optional<std::string_view> service;
    bool or_untagged;
    GroupRef(std::optional<std::string_view> t, std::string_view f, std::optional<std::string_view> s, bool u)
        : tier(t), feature(f), service(s), or_untagged(u) {}
    GroupRef(const GroupName& n)  // implicit: the map compares stored names with borrowed ones
        : tier(n.tier), feature(n.feature), service(n.service), or_untagged(n.or_untagged) {}
    bool operator==(const GroupRef&) const = default;
    GroupName owned() const {
      return {tier ? std::optional<std::string>(*tier) : std::nullopt, std::string(feature),
              service ? std::optional<std::string>(*service) : std::nullopt, or_untagged};
    }
  };
  struct GroupHash {
    using is_transparent = void;
    size_t operator()(const GroupRef& g) const;
  };
  struct GroupEq {
    using is_transparent = void;
    bool operator()(const GroupRef& a, const GroupRef& b) const { return a == b; }
    // The lookup's case, spelled out so no optionals are built per compare.
    bool operator()(const GroupRef& a, const GroupName& b) const {
      return a.feature == b.feature && a.or_untagged == b.or_untagged && a.tier.has_value() == b.tier.has_value() &&
             a.service.has_value() == b.service.has_value() && (!a.tier || *a.tier == *b.tier) &&
             (!a.service || *a.service == *b.service);
    }
  };
  struct Group {
    // The round-robin cursor: the id of the last key granted. An id, not an index, so adding
    // or removing keys never skips or repeats one. Survives rebuilds.
    std::optional<int64_t> last_id;
    // Derived from the configuration; valid while built_at == config_gen_.
    uint64_t built_at = 0;
    bool tier_covers = false;     // the query's tier (or any tier) lists the feature
    std::vector<Member> members;  // keys passing the tier and service filters, in id order
    size_t next = 0;              // members index just after last_id
  };

  // Everything below runs with mu_ held.
  void config_changed() { ++config_gen_; }
  Group* group_for(const QueryView& q);
  void build(Group& g, const QueryView& q);
  bool tier_covers(const QueryView& q) const;
  int64_t tier_rpm(const KeyEntry& k, const std::string& feature) const;
  static int64_t limit_of(const Member& m, const QueryView& q);
  static bool excluded(const QueryView& q, int64_t id);
  static int64_t try_take(Member& m, std::string_view feature, int64_t limit, int64_t now);
  static Lease make_lease(Member& m, std::string_view feature);
  std::optional<Lease> try_affinity(Group& g, const QueryView& q, int64_t now);
  KeyStatus describe(const KeyEntry& k, int64_t now) const;
  void give_back_slot(const Lease& l);

  const Clock& clock_;
  mutable std::mutex mu_;
  std::map<std::string, TierPolicy, std::less<>> tiers_;
  std::map<int64_t, KeyEntry> keys_;  // id order is the round-robin order
  // Bumped by every change to tiers or key metadata; groups rebuild when it moved. Starts
  // at 1 so a new group (built_at 0) is always built.
  uint64_t config_gen_ = 1;
  std::unordered_map<GroupName, Group, GroupHash, GroupEq> groups_;
  AffinityMap affinity_;
};

}  // namespace keypool::pool
