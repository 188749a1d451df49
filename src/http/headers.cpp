#include "http/headers.h"

#include <algorithm>
#include <bit>
#include <cassert>
#include <cstring>

#include "base/strings.h"

namespace keypool::http {

namespace {

// A listed name, lower case, as the chunks a name of its length is read in: `bytes` the
// name's, `letters` 0x20 on each letter. A chunk of the name matches when
// (chunk | letters) == bytes: a letter in either case, any other byte exactly. Built at
// compile time, so a compare is a load, an or and a compare per chunk; iequals_n folds
// both sides and cost more than the rest of classify_field together.
// Chunks are 8 bytes (4 or 2 for shorter names), the last overlapping the one before.
template <size_t N>
struct Folded {
  static_assert(N >= 2, "a chunk is at least 2 bytes");
  static constexpr size_t kChunk = N >= 8 ? 8 : N >= 4 ? 4 : 2;
  static constexpr size_t kChunks = (N + kChunk - 1) / kChunk;
  static constexpr size_t offset(size_t i) { return i + 1 < kChunks ? i * kChunk : N - kChunk; }

  uint64_t bytes[kChunks] = {};
  uint64_t letters[kChunks] = {};

  constexpr explicit Folded(const char (&lower)[N + 1]) {
    for (size_t i = 0; i < kChunks; ++i)
      for (size_t j = 0; j < kChunk; ++j) {
        const char c = lower[offset(i) + j];
        // Where byte j of the chunk lands in the integer memcpy loads it into.
        const unsigned shift = std::endian::native == std::endian::little ? 8 * j : 8 * (7 - j);
        bytes[i] |= uint64_t{static_cast<unsigned char>(c)} << shift;
        if (c >= 'a' && c <= 'z') letters[i] |= uint64_t{0x20} << shift;
      }
  }

