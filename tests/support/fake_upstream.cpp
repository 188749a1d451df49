#include "support/fake_upstream.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "base/strings.h"
#include "support/certs.h"

namespace keypool::testing {

namespace {
// Mid-message idle limit: generous, since a 1 GiB upload through a proxy may pause.
constexpr int kIdleMs = 30000;
}  // namespace

namespace detail {
// One accepted connection. The serving thread owns `http`; stop() may only shut the fd down,
// under `mu`, which is also held when the fd is closed so stop() never touches a reused fd.
struct UpstreamConn {
  int id = 0;
  const std::atomic<bool>* stopping = nullptr;
  HttpStream http;
  std::mutex mu;
  std::atomic<bool> done{false};
  std::thread thread;

  void wake() {
    std::lock_guard<std::mutex> lock(mu);
    if (http.fd() >= 0) ::shutdown(http.fd(), SHUT_RDWR);
  }
  void close(bool rst) {
    std::lock_guard<std::mutex> lock(mu);
    rst ? http.socket().reset() : http.socket().close();
  }
};
}  // namespace detail

namespace {

const char* reason_phrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Status";
  }
}

std::string hex(size_t n) {
  char buf[20];
  int len = std::snprintf(buf, sizeof buf, "%zx", n);
  return std::string(buf, static_cast<size_t>(len));
}

}  // namespace

// ---- ResponseWriter ----

void ResponseWriter::write(std::string_view bytes) {
  if (closed_) throw std::runtime_error("fake upstream: write after close_now()");
  conn_.http.socket().write_all(bytes, kIdleMs);
}

void ResponseWriter::head(int status, HeaderList headers) {
  if (head_sent_) throw std::logic_error("fake upstream: head() called twice");
  bool interim = status >= 100 && status < 200 && status != 101;
  if (!interim) {
    head_sent_ = true;
    no_body_ = status < 200 || status == 204 || status == 304 || req_.method == "HEAD";
    if (has_header(headers, "transfer-encoding")) {
      chunked_ = header_lists_token(headers, "transfer-encoding", "chunked");
      must_close_ = !chunked_;  // any other coding is delimited by close
    } else if (!has_header(headers, "content-length") && !no_body_) {
      headers.emplace_back("Transfer-Encoding", "chunked");
      chunked_ = true;
    }
    if (status == 101 || header_lists_token(headers, "connection", "close")) must_close_ = true;
    bool encode = !coding_.empty() && !no_body_ && status != 101;
    if (encode && !has_header(headers, "content-encoding")) {
      std::erase_if(headers, [](const auto& h) { return iequals(h.first, "content-length"); });
      if (!chunked_) headers.emplace_back("Transfer-Encoding", "chunked");
      chunked_ = true;
      must_close_ = false;
      headers.emplace_back("Content-Encoding", coding_ == "deflate-raw" ? "deflate" : coding_);
      encoder_ = std::make_unique<StreamEncoder>(coding_);
    }
  }
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) + "\r\n";
  for (const auto& [k, v] : headers) out += k + ": " + v + "\r\n";
  out += "\r\n";
  write(out);
}

void ResponseWriter::body(std::string_view data) {
  if (!head_sent_) head(200);
  if (no_body_ || ended_) return;
  if (encoder_) return write_body(encoder_->push(data));
  write_body(data);
}

void ResponseWriter::write_body(std::string_view data) {
  if (!chunked_) return write(data);
  if (data.empty()) return;  // an empty chunk would end the body
  std::string out = hex(data.size()) + "\r\n";
  out.append(data);
  out += "\r\n";
  write(out);  // one write per chunk, so each chunk leaves as its own burst
}

void ResponseWriter::end() {
  if (!head_sent_) head(200, {{"Content-Length", "0"}});
  if (ended_) return;
  ended_ = true;
  if (encoder_) write_body(encoder_->finish());
  if (chunked_ && !no_body_) write("0\r\n\r\n");
}

void ResponseWriter::raw(std::string_view bytes) {
  must_close_ = true;  // framing is now unknown, so the connection cannot be reused
  write(bytes);
}

void ResponseWriter::close_now() {
  if (closed_) return;
  closed_ = true;
  conn_.close(true);
}

void ResponseWriter::sleep_ms(int ms) {
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (!conn_.stopping->load() && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(ms, 10)));
}

