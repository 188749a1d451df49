#include "support/socket_stream.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstring>
#include <mutex>

#include "base/strings.h"

namespace keypool::testing {
namespace {

constexpr size_t kMaxHead = 1 << 20;
constexpr size_t kMaxLine = 64 * 1024;

int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

// False on timeout. EINTR restarts with the remaining time.
bool wait_fd(int fd, short events, int64_t deadline) {
  for (;;) {
    int64_t left = deadline - now_ms();
    if (left < 0) left = 0;
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, static_cast<int>(left));
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) throw std::runtime_error(std::string("poll: ") + std::strerror(errno));
  }
}

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

}  // namespace

std::string header_value(const HeaderList& h, std::string_view name) {
  for (const auto& [k, v] : h)
    if (iequals(k, name)) return v;
  return "";
}

bool has_header(const HeaderList& h, std::string_view name) {
  for (const auto& kv : h)
    if (iequals(kv.first, name)) return true;
  return false;
}

bool header_lists_token(const HeaderList& h, std::string_view name, std::string_view token) {
  for (const auto& [k, v] : h) {
    if (!iequals(k, name)) continue;
    for (auto part : split(v, ','))
      if (iequals(trim(part), token)) return true;
  }
  return false;
}

ParsedHead parse_head(std::string_view head) {
  ParsedHead out;
  bool first = true;
  for (auto line : split(head, '\n')) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (first) {
      out.start_line = std::string(line);
      first = false;
      continue;
    }
    if (line.empty()) continue;
    auto colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0)
      throw std::runtime_error("malformed header line: " + std::string(line));
    out.headers.emplace_back(std::string(line.substr(0, colon)),
                             std::string(trim(line.substr(colon + 1))));
  }
  return out;
}

void ignore_sigpipe() {
  static std::once_flag once;
  std::call_once(once, [] { std::signal(SIGPIPE, SIG_IGN); });
}

std::string openssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown TLS error" : out;
}

SocketStream::SocketStream(int fd, SSL* ssl) : fd_(fd), ssl_(ssl) { ignore_sigpipe(); }

SocketStream& SocketStream::operator=(SocketStream&& o) noexcept {
  if (this != &o) {
    close();
    fd_ = std::exchange(o.fd_, -1);
    ssl_ = std::exchange(o.ssl_, nullptr);
  }
  return *this;
}

SocketStream::Read SocketStream::read_some(std::string& out, size_t max, int timeout_ms) {
  if (fd_ < 0) return Read::Eof;
  int64_t deadline = now_ms() + timeout_ms;
  size_t old = out.size();
  out.resize(old + max);
  auto done = [&](Read r, size_t n) {
    out.resize(old + n);
    return r;
  };
  for (;;) {
    short want = POLLIN;
    if (ssl_) {
      ERR_clear_error();
      int n = SSL_read(ssl_, out.data() + old, static_cast<int>(max));
      if (n > 0) return done(Read::Data, static_cast<size_t>(n));
      int err = SSL_get_error(ssl_, n);
      if (err == SSL_ERROR_WANT_WRITE)
        want = POLLOUT;
      else if (err == SSL_ERROR_ZERO_RETURN || err == SSL_ERROR_SYSCALL)
        return done(Read::Eof, 0);
      else if (err != SSL_ERROR_WANT_READ)
        throw std::runtime_error("TLS read failed: " + openssl_errors());
    } else {
      ssize_t n = ::recv(fd_, out.data() + old, max, 0);
      if (n > 0) return done(Read::Data, static_cast<size_t>(n));
      if (n == 0 || errno == ECONNRESET) return done(Read::Eof, 0);
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        out.resize(old);
        throw std::runtime_error(errno_text("recv"));
      }
    }
    if (!wait_fd(fd_, want, deadline)) return done(Read::Timeout, 0);
  }
}

