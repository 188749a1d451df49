#include "config/config.h"

#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

namespace cfg = keypool::config;

namespace {

const std::string kKey(64, 'a');
const std::string kToken = "0123456789abcdef-token";

// A fake environment: only what the test puts in it exists.
struct Env {
  std::map<std::string, std::string> vars = {{"ENCRYPTION_KEY", kKey}, {"ADMIN_TOKEN", kToken}};
  cfg::GetEnv fn() const {
    return [this](const char* name) -> const char* {
      auto it = vars.find(name);
      return it == vars.end() ? nullptr : it->second.c_str();
    };
  }
};

// A YAML file under /tmp that removes itself.
struct TempYaml {
  std::string path;
  explicit TempYaml(const std::string& text) {
    char tmpl[] = "/tmp/keypool_config_XXXXXX";
    int fd = mkstemp(tmpl);
    REQUIRE(fd >= 0);
    REQUIRE(write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
    close(fd);
    path = tmpl;
  }
  ~TempYaml() { std::remove(path.c_str()); }
};

const std::string kMissing = "/tmp/keypool-no-such-config.yaml";

std::string error_of(const std::string& yaml, const Env& env = Env()) {
  TempYaml f(yaml);
  auto r = cfg::load_config(f.path, true, env.fn());
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == keypool::ErrorCode::Invalid);
  // Strip the random file name so the expectations read like the real messages.
  std::string msg = r.error().message;
  REQUIRE(msg.rfind(f.path + ": ", 0) == 0);
  return "F: " + msg.substr(f.path.size() + 2);
}

std::string env_error(const Env& env) {
  auto r = cfg::load_config(kMissing, false, env.fn());
  REQUIRE_FALSE(r.ok());
  return r.error().message;
}

std::string source_dir() {
  const char* d = std::getenv("KEYPOOL_SOURCE_DIR");
  return d && *d ? d : ".";
}

}  // namespace

TEST_CASE("config: defaults with only the two required env vars") {
  Env env;
  auto r = cfg::load_config(kMissing, false, env.fn());
  REQUIRE(r.ok());
  const cfg::Config& c = *r;
  cfg::Config d;  // the defaults declared in config.h
  CHECK(c.host == "127.0.0.1");
  CHECK(c.port == 8080);
  CHECK(c.workers == 1);
  CHECK(c.db_path == "./data/pool.db");
  CHECK(c.services_dir == "./services.d");
  CHECK(c.metrics_listen == "");
  CHECK(c.log_level == keypool::log::Level::Info);
  CHECK(c.log_format == keypool::log::Format::Json);
  CHECK_FALSE(c.allow_core_dumps);
  CHECK(c.encryption_key_hex.view() == kKey);
  CHECK(c.admin_token.view() == kToken);
  CHECK(c.limits.max_header_bytes == d.limits.max_header_bytes);
  CHECK(c.limits.max_connections == d.limits.max_connections);
  CHECK(c.timeouts.upstream_head_ms == d.timeouts.upstream_head_ms);
  CHECK(c.proxy.max_attempts == d.proxy.max_attempts);
  CHECK(c.proxy.extra_ca_file == "");
  CHECK(c.source == "");
}

TEST_CASE("config: a required file that is missing is an error") {
  Env env;
  auto r = cfg::load_config(kMissing, true, env.fn());
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message == kMissing + ": cannot read config file: No such file or directory");
}

TEST_CASE("config: each env override") {
  Env env;
  env.vars["SERVER_HOST"] = "0.0.0.0";
  env.vars["SERVER_PORT"] = "0";
  env.vars["DB_PATH"] = "/var/lib/keypool/pool.db";
  env.vars["LOG_LEVEL"] = "debug";
  env.vars["LOG_FORMAT"] = "pretty";
  env.vars["WORKERS"] = "64";
  env.vars["SERVICES_DIR"] = "conf/services";
  env.vars["UPSTREAM_CA_FILE"] = "certs/ca.pem";
  env.vars["METRICS_LISTEN"] = "[::1]:9090";
  // The file says otherwise; the environment wins.
  TempYaml f("server: {host: 10.0.0.1, port: 9000, workers: 2}\nlog: {level: error}\n");
  auto r = cfg::load_config(f.path, true, env.fn());
  REQUIRE(r.ok());
  CHECK(r->host == "0.0.0.0");
  CHECK(r->port == 0);
  CHECK(r->db_path == "/var/lib/keypool/pool.db");
  CHECK(r->log_level == keypool::log::Level::Debug);
  CHECK(r->log_format == keypool::log::Format::Pretty);
  CHECK(r->workers == 64);
  CHECK(r->services_dir == "conf/services");  // relative paths stay as given
  CHECK(r->proxy.extra_ca_file == "certs/ca.pem");
  CHECK(r->metrics_listen == "[::1]:9090");
  CHECK(r->source == f.path);
}

