#pragma once
// One parsed request head, as the server hands it to a handler.
#include <cstdint>
#include <optional>
#include <string>

#include "http/headers.h"

namespace keypool::http {

// The parser reuses a head's storage from request to request: a new field must also be
// reset in RequestParser's clear_head (request_parser.cpp).
struct RequestHead {
  std::string method;
  std::string target;  // as sent: origin-form or absolute-form
  int http_minor = 1;  // HTTP/1.<minor>; only 1.0 and 1.1 get this far
  Headers headers;
  bool keep_alive = true;
  bool chunked = false;
  std::optional<uint64_t> content_length;
  bool upgrade = false;  // Connection: upgrade + Upgrade: ... (WebSocket)

  bool has_body() const { return chunked || (content_length && *content_length > 0); }
};

// Why a request was refused before any handler saw it.
struct ParseError {
  int status = 400;
  std::string code = "bad_request";
  std::string message;
};

}  // namespace keypool::http
