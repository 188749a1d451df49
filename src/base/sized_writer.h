#pragma once
// SizedWriter: writes into storage sized beforehand (an HTTP head whose size was counted or
// bounded first). Each piece is a plain copy, where a capacity-checked string append per
// piece (several per header line) cost more than the copying itself. The bound is asserted
// in debug builds; callers size the storage so that it holds.
//
// It offers the few std::string members head writers use (append, push_back, size, a
// shrinking resize), so code templated on its output also serves std::string callers.
#include <cassert>
#include <cstddef>
#include <cstring>
#include <string_view>

namespace keypool {

class SizedWriter {
 public:
  SizedWriter(char* begin, size_t capacity) : begin_(begin), at_(begin), end_(begin + capacity) {}
  SizedWriter& append(std::string_view piece) {
    assert(static_cast<size_t>(end_ - at_) >= piece.size());
    if (!piece.empty()) std::memcpy(at_, piece.data(), piece.size());  // empty may mean null
    at_ += piece.size();
    return *this;
  }
  void push_back(char c) {
    assert(at_ < end_);
    *at_++ = c;
  }
  size_t size() const { return static_cast<size_t>(at_ - begin_); }
  // Shrinking only: takes back what was written after a mark.
  void resize(size_t n) {
    assert(n <= size());
    at_ = begin_ + n;
  }

 private:
  char* begin_;
  char* at_;
  char* end_;
};

}  // namespace keypool