TEST_CASE("config: env validation messages") {
  struct Case {
    const char* var;
    const char* value;
    const char* message;
  };
  const Case cases[] = {
      {"SERVER_PORT", "65536", "env: SERVER_PORT: must be an integer between 0 and 65535"},
      {"SERVER_PORT", "-1", "env: SERVER_PORT: must be an integer between 0 and 65535"},
      {"SERVER_PORT", "80x", "env: SERVER_PORT: must be an integer between 0 and 65535"},
      {"SERVER_PORT", "", "env: SERVER_PORT: must be an integer between 0 and 65535"},
      {"WORKERS", "0", "env: WORKERS: must be an integer between 1 and 64"},
      {"WORKERS", "65", "env: WORKERS: must be an integer between 1 and 64"},
      {"LOG_LEVEL", "verbose", "env: LOG_LEVEL: must be one of debug, info, warn, error"},
      {"LOG_FORMAT", "xml", "env: LOG_FORMAT: must be one of json, pretty"},
      {"SERVER_HOST", "", "env: SERVER_HOST: must not be empty"},
      {"DB_PATH", "", "env: DB_PATH: must not be empty"},
      {"SERVICES_DIR", "a\nb", "env: SERVICES_DIR: must not contain control characters"},
      {"METRICS_LISTEN", "9090",
       "env: METRICS_LISTEN: must be empty or host:port (e.g. 127.0.0.1:9090)"},
      {"METRICS_LISTEN", "::1:9090",
       "env: METRICS_LISTEN: must be empty or host:port (e.g. 127.0.0.1:9090)"},
      {"ENCRYPTION_KEY", "",
       "env: ENCRYPTION_KEY: required (64 hex characters; generate one with: openssl rand -hex "
       "32)"},
      {"ENCRYPTION_KEY", "abcd",
       "env: ENCRYPTION_KEY: must be exactly 64 hex characters, got 4 (generate one with: openssl "
       "rand -hex 32)"},
      {"ADMIN_TOKEN", "",
       "env: ADMIN_TOKEN: required (at least 16 characters; generate one with: openssl rand -hex "
       "32)"},
      {"ADMIN_TOKEN", "short-token", "env: ADMIN_TOKEN: must be at least 16 characters"},
      {"ADMIN_TOKEN", "0123456789 abcdefgh",
       "env: ADMIN_TOKEN: must contain only printable ASCII characters without whitespace"},
      {"ADMIN_TOKEN", "0123456789abcdefgh\t",
       "env: ADMIN_TOKEN: must contain only printable ASCII characters without whitespace"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.var);
    CAPTURE(c.value);
    Env env;
    env.vars[c.var] = c.value;
    CHECK(env_error(env) == c.message);
  }
}