void SocketStream::write_all(std::string_view data, int stall_ms) {
  if (fd_ < 0) throw std::runtime_error("write on a closed socket");
  while (!data.empty()) {
    short want = POLLOUT;
    if (ssl_) {
      // A retried SSL_write must pass the same bytes, which `data` still holds.
      ERR_clear_error();
      int len = static_cast<int>(std::min<size_t>(data.size(), 1 << 30));
      int n = SSL_write(ssl_, data.data(), len);
      if (n > 0) {
        data.remove_prefix(static_cast<size_t>(n));
        continue;
      }
      int err = SSL_get_error(ssl_, n);
      if (err == SSL_ERROR_WANT_READ)
        want = POLLIN;
      else if (err != SSL_ERROR_WANT_WRITE)
        throw std::runtime_error("TLS write failed: " + openssl_errors());
    } else {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n >= 0) {
        data.remove_prefix(static_cast<size_t>(n));
        continue;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) throw std::runtime_error(errno_text("send"));
    }
    if (!wait_fd(fd_, want, now_ms() + stall_ms))
      throw TimeoutError("write stalled for " + std::to_string(stall_ms) + " ms");
  }
}

void SocketStream::shutdown_write() {
  if (fd_ < 0) return;
  if (ssl_) SSL_shutdown(ssl_);  // close_notify; reading stays allowed afterwards
  ::shutdown(fd_, SHUT_WR);
}

void SocketStream::close() {
  if (ssl_) {
    SSL_shutdown(ssl_);  // best effort on a non-blocking fd
    SSL_free(ssl_);
    ssl_ = nullptr;
  }
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void SocketStream::reset() {
  if (fd_ >= 0) {
    linger l{1, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  }
  if (ssl_) SSL_free(ssl_);  // no close_notify: the point is an unclean end
  ssl_ = nullptr;
  close();
}

int connect_tcp(const std::string& host, uint16_t port, int timeout_ms) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string where = host + ":" + std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res); rc != 0)
    throw std::runtime_error("resolve " + where + ": " + gai_strerror(rc));
  int64_t deadline = now_ms() + timeout_ms;
  std::string last = "no address";
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      last = errno_text("socket");
      continue;
    }
    int rc = ::connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      if (!wait_fd(fd, POLLOUT, deadline)) {
        ::close(fd);
        ::freeaddrinfo(res);
        throw TimeoutError("connect " + where + " timed out");
      }
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      errno = err;
      rc = err == 0 ? 0 : -1;
    }
    if (rc == 0) {
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      ::freeaddrinfo(res);
      return fd;
    }
    last = errno_text("connect");
    ::close(fd);
  }
  ::freeaddrinfo(res);
  throw std::runtime_error("connect " + where + ": " + last);
}

int listen_loopback(uint16_t* port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(errno_text("socket"));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 256) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    std::string err = errno_text("listen on 127.0.0.1");
    ::close(fd);
    throw std::runtime_error(err);
  }
  *port = ntohs(a.sin_port);
  return fd;
}

void tls_handshake(SSL* ssl, int fd, int timeout_ms) {
  int64_t deadline = now_ms() + timeout_ms;
  for (;;) {
    ERR_clear_error();
    int rc = SSL_do_handshake(ssl);
    if (rc == 1) return;
    int err = SSL_get_error(ssl, rc);
    short want = err == SSL_ERROR_WANT_READ ? POLLIN : err == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
    if (want == 0) {
      std::string why = openssl_errors();
      long verify = SSL_get_verify_result(ssl);
      if (verify != X509_V_OK)
        why += std::string(" (verify: ") + X509_verify_cert_error_string(verify) + ")";
      throw std::runtime_error("TLS handshake failed: " + why);
    }
    if (!wait_fd(fd, want, deadline)) throw TimeoutError("TLS handshake timed out");
  }
}

std::string HttpStream::take_buffered(size_t max) {
  size_t n = std::min(max, buffered());
  std::string out = buf_.substr(pos_, n);
  pos_ += n;
  return out;
}

SocketStream::Read HttpStream::fill(int timeout_ms) {
  // Drop consumed bytes so a long stream does not grow the buffer.
  if (pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  } else if (pos_ > 64 * 1024 && pos_ * 2 > buf_.size()) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  return s_.read_some(buf_, 64 * 1024, timeout_ms);
}

