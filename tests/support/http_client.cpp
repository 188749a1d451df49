#include "support/http_client.h"

#include <arpa/inet.h>
#include <openssl/x509v3.h>

#include <chrono>
#include <cstdint>
#include <memory>

#include "base/strings.h"

namespace keypool::testing {
namespace {

std::string host_header(const std::string& host, uint16_t port) {
  bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

bool is_ip(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

}  // namespace

Connection Connection::connect(const std::string& host, uint16_t port, int timeout_ms) {
  return Connection(SocketStream(connect_tcp(host, port, timeout_ms), nullptr),
                    host_header(host, port), timeout_ms);
}

Connection Connection::connect_tls(const std::string& host, uint16_t port,
                                   const std::string& ca_file, int timeout_ms) {
  // The SSL keeps its own reference to the context, so the context may go when this returns.
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()),
                                                        SSL_CTX_free);
  if (!ctx || SSL_CTX_load_verify_locations(ctx.get(), ca_file.c_str(), nullptr) != 1)
    throw std::runtime_error("load CA " + ca_file + ": " + openssl_errors());
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_options(ctx.get(), SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_mode(ctx.get(), SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(ctx.get()), SSL_free);
  if (!ssl) throw std::runtime_error("SSL_new: " + openssl_errors());
  if (is_ip(host)) {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl.get()), host.c_str());
  } else {
    SSL_set_tlsext_host_name(ssl.get(), host.c_str());
    SSL_set1_host(ssl.get(), host.c_str());
  }
  int fd = connect_tcp(host, port, timeout_ms);
  SSL_set_fd(ssl.get(), fd);
  SSL_set_connect_state(ssl.get());
  SocketStream s(fd, ssl.release());  // owns fd and SSL from here, also when the handshake throws
  tls_handshake(s.ssl(), fd, timeout_ms);
  return Connection(std::move(s), host_header(host, port), timeout_ms);
}

void Connection::send_raw(std::string_view bytes) { http_.socket().write_all(bytes, timeout_ms_); }

void Connection::send(const std::string& method, const std::string& target, HeaderList headers,
                      std::string_view body) {
  if (!has_header(headers, "host")) headers.insert(headers.begin(), {"Host", host_header_});
  bool wants_length = !body.empty() || method == "POST" || method == "PUT" || method == "PATCH";
  if (wants_length && !has_header(headers, "content-length") &&
      !has_header(headers, "transfer-encoding"))
    headers.emplace_back("Content-Length", std::to_string(body.size()));
  std::string out = method + " " + target + " HTTP/1.1\r\n";
  for (const auto& [k, v] : headers) out += k + ": " + v + "\r\n";
  out += "\r\n";
  out.append(body);
  send_raw(out);
}

ResponseHeadOnly Connection::read_head(bool head_request) {
  auto text = http_.read_head(timeout_ms_);
  if (!text) throw std::runtime_error("connection closed before a response");
  ParsedHead p = parse_head(*text);
  // "HTTP/1.1 200 OK": the reason may be empty or hold spaces.
  ResponseHeadOnly r;
  auto sp1 = p.start_line.find(' ');
  if (p.start_line.rfind("HTTP/1.", 0) != 0 || sp1 == std::string::npos)
    throw std::runtime_error("bad status line: " + p.start_line);
  auto code = parse_uint(std::string_view(p.start_line).substr(sp1 + 1, 3));
  if (!code) throw std::runtime_error("bad status line: " + p.start_line);
  r.status = static_cast<int>(*code);
  if (p.start_line.size() > sp1 + 5) r.reason = p.start_line.substr(sp1 + 5);
  r.headers = std::move(p.headers);
  // RFC 9112 6.3, in order.
  remaining_ = 0;
  if (head_request || r.status < 200 || r.status == 204 || r.status == 304) {
    framing_ = Framing::None;
  } else if (has_header(r.headers, "transfer-encoding")) {
    framing_ = header_lists_token(r.headers, "transfer-encoding", "chunked") ? Framing::Chunked
                                                                             : Framing::UntilEof;
  } else if (has_header(r.headers, "content-length")) {
    auto n = parse_uint(r.header("content-length"));
    if (!n) throw std::runtime_error("bad Content-Length: " + r.header("content-length"));
    framing_ = Framing::Length;
    remaining_ = static_cast<uint64_t>(*n);
  } else {
    framing_ = Framing::UntilEof;
  }
  return r;
}

std::optional<std::string> Connection::read_chunk(int timeout_ms) {
  if (framing_ == Framing::None) return std::nullopt;
  if (framing_ == Framing::Chunked) {
    auto c = http_.read_chunk(timeout_ms);
    if (!c) framing_ = Framing::None;
    return c;
  }
  if (framing_ == Framing::Length && remaining_ == 0) return std::nullopt;
  if (http_.buffered() == 0) {
    auto r = http_.fill(timeout_ms);
    if (r == SocketStream::Read::Timeout) throw TimeoutError("no body bytes within timeout");
    if (r == SocketStream::Read::Eof) {
      if (framing_ == Framing::Length)
        throw std::runtime_error("EOF with " + std::to_string(remaining_) + " body bytes to go");
      framing_ = Framing::None;
      return std::nullopt;
    }
  }
  size_t max = framing_ == Framing::Length ? static_cast<size_t>(remaining_) : SIZE_MAX;
  std::string data = http_.take_buffered(max);
  if (framing_ == Framing::Length) remaining_ -= data.size();
  return data;
}

Response Connection::read_response(bool head_request) {
  Response r;
  static_cast<ResponseHeadOnly&>(r) = read_head(head_request);
  auto sink = [&](std::string_view d) { r.body.append(d); };
  switch (framing_) {
    case Framing::None: break;
    case Framing::Length: http_.read_exact(remaining_, sink, timeout_ms_); break;
    case Framing::Chunked: http_.read_chunked(sink, timeout_ms_); break;
    case Framing::UntilEof: http_.read_until_eof(sink, timeout_ms_); break;
  }
  framing_ = Framing::None;
  remaining_ = 0;
  return r;
}

std::string Connection::read_raw(size_t max, int timeout_ms) {
  if (http_.buffered() == 0 && http_.fill(timeout_ms) != SocketStream::Read::Data) return "";
  return http_.take_buffered(max);
}

bool Connection::closed_by_peer(int timeout_ms) {
  using namespace std::chrono;
  auto deadline = steady_clock::now() + milliseconds(timeout_ms);
  for (;;) {
    http_.take_buffered(SIZE_MAX);
    auto left = duration_cast<milliseconds>(deadline - steady_clock::now()).count();
    if (left < 0) return false;
    auto r = http_.fill(static_cast<int>(left));
    if (r == SocketStream::Read::Eof) return true;
    if (r == SocketStream::Read::Timeout) return false;
  }
}

void Connection::shutdown_write() { http_.socket().shutdown_write(); }
void Connection::close() { http_.socket().close(); }
int Connection::fd() const { return http_.fd(); }

Response request(uint16_t port, std::string method, std::string target, HeaderList headers,
                 std::string body) {
  Connection c = Connection::connect("127.0.0.1", port);
  if (!has_header(headers, "connection")) headers.emplace_back("Connection", "close");
  c.send(method, target, std::move(headers), body);
  for (;;) {
    Response r = c.read_response(method == "HEAD");
    if (r.status >= 200 || r.status == 101) return r;
  }
}

}  // namespace keypool::testing
