#include "rewrite/rewrite.h"

#include <algorithm>
#include <array>
#include <cassert>
#include <charconv>
#include <cstring>
#include <optional>
#include <vector>

#include "base/sized_writer.h"
#include "base/strings.h"

namespace keypool::rewrite {
namespace {

// Whether a client header belongs to the downstream hop or identifies the caller:
// - RFC 9110 §7.6.1 hop-by-hop fields, plus the legacy Proxy-Connection that some clients
//   still send. They describe the downstream connection, not the request.
// - Where a caller may put its team token. The upstream must never see it: it is keypool's
//   secret, and the service would reject it anyway.
// - Host is rebuilt for the upstream origin; Content-Length is re-added from the framing the
//   proxy chose. Expect is dropped because the downstream server answers "100 Continue"
//   itself and the body is streamed to the upstream as it arrives.
// - Accept-Encoding: keypool reads the answer (usage, key masking), so it asks for identity
//   itself (append_headers); the client still gets text it can read.
// - keypool's own control headers (X-Keypool-*).
// Switched on the id the parser gave the name; only names of no listed id are looked at
// again, for the control prefix.
bool fixed_downstream_name(http::FieldId id, std::string_view name) {
  using http::FieldId;
  if (http::is_credential_field(id)) return true;
  switch (id) {
    case FieldId::Te:
    case FieldId::Host:
    case FieldId::Expect:
    case FieldId::Trailer:
    case FieldId::Upgrade:
    case FieldId::Connection:
    case FieldId::KeepAlive:
    case FieldId::ContentLength:
    case FieldId::AcceptEncoding:
    case FieldId::ProxyConnection:
    case FieldId::TransferEncoding:
    case FieldId::ProxyAuthenticate:
    case FieldId::Http2Settings:  // only an h2c offer sends it, and keypool ignores those
      return true;
    default: {
      // Every other id too, not just Other: an X-Keypool-* name given an id of its own
      // (X-Keypool-Session) must still stay here.
      constexpr std::string_view kControlPrefix = "x-keypool-";
      return name.size() >= kControlPrefix.size() && ascii_lower(name[0]) == 'x' &&
             iequals(name.substr(0, kControlPrefix.size()), kControlPrefix);
    }
  }
}

bool stays_downstream(const http::Header& h, const http::ConnectionTokens& connection,
                      bool upgrade) {
  const http::FieldId id = http::field_id(h);
  // A WebSocket handshake needs its Upgrade upstream, even though Connection names it.
  if (upgrade && id == http::FieldId::Upgrade) return false;
  return fixed_downstream_name(id, h.name) || connection.names(h);
}

bool is_fixed(std::string_view name, const config::ServiceDef& svc) {
  return std::any_of(svc.headers.begin(), svc.headers.end(),
                     [&](const http::Header& f) { return iequals(f.name, name); });
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Whether percent_decode would accept s: every '%' followed by two hex digits.
bool decodable(std::string_view s) {
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') continue;
    if (i + 2 >= s.size() || hex_digit(s[i + 1]) < 0 || hex_digit(s[i + 2]) < 0) return false;
    i += 2;
  }
  return true;
}

// Query names are compared decoded, '+' as a space ("api%5Fkey" is still api_key); a name
// with a malformed escape is compared as written. Decoded on the fly: no copy per parameter.
bool param_named(std::string_view param, std::string_view want) {
  std::string_view raw = param.substr(0, param.find('='));
  bool decode = decodable(raw);
  size_t matched = 0;
  for (size_t i = 0; i < raw.size(); ++i, ++matched) {
    char c = raw[i];
    if (c == '+') {
      c = ' ';
    } else if (c == '%' && decode) {
      c = static_cast<char>(hex_digit(raw[i + 1]) * 16 + hex_digit(raw[i + 2]));
      i += 2;
    }
    if (matched == want.size() || want[matched] != c) return false;
  }
  return matched == want.size();
}

// The client's query without its own credential parameters, every other byte and the order
// kept.
void append_filtered_query(SizedWriter& out, std::string_view query, std::string_view auth_param) {
  if (query.empty()) return;
  bool first = true;
  for (;;) {
    size_t amp = query.find('&');
    std::string_view param = query.substr(0, amp);
    if (!param_named(param, "api_key") && !param_named(param, auth_param)) {
      if (!first) out.push_back('&');
      out.append(param);
      first = false;
    }
    if (amp == std::string_view::npos) return;
    query.remove_prefix(amp + 1);
  }
}

struct AuthHeader {
  std::string_view name;
  std::string_view prefix;
};

std::optional<AuthHeader> auth_header(config::AuthScheme scheme) {
  using config::AuthScheme;
  switch (scheme) {
    case AuthScheme::Bearer:
      return AuthHeader{"Authorization", "Bearer "};
    case AuthScheme::XApiKey:
      return AuthHeader{"x-api-key", ""};
    case AuthScheme::XiApiKey:
      return AuthHeader{"xi-api-key", ""};
    case AuthScheme::AuthorizationRaw:
      return AuthHeader{"Authorization", ""};
    case AuthScheme::AuthorizationToken:
      return AuthHeader{"Authorization", "Token "};
    case AuthScheme::QueryParam:
      return std::nullopt;
  }
  return std::nullopt;
}

// RFC 3986 unreserved characters pass; every other byte becomes %XX in the given digits.
template <class Out>
void encode_to(Out& out, std::string_view s, const char* hex) {
  for (unsigned char c : s) {
    bool unreserved = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '-' || c == '.' || c == '_' || c == '~';
    if (unreserved) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
}

std::string encode_with(std::string_view s, const char* hex) {
  std::string out;
  out.reserve(s.size());
  encode_to(out, s, hex);
  return out;
}

constexpr const char* kUpperHex = "0123456789ABCDEF";

void append_target(SizedWriter& out, const config::ServiceDef& svc, std::string_view rest,
                   std::string_view query, std::string_view key_value) {
  out.append(svc.base_path).append(rest.empty() ? std::string_view("/") : rest);
  // The '?' goes in first and comes out again when no query follows it.
  size_t mark = out.size();
  out.push_back('?');
  append_filtered_query(out, query, svc.auth_param);
  if (svc.auth_scheme == config::AuthScheme::QueryParam) {
    if (out.size() > mark + 1) out.push_back('&');
    out.append(svc.auth_param).push_back('=');
    encode_to(out, key_value, kUpperHex);
  }
  if (out.size() == mark + 1) out.resize(mark);
}

// RFC 9110 token characters, as a table: every byte of every header name is looked up.
constexpr std::array<bool, 256> kTchar = [] {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = t[c - 'a' + 'A'] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] = true;
  return t;
}();

bool is_safe_name(std::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
           return kTchar[static_cast<unsigned char>(c)];
         });
}

