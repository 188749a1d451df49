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
          {"allow_key_handout", t.allow_key_handout},
          {"source", t.source},
          {"prefix", t.prefix},
          {"expires_at", t.expires_at ? nlohmann::json(iso_time(t.expires_at)) : nlohmann::json(nullptr)},
          {"created_at", iso_time(t.created_at)},
          {"revoked", t.revoked_at != 0},
          {"revoked_at", t.revoked_at ? nlohmann::json(iso_time(t.revoked_at)) : nlohmann::json(nullptr)},
          {"previous_valid_until",
           t.prev_valid_until ? nlohmann::json(iso_time(t.prev_valid_until)) : nlohmann::json(nullptr)}};
}

Result<int64_t> token_id(Call& c) {
  auto id = parse_uint(c.route().id);
  if (!id || *id == 0) return make_error(ErrorCode::NotFound, "no token with id '" + c.route().id + "'");
  return static_cast<int64_t>(*id);
}

Result<std::optional<std::vector<std::string>>> services_field(const nlohmann::json& j) {
  auto services = opt_string_list(j, "services");
  if (!services) return services.error();
  for (const auto& s : services->value_or(std::vector<std::string>{}))
    if (!router::is_valid_service_name(s))
      return make_error(ErrorCode::BadRequest, "field 'services': '" + s + "' is not a valid service name");
  return services;
}

// The secret is shown once, in the answer that made it; only its SHA-256 is stored.
std::shared_ptr<Secret> new_secret() { return std::make_shared<Secret>(crypto::random_token("kp_")); }


}  // namespace

auth::TokenInfo token_info(const store::TokenRow& t) {
  return auth::TokenInfo{t.id, t.name, t.tier, t.services, t.expires_at, t.rpm, t.allow_key_handout, 0};
}

void register_token(auth::TokenRegistry& tokens, const store::TokenRow& t) {
  tokens.upsert(t.hash_hex, token_info(t), t.prev_hash_hex, t.prev_valid_until);
}

void tokens_create(Call& c) {
  auto j = c.json_object();
  if (!j) return;
  if (auto r = only_fields(*j, {"name", "tier", "services", "expires_at", "rpm", "allow_key_handout"}); !r)
    return c.fail(r.error());
  auto name = req_string(*j, "name", 128);
  if (!name) return c.fail(name.error());
  auto tier = req_string(*j, "tier", 64);
  if (!tier) return c.fail(tier.error());
  auto services = services_field(*j);
  if (!services) return c.fail(services.error());
  auto handout = opt_bool(*j, "allow_key_handout");
  if (!handout) return c.fail(handout.error());
  auto expires = opt_time_ms(*j, "expires_at");
  if (!expires) return c.fail(expires.error());
  auto rpm = opt_int(*j, "rpm", 0, 1'000'000);
  if (!rpm) return c.fail(rpm.error());

  auto token = new_secret();
  store::TokenRow row;
  row.name = *name;
  row.tier = *tier;
  row.services = services->value_or(std::vector<std::string>{});
  row.expires_at = expires->value_or(0);
  row.rpm = rpm->value_or(0);
  row.allow_key_handout = handout->value_or(false);  // proxy-only unless asked for
  row.hash_hex = auth::hash_token(token->view());
  row.prefix = std::string(token->view().substr(0, 8));
  auto audit = audit_row(c, "token.create", "",
                         {{"name", row.name}, {"tier", row.tier}, {"allow_key_handout", row.allow_key_handout}});
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

void tokens_patch(Call& c) {
  auto id = token_id(c);
  if (!id) return c.fail(id.error());
  auto j = c.json_object();
  if (!j) return;
  if (auto r = only_fields(*j, {"name", "services", "rpm", "expires_at", "allow_key_handout"}); !r)
    return c.fail(r.error());
  store::TokenPatch p;
  auto name = opt_string(*j, "name", 128);
  if (!name) return c.fail(name.error());
  if (*name && (*name)->empty()) return c.fail(make_error(ErrorCode::BadRequest, "field 'name': must not be empty"));
  p.name = *name;
  auto services = services_field(*j);
  if (!services) return c.fail(services.error());
  p.services = *services;
  auto rpm = opt_int(*j, "rpm", 0, 1'000'000);
  if (!rpm) return c.fail(rpm.error());
  p.rpm = *rpm;
  auto expires = opt_time_ms(*j, "expires_at");
  if (!expires) return c.fail(expires.error());
  p.expires_at = *expires;
  auto handout = opt_bool(*j, "allow_key_handout");
  if (!handout) return c.fail(handout.error());
  p.allow_key_handout = *handout;
  auto audit = audit_row(c, "token.update", std::to_string(*id), *j);
  auto& app = c.app();
  int64_t tid = *id;
  c.in_store([tid, p, audit, &app](store::Store& s) -> Result<Reply> {
    auto row = s.update_token(tid, p);
    if (!row) return row.error();
    register_token(app.tokens, *row);  // effective from the next request, open connections too
    (void)s.append_audit({audit});
    return Reply{200, token_json(*row), {}};
  });
}

// A new secret for the same token (id, tier, services, counters kept). The old secret keeps
// working for grace_s seconds, so the apps using it can be moved over without a gap.
void tokens_rotate(Call& c) {
  auto id = token_id(c);
  if (!id) return c.fail(id.error());
  // The body is optional here: a bare POST rotates with no grace period.
  auto j = c.body_empty() ? std::optional<nlohmann::json>(nlohmann::json::object()) : c.json_object();
  if (!j) return;
  if (auto r = only_fields(*j, {"grace_s"}); !r) return c.fail(r.error());
  auto grace = opt_int(*j, "grace_s", 0, kMaxTokenGraceS);
  if (!grace) return c.fail(grace.error());
  int64_t grace_ms = grace->value_or(0) * 1000;
  auto token = new_secret();
  std::string hash = auth::hash_token(token->view());
  std::string prefix(token->view().substr(0, 8));
  auto audit = audit_row(c, "token.rotate", std::to_string(*id), {{"grace_s", grace->value_or(0)}});
  auto& app = c.app();
  int64_t tid = *id;
  c.in_store([tid, token, hash, prefix, grace_ms, audit, &app](store::Store& s) -> Result<Reply> {
    int64_t until = grace_ms > 0 ? app.clock.now_ms() + grace_ms : 0;
    auto row = s.rotate_token(tid, hash, prefix, until);
    if (!row) return row.error();
    register_token(app.tokens, *row);
    (void)s.append_audit({audit});
    auto body = token_json(*row);
    body["token"] = std::string(token->view());
    return Reply{200, body, {}};
  });
}

}  // namespace keypool::admin
