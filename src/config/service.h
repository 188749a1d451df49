#pragma once
// ServiceDef: one upstream API, parsed once from services.d/<name>.yaml or an admin call
// into an immutable struct. The data plane never sees YAML or JSON.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "http/headers.h"

namespace keypool::config {

enum class AuthScheme { Bearer, XApiKey, XiApiKey, AuthorizationRaw, AuthorizationToken, QueryParam };

Result<AuthScheme> parse_auth_scheme(std::string_view s);
std::string_view to_string(AuthScheme s);
// The request header a scheme writes the key into ("Authorization", "x-api-key",
// "xi-api-key"), or "" for query-param. Fixed service headers may not set it.
std::string_view auth_header_name(AuthScheme s);

// What an upstream error answer says about the key that made the request (key_errors).
//   Suspend:  the key is invalid or out of quota: take it out and probe it until it works.
//   Cooldown: the key is rate limited: rest it for as long as the answer says.
//   Pass:     the request itself was refused: the answer goes to the client, the key is fine.
enum class KeyAction { Suspend, Cooldown, Pass };
Result<KeyAction> parse_key_action(std::string_view s);
std::string_view to_string(KeyAction a);

// One key_errors rule: an answer with this status (and, when given, whose body contains
// body_contains, compared without regard to ASCII case) gets this action. Rules are tried in
// order before the built-in defaults.
struct KeyErrorRule {
  int status = 0;
  std::string body_contains;  // "" = any body
  KeyAction action = KeyAction::Pass;
  std::string reason;  // Suspend only: recorded with the suspension; "" = "invalid" or, for 402/429, "quota"
};

// A cheap request that tells whether a key works (health_check), sent with the key injected
// as the service's auth_scheme says and the service's fixed headers.
struct HealthCheck {
  std::string method = "GET";  // GET or HEAD
  std::string path;            // under base_url; may carry a query
  std::vector<int> expect{200};
  http::Headers headers;       // extra headers only the probe sends (e.g. anthropic-version)
};

struct ServiceDef {
  std::string name;          // [a-z0-9][a-z0-9_-]{0,63}: the /v1/<name>/ path segment
  std::string display_name;  // defaults to name
  std::string base_url;      // as written, e.g. https://api.groq.com
  // base_url split up:
  bool tls = true;           // https
  std::string host;          // lower-case host name or IP literal (no brackets)
  uint16_t port = 443;
  std::string base_path;     // "" or "/openai" (no trailing slash)
  AuthScheme auth_scheme = AuthScheme::Bearer;
  std::string auth_param = "api_key";  // query-param scheme only
  http::Headers headers;     // fixed extra upstream headers
  int64_t rate_limit_rpm = 0;  // per-key budget when the tier does not list the feature; 0 = none
  std::string feature;       // defaults to name
  // Whether a team token may arrive as ?api_key= (URLs end up in shell histories and
  // access logs, so only services whose clients cannot send a header opt in).
  bool accept_query_token = false;
  std::vector<KeyErrorRule> key_errors;  // checked before the defaults (keys/outcome.h)
  std::optional<HealthCheck> health_check;
  std::string source;        // file path, or "admin" for services added through the API
};

}  // namespace keypool::config
