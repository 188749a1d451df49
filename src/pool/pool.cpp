#include "pool/pool.h"

#include <algorithm>
#include <cassert>
#include <cstring>

namespace keypool::pool {

namespace {

// Why waiting will not help: disabled, expired or excluded.
constexpr int64_t kNever = -1;
// A key that is only at max_concurrent frees up when some request ends; we cannot know
// when, so callers are told to retry in a second.
constexpr int64_t kBusyWaitMs = 1000;

bool is_expired(const KeyInfo& k, int64_t now) {
  return k.expires_at_ms != 0 && now >= k.expires_at_ms;
}

int64_t ceil_seconds(int64_t ms) { return (ms + 999) / 1000; }

// Group names are short and groups few: a multiplicative hash over 8-byte words, inlined,
// costs a fraction of std::hash's out-of-line call per name. Collisions only cost a compare.
constexpr uint64_t kHashMul = 0x9E3779B97F4A7C15ULL;

uint64_t load32(const char* p) {
  uint32_t w;
  std::memcpy(&w, p, 4);
  return w;
}

uint64_t hash_name(uint64_t h, std::string_view s) {
  const char* p = s.data();
  size_t r = s.size();
  for (; r >= 8; p += 8, r -= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * kHashMul;
  }
  // The last 0..7 bytes in at most two loads; with the length they determine the bytes
  // (4..7: two overlapping words; 1..3: first, middle and last byte cover them all).
  uint64_t tail = 0;
  if (r >= 4) tail = load32(p) << 32 | load32(p + r - 4);
  else if (r > 0) tail = uint64_t(uint8_t(p[0])) << 16 | uint64_t(uint8_t(p[r / 2])) << 8 | uint8_t(p[r - 1]);
  h = (h ^ tail ^ s.size()) * kHashMul;
  return h ^ (h >> 32);
}

std::string describe_query(const QueryView& q) {
  std::string s = "feature '";
  s.append(q.feature).append("'");
  if (q.tier) s.append(" in tier '").append(*q.tier).append("'");
  if (q.service) s.append(" for service '").append(*q.service).append("'");
  return s;
}

}  // namespace

Pool::Pool(const Clock& clock) : clock_(clock) {}

// ---- configuration ----------------------------------------------------------------------

void Pool::set_tiers(std::vector<TierPolicy> tiers) {
  std::map<std::string, TierPolicy, std::less<>> next;
  for (auto& t : tiers) {
    std::string name = t.name;
    next.insert_or_assign(std::move(name), std::move(t));
  }
  std::lock_guard lock(mu_);
  tiers_.swap(next);
  config_changed();
}

void Pool::upsert_tier(TierPolicy t) {
  std::string name = t.name;
  std::lock_guard lock(mu_);
  tiers_.insert_or_assign(std::move(name), std::move(t));
  config_changed();
}

void Pool::remove_tier(const std::string& name) {
  std::lock_guard lock(mu_);
  tiers_.erase(name);
  config_changed();
}

void Pool::upsert_key(KeyInfo info, Secret value) {
  // Allocate outside the lock.
  auto shared = std::make_shared<const Secret>(std::move(value));
  std::lock_guard lock(mu_);
  KeyEntry& k = keys_[info.id];
  k.info = std::move(info);
  k.value = std::move(shared);
  config_changed();
}

void Pool::update_key(KeyInfo info) {
  std::lock_guard lock(mu_);
  auto it = keys_.find(info.id);
  if (it == keys_.end()) return;
  it->second.info = std::move(info);
  config_changed();
}

void Pool::set_value(int64_t id, Secret value) {
  auto shared = std::make_shared<const Secret>(std::move(value));
  std::lock_guard lock(mu_);
  auto it = keys_.find(id);
  if (it != keys_.end()) it->second.value.swap(shared);
  // The old value, if no lease holds it, is wiped when `shared` dies here, after unlock.
}

void Pool::remove_key(int64_t id) {
  std::shared_ptr<const Secret> old;  // wiped after unlock
  std::lock_guard lock(mu_);
  auto it = keys_.find(id);
  if (it == keys_.end()) return;
  old = std::move(it->second.value);
  keys_.erase(it);
  config_changed();  // groups point at the erased entry until they rebuild
  // Affinity entries and cursors naming this id are harmless: both tolerate missing ids.
}

// ---- leasing ----------------------------------------------------------------------------
//
// lease() runs once per proxied request, so it looks nothing up by name per key: each group
// keeps its keys with their rpm and window (Member), rebuilt lazily after any change to
// tiers or key metadata (config_gen_). Live state (enabled, cooldown, in-flight, value) is
// read through the member's pointer, so disable(), cool_down() and set_value() need no
// rebuild.

size_t Pool::GroupHash::operator()(const GroupRef& g) const {
  uint64_t h = hash_name(0, g.feature);
  h = g.tier ? hash_name(h, *g.tier) : h * kHashMul + 1;
  h = g.service ? hash_name(h, *g.service) : h * kHashMul + 2;
  return g.or_untagged ? h * kHashMul + 3 : h;
}

// The query's group, built for the current configuration; nullptr when the query is not
// covered. Uncovered queries store nothing, so unknown names never grow the map.
Pool::Group* Pool::group_for(const QueryView& q) {
  const GroupRef name{q.tier, q.feature, q.service, q.or_untagged};
  auto it = groups_.find(name);
  if (it == groups_.end()) {
    if (q.fallback_rpm <= 0 && !tier_covers(q)) return nullptr;
    it = groups_.emplace(name.owned(), Group{}).first;
  }
  Group& g = it->second;
  if (g.built_at != config_gen_) build(g, q);
  if (q.fallback_rpm <= 0 && !g.tier_covers) return nullptr;
  return &g;
}

// Resolves the group for the current configuration: which keys pass the tier and service
// filters, their rpm for the feature and their windows, and where the cursor points.
void Pool::build(Group& g, const QueryView& q) {
  const std::string feature(q.feature);
  g.members.clear();
  for (auto& [id, k] : keys_) {
    if (q.tier && k.info.tier != *q.tier) continue;
    if (q.service && k.info.service != *q.service && !(q.or_untagged && k.info.service.empty())) continue;
    auto w = k.windows.find(feature);
    g.members.push_back(Member{id, &k, tier_rpm(k, feature), w == k.windows.end() ? nullptr : &w->second});
  }
  g.tier_covers = tier_covers(q);
  // Just after the last key granted, so a rebuild neither skips nor repeats a key.
  auto after = g.members.begin();
  if (g.last_id) {
    after = std::upper_bound(g.members.begin(), g.members.end(), *g.last_id,
                             [](int64_t id, const Member& m) { return id < m.id; });
  }
  g.next = static_cast<size_t>(after - g.members.begin());
  g.built_at = config_gen_;
}

// Whether the query's tier (without one: any tier) lists the feature with rpm > 0.
bool Pool::tier_covers(const QueryView& q) const {
  const std::string feature(q.feature);
  auto lists = [&](const TierPolicy& t) {
    auto f = t.features.find(feature);
    return f != t.features.end() && f->second > 0;
  };
  if (q.tier) {
    auto t = tiers_.find(*q.tier);
    return t != tiers_.end() && lists(t->second);
  }
  return std::any_of(tiers_.begin(), tiers_.end(), [&](const auto& t) { return lists(t.second); });
}

// The rpm the key's tier gives the feature; 0 when the tier is gone or does not list it.
int64_t Pool::tier_rpm(const KeyEntry& k, const std::string& feature) const {
  auto t = tiers_.find(k.info.tier);
  if (t == tiers_.end()) return 0;
  auto f = t->second.features.find(feature);
  return f != t->second.features.end() && f->second > 0 ? f->second : 0;
}

// The member's rpm for this query; 0 when the key does not serve it.
int64_t Pool::limit_of(const Member& m, const QueryView& q) {
  return m.tier_rpm > 0 ? m.tier_rpm : std::max<int64_t>(q.fallback_rpm, 0);
}

bool Pool::excluded(const QueryView& q, int64_t id) {
  return std::find(q.exclude.begin(), q.exclude.end(), id) != q.exclude.end();
}

Result<Lease> Pool::lease(const QueryView& q) {
  const int64_t now = clock_.now_ms();
  std::lock_guard lock(mu_);
  Group* g = group_for(q);
  if (!g) return make_error(ErrorCode::NotFound, "unknown feature '" + std::string(q.feature) + "'");

  if (!q.affinity.empty()) {
    if (auto l = try_affinity(*g, q, now)) return std::move(*l);
  }

  // Round-robin: start just after the last key this group was given, wrap once.
  const size_t n = g->members.size();
  size_t matched = 0;
  int64_t soonest = kNever;
  for (size_t step = 0, i = g->next; step < n; ++step, ++i) {
    if (i == n) i = 0;
    Member& m = g->members[i];
    const int64_t limit = limit_of(m, q);
    if (limit <= 0) continue;
    ++matched;
    if (excluded(q, m.id)) continue;
    const int64_t wait = try_take(m, q.feature, limit, now);
    if (wait == 0) {
      g->last_id = m.id;
      g->next = i + 1;
      if (!q.affinity.empty()) affinity_.put(q.affinity, m.id);
      return make_lease(m, q.feature);
    }
    if (wait != kNever && (soonest == kNever || wait < soonest)) soonest = wait;
  }

  if (matched == 0) return make_error(ErrorCode::Unavailable, "no keys for " + describe_query(q));
  if (soonest == kNever) {
    return make_error(ErrorCode::Unavailable, "no usable keys for " + describe_query(q) +
                                                  " (all disabled, suspended, expired or already tried)");
  }
  Error e = make_error(ErrorCode::RateLimited, "all keys for " + describe_query(q) + " are busy");
  e.retry_after_s = std::max<int64_t>(1, ceil_seconds(soonest));
  return e;
}

// Uses the session's remembered key if it still matches and is usable; the round-robin
// cursor stays where it is so other callers keep their rotation.
std::optional<Lease> Pool::try_affinity(Group& g, const QueryView& q, int64_t now) {
  const auto id = affinity_.get(q.affinity);
  if (!id || excluded(q, *id)) return std::nullopt;
  // Members are in id order. A key outside the group (or removed) does not serve the query.
  auto m = std::lower_bound(g.members.begin(), g.members.end(), *id,
                            [](const Member& m, int64_t id) { return m.id < id; });
  if (m == g.members.end() || m->id != *id) return std::nullopt;
  const int64_t limit = limit_of(*m, q);
  if (limit <= 0 || try_take(*m, q.feature, limit, now) != 0) return std::nullopt;
  return make_lease(*m, q.feature);
}

// Takes one grant from the member's window when nothing blocks the key: returns 0 then.
// Otherwise the ms until every obstacle (cooldown, window, concurrency) is gone, or kNever
// when waiting will not help.
int64_t Pool::try_take(Member& m, std::string_view feature, int64_t limit, int64_t now) {
  KeyEntry& k = *m.key;
  if (!k.info.enabled || k.suspension || is_expired(k.info, now)) return kNever;
  int64_t wait = std::max<int64_t>(k.cooling_until_ms - now, 0);
  if (k.info.max_concurrent > 0 && k.inflight >= k.info.max_concurrent) wait = std::max(wait, kBusyWaitMs);
  if (!m.window) {
    // Another group (or this one, before a rebuild) may have opened it since.
    if (auto w = k.windows.find(feature); w != k.windows.end()) m.window = &w->second;
  }
  if (!m.window) {
    if (wait > 0) return wait;  // a key never leased for the feature has nothing in its window
    m.window = &k.windows.try_emplace(std::string(feature), limit).first->second;
  }
  ratelimit::SlidingLog& w = *m.window;
  w.set_limit(limit);  // a tier's rpm may have changed since the last lease
  // try_acquire succeeds exactly when retry_after_ms would say 0, so the common case asks
  // the window once.
  if (wait == 0 && w.try_acquire(now)) return 0;
  return std::max(wait, w.retry_after_ms(now));
}

// Precondition: try_take(m, ...) just returned 0 (the grant is in m's window).
Lease Pool::make_lease(Member& m, std::string_view feature) {
  KeyEntry& k = *m.key;
  Lease l;
  l.key_id = k.info.id;
  l.key_name = k.info.name;
  l.tier = k.info.tier;
  l.value = k.value;
  l.counts_concurrency = k.info.max_concurrent > 0;
  if (l.counts_concurrency) ++k.inflight;
  l.granted_at_ms = m.window->last_grant_ms();
  l.feature = feature;
  return l;
}

void Pool::release(const Lease& l) {
  // Most keys have no max_concurrent: then there is nothing to give back, and the lock
  // (a good part of a lease's cost) is not needed.
  if (!l.counts_concurrency) return;
  std::lock_guard lock(mu_);
  give_back_slot(l);
}

void Pool::refund(const Lease& l) {
  std::lock_guard lock(mu_);
  give_back_slot(l);
  auto it = keys_.find(l.key_id);
  if (it == keys_.end()) return;
  auto w = it->second.windows.find(l.feature);
  if (w != it->second.windows.end()) w->second.refund(l.granted_at_ms);
}

void Pool::give_back_slot(const Lease& l) {
  if (!l.counts_concurrency) return;
  auto it = keys_.find(l.key_id);
  // Clamped: a key removed and re-added under the same id starts again at zero.
  if (it != keys_.end() && it->second.inflight > 0) --it->second.inflight;
}

// ---- reports ----------------------------------------------------------------------------

void Pool::cool_down(int64_t key_id, int64_t until_ms) {
  const int64_t now = clock_.now_ms();
  std::lock_guard lock(mu_);
  auto it = keys_.find(key_id);
  if (it == keys_.end()) return;
  int64_t& until = it->second.cooling_until_ms;
  until = until_ms <= now ? 0 : std::max(until, until_ms);
}

void Pool::cap_cooldown(int64_t key_id, int64_t until_ms) {
  std::lock_guard lock(mu_);
  auto it = keys_.find(key_id);
  if (it == keys_.end()) return;
  int64_t& until = it->second.cooling_until_ms;
  if (until != 0) until = std::min(until, until_ms);
}

void Pool::disable(int64_t key_id, std::string reason) {
  std::lock_guard lock(mu_);
  auto it = keys_.find(key_id);
  if (it == keys_.end()) return;
  it->second.info.enabled = false;
  it->second.info.disabled_reason = std::move(reason);
}

bool Pool::suspend(int64_t key_id, Suspension s) {
  std::lock_guard lock(mu_);
  auto it = keys_.find(key_id);
  if (it == keys_.end() || it->second.suspension) return false;
  it->second.suspension = std::move(s);
  it->second.probing = false;
  return true;
}

bool Pool::unsuspend(int64_t key_id) {
  std::lock_guard lock(mu_);
  auto it = keys_.find(key_id);
  if (it == keys_.end() || !it->second.suspension) return false;
  it->second.suspension.reset();
  it->second.probing = false;
  // A key suspended for quota may also have been cooling; it starts afresh.
  it->second.cooling_until_ms = 0;
  return true;
}

std::vector<ProbeTask> Pool::take_due_probes(int64_t now_ms) {
  std::vector<ProbeTask> out;
  std::lock_guard lock(mu_);
  for (auto& [id, k] : keys_) {
    if (!k.suspension || k.probing || k.suspension->next_probe_ms > now_ms) continue;
    // An admin's disable or an expiry outranks the suspension: probing would change nothing.
    if (!k.info.enabled || is_expired(k.info, now_ms)) continue;
    k.probing = true;
    out.push_back(ProbeTask{id, k.info.service, k.value, k.suspension->probe_backoff_ms});
  }
  return out;
}

void Pool::probe_failed(int64_t key_id, int64_t next_probe_ms, int64_t backoff_ms) {
  std::lock_guard lock(mu_);
  auto it = keys_.find(key_id);
  if (it == keys_.end()) return;
  it->second.probing = false;
  if (!it->second.suspension) return;
  it->second.suspension->next_probe_ms = next_probe_ms;
  it->second.suspension->probe_backoff_ms = backoff_ms;
}

std::optional<ProbeTask> Pool::probe_task(int64_t key_id) const {
  std::lock_guard lock(mu_);
  auto it = keys_.find(key_id);
  if (it == keys_.end()) return std::nullopt;
  const KeyEntry& k = it->second;
  return ProbeTask{key_id, k.info.service, k.value, k.suspension ? k.suspension->probe_backoff_ms : 0};
}

// ---- status -----------------------------------------------------------------------------

KeyStatus Pool::describe(const KeyEntry& k, int64_t now) const {
  KeyStatus s;
  s.info = k.info;
  s.cooling_until_ms = k.cooling_until_ms > now ? k.cooling_until_ms : 0;
  s.inflight = k.inflight;
  s.suspension = k.suspension;
  if (!k.info.enabled) s.state = KeyState::Disabled;
  else if (is_expired(k.info, now)) s.state = KeyState::Expired;
  else if (k.suspension) s.state = KeyState::Suspended;
  else if (s.cooling_until_ms != 0) s.state = KeyState::Cooling;
  else s.state = KeyState::Active;

  auto usage_of = [&](const std::string& feature, int64_t limit) {
    FeatureUsage u{feature, 0, limit, 0};
    if (auto w = k.windows.find(feature); w != k.windows.end()) {
      u.used = w->second.used(now);
      u.reset_in_s = ceil_seconds(w->second.reset_in_ms(now));
    }
    return u;
  };
  const TierPolicy* tier = nullptr;
  if (auto t = tiers_.find(k.info.tier); t != tiers_.end()) tier = &t->second;
  if (tier) {
    for (const auto& [feature, rpm] : tier->features) s.usage.push_back(usage_of(feature, rpm));
  }
  // Windows created under a fallback budget (a service default) are not in the tier.
  for (const auto& [feature, w] : k.windows) {
    if (tier && tier->features.count(feature)) continue;
    s.usage.push_back(usage_of(feature, w.limit()));
  }
  return s;
}

std::optional<KeyStatus> Pool::status(int64_t key_id) const {
  const int64_t now = clock_.now_ms();
  std::lock_guard lock(mu_);
  auto it = keys_.find(key_id);
  if (it == keys_.end()) return std::nullopt;
  return describe(it->second, now);
}

std::vector<KeyStatus> Pool::statuses() const {
  const int64_t now = clock_.now_ms();
  std::lock_guard lock(mu_);
  std::vector<KeyStatus> out;
  out.reserve(keys_.size());
  for (const auto& [id, k] : keys_) out.push_back(describe(k, now));
  return out;
}

bool Pool::tier_exists(const std::string& name) const {
  std::lock_guard lock(mu_);
  return tiers_.count(name) != 0;
}

bool Pool::feature_known(const std::string& feature) const {
  QueryView q;
  q.feature = feature;
  std::lock_guard lock(mu_);
  return tier_covers(q);
}

std::optional<int64_t> Pool::tier_max_wait_ms(const std::string& tier) const {
  std::lock_guard lock(mu_);
  auto it = tiers_.find(tier);
  if (it == tiers_.end()) return std::nullopt;
  return it->second.max_wait_ms;
}

size_t Pool::key_count() const {
  std::lock_guard lock(mu_);
  return keys_.size();
}

size_t Pool::pool_size(std::string_view service, std::string_view tier) const {
  std::lock_guard lock(mu_);
  size_t n = 0;
  for (const auto& [id, k] : keys_) n += k.info.service == service && k.info.tier == tier;
  return n;
}

}  // namespace keypool::pool
