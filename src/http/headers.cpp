#include "http/headers.h"

#include <algorithm>

#include "base/strings.h"

namespace keypool::http {

std::optional<std::string_view> find_header(const Headers& h, std::string_view name) {
  for (const auto& hd : h)
    if (iequals(hd.name, name)) return std::string_view(hd.value);
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
  for (const auto& hd : h) {
    if (!iequals(hd.name, name)) continue;
    // Walked in place: this runs for every response header the proxy relays.
    std::string_view rest = hd.value;
    while (!rest.empty()) {
      size_t comma = rest.find(',');
      if (iequals(trim(rest.substr(0, comma)), token)) return true;
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  return false;
}

}  // namespace keypool::http
