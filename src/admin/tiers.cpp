#include "admin/endpoints.h"
#include "admin/fields.h"

namespace keypool::admin {

void tiers_create(Call& c) {
  auto j = c.json_object();
  if (!j) return;
  if (auto r = only_fields(*j, {"name", "features", "max_wait_ms"}); !r) return c.fail(r.error());
  auto name = req_string(*j, "name", 64);
  if (!name) return c.fail(name.error());
  if (!valid_name(*name))
    return c.fail(make_error(ErrorCode::BadRequest, "field 'name': use 1-64 of A-Z a-z 0-9 _ . -"));
  auto f = j->find("features");
  if (f == j->end() || !f->is_object() || f->empty())
    return c.fail(make_error(ErrorCode::BadRequest,
                             "field 'features': must be a non-empty object of feature -> requests per minute"));
  store::TierRow row;
  row.name = *name;
  for (auto it = f->begin(); it != f->end(); ++it) {
    if (!valid_name(it.key()))
      return c.fail(make_error(ErrorCode::BadRequest, "field 'features': invalid feature name '" + it.key() + "'"));
    if (!it->is_number_integer() || it->get<int64_t>() < 1 || it->get<int64_t>() > 1'000'000)
      return c.fail(make_error(ErrorCode::BadRequest,
                               "field 'features." + it.key() + "': must be an integer from 1 to 1000000"));
    row.features[it.key()] = it->get<int64_t>();
  }
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

}  // namespace keypool::admin
