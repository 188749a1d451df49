#include "admin/endpoints.h"
#include "admin/fields.h"

namespace keypool::admin {

Result<std::map<std::string, int64_t>> parse_tier_features(const nlohmann::json& f, const std::string& field) {
  if (!f.is_object() || f.empty())
    return make_error(ErrorCode::BadRequest,
                      "field '" + field + "': must be a non-empty object of feature -> requests per minute");
  std::map<std::string, int64_t> out;
  for (auto it = f.begin(); it != f.end(); ++it) {
    if (!valid_name(it.key()))
      return make_error(ErrorCode::BadRequest, "field '" + field + "': invalid feature name '" + it.key() + "'");
    if (!it->is_number_integer() || it->get<int64_t>() < 1 || it->get<int64_t>() > 1'000'000)
      return make_error(ErrorCode::BadRequest,
                        "field '" + field + "." + it.key() + "': must be an integer from 1 to 1000000");
    out[it.key()] = it->get<int64_t>();
  }
  return out;
}

void tiers_create(Call& c) {
  auto j = c.json_object();
  if (!j) return;
  if (auto r = only_fields(*j, {"name", "features", "max_wait_ms"}); !r) return c.fail(r.error());
  auto name = req_string(*j, "name", 64);
  if (!name) return c.fail(name.error());
  if (!valid_name(*name))
    return c.fail(make_error(ErrorCode::BadRequest, "field 'name': use 1-64 of A-Z a-z 0-9 _ . -"));
  auto features = parse_tier_features(j->value("features", nlohmann::json()), "features");
  if (!features) return c.fail(features.error());
  store::TierRow row;
  row.name = *name;
  row.features = std::move(*features);
  auto wait = opt_int(*j, "max_wait_ms", 0, 60'000);
  if (!wait) return c.fail(wait.error());
  row.max_wait_ms = wait->value_or(0);
  auto audit = audit_row(c, "tier.create", row.name, {{"features", row.features}});
  auto& app = c.app();
  c.in_store([row, audit, &app](store::Store& s) -> Result<Reply> {
    auto created = s.create_tier(row, app.clock.now_ms());
    if (!created) return created.error();
    app.pool.upsert_tier(tier_policy(*created));
    (void)s.append_audit({audit});
    return Reply{201, {{"name", created->name}, {"features", created->features},
                       {"max_wait_ms", created->max_wait_ms}}, {}};
  });
}

void tiers_list(Call& c) {
  c.in_store([](store::Store& s) -> Result<Reply> {
    auto tiers = s.list_tiers();
    if (!tiers) return tiers.error();
    nlohmann::json out = nlohmann::json::array();
    for (const auto& t : *tiers)
      out.push_back({{"name", t.name}, {"features", t.features}, {"max_wait_ms", t.max_wait_ms},
                     {"created_at", iso_time(t.created_at)}});
    return Reply{200, {{"tiers", out}}, {}};
  });
}

void tiers_delete(Call& c) {
  std::string name = c.route().id;
  auto audit = audit_row(c, "tier.delete", name);
  auto& app = c.app();
  c.in_store([name, audit, &app](store::Store& s) -> Result<Reply> {
    if (auto r = s.delete_tier(name); !r) return r.error();
    app.pool.remove_tier(name);
    (void)s.append_audit({audit});
    return Reply{200, {{"deleted", name}}, {}};
  });
}

// Changes a tier's rpm per feature and max_wait_ms. The pool keeps every key's windows
// (their history counts against the new limits), so the change applies from the next
// request without handing out a fresh minute of budget.
void tiers_patch(Call& c) {
  std::string name = c.route().id;
  auto j = c.json_object();
  if (!j) return;
  if (auto r = only_fields(*j, {"features", "max_wait_ms"}); !r) return c.fail(r.error());
  store::TierPatch p;
  if (j->contains("features")) {
    auto features = parse_tier_features((*j)["features"], "features");
    if (!features) return c.fail(features.error());
    p.features = std::move(*features);
  }
  auto wait = opt_int(*j, "max_wait_ms", 0, 60'000);
  if (!wait) return c.fail(wait.error());
  p.max_wait_ms = *wait;
  auto audit = audit_row(c, "tier.update", name, *j);
  auto& app = c.app();
  c.in_store([name, p, audit, &app](store::Store& s) -> Result<Reply> {
    auto row = s.update_tier(name, p);
    if (!row) return row.error();
    app.pool.upsert_tier(tier_policy(*row));
    (void)s.append_audit({audit});
    return Reply{200, {{"name", row->name}, {"features", row->features}, {"max_wait_ms", row->max_wait_ms}}, {}};
  });
}

}  // namespace keypool::admin
