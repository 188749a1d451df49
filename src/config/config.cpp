// load_config: defaults (config.h) <- config/keypool.yaml <- environment, validated once.
//
// Every setting is one row of kFields: its dotted YAML path, the environment variable
// that overrides it (if any) and a small function that validates text and stores it.
// YAML and the environment go through the same row, so a value is judged by one rule
// and every message has the same shape whichever side it came from. The two secrets
// are not rows: they may only come from the environment.
#include "config/config.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string_view>

#include "base/strings.h"
#include "config/parse_util.h"

namespace keypool::config {
namespace {

// A value as text; nullopt when the YAML value was not a scalar (a list, a mapping or
// null), which every rule refuses with its usual message.
using Text = std::optional<std::string_view>;
// The problem with a value, or nullopt when it was accepted and stored.
using Problem = std::optional<std::string>;

// Quantities are capped so sums such as now_ms + timeout or used + chunk cannot overflow
// anywhere downstream, and so a stray digit cannot ask for exabytes.
constexpr int64_t kMaxQuantity = 2'147'483'647;

Problem int_problem(int64_t lo, int64_t hi, bool too_big) {
  if (hi != kMaxQuantity) {
    return "must be an integer between " + std::to_string(lo) + " and " + std::to_string(hi);
  }
  if (too_big) return "must be at most " + std::to_string(kMaxQuantity);
  return lo >= 1 ? "must be a positive integer" : "must be a non-negative integer";
}

template <typename Int>
Problem set_int(Text t, int64_t lo, int64_t hi, Int* out) {
  if (!t) return int_problem(lo, hi, false);
  std::optional<int64_t> v = parse_uint(*t);
  if (!v || *v < lo) return int_problem(lo, hi, false);
  if (*v > hi) return int_problem(lo, hi, true);
  *out = static_cast<Int>(*v);
  return std::nullopt;
}

Problem set_positive(Text t, int64_t* out) { return set_int(t, 1, kMaxQuantity, out); }
Problem set_non_negative(Text t, int64_t* out) { return set_int(t, 0, kMaxQuantity, out); }

bool has_control_or_space(std::string_view s) {
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) return true;
  }
  return false;
}

// Paths are kept exactly as written (relative ones resolve against the working directory
// when used); only text that no file system path should contain is refused.
Problem set_path(Text t, bool allow_empty, std::string* out) {
  if (!t) return std::string("must be a string");
  if (t->empty() && !allow_empty) return std::string("must not be empty");
  for (char c : *t) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return std::string("must not contain control characters");
    }
  }
  *out = std::string(*t);
  return std::nullopt;
}

Problem set_host(Text t, std::string* out) {
  if (!t) return std::string("must be a string");
  if (t->empty()) return std::string("must not be empty");
  if (has_control_or_space(*t)) return std::string("must not contain spaces or control characters");
  *out = std::string(*t);
  return std::nullopt;
}

// "" (metrics on the main port) or host:port, where an IPv6 host is in brackets.
Problem set_listen(Text t, std::string* out) {
  static const std::string kExpected = "must be empty or host:port (e.g. 127.0.0.1:9090)";
  if (!t) return kExpected;
  std::string_view s = *t;
  if (!s.empty()) {
    size_t colon = s.rfind(':');
    if (colon == std::string_view::npos || colon == 0 || has_control_or_space(s)) return kExpected;
    std::string_view host = s.substr(0, colon);
    bool bracketed = host.front() == '[';
    if (bracketed && (host.size() < 3 || host.back() != ']')) return kExpected;
    if (!bracketed && host.find_first_of(":[]") != std::string_view::npos) return kExpected;
    std::optional<int64_t> port = parse_uint(s.substr(colon + 1));
    if (!port || *port > 65535) return kExpected;
  }
  *out = std::string(s);
  return std::nullopt;
}

Problem set_bool(Text t, bool* out) {
  // Only the two plain words: YAML 1.1's yes/no/on/off are easy to write by accident.
  if (t && *t == "true")
    *out = true;
  else if (t && *t == "false")
    *out = false;
  else
    return std::string("must be true or false");
  return std::nullopt;
}

Problem set_level(Text t, log::Level* out) {
  if (!t || !log::parse_level(*t, out))
    return std::string("must be one of debug, info, warn, error");
  return std::nullopt;
}

Problem set_format(Text t, log::Format* out) {
  if (!t || !log::parse_format(*t, out)) return std::string("must be one of json, pretty");
  return std::nullopt;
}

struct Field {
  std::string_view path;  // dotted YAML path; a path without a dot is a top-level key
  std::string_view env;   // variable that overrides it, "" if none
  Problem (*apply)(Config&, Text);
};

