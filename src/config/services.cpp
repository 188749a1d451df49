// Service definitions from YAML files or admin JSON.
//
// Both front ends only check types and collect the fields into a RawService; one
// validator (build_service) then applies every rule, so a file and an admin call can
// never disagree about what a valid service is.
#include "config/services.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <system_error>

#include "base/strings.h"
#include "config/base_url.h"
#include "config/parse_util.h"

namespace keypool::config {

namespace {

constexpr std::string_view kSchemeList =
    "bearer, x-api-key, xi-api-key, authorization-raw, authorization-token, query-param";

// The sliding-window log keeps one timestamp per allowed request, so the cap bounds the
// memory a single key can claim.
constexpr int64_t kMaxRateLimitRpm = 1'000'000;

const std::vector<std::string_view> kServiceFields = {"name",           "display_name", "base_url",
                                                      "auth_scheme",    "auth_param",   "headers",
                                                      "rate_limit_rpm", "feature",    "accept_query_token",
                                                      "key_errors",     "health_check"};

// Fields as the front ends found them, types checked, nothing else.
struct RawService {
  std::optional<std::string> name, display_name, base_url, auth_scheme, auth_param, feature;
  std::optional<int64_t> rate_limit_rpm;
  bool accept_query_token = false;
  http::Headers headers;
  // Nested fields arrive as JSON from both front ends (YAML is converted); build_service
  // checks them like everything else.
  std::optional<nlohmann::json> key_errors, health_check;
};

// ---- small validators --------------------------------------------------------------

bool is_tchar(char c) {
  // RFC 9110 token characters.
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), is_tchar);
}

// [a-z0-9][a-z0-9_-]{0,63}: used in URLs (/v1/<name>/) and as tier feature keys.
bool is_slug(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  auto lower_digit = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!lower_digit(s[0])) return false;
  return std::all_of(s.begin() + 1, s.end(),
                     [&](char c) { return lower_digit(c) || c == '_' || c == '-'; });
}

bool has_control(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

// ---- fixed headers ----------------------------------------------------------------

// Headers keypool itself owns: framing, connection management and Host. A fixed value
// for any of them would corrupt the exchange rather than decorate it.
bool is_reserved_header(std::string_view name) {
  static constexpr std::string_view kReserved[] = {
      "host",       "content-length", "transfer-encoding",
      "connection", "keep-alive",     "proxy-connection",
      "te",         "trailer",        "upgrade"};
  return std::any_of(std::begin(kReserved), std::end(kReserved),
                     [&](std::string_view r) { return iequals(r, name); });
}

Result<void> check_headers(const http::Headers& headers, AuthScheme scheme,
                           const std::string& source) {
  for (size_t i = 0; i < headers.size(); ++i) {
    const auto& h = headers[i];
    std::string field = "headers." + h.name;
    if (!is_token(h.name)) {
      return field_error(source, "headers", quote(h.name) + " is not a valid header name");
    }
    if (h.value.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos) {
      return field_error(source, field, "value must not contain CR, LF or NUL");
    }
    if (is_reserved_header(h.name)) {
      return field_error(source, field, "must not be set: keypool manages this header");
    }
    // The header the key goes into; a fixed value there would fight the injected key.
    std::string_view auth = auth_header_name(scheme);
    if (!auth.empty() && iequals(auth, h.name)) {
      return field_error(
          source, field,
          "must not be set: auth_scheme " + std::string(to_string(scheme)) + " puts the key there");
    }
    for (size_t j = 0; j < i; ++j) {
      if (iequals(headers[j].name, h.name)) return field_error(source, field, "duplicate header");
    }
  }
  return Ok{};
}

// A JSON object of header name to string value, appended to *out.
Result<void> json_headers_into(const nlohmann::json& j, const std::string& source, const std::string& field,
                               http::Headers* out) {
  if (!j.is_object()) return field_error(source, field, "must be a mapping of header name to value");
  for (const auto& [name, value] : j.items()) {
    if (!value.is_string()) return field_error(source, field + "." + name, "must be a string");
    out->push_back({name, value.get<std::string>()});
  }
  return Ok{};
}

// ---- the one validator ------------------------------------------------------------

Result<void> check_name(const RawService& raw, const std::string& source) {
  if (!raw.name || raw.name->empty()) return field_error(source, "name", "required");
  if (!is_slug(*raw.name)) {
    return field_error(source, "name", quote(*raw.name) + " must match [a-z0-9][a-z0-9_-]{0,63}");
  }
  return Ok{};
}

Result<void> fill_base_url(const RawService& raw, const std::string& source, ServiceDef* s) {
  if (!raw.base_url || raw.base_url->empty()) return field_error(source, "base_url", "required");
  if (has_control(*raw.base_url) || raw.base_url->find(' ') != std::string::npos) {
    return field_error(source, "base_url", "must not contain spaces or control characters");
  }
  auto parts = parse_base_url(*raw.base_url);
  if (!parts) return field_error(source, "base_url", parts.error().message);
  s->base_url = *raw.base_url;
  while (!s->base_url.empty() && s->base_url.back() == '/') s->base_url.pop_back();
  s->tls = parts->tls;
  s->host = std::move(parts->host);
  s->port = parts->port;
  s->base_path = std::move(parts->path);
  return Ok{};
}

Result<void> fill_auth(const RawService& raw, const std::string& source, ServiceDef* s) {
  if (!raw.auth_scheme)
    return field_error(source, "auth_scheme",
                       "required (expected " + std::string(kSchemeList) + ")");
  auto scheme = parse_auth_scheme(*raw.auth_scheme);
  if (!scheme) return field_error(source, "auth_scheme", scheme.error().message);
  s->auth_scheme = *scheme;
  if (raw.auth_param) {
    // A parameter name with a scheme that ignores it is almost surely a wrong scheme.
    if (s->auth_scheme != AuthScheme::QueryParam) {
      return field_error(source, "auth_param", "only used with auth_scheme query-param");
    }
    // Unreserved URL characters: they are tokens and need no escaping in a query.
    const std::string& p = *raw.auth_param;
    bool ok = !p.empty() && p.size() <= 64 && std::all_of(p.begin(), p.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ||
             c == '~';
    });
    if (!ok)
      return field_error(source, "auth_param", "must be 1-64 characters from A-Z a-z 0-9 - _ . ~");
    s->auth_param = p;
  }
  return Ok{};
}

