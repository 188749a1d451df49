#include "upstream/connection.h"

#include <netdb.h>
#include <openssl/crypto.h>

#include <array>
#include <cstring>
#include <utility>

#include "base/secret.h"
#include "base/try_send.h"
#include "telemetry/log.h"

namespace keypool::upstream {
namespace {

// Large enough that a busy TLS stream (16 KiB records) needs few reads per record.
constexpr size_t kReadBufSize = 64 * 1024;
constexpr size_t kPlainBufSize = 16 * 1024;

void wipe(std::string& s) {
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
}

std::string strip_brackets(const std::string& host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') return host.substr(1, host.size() - 2);
  return host;
}

}  // namespace

// One uv_write: it owns its buffers until the callback, which wipes and frees them.
struct Connection::WriteReq {
  uv_write_t req;
  std::vector<std::string> bufs;
  size_t bytes = 0;
  Connection* conn = nullptr;
};

// ---- life ---------------------------------------------------------------------------------

Connection* Connection::open(Client* client, uv_loop_t* loop, const Origin& origin, const ClientOptions& opts,
                             const tls::ClientContext* tls_ctx) {
  return new Connection(client, loop, origin, opts, tls_ctx);
}

Connection::Connection(Client* client, uv_loop_t* loop, const Origin& origin, const ClientOptions& opts,
                       const tls::ClientContext* tls_ctx)
    : client_(client),
      loop_(loop),
      origin_(origin),
      key_(origin.key()),
      connect_timeout_ms_(opts.connect_timeout_ms),
      head_timeout_ms_(opts.head_timeout_ms),
      idle_timeout_ms_(opts.idle_timeout_ms),
      pool_idle_ms_(opts.pool_idle_ms),
      high_watermark_(opts.write_high_watermark),
      tls_ctx_(tls_ctx),
      parser_(this, http::ResponseLimits{static_cast<size_t>(opts.max_response_header_bytes), 128}),
      read_buf_(new char[kReadBufSize]) {
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
  gai_.data = this;
  connect_req_.data = this;
}

Connection::~Connection() {
  for (auto& s : pending_) wipe(s);
}

void Connection::close() {
  if (closing_) return;
  closing_ = true;
  state_ = State::Closing;
  if (exchange_) exchange_->conn_ = nullptr;
  exchange_ = nullptr;
  handler_ = nullptr;
  ++generation_;
  if (client_) client_->forget(this);
  client_ = nullptr;
  for (auto& s : pending_) wipe(s);
  pending_.clear();
  pending_bytes_ = 0;
  // A cancelled lookup still calls back (UV_ECANCELED); maybe_free waits for it.
  if (dns_pending_) uv_cancel(reinterpret_cast<uv_req_t*>(&gai_));
  if (tcp_initialized_ && !uv_is_closing(reinterpret_cast<uv_handle_t*>(&tcp_)))
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), [](uv_handle_t* h) { static_cast<Connection*>(h->data)->on_tcp_closed(); });
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), [](uv_handle_t* h) {
    auto* self = static_cast<Connection*>(h->data);
    self->timer_closed_ = true;
    self->maybe_free();
  });
}

// Called when the socket of a failed connect attempt or of the closing connection is closed.
void Connection::on_tcp_closed() {
  tcp_initialized_ = false;
  reading_ = false;
  if (closing_) {
    maybe_free();
  } else {
    try_next_address();
  }
}

void Connection::maybe_free() {
  if (closing_ && timer_closed_ && !tcp_initialized_ && !dns_pending_) delete this;
}

std::string Connection::where() const { return origin_.host + ":" + std::to_string(origin_.port); }

// ---- connecting ---------------------------------------------------------------------------

