#include "cli/admin_client.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <optional>

#include "base/strings.h"

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

// Appends whatever arrives next; returns false at EOF. Timeouts and errors are errors.
Result<bool> read_some(int fd, std::string& buf, int timeout_ms) {
  for (;;) {
    char tmp[16384];
    ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n > 0) {
      buf.append(tmp, static_cast<size_t>(n));
      return true;
    }
    if (n == 0) return false;
    if (errno == EINTR) continue;
    if (errno != EAGAIN)
      return unreachable(std::string("cannot read the response: ") + strerror(errno));
    if (!wait_for(fd, POLLIN, timeout_ms)) return unreachable("timed out waiting for the response");
  }
}

struct Head {
  int status = 0;
  std::optional<uint64_t> content_length;
  bool chunked = false;
};

Result<Head> parse_head(std::string_view head) {
  auto lines = split(head, '\n');
  Head h;
  std::string_view status_line = lines.empty() ? std::string_view() : lines[0];
  if (!status_line.empty() && status_line.back() == '\r') status_line.remove_suffix(1);
  // "HTTP/1.1 200 OK"
  if (!starts_with(status_line, "HTTP/1.") || status_line.size() < 12 || status_line[8] != ' ')
    return make_error(ErrorCode::BadGateway, "malformed response from the server");
  auto code = parse_uint(status_line.substr(9, 3));
  if (!code || *code < 100 || *code > 599)
    return make_error(ErrorCode::BadGateway, "malformed status line");
  h.status = static_cast<int>(*code);
  for (size_t i = 1; i < lines.size(); ++i) {
    std::string_view line = lines[i];
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view name = trim(line.substr(0, colon));
    std::string_view value = trim(line.substr(colon + 1));
    if (iequals(name, "content-length")) {
      auto n = parse_uint(value);
      if (!n) return make_error(ErrorCode::BadGateway, "malformed Content-Length");
      h.content_length = static_cast<uint64_t>(*n);
    } else if (iequals(name, "transfer-encoding") &&
               to_lower(value).find("chunked") != std::string::npos) {
      h.chunked = true;
    }
  }
  return h;
}

}  // namespace

Result<BaseUrl> parse_base_url(std::string_view url) {
  auto bad = [&](const std::string& why) {
    return make_error(ErrorCode::BadRequest, "--url '" + std::string(url) + "': " + why);
  };
  if (starts_with(to_lower(url), "https://"))
    return bad("https is not supported; reach the admin API over plain http on a trusted network");
  if (!starts_with(to_lower(url), "http://")) return bad("must start with http://");
  std::string_view rest = url.substr(7);
  size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  BaseUrl u;
  if (slash != std::string_view::npos) {
    u.prefix = std::string(rest.substr(slash));
    while (!u.prefix.empty() && u.prefix.back() == '/') u.prefix.pop_back();
  }
  std::string_view port;
  if (starts_with(authority, "[")) {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return bad("unclosed '[' in the host");
    u.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return bad("expected ':' after ']'");
      port = after.substr(1);
    }
  } else {
    size_t colon = authority.rfind(':');
    u.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (u.host.empty()) return bad("no host");
  if (!port.empty()) {
    auto p = parse_uint(port);
    if (!p || *p == 0 || *p > 65535) return bad("port must be between 1 and 65535");
    u.port = static_cast<uint16_t>(*p);
  }
  return u;
}

ChunkedState decode_chunked(std::string_view raw, std::string& out) {
  std::string body;
  size_t pos = 0;
  for (;;) {
    size_t eol = raw.find("\r\n", pos);
    if (eol == std::string_view::npos)
      return raw.size() - pos > 1024 ? ChunkedState::Bad : ChunkedState::Incomplete;
    std::string_view size_line = raw.substr(pos, eol - pos);
    size_line = trim(size_line.substr(0, size_line.find(';')));  // chunk extensions are ignored
    if (size_line.empty() || size_line.size() > 15) return ChunkedState::Bad;
    uint64_t size = 0;
    for (char ch : size_line) {
      int d = (ch >= '0' && ch <= '9')   ? ch - '0'
              : (ch >= 'a' && ch <= 'f') ? ch - 'a' + 10
              : (ch >= 'A' && ch <= 'F') ? ch - 'A' + 10
                                         : -1;
      if (d < 0) return ChunkedState::Bad;
      size = size * 16 + static_cast<uint64_t>(d);
    }
    pos = eol + 2;
    if (size == 0) {
      // Trailers, if any, end with an empty line.
      for (;;) {
        size_t end = raw.find("\r\n", pos);
        if (end == std::string_view::npos) return ChunkedState::Incomplete;
        if (end == pos) {
          out = std::move(body);
          return ChunkedState::Done;
        }
        pos = end + 2;
      }
    }
    if (size > kMaxBodyBytes || body.size() + size > kMaxBodyBytes) return ChunkedState::Bad;
    if (raw.size() < pos + size + 2) return ChunkedState::Incomplete;
    if (raw.substr(pos + size, 2) != "\r\n") return ChunkedState::Bad;
    body.append(raw.substr(pos, size));
    pos += size + 2;
  }
}

Result<HttpReply> AdminClient::call(const std::string& method, const std::string& path,
                                    const std::string& body) {
  auto fd_r = connect_to(url_, connect_timeout_ms_);
  if (!fd_r) return fd_r.error();
  Fd sock{*fd_r};

  std::string host = url_.host.find(':') != std::string::npos ? "[" + url_.host + "]" : url_.host;
  std::string req = method + " " + url_.prefix + path + " HTTP/1.1\r\nHost: " + host + ":" +
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

  std::string buf;
  size_t head_end = std::string::npos;
  Head head;
  for (;;) {
    if (head_end == std::string::npos) {
      head_end = buf.find("\r\n\r\n");
      if (head_end != std::string::npos) {
        auto h = parse_head(std::string_view(buf).substr(0, head_end));
        if (!h) return h.error();
        head = *h;
        buf.erase(0, head_end + 4);
        // An interim 1xx answer: drop it and wait for the final one.
        if (head.status < 200) {
          head_end = std::string::npos;
          continue;
        }
      } else if (buf.size() > kMaxHeadBytes) {
        return make_error(ErrorCode::BadGateway, "response head too large");
      }
    }
    if (head_end != std::string::npos) {
      if (method == "HEAD" || head.status == 204 || head.status == 304)
        return HttpReply{head.status, ""};
      if (head.chunked) {
        std::string out;
        auto st = decode_chunked(buf, out);
        if (st == ChunkedState::Done) return HttpReply{head.status, std::move(out)};
        if (st == ChunkedState::Bad)
          return make_error(ErrorCode::BadGateway, "malformed chunked response");
      } else if (head.content_length) {
        if (*head.content_length > kMaxBodyBytes)
          return make_error(ErrorCode::BadGateway, "response too large");
        if (buf.size() >= *head.content_length) {
          buf.resize(*head.content_length);
          return HttpReply{head.status, std::move(buf)};
        }
      } else if (buf.size() > kMaxBodyBytes) {
        return make_error(ErrorCode::BadGateway, "response too large");
      }
    }
    auto more = read_some(sock.fd, buf, io_timeout_ms_);
    if (!more) return more.error();
    if (!*more) {
      // EOF: only a body without Content-Length or chunking may end this way.
      if (head_end != std::string::npos && !head.chunked && !head.content_length)
        return HttpReply{head.status, std::move(buf)};
      return unreachable("the server closed the connection before a complete response");
    }
  }
}

}  // namespace keypool::cli