// The order here is the order of the shipped config/keypool.yaml.
const Field kFields[] = {
    {"server.host", "SERVER_HOST", [](Config& c, Text t) { return set_host(t, &c.host); }},
    {"server.port", "SERVER_PORT", [](Config& c, Text t) { return set_int(t, 0, 65535, &c.port); }},
    {"server.workers", "WORKERS", [](Config& c, Text t) { return set_int(t, 1, 64, &c.workers); }},
    {"server.max_connections", "",
     [](Config& c, Text t) { return set_positive(t, &c.limits.max_connections); }},
    {"limits.max_header_bytes", "",
     [](Config& c, Text t) { return set_positive(t, &c.limits.max_header_bytes); }},
    {"limits.max_header_count", "",
     [](Config& c, Text t) { return set_positive(t, &c.limits.max_header_count); }},
    {"limits.max_admin_body_bytes", "",
     [](Config& c, Text t) { return set_positive(t, &c.limits.max_admin_body_bytes); }},
    {"limits.max_url_bytes", "",
     [](Config& c, Text t) { return set_positive(t, &c.limits.max_url_bytes); }},
    {"timeouts.request_head_ms", "",
     [](Config& c, Text t) { return set_positive(t, &c.timeouts.request_head_ms); }},
    {"timeouts.idle_keepalive_ms", "",
     [](Config& c, Text t) { return set_positive(t, &c.timeouts.idle_keepalive_ms); }},
    {"timeouts.drain_ms", "",
     [](Config& c, Text t) { return set_positive(t, &c.timeouts.drain_ms); }},
    {"timeouts.upstream_connect_ms", "",
     [](Config& c, Text t) { return set_positive(t, &c.timeouts.upstream_connect_ms); }},
    {"timeouts.upstream_head_ms", "",
     [](Config& c, Text t) { return set_positive(t, &c.timeouts.upstream_head_ms); }},
    {"timeouts.upstream_idle_ms", "",
     [](Config& c, Text t) { return set_positive(t, &c.timeouts.upstream_idle_ms); }},
    // 0 is meaningful and the default: a call lasts as long as bytes keep moving.
    {"timeouts.request_total_ms", "",
     [](Config& c, Text t) { return set_non_negative(t, &c.timeouts.request_total_ms); }},
    {"timeouts.upstream_pool_idle_ms", "",
     [](Config& c, Text t) { return set_positive(t, &c.timeouts.upstream_pool_idle_ms); }},
    // 0 is meaningful: look the name up for every new connection.
    {"timeouts.upstream_dns_cache_ms", "",
     [](Config& c, Text t) { return set_non_negative(t, &c.timeouts.upstream_dns_cache_ms); }},
    // More than a handful of tries only multiplies the latency of a failing request.
    {"proxy.max_attempts", "",
     [](Config& c, Text t) { return set_int(t, 1, 16, &c.proxy.max_attempts); }},
    // 0 is meaningful: only bodiless requests are retried on another key.
    {"proxy.replay_buffer_bytes", "",
     [](Config& c, Text t) { return set_non_negative(t, &c.proxy.replay_buffer_bytes); }},
    {"proxy.default_cooldown_s", "",
     [](Config& c, Text t) { return set_positive(t, &c.proxy.default_cooldown_s); }},
    // 0 is meaningful: no upstream keep-alive.
    {"proxy.max_idle_per_origin", "",
     [](Config& c, Text t) { return set_non_negative(t, &c.proxy.max_idle_per_origin); }},
    {"proxy.write_high_watermark", "",
     [](Config& c, Text t) { return set_positive(t, &c.proxy.write_high_watermark); }},
    {"proxy.extra_ca_file", "UPSTREAM_CA_FILE",
     [](Config& c, Text t) { return set_path(t, true, &c.proxy.extra_ca_file); }},
    // A probe is one cheap upstream call per suspended key; a week between probes is the
    // longest wait that still notices a key that came back.
    {"health.probe_initial_s", "",
     [](Config& c, Text t) { return set_int(t, 1, 604800, &c.health.probe_initial_s); }},
    {"health.probe_max_s", "",
     [](Config& c, Text t) { return set_int(t, 1, 604800, &c.health.probe_max_s); }},
    {"store.db_path", "DB_PATH", [](Config& c, Text t) { return set_path(t, false, &c.db_path); }},
    // 0 keeps the audit log for ever.
    {"audit.retention_days", "",
     [](Config& c, Text t) { return set_int(t, 0, 36500, &c.audit_retention_days); }},
    {"services_dir", "SERVICES_DIR",
     [](Config& c, Text t) { return set_path(t, false, &c.services_dir); }},
    {"bootstrap_file", "BOOTSTRAP_FILE",
     [](Config& c, Text t) { return set_path(t, true, &c.bootstrap_file); }},
    {"metrics.listen", "METRICS_LISTEN",
     [](Config& c, Text t) { return set_listen(t, &c.metrics_listen); }},
    {"log.level", "LOG_LEVEL", [](Config& c, Text t) { return set_level(t, &c.log_level); }},
    {"log.format", "LOG_FORMAT", [](Config& c, Text t) { return set_format(t, &c.log_format); }},
    {"security.allow_core_dumps", "",
     [](Config& c, Text t) { return set_bool(t, &c.allow_core_dumps); }},
    {"ui.session_idle_s", "UI_SESSION_IDLE_S",
     [](Config& c, Text t) { return set_positive(t, &c.ui.session_idle_s); }},
    {"ui.session_max_s", "UI_SESSION_MAX_S",
     [](Config& c, Text t) { return set_positive(t, &c.ui.session_max_s); }},
};

