#pragma once
// Result<T>: expected failures (bad input, network, disk) travel as values, never as
// exceptions. C++20 has no std::expected, so this is a small variant wrapper.
#include <string>
#include <utility>
#include <variant>

namespace keypool {

// What went wrong, in terms the HTTP layer can map to a status in one place
// (see admin/errors.h). Keep the list short; the message carries the detail.
enum class ErrorCode {
  BadRequest,     // 400: malformed input, names the field
  Unauthorized,   // 401
  Forbidden,      // 403
  NotFound,       // 404
  Conflict,       // 409
  PayloadTooLarge,// 413
  RateLimited,    // 429
  Internal,       // 500
  BadGateway,     // 502: the upstream misbehaved
  Unavailable,    // 503
  Timeout,        // 504
  Corrupt,        // stored data failed authentication (wrong key or tampering)
  Invalid,        // configuration error
};

struct Error {
  ErrorCode code = ErrorCode::Internal;
  std::string message;
  // Seconds until a retry may succeed; only meaningful with RateLimited.
  long long retry_after_s = 0;
};

inline Error make_error(ErrorCode code, std::string message) {
  return Error{code, std::move(message), 0};
}

template <typename T>
class [[nodiscard]] Result {
 public:
  // By reference, not by value: a by-value parameter would move a large T twice.
  Result(T&& value) : v_(std::in_place_index<0>, std::move(value)) {}
  Result(const T& value) : v_(std::in_place_index<0>, value) {}
  Result(Error error) : v_(std::move(error)) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &std::get<0>(v_); }
  const T* operator->() const { return &std::get<0>(v_); }
  T& operator*() { return std::get<0>(v_); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

// Result<void>: success carries nothing.
struct Ok {};
template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Ok) {}
  Result(Error error) : err_(std::move(error)), ok_(false) {}
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return err_; }

 private:
  Error err_;
  bool ok_ = true;
};

}  // namespace keypool
