#pragma once
// Small string helpers shared by the pure rooms.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace keypool {

// ASCII only, on purpose: HTTP names and tokens are ASCII, and the locale-aware
// std::tolower is a function call per byte on the hottest paths (header lookups).
constexpr char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + ('a' - 'A')) : c; }
std::string to_lower(std::string_view s);

namespace detail {
// Same-length case-insensitive compare of n bytes (strings.cpp).
bool iequals_n(const char* a, const char* b, size_t n);
}  // namespace detail

// Header names are compared many times per request, and most compares fail on the length:
// that test stays inline, the bytes are compared out of line a word at a time.
inline bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && detail::iequals_n(a.data(), b.data(), a.size());
}
// Spaces and tabs off both ends. Inline: every header value of every message goes through it.
inline std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}
// NUL, CR or LF anywhere in s: the bytes that could end or forge a header line. Eight bytes
// a step; every header value of every request goes through it.
bool has_nul_cr_lf(std::string_view s);
std::vector<std::string_view> split(std::string_view s, char sep);
bool starts_with(std::string_view s, std::string_view prefix);
// Parses a non-negative decimal integer that fits in int64; rejects signs, spaces, overflow.
std::optional<int64_t> parse_uint(std::string_view s);
// Percent-decodes; nullopt on a malformed escape.
std::optional<std::string> percent_decode(std::string_view s);
std::string hex_encode(std::string_view bytes);
// The same into out, which has room for 2 * bytes.size() chars (no allocation).
void hex_encode_to(std::string_view bytes, char* out);
std::optional<std::string> hex_decode(std::string_view hex);
// "sk-abc...7xKm": enough to recognise a key, never enough to use it.
std::string key_hint(std::string_view value);

}  // namespace keypool