bool ResponseWriter::client_gone() {
  if (closed_) return true;
  pollfd p{conn_.http.fd(), POLLRDHUP, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

std::optional<std::string> ResponseWriter::read_raw(int timeout_ms) {
  if (closed_) return std::nullopt;
  if (conn_.http.buffered() == 0) {
    auto r = conn_.http.fill(timeout_ms);
    if (r == SocketStream::Read::Eof) return std::nullopt;
    if (r == SocketStream::Read::Timeout) return "";
  }
  return conn_.http.take_buffered(SIZE_MAX);
}

// ---- FakeUpstream ----

FakeUpstream::FakeUpstream(Handler h, bool tls, const TestPki* pki)
    : tls_(tls), handler_(std::move(h)) {
  ignore_sigpipe();
  if (tls) {
    if (!pki) throw std::invalid_argument("FakeUpstream: TLS needs a TestPki");
    ssl_ctx_ = SSL_CTX_new(TLS_server_method());
    if (!ssl_ctx_ || SSL_CTX_use_certificate_chain_file(ssl_ctx_, pki->server_cert.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(ssl_ctx_, pki->server_key.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ssl_ctx_) != 1) {
      std::string err = openssl_errors();
      SSL_CTX_free(ssl_ctx_);
      throw std::runtime_error("FakeUpstream: TLS setup: " + err);
    }
    SSL_CTX_set_options(ssl_ctx_, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ssl_ctx_, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  }
  listen_fd_ = listen_loopback(&port_);
  accept_thread_ = std::thread([this] { accept_loop(); });
}

std::string FakeUpstream::base_url() const {
  return std::string(tls_ ? "https" : "http") + "://127.0.0.1:" + std::to_string(port_);
}

std::vector<RecordedRequest> FakeUpstream::requests() const {
  std::lock_guard<std::mutex> lock(mu_);
  return requests_;
}

size_t FakeUpstream::request_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return requests_.size();
}

void FakeUpstream::clear_requests() {
  std::lock_guard<std::mutex> lock(mu_);
  requests_.clear();
}

void FakeUpstream::set_compression(Compression mode, std::string forced) {
  std::lock_guard<std::mutex> lock(mu_);
  compression_ = mode;
  forced_coding_ = std::move(forced);
}

void FakeUpstream::set_handler(Handler h) {
  std::lock_guard<std::mutex> lock(mu_);
  handler_ = std::move(h);
}

void FakeUpstream::stop() {
  stopping_ = true;
  // Shutting the listener down wakes the accept thread's poll() at once.
  if (listen_fd_ >= 0) ::shutdown(listen_fd_, SHUT_RDWR);
  if (accept_thread_.joinable()) accept_thread_.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
  std::vector<std::shared_ptr<detail::UpstreamConn>> conns;
  {
    std::lock_guard<std::mutex> lock(mu_);
    conns.swap(conns_);
  }
  for (auto& c : conns) c->wake();
  for (auto& c : conns)
    if (c->thread.joinable()) c->thread.join();
  if (ssl_ctx_) SSL_CTX_free(ssl_ctx_);
  ssl_ctx_ = nullptr;
}

// Runs on accept_thread_: polls in short slices so stop() is noticed, and joins finished
// connection threads as it goes so a long test does not pile them up.
void FakeUpstream::accept_loop() {
  while (!stopping_) {
    pollfd p{listen_fd_, POLLIN, 0};
    ::poll(&p, 1, 50);
    std::lock_guard<std::mutex> lock(mu_);
    std::erase_if(conns_, [](const auto& c) {
      if (!c->done) return false;
      c->thread.join();
      return true;
    });
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) continue;
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    SSL* ssl = nullptr;
    if (tls_) {
      ssl = SSL_new(ssl_ctx_);
      SSL_set_fd(ssl, fd);
      SSL_set_accept_state(ssl);
    }
    auto c = std::make_shared<detail::UpstreamConn>();
    c->id = ++accepted_;
    c->stopping = &stopping_;
    c->http = HttpStream(SocketStream(fd, ssl));
    // c->thread is assigned under mu_, and the reaper also holds mu_, so it never sees a
    // finished connection whose thread object is still empty.
    c->thread = std::thread([this, c] {
      serve(*c);
      c->done = true;
    });
    conns_.push_back(std::move(c));
  }
}

// Runs on the connection's own thread: requests in order until close, error or stop().
void FakeUpstream::serve(detail::UpstreamConn& c) {
  ++open_;
  try {
    if (tls_) tls_handshake(c.http.socket().ssl(), c.http.fd(), 10000);
    for (;;) {
      // Idle between requests: wake up now and then to notice stop().
      bool eof = false;
      while (c.http.buffered() == 0 && !eof && !stopping_)
        eof = c.http.fill(100) == SocketStream::Read::Eof;
      if (eof || stopping_) break;
      RecordedRequest req;
      req.connection_id = c.id;
      if (!read_request(c, req)) break;
      Handler h;
      ResponseWriter w(c, req);
      {
        std::lock_guard<std::mutex> lock(mu_);
        h = handler_;
        if (compression_ == Compression::Force) w.coding_ = forced_coding_;
        if (compression_ == Compression::Honour)
          w.coding_ = pick_coding(req.header("accept-encoding"));
      }
      try {
        h(req, w);
        if (w.closed_) break;
        if (!w.head_sent_ && !w.must_close_) {
          std::string msg = R"({"error":"fake upstream handler wrote no response"})";
          w.head(500, {{"Content-Type", "application/json"},
                       {"Content-Length", std::to_string(msg.size())}});
          w.body(msg);
        }
        if (!w.must_close_) w.end();
      } catch (...) {
        ++aborted_;
        break;
      }
      if (w.must_close_ || header_lists_token(req.headers, "connection", "close")) break;
    }
  } catch (...) {
    // A malformed head, a failed handshake or a timeout: drop the connection, as a server would.
  }
  c.close(false);
  --open_;
}

// Reads one request head and body and records it, also when the body is cut short.
// False when the connection should end (clean EOF or an incomplete body).
bool FakeUpstream::read_request(detail::UpstreamConn& c, RecordedRequest& req) {
  auto text = c.http.read_head(kIdleMs);
  if (!text) return false;
  ParsedHead p = parse_head(*text);
  auto sp1 = p.start_line.find(' '), sp2 = p.start_line.rfind(' ');
  if (sp1 == std::string::npos || sp2 == sp1) throw std::runtime_error("bad request line");
  req.method = p.start_line.substr(0, sp1);
  req.target = p.start_line.substr(sp1 + 1, sp2 - sp1 - 1);
  auto q = req.target.find('?');
  req.path = req.target.substr(0, q);
  if (q != std::string::npos) req.query = req.target.substr(q + 1);
  req.headers = std::move(p.headers);
  bool http10 = p.start_line.substr(sp2 + 1) == "HTTP/1.0";
  if (http10 && !header_lists_token(req.headers, "connection", "keep-alive"))
    req.headers.emplace_back("Connection", "close");  // so serve() closes after the response

  bool chunked = header_lists_token(req.headers, "transfer-encoding", "chunked");
  auto length = parse_uint(req.header("content-length"));
  if ((chunked || length.value_or(0) > 0) &&
      header_lists_token(req.headers, "expect", "100-continue"))
    c.http.socket().write_all("HTTP/1.1 100 Continue\r\n\r\n", kIdleMs);
  bool store = store_bodies_;
  auto sink = [&](std::string_view d) {
    req.body_bytes += d.size();
    if (store) req.body.append(d);
  };
  try {
    if (chunked)
      c.http.read_chunked(sink, kIdleMs);
    else if (length)
      c.http.read_exact(static_cast<uint64_t>(*length), sink, kIdleMs);
  } catch (...) {
    req.complete = false;
  }
  std::lock_guard<std::mutex> lock(mu_);
  requests_.push_back(req);
  return req.complete;
}

// ---- Ready-made handlers ----

Handler json_ok(std::string body) {
  return [body = std::move(body)](const RecordedRequest&, ResponseWriter& w) {
    w.head(200,
           {{"Content-Type", "application/json"}, {"Content-Length", std::to_string(body.size())}});
    w.body(body);
  };
}

Handler echo() {
  return [](const RecordedRequest& req, ResponseWriter& w) {
    nlohmann::json headers = nlohmann::json::object();
    for (const auto& [k, v] : req.headers) {
      auto name = to_lower(k);
      headers[name] = headers.contains(name) ? headers[name].get<std::string>() + ", " + v : v;
    }
    nlohmann::json j = {{"method", req.method},
                        {"target", req.target},
                        {"path", req.path},
                        {"query", req.query},
                        {"headers", headers},
                        {"body_bytes", req.body_bytes},
                        {"connection_id", req.connection_id}};
    if (req.body.size() == req.body_bytes && req.body_bytes <= (1u << 20)) j["body"] = req.body;
    // Bodies need not be UTF-8; replace rather than throw.
    std::string out = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    w.head(200,
           {{"Content-Type", "application/json"}, {"Content-Length", std::to_string(out.size())}});
    w.body(out);
  };
}

Handler sse(int events, int gap_ms) {
  return [events, gap_ms](const RecordedRequest&, ResponseWriter& w) {
    w.head(200, {{"Content-Type", "text/event-stream"}, {"Cache-Control", "no-cache"}});
    for (int i = 0; i < events; ++i) {
      if (i > 0) w.sleep_ms(gap_ms);
      w.body("data: {\"i\":" + std::to_string(i) + "}\n\n");
    }
    w.end();
  };
}

std::string download_pattern(uint64_t offset, size_t n) {
  std::string out(n, '\0');
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<char>('a' + (offset + i) % 26);
  return out;
}

Handler big_download(uint64_t bytes) {
  return [bytes](const RecordedRequest&, ResponseWriter& w) {
    constexpr size_t kBlock = 64 * 1024;
    // One block of pattern, 26 bytes longer so any offset's slice starts inside it.
    static const std::string block = download_pattern(0, kBlock + 26);
    w.head(200, {{"Content-Type", "application/octet-stream"},
                 {"Content-Length", std::to_string(bytes)}});
    for (uint64_t off = 0; off < bytes;) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(kBlock, bytes - off));
      w.body(std::string_view(block).substr(off % 26, n));
      off += n;
    }
  };
}

Handler upgrade_echo() {
  return [](const RecordedRequest& req, ResponseWriter& w) {
    if (req.header("upgrade").empty()) {
      w.head(400, {{"Content-Length", "0"}});
      return;
    }
    w.head(101, {{"Connection", "Upgrade"}, {"Upgrade", req.header("upgrade")}});
    // read_raw returns nullopt at EOF, including when stop() shuts the socket down.
    while (auto data = w.read_raw(1000))
      if (!data->empty()) w.raw(*data);
  };
}

}  // namespace keypool::testing
