// ConnectionTokens: the fields a message's Connection headers name (RFC 9110 §7.6.1).
#include <doctest/doctest.h>

#include <string>

#include "http/headers.h"

using keypool::http::ConnectionTokens;
using keypool::http::Headers;

TEST_CASE("headers: ConnectionTokens names what every Connection header lists") {
  const std::string long_name(70, 'x');  // past the 63 lengths kept apart
  Headers h = {{"Connection", " Keep-Alive ,X-Trace"},
               {"Host", "a"},
               {"connection", "close, " + long_name},
               {"X-Other", "1"}};
  const ConnectionTokens tokens(h);
  CHECK(tokens.names("keep-alive"));
  CHECK(tokens.names("x-trace"));
  CHECK(tokens.names("Close"));
  CHECK(tokens.names(long_name));
  CHECK_FALSE(tokens.names(std::string(71, 'x')));  // as long as no item; same length bit
  CHECK_FALSE(tokens.names("x-other"));
  CHECK_FALSE(tokens.names("host"));
  CHECK_FALSE(tokens.names("keep-aliv"));

  // The items are its own: the headers may be moved over or cleared while it is asked.
  h[0] = {"X-Moved", "over"};
  h.clear();
  CHECK(tokens.names("x-trace"));

  CHECK_FALSE(ConnectionTokens().names("keep-alive"));
  CHECK_FALSE(ConnectionTokens(Headers{{"Host", "a"}}).names("host"));
}
