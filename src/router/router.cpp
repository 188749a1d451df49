#include "router/router.h"

#include <array>
#include <vector>

#include "base/strings.h"

namespace keypool::router {
namespace {

Error bad_request(std::string message) {
  return make_error(ErrorCode::BadRequest, std::move(message));
}
Error not_found(std::string_view method, std::string_view path) {
  return make_error(ErrorCode::NotFound,
                    "no route for " + std::string(method) + " " + std::string(path));
}
Error unsafe_path() { return bad_request("unsafe path"); }

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Bytes never allowed raw in a target: controls, space, DEL and anything non-ASCII
// (RFC 3986 requires those to be percent-encoded; a raw one means a sloppy or hostile client).
constexpr bool is_forbidden_raw(unsigned char c) { return c <= 0x20 || c >= 0x7f; }

// Decoded bytes that would change how the path splits or reads upstream.
bool is_forbidden_decoded(unsigned char c) {
  return c < 0x20 || c == 0x7f || c == '/' || c == '\\';
}

// Decodes one path segment, refusing malformed escapes and dangerous decoded bytes.
std::optional<std::string> decode_segment(std::string_view seg) {
  std::string out;
  out.reserve(seg.size());
  for (size_t i = 0; i < seg.size(); ++i) {
    auto c = static_cast<unsigned char>(seg[i]);
    if (is_forbidden_raw(c) || c == '\\') return std::nullopt;
    if (c != '%') {
      out.push_back(static_cast<char>(c));
      continue;
    }
    if (i + 2 >= seg.size()) return std::nullopt;
    int hi = hex_digit(seg[i + 1]), lo = hex_digit(seg[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    auto d = static_cast<unsigned char>(hi * 16 + lo);
    if (is_forbidden_decoded(d)) return std::nullopt;
    out.push_back(static_cast<char>(d));
    i += 2;
  }
  return out;
}

// "." and ".." (and "..;x", which Tomcat-style upstreams read as "..") would let a client
// climb out of the service's base path once the upstream normalises the URL.
bool is_dot_segment(std::string_view decoded) {
  if (decoded.empty() || decoded.front() != '.') return false;  // the usual case, decided at once
  decoded = decoded.substr(0, decoded.find(';'));
  return decoded == "." || decoded == "..";
}

// A decoded segment that still holds an escape of '.', '/' or '\\' ("%252e" decodes to
// "%2e"): an upstream that decodes twice would see a dot segment or a separator. Refused in
// any case and wherever it sits in the segment, like the single escapes of '/' and '\\'.
bool hides_escape(std::string_view decoded) {
  for (size_t i = decoded.find('%'); i != std::string_view::npos; i = decoded.find('%', i + 1)) {
    if (i + 2 >= decoded.size()) return false;
    int hi = hex_digit(decoded[i + 1]), lo = hex_digit(decoded[i + 2]);
    if (hi < 0 || lo < 0) continue;
    const int c = hi * 16 + lo;
    if (c == '.' || c == '/' || c == '\\') return true;
  }
  return false;
}

bool segment_is_safe(std::string_view seg) {
  if (seg.find('%') == std::string_view::npos) {
    // Nothing to decode (the usual case): check the bytes where they are.
    for (char ch : seg)
      if (is_forbidden_raw(static_cast<unsigned char>(ch)) || ch == '\\') return false;
    return !is_dot_segment(seg);
  }
  auto decoded = decode_segment(seg);
  return decoded && !is_dot_segment(*decoded) && !hides_escape(*decoded);
}

// Bytes that end plainly_safe's fast walk: everything is_forbidden_raw refuses, '\\', '%'
// and '.', as a table so that the usual byte costs one lookup.
constexpr std::array<bool, 256> kPathStop = [] {
  std::array<bool, 256> t{};
  for (int c = 0; c < 256; ++c)
    t[c] = is_forbidden_raw(static_cast<unsigned char>(c)) || c == '\\' || c == '%' || c == '.';
  return t;
}();

// One pass over the whole path for what nearly every request is: no escapes and no
// segment opening with '.'. Only those two need the per-segment walk below, so the usual
// path costs one loop instead of a search per segment. False means "walk it", not "unsafe".
bool plainly_safe(std::string_view path) {
  for (size_t i = 0; i < path.size(); ++i) {
    const auto c = static_cast<unsigned char>(path[i]);
    if (!kPathStop[c]) continue;
    if (c != '.') return false;                // refused, or an escape to decode
    if (i > 0 && path[i - 1] == '/') return false;  // a segment opening with '.'
  }
  return true;
}

Result<void> check_path(std::string_view path) {
  if (path.empty() || path.front() != '/') return unsafe_path();
  if (plainly_safe(path)) return Ok{};
  std::string_view rest = path.substr(1);
  for (;;) {
    size_t slash = rest.find('/');
    if (!segment_is_safe(rest.substr(0, slash))) return unsafe_path();
    if (slash == std::string_view::npos) return Ok{};
    rest.remove_prefix(slash + 1);
  }
}

// The query goes upstream verbatim; only bytes that could break the request line are refused.
Result<void> check_query(std::string_view query) {
  for (char ch : query)
    if (is_forbidden_raw(static_cast<unsigned char>(ch))) return bad_request("unsafe query");
  return Ok{};
}

// RFC 9112 §3.2.2: a server must accept absolute-form; only its path and query matter here,
// the authority is ignored (Host routing is not keypool's job). Returns the origin-form part.
Result<std::string> strip_absolute_form(std::string_view target) {
  size_t sep = target.find("://");
  std::string_view scheme = target.substr(0, sep);
  if (!iequals(scheme, "http") && !iequals(scheme, "https"))
    return bad_request("unsupported request-target form");
  std::string_view after = target.substr(sep + 3);
  size_t path_start = after.find_first_of("/?#");
  if (path_start == 0 || after.empty()) return bad_request("absolute-form target has no host");
  // An empty path is "/" (RFC 9112 §3.2.4): "http://h?q" asks for "/?q".
  if (path_start == std::string_view::npos) return std::string("/");
  if (after[path_start] != '/') {
    std::string origin(1, '/');
    origin.append(after.substr(path_start));
    return origin;
  }
  return std::string(after.substr(path_start));
}

// The origin-form part of target: a view of target itself (the usual case) or of *storage,
// which holds what an absolute-form target rewrites to.
Result<std::string_view> origin_form(std::string_view target, std::string* storage) {
  if (target.empty()) return unsafe_path();
  if (target == "*") return bad_request("asterisk-form target is not supported");
  if (target.front() == '/') return target;
  if (target.find("://") != std::string_view::npos) {
    auto stripped = strip_absolute_form(target);
    if (!stripped) return stripped.error();
    *storage = std::move(stripped.value());
    return std::string_view(*storage);
  }
  // "host:port" (authority-form) or a relative path.
  return bad_request("unsupported request-target form");
}

// Each route_* fills the caller's Route in place (a Route is seven strings; building one
// and moving it through optionals cost every request a dozen copies) and says whether the
// path is one it owns.
bool route_proxy(std::string_view path, Route& r) {
  // path starts with "/v1/".
  std::string_view after = path.substr(4);
  size_t slash = after.find('/');
  std::string_view service = after.substr(0, slash);
  if (!is_valid_service_name(service)) return false;
  r.kind = RouteKind::Proxy;
  r.service = std::string(service);
  r.rest = slash == std::string_view::npos ? std::string("/") : std::string(after.substr(slash));
  return true;
}

bool route_admin(std::string_view path, Route& r) {
  // path starts with "/admin/". One trailing slash is tolerated ("/admin/keys/").
  std::string_view after = path.substr(7);
  if (!after.empty() && after.back() == '/') after.remove_suffix(1);
  auto segs = split(after, '/');
  if (segs.size() > 3) return false;
  std::string parts[3];
  for (size_t i = 0; i < segs.size(); ++i) {
    auto decoded = percent_decode(segs[i]);  // check_path already vetted the escapes
    if (!decoded || decoded->empty()) return false;
    parts[i] = std::move(*decoded);
  }
  r.kind = RouteKind::Admin;
  r.resource = std::move(parts[0]);
  r.id = std::move(parts[1]);
  r.action = std::move(parts[2]);
  return true;
}

bool route_path(std::string_view method, std::string_view path, Route& r) {
  // Known paths route whatever the method: the admin room answers a wrong one with 405 and
  // an Allow header, which a NotFound here could not carry.
  (void)method;
  auto fixed = [&](RouteKind k) {
    r.kind = k;
    return true;
  };
  if (path == "/health") return fixed(RouteKind::Health);
  if (path == "/metrics") return fixed(RouteKind::Metrics);
  if (path == "/key") return fixed(RouteKind::GetKey);
  if (starts_with(path, "/admin/")) return route_admin(path, r);
  if (path == "/ui" || starts_with(path, "/ui/")) return fixed(RouteKind::Ui);
  if (starts_with(path, "/v1/")) return route_proxy(path, r);
  return false;
}

}  // namespace

bool is_valid_service_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || (c != '-' && c != '_'))) return false;
  }
  return true;
}

