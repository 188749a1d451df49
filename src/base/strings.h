#pragma once
// Small string helpers shared by the pure rooms.
#include <cstdint>
#include <cstring>
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
inline uint64_t load8(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
// ascii_lower on eight bytes at once. Only the low seven bits of each byte enter the sums,
// so no byte carries into the next; a byte with its high bit set is not ASCII and stays.
inline uint64_t ascii_lower8(uint64_t x) {
  constexpr uint64_t kOnes = 0x0101010101010101ULL, kHigh = 0x8080808080808080ULL;
  const uint64_t low7 = x & ~kHigh;
  const uint64_t at_least_a = low7 + (0x80 - 'A') * kOnes;   // high bit: byte >= 'A'
  const uint64_t above_z = low7 + (0x80 - 'Z' - 1) * kOnes;  // high bit: byte > 'Z'
  const uint64_t upper = at_least_a & ~above_z & ~x & kHigh;
  return x | (upper >> 2);  // 0x80 >> 2 is the 0x20 that turns 'A' into 'a'
}
}  // namespace detail

// Header names are compared many times per request; eight bytes a step (the last step
// overlapping the one before) instead of a fold and a branch per byte.
inline bool iequals(std::string_view a, std::string_view b) {
  const size_t n = a.size();
  if (n != b.size()) return false;
  if (n < 8) {
    for (size_t i = 0; i < n; ++i)
      if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
    return true;
  }
  auto same8 = [&](size_t i) {
    const uint64_t x = detail::load8(a.data() + i), y = detail::load8(b.data() + i);
    return x == y || detail::ascii_lower8(x) == detail::ascii_lower8(y);
  };
  for (size_t i = 0; i + 8 < n; i += 8)
    if (!same8(i)) return false;
  return same8(n - 8);
}
// Spaces and tabs off both ends. Inline: every header value of every message goes through it.
inline std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}
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
