// iequals compares words of eight or four bytes with a folded-case trick; checked here against the
// plain one-byte-at-a-time definition over every length it treats differently (short
// strings, whole words, an overlapping last word) and every byte value, high bytes included.
#include <doctest/doctest.h>

#include <random>
#include <string>

#include "base/strings.h"

namespace {

bool iequals_bytewise(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (keypool::ascii_lower(a[i]) != keypool::ascii_lower(b[i])) return false;
  return true;
}

}  // namespace

TEST_CASE("strings: iequals folds ASCII letters only") {
  using keypool::iequals;
  CHECK(iequals("Content-Length", "content-length"));
  CHECK(iequals("X-API-KEY", "x-api-key"));
  CHECK(iequals("", ""));
  CHECK_FALSE(iequals("content-length", "content-lengtx"));
  CHECK_FALSE(iequals("authorization", "authorizatio"));
  // '@' and '`', '[' and '{' sit next to the letters; only A-Z and a-z pair up.
  CHECK_FALSE(iequals("@@@@@@@@@", "`````````"));
  CHECK_FALSE(iequals("[[[[[[[[[", "{{{{{{{{{"));
  // Bytes above 0x7f differing only in bit 0x20 are not letters.
  CHECK_FALSE(iequals(std::string(9, '\xc1'), std::string(9, '\xe1')));
  // A difference in the first word of a long name, and in the overlapping last word.
  CHECK_FALSE(iequals("Xontent-Security-Policy", "content-security-policy"));
  CHECK_FALSE(iequals("content-security-policX", "content-security-policy"));
}

TEST_CASE("strings: iequals agrees with the byte-by-byte definition") {
  std::mt19937 rng(20261128);
  auto byte = [&] { return static_cast<char>(rng() & 0xff); };
  for (size_t len = 0; len <= 40; ++len) {
    for (int round = 0; round < 2000; ++round) {
      std::string a(len, '\0');
      for (auto& c : a) c = byte();
      std::string b = a;
      // Flip the case of some letters, and sometimes change one byte to any value.
      for (auto& c : b)
        if ((rng() & 1) && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) c ^= 0x20;
      if (len > 0 && (rng() % 3 == 0)) b[rng() % len] = byte();
      CAPTURE(len);
      CHECK(keypool::iequals(a, b) == iequals_bytewise(a, b));
    }
  }
}

// has_nul_cr_lf reads eight bytes a step with a borrow trick, and the tail as an overlapping
// word: checked against the plain definition with every byte value at every position of
// every length up to 40, over a background of bytes next to the targets (0x01, 0x0c, 0x0e,
// 0x8d, 0xff) that a sloppy bit trick would confuse with them.
TEST_CASE("strings: has_nul_cr_lf agrees with the byte-by-byte definition") {
  using keypool::has_nul_cr_lf;
  auto bytewise = [](std::string_view s) {
    for (char c : s)
      if (c == '\0' || c == '\r' || c == '\n') return true;
    return false;
  };
  const std::string background = "\x01\x0c\x0e\x8d\xff" "abc\x09 \x8a\x0b";
  for (size_t n = 0; n <= 40; ++n) {
    std::string s(n, 'x');
    for (size_t i = 0; i < n; ++i) s[i] = background[i % background.size()];
    CHECK(has_nul_cr_lf(s) == bytewise(s));
    CHECK_FALSE(has_nul_cr_lf(s));
    for (size_t at = 0; at < n; ++at) {
      const char keep = s[at];
      for (int b = 0; b < 256; ++b) {
        s[at] = static_cast<char>(b);
        if (has_nul_cr_lf(s) != bytewise(s)) {
          FAIL_CHECK("n=" << n << " at=" << at << " byte=" << b);
        }
      }
      s[at] = keep;
    }
  }
}
