#pragma once
// Endpoint functions, one per (resource, method). Each reads its input from the Call and
// answers through it. Grouped by resource in tiers.cpp, keys.cpp, tokens.cpp,
// services.cpp; the rest (health, GET /key, audit, metrics) in endpoints.cpp.
#include <nlohmann/json.hpp>

#include "admin/call.h"
#include "admin/fields.h"
#include "base/strings.h"
#include "auth/auth.h"
#include "pool/pool.h"
#include "store/store.h"

namespace keypool::admin {

void tiers_create(Call& c);
void tiers_list(Call& c);
void tiers_delete(Call& c);
void tiers_patch(Call& c);

void keys_create(Call& c);
void keys_list(Call& c);
void keys_delete(Call& c);
void keys_patch(Call& c);
void keys_rotate(Call& c);
void keys_test(Call& c);

void tokens_create(Call& c);
void tokens_list(Call& c);
void tokens_revoke(Call& c);
void tokens_patch(Call& c);
void tokens_rotate(Call& c);

void services_create(Call& c);
void services_list(Call& c);
void services_delete(Call& c);

void audit_query(Call& c);
void stats_history(Call& c);

// Shared by the endpoints and start-up loading.
auth::TokenInfo token_info(const store::TokenRow& t);
// Puts a token row (with its rotated-out hash during a grace period) into the registry.
void register_token(auth::TokenRegistry& tokens, const store::TokenRow& t);
inline constexpr int64_t kMaxTokenGraceS = 86'400;
// A tier's `features` object (feature -> rpm per key) as given to POST/PATCH and the
// bootstrap file; errors name `field`.
Result<std::map<std::string, int64_t>> parse_tier_features(const nlohmann::json& f, const std::string& field);
pool::KeyInfo key_info(const store::KeyRow& row);
pool::TierPolicy tier_policy(const store::TierRow& row);
// An audit row stamped now, by the admin (the only caller of admin endpoints).
store::AuditRow audit_row(Call& c, std::string action, std::string target, nlohmann::json details = nullptr);

}  // namespace keypool::admin