void Connection::connect() {
  arm_timer(TimerPurpose::Connect, connect_timeout_ms_);
  const std::string host = strip_brackets(origin_.host);
  // An address needs no lookup: getaddrinfo runs on libuv's thread pool, a round trip through
  // another thread (and a queue behind any slow lookup) before every new connection.
  sockaddr_storage literal{};
  if (uv_ip4_addr(host.c_str(), origin_.port, reinterpret_cast<sockaddr_in*>(&literal)) == 0 ||
      uv_ip6_addr(host.c_str(), origin_.port, reinterpret_cast<sockaddr_in6*>(&literal)) == 0) {
    addrs_.assign(1, literal);
    return connect_addresses();
  }
  if (const auto* cached = client_ ? client_->cached_addresses(key()) : nullptr) {
    addrs_ = *cached;
    return connect_addresses();
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  const std::string port = std::to_string(origin_.port);
  if (client_) ++client_->dns_lookups_;
  int r = uv_getaddrinfo(
      loop_, &gai_,
      [](uv_getaddrinfo_t* req, int status, struct addrinfo* res) {
        static_cast<Connection*>(req->data)->on_resolved(status, res);
      },
      host.c_str(), port.c_str(), &hints);
  if (r < 0) {
    fail_later(ErrorKind::Dns, "cannot resolve " + where() + ": " + uv_strerror(r));
    return;
  }
  dns_pending_ = true;
}

void Connection::on_resolved(int status, struct addrinfo* res) {
  dns_pending_ = false;
  if (closing_) {
    if (res) uv_freeaddrinfo(res);
    maybe_free();
    return;
  }
  if (status < 0) {
    if (res) uv_freeaddrinfo(res);
    fail(ErrorKind::Dns, "cannot resolve " + where() + ": " + uv_strerror(status));
    return;
  }
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    if (ai->ai_addrlen > sizeof(sockaddr_storage)) continue;
    sockaddr_storage ss{};
    std::memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
    addrs_.push_back(ss);
  }
  uv_freeaddrinfo(res);
  if (client_) client_->remember_addresses(key(), addrs_);
  connect_addresses();
}

// addrs_ is filled (an address, cached ones or a lookup's): connecting starts. Failures come
// back through callbacks only, never from inside this call.
void Connection::connect_addresses() {
  state_ = State::Connecting;
  try_next_address();
}

// Tries the resolved addresses in order; each failure closes the socket, whose close
// callback comes back here for the next address.
void Connection::try_next_address() {
  if (next_addr_ >= addrs_.size()) {
    std::string why = last_connect_error_.empty() ? "no usable address" : last_connect_error_;
    fail(ErrorKind::Connect, "cannot connect to " + where() + ": " + why);
    return;
  }
  const sockaddr_storage& addr = addrs_[next_addr_++];
  uv_tcp_init(loop_, &tcp_);
  tcp_.data = this;
  tcp_initialized_ = true;
  int r = uv_tcp_connect(&connect_req_, &tcp_, reinterpret_cast<const sockaddr*>(&addr),
                         [](uv_connect_t* req, int status) { static_cast<Connection*>(req->data)->on_connect(status); });
  if (r < 0) {
    last_connect_error_ = uv_strerror(r);
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), [](uv_handle_t* h) { static_cast<Connection*>(h->data)->on_tcp_closed(); });
  }
}

void Connection::on_connect(int status) {
  if (closing_ || status == UV_ECANCELED) return;
  if (status < 0) {
    last_connect_error_ = uv_strerror(status);
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), [](uv_handle_t* h) { static_cast<Connection*>(h->data)->on_tcp_closed(); });
    return;
  }
  // Requests are small writes followed by a wait; Nagle would hold them back.
  uv_tcp_nodelay(&tcp_, 1);
  if (!origin_.tls) {
    on_connected();
    return;
  }
  auto session = tls::ClientSession::create(*tls_ctx_, origin_.host);
  if (!session.ok()) {
    fail(ErrorKind::Tls, "TLS setup for " + where() + " failed: " + session.error().message);
    return;
  }
  tls_ = std::move(session.value());
  plain_buf_.reset(new char[kPlainBufSize]);
  state_ = State::Handshaking;
  update_read_state();
  advance_handshake();
}

// Returns false when the connection failed.
bool Connection::advance_handshake() {
  auto r = tls_->handshake();
  send_tls_output();
  if (!r.ok()) {
    fail(ErrorKind::Tls, "TLS handshake with " + where() + " failed: " + r.error().message);
    return false;
  }
  if (r.value()) on_connected();
  return !closing_;
}

void Connection::on_connected() {
  state_ = State::Open;
  arm_timer(TimerPurpose::Head, head_timeout_ms_);
  update_read_state();
  flush_writes();
}

// ---- exchanges ----------------------------------------------------------------------------

void Connection::attach(Exchange* exchange, ExchangeHandler* handler, bool head_request) {
  exchange_ = exchange;
  handler_ = handler;
  ++generation_;
  head_request_ = head_request;
  read_state_ = ReadState::Head;
  parser_.reset(head_request);
  paused_ = false;
  keep_alive_ = false;
  reusable_ = true;
  write_broken_ = false;
  above_high_ = false;
  answered_ = false;
  if (state_ == State::Idle) {
    // From the pool: the socket is up, the response clock starts now.
    state_ = State::Open;
    arm_timer(TimerPurpose::Head, head_timeout_ms_);
    update_read_state();
  }
}

