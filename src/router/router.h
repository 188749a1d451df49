#pragma once
// Router: (method, request-target) -> Route. Pure: no I/O, no config, no state.
//
// It decides which handler owns a request and refuses any target that could be read two
// ways by keypool and the upstream (dot segments, encoded slashes, backslashes, control
// bytes, malformed escapes). It does not know which services exist: a well-formed
// /v1/<service>/... routes to Proxy and the proxy answers 404 for an unknown service.
#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"

namespace keypool::router {

enum class RouteKind { Health, GetKey, Admin, Proxy, Metrics, Ui };

struct Route {
  RouteKind kind = RouteKind::Health;
  // The path as received (checked safe, still percent-encoded), without the query; for Ui
  // routes "/ui" or "/ui/..." (the console's assets and login/logout). Empty
  // for Proxy routes: service and rest say it.
  std::string path;
  // Raw query string without '?', "" if none.
  std::string query;
  // Proxy only: "/v1/<service><rest>". rest always starts with '/' and may be just "/";
  // it is passed upstream byte for byte (double slashes included).
  std::string service, rest;
  // Admin only: "/admin/<resource>[/<id>[/<action>]]", each segment percent-decoded.
  std::string resource, id, action;
};

// Errors: BadRequest for unsafe or malformed targets and refused methods (CONNECT, TRACE);
// NotFound for paths no handler owns (including a method a fixed route does not take).
Result<Route> route(std::string_view method, std::string_view target);

// First value of `name` in a raw query string, percent-decoded with '+' as space.
// Names are compared after decoding. nullopt when absent or its value is malformed.
std::optional<std::string> query_param(std::string_view query, std::string_view name);

// [a-z0-9][a-z0-9_-]{0,63}: the only service names that can appear in a proxy path.
bool is_valid_service_name(std::string_view name);

}  // namespace keypool::router