// ---- key_errors and health_check ------------------------------------------------------

const std::vector<std::string_view> kRuleFields = {"status", "body_contains", "action", "reason"};
const std::vector<std::string_view> kCheckFields = {"method", "path", "expect", "headers"};

std::optional<int> http_status(const nlohmann::json& v) {
  if (!v.is_number_integer()) return std::nullopt;
  auto n = v.get<int64_t>();
  if (n < 100 || n > 599) return std::nullopt;
  return static_cast<int>(n);
}

bool printable(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x20 && c != 0x7f; });
}

Result<KeyErrorRule> parse_rule(const nlohmann::json& j, const std::string& source, const std::string& field) {
  if (!j.is_object()) return field_error(source, field, "must be a mapping with status and action");
  KeyErrorRule r;
  for (const auto& [k, v] : j.items()) {
    if (std::find(kRuleFields.begin(), kRuleFields.end(), k) == kRuleFields.end())
      return field_error(source, field + "." + k, "unknown field (expected " + join_names(kRuleFields) + ")");
  }
  auto status = j.contains("status") ? http_status(j["status"]) : std::nullopt;
  if (!status) return field_error(source, field + ".status", "required: an HTTP status 100..599");
  r.status = *status;
  if (j.contains("body_contains") && !j["body_contains"].is_null()) {
    const auto& b = j["body_contains"];
    if (!b.is_string() || b.get_ref<const std::string&>().empty() || b.get_ref<const std::string&>().size() > 256 ||
        !printable(b.get_ref<const std::string&>()))
      return field_error(source, field + ".body_contains", "must be 1-256 printable characters");
    r.body_contains = b.get<std::string>();
  }
  if (!j.contains("action") || !j["action"].is_string())
    return field_error(source, field + ".action", "required: one of suspend, cooldown, pass");
  auto action = parse_key_action(j["action"].get<std::string>());
  if (!action) return field_error(source, field + ".action", action.error().message);
  r.action = *action;
  if (j.contains("reason") && !j["reason"].is_null()) {
    if (r.action != KeyAction::Suspend) return field_error(source, field + ".reason", "only used with action suspend");
    const auto& v = j["reason"];
    if (!v.is_string() || !is_slug(v.get_ref<const std::string&>()))
      return field_error(source, field + ".reason", "must match [a-z0-9][a-z0-9_-]{0,63}");
    r.reason = v.get<std::string>();
  }
  return r;
}

