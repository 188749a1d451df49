#include "admin/fields.h"

#include <ctime>

namespace keypool::admin {
namespace {

Error bad(const char* field, const std::string& what) {
  return make_error(ErrorCode::BadRequest, std::string("field '") + field + "': " + what);
}

}  // namespace

Result<std::string> req_string(const nlohmann::json& j, const char* field, size_t max_len) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return bad(field, "is required");
  if (!it->is_string()) return bad(field, "must be a string");
  auto s = it->get<std::string>();
  if (s.empty()) return bad(field, "must not be empty");
  if (s.size() > max_len) return bad(field, "longer than " + std::to_string(max_len) + " characters");
  return s;
}

Result<std::optional<std::string>> opt_string(const nlohmann::json& j, const char* field, size_t max_len) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return std::optional<std::string>();
  if (!it->is_string()) return bad(field, "must be a string");
  auto s = it->get<std::string>();
  if (s.size() > max_len) return bad(field, "longer than " + std::to_string(max_len) + " characters");
  return std::optional<std::string>(std::move(s));
}

Result<std::optional<int64_t>> opt_int(const nlohmann::json& j, const char* field, int64_t min, int64_t max) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return std::optional<int64_t>();
  if (!it->is_number_integer()) return bad(field, "must be an integer");
  int64_t v = it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)
                  ? INT64_MAX
                  : it->get<int64_t>();
  if (v < min || v > max)
    return bad(field, "must be between " + std::to_string(min) + " and " + std::to_string(max));
  return std::optional<int64_t>(v);
}

Result<std::optional<double>> opt_number(const nlohmann::json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return std::optional<double>();
  if (!it->is_number()) return bad(field, "must be a number");
  double v = it->get<double>();
  if (!(v >= 0)) return bad(field, "must be zero or more");
  return std::optional<double>(v);
}

Result<std::optional<bool>> opt_bool(const nlohmann::json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return std::optional<bool>();
  if (!it->is_boolean()) return bad(field, "must be true or false");
  return std::optional<bool>(it->get<bool>());
}

Result<std::optional<std::vector<std::string>>> opt_string_list(const nlohmann::json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return std::optional<std::vector<std::string>>();
  if (!it->is_array()) return bad(field, "must be an array of strings");
  std::vector<std::string> out;
  for (const auto& v : *it) {
    if (!v.is_string() || v.get<std::string>().empty()) return bad(field, "must be an array of non-empty strings");
    out.push_back(v.get<std::string>());
  }
  return std::optional<std::vector<std::string>>(std::move(out));
}

Result<std::optional<int64_t>> opt_time_ms(const nlohmann::json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end()) return std::optional<int64_t>();
  if (it->is_null()) return std::optional<int64_t>(0);
  if (it->is_number_integer()) {
    int64_t s = it->get<int64_t>();
    if (s < 0 || s > 253402300799) return bad(field, "must be a Unix time in seconds");
    return std::optional<int64_t>(s * 1000);
  }
  if (it->is_string()) {
    std::tm tm{};
    auto str = it->get<std::string>();
    const char* end = strptime(str.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (!end || *end != '\0') return bad(field, "must be Unix seconds or an RFC 3339 UTC time like 2027-01-01T00:00:00Z");
    return std::optional<int64_t>(static_cast<int64_t>(timegm(&tm)) * 1000);
  }
  return bad(field, "must be Unix seconds or an RFC 3339 UTC time");
}

Result<void> only_fields(const nlohmann::json& j, std::initializer_list<const char*> allowed) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool ok = false;
    for (const char* a : allowed) ok = ok || it.key() == a;
    if (!ok) return make_error(ErrorCode::BadRequest, "unknown field '" + it.key() + "'");
  }
  return Ok{};
}

bool valid_name(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) return false;
  return true;
}

std::string iso_time(int64_t ms) {
  if (ms <= 0) return "";
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace keypool::admin
