#include "pool/pool.h"

#include <algorithm>
#include <cassert>

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

// Written into a reused buffer (callers hold the pool's lock): every lease needs it.
void group_of(const Query& q, std::string& g) {
  g.assign(q.tier ? std::string_view(*q.tier) : std::string_view("*"));
  g += '\0';
  g += q.feature;
  g += '\0';
  g += q.service ? std::string_view(*q.service) : std::string_view("*");
}

std::string describe_query(const Query& q) {
  std::string s = "feature '" + q.feature + "'";
  if (q.tier) s += " in tier '" + *q.tier + "'";
  if (q.service) s += " for service '" + *q.service + "'";
  return s;
}

}  // namespace

Pool::Pool(const Clock& clock) : clock_(clock) {}

// ---- configuration ----------------------------------------------------------------------

void Pool::set_tiers(std::vector<TierPolicy> tiers) {
  std::map<std::string, TierPolicy> next;
  for (auto& t : tiers) {
    std::string name = t.name;
    next.insert_or_assign(std::move(name), std::move(t));
  }
  std::lock_guard lock(mu_);
  tiers_.swap(next);
}

void Pool::upsert_tier(TierPolicy t) {
  std::string name = t.name;
  std::lock_guard lock(mu_);
  tiers_.insert_or_assign(std::move(name), std::move(t));
}

void Pool::remove_tier(const std::string& name) {
  std::lock_guard lock(mu_);
  tiers_.erase(name);
}

void Pool::upsert_key(KeyInfo info, Secret value) {
  // Allocate outside the lock.
  auto shared = std::make_shared<const Secret>(std::move(value));
  std::lock_guard lock(mu_);
  KeyEntry& k = keys_[info.id];
  k.info = std::move(info);
  k.value = std::move(shared);
}

void Pool::update_key(KeyInfo info) {
  std::lock_guard lock(mu_);
  auto it = keys_.find(info.id);
  if (it != keys_.end()) it->second.info = std::move(info);
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
  // Affinity entries and cursors naming this id are harmless: both tolerate missing ids.
}

// ---- leasing ----------------------------------------------------------------------------

Result<Lease> Pool::lease(const Query& q) {
  const int64_t now = clock_.now_ms();
  std::lock_guard lock(mu_);
  if (!covered(q)) return make_error(ErrorCode::NotFound, "unknown feature '" + q.feature + "'");

  if (!q.affinity.empty()) {
    if (auto l = try_affinity(q, now)) return std::move(*l);
  }

  // Round-robin: start just after the last key this group was given, wrap once.
  std::string& group = group_buf_;
  group_of(q, group);
  auto cursor = cursors_.find(group);
  auto start = cursor == cursors_.end() ? keys_.begin() : keys_.upper_bound(cursor->second);
  size_t matched = 0;
  int64_t soonest = kNever;
  auto it = start;
  for (size_t n = 0; n < keys_.size(); ++n, ++it) {
    if (it == keys_.end()) it = keys_.begin();
    KeyEntry& k = it->second;
    const int64_t limit = budget(k, q);
    if (limit <= 0) continue;
    ++matched;
    if (excluded(q, k.info.id)) continue;
    const int64_t wait = wait_ms(k, q.feature, limit, now);
    if (wait == 0) {
      Lease l = grant(k, q, limit, now);
      if (cursor != cursors_.end()) cursor->second = k.info.id;  // no second lookup
      else cursors_.emplace(group, k.info.id);
      if (!q.affinity.empty()) affinity_.put(q.affinity, k.info.id);
      return l;
    }
    if (wait != kNever && (soonest == kNever || wait < soonest)) soonest = wait;
  }

  if (matched == 0) return make_error(ErrorCode::Unavailable, "no keys for " + describe_query(q));
  if (soonest == kNever) {
    return make_error(ErrorCode::Unavailable, "no usable keys for " + describe_query(q) +
                                                  " (all disabled, expired or already tried)");
  }
  Error e = make_error(ErrorCode::RateLimited, "all keys for " + describe_query(q) + " are busy");
  e.retry_after_s = std::max<int64_t>(1, ceil_seconds(soonest));
  return e;
}