const Field* find_field(std::string_view path) {
  for (const Field& f : kFields) {
    if (f.path == path) return &f;
  }
  return nullptr;
}

std::string_view section_of(std::string_view path) {
  size_t dot = path.find('.');
  return dot == std::string_view::npos ? std::string_view() : path.substr(0, dot);
}

// Top-level names in table order: sections and plain keys.
std::vector<std::string_view> top_level_names() {
  std::vector<std::string_view> out;
  for (const Field& f : kFields) {
    std::string_view s = section_of(f.path);
    std::string_view name = s.empty() ? f.path : s;
    if (out.empty() || out.back() != name) out.push_back(name);
  }
  return out;
}

std::vector<std::string_view> keys_of_section(std::string_view section) {
  std::vector<std::string_view> out;
  for (const Field& f : kFields) {
    if (section_of(f.path) == section) out.push_back(f.path.substr(section.size() + 1));
  }
  return out;
}

// A secret in a file ends up in backups, images and version control, so it is refused
// even when the environment would have overridden it.
std::optional<std::string_view> secret_env_for(std::string_view key) {
  std::string k = to_lower(key);
  for (char& c : k) {
    if (c == '-') c = '_';
  }
  if (k == "encryption_key") return "ENCRYPTION_KEY";
  if (k == "admin_token") return "ADMIN_TOKEN";
  return std::nullopt;
}

Text scalar_text(const YAML::Node& n) {
  if (!n.IsScalar()) return std::nullopt;
  return std::string_view(n.Scalar());
}

// One key of the file: a secret, a known field, or an unknown name with the list of
// names that would have been accepted.
Result<void> apply_yaml_key(Config& c, const std::string& source, std::string_view path,
                            const YAML::Node& value, std::string_view section) {
  std::string_view key = section.empty() ? path : path.substr(section.size() + 1);
  if (auto env = secret_env_for(key)) {
    return field_error(
        source, path,
        "secrets are read only from the environment; remove it and set " + std::string(*env));
  }
  const Field* f = find_field(path);
  if (!f) {
    auto expected = section.empty() ? top_level_names() : keys_of_section(section);
    return field_error(source, path, "unknown key (expected " + join_names(expected) + ")");
  }
  if (Problem p = f->apply(c, scalar_text(value))) return field_error(source, path, *p);
  return Ok{};
}

Result<void> apply_yaml_section(Config& c, const std::string& source, const std::string& section,
                                const YAML::Node& node) {
  // An empty section (every line commented out) is the same as an absent one.
  if (node.IsNull()) return Ok{};
  if (!node.IsMap()) return field_error(source, section, "must be a mapping");
  auto entries = yaml_map_entries(node, source, section);
  if (!entries) return entries.error();
  for (const auto& [key, value] : *entries) {
    auto r = apply_yaml_key(c, source, join_field(section, key), value, section);
    if (!r) return r;
  }
  return Ok{};
}

bool is_section(std::string_view name) {
  for (const Field& f : kFields) {
    if (section_of(f.path) == name) return true;
  }
  return false;
}

Result<void> apply_yaml(Config& c, const std::string& source, std::string_view text) {
  auto doc = load_yaml_document(text, source);
  if (!doc) return doc.error();
  if (doc->IsNull()) return Ok{};  // an empty file: all defaults
  if (!doc->IsMap()) return field_error(source, "", "the top level must be a mapping");
  auto entries = yaml_map_entries(*doc, source, "");
  if (!entries) return entries.error();
  for (const auto& [key, value] : *entries) {
    auto r = is_section(key) ? apply_yaml_section(c, source, key, value)
                             : apply_yaml_key(c, source, key, value, "");
    if (!r) return r;
  }
  return Ok{};
}

