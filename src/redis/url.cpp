#include "redis/url.h"

#include <charconv>

namespace keypool::redis {
namespace {

Error bad(std::string what) { return make_error(ErrorCode::Invalid, "redis url: " + std::move(what)); }

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// %XX escapes decoded; false on a broken escape.
bool percent_decode(std::string_view in, std::string* out) {
  out->clear();
  out->reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out->push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) return false;
    int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return true;
}

template <class T>
bool parse_number(std::string_view s, T* out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}

// "user:password", ":password", "password"-less "user" or "" (userinfo before '@').
Result<void> parse_userinfo(std::string_view info, Url* url) {
  std::string user, password;
  auto colon = info.find(':');
  bool ok = colon == std::string_view::npos
                ? percent_decode(info, &user)
                : percent_decode(info.substr(0, colon), &user) && percent_decode(info.substr(colon + 1), &password);
  if (!ok) {
    explicit_bzero(password.data(), password.size());
    return bad("broken percent-escape in the user or password");
  }
  if (colon == std::string_view::npos) {
    // "redis://secret@host" is how many tools write a password without a user; taking it as
    // a user name would put the secret in AUTH's user slot and in describe().
    url->password = Secret(std::move(user));
    return Ok{};
  }
  url->user = std::move(user);
  url->password = Secret(std::move(password));
  return Ok{};
}

Result<void> parse_host_port(std::string_view hp, Url* url) {
  std::string_view port;
  if (!hp.empty() && hp[0] == '[') {
    auto close = hp.find(']');
    if (close == std::string_view::npos) return bad("unclosed '[' in the host");
    url->host.assign(hp.substr(1, close - 1));
    std::string_view rest = hp.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') return bad("unexpected characters after the host");
      port = rest.substr(1);
      if (port.empty()) return bad("empty port");
    }
  } else {
    auto colon = hp.rfind(':');
    if (colon != std::string_view::npos) {
      port = hp.substr(colon + 1);
      hp = hp.substr(0, colon);
      if (port.empty()) return bad("empty port");
    }
    url->host.assign(hp);
  }
  if (url->host.empty()) return bad("no host");
  if (!port.empty()) {
    unsigned p = 0;
    if (!parse_number(port, &p) || p == 0 || p > 65535) return bad("port must be 1-65535");
    url->port = static_cast<uint16_t>(p);
  }
  return Ok{};
}

}  // namespace

std::string Url::describe() const {
  std::string out = tls ? "rediss://" : "redis://";
  if (!user.empty()) out += user + "@";
  out += host.find(':') != std::string::npos ? "[" + host + "]" : host;
  out += ":" + std::to_string(port) + "/" + std::to_string(db);
  return out;
}

Result<Url> parse_url(std::string_view s) {
  Url url;
  if (s.starts_with("redis://")) {
    s.remove_prefix(8);
  } else if (s.starts_with("rediss://")) {
    url.tls = true;
    s.remove_prefix(9);
  } else {
    return bad("must start with redis:// or rediss://");
  }
  // The path (db) and query start at the first '/' or '?' after the authority; the
  // userinfo ends at the last '@' before it (a password may contain '@' unescaped).
  auto end = s.find_first_of("/?");
  std::string_view authority = s.substr(0, end);
  std::string_view path = end == std::string_view::npos ? std::string_view() : s.substr(end);
  auto at = authority.rfind('@');
  if (at != std::string_view::npos) {
    auto r = parse_userinfo(authority.substr(0, at), &url);
    if (!r) return r.error();
    authority = authority.substr(at + 1);
  }
  if (auto r = parse_host_port(authority, &url); !r) return r.error();
  if (!path.empty() && path[0] == '?') return bad("query parameters are not supported");
  if (path.size() > 1) {
    std::string_view db = path.substr(1);
    if (db.find('?') != std::string_view::npos) return bad("query parameters are not supported");
    if (!parse_number(db, &url.db) || url.db < 0) return bad("db must be a non-negative number");
  }
  return url;
}

}  // namespace keypool::redis
