#pragma once
// RequestParser: llhttp in request mode plus the checks llhttp does not make.
//
// llhttp (even strict) enforces no size limits and lets several ambiguous framings through,
// so the limits (header bytes, header count, URL length) and the framing rules that stop
// request smuggling (CL+TE, repeated CL, TE not ending in chunked, chunked on HTTP/1.0,
// missing or repeated Host) are checked here, in llhttp's callbacks.
//
// The parser pauses after every complete message so that the connection answers pipelined
// requests strictly in order: feed() reports Paused, the caller answers, then resume()s and
// feeds the rest.
#include <cstddef>
#include <memory>
#include <string_view>

#include "http/request.h"

namespace keypool::http {

class RequestParser {
 public:
  struct Limits {
    size_t max_header_bytes = 64 * 1024;  // request line + all header lines
    size_t max_header_count = 100;
    size_t max_url_bytes = 8 * 1024;
  };
  // Called from inside feed(). Body pieces are views into the fed buffer.
  class Events {
   public:
    virtual ~Events() = default;
    virtual void on_request_head(RequestHead&& head) = 0;
    virtual void on_request_body(std::string_view data) = 0;
    virtual void on_request_complete() = 0;
  };
  enum class Status {
    NeedMore,  // everything consumed, message not complete
    Paused,    // a message completed; bytes after it are unconsumed; resume() to go on
    Upgrade,   // an upgrade request completed; the unconsumed bytes belong to the tunnel
    Error,     // see error(); the connection must answer it and close
  };

  RequestParser(Limits limits, Events* events);
  ~RequestParser();
  RequestParser(const RequestParser&) = delete;
  RequestParser& operator=(const RequestParser&) = delete;

  Status feed(std::string_view data, size_t* consumed);
  void resume();
  // Takes the storage of a head handed over by on_request_head whose reader is done with
  // it, so that the next request is parsed into its strings and header slots instead of new
  // ones (large ones are dropped, see request_parser.cpp); spent is left with storage of no
  // value. Ignored while a request is being parsed.
  void recycle(RequestHead& spent);
  const ParseError& error() const;
  // True once the first byte of a request arrived and until it completes.
  bool in_message() const;
  // True once the head of the current request was handed over.
  bool head_done() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace keypool::http
