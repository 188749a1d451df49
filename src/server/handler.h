#pragma once
// The seam between the server and what answers requests (admin, proxy). The server owns
// connections and framing; a handler only sees a request head, body pieces, and a sink to
// answer through. server never includes proxy or admin.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "http/headers.h"
#include "http/request.h"

namespace keypool::server {

enum class BodyMode {
  Empty,          // no body (204, 304, HEAD, or an empty answer)
  ContentLength,  // exactly `length` bytes follow
  Stream,         // unknown length: chunked for HTTP/1.1, close-delimited for 1.0
  Raw,            // 101 Switching Protocols: raw tunnel bytes follow
};

// What a handler keeps across the requests of one client connection (the proxy keeps the
// credential it verified). The server owns it and destroys it with the connection, without
// knowing what it is.
class ConnectionState {
 public:
  virtual ~ConnectionState() = default;
};

// Answering side of one request; implemented by the connection. Valid until the handler
// receives on_abort() or is destroyed.
class ResponseSink {
 public:
  virtual ~ResponseSink() = default;
  virtual void send_head(int status, const http::Headers& headers, BodyMode mode,
                         uint64_t length = 0) = 0;
  virtual void send_body(std::string_view data) = 0;
  virtual void end() = 0;                 // response complete
  virtual void abort() = 0;               // cut the connection (a failed stream must not look complete)
  virtual bool head_sent() const = 0;
  // Downstream bytes not yet written to the socket. Backpressure comes through
  // RequestHandler::on_write_blocked and on_writable, not from comparing this.
  virtual size_t queued_bytes() const = 0;
  // No request after this one on the connection: its response says Connection: close. Call
  // before send_head. For refusals of requests that no client should send (nginx closes
  // after its own 400s).
  virtual void close_after_response() = 0;
  virtual void pause_read() = 0;          // stop reading the request body (backpressure)
  virtual void resume_read() = 0;
  // Access-log details the handler knows and the server does not.
  virtual void note_key(int64_t key_id) = 0;
  virtual void note_service(std::string_view service) = 0;
  virtual std::string_view peer() const = 0;
  // The connection's slot for a ConnectionState; empty until a handler fills it.
  virtual std::unique_ptr<ConnectionState>& connection_state() = 0;
};

class RequestHandler {
 public:
  virtual ~RequestHandler() = default;
  virtual void on_body(std::string_view data) = 0;
  virtual void on_end() = 0;        // request (or upgrade head) fully received
  virtual void on_abort() = 0;      // client went away or timed out: stop using the sink
  // The connection watches its own output queue: it passed the high watermark (stop
  // feeding it), then drained to the low one (go on).
  virtual void on_write_blocked() {}
  virtual void on_writable() {}
  virtual void on_tunnel_data(std::string_view) {}  // client bytes after a 101
  virtual void on_tunnel_eof() {}
  // The exchange is over (response ended, request read) and the connection is about to drop
  // the handler and read its next request: a handler that kept the request head points at
  // it, and the connection takes its storage (during this call) to parse the next head into.
  // The handler must not read its head afterwards.
  virtual http::RequestHead* spent_head() { return nullptr; }
};

class HandlerFactory {
 public:
  virtual ~HandlerFactory() = default;
  // Called on the worker's loop when a request head is complete. Returns the handler that
  // owns the rest of the exchange. The handler may answer at once through the sink.
  virtual std::shared_ptr<RequestHandler> on_request(http::RequestHead& head, ResponseSink& sink) = 0;
};

}  // namespace keypool::server