void Connection::detach() {
  exchange_ = nullptr;
  handler_ = nullptr;
  ++generation_;
  if (closing_) return;
  bool clean = state_ == State::Open && read_state_ == ReadState::Done && keep_alive_ && reusable_ &&
               pending_.empty() && inflight_bytes_ == 0 && !(tls_ && tls_->has_output());
  if (!clean || !client_ || !client_->offer_idle(this)) {
    close();
    return;
  }
  state_ = State::Idle;
  paused_ = false;
  arm_timer(TimerPurpose::Pool, pool_idle_ms_);
  // Keep reading while idle: that is how a peer's close (or stray bytes) is noticed.
  update_read_state();
}

void Connection::pause_read() {
  paused_ = true;
  update_read_state();
}

void Connection::resume_read() {
  paused_ = false;
  update_read_state();
}

// ---- reading ------------------------------------------------------------------------------

// The one place that decides whether the socket is read.
void Connection::update_read_state() {
  if (closing_ || !tcp_initialized_) return;
  bool want = false;
  switch (state_) {
    case State::Handshaking:
    case State::Idle:
      want = true;
      break;
    case State::Open:
      want = !paused_;
      break;
    default:
      want = false;
  }
  if (want == reading_) return;
  auto* stream = reinterpret_cast<uv_stream_t*>(&tcp_);
  if (want) {
    int r = uv_read_start(
        stream,
        [](uv_handle_t* h, size_t, uv_buf_t* buf) {
          auto* self = static_cast<Connection*>(h->data);
          *buf = uv_buf_init(self->read_buf_.get(), kReadBufSize);
        },
        [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) { static_cast<Connection*>(s->data)->on_read(nread, buf); });
    reading_ = r == 0;
  } else {
    uv_read_stop(stream);
    reading_ = false;
  }
}

void Connection::on_read(ssize_t nread, const uv_buf_t* buf) {
  if (closing_ || nread == 0) return;
  if (nread < 0) {
    on_eof(static_cast<int>(nread));
    return;
  }
  if (tls_) {
    on_ciphertext(buf->base, static_cast<size_t>(nread));
  } else {
    on_bytes(buf->base, static_cast<size_t>(nread));
  }
}

void Connection::on_ciphertext(const char* data, size_t len) {
  tls_->feed(data, len);
  if (state_ == State::Handshaking) {
    if (!advance_handshake() || state_ != State::Open) return;
  }
  const uint64_t gen = generation_;
  for (;;) {
    size_t n = 0;
    auto r = tls_->read(plain_buf_.get(), kPlainBufSize, &n);
    if (!r.ok()) {
      send_tls_output();
      fail(ErrorKind::Tls, "TLS error from " + where() + ": " + r.error().message);
      return;
    }
    if (r.value() == tls::ReadStatus::WantMore) break;
    if (r.value() == tls::ReadStatus::Closed) {
      on_eof(UV_EOF);
      return;
    }
    on_bytes(plain_buf_.get(), n);
    // A handler may have ended the exchange; leave the rest for whoever comes next.
    if (closing_ || generation_ != gen) return;
  }
  send_tls_output();  // e.g. a key update answer
  flush_writes();     // a write may have waited for input
}

// Plaintext from the upstream, in the order it came.
void Connection::on_bytes(const char* data, size_t len) {
  if (state_ == State::Idle) {
    // Nobody asked: the connection is out of step, drop it.
    close();
    return;
  }
  switch (read_state_) {
    case ReadState::Done:
      reusable_ = false;
      return;
    case ReadState::Tunnel:
      arm_timer(TimerPurpose::Idle, idle_timeout_ms_);
      if (handler_) handler_->on_response_body(std::string_view(data, len));
      return;
    case ReadState::Head:
    case ReadState::Body:
      break;
  }
  answered_ = true;
  if (read_state_ == ReadState::Body) arm_timer(TimerPurpose::Idle, idle_timeout_ms_);
  const uint64_t gen = generation_;
  http::ParseResult r = parser_.feed(data, len);
  if (closing_ || generation_ != gen) return;
  switch (r.status) {
    case http::ParseStatus::NeedMore:
    case http::ParseStatus::Stopped:
      return;
    case http::ParseStatus::Error:
      fail(ErrorKind::Protocol, "bad response from " + where() + ": " + r.error);
      return;
    case http::ParseStatus::Complete:
      read_state_ = ReadState::Done;
      timer_purpose_ = TimerPurpose::None;
      deadline_.clear();
      // Bytes after the response were never asked for: the connection cannot be trusted again.
      if (r.consumed < len) reusable_ = false;
      if (handler_) handler_->on_response_end();
      return;
    case http::ParseStatus::Upgrade:
      read_state_ = ReadState::Tunnel;
      arm_timer(TimerPurpose::Idle, idle_timeout_ms_);
      if (r.consumed < len && handler_) handler_->on_response_body(std::string_view(data + r.consumed, len - r.consumed));
      return;
  }
}

