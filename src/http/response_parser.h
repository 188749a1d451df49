#pragma once
// ResponseParser: incremental HTTP/1.x response parsing for the upstream client.
//
// Wraps llhttp in response mode behind a pimpl so that llhttp.h stays inside the http room.
// It delivers the head once (1xx interim responses other than 101 are skipped), then the
// decoded body bytes as they arrive, and reports completion through the value feed() returns
// rather than a callback, so the caller can look at leftover bytes before telling anyone the
// response ended. It does not own a socket, a timer or a buffer beyond the head being built.
//
// One parser serves every response on a keep-alive connection: call reset() before each.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "http/headers.h"

namespace keypool::http {

struct ResponseHead {
  int status = 0;
  std::string reason;
  Headers headers;
  int http_minor = 1;
  std::optional<uint64_t> content_length;
  bool chunked = false;
  // The connection may carry another response after this one.
  bool keep_alive = false;
  // A 101 Switching Protocols: the bytes after the head belong to the new protocol.
  bool upgrade = false;
};

struct ResponseLimits {
  size_t max_header_bytes = 64 * 1024;  // status line + all header lines, per response
  size_t max_headers = 128;
};

enum class ParseStatus {
  NeedMore,  // every byte was consumed; the response is not finished
  Complete,  // the response ended after `consumed` bytes
  Upgrade,   // a 101 head ended after `consumed` bytes; the rest is tunnel data
  Stopped,   // a sink callback asked to stop (its owner went away)
  Error,     // malformed or over a limit; `error` says why (never quotes header values)
};

struct ParseResult {
  ParseStatus status = ParseStatus::NeedMore;
  size_t consumed = 0;
  std::string error;
};

class ResponseParser {
 public:
  // Receives the parsed response. Return false to stop parsing at once: feed() then returns
  // Stopped and the parser must be reset() before further use.
  class Sink {
   public:
    virtual ~Sink() = default;
    // head belongs to the parser until the next response begins: the sink may change it or
    // move from it (the proxy drops hop-by-hop headers in place). Header strings left in it
    // are reused for the next response's headers, so that a keep-alive connection parses a
    // typical head without allocating.
    virtual bool on_head(ResponseHead& head) = 0;
    virtual bool on_body(std::string_view data) = 0;
  };

  // sink must outlive the parser.
  explicit ResponseParser(Sink* sink, ResponseLimits limits = {});
  ~ResponseParser();
  ResponseParser(const ResponseParser&) = delete;
  ResponseParser& operator=(const ResponseParser&) = delete;

  // Prepares for the next response. A response to HEAD has no body whatever its headers say.
  void reset(bool head_request);
  ParseResult feed(const char* data, size_t len);
  ParseResult feed(std::string_view data) { return feed(data.data(), data.size()); }
  // The peer closed the connection. Complete when that ends a body delimited by EOF, Error
  // ("truncated") when a response was under way, NeedMore when none had started.
  ParseResult finish();
  // True once any byte of a (non-interim) response has been parsed.
  bool started() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace keypool::http
