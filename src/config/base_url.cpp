#include "config/base_url.h"

#include <algorithm>
#include <cctype>
#include <optional>

#include "base/strings.h"
#include "config/parse_util.h"

namespace keypool::config {
namespace {

// '_' is not in RFC 1123 host names, but container and cluster DNS hands out names with it
// (a Compose service "keypool_admin"), and resolvers look them up.
bool is_host_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_';
}

// A DNS name or IPv4 address: letters, digits, '-', '_' and non-empty dot-separated labels.
std::optional<std::string> check_reg_name(std::string_view h) {
  if (h.empty()) return "host is required";
  if (h.size() > 253 || !std::all_of(h.begin(), h.end(), is_host_char)) {
    return "host " + quote(h) + " is not a valid host name";
  }
  for (std::string_view label : split(h, '.')) {
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return "host " + quote(h) + " is not a valid host name";
    }
  }
  return std::nullopt;
}

std::optional<std::string> check_ipv6(std::string_view h) {
  bool ok = !h.empty() && h.find(':') != std::string_view::npos &&
            std::all_of(h.begin(), h.end(), [](char c) {
              return std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.';
            });
  if (!ok) return "host " + quote(h) + " is not a valid IPv6 literal";
  return std::nullopt;
}

// RFC 3986 path characters: unreserved, sub-delims, ':', '@', '/' and %XX escapes.
std::optional<std::string> check_path(std::string_view p) {
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '%') {
      if (i + 2 >= p.size() || !std::isxdigit(static_cast<unsigned char>(p[i + 1])) ||
          !std::isxdigit(static_cast<unsigned char>(p[i + 2]))) {
        return std::string("path has a malformed %-escape");
      }
      i += 2;
      continue;
    }
    bool ok = std::isalnum(static_cast<unsigned char>(c)) ||
              std::string_view("-._~!$&'()*+,;=:@/").find(c) != std::string_view::npos;
    if (!ok) return "path contains " + quote(std::string_view(&c, 1)) + ", which must be escaped";
  }
  // Dot segments would let the prefix climb out of itself once the client's path is joined.
  for (std::string_view seg : split(p, '/')) {
    if (seg == "." || seg == "..") return std::string("path must not contain . or .. segments");
  }
  return std::nullopt;
}

std::optional<std::string> split_host_port(std::string_view authority, UrlParts* out) {
  std::string_view host = authority, port;
  if (!authority.empty() && authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return std::string("unterminated [ in host");
    host = authority.substr(1, close - 1);
    std::string_view rest = authority.substr(close + 1);
    if (!rest.empty() && rest.front() != ':') return std::string("unexpected text after ]");
    if (!rest.empty()) port = rest.substr(1);
    if (auto p = check_ipv6(host)) return p;
    if (rest.size() == 1) return std::string("port is empty");
  } else {
    size_t colon = authority.find(':');
    if (colon != std::string_view::npos) {
      if (authority.find(':', colon + 1) != std::string_view::npos) {
        return std::string("an IPv6 host must be written in brackets, e.g. http://[::1]:8080");
      }
      host = authority.substr(0, colon);
      port = authority.substr(colon + 1);
      if (port.empty()) return std::string("port is empty");
    }
    if (auto p = check_reg_name(host)) return p;
  }
  if (!port.empty()) {
    std::optional<int64_t> n = parse_uint(port);
    if (!n || *n < 1 || *n > 65535) return "port " + quote(port) + " must be between 1 and 65535";
    out->port = static_cast<uint16_t>(*n);
  }
  out->host = to_lower(host);
  return std::nullopt;
}

// http(s)://host[:port][/prefix], nothing else: the prefix is joined with the client's
// path and query, so a query, fragment or credentials here would have no sane meaning.
std::optional<std::string> parse_into(std::string_view url, UrlParts* out) {
  size_t sep = url.find("://");
  if (sep == std::string_view::npos)
    return std::string("must be an absolute URL like https://api.example.com");
  std::string scheme = to_lower(url.substr(0, sep));
  if (scheme == "https") {
    out->tls = true;
    out->port = 443;
  } else if (scheme == "http") {
    out->tls = false;
    out->port = 80;
  } else if (std::all_of(scheme.begin(), scheme.end(),
                         [](char c) { return std::isalpha(static_cast<unsigned char>(c)); })) {
    return "scheme must be http or https, not " + quote(scheme);
  } else {
    // Not a scheme at all ("user:pw@host://..."): do not quote what may be a credential.
    return std::string("scheme must be http or https");
  }
  std::string_view rest = url.substr(sep + 3);
  if (rest.find_first_of("?#") != std::string_view::npos) {
    return std::string("must not contain a query or fragment");
  }
  size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
  if (authority.find('@') != std::string_view::npos) {
    return std::string("must not contain user info (put credentials in keys, not URLs)");
  }
  if (authority.empty()) return std::string("host is required");
  if (auto p = split_host_port(authority, out)) return p;
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  if (auto p = check_path(path)) return p;
  out->path = std::string(path);
  return std::nullopt;
}

}  // namespace

Result<UrlParts> parse_base_url(std::string_view url) {
  UrlParts parts;
  if (auto problem = parse_into(url, &parts)) return make_error(ErrorCode::Invalid, *problem);
  return parts;
}

}  // namespace keypool::config