  // name.size() == N.
  bool matches(std::string_view name) const {
    for (size_t i = 0; i < kChunks; ++i) {
      uint64_t chunk = 0;
      std::memcpy(&chunk, name.data() + offset(i), kChunk);
      if ((chunk | letters[i]) != bytes[i]) return false;
    }
    return true;
  }
};

template <size_t M>
constexpr Folded<M - 1> folded(const char (&lower)[M]) {
  return Folded<M - 1>(lower);
}

template <size_t N>
FieldId match(std::string_view name, const Folded<N>& candidate, FieldId id) {
  return candidate.matches(name) ? id : FieldId::Other;
}

constexpr auto kTe = folded("te");
constexpr auto kHost = folded("host");
constexpr auto kExpect = folded("expect");
constexpr auto kApiKey = folded("api-key");
constexpr auto kTrailer = folded("trailer");
constexpr auto kUpgrade = folded("upgrade");
constexpr auto kXApiKey = folded("x-api-key");
constexpr auto kConnection = folded("connection");
constexpr auto kKeepAlive = folded("keep-alive");
constexpr auto kXiApiKey = folded("xi-api-key");
constexpr auto kRetryAfter = folded("retry-after");
constexpr auto kContentType = folded("content-type");
constexpr auto kAcceptEncoding = folded("accept-encoding");
constexpr auto kContentEncoding = folded("content-encoding");
constexpr auto kAuthorization = folded("authorization");
constexpr auto kContentLength = folded("content-length");
constexpr auto kHttp2Settings = folded("http2-settings");
constexpr auto kProxyConnection = folded("proxy-connection");
constexpr auto kXKeypoolKeyId = folded("x-keypool-key-id");
constexpr auto kTransferEncoding = folded("transfer-encoding");
constexpr auto kXKeypoolSession = folded("x-keypool-session");
constexpr auto kProxyAuthenticate = folded("proxy-authenticate");
constexpr auto kProxyAuthorization = folded("proxy-authorization");

}  // namespace

// Switched on the length, then, where two listed names share it, on the first letter: a
// name is compared with one candidate at most, and most names with none.
FieldId classify_field(std::string_view name) {
  if (name.empty()) return FieldId::Other;
  const char first = ascii_lower(name[0]);
  switch (name.size()) {
    case 2: return match(name, kTe, FieldId::Te);
    case 4: return match(name, kHost, FieldId::Host);
    case 6: return match(name, kExpect, FieldId::Expect);
    case 7:
      switch (first) {
        case 'a': return match(name, kApiKey, FieldId::ApiKey);
        case 't': return match(name, kTrailer, FieldId::Trailer);
        case 'u': return match(name, kUpgrade, FieldId::Upgrade);
        default: return FieldId::Other;
      }
    case 9: return match(name, kXApiKey, FieldId::XApiKey);
    case 10:
      switch (first) {
        case 'c': return match(name, kConnection, FieldId::Connection);
        case 'k': return match(name, kKeepAlive, FieldId::KeepAlive);
        case 'x': return match(name, kXiApiKey, FieldId::XiApiKey);
        default: return FieldId::Other;
      }
    case 11: return match(name, kRetryAfter, FieldId::RetryAfter);
    case 12: return match(name, kContentType, FieldId::ContentType);
    case 13: return match(name, kAuthorization, FieldId::Authorization);
    case 14:
      switch (first) {
        case 'c': return match(name, kContentLength, FieldId::ContentLength);
        case 'h': return match(name, kHttp2Settings, FieldId::Http2Settings);
        default: return FieldId::Other;
      }
    case 15: return match(name, kAcceptEncoding, FieldId::AcceptEncoding);
    case 16:
      switch (first) {
        case 'c': return match(name, kContentEncoding, FieldId::ContentEncoding);
        case 'p': return match(name, kProxyConnection, FieldId::ProxyConnection);
        case 'x': return match(name, kXKeypoolKeyId, FieldId::XKeypoolKeyId);
        default: return FieldId::Other;
      }
    case 17:
      switch (first) {
        case 't': return match(name, kTransferEncoding, FieldId::TransferEncoding);
        case 'x': return match(name, kXKeypoolSession, FieldId::XKeypoolSession);
        default: return FieldId::Other;
      }
    case 18: return match(name, kProxyAuthenticate, FieldId::ProxyAuthenticate);
    case 19: return match(name, kProxyAuthorization, FieldId::ProxyAuthorization);
    default: return FieldId::Other;
  }
}

std::optional<std::string_view> find_header(const Headers& h, std::string_view name) {
  for (const auto& hd : h)
    if (iequals(hd.name, name)) return std::string_view(hd.value);
  return std::nullopt;
}

std::optional<std::string_view> find_header(const Headers& h, FieldId id) {
  assert(id != FieldId::Other && id != FieldId::Unclassified);  // those stand for no one name
  for (const auto& hd : h)
    if (field_id(hd) == id) return std::string_view(hd.value);
  return std::nullopt;
}

size_t count_header(const Headers& h, std::string_view name) {
  return static_cast<size_t>(
      std::count_if(h.begin(), h.end(), [&](const Header& hd) { return iequals(hd.name, name); }));
}

void remove_header(Headers& h, std::string_view name) {
  h.erase(std::remove_if(h.begin(), h.end(), [&](const Header& hd) { return iequals(hd.name, name); }),
          h.end());
}

bool header_has_token(const Headers& h, std::string_view name, std::string_view token) {
  for (const auto& hd : h)
    if (iequals(hd.name, name) && list_has_token(hd.value, token)) return true;
  return false;
}

bool list_has_token(std::string_view list, std::string_view token) {
  // Walked in place: this runs for every response header the proxy relays.
  while (!list.empty()) {
    size_t comma = list.find(',');
    if (iequals(trim(list.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

namespace {

size_t length_bit(size_t n) { return n < 63 ? n : 63; }

uint64_t id_bit(FieldId id) {
  static_assert(static_cast<size_t>(FieldId::XKeypoolKeyId) < 64, "ids must fit in 64 bits");
  return uint64_t{1} << static_cast<unsigned>(id);
}

}  // namespace

ConnectionTokens::ConnectionTokens(const Headers& headers) {
  for (const auto& h : headers) {
    if (field_id(h) != FieldId::Connection) continue;
    for (std::string_view list = h.value; !list.empty();) {
      size_t comma = list.find(',');
      std::string_view item = trim(list.substr(0, comma));
      FieldId id = classify_field(item);
      if (id != FieldId::Other) {
        listed_ |= id_bit(id);
      } else if (!item.empty()) {  // no header has an empty name
        items_.append(items_.empty() ? "" : ",").append(item);
        lengths_ |= uint64_t{1} << length_bit(item.size());
      }
      if (comma == std::string_view::npos) break;
      list.remove_prefix(comma + 1);
    }
  }
}

// A listed name can only equal an item of the same id, so only unlisted names are searched.
bool ConnectionTokens::names(FieldId id, std::string_view name) const {
  if (id != FieldId::Other) return (listed_ & id_bit(id)) != 0;
  return ((lengths_ >> length_bit(name.size())) & 1) != 0 && list_has_token(items_, name);
}

}  // namespace keypool::http
