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

}  // namespace

ConnectionTokens::ConnectionTokens(const Headers& headers) {
  for (const auto& h : headers)
    if (iequals(h.name, "connection")) items_.append(items_.empty() ? "" : ",").append(h.value);
  for (std::string_view list = items_; !list.empty();) {
    size_t comma = list.find(',');
    lengths_ |= uint64_t{1} << length_bit(trim(list.substr(0, comma)).size());
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
}

bool ConnectionTokens::names(std::string_view field) const {
  return ((lengths_ >> length_bit(field.size())) & 1) != 0 && list_has_token(items_, field);
}

}  // namespace keypool::http
