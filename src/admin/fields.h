#pragma once
// Reading typed fields out of admin JSON bodies; every error names the field.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/result.h"

namespace keypool::admin {

Result<std::string> req_string(const nlohmann::json& j, const char* field, size_t max_len = 256);
Result<std::optional<std::string>> opt_string(const nlohmann::json& j, const char* field, size_t max_len = 256);
Result<std::optional<int64_t>> opt_int(const nlohmann::json& j, const char* field, int64_t min, int64_t max);
Result<std::optional<double>> opt_number(const nlohmann::json& j, const char* field);
Result<std::optional<bool>> opt_bool(const nlohmann::json& j, const char* field);
Result<std::optional<std::vector<std::string>>> opt_string_list(const nlohmann::json& j, const char* field);
// Unix seconds (integer) or an RFC 3339 UTC time ("2027-01-01T00:00:00Z"); returns ms. null clears (0).
Result<std::optional<int64_t>> opt_time_ms(const nlohmann::json& j, const char* field);
// Refuses fields the endpoint does not know, so typos are not silently ignored.
Result<void> only_fields(const nlohmann::json& j, std::initializer_list<const char*> allowed);
// Names: 1-64 of [A-Za-z0-9_.-].
bool valid_name(std::string_view s);
std::string iso_time(int64_t ms);  // "" for 0

}  // namespace keypool::admin
