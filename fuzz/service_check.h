#pragma once
// Shared by fuzz_service_yaml and fuzz_admin_json: what every accepted ServiceDef must
// satisfy, and the JSON round trip the admin API and the store rely on
// (service_to_json -> service_from_json gives the same service back).
#include <algorithm>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "config/service.h"
#include "config/services.h"
#include "fuzz_check.h"
#include "rewrite/rewrite.h"
#include "router/router.h"

namespace fuzz {

inline bool is_tchar(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}

// Header order is not compared: service_to_json writes the headers as a JSON object, which
// nlohmann keeps sorted by name (header names are unique per service, so nothing is lost).
inline bool same_service(const keypool::config::ServiceDef& a, const keypool::config::ServiceDef& b) {
  auto sorted = [](keypool::http::Headers h) {
    std::sort(h.begin(), h.end(), [](const auto& x, const auto& y) { return x.name < y.name; });
    return h;
  };
  auto ha = sorted(a.headers), hb = sorted(b.headers);
  if (ha.size() != hb.size()) return false;
  for (size_t i = 0; i < ha.size(); ++i)
    if (ha[i].name != hb[i].name || ha[i].value != hb[i].value) return false;
  return a.name == b.name && a.display_name == b.display_name && a.base_url == b.base_url &&
         a.tls == b.tls && a.host == b.host && a.port == b.port && a.base_path == b.base_path &&
         a.auth_scheme == b.auth_scheme && a.auth_param == b.auth_param &&
         a.rate_limit_rpm == b.rate_limit_rpm && a.feature == b.feature;
}

// `from_json`: the def came from parsed JSON, so its strings are valid UTF-8 and a plain
// dump() (as admin/services.cpp does before storing it) must not throw.
inline void check_service(const keypool::config::ServiceDef& s, bool from_json) {
  using namespace keypool;
  FUZZ_CHECK(router::is_valid_service_name(s.name), "name routable under /v1/<name>/");
  FUZZ_CHECK(router::is_valid_service_name(s.feature), "feature is a slug");
  FUZZ_CHECK(!s.host.empty() && s.port != 0, "host and port set");
  for (char c : s.host)
    FUZZ_CHECK(!(c >= 'A' && c <= 'Z') && c != '[' && c != ']' && c != '/' && c != '@' && c != ' ',
               "host is lower-case, unbracketed, without path or userinfo");
  FUZZ_CHECK(s.base_path.empty() || (s.base_path[0] == '/' && s.base_path.back() != '/'),
             "base_path is '' or '/x' without a trailing slash");
  for (unsigned char c : s.base_path) FUZZ_CHECK(c > 0x20 && c < 0x7f && c != '?' && c != '#', "base_path clean");
  std::string host = rewrite::host_header(s);
  for (unsigned char c : host) FUZZ_CHECK(c > 0x20 && c < 0x7f, "Host header value clean");
  for (const auto& h : s.headers) {
    FUZZ_CHECK(!h.name.empty(), "header name present");
    for (unsigned char c : h.name) FUZZ_CHECK(is_tchar(c), "header name is a token");
    FUZZ_CHECK(h.value.find_first_of(std::string_view("\r\n\0", 3)) == std::string::npos,
               "header value without CR/LF/NUL");
  }
  nlohmann::json j = config::service_to_json(s);
  std::string dumped = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (from_json) {
    try {
      dumped = j.dump();
    } catch (const nlohmann::json::exception& e) {
      std::fprintf(stderr, "dump: %s\n", e.what());
      FUZZ_CHECK(false, "service_to_json(def).dump() throws");
    }
  }
  auto back = config::service_from_json(j, "admin");
  if (!back) std::fprintf(stderr, "round trip error: %s\n", back.error().message.c_str());
  FUZZ_CHECK(back.ok(), "service_to_json output is accepted by service_from_json");
  FUZZ_CHECK(same_service(s, *back), "JSON round trip gives the same service");
  // What the store keeps is parsed again on start-up.
  auto stored = nlohmann::json::parse(dumped, nullptr, false);
  FUZZ_CHECK(!stored.is_discarded(), "stored JSON parses");
  auto again = config::service_from_json(stored, "store");
  if (from_json) {
    FUZZ_CHECK(again.ok() && same_service(s, *again), "stored JSON gives the same service");
  }
}

}  // namespace fuzz