Result<Route> route(std::string_view method, std::string_view target) {
  // CONNECT would turn keypool into an open tunnel; TRACE reflects credentials back.
  if (method == "CONNECT" || method == "TRACE")
    return bad_request("method " + std::string(method) + " is not supported");
  if (method.empty()) return bad_request("missing method");

  std::string absolute_storage;
  auto origin = origin_form(target, &absolute_storage);
  if (!origin) return origin.error();
  std::string_view rel = origin.value();
  if (rel.find('#') != std::string_view::npos) return unsafe_path();

  size_t q = rel.find('?');
  std::string_view path = rel.substr(0, q);
  std::string_view query = q == std::string_view::npos ? std::string_view() : rel.substr(q + 1);
  if (auto ok = check_path(path); !ok) return ok.error();
  if (auto ok = check_query(query); !ok) return ok.error();

  Route r;
  if (!route_path(method, path, r)) return not_found(method, path);
  // A proxy route is described by service and rest; copying the path too would cost every
  // proxied request an allocation for nothing.
  if (r.kind != RouteKind::Proxy) r.path.assign(path);
  r.query.assign(query);
  return r;
}

std::optional<std::string> query_param(std::string_view query, std::string_view name) {
  // '+' means space only when written raw; "%2B" is a literal plus, so swap before decoding.
  auto form_decode = [](std::string_view s) -> std::optional<std::string> {
    std::string raw(s);
    for (auto& c : raw)
      if (c == '+') c = ' ';
    return percent_decode(raw);
  };
  if (query.empty()) return std::nullopt;
  for (auto part : split(query, '&')) {
    size_t eq = part.find('=');
    auto key = form_decode(part.substr(0, eq));
    if (!key || *key != name) continue;
    if (eq == std::string_view::npos) return std::string();
    return form_decode(part.substr(eq + 1));
  }
  return std::nullopt;
}

}  // namespace keypool::router