// Uses the session's remembered key if it still matches and is usable; the round-robin
// cursor stays where it is so other callers keep their rotation.
std::optional<Lease> Pool::try_affinity(const Query& q, int64_t now) {
  const auto id = affinity_.get(q.affinity);
  if (!id) return std::nullopt;
  auto it = keys_.find(*id);
  if (it == keys_.end() || excluded(q, *id)) return std::nullopt;
  const int64_t limit = budget(it->second, q);
  if (limit <= 0 || wait_ms(it->second, q.feature, limit, now) != 0) return std::nullopt;
  return grant(it->second, q, limit, now);
}

bool Pool::covered(const Query& q) const {
  if (q.fallback_rpm > 0) return true;
  auto lists = [&](const TierPolicy& t) {
    auto f = t.features.find(q.feature);
    return f != t.features.end() && f->second > 0;
  };
  if (q.tier) {
    auto t = tiers_.find(*q.tier);
    return t != tiers_.end() && lists(t->second);
  }
  return std::any_of(tiers_.begin(), tiers_.end(), [&](const auto& t) { return lists(t.second); });
}

// The key's rpm for the query's feature, or 0 when the key does not serve this query.
int64_t Pool::budget(const KeyEntry& k, const Query& q) const {
  if (q.tier && k.info.tier != *q.tier) return 0;
  if (q.service && k.info.service != *q.service) return 0;
  if (auto t = tiers_.find(k.info.tier); t != tiers_.end()) {
    auto f = t->second.features.find(q.feature);
    if (f != t->second.features.end() && f->second > 0) return f->second;
  }
  return std::max<int64_t>(q.fallback_rpm, 0);
}

bool Pool::excluded(const Query& q, int64_t id) const {
  return std::find(q.exclude.begin(), q.exclude.end(), id) != q.exclude.end();
}

// 0 when the key can be leased now, kNever when waiting will not help, else the ms until
// every obstacle (cooldown, window, concurrency) is gone.
int64_t Pool::wait_ms(KeyEntry& k, const std::string& feature, int64_t limit, int64_t now) {
  if (!k.info.enabled || is_expired(k.info, now)) return kNever;
  int64_t wait = std::max<int64_t>(k.cooling_until_ms - now, 0);
  if (auto w = k.windows.find(feature); w != k.windows.end()) {
    w->second.set_limit(limit);  // a tier's rpm may have changed since the last lease
    wait = std::max(wait, w->second.retry_after_ms(now));
  }
  if (k.info.max_concurrent > 0 && k.inflight >= k.info.max_concurrent) {
    wait = std::max(wait, kBusyWaitMs);
  }
  return wait;
}

// Takes one grant and, when the key limits concurrency, one in-flight slot.
// Precondition: wait_ms(k, q.feature, limit, now) == 0.
Lease Pool::grant(KeyEntry& k, const Query& q, int64_t limit, int64_t now) {
  auto w = k.windows.try_emplace(q.feature, limit).first;
  [[maybe_unused]] const bool granted = w->second.try_acquire(now);
  assert(granted);
  Lease l;
  l.key_id = k.info.id;
  l.key_name = k.info.name;
  l.tier = k.info.tier;
  l.value = k.value;
  l.counts_concurrency = k.info.max_concurrent > 0;
  if (l.counts_concurrency) ++k.inflight;
  l.granted_at_ms = w->second.last_grant_ms();
  l.feature = q.feature;
  return l;
}

void Pool::release(const Lease& l) {
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

// ---- status -----------------------------------------------------------------------------

KeyStatus Pool::describe(const KeyEntry& k, int64_t now) const {
  KeyStatus s;
  s.info = k.info;
  s.cooling_until_ms = k.cooling_until_ms > now ? k.cooling_until_ms : 0;
  s.inflight = k.inflight;
  if (!k.info.enabled) s.state = KeyState::Disabled;
  else if (is_expired(k.info, now)) s.state = KeyState::Expired;
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
  Query q;
  q.feature = feature;
  std::lock_guard lock(mu_);
  return covered(q);
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