bool Connection::on_head(http::ResponseHead& head) {
  read_state_ = ReadState::Body;
  keep_alive_ = head.keep_alive;
  arm_timer(TimerPurpose::Idle, idle_timeout_ms_);
  const uint64_t gen = generation_;
  if (handler_) handler_->on_response_head(head);
  return !closing_ && generation_ == gen;
}

bool Connection::on_body(std::string_view data) {
  const uint64_t gen = generation_;
  if (handler_) handler_->on_response_body(data);
  return !closing_ && generation_ == gen;
}

// The upstream closed (status UV_EOF) or reset the connection.
void Connection::on_eof(int status) {
  if (state_ == State::Idle) {
    close();
    return;
  }
  if (state_ == State::Handshaking) {
    fail(ErrorKind::Tls, "TLS handshake with " + where() + " failed: connection closed by peer");
    return;
  }
  switch (read_state_) {
    case ReadState::Tunnel:
      end_and_close();
      return;
    case ReadState::Done:
      // on_response_end was already delivered; the exchange just loses its connection.
      close();
      return;
    case ReadState::Head:
    case ReadState::Body: {
      http::ParseResult r = status == UV_EOF ? parser_.finish() : http::ParseResult{};
      if (r.status == http::ParseStatus::Complete) {
        read_state_ = ReadState::Done;
        end_and_close();
        return;
      }
      std::string why = status == UV_EOF ? std::string("connection closed") : std::string(uv_strerror(status));
      fail(ErrorKind::Closed, "upstream " + where() + " ended the exchange early: " + why);
      return;
    }
  }
}

// ---- writing ------------------------------------------------------------------------------

void Connection::write(std::string bytes) {
  if (closing_ || write_broken_) {
    wipe(bytes);
    return;
  }
  if (bytes.empty()) return;
  pending_bytes_ += bytes.size();
  pending_.push_back(std::move(bytes));
  ++in_write_;
  flush_writes();
  --in_write_;
  if (!above_high_ && static_cast<int64_t>(queued_bytes()) > high_watermark_) {
    above_high_ = true;
    if (handler_) handler_->on_write_blocked();
  }
}

std::string Connection::take_buffer() { return std::exchange(spare_, std::string()); }

// Keeps the storage of a buffer that was written and wiped, if it is the largest so far and
// not too large to hold on to (a request body may be megabytes).
void Connection::keep_buffer(std::string& written) {
  constexpr size_t kMaxKept = 8 * 1024;
  if (written.capacity() > kMaxKept || written.capacity() <= spare_.capacity()) return;
  written.clear();
  spare_ = std::move(written);
}

// Hands queued request bytes to the socket (through TLS when there is one).
void Connection::flush_writes() {
  if (state_ != State::Open || pending_.empty() || closing_) return;
  if (!tls_) {
    // Straight from the queue first: most requests leave in this one write, with no copy of
    // the queue into a write request.
    if (inflight_bytes_ == 0) {
      size_t taken = 0;
      if (!write_directly(pending_, &taken)) return;
      pending_bytes_ -= taken;
      if (pending_.empty()) {
        on_written();
        return;
      }
    }
    std::vector<std::string> bufs(std::make_move_iterator(pending_.begin()), std::make_move_iterator(pending_.end()));
    pending_.clear();
    pending_bytes_ = 0;
    queue_write(std::move(bufs));
    return;
  }
  while (!pending_.empty()) {
    std::string& front = pending_.front();
    auto r = tls_->write(std::string_view(front).substr(front_offset_));
    if (!r.ok()) {
      fail(ErrorKind::Tls, "TLS error towards " + where() + ": " + r.error().message);
      return;
    }
    if (r.value() == 0) break;  // OpenSSL wants input first; on_ciphertext retries
    front_offset_ += r.value();
    pending_bytes_ -= r.value();
    if (front_offset_ == front.size()) {
      wipe(front);
      keep_buffer(front);
      pending_.pop_front();
      front_offset_ = 0;
    }
  }
  send_tls_output();
}