Result<std::vector<KeyErrorRule>> parse_key_errors(const nlohmann::json& j, const std::string& source) {
  if (!j.is_array()) return field_error(source, "key_errors", "must be a list of rules");
  if (j.size() > 64) return field_error(source, "key_errors", "at most 64 rules");
  std::vector<KeyErrorRule> out;
  for (size_t i = 0; i < j.size(); ++i) {
    auto r = parse_rule(j[i], source, "key_errors[" + std::to_string(i) + "]");
    if (!r) return r.error();
    out.push_back(std::move(*r));
  }
  return out;
}

Result<HealthCheck> parse_health_check(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) return field_error(source, "health_check", "must be a mapping with method, path and expect");
  for (const auto& [k, v] : j.items()) {
    if (std::find(kCheckFields.begin(), kCheckFields.end(), k) == kCheckFields.end())
      return field_error(source, "health_check." + k, "unknown field (expected " + join_names(kCheckFields) + ")");
  }
  HealthCheck h;
  if (j.contains("method") && !j["method"].is_null()) {
    if (!j["method"].is_string() || (j["method"] != "GET" && j["method"] != "HEAD"))
      return field_error(source, "health_check.method", "must be GET or HEAD");
    h.method = j["method"].get<std::string>();
  }
  const auto* path = j.contains("path") ? &j["path"] : nullptr;
  if (!path || !path->is_string() || path->get_ref<const std::string&>().empty() ||
      path->get_ref<const std::string&>()[0] != '/' || path->get_ref<const std::string&>().size() > 1024 ||
      has_control(path->get_ref<const std::string&>()) || path->get_ref<const std::string&>().find(' ') != std::string::npos)
    return field_error(source, "health_check.path", "required: a path starting with '/', without spaces");
  h.path = path->get<std::string>();
  if (j.contains("expect") && !j["expect"].is_null()) {
    const auto& e = j["expect"];
    if (!e.is_array() || e.empty() || e.size() > 16)
      return field_error(source, "health_check.expect", "must be a list of 1-16 HTTP statuses");
    h.expect.clear();
    for (const auto& v : e) {
      auto st = http_status(v);
      if (!st) return field_error(source, "health_check.expect", "must be a list of 1-16 HTTP statuses");
      h.expect.push_back(*st);
    }
  }
  if (j.contains("headers") && !j["headers"].is_null()) {
    RawService tmp;
    if (auto r = json_headers_into(j["headers"], source, "health_check.headers", &tmp.headers); !r) return r.error();
    h.headers = std::move(tmp.headers);
  }
  return h;
}

Result<ServiceDef> build_service(RawService raw, const std::string& source) {
  ServiceDef s;
  s.source = source;
  if (auto r = check_name(raw, source); !r) return r.error();
  s.name = *raw.name;
  if (raw.display_name) {
    if (raw.display_name->empty() || raw.display_name->size() > 200 ||
        has_control(*raw.display_name)) {
      return field_error(source, "display_name",
                         "must be 1-200 characters without control characters");
    }
    s.display_name = *raw.display_name;
  } else {
    s.display_name = s.name;
  }
  if (auto r = fill_base_url(raw, source, &s); !r) return r.error();
  if (auto r = fill_auth(raw, source, &s); !r) return r.error();
  if (auto r = check_headers(raw.headers, s.auth_scheme, source); !r) return r.error();
  s.headers = std::move(raw.headers);
  if (raw.rate_limit_rpm) {
    if (*raw.rate_limit_rpm < 0 || *raw.rate_limit_rpm > kMaxRateLimitRpm) {
      return field_error(source, "rate_limit_rpm",
                         "must be an integer between 0 and " + std::to_string(kMaxRateLimitRpm));
    }
    s.rate_limit_rpm = *raw.rate_limit_rpm;
  }
  s.accept_query_token = raw.accept_query_token;
  s.feature = raw.feature ? *raw.feature : s.name;
  if (!is_slug(s.feature)) {
    return field_error(source, "feature",
                       quote(s.feature) + " must match [a-z0-9][a-z0-9_-]{0,63}");
  }
  if (raw.key_errors) {
    auto rules = parse_key_errors(*raw.key_errors, source);
    if (!rules) return rules.error();
    s.key_errors = std::move(*rules);
  }
  if (raw.health_check) {
    auto check = parse_health_check(*raw.health_check, source);
    if (!check) return check.error();
    if (auto r = check_headers(check->headers, s.auth_scheme, source); !r)
      return field_error(source, "health_check", r.error().message);
    s.health_check = std::move(*check);
  }
  return s;
}

