// erase_front_wiped: what a partial socket write leaves of a buffer that may hold a key.
#include "base/secret.h"

#include <doctest/doctest.h>

#include <string>

TEST_CASE("erase_front_wiped leaves no copy of the dropped or moved bytes") {
  struct Case {
    size_t size, drop;
  };
  // Short (in-object) and heap buffers; drop some, exactly all, more than all.
  const Case cases[] = {{8, 3}, {8, 8}, {8, 20}, {300, 1}, {300, 150}, {300, 299}, {300, 300}};
  for (const auto& c : cases) {
    CAPTURE(c.size);
    CAPTURE(c.drop);
    std::string s;
    for (size_t i = 0; i < c.size; ++i) s.push_back(static_cast<char>('A' + i % 26));
    const std::string before = s;
    const char* base = s.data();
    const size_t capacity = s.capacity();
    keypool::erase_front_wiped(s, c.drop);
    size_t left = c.drop >= c.size ? 0 : c.size - c.drop;
    CHECK(s == before.substr(before.size() - left));
    CHECK(s.data() == base);  // wiped in place, not moved to fresh storage
    // Everything past the kept bytes, up to the old size, is zero (plain erase would leave
    // the old tail there).
    for (size_t i = left + 1; i < c.size && i <= capacity; ++i) {
      CAPTURE(i);
      REQUIRE(base[i] == '\0');
    }
  }
}

// Word-at-a-time with a byte tail: a difference in any byte, at any offset from an unaligned
// start, in the words or in the tail, must be seen, including a high bit alone (a compare that
// folded words through a signed or narrowed type would lose it).
TEST_CASE("secret: equal_bytes sees a difference at every position of every length") {
  std::string a(80, '\0'), b;
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<char>(i * 37 + 11);
  for (size_t offset = 0; offset < 8; ++offset) {
    for (size_t n = 0; n + offset <= 72; ++n) {
      b = a;
      CHECK(keypool::equal_bytes(a.data() + offset, b.data() + offset, n));
      for (size_t at = 0; at < n; ++at) {
        for (unsigned char flip : {0x01, 0x80, 0xff}) {
          b = a;
          b[offset + at] = static_cast<char>(b[offset + at] ^ flip);
          CHECK_FALSE(keypool::equal_bytes(a.data() + offset, b.data() + offset, n));
        }
      }
      // Bytes past n are not compared.
      b = a;
      if (offset + n < b.size()) b[offset + n] ^= 1;
      CHECK(keypool::equal_bytes(a.data() + offset, b.data() + offset, n));
    }
  }
}
