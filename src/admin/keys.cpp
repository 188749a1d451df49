#include <memory>

#include "admin/endpoints.h"
#include "admin/fields.h"
#include "keys/health.h"
#include "router/router.h"

namespace keypool::admin {
namespace {


// A key value goes into an HTTP header or query verbatim: visible ASCII only, so it can
// never split a header line.
Result<Secret> key_value(const nlohmann::json& j) {
  auto it = j.find("key");
  if (it == j.end() || !it->is_string() || it->get_ref<const std::string&>().empty())
    return make_error(ErrorCode::BadRequest, "field 'key': is required and must be a non-empty string");
  Secret v(it->get<std::string>());
  if (v.size() > 8192) return make_error(ErrorCode::BadRequest, "field 'key': longer than 8192 characters");
  for (char ch : v.view())
    if (ch < 0x21 || ch > 0x7e)
      return make_error(ErrorCode::BadRequest, "field 'key': must be visible ASCII without spaces");
  return v;
}

Result<int64_t> key_id(Call& c) {
  auto id = parse_uint(c.route().id);
  if (!id || *id == 0) return make_error(ErrorCode::NotFound, "no key with id '" + c.route().id + "'");
  return *id;
}

nlohmann::json key_json(const store::KeyRow& k, const std::optional<pool::KeyStatus>& st,
                        const store::UsageTotals* usage) {
  nlohmann::json j = {{"id", k.id},
                      {"name", k.name},
                      {"tier", k.tier},
                      {"service", k.service.empty() ? nlohmann::json(nullptr) : nlohmann::json(k.service)},
                      {"hint", k.hint},
                      {"enabled", k.enabled},
                      {"expires_at", k.expires_at ? nlohmann::json(iso_time(k.expires_at)) : nlohmann::json(nullptr)},
                      {"max_concurrent", k.max_concurrent},
                      {"source", k.source},
                      {"created_at", iso_time(k.created_at)}};
  if (!k.enabled) {
    j["disabled_reason"] = k.disabled_reason;
    j["disabled_at"] = iso_time(k.disabled_at);
  }
  if (k.balance_total) {
    j["balance_total"] = *k.balance_total;
    j["balance_unit"] = k.balance_unit;
  }
  if (st) {
    j["state"] = pool::state_name(st->state);
    if (st->cooling_until_ms) j["cooling_until"] = iso_time(st->cooling_until_ms);
    if (st->suspension) {
      j["suspended_reason"] = st->suspension->reason;
      j["suspended_at"] = iso_time(st->suspension->at_ms);
      j["next_probe_at"] = iso_time(st->suspension->next_probe_ms);
    }
    j["inflight"] = st->inflight;
    nlohmann::json usage_j = nlohmann::json::array();
    for (const auto& u : st->usage)
      usage_j.push_back({{"feature", u.feature}, {"used", u.used}, {"limit", u.limit}, {"reset_in_s", u.reset_in_s}});
    j["usage"] = usage_j;
  }
  if (usage) {
    j["counters"] = {{"requests", usage->requests},
                     {"errors", usage->errors},
                     {"input_tokens", usage->input_tokens},
                     {"output_tokens", usage->output_tokens},
                     {"cost", usage->cost},
                     {"last_used_at", usage->last_used_at ? nlohmann::json(iso_time(usage->last_used_at)) : nlohmann::json(nullptr)},
                     {"last_error", usage->last_error}};
    // A balance in tokens can be tracked from the usage upstreams report; a balance in
    // money would need prices keypool does not have, so it is shown as configured only.
    if (k.balance_total && k.balance_unit == "tokens")
      j["balance_left"] = *k.balance_total - static_cast<double>(usage->input_tokens + usage->output_tokens);
  }
  return j;
}

// The answer to a validation probe that did not pass: 422 with what the upstream said, or
// 502 when the upstream itself failed (that says nothing about the key).
Reply refused_by_probe(const keys::ProbeResult& r) {
  bool key_fault = r.verdict == keys::ProbeVerdict::Fail;
  nlohmann::json err = {{"code", key_fault ? "invalid_key" : "validation_failed"},
                        {"message", (key_fault ? "the upstream refused the key: " : "could not validate the key: ") +
                                        r.message},
                        {"upstream_status", r.status},
                        {"outcome", r.outcome}};
  return Reply{key_fault ? 422 : 502, {{"error", err}}, {}};
}

void store_new_key(Call& c, std::shared_ptr<store::NewKey> nk, store::AuditRow audit) {
  auto& app = c.app();
  c.in_store([nk, audit, &app](store::Store& s) mutable -> Result<Reply> {
    auto row = s.create_key(*nk, app.clock.now_ms());
    if (!row) return row.error();
    app.pool.upsert_key(key_info(*row), nk->value.clone());
    audit.target = std::to_string(row->id);
    (void)s.append_audit({audit});
    return Reply{201, key_json(*row, app.pool.status(row->id), nullptr), {}};
  });
}

// "validate": true: probe the service's health_check with the new value first; only a key
// that passes is stored.
void validate_then_store(Call& c, std::shared_ptr<store::NewKey> nk, store::AuditRow audit) {
  auto services = c.app().services.snapshot();
  auto svc = keys::probe_service(*services, nk->service);
  if (!svc) return c.fail(make_error(ErrorCode::BadRequest, "field 'validate': " + svc.error().message));
  if (!c.client()) return c.fail(make_error(ErrorCode::Unavailable, "no upstream client on this listener"));
  auto value = std::make_shared<const Secret>(nk->value.clone());
  std::weak_ptr<Call> weak = c.shared_from_this();
  keys::probe(*c.client(), **svc, value, [weak, nk, audit](const keys::ProbeResult& r) {
    auto self = weak.lock();
    if (!self || self->answered()) return;
    if (r.verdict != keys::ProbeVerdict::Pass) return self->reply(refused_by_probe(r));
    auto row = audit;
    auto details = nlohmann::json::parse(row.details_json, nullptr, false);
    if (details.is_object()) details["validated_status"] = r.status;
    row.details_json = details.dump();
    store_new_key(*self, nk, row);
  });
}

}  // namespace

void keys_create(Call& c) {
  auto j = c.json_object();
  if (!j) return;
  if (auto r = only_fields(*j, {"name", "key", "tier", "service", "expires_at", "max_concurrent",
                                "balance_total", "balance_unit", "validate"});
      !r)
    return c.fail(r.error());
  auto validate = opt_bool(*j, "validate");
  if (!validate) return c.fail(validate.error());
  auto name = req_string(*j, "name", 128);
  if (!name) return c.fail(name.error());
  auto tier = req_string(*j, "tier", 64);
  if (!tier) return c.fail(tier.error());
  auto service = opt_string(*j, "service", 64);
  if (!service) return c.fail(service.error());
  if (*service && !(*service)->empty() && !router::is_valid_service_name(**service))
    return c.fail(make_error(ErrorCode::BadRequest, "field 'service': not a valid service name"));
  auto expires = opt_time_ms(*j, "expires_at");
  if (!expires) return c.fail(expires.error());
  auto maxc = opt_int(*j, "max_concurrent", 0, 100000);
  if (!maxc) return c.fail(maxc.error());
  auto balance = opt_number(*j, "balance_total");
  if (!balance) return c.fail(balance.error());
  auto unit = opt_string(*j, "balance_unit", 16);
  if (!unit) return c.fail(unit.error());
  auto value = key_value(*j);
  if (!value) return c.fail(value.error());

  auto nk = std::make_shared<store::NewKey>();
  nk->name = *name;
  nk->tier = *tier;
  nk->service = service->value_or("");
  nk->value = std::move(value.value());
  nk->expires_at = expires->value_or(0);
  nk->max_concurrent = maxc->value_or(0);
  nk->balance_total = *balance;
  nk->balance_unit = unit->value_or("");
  auto audit = audit_row(c, "key.create", "", {{"name", nk->name}, {"tier", nk->tier}, {"service", nk->service}});
  if (validate->value_or(false)) return validate_then_store(c, nk, audit);
  store_new_key(c, nk, audit);
}

void keys_list(Call& c) {
  auto& app = c.app();
  app.recorder.flush();  // counters gathered on the loops go first
  c.in_store([&app](store::Store& s) -> Result<Reply> {
    auto keys = s.list_keys();
    if (!keys) return keys.error();
    auto usage = s.key_usage();
    if (!usage) return usage.error();
    nlohmann::json out = nlohmann::json::array();
    for (const auto& k : *keys) {
      auto u = usage->find(k.id);
      out.push_back(key_json(k, app.pool.status(k.id), u == usage->end() ? nullptr : &u->second));
    }
    return Reply{200, {{"keys", out}}, {}};
  });
}

void keys_delete(Call& c) {
  auto id = key_id(c);
  if (!id) return c.fail(id.error());
  auto audit = audit_row(c, "key.delete", std::to_string(*id));
  auto& app = c.app();
  int64_t kid = *id;
  c.in_store([kid, audit, &app](store::Store& s) -> Result<Reply> {
    if (auto r = s.delete_key(kid); !r) return r.error();
    app.pool.remove_key(kid);
    (void)s.append_audit({audit});
    return Reply{200, {{"deleted", kid}}, {}};
  });
}

void keys_patch(Call& c) {
  auto id = key_id(c);
  if (!id) return c.fail(id.error());
  auto j = c.json_object();
  if (!j) return;
  if (auto r = only_fields(*j, {"name", "tier", "enabled", "reason", "expires_at", "max_concurrent"}); !r)
    return c.fail(r.error());
  store::KeyPatch p;
  auto name = opt_string(*j, "name", 128);
  if (!name) return c.fail(name.error());
  p.name = *name;
  auto tier = opt_string(*j, "tier", 64);
  if (!tier) return c.fail(tier.error());
  p.tier = *tier;
  auto enabled = opt_bool(*j, "enabled");
  if (!enabled) return c.fail(enabled.error());
  p.enabled = *enabled;
  auto reason = opt_string(*j, "reason", 512);
  if (!reason) return c.fail(reason.error());
  p.disabled_reason = *reason;
  auto expires = opt_time_ms(*j, "expires_at");
  if (!expires) return c.fail(expires.error());
  p.expires_at = *expires;
  auto maxc = opt_int(*j, "max_concurrent", 0, 100000);
  if (!maxc) return c.fail(maxc.error());
  p.max_concurrent = *maxc;
  if (p.enabled && !*p.enabled && !p.disabled_reason) p.disabled_reason = "disabled by admin";
  std::string action = p.enabled ? (*p.enabled ? "key.enable" : "key.disable") : "key.update";
  auto details = *j;
  if (p.enabled) details["state"] = *p.enabled ? "active" : "disabled";
  auto audit = audit_row(c, action, std::to_string(*id), details);
  auto& app = c.app();
  int64_t kid = *id;
  bool reenabled = p.enabled && *p.enabled;
  c.in_store([kid, p, audit, reenabled, &app](store::Store& s) -> Result<Reply> {
    int64_t now = app.clock.now_ms();
    auto row = s.update_key(kid, p, now);
    if (!row) return row.error();
    app.pool.update_key(key_info(*row));
    (void)s.append_audit({audit});
    if (reenabled) {
      app.pool.cool_down(kid, 0);  // an admin's enable also ends a cooldown
      // ... and a suspension: the admin vouches for the key.
      if (app.pool.unsuspend(kid)) {
        (void)s.set_key_suspension(kid, "", now);
        (void)s.append_audit({{0, now, "admin", "key.resume", std::to_string(kid),
                               R"({"why":"enabled by admin","state":"active"})"}});
      }
    }
    return Reply{200, key_json(*row, app.pool.status(kid), nullptr), {}};
  });
}

void keys_rotate(Call& c) {
  auto id = key_id(c);
  if (!id) return c.fail(id.error());
  auto j = c.json_object();
  if (!j) return;
  if (auto r = only_fields(*j, {"key"}); !r) return c.fail(r.error());
  auto value = key_value(*j);
  if (!value) return c.fail(value.error());
  auto secret = std::make_shared<Secret>(std::move(value.value()));
  auto audit = audit_row(c, "key.rotate", std::to_string(*id));
  auto& app = c.app();
  int64_t kid = *id;
  c.in_store([kid, secret, audit, &app](store::Store& s) -> Result<Reply> {
    auto row = s.rotate_key(kid, *secret, app.clock.now_ms());
    if (!row) return row.error();
    // Leases already out keep their shared_ptr to the old value; new ones get this one.
    app.pool.set_value(kid, secret->clone());
    (void)s.append_audit({audit});
    // A suspension was the old value's: the new one starts afresh.
    if (app.pool.unsuspend(kid)) {
      int64_t now = app.clock.now_ms();
      (void)s.set_key_suspension(kid, "", now);
      (void)s.append_audit({{0, now, "admin", "key.resume", std::to_string(kid),
                             R"({"why":"value rotated","state":"active"})"}});
    }
    return Reply{200, key_json(*row, app.pool.status(kid), nullptr), {}};
  });
}

// POST /admin/keys/{id}/test: probe the key now and say what the upstream answered. A pass
// lifts a suspension; a failure is only reported.
void keys_test(Call& c) {
  auto id = key_id(c);
  if (!id) return c.fail(id.error());
  if (!c.client()) return c.fail(make_error(ErrorCode::Unavailable, "no upstream client on this listener"));
  auto& app = c.app();
  std::weak_ptr<Call> weak = c.shared_from_this();
  keys::test_key(app, *c.client(), *id, [weak, &app](Result<keys::KeyTest> t) {
    auto self = weak.lock();
    if (!self || self->answered()) return;
    if (!t) return self->fail(t.error());
    const auto& r = t->result;
    nlohmann::json out = {{"key_id", t->key_id},
                          {"result", keys::probe_verdict_name(r.verdict)},
                          {"upstream_status", r.status},
                          {"outcome", r.outcome},
                          {"message", r.message},
                          {"resumed", t->resumed}};
    if (auto st = app.pool.status(t->key_id)) out["state"] = pool::state_name(st->state);
    self->reply(200, std::move(out));
  });
}

}  // namespace keypool::admin
