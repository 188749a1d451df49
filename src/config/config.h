#pragma once
// Config: config/keypool.yaml overridden by the environment, parsed once into an
// immutable struct. Every error names the field (and file) and what is wrong, so main
// can print one line and exit 2 before anything listens.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/secret.h"
#include "config/service.h"
#include "telemetry/log.h"

namespace keypool::config {

struct Limits {
  int64_t max_header_bytes = 64 * 1024;
  int64_t max_header_count = 100;
  int64_t max_admin_body_bytes = 1024 * 1024;
  int64_t max_connections = 4096;          // per worker; beyond it: 503 and close
  int64_t max_url_bytes = 8 * 1024;
};

struct Timeouts {  // all milliseconds
  int64_t request_head_ms = 10'000;      // the request head alone, from its first byte
  int64_t idle_keepalive_ms = 60'000;    // idle client connection between requests
  int64_t drain_ms = 10'000;             // SIGTERM: in-flight requests get this long
  int64_t upstream_connect_ms = 5'000;   // DNS + TCP + TLS handshake
  int64_t upstream_head_ms = 120'000;    // request sent -> response head (LLM calls are slow)
  int64_t upstream_idle_ms = 120'000;    // gap between body bytes, either direction
  int64_t request_total_ms = 0;          // whole call, head arrived -> response end; 0 = none
  int64_t upstream_pool_idle_ms = 30'000;  // pooled keep-alive connection expiry
  int64_t upstream_dns_cache_ms = 30'000;  // a looked-up name's addresses are reused this long
};

struct ProxyOptions {
  int64_t max_attempts = 3;                     // failover: tries across keys
  int64_t replay_buffer_bytes = 1024 * 1024;    // request bodies up to this are retryable
  int64_t default_cooldown_s = 60;              // 429 without a reset header
  int64_t max_idle_per_origin = 256;            // upstream keep-alive connections kept
  int64_t write_high_watermark = 256 * 1024;    // stop reading the other side above this
  std::string extra_ca_file;                    // added to the system CAs for upstream TLS
};

struct UiOptions {  // the admin console's browser sessions (src/session)
  int64_t session_idle_s = 1800;    // unused this long: logged out
  int64_t session_max_s = 43200;    // since login, however busy: logged out
};

// Suspended keys are probed with exponential backoff: the first probe probe_initial_s after
// the suspension, then twice as long each time it fails, up to probe_max_s.
struct HealthOptions {
  int64_t probe_initial_s = 60;
  int64_t probe_max_s = 3600;
};

struct Config {
  std::string host = "127.0.0.1";
  int port = 8080;
  int workers = 1;
  std::string db_path = "./data/pool.db";
  std::string services_dir = "./services.d";
  std::string bootstrap_file;  // "" = none; tiers, keys and tokens applied at start and SIGHUP
  int64_t audit_retention_days = 90;  // audit rows older than this are pruned; 0 = kept for ever
  std::string metrics_listen;  // "" = /metrics on the main port behind the admin token
  log::Level log_level = log::Level::Info;
  log::Format log_format = log::Format::Json;
  bool allow_core_dumps = false;
  Secret encryption_key_hex;  // 64 hex chars, validated
  Secret admin_token;         // non-empty, validated
  Limits limits;
  Timeouts timeouts;
  ProxyOptions proxy;
  UiOptions ui;
  HealthOptions health;
  std::string source;  // the config file path that was read
};

// Reads `path` (YAML; a missing file is an error only when `path_required`) and applies
// the environment through `getenv` (injectable for tests): ENCRYPTION_KEY, ADMIN_TOKEN,
// SERVER_HOST, SERVER_PORT, DB_PATH, LOG_LEVEL, LOG_FORMAT, WORKERS, SERVICES_DIR,
// UPSTREAM_CA_FILE, METRICS_LISTEN. The secrets come only from the environment; the file
// may not name them. Unknown YAML keys are errors. The error (ErrorCode::Invalid) is one
// line "<source>: <field>: <problem>", e.g.
//   "config/keypool.yaml: server.port: must be an integer between 0 and 65535"
//   "env: ENCRYPTION_KEY: required (64 hex characters; generate one with: openssl rand -hex 32)"
// and never contains a secret's value.
using GetEnv = std::function<const char*(const char*)>;
Result<Config> load_config(const std::string& path, bool path_required, const GetEnv& getenv);
// For check-config: every problem load_config would stop at, one line each (the file's
// first problem, each bad environment variable, each missing or malformed secret).
std::vector<std::string> config_problems(const std::string& path, bool path_required, const GetEnv& getenv);
// The same, with the config as far as it could be read (a refused value keeps its
// default), so that check-config goes on to check the services.d that config names.
struct ConfigReport {
  Config config;
  std::vector<std::string> problems;
};
ConfigReport inspect_config(const std::string& path, bool path_required, const GetEnv& getenv);

}  // namespace keypool::config
