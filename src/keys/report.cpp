#include "keys/report.h"

#include <algorithm>
#include <vector>

#include <nlohmann/json.hpp>

#include "telemetry/log.h"

namespace keypool::keys {
namespace {

// A 429 means the key is spent for now: cool it for as long as the upstream says. When
// most keys of a pool get 429 at once the limit is on our address, not on the keys: keep
// them usable with a short cooldown instead.
void cool_down(state::App& app, const KeyRef& key, std::optional<int64_t> wait_ms, int status) {
  int64_t id = key.key_id;
  int64_t now = app.clock.now_ms();
  int64_t ms = wait_ms.value_or(app.cfg.proxy.default_cooldown_s * 1000);
  size_t pool_keys = app.pool.pool_size(key.service, key.tier);
  std::vector<int64_t> storm_keys;
  if (app.storms.note_429(key.scope, id, now, pool_keys, &storm_keys)) {
    ms = std::min<int64_t>(ms, 1000);
    // The keys that answered 429 before the storm showed were cooled for the full wait:
    // bring them down to the same short cooldown.
    for (int64_t k : storm_keys)
      if (k != id) app.pool.cap_cooldown(k, now + ms);
  }
  app.pool.cool_down(id, now + ms);
  app.recorder.audit({0, now, "system", "key.cooldown", std::to_string(id),
                      "{\"until_ms\":" + std::to_string(now + ms) + ",\"status\":" + std::to_string(status) + ",\"state\":\"cooling\"}"});
}

}  // namespace

Applied suspend(state::App& app, const KeyRef& key, std::string_view reason, int status) {
  int64_t id = key.key_id;
  int64_t now = app.clock.now_ms();
  if (auto st = app.pool.status(id); !st || st->suspension) return Applied::AlreadySuspended;
  std::string service(key.service), tier(key.tier);
  if (!app.suspensions.allow(key.scope, now, app.pool.pool_size(key.service, key.tier))) {
    app.metrics.suspension_capped(service, tier);
    log::warn("suspension capped: half of this pool was suspended within 60 s; the key stays in",
              {{"service", service}, {"tier", tier}, {"key_id", id}, {"reason", reason}, {"status", status}});
    app.recorder.audit({0, now, "system", "key.suspend_capped", std::to_string(id),
                        nlohmann::json{{"reason", reason}, {"status", status}, {"state", "active"}}.dump()});
    return Applied::Capped;
  }
  int64_t backoff = app.cfg.health.probe_initial_s * 1000;
  if (!app.pool.suspend(id, pool::Suspension{std::string(reason), now, now + backoff, backoff}))
    return Applied::AlreadySuspended;
  log::warn("key suspended", {{"service", service}, {"key_id", id}, {"reason", reason}, {"status", status}});
  std::string r(reason);
  std::string details = nlohmann::json{{"reason", r}, {"status", status}, {"state", "suspended"}}.dump();
  app.store.post([id, r, now, details](store::Store& s) {
    (void)s.set_key_suspension(id, r, now);
    (void)s.append_audit({{0, now, "system", "key.suspend", std::to_string(id), details}});
  });
  return Applied::Suspended;
}

bool lift_suspension(state::App& app, int64_t key_id, const std::string& actor, const std::string& why) {
  if (!app.pool.unsuspend(key_id)) return false;
  int64_t now = app.clock.now_ms();
  log::info("key suspension lifted", {{"key_id", key_id}, {"by", actor}, {"why", why}});
  std::string details = nlohmann::json{{"why", why}, {"state", "active"}}.dump();
  app.store.post([key_id, actor, now, details](store::Store& s) {
    (void)s.set_key_suspension(key_id, "", now);
    (void)s.append_audit({{0, now, actor, "key.resume", std::to_string(key_id), details}});
  });
  return true;
}

Applied report(state::App& app, const KeyRef& key, const Outcome& outcome, int status,
               std::optional<int64_t> wait_ms) {
  switch (outcome.verdict) {
    case Verdict::RateLimited:
      cool_down(app, key, wait_ms, status);
      return Applied::CooledDown;
    case Verdict::Suspend:
      return suspend(app, key, outcome.reason, status);
    case Verdict::Serve:
    case Verdict::Refused:
    case Verdict::UpstreamFailed:
      break;
  }
  return Applied::Nothing;
}

}  // namespace keypool::keys