void Connection::send_tls_output() {
  if (closing_ || !tls_ || !tcp_initialized_) return;
  std::string out = tls_->take_output();
  if (out.empty()) return;
  std::vector<std::string> bufs;
  bufs.push_back(std::move(out));
  send(std::move(bufs));
}

// Writes at once what the socket takes and queues the rest. The direct write matters: a
// uv_write that completes immediately still has libuv re-arm the socket's watcher when its
// callback runs, one epoll_ctl per proxied request.
void Connection::send(std::vector<std::string> bufs) {
  if (inflight_bytes_ == 0 && !write_directly(bufs, nullptr)) return;
  if (bufs.empty()) {
    on_written();
    return;
  }
  queue_write(std::move(bufs));
}

// Hands bufs to one uv_write; its callback wipes and frees them.
void Connection::queue_write(std::vector<std::string> bufs) {
  auto req = std::make_unique<WriteReq>();
  req->conn = this;
  std::vector<uv_buf_t> uvbufs;
  for (auto& b : bufs) {
    req->bytes += b.size();
    uvbufs.push_back(uv_buf_init(b.data(), static_cast<unsigned>(b.size())));
  }
  req->bufs = std::move(bufs);  // moving a vector keeps each string's storage in place
  req->req.data = req.get();
  int r = uv_write(&req->req, reinterpret_cast<uv_stream_t*>(&tcp_), uvbufs.data(),
                   static_cast<unsigned>(uvbufs.size()), [](uv_write_t* w, int status) {
                     std::unique_ptr<WriteReq> req(static_cast<WriteReq*>(w->data));
                     for (auto& b : req->bufs) wipe(b);
                     req->conn->on_write_done(status, req->bytes);
                   });
  if (r < 0) {
    for (auto& b : req->bufs) wipe(b);
    fail(ErrorKind::Closed, std::string("cannot write to upstream ") + where() + ": " + uv_strerror(r));
    return;
  }
  inflight_bytes_ += req->bytes;
  req.release();  // the write callback adopts it
}

// One uv_try_write of the front of bufs (a vector or the pending deque); what it took
// leaves bufs, wiped: it may hold the key. *taken_out (optional) gets the byte count.
// False after a write error, which has been reported.
template <class Bufs>
bool Connection::write_directly(Bufs& bufs, size_t* taken_out) {
  constexpr size_t kMaxBufs = 16;  // the rest waits for the queued write
  std::array<uv_buf_t, kMaxBufs> uvbufs;
  size_t count = std::min(bufs.size(), kMaxBufs);
  for (size_t i = 0; i < count; ++i) uvbufs[i] = uv_buf_init(bufs[i].data(), static_cast<unsigned>(bufs[i].size()));
  int n = try_send(&tcp_, uvbufs.data(), static_cast<unsigned>(count));
  if (n < 0 && n != UV_EAGAIN) {
    for (auto& b : bufs) wipe(b);
    fail(ErrorKind::Closed, std::string("cannot write to upstream ") + where() + ": " + uv_strerror(n));
    return false;
  }
  size_t taken = n > 0 ? static_cast<size_t>(n) : 0;
  if (taken_out) *taken_out = taken;
  size_t whole = 0;
  while (whole < bufs.size() && taken >= bufs[whole].size()) {
    taken -= bufs[whole].size();
    wipe(bufs[whole]);
    keep_buffer(bufs[whole]);
    ++whole;
  }
  bufs.erase(bufs.begin(), bufs.begin() + static_cast<std::ptrdiff_t>(whole));
  if (taken > 0) erase_front_wiped(bufs.front(), taken);
  return true;
}

void Connection::on_write_done(int status, size_t bytes) {
  inflight_bytes_ -= bytes;
  if (closing_ || status == UV_ECANCELED) return;
  if (status < 0) {
    if (state_ == State::Idle) {
      close();
    } else if (read_state_ != ReadState::Head || parser_.started()) {
      // The upstream is answering (often an early error before reading the whole body):
      // stop writing but let the response finish.
      write_broken_ = true;
      reusable_ = false;
      for (auto& s : pending_) wipe(s);
      pending_.clear();
      pending_bytes_ = 0;
    } else {
      fail(ErrorKind::Closed, std::string("writing to upstream ") + where() + " failed: " + uv_strerror(status));
    }
    return;
  }
  on_written();
}

