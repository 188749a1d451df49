#pragma once
// Secret: a decrypted key value or token. It wipes its bytes when dropped, cannot be
// copied by accident (only moved or explicitly cloned), and has no operator<< so it
// cannot be streamed into a log line.
#include <string.h>

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