TEST_CASE("config: secrets") {
  SUBCASE("missing ENCRYPTION_KEY") {
    Env env;
    env.vars.erase("ENCRYPTION_KEY");
    CHECK(env_error(env) ==
          "env: ENCRYPTION_KEY: required (64 hex characters; generate one with: openssl rand -hex "
          "32)");
  }
  SUBCASE("missing ADMIN_TOKEN") {
    Env env;
    env.vars.erase("ADMIN_TOKEN");
    CHECK(env_error(env) ==
          "env: ADMIN_TOKEN: required (at least 16 characters; generate one with: openssl rand "
          "-hex 32)");
  }
  SUBCASE("odd-length key, value never echoed") {
    Env env;
    env.vars["ENCRYPTION_KEY"] = std::string(63, 'b');
    std::string msg = env_error(env);
    CHECK(msg ==
          "env: ENCRYPTION_KEY: must be exactly 64 hex characters, got 63 (generate one with: "
          "openssl rand -hex 32)");
    CHECK(msg.find("bbbb") == std::string::npos);
  }
  SUBCASE("non-hex key, value never echoed") {
    Env env;
    env.vars["ENCRYPTION_KEY"] = std::string(63, 'c') + "z";
    std::string msg = env_error(env);
    CHECK(msg ==
          "env: ENCRYPTION_KEY: must contain only hex characters 0-9, a-f (generate one with: "
          "openssl rand -hex 32)");
    CHECK(msg.find("cccc") == std::string::npos);
  }
  SUBCASE("upper-case hex is fine") {
    Env env;
    env.vars["ENCRYPTION_KEY"] = std::string(64, 'F');
    CHECK(cfg::load_config(kMissing, false, env.fn()).ok());
  }
  SUBCASE("short token not echoed") {
    Env env;
    env.vars["ADMIN_TOKEN"] = "sekrit-value";
    CHECK(env_error(env).find("sekrit") == std::string::npos);
  }
}

TEST_CASE("config: YAML values") {
  TempYaml f(R"(
server: {host: "::", port: 0, workers: 4, max_connections: 10}
limits: {max_header_bytes: 1000, max_header_count: 5, max_admin_body_bytes: 2000, max_url_bytes: 300}
timeouts:
  request_head_ms: 1
  idle_keepalive_ms: 2
  drain_ms: 3
  upstream_connect_ms: 4
  upstream_head_ms: 5
  upstream_idle_ms: 6
  upstream_pool_idle_ms: 7
  upstream_dns_cache_ms: 0
proxy: {max_attempts: 5, replay_buffer_bytes: 0, default_cooldown_s: 9, max_idle_per_origin: 0, write_high_watermark: 11, extra_ca_file: ca.pem}
store: {db_path: db.sqlite}
services_dir: svc
metrics: {listen: "127.0.0.1:9100"}
log: {level: warn, format: pretty}
security: {allow_core_dumps: true}
)");
  Env env;
  auto r = cfg::load_config(f.path, true, env.fn());
  REQUIRE(r.ok());
  CHECK(r->host == "::");
  CHECK(r->port == 0);
  CHECK(r->workers == 4);
  CHECK(r->limits.max_connections == 10);
  CHECK(r->limits.max_header_bytes == 1000);
  CHECK(r->limits.max_header_count == 5);
  CHECK(r->limits.max_admin_body_bytes == 2000);
  CHECK(r->limits.max_url_bytes == 300);
  CHECK(r->timeouts.request_head_ms == 1);
  CHECK(r->timeouts.idle_keepalive_ms == 2);
  CHECK(r->timeouts.drain_ms == 3);
  CHECK(r->timeouts.upstream_connect_ms == 4);
  CHECK(r->timeouts.upstream_head_ms == 5);
  CHECK(r->timeouts.upstream_idle_ms == 6);
  CHECK(r->timeouts.upstream_pool_idle_ms == 7);
  CHECK(r->timeouts.upstream_dns_cache_ms == 0);
  CHECK(r->proxy.max_attempts == 5);
  CHECK(r->proxy.replay_buffer_bytes == 0);
  CHECK(r->proxy.default_cooldown_s == 9);
  CHECK(r->proxy.max_idle_per_origin == 0);
  CHECK(r->proxy.write_high_watermark == 11);
  CHECK(r->proxy.extra_ca_file == "ca.pem");
  CHECK(r->db_path == "db.sqlite");
  CHECK(r->services_dir == "svc");
  CHECK(r->metrics_listen == "127.0.0.1:9100");
  CHECK(r->log_level == keypool::log::Level::Warn);
  CHECK(r->log_format == keypool::log::Format::Pretty);
  CHECK(r->allow_core_dumps);
}

TEST_CASE("config: empty file and empty sections mean defaults") {
  Env env;
  TempYaml empty("");
  CHECK(cfg::load_config(empty.path, true, env.fn()).ok());
  TempYaml sections("# all commented out\nserver:\nlimits:\n");
  auto r = cfg::load_config(sections.path, true, env.fn());
  REQUIRE(r.ok());
  CHECK(r->port == 8080);
}

