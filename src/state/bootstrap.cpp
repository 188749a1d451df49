#include "state/bootstrap.h"

#include <nlohmann/json.hpp>

#include "admin/endpoints.h"
#include "config/services.h"
#include "telemetry/log.h"

namespace keypool::state {

Result<void> load_state(App& app, store::Store& s) {
  auto tiers = s.list_tiers();
  if (!tiers) return tiers.error();
  std::vector<pool::TierPolicy> policies;
  for (const auto& t : *tiers) policies.push_back(admin::tier_policy(t));
  app.pool.set_tiers(std::move(policies));

  // A wrong ENCRYPTION_KEY or a tampered row stops start-up here, naming the key.
  auto keys = s.load_keys();
  if (!keys) return keys.error();
  const int64_t now = app.clock.now_ms();
  const int64_t first_probe_ms = app.cfg.health.probe_initial_s * 1000;
  for (auto& k : *keys) {
    app.pool.upsert_key(admin::key_info(k.row), std::move(k.value));
    // A suspension survives a restart; its probes start over.
    if (!k.row.suspended_reason.empty())
      app.pool.suspend(k.row.id, pool::Suspension{k.row.suspended_reason, k.row.suspended_at,
                                                  now + first_probe_ms, first_probe_ms});
  }

  auto tokens = s.list_tokens();
  if (!tokens) return tokens.error();
  for (const auto& t : *tokens)
    if (!t.revoked_at) admin::register_token(app.tokens, t);

  auto services = s.list_services();
  if (!services) return services.error();
  for (const auto& [name, text] : *services) {
    auto j = nlohmann::json::parse(text, nullptr, false);
    auto def = j.is_discarded() ? Result<config::ServiceDef>(make_error(ErrorCode::Corrupt, "not JSON"))
                                : config::service_from_json(j, "admin");
    if (!def) {
      log::error("stored service refused", {{"service", name}, {"error", def.error().message}});
      continue;
    }
    app.services.upsert_admin(std::move(def.value()));
  }
  log::info("state loaded", {{"tiers", static_cast<int64_t>(tiers->size())},
                             {"keys", static_cast<int64_t>(keys->size())},
                             {"tokens", static_cast<int64_t>(app.tokens.size())}});
  return Ok{};
}

}  // namespace keypool::state
