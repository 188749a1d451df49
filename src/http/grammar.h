#pragma once
// Pieces of the RFC 9110 / RFC 3986 grammar that keypool checks itself, where llhttp does
// not: what a Host value may be. A pure function over bytes, shared by the request parser
// and its tests.
#include <string_view>

namespace keypool::http {

// A Host field value (RFC 9112 §3.2): uri-host [ ":" port ], where uri-host is an
// IP-literal ("[...]") or a reg-name (unreserved, pct-encoded and sub-delims; IPv4 addresses
// are reg-names too). Refuses what the grammar refuses (whitespace, userinfo "@", a path,
// query or fragment) and, like nginx, an empty host; a port has at most 5 digits.
bool is_host_value(std::string_view value);

}  // namespace keypool::http
