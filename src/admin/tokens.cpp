#include "admin/endpoints.h"
#include "admin/fields.h"
#include "auth/auth.h"
#include "crypto/crypto.h"
#include "router/router.h"

namespace keypool::admin {
namespace {

nlohmann::json token_json(const store::TokenRow& t) {
  return {{"id", t.id},
          {"name", t.name},
          {"tier", t.tier},
          {"services", t.services},
          {"rpm", t.rpm},
          {"prefix", t.prefix},
          {"expires_at", t.expires_at ? nlohmann::json(iso_time(t.expires_at)) : nlohmann::json(nullptr)},
          {"created_at", iso_time(t.created_at)},
          {"revoked", t.revoked_at != 0},
          {"revoked_at", t.revoked_at ? nlohmann::json(iso_time(t.revoked_at)) : nlohmann::json(nullptr)}};
}

}  // namespace

auth::TokenInfo token_info(const store::TokenRow& t) {
  return auth::TokenInfo{t.id, t.name, t.tier, t.services, t.expires_at, t.rpm};
}

void tokens_create(Call& c) {
  auto j = c.json_object();
  if (!j) return;
  if (auto r = only_fields(*j, {"name", "tier", "services", "expires_at", "rpm"}); !r) return c.fail(r.error());
  auto name = req_string(*j, "name", 128);
  if (!name) return c.fail(name.error());
  auto tier = req_string(*j, "tier", 64);
  if (!tier) return c.fail(tier.error());
  auto services = opt_string_list(*j, "services");
  if (!services) return c.fail(services.error());
  for (const auto& s : services->value_or(std::vector<std::string>{}))
    if (!router::is_valid_service_name(s))
      return c.fail(make_error(ErrorCode::BadRequest, "field 'services': '" + s + "' is not a valid service name"));
  auto expires = opt_time_ms(*j, "expires_at");
  if (!expires) return c.fail(expires.error());
  auto rpm = opt_int(*j, "rpm", 0, 1'000'000);
  if (!rpm) return c.fail(rpm.error());

  // The token is shown once, in this answer; only its SHA-256 is stored.
  auto token = std::make_shared<Secret>(crypto::random_token("kp_"));
  store::TokenRow row;
  row.name = *name;
  row.tier = *tier;
  row.services = services->value_or(std::vector<std::string>{});
  row.expires_at = expires->value_or(0);
  row.rpm = rpm->value_or(0);
  row.hash_hex = auth::hash_token(token->view());
  row.prefix = std::string(token->view().substr(0, 8));
  auto audit = audit_row(c, "token.create", "", {{"name", row.name}, {"tier", row.tier}});
  auto& app = c.app();
  c.in_store([row, token, audit, &app](store::Store& s) mutable -> Result<Reply> {
    auto created = s.create_token(row, app.clock.now_ms());
    if (!created) return created.error();
    app.tokens.upsert(created->hash_hex, token_info(*created));
    audit.target = std::to_string(created->id);
    (void)s.append_audit({audit});
    auto body = token_json(*created);
    body["token"] = std::string(token->view());
    return Reply{201, body, {}};
  });
}

void tokens_list(Call& c) {
  c.in_store([](store::Store& s) -> Result<Reply> {
    auto tokens = s.list_tokens();
    if (!tokens) return tokens.error();
    auto usage = s.token_usage();
    nlohmann::json out = nlohmann::json::array();
    for (const auto& t : *tokens) {
      auto j = token_json(t);
      if (usage) {
        auto u = usage->find(t.id);
        j["requests"] = u == usage->end() ? 0 : u->second.requests;
        j["input_tokens"] = u == usage->end() ? 0 : u->second.input_tokens;
        j["output_tokens"] = u == usage->end() ? 0 : u->second.output_tokens;
      }
      out.push_back(j);
    }
    return Reply{200, {{"tokens", out}}, {}};
  });
}

void tokens_revoke(Call& c) {
  auto id = parse_uint(c.route().id);
  if (!id || *id == 0) return c.fail(make_error(ErrorCode::NotFound, "no token with id '" + c.route().id + "'"));
  int64_t tid = *id;
  auto audit = audit_row(c, "token.revoke", std::to_string(tid));
  auto& app = c.app();
  c.in_store([tid, audit, &app](store::Store& s) -> Result<Reply> {
    if (auto r = s.revoke_token(tid, app.clock.now_ms()); !r) return r.error();
    app.tokens.remove(tid);  // refused from the next request on
    (void)s.append_audit({audit});
    return Reply{200, {{"revoked", tid}}, {}};
  });
}

}  // namespace keypool::admin
