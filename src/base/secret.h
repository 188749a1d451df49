#pragma once
// Secret: a decrypted key value or token. It wipes its bytes when dropped, cannot be
// copied by accident (only moved or explicitly cloned), and has no operator<< so it
// cannot be streamed into a log line.
#include <string.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace keypool {

// Drops the first n bytes of a buffer that may hold a secret (a request head with the key, a
// GET /key answer), leaving no copy behind: erase(0, n) would move the tail down and leave
// a stale copy of its last n bytes past the new size, where no later wipe reaches.
inline void erase_front_wiped(std::string& s, size_t n) {
  if (n >= s.size()) {
    explicit_bzero(s.data(), s.size());
    s.clear();
    return;
  }
  size_t left = s.size() - n;
  memmove(s.data(), s.data() + n, left);
  explicit_bzero(s.data() + left, n);
  s.resize(left);
}

// Equality of n bytes in time that depends on n only, never on where the bytes differ.
// A word at a time: OpenSSL's CRYPTO_memcmp goes byte by byte (~330 instructions for a
// 46-byte token), and the token memo compares on every proxied request.
inline bool equal_bytes(const void* a, const void* b, size_t n) {
  const auto* x = static_cast<const unsigned char*>(a);
  const auto* y = static_cast<const unsigned char*>(b);
  uint64_t diff = 0;
  auto fold_word = [&](size_t at) {
    uint64_t u, v;
    memcpy(&u, x + at, 8);
    memcpy(&v, y + at, 8);
    diff |= u ^ v;
    // The empty asm makes diff opaque to the optimiser, which could otherwise stop at the
    // first difference (an early exit is exactly the timing leak this exists to avoid).
    asm volatile("" : "+r"(diff));
  };
  if (n < 8) {
    for (size_t i = 0; i < n; ++i) {
      diff |= static_cast<uint64_t>(x[i] ^ y[i]);
      asm volatile("" : "+r"(diff));
    }
    return diff == 0;
  }
  for (size_t i = 0; i + 8 < n; i += 8) fold_word(i);
  fold_word(n - 8);  // the tail as an overlapping last word: one step, not up to seven
  return diff == 0;
}

class Secret {
 public:
  Secret() = default;
  explicit Secret(std::string value) : v_(std::move(value)) {}
  Secret(const Secret&) = delete;
  Secret& operator=(const Secret&) = delete;
  Secret(Secret&& o) noexcept : v_(std::move(o.v_)) { o.wipe(); }
  Secret& operator=(Secret&& o) noexcept {
    if (this != &o) {
      wipe();
      v_ = std::move(o.v_);
      o.wipe();
    }
    return *this;
  }
  ~Secret() { wipe(); }

  Secret clone() const { return Secret(v_); }
  std::string_view view() const { return v_; }
  size_t size() const { return v_.size(); }
  bool empty() const { return v_.empty(); }

 private:
  void wipe() {
    // explicit_bzero is not optimised away, unlike memset before destruction.
    if (!v_.empty()) explicit_bzero(v_.data(), v_.size());
    v_.clear();
  }
  std::string v_;
};

}  // namespace keypool