std::optional<std::string> HttpStream::read_head(int timeout_ms) {
  for (;;) {
    // RFC 9112 2.2: ignore empty lines before a message.
    while (buffered() && (buf_[pos_] == '\r' || buf_[pos_] == '\n')) ++pos_;
    size_t crlf = buf_.find("\n\r\n", pos_), lf = buf_.find("\n\n", pos_);
    size_t end = std::min(crlf, lf);
    if (end != std::string::npos) {
      std::string head = buf_.substr(pos_, end + 1 - pos_);
      pos_ = end + (end == crlf ? 3 : 2);
      return head;
    }
    if (buffered() > kMaxHead) throw std::runtime_error("message head over 1 MiB");
    auto r = fill(timeout_ms);
    if (r == SocketStream::Read::Timeout)
      throw TimeoutError("no message head within " + std::to_string(timeout_ms) + " ms");
    if (r == SocketStream::Read::Eof) {
      if (buffered() == 0) return std::nullopt;
      throw std::runtime_error("EOF inside a message head: " + take_buffered(200));
    }
  }
}

std::string HttpStream::read_line(int timeout_ms) {
  for (;;) {
    size_t nl = buf_.find('\n', pos_);
    if (nl != std::string::npos) {
      std::string line = buf_.substr(pos_, nl - pos_);
      pos_ = nl + 1;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      return line;
    }
    if (buffered() > kMaxLine) throw std::runtime_error("line over 64 KiB");
    auto r = fill(timeout_ms);
    if (r == SocketStream::Read::Timeout) throw TimeoutError("timed out reading a line");
    if (r == SocketStream::Read::Eof) throw std::runtime_error("EOF inside a line");
  }
}

void HttpStream::read_exact(uint64_t n, const Sink& sink, int timeout_ms) {
  while (n > 0) {
    if (buffered() == 0) {
      auto r = fill(timeout_ms);
      if (r == SocketStream::Read::Timeout)
        throw TimeoutError("timed out with " + std::to_string(n) + " body bytes to go");
      if (r == SocketStream::Read::Eof)
        throw std::runtime_error("EOF with " + std::to_string(n) + " body bytes to go");
    }
    size_t take = static_cast<size_t>(std::min<uint64_t>(n, buffered()));
    sink(std::string_view(buf_).substr(pos_, take));
    pos_ += take;
    n -= take;
  }
}

uint64_t HttpStream::read_chunk_size(int timeout_ms) {
  std::string line = read_line(timeout_ms);
  std::string_view hex = trim(std::string_view(line).substr(0, line.find(';')));
  uint64_t size = 0;
  auto [end, ec] = std::from_chars(hex.data(), hex.data() + hex.size(), size, 16);
  if (hex.empty() || ec != std::errc() || end != hex.data() + hex.size())
    throw std::runtime_error("bad chunk size line: " + line);
  if (size == 0)
    while (!read_line(timeout_ms).empty()) {
    }  // trailers, up to the blank line
  return size;
}

std::optional<std::string> HttpStream::read_chunk(int timeout_ms) {
  uint64_t size = read_chunk_size(timeout_ms);
  if (size == 0) return std::nullopt;
  std::string data;
  read_exact(
      size, [&](std::string_view d) { data.append(d); }, timeout_ms);
  if (!read_line(timeout_ms).empty()) throw std::runtime_error("chunk data not followed by CRLF");
  return data;
}

void HttpStream::read_chunked(const Sink& sink, int timeout_ms) {
  while (uint64_t size = read_chunk_size(timeout_ms)) {
    read_exact(size, sink, timeout_ms);
    if (!read_line(timeout_ms).empty()) throw std::runtime_error("chunk data not followed by CRLF");
  }
}

void HttpStream::read_until_eof(const Sink& sink, int timeout_ms) {
  for (;;) {
    if (buffered()) {
      sink(std::string_view(buf_).substr(pos_));
      pos_ = buf_.size();
    }
    auto r = fill(timeout_ms);
    if (r == SocketStream::Read::Eof) return;
    if (r == SocketStream::Read::Timeout) throw TimeoutError("timed out waiting for EOF");
  }
}

}  // namespace keypool::testing