Error unknown_field(const std::string& source, std::string_view field) {
  return field_error(source, field, "unknown field (expected " + join_names(kServiceFields) + ")");
}

std::string* string_slot(RawService& raw, std::string_view key) {
  std::optional<std::string>* slot = nullptr;
  if (key == "name")
    slot = &raw.name;
  else if (key == "display_name")
    slot = &raw.display_name;
  else if (key == "base_url")
    slot = &raw.base_url;
  else if (key == "auth_scheme")
    slot = &raw.auth_scheme;
  else if (key == "auth_param")
    slot = &raw.auth_param;
  else if (key == "feature")
    slot = &raw.feature;
  if (!slot) return nullptr;
  slot->emplace();
  return &slot->value();
}

// ---- YAML front end ---------------------------------------------------------------

// A nested YAML value as JSON, for the fields build_service checks as JSON. A plain scalar
// of digits becomes a number (statuses); other scalars stay strings.
Result<nlohmann::json> yaml_to_json(const YAML::Node& node, const std::string& source, const std::string& field) {
  if (node.IsNull()) return nlohmann::json(nullptr);
  if (node.IsScalar()) {
    if (node.Tag() != "!") {  // "!" marks a quoted scalar: it stays a string
      if (auto n = parse_uint(node.Scalar()); n && *n <= 1'000'000'000) return nlohmann::json(*n);
    }
    return nlohmann::json(node.Scalar());
  }
  if (node.IsSequence()) {
    nlohmann::json out = nlohmann::json::array();
    for (size_t i = 0; i < node.size(); ++i) {
      auto v = yaml_to_json(node[i], source, field + "[" + std::to_string(i) + "]");
      if (!v) return v.error();
      out.push_back(std::move(*v));
    }
    return out;
  }
  if (!node.IsMap()) return field_error(source, field, "unsupported YAML value");
  auto entries = yaml_map_entries(node, source, field);
  if (!entries) return entries.error();
  nlohmann::json out = nlohmann::json::object();
  for (auto& [k, v] : *entries) {
    auto jv = yaml_to_json(v, source, join_field(field, k));
    if (!jv) return jv.error();
    out[k] = std::move(*jv);
  }
  return out;
}

Result<void> yaml_headers(const YAML::Node& node, const std::string& source, RawService* raw) {
  if (!node.IsMap())
    return field_error(source, "headers", "must be a mapping of header name to value");
  auto entries = yaml_map_entries(node, source, "headers");
  if (!entries) return entries.error();
  for (auto& [name, value] : *entries) {
    if (!value.IsScalar()) return field_error(source, "headers." + name, "must be a string");
    raw->headers.push_back({name, value.Scalar()});
  }
  return Ok{};
}

Result<void> yaml_field(const std::string& key, const YAML::Node& value, const std::string& source,
                        RawService* raw) {
  // An empty value (`display_name:`) means "not given", so the default applies.
  if (value.IsNull()) return Ok{};
  if (key == "headers") return yaml_headers(value, source, raw);
  if (key == "key_errors" || key == "health_check") {
    auto j = yaml_to_json(value, source, key);
    if (!j) return j.error();
    (key == "key_errors" ? raw->key_errors : raw->health_check) = std::move(*j);
    return Ok{};
  }
  if (key == "rate_limit_rpm") {
    std::optional<int64_t> n = value.IsScalar() ? parse_uint(value.Scalar()) : std::nullopt;
    if (!n)
      return field_error(source, key,
                         "must be an integer between 0 and " + std::to_string(kMaxRateLimitRpm));
    raw->rate_limit_rpm = *n;
    return Ok{};
  }
  if (key == "accept_query_token") {
    if (!value.IsScalar() || (value.Scalar() != "true" && value.Scalar() != "false"))
      return field_error(source, key, "must be true or false");
    raw->accept_query_token = value.Scalar() == "true";
    return Ok{};
  }
  std::string* slot = string_slot(*raw, key);
  if (!slot) return unknown_field(source, key);
  if (!value.IsScalar()) return field_error(source, key, "must be a string");
  *slot = value.Scalar();
  return Ok{};
}

// ---- JSON front end ---------------------------------------------------------------

Result<void> json_headers(const nlohmann::json& j, const std::string& source, RawService* raw) {
  if (!j.is_object())
    return field_error(source, "headers", "must be an object of header name to value");
  for (const auto& [name, value] : j.items()) {
    if (!value.is_string()) return field_error(source, "headers." + name, "must be a string");
    raw->headers.push_back({name, value.get<std::string>()});
  }
  return Ok{};
}

Result<void> json_field(const std::string& key, const nlohmann::json& value,
                        const std::string& source, RawService* raw) {
  if (value.is_null()) return Ok{};
  if (key == "headers") return json_headers(value, source, raw);
  if (key == "key_errors") {
    raw->key_errors = value;
    return Ok{};
  }
  if (key == "health_check") {
    raw->health_check = value;
    return Ok{};
  }
  if (key == "rate_limit_rpm") {
    if (!value.is_number_integer()) {
      return field_error(source, key,
                         "must be an integer between 0 and " + std::to_string(kMaxRateLimitRpm));
    }
    // Unsigned values above int64 would wrap; clamp them into the refused range.
    raw->rate_limit_rpm =
        value.is_number_unsigned() && value.get<uint64_t>() > uint64_t(kMaxRateLimitRpm)
            ? kMaxRateLimitRpm + 1
            : value.get<int64_t>();
    return Ok{};
  }
  if (key == "accept_query_token") {
    if (!value.is_boolean()) return field_error(source, key, "must be true or false");
    raw->accept_query_token = value.get<bool>();
    return Ok{};
  }
  std::string* slot = string_slot(*raw, key);
  if (!slot) return unknown_field(source, key);
  if (!value.is_string()) return field_error(source, key, "must be a string");
  *slot = value.get<std::string>();
  return Ok{};
}

bool has_yaml_extension(const std::filesystem::path& p) {
  std::string ext = p.extension().string();
  return ext == ".yaml" || ext == ".yml";
}

std::optional<std::string> read_text(const std::filesystem::path& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return std::nullopt;
  std::string text;
  char buf[8192];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return std::nullopt;
  return text;
}

// The candidate files in filename order. Dot files are skipped: editors leave them and
// Kubernetes ConfigMap mounts add ..data entries next to the real files.
std::vector<std::filesystem::path> yaml_files(const std::string& dir, std::string* error) {
  namespace fs = std::filesystem;
  std::vector<fs::path> out;
  std::error_code ec;
  fs::directory_iterator it(dir, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    const fs::path& p = it->path();
    std::string fname = p.filename().string();
    if (fname.empty() || fname[0] == '.' || !has_yaml_extension(p)) continue;
    std::error_code type_ec;
    if (!fs::is_regular_file(p, type_ec)) continue;  // follows symlinks
    out.push_back(p);
  }
  if (ec) {
    *error = dir + ": cannot read services directory: " + ec.message();
    return {};
  }
  std::sort(out.begin(), out.end(),
            [](const fs::path& a, const fs::path& b) { return a.filename() < b.filename(); });
  return out;
}

}  // namespace

