#pragma once
// A scripted fake of an upstream API for integration tests: listens on 127.0.0.1, port 0,
// optionally TLS; one thread per connection, HTTP/1.1 keep-alive and pipelining; records
// every request it reads (bodies optional, so 1 GiB uploads only count bytes). A Handler
// decides each response through a ResponseWriter, down to malformed bytes and resets.
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "support/compress.h"
#include "support/socket_stream.h"

namespace keypool::testing {

struct TestPki;
namespace detail {
struct UpstreamConn;
}

struct RecordedRequest {
  std::string method, target, path, query;  // target = path [ "?" query ]
  HeaderList headers;
  std::string body;       // empty when the upstream does not store bodies
  size_t body_bytes = 0;  // counted either way
  int connection_id = 0;  // 1-based, in accept order
  bool complete = true;   // false when the client went away mid-body
  std::string header(std::string_view name) const { return header_value(headers, name); }
};

class ResponseWriter {
 public:
  // Status line and headers. Without Content-Length or Transfer-Encoding the body is chunked
  // (Transfer-Encoding: chunked is added), except for 1xx, 204 and 304, which have no body.
  // A 1xx other than 101 is interim: head may be called again for the final response.
  void head(int status, HeaderList headers = {});
  void body(std::string_view data);  // one chunk or raw bytes, as the framing says
  void end();                        // terminating chunk if chunked; idempotent
  void raw(std::string_view bytes);  // as is; the connection closes after the handler
  void close_now();                  // RST (SO_LINGER 0), nothing more is written
  void sleep_ms(int ms);             // returns early when the upstream stops
  bool client_gone();                // the peer closed or reset its side
  // Bytes from the client after the request (e.g. after a 101): "" on timeout, nullopt on EOF.
  std::optional<std::string> read_raw(int timeout_ms);

 private:
  friend class FakeUpstream;
  ResponseWriter(detail::UpstreamConn& c, const RecordedRequest& req) : conn_(c), req_(req) {}
  void write(std::string_view bytes);
  void write_body(std::string_view data);

  detail::UpstreamConn& conn_;
  const RecordedRequest& req_;
  // The coding serve() chose for this response ("" none). A handler that sets its own
  // Content-Encoding, a body-less status or a 101 is left alone.
  std::string coding_;
  std::unique_ptr<StreamEncoder> encoder_;
  bool head_sent_ = false, ended_ = false, chunked_ = false, no_body_ = false;
  bool must_close_ = false, closed_ = false;
};

using Handler = std::function<void(const RecordedRequest&, ResponseWriter&)>;

// What the fake does to the bodies its handlers write, as a provider's edge does.
enum class Compression {
  Off,     // bodies go as written
  Honour,  // the first of gzip, deflate, br the request's Accept-Encoding accepts
  Force,   // the forced coding whatever the request accepts (an edge that ignores it)
};

class FakeUpstream {
 public:
  explicit FakeUpstream(Handler h, bool tls = false, const TestPki* pki = nullptr);
  ~FakeUpstream() { stop(); }
  FakeUpstream(const FakeUpstream&) = delete;
  FakeUpstream& operator=(const FakeUpstream&) = delete;

  uint16_t port() const { return port_; }
  std::string base_url() const;  // "http://127.0.0.1:<port>" or https
  std::vector<RecordedRequest> requests() const;
  size_t request_count() const;
  void clear_requests();
  int connections_accepted() const { return accepted_; }
  int open_connections() const { return open_; }
  // Responses cut short because a write failed or the peer went away.
  int aborted_responses() const { return aborted_; }
  void set_handler(Handler h);
  void set_store_bodies(bool store) { store_bodies_ = store; }
  // Compresses what the handlers write from the next response on (chunked, Content-Length
  // dropped, each body() call flushed so a stream stays a stream). forced: the coding Force
  // uses ("gzip", "deflate", "deflate-raw", "br").
  void set_compression(Compression mode, std::string forced = "gzip");
  // Closes the listener, wakes every connection and joins every thread. Each wait inside is
  // bounded or woken here, so this returns unless a handler itself blocks forever.
  void stop();

 private:
  void accept_loop();
  void serve(detail::UpstreamConn& c);
  bool read_request(detail::UpstreamConn& c, RecordedRequest& req);

  int listen_fd_ = -1;
  uint16_t port_ = 0;
  bool tls_ = false;
  SSL_CTX* ssl_ctx_ = nullptr;
  std::atomic<bool> stopping_{false}, store_bodies_{true};
  std::atomic<int> accepted_{0}, open_{0}, aborted_{0};
  mutable std::mutex mu_;  // guards handler_, requests_, conns_
  Handler handler_;
  Compression compression_ = Compression::Off;
  std::string forced_coding_;
  std::vector<RecordedRequest> requests_;
  std::vector<std::shared_ptr<detail::UpstreamConn>> conns_;
  std::thread accept_thread_;
};

// Ready-made handlers.
Handler json_ok(std::string body = R"({"ok":true})");
// 200 with JSON {method, target, path, query, headers: {lower-case name: value}, body_bytes,
// body (when stored and at most 1 MiB), connection_id}: shows what reached the upstream.
Handler echo();
// text/event-stream, chunked, `data: {"i":N}\n\n` per event with gap_ms between events.
Handler sse(int events, int gap_ms);
// Content-Length bytes of download_pattern, written 64 KiB at a time.
Handler big_download(uint64_t bytes);
// 101 Switching Protocols to a request with Upgrade, then echoes bytes until EOF; 400 without.
Handler upgrade_echo();
// The bytes big_download sends at [offset, offset + n), so a test can check what it got.
std::string download_pattern(uint64_t offset, size_t n);

}  // namespace keypool::testing
