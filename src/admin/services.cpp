#include "admin/endpoints.h"
#include "admin/fields.h"
#include "config/services.h"

namespace keypool::admin {

void services_create(Call& c) {
  auto j = c.json_object();
  if (!j) return;
  auto def = config::service_from_json(*j, "admin");
  if (!def) return c.fail(make_error(ErrorCode::BadRequest, def.error().message));
  auto svc = std::make_shared<config::ServiceDef>(std::move(def.value()));
  auto audit = audit_row(c, "service.create", svc->name, {{"base_url", svc->base_url},
                                                          {"auth_scheme", config::to_string(svc->auth_scheme)}});
  auto& app = c.app();
  c.in_store([svc, audit, &app](store::Store& s) -> Result<Reply> {
    if (app.services.is_admin_defined(svc->name))
      return make_error(ErrorCode::Conflict, "service '" + svc->name + "' already exists; DELETE it first");
    auto json = config::service_to_json(*svc);
    if (auto r = s.upsert_service(svc->name, json.dump()); !r) return r.error();
    app.services.upsert_admin(*svc);
    (void)s.append_audit({audit});
    json["source"] = "admin";
    return Reply{201, json, {}};
  });
}

void services_list(Call& c) {
  auto snap = c.app().services.snapshot();
  nlohmann::json out = nlohmann::json::array();
  for (const auto& [name, def] : *snap) {
    auto j = config::service_to_json(def);
    j["source"] = def.source;
    out.push_back(j);
  }
  c.reply(200, {{"services", out}});
}

void services_delete(Call& c) {
  std::string name = c.route().id;
  auto audit = audit_row(c, "service.delete", name);
  auto& app = c.app();
  c.in_store([name, audit, &app](store::Store& s) -> Result<Reply> {
    if (!app.services.is_admin_defined(name)) {
      auto snap = app.services.snapshot();
      auto it = snap->find(name);
      if (it != snap->end())
        return make_error(ErrorCode::Conflict,
                          "service '" + name + "' is defined in " + it->second.source + "; edit or remove that file");
      return make_error(ErrorCode::NotFound, "no service named '" + name + "'");
    }
    if (auto r = s.delete_service(name); !r) return r.error();
    app.services.remove_admin(name);
    (void)s.append_audit({audit});
    return Reply{200, {{"deleted", name}}, {}};
  });
}

}  // namespace keypool::admin