TEST_CASE("config: YAML validation messages") {
  struct Case {
    const char* yaml;
    const char* message;
  };
  const Case cases[] = {
      {"server: {port: 70000}", "F: server.port: must be an integer between 0 and 65535"},
      {"server: {port: [1]}", "F: server.port: must be an integer between 0 and 65535"},
      {"server: {port: }", "F: server.port: must be an integer between 0 and 65535"},
      {"server: {hots: x}",
       "F: server.hots: unknown key (expected host, port, workers, max_connections)"},
      {"sever: {}",
       "F: sever: unknown key (expected server, limits, timeouts, proxy, health, store, audit, services_dir, "
       "bootstrap_file, metrics, log, security, ui)"},
      {"server: {host: {a: b}}", "F: server.host: must be a string"},
      {"server: 8080", "F: server: must be a mapping"},
      {"- a\n- b", "F: the top level must be a mapping"},
      {"server: {port: 1, port: 2}", "F: server.port: duplicate key"},
      {"limits: {max_header_bytes: 0}", "F: limits.max_header_bytes: must be a positive integer"},
      {"limits: {max_header_bytes: -5}", "F: limits.max_header_bytes: must be a positive integer"},
      {"limits: {max_header_bytes: 1.5}", "F: limits.max_header_bytes: must be a positive integer"},
      {"limits: {max_header_bytes: 99999999999}",
       "F: limits.max_header_bytes: must be at most 2147483647"},
      {"timeouts: {drain_ms: 0}", "F: timeouts.drain_ms: must be a positive integer"},
      {"proxy: {max_attempts: 0}", "F: proxy.max_attempts: must be an integer between 1 and 16"},
      {"proxy: {max_idle_per_origin: -1}",
       "F: proxy.max_idle_per_origin: must be a non-negative integer"},
      {"timeouts: {upstream_dns_cache_ms: -1}",
       "F: timeouts.upstream_dns_cache_ms: must be a non-negative integer"},
      {"log: {level: loud}", "F: log.level: must be one of debug, info, warn, error"},
      {"security: {allow_core_dumps: yes}", "F: security.allow_core_dumps: must be true or false"},
      {"services_dir: ''", "F: services_dir: must not be empty"},
      {"admin_token: abcdefghijklmnopq",
       "F: admin_token: secrets are read only from the environment; remove it and set ADMIN_TOKEN"},
      {"security: {encryption_key: 00}",
       "F: security.encryption_key: secrets are read only from the environment; remove it and set "
       "ENCRYPTION_KEY"},
      {"ENCRYPTION_KEY: 00",
       "F: ENCRYPTION_KEY: secrets are read only from the environment; remove it and set "
       "ENCRYPTION_KEY"},
      {"server: {port: 1}\n---\nserver: {port: 2}", "F: expected one YAML document, found more"},
      {",\n", "F: expected one YAML document, found more"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.yaml);
    CHECK(error_of(c.yaml) == c.message);
  }
}

TEST_CASE("config: YAML syntax errors give the line") {
  std::string msg = error_of("server:\n  port: 1\n  host: [unclosed\n");
  CHECK(msg.rfind("F: line ", 0) == 0);
  CHECK(msg.find("invalid YAML") != std::string::npos);
  CHECK(msg.find('\n') == std::string::npos);
}

TEST_CASE("config: a secret in the file is refused even when the env sets it") {
  std::string msg = error_of("admin_token: this-is-the-secret-value\n");
  CHECK(msg.find("this-is-the-secret-value") == std::string::npos);
}