// ---- public API -------------------------------------------------------------------

Result<AuthScheme> parse_auth_scheme(std::string_view s) {
  if (s == "bearer") return AuthScheme::Bearer;
  if (s == "x-api-key") return AuthScheme::XApiKey;
  if (s == "xi-api-key") return AuthScheme::XiApiKey;
  if (s == "authorization-raw") return AuthScheme::AuthorizationRaw;
  if (s == "authorization-token") return AuthScheme::AuthorizationToken;
  if (s == "query-param") return AuthScheme::QueryParam;
  return make_error(ErrorCode::Invalid,
                    "unknown scheme " + quote(s) + " (expected " + std::string(kSchemeList) + ")");
}

std::string_view to_string(AuthScheme s) {
  switch (s) {
    case AuthScheme::Bearer:
      return "bearer";
    case AuthScheme::XApiKey:
      return "x-api-key";
    case AuthScheme::XiApiKey:
      return "xi-api-key";
    case AuthScheme::AuthorizationRaw:
      return "authorization-raw";
    case AuthScheme::AuthorizationToken:
      return "authorization-token";
    case AuthScheme::QueryParam:
      return "query-param";
  }
  return "bearer";  // unreachable: every enumerator is handled above
}

Result<KeyAction> parse_key_action(std::string_view s) {
  if (s == "suspend") return KeyAction::Suspend;
  if (s == "cooldown") return KeyAction::Cooldown;
  if (s == "pass") return KeyAction::Pass;
  return make_error(ErrorCode::Invalid, "unknown action " + quote(s) + " (expected suspend, cooldown, pass)");
}

