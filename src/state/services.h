#pragma once
// ServiceCatalog: the live set of services, merged from services.d files and the admin API.
// Readers take an immutable snapshot (a shared_ptr copy) per request; writers build a new
// map and swap it in, so a request never sees a half-updated catalog.
//
// On a name clash the admin API's definition wins: it is the runtime override an operator
// made on purpose, and it survives restarts in the store. Deleting it uncovers the file's.
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "config/service.h"

namespace keypool::state {

using ServiceMap = std::map<std::string, config::ServiceDef>;

class ServiceCatalog {
 public:
  ServiceCatalog() : snapshot_(std::make_shared<const ServiceMap>()) {}
  std::shared_ptr<const ServiceMap> snapshot() const {
    std::lock_guard<std::mutex> lock(mu_);
    return snapshot_;
  }
  void set_file_services(std::vector<config::ServiceDef> defs) {
    std::lock_guard<std::mutex> lock(mu_);
    files_.clear();
    for (auto& d : defs) files_[d.name] = std::move(d);
    rebuild();
  }
  void upsert_admin(config::ServiceDef def) {
    std::lock_guard<std::mutex> lock(mu_);
    admin_[def.name] = std::move(def);
    rebuild();
  }
  bool remove_admin(const std::string& name) {
    std::lock_guard<std::mutex> lock(mu_);
    bool erased = admin_.erase(name) > 0;
    rebuild();
    return erased;
  }
  bool is_admin_defined(const std::string& name) const {
    std::lock_guard<std::mutex> lock(mu_);
    return admin_.count(name) > 0;
  }

 private:
  void rebuild() {
    auto merged = std::make_shared<ServiceMap>(files_);
    for (const auto& [name, def] : admin_) (*merged)[name] = def;
    snapshot_ = std::move(merged);
  }
  mutable std::mutex mu_;
  ServiceMap files_, admin_;
  std::shared_ptr<const ServiceMap> snapshot_;
};

}  // namespace keypool::state
