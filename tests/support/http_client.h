#pragma once
// A blocking HTTP/1.1 client for tests: what an SDK would send to keypool, plus the raw
// access (bytes in, bytes out, who closed first) that checking a proxy's edge cases needs.
// Every read is bounded by the connection's timeout, taken as time without a byte.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "support/socket_stream.h"

namespace keypool::testing {

struct ResponseHeadOnly {
  int status = 0;
  std::string reason;
  HeaderList headers;
  // First value, case-insensitive; "" if absent.
  std::string header(std::string_view name) const { return header_value(headers, name); }
};

struct Response : ResponseHeadOnly {
  std::string body;
  nlohmann::json json() const { return nlohmann::json::parse(body); }
};

class Connection {
 public:
  static Connection connect(const std::string& host, uint16_t port, int timeout_ms = 10000);
  // Verifies the server against ca_file and host (SNI and name check, or IP check for IPs).
  static Connection connect_tls(const std::string& host, uint16_t port, const std::string& ca_file,
                                int timeout_ms = 10000);

  void send_raw(std::string_view bytes);
  // Sends one request; adds Host and Content-Length (when body is non-empty or the method is
  // POST/PUT/PATCH) unless given. Leaves Connection alone, so the connection stays reusable.
  void send(const std::string& method, const std::string& target, HeaderList headers = {},
            std::string_view body = "");
  // A whole response (1xx included: the caller decides whether to expect a final one next).
  // Throws on timeout or on EOF mid-message.
  Response read_response(bool head_request = false);

  // Streaming: the head, then body pieces. With a chunked body read_chunk returns one chunk
  // as it arrives (nullopt after the last); otherwise whatever bytes arrived (nullopt at the
  // end of the body). Throws TimeoutError when nothing arrives within timeout_ms.
  ResponseHeadOnly read_head(bool head_request = false);
  std::optional<std::string> read_chunk(int timeout_ms);

  // Whatever bytes arrive first (buffered bytes count), up to max; "" on timeout or EOF.
  std::string read_raw(size_t max, int timeout_ms);
  // True if EOF (or a reset) arrives within timeout_ms; bytes before it are discarded.
  bool closed_by_peer(int timeout_ms);
  void shutdown_write();
  void close();
  int fd() const;

 private:
  enum class Framing { None, Length, Chunked, UntilEof };
  Connection(SocketStream s, std::string host_header, int timeout_ms)
      : http_(std::move(s)), host_header_(std::move(host_header)), timeout_ms_(timeout_ms) {}

  HttpStream http_;
  std::string host_header_;
  int timeout_ms_;
  // Body framing of the response whose head read_head() returned; read_chunk follows it.
  Framing framing_ = Framing::None;
  uint64_t remaining_ = 0;
};

// One request on a fresh connection to 127.0.0.1:port with Connection: close; skips interim
// 1xx responses (except 101) and returns the final one.
Response request(uint16_t port, std::string method, std::string target, HeaderList headers = {},
                 std::string body = "");

}  // namespace keypool::testing
