#include "cli/admin_client.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include "http/response_parser.h"

namespace keypool::cli {
namespace {

// A response head or body beyond this is not an admin API answer.
constexpr size_t kMaxHeadBytes = 64 * 1024;
constexpr size_t kMaxBodyBytes = 64 * 1024 * 1024;

Error unreachable(const std::string& what) { return make_error(ErrorCode::Unavailable, what); }

// Owns one socket; closes it on every path out of call().
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// Waits for fd to become ready for events; false on timeout.
bool wait_for(int fd, short events, int timeout_ms) {
  pollfd p{fd, events, 0};
  for (;;) {
    int n = ::poll(&p, 1, timeout_ms);
    if (n < 0 && errno == EINTR) continue;
    return n > 0;
  }
}

// Tries each address in turn with a non-blocking connect bounded by timeout_ms.
Result<int> connect_to(const BaseUrl& u, int timeout_ms) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  std::string port = std::to_string(u.port);
  if (int rc = ::getaddrinfo(u.host.c_str(), port.c_str(), &hints, &res); rc != 0)
    return unreachable("cannot resolve " + u.host + ": " + gai_strerror(rc));
  std::string last = "no address";
  int found = -1;
  for (addrinfo* a = res; a && found < 0; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
    if (fd < 0) continue;
    int rc = ::connect(fd, a->ai_addr, a->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      if (!wait_for(fd, POLLOUT, timeout_ms)) {
        last = "connection timed out";
        ::close(fd);
        continue;
      }
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      rc = err ? -1 : 0;
      errno = err;
    }
    if (rc == 0) {
      found = fd;
    } else {
      last = strerror(errno);
      ::close(fd);
    }
  }
  ::freeaddrinfo(res);
  if (found < 0) return unreachable("cannot connect to " + u.host + ":" + port + ": " + last);
  return found;
}

Result<void> send_all(int fd, std::string_view data, int timeout_ms) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (!wait_for(fd, POLLOUT, timeout_ms)) return unreachable("timed out sending the request");
    } else {
      return unreachable(std::string("cannot send the request: ") + strerror(errno));
    }
  }
  return Ok{};
}

// Reads whatever arrives next into buf; 0 means EOF. Timeouts and errors are errors.
Result<size_t> read_some(int fd, char* buf, size_t cap, int timeout_ms) {
  for (;;) {
    ssize_t n = ::recv(fd, buf, cap, 0);
    if (n >= 0) return static_cast<size_t>(n);
    if (errno == EINTR) continue;
    if (errno != EAGAIN)
      return unreachable(std::string("cannot read the response: ") + strerror(errno));
    if (!wait_for(fd, POLLIN, timeout_ms)) return unreachable("timed out waiting for the response");
  }
}

// Collects the final response's status and decoded body. The parser has already dropped
// interim 1xx heads and undone chunking; this only refuses a body too big to hold, which is
// the one reason it ever stops the parser.
class ReplySink : public http::ResponseParser::Sink {
 public:
  bool on_head(http::ResponseHead& head) override {
    reply_.status = head.status;
    // A declared length over the cap is refused before a byte of it is read.
    return !(head.content_length && *head.content_length > kMaxBodyBytes);
  }
  bool on_body(std::string_view data) override {
    // Chunked and close-delimited bodies declare no length: count what arrives.
    if (reply_.body.size() + data.size() > kMaxBodyBytes) return false;
    reply_.body.append(data);
    return true;
  }
  HttpReply take() { return std::move(reply_); }

 private:
  HttpReply reply_;
};

Error closed_early() {
  return unreachable("the server closed the connection before a complete response");
}

// Reads one response off fd. Every read is fed to the parser as it comes; EOF goes to
// finish(), which is what ends a body that has neither a length nor chunking.
Result<HttpReply> read_reply(int fd, bool head_request, int timeout_ms) {
  ReplySink sink;
  http::ResponseLimits limits;
  limits.max_header_bytes = kMaxHeadBytes;
  http::ResponseParser parser(&sink, limits);
  parser.reset(head_request);
  char buf[16384];
  for (;;) {
    auto n = read_some(fd, buf, sizeof buf, timeout_ms);
    if (!n) return n.error();
    const bool eof = *n == 0;
    http::ParseResult r = eof ? parser.finish() : parser.feed(buf, *n);
    switch (r.status) {
      case http::ParseStatus::NeedMore:
        if (eof) return closed_early();  // nothing had started: no answer at all
        continue;
      case http::ParseStatus::Complete:
        // Connection: close was asked for, so anything after the response is ignored.
        return sink.take();
      case http::ParseStatus::Stopped:  // ReplySink stops only over kMaxBodyBytes
        return make_error(ErrorCode::BadGateway, "response too large");
      case http::ParseStatus::Upgrade:
        return make_error(ErrorCode::BadGateway, "the server switched protocols");
      case http::ParseStatus::Error:
        if (eof) return closed_early();
        return make_error(ErrorCode::BadGateway, "malformed response from the server: " + r.error);
    }
  }
}

}  // namespace

Result<BaseUrl> parse_admin_url(std::string_view url) {
  // A URL with '@' may carry user:password; such a URL is never repeated in the message.
  std::string what = url.find('@') == std::string_view::npos ? "--url '" + std::string(url) + "'"
                                                             : std::string("--url");
  auto parts = config::parse_base_url(url);
  if (!parts) return make_error(ErrorCode::BadRequest, what + ": " + parts.error().message);
  if (parts->tls)
    return make_error(ErrorCode::BadRequest,
                      what +
                          ": https is not supported; reach the admin API over plain http on a "
                          "trusted network");
  return parts;
}

Result<HttpReply> AdminClient::call(const std::string& method, const std::string& path,
                                    const std::string& body) {
  auto fd_r = connect_to(url_, connect_timeout_ms_);
  if (!fd_r) return fd_r.error();
  Fd sock{*fd_r};

  std::string host = url_.host.find(':') != std::string::npos ? "[" + url_.host + "]" : url_.host;
  std::string req = method + " " + url_.path + path + " HTTP/1.1\r\nHost: " + host + ":" +
                    std::to_string(url_.port) + "\r\nAuthorization: Bearer " + token_ +
                    "\r\nAccept: application/json\r\nConnection: close\r\nUser-Agent: "
                    "keypool-cli/" KEYPOOL_VERSION "\r\n";
  if (!body.empty() || method == "POST" || method == "PATCH" || method == "PUT")
    req +=
        "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  req += "\r\n";
  req += body;
  auto sent = send_all(sock.fd, req, io_timeout_ms_);
  // The request carries the admin token and perhaps a key value: wipe it once it is sent.
  explicit_bzero(req.data(), req.size());
  if (!sent) return sent.error();

  return read_reply(sock.fd, method == "HEAD", io_timeout_ms_);
}

}  // namespace keypool::cli
