#pragma once
// Header list as received or to be sent: order and duplicates preserved, names compared
// case-insensitively. A vector beats a map for the ~10-30 headers of a typical request.
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

}  // namespace keypool::http
