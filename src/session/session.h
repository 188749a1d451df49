#pragma once
// Session: the admin console's browser sessions. POST /ui/login trades the admin token for
// an opaque random id (the cookie) and a CSRF token; the /admin/* API then accepts that
// cookie in place of the bearer token, provided the request is same-origin and, for a
// write, carries the session's X-CSRF-Token.
//
// Sessions live in memory, shared by every worker thread under one mutex (a browser makes
// a few requests a second at most). They are not stored: a restart logs everyone out, and
// each keypool process has its own. Ids are kept only as SHA-256 digests, so neither a
// lookup's timing nor a heap dump gives a live id away. Pure apart from the lock: no I/O.
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "http/headers.h"

namespace keypool::session {

inline constexpr std::string_view kCookieName = http::kSessionCookieName;
inline constexpr std::string_view kCsrfHeader = "X-CSRF-Token";

struct Limits {
  int64_t idle_ms = 30 * 60 * 1000;           // unused this long: gone
  int64_t absolute_ms = 12 * 60 * 60 * 1000;  // since login, however busy: gone
  size_t max_sessions = 1024;                 // beyond it the oldest is dropped
};

// What login hands the browser: the id goes in the cookie, the CSRF token in the JSON body.
struct Issued {
  std::string id;
  std::string csrf;
  int64_t expires_at_ms = 0;  // the absolute expiry
};

// A live session as seen by one request.
struct View {
  std::string csrf;
  int64_t expires_at_ms = 0;  // the earlier of idle and absolute expiry, as of this request
};

class Store {
 public:
  explicit Store(Limits limits = {}) : limits_(limits) {}
  void set_limits(Limits limits);
  Issued open(int64_t now_ms);
  // The live session named by id, its idle timer restarted; nullopt when unknown or
  // expired (an expired one is dropped on the spot).
  std::optional<View> touch(std::string_view id, int64_t now_ms);
  void close(std::string_view id);
  size_t size() const;

 private:
  struct Entry {
    std::string csrf;
    int64_t created_ms = 0;
    int64_t last_seen_ms = 0;
  };
  bool expired(const Entry& e, int64_t now_ms) const;
  void sweep(int64_t now_ms);  // mu_ held
  mutable std::mutex mu_;
  Limits limits_;  // guarded by mu_
  std::unordered_map<std::string, Entry>
      by_hash_;  // SHA-256 hex of the id -> entry; guarded by mu_
};

// How an /admin/* request without a bearer token fares with its cookie.
enum class Verdict {
  NoSession,    // no session cookie at all
  Ok,           // a live session, same-origin, and (for a write) the right CSRF token
  Expired,      // a cookie naming no live session (expired, logged out, or made up)
  CrossOrigin,  // Origin or Sec-Fetch-Site says another site or origin sent it
  BadCsrf,      // a write without the session's X-CSRF-Token
};

// Checks the cookie, the origin and, unless method is GET or HEAD, the CSRF header.
Verdict check(Store& store, const http::Headers& headers, std::string_view method, int64_t now_ms);

// The value of cookie `name` in the request's Cookie header(s), if any.
std::optional<std::string_view> cookie(const http::Headers& headers, std::string_view name);
// False when the browser says the request came from elsewhere: Sec-Fetch-Site other than
// same-origin or none, or an Origin whose host[:port] is not the request's Host. A request
// with neither header (curl, an old browser's GET) is not cross-origin by this test.
bool same_origin(const http::Headers& headers);
// Set-Cookie values that open and end a session. secure adds Secure (the request came
// over TLS, which for keypool means a TLS-terminating proxy said X-Forwarded-Proto: https).
std::string set_cookie(const Issued& s, int64_t now_ms, bool secure);
std::string clear_cookie(bool secure);
bool came_over_tls(const http::Headers& headers);

}  // namespace keypool::session
