#include "base/strings.h"

#include <cctype>
#include <cstring>
#include <limits>

namespace keypool {

namespace {

uint64_t load8(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

uint64_t load4(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// ascii_lower on eight bytes at once. Only the low seven bits of each byte enter the sums,
// so no byte carries into the next; a byte with its high bit set is not ASCII and stays.
uint64_t ascii_lower8(uint64_t x) {
  constexpr uint64_t kOnes = 0x0101010101010101ULL, kHigh = 0x8080808080808080ULL;
  const uint64_t low7 = x & ~kHigh;
  const uint64_t at_least_a = low7 + (0x80 - 'A') * kOnes;   // high bit: byte >= 'A'
  const uint64_t above_z = low7 + (0x80 - 'Z' - 1) * kOnes;  // high bit: byte > 'Z'
  const uint64_t upper = at_least_a & ~above_z & ~x & kHigh;
  return x | (upper >> 2);  // 0x80 >> 2 is the 0x20 that turns 'A' into 'a'
}

// Words that still differ with bit 0x20 set in every byte differ whatever the case, which
// settles most unequal names before any folding.
[[gnu::always_inline]] inline bool same_folded(uint64_t x, uint64_t y) {
  constexpr uint64_t kCaseBits = 0x2020202020202020ULL;
  if (x == y) return true;
  if ((x | kCaseBits) != (y | kCaseBits)) return false;
  return ascii_lower8(x) == ascii_lower8(y);
}

}  // namespace

namespace {

constexpr uint64_t kOnes = 0x0101010101010101ULL;
constexpr uint64_t kHighs = 0x8080808080808080ULL;

// Nonzero when a byte of v is zero. Exact as a yes/no answer: a borrow can only mark bytes
// above a byte that really is zero.
constexpr uint64_t zero_byte(uint64_t v) { return (v - kOnes) & ~v & kHighs; }

bool word_has_nul_cr_lf(uint64_t v) {
  return (zero_byte(v) | zero_byte(v ^ (kOnes * '\r')) | zero_byte(v ^ (kOnes * '\n'))) != 0;
}

}  // namespace

bool has_nul_cr_lf(std::string_view s) {
  const char* p = s.data();
  const size_t n = s.size();
  if (n >= 8) {
    for (size_t i = 0; i + 8 < n; i += 8)
      if (word_has_nul_cr_lf(load8(p + i))) return true;
    return word_has_nul_cr_lf(load8(p + n - 8));  // the tail as an overlapping last word
  }
  for (size_t i = 0; i < n; ++i)
    if (p[i] == '\0' || p[i] == '\r' || p[i] == '\n') return true;
  return false;
}

// Words of eight (or four) bytes, the last one overlapping the one before, so that no
// length needs a byte loop beyond three.
bool detail::iequals_n(const char* a, const char* b, size_t n) {
  if (n >= 8) {
    for (size_t i = 0; i + 8 < n; i += 8)
      if (!same_folded(load8(a + i), load8(b + i))) return false;
    return same_folded(load8(a + n - 8), load8(b + n - 8));
  }
  if (n >= 4) return same_folded(load4(a), load4(b)) && same_folded(load4(a + n - 4), load4(b + n - 4));
  for (size_t i = 0; i < n; ++i)
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  return true;
}

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = ascii_lower(c);
  return out;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    size_t pos = s.find(sep, start);
    if (pos == std::string_view::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, pos - start));
    start = pos + 1;
  }
}

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

std::optional<int64_t> parse_uint(std::string_view s) {
  if (s.empty() || s.size() > 19) return std::nullopt;
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    if (v > (std::numeric_limits<int64_t>::max() - (c - '0')) / 10) return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

static int hex_val(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<std::string> percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    int hi = hex_val(s[i + 1]), lo = hex_val(s[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

void hex_encode_to(std::string_view bytes, char* out) {
  static constexpr char kDigits[] = "0123456789abcdef";
  for (unsigned char c : bytes) {
    *out++ = kDigits[c >> 4];
    *out++ = kDigits[c & 15];
  }
}

std::string hex_encode(std::string_view bytes) {
  std::string out(bytes.size() * 2, '\0');
  hex_encode_to(bytes, out.data());
  return out;
}

std::optional<std::string> hex_decode(std::string_view hex) {
  if (hex.size() % 2) return std::nullopt;
  std::string out;
  out.reserve(hex.size() / 2);
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = hex_val(hex[i]), lo = hex_val(hex[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>(hi * 16 + lo));
  }
  return out;
}

std::string key_hint(std::string_view value) {
  // Short values would be revealed almost whole by a prefix and suffix; show only a length.
  if (value.size() < 12) return "..." + std::to_string(value.size()) + " chars";
  size_t dash = value.find('-');
  size_t prefix_len = (dash != std::string_view::npos && dash < 8) ? dash + 1 : 3;
  return std::string(value.substr(0, prefix_len)) + "..." +
         std::string(value.substr(value.size() - 4));
}

}  // namespace keypool