// Without an early exit or a branch per byte, so that the compiler can vectorise it: every
// value is scanned whole in the common case anyway.
bool is_safe_value(std::string_view value) {
  unsigned char bad = 0;
  for (unsigned char c : value) bad |= ((c < 0x20) & (c != '\t')) | (c == 0x7f);
  return bad == 0;
}

// "name: value\r\n", the value written in two parts (the auth prefix and the key) so that
// neither is joined into a temporary.
void append_header(SizedWriter& out, std::string_view name, std::string_view value,
                   std::string_view value_rest = {}) {
  if (!is_safe_name(name) || !is_safe_value(value) || !is_safe_value(value_rest)) return;
  out.append(name).append(": ").append(value).append(value_rest).append("\r\n");
}

template <class Out>
void append_host(Out& out, const config::ServiceDef& svc) {
  bool v6 = svc.host.find(':') != std::string::npos;
  if (v6) out.push_back('[');
  out.append(svc.host);
  if (v6) out.push_back(']');
  uint16_t default_port = svc.tls ? 443 : 80;
  if (svc.port != default_port) {
    char digits[8];
    auto end = std::to_chars(digits, digits + sizeof digits, svc.port).ptr;
    out.push_back(':');
    out.append(std::string_view(digits, static_cast<size_t>(end - digits)));
  }
}

