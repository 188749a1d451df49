#pragma once
// Header list as received or to be sent: order and duplicates preserved, names compared
// case-insensitively. A vector beats a map for the ~10-30 headers of a typical request.
#include <cassert>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace keypool::http {

// The names keypool looks up or filters. The parsers classify each name once, when it is
// complete, so the filters and lookups that run for every header of every message compare
// one byte instead of the name. Every id but Unclassified and Other stands for exactly one
// name: equal ids mean equal names, which ConnectionTokens relies on.
enum class FieldId : uint8_t {
  Unclassified,  // not classified yet (a header built in code): field_id() looks at the name
  Other,         // a name not listed below
  // Framing and routing.
  Host,
  ContentLength,
  TransferEncoding,
  Expect,
  // Hop-by-hop (RFC 9110 §7.6.1), plus the legacy Proxy-Connection.
  Connection,
  KeepAlive,
  ProxyConnection,
  Te,
  Trailer,
  Upgrade,
  ProxyAuthenticate,
  ProxyAuthorization,
  Http2Settings,
  // Where callers put their credentials.
  Authorization,
  XApiKey,
  XiApiKey,
  ApiKey,
  // Read from responses, or written by keypool.
  ContentType,
  AcceptEncoding,   // rewritten to identity upstream (src/codec)
  ContentEncoding,  // an answer keypool must decode
  RetryAfter,
  XKeypoolSession,
  XKeypoolKeyId,
};

// Case-insensitive; Other for any name not listed (never Unclassified).
FieldId classify_field(std::string_view name);

// The fields a caller's credential travels in: never sent upstream, and wiped when their
// storage is kept for reuse.
constexpr bool is_credential_field(FieldId id) {
  return id == FieldId::Authorization || id == FieldId::ProxyAuthorization || id == FieldId::XApiKey ||
         id == FieldId::XiApiKey || id == FieldId::ApiKey;
}

// The admin console's session cookie. It is a credential of keypool's own, like the team
// token: a browser sends it with every request to keypool's origin, /v1/ ones included, so
// the proxy takes it out of Cookie before a request goes upstream.
inline constexpr std::string_view kSessionCookieName = "kp_session";

struct Header {
  std::string name;
  std::string value;
  // What `name` is. The parsers set it with the name; headers built in code (aggregate
  // initialisation, config, canned responses) leave it Unclassified and field_id()
  // classifies their name when asked. So a forgotten id costs a compare but can never make
  // a hop-by-hop, credential or framing filter miss a header. The one trap is changing the
  // name of a Header that has an id: whoever does (reused parser slots, put_header) resets
  // the id with it; debug builds assert that ids match their names.
  FieldId id = FieldId::Unclassified;
};
using Headers = std::vector<Header>;

// Consumers read ids through this, never through Header::id.
inline FieldId field_id(const Header& h) {
  assert(h.id == FieldId::Unclassified || h.id == classify_field(h.name));
  return h.id != FieldId::Unclassified ? h.id : classify_field(h.name);
}

// First value of a header, case-insensitive name match.
std::optional<std::string_view> find_header(const Headers& h, std::string_view name);
// The same for a listed name (not Other or Unclassified), without comparing names.
std::optional<std::string_view> find_header(const Headers& h, FieldId id);
size_t count_header(const Headers& h, std::string_view name);
void remove_header(Headers& h, std::string_view name);
// True when a comma-separated header (Connection, Transfer-Encoding) lists token.
bool header_has_token(const Headers& h, std::string_view name, std::string_view token);
// True when the comma-separated list (one header's value, or several joined by ',') names
// token, case-insensitively and ignoring spaces around the items.
bool list_has_token(std::string_view list, std::string_view token);

// The fields a message's Connection headers name, which are hop-by-hop like Connection
// itself (RFC 9110 §7.6.1). Read once per message, then asked about each header; it keeps
// what it needs, so the headers may be moved or dropped while it is in use. Items that are
// listed names (keep-alive, upgrade) become a set of ids, and a listed header is answered
// by one bit test; the other items ("close", "x-trace") are copied (short), and an unlisted
// header is searched for only when one of them has its length.
class ConnectionTokens {
 public:
  ConnectionTokens() = default;  // names nothing
  explicit ConnectionTokens(const Headers& headers);
  bool names(const Header& field) const { return names(field_id(field), field.name); }
  bool names(std::string_view field) const { return names(classify_field(field), field); }

 private:
  bool names(FieldId id, std::string_view name) const;

  std::string items_;     // the items of no listed name, joined by ','
  uint64_t listed_ = 0;   // bit n: an item is the listed name with FieldId n
  uint64_t lengths_ = 0;  // bit n: an unlisted item n bytes long (63 stands for longer ones too)
};

}  // namespace keypool::http
