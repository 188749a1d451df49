#pragma once
// Loading and validating service definitions (services.d/*.yaml and admin JSON).
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "base/result.h"
#include "config/service.h"

namespace keypool::config {

// Parses one YAML document. `source` (the file path) is kept in the def and in errors:
// "services.d/groq.yaml: auth_scheme: unknown scheme 'foo' (expected one of ...)".
Result<ServiceDef> service_from_yaml(std::string_view yaml_text, const std::string& source);
// Same fields from a JSON object (POST /admin/services); errors name the field.
Result<ServiceDef> service_from_json(const nlohmann::json& j, const std::string& source);
nlohmann::json service_to_json(const ServiceDef& s);

struct LoadedServices {
  std::vector<ServiceDef> services;  // sorted by name
  std::vector<std::string> errors;   // one line per refused file; the others still load
};
// Loads every *.yaml / *.yml in dir. A missing dir is an error line, not a crash.
LoadedServices load_services_dir(const std::string& dir);

}  // namespace keypool::config
