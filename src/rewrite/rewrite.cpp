#include "rewrite/rewrite.h"

#include <algorithm>
#include <array>
#include <optional>
#include <vector>

#include "base/strings.h"

namespace keypool::rewrite {
namespace {

// RFC 9110 §7.6.1 hop-by-hop fields, plus the legacy Proxy-Connection that some clients
// still send. They describe the downstream connection, not the request.
constexpr std::array<std::string_view, 9> kHopByHop = {
    "connection", "proxy-connection",    "keep-alive",        "te", "trailer", "transfer-encoding",
    "upgrade",    "proxy-authorization", "proxy-authenticate"};

// Where a caller may put its team token. The upstream must never see it: it is keypool's
// secret, and the service would reject it anyway.
constexpr std::array<std::string_view, 4> kCredentialHeaders = {"authorization", "x-api-key",
                                                                "xi-api-key", "api-key"};

// Host is rebuilt for the upstream origin; Content-Length is re-added by serialize_head from
// the framing the proxy chose. Expect is dropped because the downstream server answers
// "100 Continue" itself and the body is streamed to the upstream as it arrives.
constexpr std::array<std::string_view, 3> kRebuilt = {"host", "content-length", "expect"};

constexpr std::string_view kControlPrefix = "x-keypool-";

bool in_list(std::string_view lower_name, const auto& list) {
  return std::find(list.begin(), list.end(), lower_name) != list.end();
}

// Every field the client named in Connection is hop-by-hop too (RFC 9110 §7.6.1).
std::vector<std::string> connection_tokens(const http::Headers& headers) {
  std::vector<std::string> out;
  for (const auto& h : headers) {
    if (!iequals(h.name, "connection")) continue;
    for (auto part : split(h.value, ','))
      if (auto t = trim(part); !t.empty()) out.push_back(to_lower(t));
  }
  return out;
}

bool should_strip(const std::string& lower_name, const std::vector<std::string>& named,
                  bool upgrade) {
  if (upgrade && lower_name == "upgrade") return false;
  if (in_list(lower_name, kHopByHop) || in_list(lower_name, kCredentialHeaders) ||
      in_list(lower_name, kRebuilt) || starts_with(lower_name, kControlPrefix))
    return true;
  return std::find(named.begin(), named.end(), lower_name) != named.end();
}

void append_filtered_headers(http::Headers& out, const http::Headers& client, bool upgrade) {
  auto named = connection_tokens(client);
  for (const auto& h : client)
    if (!should_strip(to_lower(h.name), named, upgrade)) out.push_back(h);
}

// Query names are compared decoded ("api%5Fkey" is still api_key); an undecodable name is
// compared as written.
std::string decoded_name(std::string_view part) {
  std::string raw(part.substr(0, part.find('=')));
  std::replace(raw.begin(), raw.end(), '+', ' ');
  auto d = percent_decode(raw);
  return d ? std::move(*d) : raw;
}

// Removes the client's own credential parameters, keeping every other byte and the order.
std::string filter_query(std::string_view query, std::string_view auth_param) {
  if (query.empty()) return {};
  std::string out;
  bool first = true;
  for (auto part : split(query, '&')) {
    auto name = decoded_name(part);
    if (name == "api_key" || name == auth_param) continue;
    if (!first) out.push_back('&');
    out.append(part);
    first = false;
  }
  return out;
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

// Fixed service headers win over whatever the client sent under the same name.
void add_fixed_headers(http::Headers& headers, const http::Headers& fixed) {
  for (const auto& f : fixed) http::remove_header(headers, f.name);
  for (const auto& f : fixed) headers.push_back(f);
}

std::string build_target(const config::ServiceDef& svc, std::string_view rest,
                         std::string_view query, std::string_view key_value) {
  std::string target = svc.base_path;
  target.append(rest.empty() ? std::string_view("/") : rest);
  std::string q = filter_query(query, svc.auth_param);
  if (svc.auth_scheme == config::AuthScheme::QueryParam) {
    if (!q.empty()) q.push_back('&');
    q.append(svc.auth_param).push_back('=');
    q.append(percent_encode(key_value));
  }
  if (!q.empty()) target.append("?").append(q);
  return target;
}

bool is_tchar(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}

bool is_safe_header(const http::Header& h) {
  if (h.name.empty()) return false;
  for (unsigned char c : h.name)
    if (!is_tchar(c)) return false;
  for (unsigned char c : h.value)
    if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
  return true;
}

// RFC 3986 unreserved characters pass; every other byte becomes %XX in the given digits.
std::string encode_with(std::string_view s, const char* hex) {
  std::string out;
  out.reserve(s.size());
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
  return out;
}

}  // namespace

std::string percent_encode(std::string_view s) { return encode_with(s, "0123456789ABCDEF"); }

std::string host_header(const config::ServiceDef& svc) {
  bool v6 = svc.host.find(':') != std::string::npos;
  std::string out = v6 ? "[" + svc.host + "]" : svc.host;
  uint16_t default_port = svc.tls ? 443 : 80;
  if (svc.port != default_port) out.append(":").append(std::to_string(svc.port));
  return out;
}

UpstreamRequest build(const config::ServiceDef& svc, std::string_view method, std::string_view rest,
                      std::string_view query, const http::Headers& client_headers,
                      std::string_view key_value, bool upgrade) {
  UpstreamRequest r;
  r.method = std::string(method);
  r.target = build_target(svc, rest, query, key_value);
  r.headers.reserve(client_headers.size() + svc.headers.size() + 3);
  r.headers.push_back({"Host", host_header(svc)});
  append_filtered_headers(r.headers, client_headers, upgrade);
  add_fixed_headers(r.headers, svc.headers);
  if (upgrade) r.headers.push_back({"Connection", "Upgrade"});
  if (auto auth = auth_header(svc.auth_scheme)) {
    // A fixed header of the same name must not ride along with the key (two credentials).
    http::remove_header(r.headers, auth->name);
    r.headers.push_back(
        {std::string(auth->name), std::string(auth->prefix) + std::string(key_value)});
  }
  return r;
}

std::string serialize_head(const UpstreamRequest& r, BodyFraming framing, uint64_t content_length) {
  std::string out;
  out.reserve(256);
  out.append(r.method).append(" ").append(r.target).append(" HTTP/1.1\r\n");
  for (const auto& h : r.headers) {
    if (!is_safe_header(h)) continue;
    out.append(h.name).append(": ").append(h.value).append("\r\n");
  }
  switch (framing) {
    case BodyFraming::None:
      break;
    case BodyFraming::ContentLength:
      out.append("Content-Length: ").append(std::to_string(content_length)).append("\r\n");
      break;
    case BodyFraming::Chunked:
      out.append("Transfer-Encoding: chunked\r\n");
      break;
  }
  out.append("\r\n");
  return out;
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
