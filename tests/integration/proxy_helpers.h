#pragma once
// Shortcuts for proxy integration tests: service YAML, a tier with keys and a team token set
// up through the admin API, keypool's resident memory, and a free (closed) loopback port.
#include <doctest/doctest.h>
#include <strings.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <thread>
#include <fstream>
#include <string>
#include <vector>

#include "fixture.h"
#include "support/fake_upstream.h"

namespace keypool::testing {

inline int64_t ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
}

inline void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// /metrics as text, behind the admin token.
inline std::string metrics_text(Keypool& kp) {
  auto r = kp.get("/metrics", {{"Authorization", "Bearer " + kAdminToken}});
  REQUIRE_MESSAGE(r.status == 200, r.status << " " << r.body);
  return r.body;
}

// The value of one sample, exactly as named with its labels ("x{a=\"b\"}"); 0 when absent.
inline double metric_value(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 && line[series.size()] == ' ')
      return std::strtod(line.c_str() + series.size() + 1, nullptr);
  return 0;
}

// services.d YAML for a service at base_url; `extra` is appended as is (auth_param, headers...).
inline std::string service_yaml(const std::string& name, const std::string& base_url,
                                const std::string& scheme = "bearer", const std::string& extra = "") {
  return "name: " + name + "\nbase_url: " + base_url + "\nauth_scheme: " + scheme + "\n" + extra;
}

inline void add_tier(Keypool& kp, const std::string& name, const nlohmann::json& features) {
  auto r = kp.admin("POST", "/admin/tiers", {{"name", name}, {"features", features}});
  REQUIRE_MESSAGE(r.status == 201, "POST /admin/tiers: " << r.status << " " << r.body);
}

// Returns the new key's id.
inline int64_t add_key(Keypool& kp, const std::string& name, const std::string& value,
                       const std::string& tier, const std::string& service) {
  auto r = kp.admin("POST", "/admin/keys",
                    {{"name", name}, {"key", value}, {"tier", tier}, {"service", service}});
  REQUIRE_MESSAGE(r.status == 201, "POST /admin/keys: " << r.status << " " << r.body);
  return r.json()["id"].get<int64_t>();
}

// Returns the whole answer: "id", "token", ...
inline nlohmann::json add_token(Keypool& kp, nlohmann::json body) {
  if (!body.contains("name")) body["name"] = "team";
  auto r = kp.admin("POST", "/admin/tokens", body);
  REQUIRE_MESSAGE(r.status == 201, "POST /admin/tokens: " << r.status << " " << r.body);
  return r.json();
}

// The usual single-service setup on a started keypool: tier "t" covering `service` at `rpm`
// per key, one key per value, and a team token for the tier. Returns the token.
inline std::string setup_pool(Keypool& kp, const std::string& service,
                              const std::vector<std::string>& keys, int64_t rpm = 10000) {
  add_tier(kp, "t", {{service, rpm}});
  int n = 0;
  for (const auto& k : keys) add_key(kp, "key" + std::to_string(n++), k, "t", service);
  return add_token(kp, {{"tier", "t"}})["token"].get<std::string>();
}

// VmRSS of a process in KiB (0 if unreadable).
inline long rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return 0;
}

// A loopback port nobody listens on: bound by the kernel, then closed.
inline uint16_t closed_port() {
  uint16_t port = 0;
  int fd = listen_loopback(&port);
  ::close(fd);
  return port;
}

// Does `text` occur anywhere in what the upstream saw (target, header names and values)?
inline bool upstream_saw(const RecordedRequest& r, const std::string& text) {
  if (r.target.find(text) != std::string::npos) return true;
  for (const auto& [k, v] : r.headers)
    if (k.find(text) != std::string::npos || v.find(text) != std::string::npos) return true;
  return false;
}

inline int header_count(const HeaderList& h, const std::string& name) {
  int n = 0;
  for (const auto& [k, v] : h)
    if (strcasecmp(k.c_str(), name.c_str()) == 0) ++n;
  return n;
}

}  // namespace keypool::testing