std::string_view to_string(KeyAction a) {
  switch (a) {
    case KeyAction::Suspend: return "suspend";
    case KeyAction::Cooldown: return "cooldown";
    case KeyAction::Pass: return "pass";
  }
  return "pass";
}

std::string_view auth_header_name(AuthScheme s) {
  switch (s) {
    case AuthScheme::Bearer:
    case AuthScheme::AuthorizationRaw:
    case AuthScheme::AuthorizationToken:
      return "Authorization";
    case AuthScheme::XApiKey:
      return "x-api-key";
    case AuthScheme::XiApiKey:
      return "xi-api-key";
    case AuthScheme::QueryParam:
      return "";
  }
  return "";
}

Result<ServiceDef> service_from_yaml(std::string_view yaml_text, const std::string& source) {
  auto doc = load_yaml_document(yaml_text, source);
  if (!doc) return doc.error();
  if (!doc->IsMap()) return field_error(source, "", "must be a mapping of service fields");
  auto entries = yaml_map_entries(*doc, source, "");
  if (!entries) return entries.error();
  RawService raw;
  for (const auto& [key, value] : *entries) {
    if (auto r = yaml_field(key, value, source, &raw); !r) return r.error();
  }
  return build_service(std::move(raw), source);
}

Result<ServiceDef> service_from_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) return field_error(source, "", "must be a JSON object of service fields");
  RawService raw;
  try {
    for (const auto& [key, value] : j.items()) {
      if (auto r = json_field(key, value, source, &raw); !r) return r.error();
    }
  } catch (const nlohmann::json::exception& e) {
    // The type checks above should make this unreachable; keep the no-throw promise anyway.
    return field_error(source, "", std::string("invalid JSON value: ") + e.what());
  }
  return build_service(std::move(raw), source);
}

nlohmann::json service_to_json(const ServiceDef& s) {
  nlohmann::json j = {
      {"name", s.name},
      {"display_name", s.display_name},
      {"base_url", s.base_url},
      {"auth_scheme", std::string(to_string(s.auth_scheme))},
      {"headers", nlohmann::json::object()},
      {"rate_limit_rpm", s.rate_limit_rpm},
      {"feature", s.feature},
      {"accept_query_token", s.accept_query_token},
  };
  // Only where it means something, so the output is accepted by service_from_json.
  if (s.auth_scheme == AuthScheme::QueryParam) j["auth_param"] = s.auth_param;
  for (const auto& h : s.headers) j["headers"][h.name] = h.value;
  if (!s.key_errors.empty()) {
    auto& rules = j["key_errors"] = nlohmann::json::array();
    for (const auto& r : s.key_errors) {
      nlohmann::json rj = {{"status", r.status}, {"action", std::string(to_string(r.action))}};
      if (!r.body_contains.empty()) rj["body_contains"] = r.body_contains;
      if (!r.reason.empty()) rj["reason"] = r.reason;
      rules.push_back(std::move(rj));
    }
  }
  if (s.health_check) {
    const auto& h = *s.health_check;
    nlohmann::json hj = {{"method", h.method}, {"path", h.path}, {"expect", h.expect}};
    if (!h.headers.empty()) {
      hj["headers"] = nlohmann::json::object();
      for (const auto& x : h.headers) hj["headers"][x.name] = x.value;
    }
    j["health_check"] = std::move(hj);
  }
  return j;
}

LoadedServices load_services_dir(const std::string& dir) {
  LoadedServices out;
  std::string dir_error;
  std::map<std::string, std::string> source_of;  // name -> file that defined it first
  for (const auto& path : yaml_files(dir, &dir_error)) {
    std::string source = path.string();
    std::optional<std::string> text = read_text(path);
    if (!text) {
      out.errors.push_back(source + ": cannot read file");
      continue;
    }
    auto def = service_from_yaml(*text, source);
    if (!def) {
      out.errors.push_back(def.error().message);
      continue;
    }
    auto [it, inserted] = source_of.emplace(def->name, source);
    if (!inserted) {
      out.errors.push_back(
          field_error(source, "name", quote(def->name) + " is already defined in " + it->second)
              .message);
      continue;
    }
    out.services.push_back(std::move(def).value());
  }
  if (!dir_error.empty()) out.errors.push_back(dir_error);
  std::sort(out.services.begin(), out.services.end(),
            [](const ServiceDef& a, const ServiceDef& b) { return a.name < b.name; });
  return out;
}

}  // namespace keypool::config
