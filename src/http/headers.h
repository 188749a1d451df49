#pragma once
// Header list as received or to be sent: order and duplicates preserved, names compared
// case-insensitively. A vector beats a map for the ~10-30 headers of a typical request.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace keypool::http {

struct Header {
  std::string name;
  std::string value;
};
using Headers = std::vector<Header>;

// First value of a header, case-insensitive name match.
std::optional<std::string_view> find_header(const Headers& h, std::string_view name);
size_t count_header(const Headers& h, std::string_view name);
void remove_header(Headers& h, std::string_view name);
// True when a comma-separated header (Connection, Transfer-Encoding) lists token.
bool header_has_token(const Headers& h, std::string_view name, std::string_view token);
// True when the comma-separated list (one header's value, or several joined by ',') names
// token, case-insensitively and ignoring spaces around the items.
bool list_has_token(std::string_view list, std::string_view token);

// The fields a message's Connection headers name, which are hop-by-hop like Connection
// itself (RFC 9110 §7.6.1). Read once per message, then asked about each header. The items
// are copied (short: "keep-alive", "close"), so the headers may be moved or dropped while it
// is in use; their lengths are kept so that most names are answered without a search.
class ConnectionTokens {
 public:
  ConnectionTokens() = default;  // names nothing
  explicit ConnectionTokens(const Headers& headers);
  bool names(std::string_view field) const;

 private:
  std::string items_;    // every Connection value, joined by ','
  uint64_t lengths_ = 0;  // bit n: an item n bytes long (63 stands for longer ones too)
};

}  // namespace keypool::http