constexpr std::string_view kAskIdentity = "Accept-Encoding: identity\r\n";

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// A Cookie field without keypool's session cookie (http::kSessionCookieName), the other
// pairs kept in order ("a=1; b=2", RFC 6265 §4.2.1); nothing when no pair is left. The
// result is never longer than the field, so head_size_bound holds.
void append_cookie(SizedWriter& out, std::string_view name, std::string_view value) {
  if (value.find(http::kSessionCookieName) == std::string_view::npos) {
    append_header(out, name, value);  // the common case: nothing of ours in it
    return;
  }
  if (!is_safe_name(name) || !is_safe_value(value)) return;
  bool first = true;
  while (!value.empty()) {
    size_t semi = value.find(';');
    std::string_view pair = trim_ows(value.substr(0, semi));
    value.remove_prefix(semi == std::string_view::npos ? value.size() : semi + 1);
    if (pair.empty() || trim_ows(pair.substr(0, pair.find('='))) == http::kSessionCookieName) continue;
    out.append(first ? name : std::string_view()).append(first ? ": " : "; ").append(pair);
    first = false;
  }
  if (!first) out.append("\r\n");
}

bool is_cookie(const http::Header& h) {
  return h.name.size() == 6 && iequals(h.name, "cookie");
}

void append_headers(SizedWriter& out, const config::ServiceDef& svc, const ClientRequest& req,
                    std::string_view key_value) {
  // Fixed service headers win over the Host written here and over whatever the client sent
  // under the same name.
  if (!is_fixed("host", svc) && is_safe_value(svc.host)) {
    out.append("Host: ");
    append_host(out, svc);
    out.append("\r\n");
  }
  const http::ConnectionTokens connection(req.headers);
  for (const auto& h : req.headers) {
    if (stays_downstream(h, connection, req.upgrade) || is_fixed(h.name, svc)) continue;
    if (is_cookie(h)) append_cookie(out, h.name, h.value);
    else append_header(out, h.name, h.value);
  }
  auto auth = auth_header(svc.auth_scheme);
  for (const auto& f : svc.headers)
    // A fixed header with the key's header name must not ride along with it (two credentials).
    if (!auth || !iequals(f.name, auth->name)) append_header(out, f.name, f.value);
  if (req.upgrade) append_header(out, "Connection", "Upgrade");
  // Measured in bench/README.md: identity costs keypool nothing and the upstream link a few
  // KiB per answer, while decoding costs CPU per byte. An operator's fixed Accept-Encoding
  // wins (the proxy then decodes what comes back).
  else if (!is_fixed("accept-encoding", svc)) out.append(kAskIdentity);
  if (auth) append_header(out, auth->name, auth->prefix, key_value);
}

void append_framing(SizedWriter& out, BodyFraming framing, uint64_t content_length) {
  switch (framing) {
    case BodyFraming::None:
      break;
    case BodyFraming::ContentLength: {
      char digits[24];
      auto end = std::to_chars(digits, digits + sizeof digits, content_length).ptr;
      out.append("Content-Length: ").append(std::string_view(digits, static_cast<size_t>(end - digits))).append("\r\n");
      break;
    }
    case BodyFraming::Chunked:
      out.append("Transfer-Encoding: chunked\r\n");
      break;
  }
}

constexpr size_t kLineEnd = 2;      // "\r\n"
constexpr size_t kHeaderExtra = 4;  // ": " and "\r\n"

