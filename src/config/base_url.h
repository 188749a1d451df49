#pragma once
// The one parser for "http(s)://host[:port][/prefix]" base URLs: a service's base_url and
// the CLI's --url both go through it, so they agree on what a valid URL is.
#include <cstdint>
#include <string>
#include <string_view>

#include "base/result.h"

namespace keypool::config {

struct UrlParts {
  bool tls = true;
  std::string host;  // lower-case; an IPv6 literal without its brackets
  uint16_t port = 443;
  std::string path;  // "" or "/prefix" without a trailing slash
};

// On failure the message is a phrase for the caller to prefix ("port '0' must be between 1
// and 65535"). It never repeats user info: a URL carrying credentials is refused without
// quoting them, so the error can be printed or logged as is.
Result<UrlParts> parse_base_url(std::string_view url);

}  // namespace keypool::config
