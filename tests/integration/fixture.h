#pragma once
// A running keypool for integration tests: its own temp dir (database, services.d, log),
// fresh secrets, an ephemeral loopback port, and shortcuts for admin calls.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <vector>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "support/http_client.h"
#include "support/process.h"

namespace keypool::testing {

inline const std::string kEncryptionKey = "6f1c2a9e4b7d8c0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081";
inline const std::string kAdminToken = "adm_test_0123456789abcdef0123456789";

struct Keypool {
  TempDir dir;
  std::map<std::string, std::string> env;
  std::unique_ptr<KeypoolProcess> proc;
  uint16_t port = 0;
  // Config file passed to --config; "" means config/keypool.yaml from the source tree.
  // Set it (e.g. with write_config) before start().
  std::string config_path;

  explicit Keypool(std::map<std::string, std::string> extra_env = {}, bool start_now = true) {
    env = {{"ENCRYPTION_KEY", kEncryptionKey}, {"ADMIN_TOKEN", kAdminToken},
           {"SERVER_PORT", "0"},             {"SERVER_HOST", "127.0.0.1"},
           {"DB_PATH", dir.path + "/data/pool.db"}, {"SERVICES_DIR", dir.path + "/services.d"},
           {"LOG_LEVEL", "debug"}};
    for (auto& [k, v] : extra_env) env[k] = v;
    std::system(("mkdir -p " + dir.path + "/services.d").c_str());
    if (start_now) start();
  }
  ~Keypool() {
    if (proc && proc->running()) proc->stop(SIGTERM, 10000);
    check_logs_hold_no_secret();
  }

  // Every key value and token a test handed to or got from keypool (through admin()), plus
  // the admin token and ENCRYPTION_KEY: none may ever appear in any log line keypool wrote,
  // at LOG_LEVEL=debug. Checked for every Keypool the suite starts.
  std::vector<std::string> secrets{kEncryptionKey, kAdminToken};
  void remember_secret(const std::string& s) {
    if (s.size() >= 8) secrets.push_back(s);
  }
  void check_logs_hold_no_secret() {
    std::string all;
    for (const auto& entry : std::filesystem::directory_iterator(dir.path)) {
      auto name = entry.path().filename().string();
      if (name.rfind("keypool-", 0) != 0 || entry.path().extension() != ".log") continue;
      std::ifstream in(entry.path());
      all.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    // A started keypool at LOG_LEVEL=debug always logs: nothing to scan means the scan broke.
    if (proc) CHECK_FALSE(all.empty());
    for (const auto& s : secrets) {
      INFO("a secret reached keypool's log (showing its length only): " << s.size());
      CHECK(all.find(s) == std::string::npos);
      // The log is JSON: a secret with quotes or backslashes would appear escaped.
      std::string escaped = nlohmann::json(s).dump();
      escaped = escaped.substr(1, escaped.size() - 2);
      if (escaped != s) CHECK(all.find(escaped) == std::string::npos);
    }
  }

  void write_service(const std::string& name, const std::string& yaml) {
    std::ofstream(dir.path + "/services.d/" + name + ".yaml") << yaml;
  }
  // Writes a copy of config/keypool.yaml into the temp dir with the given keys' values
  // replaced ("upstream_head_ms" -> "300"; each key must name one line of that file) and
  // makes it the config for the next start().
  std::string write_config(const std::map<std::string, std::string>& values) {
    std::ifstream in(source_dir() + "/config/keypool.yaml");
    std::string line, out;
    size_t replaced = 0;
    while (std::getline(in, line)) {
      auto key_start = line.find_first_not_of(' ');
      auto colon = line.find(':');
      if (key_start != std::string::npos && colon != std::string::npos && line[key_start] != '#') {
        auto it = values.find(line.substr(key_start, colon - key_start));
        if (it != values.end()) {
          line = line.substr(0, colon) + ": " + it->second;
          ++replaced;
        }
      }
      out += line + "\n";
    }
    if (replaced != values.size()) throw std::runtime_error("write_config: unknown config key");
    config_path = dir.path + "/keypool.yaml";
    std::ofstream(config_path) << out;
    return config_path;
  }
  void start() {
    std::string config = config_path.empty() ? source_dir() + "/config/keypool.yaml" : config_path;
    proc = std::make_unique<KeypoolProcess>(std::vector<std::string>{"--config", config}, env, dir.path);
    port = proc->wait_for_port(15000);
  }
  int stop() { return proc->stop(SIGTERM, 15000); }
  void kill9() { proc->kill9(); }
  void restart() {
    stop();
    start();
  }

  Response admin(const std::string& method, const std::string& path, const nlohmann::json& body = nullptr) {
    HeaderList h{{"Authorization", "Bearer " + kAdminToken}};
    std::string b;
    if (!body.is_null()) {
      h.push_back({"Content-Type", "application/json"});
      b = body.dump();
    }
    auto r = request(port, method, path, h, b);
    if (body.is_object() && body.contains("key") && body["key"].is_string()) {
      const std::string key = body["key"].get<std::string>();
      remember_secret(key);
      // A stored key shorter than that would be skipped by the log scan below.
      if (r.status == 201) CHECK_MESSAGE(key.size() >= 8, "test keys must be 8+ chars to be scanned for in logs");
    }
    auto j = nlohmann::json::parse(r.body, nullptr, false);
    if (j.is_object() && j.contains("token") && j["token"].is_string()) remember_secret(j["token"].get<std::string>());
    if (j.is_object() && j.contains("value") && j["value"].is_string()) remember_secret(j["value"].get<std::string>());
    return r;
  }
  Response get(const std::string& path, HeaderList h = {}) { return request(port, "GET", path, h); }
};

}  // namespace keypool::testing