// The most the head can take: every input counted whole, as if nothing were stripped.
size_t head_size_bound(const config::ServiceDef& svc, const ClientRequest& req,
                       std::string_view key_value) {
  size_t n = req.method.size() + std::string_view(" HTTP/1.1").size() + 1 + kLineEnd;
  // target: '/' for an empty rest, '?', '&' before the key, "param=" and the key at 3 bytes
  // per byte once percent-encoded
  n += svc.base_path.size() + req.rest.size() + 1 + req.query.size() + 2 + svc.auth_param.size() +
       1 + 3 * key_value.size();
  n += std::string_view("Host: []:65535").size() + svc.host.size() + kLineEnd;
  for (const auto& h : req.headers) n += h.name.size() + h.value.size() + kHeaderExtra;
  for (const auto& h : svc.headers) n += h.name.size() + h.value.size() + kHeaderExtra;
  n += std::max(std::string_view("Connection: Upgrade").size() + kLineEnd, kAskIdentity.size());
  if (auto auth = auth_header(svc.auth_scheme))
    n += auth->name.size() + auth->prefix.size() + key_value.size() + kHeaderExtra;
  n += std::string_view("Content-Length: 18446744073709551615").size() + kLineEnd;
  return n + kLineEnd;
}

}  // namespace

std::string percent_encode(std::string_view s) { return encode_with(s, kUpperHex); }

std::string host_header(const config::ServiceDef& svc) {
  std::string out;
  append_host(out, svc);
  return out;
}

std::string upstream_head(const config::ServiceDef& svc, const ClientRequest& req,
                          std::string_view key_value) {
  std::string head;
  upstream_head_into(head, svc, req, key_value);
  return head;
}

void upstream_head_into(std::string& head, const config::ServiceDef& svc, const ClientRequest& req,
                        std::string_view key_value) {
  // Sized once and shrunk at the end, never grown: a reallocation would leave an unwiped
  // copy of the key behind. Sizing it may reallocate, but only before the key is written.
  head.resize(head_size_bound(svc, req, key_value));
  SizedWriter out(head.data(), head.size());
  out.append(req.method).push_back(' ');
  append_target(out, svc, req.rest, req.query, key_value);
  out.append(" HTTP/1.1\r\n");
  append_headers(out, svc, req, key_value);
  append_framing(out, req.framing, req.content_length);
  out.append("\r\n");
  head.resize(out.size());
}

size_t mask_secret(std::string& text, std::string_view secret) {
  if (secret.empty()) return 0;
  std::vector<std::string> forms = {std::string(secret), percent_encode(secret),
                                    encode_with(secret, "0123456789abcdef")};
  // Longest first: an encoded form can contain the raw secret ("a%25" encodes to "a%2525"),
  // and masking the raw one first would leave the rest of the encoded one behind.
  std::sort(forms.begin(), forms.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  forms.erase(std::unique(forms.begin(), forms.end()), forms.end());
  size_t count = 0;
  for (const auto& form : forms) {
    for (size_t pos = text.find(form); pos != std::string::npos; pos = text.find(form, pos + 3)) {
      text.replace(pos, form.size(), "***");
      ++count;
    }
  }
  return count;
}

size_t mask_fragments(std::string& text, std::string_view secret) {
  size_t n = mask_secret(text, secret);
  constexpr size_t kRun = 6;
  if (secret.size() >= kRun) {
    // Every 6-character window of the secret: a partial echo of any part of the key.
    for (size_t i = 0; i + kRun <= secret.size(); ++i) {
      std::string_view piece = secret.substr(i, kRun);
      for (size_t pos = text.find(piece); pos != std::string::npos; pos = text.find(piece, pos + 3)) {
        text.replace(pos, kRun, "***");
        ++n;
      }
    }
  }
  if (secret.size() >= 8) {
    // "sk-proj-****************abcd": the last four after a run of mask characters.
    std::string_view tail = secret.substr(secret.size() - 4);
    for (size_t pos = text.find(tail); pos != std::string::npos; pos = text.find(tail, pos + 1)) {
      if (pos > 0 && (text[pos - 1] == '*' || text[pos - 1] == '.')) {
        text.replace(pos, 4, "***");
        ++n;
      }
    }
  }
  return n;
}

}  // namespace keypool::rewrite