TEST_CASE("config: the shipped config/keypool.yaml loads and equals the defaults") {
  Env env;
  std::string path = source_dir() + "/config/keypool.yaml";
  auto r = cfg::load_config(path, true, env.fn());
  REQUIRE_MESSAGE(r.ok(), r.error().message);
  cfg::Config d;
  CHECK(r->source == path);
  CHECK(r->host == d.host);
  CHECK(r->port == d.port);
  CHECK(r->workers == d.workers);
  CHECK(r->db_path == d.db_path);
  CHECK(r->services_dir == d.services_dir);
  CHECK(r->metrics_listen == d.metrics_listen);
  CHECK(r->log_level == d.log_level);
  CHECK(r->log_format == d.log_format);
  CHECK(r->allow_core_dumps == d.allow_core_dumps);
  CHECK(r->ui.session_idle_s == d.ui.session_idle_s);
  CHECK(r->ui.session_max_s == d.ui.session_max_s);
  CHECK(r->limits.max_header_bytes == d.limits.max_header_bytes);
  CHECK(r->limits.max_header_count == d.limits.max_header_count);
  CHECK(r->limits.max_admin_body_bytes == d.limits.max_admin_body_bytes);
  CHECK(r->limits.max_connections == d.limits.max_connections);
  CHECK(r->limits.max_url_bytes == d.limits.max_url_bytes);
  CHECK(r->timeouts.request_head_ms == d.timeouts.request_head_ms);
  CHECK(r->timeouts.idle_keepalive_ms == d.timeouts.idle_keepalive_ms);
  CHECK(r->timeouts.drain_ms == d.timeouts.drain_ms);
  CHECK(r->timeouts.upstream_connect_ms == d.timeouts.upstream_connect_ms);
  CHECK(r->timeouts.upstream_head_ms == d.timeouts.upstream_head_ms);
  CHECK(r->timeouts.upstream_idle_ms == d.timeouts.upstream_idle_ms);
  CHECK(r->timeouts.upstream_pool_idle_ms == d.timeouts.upstream_pool_idle_ms);
  CHECK(r->timeouts.upstream_dns_cache_ms == d.timeouts.upstream_dns_cache_ms);
  CHECK(r->proxy.max_attempts == d.proxy.max_attempts);
  CHECK(r->proxy.replay_buffer_bytes == d.proxy.replay_buffer_bytes);
  CHECK(r->proxy.default_cooldown_s == d.proxy.default_cooldown_s);
  CHECK(r->proxy.max_idle_per_origin == d.proxy.max_idle_per_origin);
  CHECK(r->proxy.write_high_watermark == d.proxy.write_high_watermark);
  CHECK(r->proxy.extra_ca_file == d.proxy.extra_ca_file);
}

TEST_CASE("config: config_problems names every problem, not just the first") {
  Env env;
  env.vars = {{"SERVER_PORT", "99999"}, {"LOG_LEVEL", "loud"}};
  TempYaml f("server:\n  workers: 0\n");
  auto problems = cfg::config_problems(f.path, true, env.fn());
  REQUIRE(problems.size() == 5);
  CHECK(problems[0] == f.path + ": server.workers: must be an integer between 1 and 64");
  CHECK(problems[1] == "env: SERVER_PORT: must be an integer between 0 and 65535");
  CHECK(problems[2] == "env: LOG_LEVEL: must be one of debug, info, warn, error");
  CHECK(problems[3].rfind("env: ENCRYPTION_KEY: required", 0) == 0);
  CHECK(problems[4].rfind("env: ADMIN_TOKEN: required", 0) == 0);
  CHECK(cfg::config_problems(kMissing, false, Env().fn()).empty());
}

TEST_CASE("config: ui.session_idle_s and ui.session_max_s, from the file and the environment") {
  Env env;
  auto defaults = cfg::load_config(kMissing, false, env.fn());
  REQUIRE(defaults.ok());
  CHECK(defaults->ui.session_idle_s == 1800);
  CHECK(defaults->ui.session_max_s == 43200);
  TempYaml f("ui:\n  session_idle_s: 60\n  session_max_s: 600\n");
  auto r = cfg::load_config(f.path, true, env.fn());
  REQUIRE_MESSAGE(r.ok(), r.error().message);
  CHECK(r->ui.session_idle_s == 60);
  CHECK(r->ui.session_max_s == 600);
  env.vars["UI_SESSION_IDLE_S"] = "5";
  auto e = cfg::load_config(f.path, true, env.fn());
  REQUIRE(e.ok());
  CHECK(e->ui.session_idle_s == 5);
  CHECK(error_of("ui:\n  session_max_s: 0\n").find("F: ui.session_max_s: ") == 0);
}