// Reads the whole file. nullopt with errno ENOENT means "missing", which the caller may
// tolerate; any other failure is reported.
std::optional<std::string> read_file(const std::string& path, int* err) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) {
    *err = errno;
    return std::nullopt;
  }
  std::string text;
  char buf[8192];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  bool failed = std::ferror(f) != 0;
  *err = failed ? EIO : 0;
  std::fclose(f);
  if (failed) return std::nullopt;
  return text;
}

// all: when given, every bad variable is reported there instead of stopping at the first.
// Applies every environment override; each bad one is added to problems.
void apply_env_overrides(Config& c, const GetEnv& getenv, std::vector<Error>& problems) {
  for (const Field& f : kFields) {
    if (f.env.empty()) continue;
    const char* v = getenv(std::string(f.env).c_str());
    // Set-but-empty is applied like any value: METRICS_LISTEN= turns the listener off,
    // SERVER_PORT= is an error rather than a silent default.
    if (!v) continue;
    if (Problem p = f.apply(c, std::string_view(v))) problems.push_back(field_error("env", f.env, *p));
  }
}

bool is_hex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) return false;
  }
  return true;
}

// Messages about secrets describe the rule and never echo the value (not even a part).
Result<void> apply_encryption_key(Config& c, const char* v) {
  constexpr std::string_view kHow = "generate one with: openssl rand -hex 32";
  std::string_view s = v ? std::string_view(v) : std::string_view();
  if (s.empty()) {
    return field_error("env", "ENCRYPTION_KEY",
                       "required (64 hex characters; " + std::string(kHow) + ")");
  }
  if (s.size() != 64) {
    return field_error("env", "ENCRYPTION_KEY",
                       "must be exactly 64 hex characters, got " + std::to_string(s.size()) + " (" +
                           std::string(kHow) + ")");
  }
  if (!is_hex(s)) {
    return field_error("env", "ENCRYPTION_KEY",
                       "must contain only hex characters 0-9, a-f (" + std::string(kHow) + ")");
  }
  c.encryption_key_hex = Secret(std::string(s));
  return Ok{};
}

Result<void> apply_admin_token(Config& c, const char* v) {
  std::string_view s = v ? std::string_view(v) : std::string_view();
  if (s.empty()) {
    return field_error(
        "env", "ADMIN_TOKEN",
        "required (at least 16 characters; generate one with: openssl rand -hex 32)");
  }
  // The token travels in an HTTP header, where whitespace and control bytes would be
  // trimmed, folded or rejected before it could ever match.
  for (char ch : s) {
    auto u = static_cast<unsigned char>(ch);
    if (u <= 0x20 || u >= 0x7f) {
      return field_error("env", "ADMIN_TOKEN",
                         "must contain only printable ASCII characters without whitespace");
    }
  }
  if (s.size() < 16) return field_error("env", "ADMIN_TOKEN", "must be at least 16 characters");
  c.admin_token = Secret(std::string(s));
  return Ok{};
}

}  // namespace

namespace {

// One pass over the file, the environment and the secrets that notes every problem, in
// order, and carries on: load_config answers with the first, check-config lists them all.
std::vector<Error> load_into(Config& c, const std::string& path, bool path_required, const GetEnv& getenv) {
  std::vector<Error> problems;
  auto note = [&](Result<void> r) {
    if (!r) problems.push_back(r.error());
  };
  int err = 0;
  std::optional<std::string> text = read_file(path, &err);
  if (text) {
    c.source = path;
    note(apply_yaml(c, path, *text));
  } else if (err != ENOENT || path_required) {
    problems.push_back(field_error(path, "", std::string("cannot read config file: ") + std::strerror(err)));
  }
  apply_env_overrides(c, getenv, problems);
  note(apply_encryption_key(c, getenv("ENCRYPTION_KEY")));
  note(apply_admin_token(c, getenv("ADMIN_TOKEN")));
  return problems;
}

}  // namespace

Result<Config> load_config(const std::string& path, bool path_required, const GetEnv& getenv) {
  Config c;
  auto problems = load_into(c, path, path_required, getenv);
  if (!problems.empty()) return problems.front();
  return c;
}

std::vector<std::string> config_problems(const std::string& path, bool path_required, const GetEnv& getenv) {
  return inspect_config(path, path_required, getenv).problems;
}

ConfigReport inspect_config(const std::string& path, bool path_required, const GetEnv& getenv) {
  ConfigReport r;
  for (const auto& e : load_into(r.config, path, path_required, getenv)) r.problems.push_back(e.message);
  return r;
}

}  // namespace keypool::config
