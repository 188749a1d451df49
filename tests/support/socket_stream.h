#pragma once
// Sockets and HTTP/1.1 framing for test code, shared by the client (http_client.h) and the
// fake upstream (fake_upstream.h) so both sides frame messages the same way. The fd is
// non-blocking underneath and every wait goes through poll() with a timeout, so a test that
// goes wrong fails with a TimeoutError instead of hanging the suite. TLS is optional.
#include <openssl/ssl.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace keypool::testing {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

// A bounded wait ran out: lets a test tell "too slow" from "broken".
struct TimeoutError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// First value of a header (case-insensitive), "" if absent.
std::string header_value(const HeaderList& h, std::string_view name);
bool has_header(const HeaderList& h, std::string_view name);
// True when a comma-separated header (Connection, Transfer-Encoding) lists token.
bool header_lists_token(const HeaderList& h, std::string_view name, std::string_view token);

// Splits a message head (start line + header lines, up to the blank line) into its parts.
// Throws on a header line without a colon: the test peers only produce well-formed heads.
struct ParsedHead {
  std::string start_line;
  HeaderList headers;
};
ParsedHead parse_head(std::string_view head);

// Ignores SIGPIPE once for the process: OpenSSL writes with write(2), so a peer that went
// away would otherwise kill the test binary instead of failing one test.
void ignore_sigpipe();
std::string openssl_errors();

// A connected socket, optionally wrapped in TLS. Owns the fd and the SSL.
class SocketStream {
 public:
  enum class Read { Data, Eof, Timeout };
  SocketStream() = default;
  SocketStream(int fd, SSL* ssl);
  SocketStream(SocketStream&& o) noexcept { *this = std::move(o); }
  SocketStream& operator=(SocketStream&& o) noexcept;
  SocketStream(const SocketStream&) = delete;
  SocketStream& operator=(const SocketStream&) = delete;
  ~SocketStream() { close(); }

  // Appends up to max bytes to out. A reset counts as Eof: to a test both mean "gone".
  Read read_some(std::string& out, size_t max, int timeout_ms);
  // Throws TimeoutError when no byte could be written for stall_ms, runtime_error on error.
  void write_all(std::string_view data, int stall_ms);
  void shutdown_write();
  void close();  // graceful (close_notify, FIN)
  void reset();  // abrupt: SO_LINGER 0 makes close() send RST
  int fd() const { return fd_; }
  SSL* ssl() const { return ssl_; }

 private:
  int fd_ = -1;
  SSL* ssl_ = nullptr;
};

// Connects to host:port (numeric or resolvable; tests use 127.0.0.1 and ::1).
int connect_tcp(const std::string& host, uint16_t port, int timeout_ms);
// Listens on 127.0.0.1 with an ephemeral port; returns the fd and sets *port.
int listen_loopback(uint16_t* port);
// Runs the TLS handshake on a non-blocking fd; throws with OpenSSL's reason on failure.
void tls_handshake(SSL* ssl, int fd, int timeout_ms);

// HTTP/1.1 framing over a SocketStream with a read buffer. Every read takes an idle timeout
// (time without a byte), so a slow 1 GiB transfer is fine and a stalled one is not.
class HttpStream {
 public:
  using Sink = std::function<void(std::string_view)>;
  HttpStream() = default;
  explicit HttpStream(SocketStream s) : s_(std::move(s)) {}
  SocketStream& socket() { return s_; }
  int fd() const { return s_.fd(); }

  size_t buffered() const { return buf_.size() - pos_; }
  std::string take_buffered(size_t max);
  SocketStream::Read fill(int timeout_ms);
  // A head up to and excluding its blank line; nullopt on EOF before its first byte.
  std::optional<std::string> read_head(int timeout_ms);
  std::string read_line(int timeout_ms);
  void read_exact(uint64_t n, const Sink& sink, int timeout_ms);
  // One chunk's data, or nullopt after the last chunk and its trailers.
  std::optional<std::string> read_chunk(int timeout_ms);
  void read_chunked(const Sink& sink, int timeout_ms);
  void read_until_eof(const Sink& sink, int timeout_ms);

 private:
  uint64_t read_chunk_size(int timeout_ms);  // consumes trailers when it returns 0
  SocketStream s_;
  std::string buf_;
  size_t pos_ = 0;  // bytes before pos_ are consumed
};

}  // namespace keypool::testing
