#pragma once
// Secret: a decrypted key value or token. It wipes its bytes when dropped, cannot be
// copied by accident (only moved or explicitly cloned), and has no operator<< so it
// cannot be streamed into a log line.
#include <string.h>

#include <string>
#include <string_view>

namespace keypool {

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
