#pragma once
// Where Redis is: redis://[user[:password]@]host[:port][/db] or rediss:// for TLS.
//
// The password is a Secret (wiped when dropped, never printed); describe() gives a form
// that is safe to log. Percent-escapes in the user and password are decoded, so a password
// with '@' or ':' can be written. Userinfo without ':' ("redis://secret@host") is taken as
// a password, not a user name: that is how many providers write it, and reading it as a
// user would print the secret in describe().
#include <cstdint>
#include <string>
#include <string_view>

#include "base/result.h"
#include "base/secret.h"

namespace keypool::redis {

struct Url {
  bool tls = false;
  std::string host;       // a DNS name or an IP literal, without brackets
  uint16_t port = 6379;
  std::string user;       // "" = AUTH with the password only (the default user)
  Secret password;        // empty = no AUTH
  int64_t db = 0;         // SELECT when not 0

  // "rediss://host:port/db", plus "user@" when there is a user: never the password.
  std::string describe() const;
};

// Errors never quote the URL (it may hold a password); they name the part that is wrong.
Result<Url> parse_url(std::string_view url);

}  // namespace keypool::redis