void Connection::on_written() {
  // Progress either way counts: the head clock runs from the last request write.
  if (read_state_ == ReadState::Head && timer_purpose_ == TimerPurpose::Head) {
    arm_timer(TimerPurpose::Head, head_timeout_ms_);
  } else if (read_state_ == ReadState::Body || read_state_ == ReadState::Tunnel) {
    arm_timer(TimerPurpose::Idle, idle_timeout_ms_);
  }
  if (above_high_ && static_cast<int64_t>(queued_bytes()) <= high_watermark_ / 2) {
    above_high_ = false;
    if (handler_) handler_->on_writable();
  }
}

// ---- timers and endings -------------------------------------------------------------------

// A proxied request moves its deadline four or five times (head, writes, body, pool):
// MovingDeadline keeps that off the timer heap.
void Connection::arm_timer(TimerPurpose purpose, int64_t ms) {
  if (closing_) return;
  timer_purpose_ = purpose;
  deadline_.set_in(static_cast<uint64_t>(ms < 0 ? 0 : ms));
}

void Connection::on_timer(uv_timer_t* t) {
  static_cast<Connection*>(t->data)->on_deadline();
}

void Connection::on_deadline() {
  if (!deadline_.reached()) return;
  TimerPurpose p = timer_purpose_;
  timer_purpose_ = TimerPurpose::None;
  switch (p) {
    case TimerPurpose::None:
      return;
    case TimerPurpose::Connect:
      fail(ErrorKind::ConnectTimeout,
           "connecting to " + where() + " timed out after " + std::to_string(connect_timeout_ms_) + " ms");
      return;
    case TimerPurpose::Head:
      fail(ErrorKind::HeadTimeout, "no response head from " + where() + " within " +
                                       std::to_string(head_timeout_ms_) + " ms");
      return;
    case TimerPurpose::Idle:
      fail(ErrorKind::IdleTimeout,
           "upstream " + where() + " idle for " + std::to_string(idle_timeout_ms_) + " ms");
      return;
    case TimerPurpose::Pool:
      close();
      return;
    case TimerPurpose::DeferredError:
      fail(deferred_kind_, deferred_message_);
      return;
  }
}

// Closes first, then tells the handler, so whatever the handler does next (destroy the
// exchange, write) finds a detached exchange and is a no-op.
void Connection::fail(ErrorKind kind, std::string message) {
  // Addresses that would not connect are looked up afresh next time: the name may have moved.
  if ((kind == ErrorKind::Connect || kind == ErrorKind::ConnectTimeout) && client_)
    client_->forget_addresses(key());
  if (in_write_ > 0) {
    // The socket refused bytes inside write(), which the exchange's owner calls in the middle
    // of its own work (sending a head, then the body held for replay). Told now, it would fail
    // over or drop the exchange under that caller's feet, which would then send the body a
    // second time or write through an exchange that is gone. It is told from the loop
    // instead; until then nothing more is sent, and a response already on its way may still
    // be read (as when an upstream answers early and stops reading).
    for (auto& s : pending_) wipe(s);
    pending_.clear();
    pending_bytes_ = 0;
    front_offset_ = 0;
    write_broken_ = true;
    reusable_ = false;
    fail_later(kind, std::move(message));
    return;
  }
  // Decided here, where the handler is told: a deferred write error may meet a response
  // that was already on its way.
  if (kind == ErrorKind::Closed && exchange_ && exchange_->reused() && !answered_) {
    kind = ErrorKind::Stale;
    message += " (a pooled connection, before any response byte)";
  }
  ExchangeHandler* h = handler_;
  close();
  log::debug("upstream exchange failed", {{"kind", error_kind_name(kind)}, {"error", message}});
  if (h) h->on_error(kind, message);
}

// An error found inside start(): delivered from the loop so no callback runs inside start().
void Connection::fail_later(ErrorKind kind, std::string message) {
  deferred_kind_ = kind;
  deferred_message_ = std::move(message);
  arm_timer(TimerPurpose::DeferredError, 0);
}

void Connection::end_and_close() {
  ExchangeHandler* h = handler_;
  close();
  if (h) h->on_response_end();
}

}  // namespace keypool::upstream
