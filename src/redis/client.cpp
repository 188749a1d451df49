#include "redis/client.h"

#include <openssl/evp.h>

#include <algorithm>
#include <deque>
#include <utility>

#include "base/secret.h"
#include "tls/tls.h"

namespace keypool::redis {
namespace {

constexpr size_t kReadBufSize = 64 * 1024;

void wipe(std::string& s) {
  if (!s.empty()) explicit_bzero(s.data(), s.size());
  s.clear();
}

std::string sha1_hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha1(), nullptr);
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 0xf];
  }
  return out;
}

Error unavailable(std::string message) { return make_error(ErrorCode::Unavailable, std::move(message)); }

}  // namespace

const char* state_name(ConnState s) {
  switch (s) {
    case ConnState::Resolving: return "resolving";
    case ConnState::Connecting: return "connecting";
    case ConnState::Handshaking: return "handshaking";
    case ConnState::Authenticating: return "authenticating";
    case ConnState::Ready: return "ready";
    case ConnState::Backoff: return "backoff";
    case ConnState::Closed: return "closed";
  }
  return "closed";
}

Script::Script(std::string src) : source(std::move(src)), sha1(sha1_hex(source)) {}

// The connection and everything with a libuv handle. It outlives the Client: ~Client calls
// shutdown(), and the Core deletes itself when the last handle's close callback has run,
// so no libuv callback ever sees freed memory.
class Client::Core {
 public:
  Core(uv_loop_t* loop, Url url, ClientOptions opts, std::unique_ptr<tls::ClientContext> tls_ctx)
      : loop_(loop), url_(std::move(url)), opts_(std::move(opts)), tls_ctx_(std::move(tls_ctx)),
        parser_(opts_.limits), read_buf_(new char[kReadBufSize]) {
    for (uv_timer_t* t : {&deadline_timer_, &conn_timer_, &defer_timer_}) {
      uv_timer_init(loop_, t);
      t->data = this;
    }
    handles_ = 3;
    gai_.data = this;
    connect_req_.data = this;
    backoff_ms_ = opts_.backoff_min_ms;
  }

  void start();
  void shutdown();
  void defer(ReplyCallback cb, Error error);
  void send(std::vector<std::string> args, uint64_t deadline, ReplyCallback cb);
  void eval(const Script& script, std::vector<std::string> argv, ReplyCallback cb);
  uint64_t deadline_from_now() const { return uv_now(loop_) + static_cast<uint64_t>(opts_.timeout_ms); }

  ConnState state_ = ConnState::Resolving;
  uint64_t connects_ = 0;
  std::string where() const { return url_.describe(); }

 private:
  // A command whose reply is awaited, in the order sent. An empty cb: its caller was
  // already answered (timeout), the reply is dropped when it comes.
  struct Pending {
    ReplyCallback cb;
    uint64_t deadline = 0;  // 0: none (AUTH/SELECT, covered by the connect timer)
    uint64_t sent_at = 0;
  };
  // A command not yet written (the connection is still being made).
  struct Queued {
    std::string bytes;
    Pending pending;
  };
  struct WriteReq {
    uv_write_t req;
    std::string bytes;
    Core* core;
    uint64_t generation;
  };
  enum class TimerPurpose { None, Connect, Backoff };

  // Connecting.
  void resolve();
  void on_resolved(int status, addrinfo* res);
  void try_next_address();
  void on_connect(int status);
  void on_transport_ready();
  void authenticate();
  void on_ready();

  // Reading and dispatching.
  void on_read(ssize_t nread, const uv_buf_t* buf);
  void on_ciphertext(const char* data, size_t len);
  bool advance_handshake();
  void on_plaintext(const char* data, size_t len);
  void dispatch(Reply reply);

  // Writing.
  void write_out(std::string bytes);
  void flush_tls();
  void send_raw(std::string bytes);

  // Deadlines and failures.
  void arm_deadline(uint64_t due);
  void on_deadline();
  void arm_conn_timer(TimerPurpose purpose, int64_t ms);
  void on_conn_timer();
  void run_deferred();
  void drop(const std::string& reason);
  void close_tcp();
  void on_tcp_closed();
  void handle_closed();

  uv_loop_t* loop_;
  Url url_;
  ClientOptions opts_;
  std::unique_ptr<tls::ClientContext> tls_ctx_;  // rediss:// only
  std::unique_ptr<tls::ClientSession> tls_;
  ReplyParser parser_;
  std::unique_ptr<char[]> read_buf_;

  // Handles: three timers from construction to shutdown; tcp_ per connect attempt.
  uv_timer_t deadline_timer_;  // the earliest command deadline
  uv_timer_t conn_timer_;      // connect timeout or backoff, as conn_purpose_ says
  uv_timer_t defer_timer_;     // runs deferred_ on the next loop turn
  uv_tcp_t tcp_;
  uv_getaddrinfo_t gai_;
  uv_connect_t connect_req_;
  int handles_ = 0;            // open handles and requests; the Core is freed at 0 after shutdown
  bool tcp_open_ = false;      // between uv_tcp_init and its close callback
  bool tcp_closing_ = false;
  bool gai_pending_ = false;   // between uv_getaddrinfo and its callback
  bool start_after_close_ = false;
  bool closing_ = false;       // shutdown() ran
  uint64_t generation_ = 0;    // bumped per connection, so stale write callbacks are ignored
  TimerPurpose conn_purpose_ = TimerPurpose::None;
  uint64_t armed_deadline_ = 0;
  int64_t backoff_ms_;

  std::vector<sockaddr_storage> addrs_;
  size_t next_addr_ = 0;
  std::string last_error_;     // why the connection last failed: the message while in Backoff
  std::string connect_error_;  // why the last connect attempt of this round failed

  std::deque<Pending> sent_;
  std::deque<Queued> queued_;
  size_t auth_replies_ = 0;    // AUTH/SELECT replies still awaited while Authenticating
  std::string tls_out_;        // plaintext TLS could not take yet
  std::vector<std::pair<ReplyCallback, Error>> deferred_;
};

// ---- connecting ---------------------------------------------------------------------------

void Client::Core::start() {
  if (closing_) return;
  if (tcp_open_ || gai_pending_) {  // the last attempt is still winding down; start after it
    start_after_close_ = true;
    return;
  }
  arm_conn_timer(TimerPurpose::Connect, opts_.connect_timeout_ms);
  connect_error_.clear();
  sockaddr_storage literal{};
  const char* host = url_.host.c_str();
  if (uv_ip4_addr(host, url_.port, reinterpret_cast<sockaddr_in*>(&literal)) == 0 ||
      uv_ip6_addr(host, url_.port, reinterpret_cast<sockaddr_in6*>(&literal)) == 0) {
    addrs_.assign(1, literal);
    next_addr_ = 0;
    try_next_address();
    return;
  }
  resolve();
}

// getaddrinfo runs on libuv's thread pool, so a slow resolver never holds the loop.
void Client::Core::resolve() {
  state_ = ConnState::Resolving;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  const std::string port = std::to_string(url_.port);
  int r = uv_getaddrinfo(loop_, &gai_, [](uv_getaddrinfo_t* req, int status, addrinfo* res) {
    static_cast<Core*>(req->data)->on_resolved(status, res);
  }, url_.host.c_str(), port.c_str(), &hints);
  if (r < 0) {
    drop(std::string("cannot resolve ") + url_.host + ": " + uv_strerror(r));
    return;
  }
  gai_pending_ = true;
  ++handles_;
}

void Client::Core::on_resolved(int status, addrinfo* res) {
  addrs_.clear();
  for (addrinfo* a = res; a && status == 0; a = a->ai_next) {
    sockaddr_storage ss{};
    memcpy(&ss, a->ai_addr, a->ai_addrlen);
    addrs_.push_back(ss);
  }
  if (res) uv_freeaddrinfo(res);
  gai_pending_ = false;
  if (closing_) return handle_closed();  // may free this
  handle_closed();                       // the request is done; cannot free an open Core
  if (state_ != ConnState::Resolving) {  // the connect timer ran out meanwhile
    if (start_after_close_) {
      start_after_close_ = false;
      start();
    }
    return;
  }
  if (status < 0 || addrs_.empty()) {
    drop(std::string("cannot resolve ") + url_.host + ": " + (status < 0 ? uv_strerror(status) : "no address"));
    return;
  }
  next_addr_ = 0;
  try_next_address();
}

// One address after another until one connects; the connect timer bounds the whole walk.
void Client::Core::try_next_address() {
  if (next_addr_ >= addrs_.size()) {
    drop("cannot connect to " + where() + ": " + (connect_error_.empty() ? "no address" : connect_error_));
    return;
  }
  state_ = ConnState::Connecting;
  uv_tcp_init(loop_, &tcp_);
  tcp_.data = this;
  tcp_open_ = true;
  tcp_closing_ = false;
  ++handles_;
  ++generation_;
  const auto* addr = reinterpret_cast<const sockaddr*>(&addrs_[next_addr_++]);
  int r = uv_tcp_connect(&connect_req_, &tcp_, addr, [](uv_connect_t* req, int status) {
    static_cast<Core*>(req->data)->on_connect(status);
  });
  if (r < 0) {
    connect_error_ = uv_strerror(r);
    close_tcp();  // its close callback tries the next address
  }
}

void Client::Core::on_connect(int status) {
  if (closing_ || status == UV_ECANCELED || tcp_closing_) return;
  if (status < 0) {
    connect_error_ = uv_strerror(status);
    close_tcp();
    return;
  }
  // Commands are small writes followed by a wait; Nagle would hold them back.
  uv_tcp_nodelay(&tcp_, 1);
  uv_tcp_keepalive(&tcp_, 1, 30);
  uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_),
                [](uv_handle_t* h, size_t, uv_buf_t* buf) {
                  auto* self = static_cast<Core*>(h->data);
                  *buf = uv_buf_init(self->read_buf_.get(), kReadBufSize);
                },
                [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
                  static_cast<Core*>(s->data)->on_read(nread, buf);
                });
  if (!url_.tls) {
    on_transport_ready();
    return;
  }
  auto session = tls::ClientSession::create(*tls_ctx_, url_.host);
  if (!session.ok()) {
    drop("TLS setup for " + where() + " failed: " + session.error().message);
    return;
  }
  tls_ = std::move(session.value());
  state_ = ConnState::Handshaking;
  advance_handshake();
}

// False when the connection failed (and was dropped).
bool Client::Core::advance_handshake() {
  auto r = tls_->handshake();
  send_raw(tls_->take_output());
  if (!r.ok()) {
    drop("TLS handshake with " + where() + " failed: " + r.error().message);
    return false;
  }
  if (r.value()) on_transport_ready();
  return state_ != ConnState::Backoff && !closing_;
}

void Client::Core::on_transport_ready() {
  state_ = ConnState::Authenticating;
  authenticate();
  if (auth_replies_ == 0) on_ready();
}

// AUTH and SELECT go first on every new connection; user commands wait until both said OK.
// The reply to AUTH names no password ("WRONGPASS invalid username-password pair"), so it
// may go into the error message.
void Client::Core::authenticate() {
  auto expect_ok = [this](const char* what) {
    return [this, what](Result<Reply> r) {
      if (!r.ok()) return;  // the connection is already being dropped
      if (r->type != ReplyType::Status) {
        drop(std::string(what) + " failed on " + where() + ": " + (r->is_error() ? r->str : "unexpected reply"));
        return;
      }
      if (--auth_replies_ == 0) on_ready();
    };
  };
  if (!url_.password.empty()) {
    std::vector<std::string> args{"AUTH"};
    if (!url_.user.empty()) args.push_back(url_.user);
    args.emplace_back(url_.password.view());
    std::string bytes = encode_command(args);
    wipe(args.back());
    ++auth_replies_;
    sent_.push_back(Pending{expect_ok("AUTH"), 0, uv_now(loop_)});
    write_out(std::move(bytes));
  }
  if (url_.db != 0 && state_ == ConnState::Authenticating) {
    ++auth_replies_;
    sent_.push_back(Pending{expect_ok("SELECT"), 0, uv_now(loop_)});
    write_out(encode_command({"SELECT", std::to_string(url_.db)}));
  }
}

void Client::Core::on_ready() {
  if (closing_ || state_ != ConnState::Authenticating) return;
  state_ = ConnState::Ready;
  ++connects_;
  backoff_ms_ = opts_.backoff_min_ms;
  arm_conn_timer(TimerPurpose::None, 0);
  const uint64_t now = uv_now(loop_);
  while (!queued_.empty() && state_ == ConnState::Ready) {
    Queued q = std::move(queued_.front());
    queued_.pop_front();
    if (!q.pending.cb) continue;  // timed out before it could be sent: never send it
    q.pending.sent_at = now;
    sent_.push_back(std::move(q.pending));
    write_out(std::move(q.bytes));
  }
}

// ---- reading ------------------------------------------------------------------------------

void Client::Core::on_read(ssize_t nread, const uv_buf_t* buf) {
  if (closing_ || nread == 0) return;
  if (nread < 0) {
    drop("connection to " + where() + " lost: " + uv_strerror(static_cast<int>(nread)));
    return;
  }
  if (tls_) {
    on_ciphertext(buf->base, static_cast<size_t>(nread));
  } else {
    on_plaintext(buf->base, static_cast<size_t>(nread));
  }
}

void Client::Core::on_ciphertext(const char* data, size_t len) {
  tls_->feed(data, len);
  if (state_ == ConnState::Handshaking && (!advance_handshake() || state_ == ConnState::Handshaking)) return;
  const uint64_t gen = generation_;
  char plain[16 * 1024];
  for (;;) {
    size_t n = 0;
    auto r = tls_->read(plain, sizeof plain, &n);
    if (!r.ok()) {
      drop("TLS error from " + where() + ": " + r.error().message);
      return;
    }
    if (r.value() == tls::ReadStatus::WantMore) break;
    if (r.value() == tls::ReadStatus::Closed) {
      drop("connection to " + where() + " closed by the server");
      return;
    }
    on_plaintext(plain, n);
    if (closing_ || generation_ != gen || !tls_) return;
  }
  flush_tls();  // a write may have waited for input
}

void Client::Core::on_plaintext(const char* data, size_t len) {
  parser_.feed(data, len);
  const uint64_t gen = generation_;
  for (;;) {
    Reply reply;
    auto st = parser_.next(&reply);
    if (st == ReplyParser::Status::NeedMore) return;
    if (st == ReplyParser::Status::Failed) {
      drop("protocol error from " + where() + ": " + parser_.error());
      return;
    }
    dispatch(std::move(reply));
    // A callback may have shut the client down or dropped the connection.
    if (closing_ || generation_ != gen) return;
  }
}

void Client::Core::dispatch(Reply reply) {
  if (sent_.empty()) {
    drop("reply from " + where() + " with no command waiting for it");
    return;
  }
  Pending p = std::move(sent_.front());
  sent_.pop_front();
  if (p.cb) p.cb(std::move(reply));
}

// ---- writing ------------------------------------------------------------------------------

void Client::Core::write_out(std::string bytes) {
  if (!tls_) {
    send_raw(std::move(bytes));
    return;
  }
  tls_out_ += bytes;
  wipe(bytes);
  flush_tls();
}

void Client::Core::flush_tls() {
  while (tls_ && !tls_out_.empty()) {
    auto r = tls_->write(tls_out_);
    if (!r.ok()) {
      drop("TLS error towards " + where() + ": " + r.error().message);
      return;
    }
    if (r.value() == 0) break;  // OpenSSL wants input first; on_ciphertext retries
    erase_front_wiped(tls_out_, r.value());
  }
  if (tls_) send_raw(tls_->take_output());
}

// Bytes onto the socket. The write request owns them until its callback, which wipes them:
// they may hold the AUTH password.
void Client::Core::send_raw(std::string bytes) {
  if (bytes.empty() || !tcp_open_ || tcp_closing_) return;
  auto w = std::make_unique<WriteReq>();
  w->bytes = std::move(bytes);
  w->core = this;
  w->generation = generation_;
  w->req.data = w.get();
  uv_buf_t buf = uv_buf_init(w->bytes.data(), static_cast<unsigned>(w->bytes.size()));
  int r = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&tcp_), &buf, 1, [](uv_write_t* req, int status) {
    std::unique_ptr<WriteReq> w(static_cast<WriteReq*>(req->data));
    wipe(w->bytes);
    Core* core = w->core;
    if (status < 0 && status != UV_ECANCELED && !core->closing_ && w->generation == core->generation_)
      core->drop("cannot write to " + core->where() + ": " + uv_strerror(status));
  });
  if (r < 0) {
    wipe(w->bytes);
    drop("cannot write to " + where() + ": " + uv_strerror(r));
    return;
  }
  w.release();  // the write callback adopts it
}

// ---- commands -----------------------------------------------------------------------------

void Client::Core::send(std::vector<std::string> args, uint64_t deadline, ReplyCallback cb) {
  if (closing_) return defer(std::move(cb), unavailable("redis client closed"));
  if (state_ == ConnState::Backoff)
    return defer(std::move(cb), unavailable("redis unavailable: " + last_error_));
  if (sent_.size() + queued_.size() >= opts_.max_pending)
    return defer(std::move(cb), unavailable("too many redis commands in flight"));
  if (deadline <= uv_now(loop_)) return defer(std::move(cb), make_error(ErrorCode::Timeout, "redis command timed out"));
  arm_deadline(deadline);
  Pending p{std::move(cb), deadline, uv_now(loop_)};
  if (state_ != ConnState::Ready) {
    queued_.push_back(Queued{encode_command(args), std::move(p)});
    return;
  }
  sent_.push_back(std::move(p));
  write_out(encode_command(args));
}

// NOSCRIPT means the server lost its script cache (a restart, SCRIPT FLUSH, a failover):
// load the script and run it again, pipelined, under the first attempt's deadline.
void Client::Core::eval(const Script& script, std::vector<std::string> argv, ReplyCallback cb) {
  const uint64_t deadline = deadline_from_now();
  auto retry = [this, source = script.source, argv, deadline, cb = std::move(cb)](Result<Reply> r) mutable {
    if (!r.ok() || !r->error_is("NOSCRIPT")) return cb(std::move(r));
    send({"SCRIPT", "LOAD", std::move(source)}, deadline, [](Result<Reply>) {});
    send(std::move(argv), deadline, std::move(cb));
  };
  send(argv, deadline, std::move(retry));
}

// ---- deadlines and failures ---------------------------------------------------------------

void Client::Core::arm_deadline(uint64_t due) {
  if (uv_is_active(reinterpret_cast<uv_handle_t*>(&deadline_timer_)) && armed_deadline_ <= due) return;
  armed_deadline_ = due;
  const uint64_t now = uv_now(loop_);
  uv_timer_start(&deadline_timer_, [](uv_timer_t* t) { static_cast<Core*>(t->data)->on_deadline(); },
                 due > now ? due - now : 0, 0);
}

// Answers every command whose deadline has passed, keeping its place in the FIFO so the
// late reply still lines up; then re-arms for the next deadline.
void Client::Core::on_deadline() {
  const uint64_t now = uv_now(loop_);
  uint64_t next = 0;
  std::vector<ReplyCallback> due;
  auto scan = [&](Pending& p) {
    if (!p.cb || p.deadline == 0) return;
    if (p.deadline <= now) {
      due.push_back(std::move(p.cb));
      p.cb = nullptr;
    } else if (next == 0 || p.deadline < next) {
      next = p.deadline;
    }
  };
  for (auto& p : sent_) scan(p);
  for (auto& q : queued_) scan(q.pending);
  if (next != 0) arm_deadline(next);
  const bool stalled = state_ == ConnState::Ready && !sent_.empty() &&
                       now - sent_.front().sent_at >= static_cast<uint64_t>(opts_.stall_ms);
  // A callback may destroy the Client; the Core lives on until its handles close.
  for (auto& cb : due) {
    cb(make_error(ErrorCode::Timeout, "redis command timed out after " + std::to_string(opts_.timeout_ms) + " ms"));
  }
  if (stalled && !closing_ && state_ == ConnState::Ready)
    drop("no reply from " + where() + " for " + std::to_string(opts_.stall_ms) + " ms");
}

void Client::Core::arm_conn_timer(TimerPurpose purpose, int64_t ms) {
  conn_purpose_ = purpose;
  if (purpose == TimerPurpose::None) {
    uv_timer_stop(&conn_timer_);
    return;
  }
  uv_timer_start(&conn_timer_, [](uv_timer_t* t) { static_cast<Core*>(t->data)->on_conn_timer(); },
                 static_cast<uint64_t>(std::max<int64_t>(ms, 0)), 0);
}

void Client::Core::on_conn_timer() {
  TimerPurpose p = conn_purpose_;
  conn_purpose_ = TimerPurpose::None;
  if (closing_) return;
  if (p == TimerPurpose::Connect)
    drop("connecting to " + where() + " timed out after " + std::to_string(opts_.connect_timeout_ms) + " ms");
  else if (p == TimerPurpose::Backoff)
    start();
}

// Failures found inside a call are answered from the loop, so a callback never runs inside
// the call that issued its command.
void Client::Core::defer(ReplyCallback cb, Error error) {
  if (!cb) return;
  deferred_.emplace_back(std::move(cb), std::move(error));
  if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&defer_timer_)) && !uv_is_closing(reinterpret_cast<uv_handle_t*>(&defer_timer_)))
    uv_timer_start(&defer_timer_, [](uv_timer_t* t) { static_cast<Core*>(t->data)->run_deferred(); }, 0, 0);
}

void Client::Core::run_deferred() {
  auto batch = std::move(deferred_);
  deferred_.clear();
  for (auto& [cb, err] : batch) cb(std::move(err));
}

// The connection is gone or unusable: every waiting command fails now (a sent one may or
// may not have run on the server), the socket closes, and a new attempt follows after the
// backoff.
void Client::Core::drop(const std::string& reason) {
  if (closing_) return;
  last_error_ = reason;
  state_ = ConnState::Backoff;
  ++generation_;
  close_tcp();
  tls_.reset();
  wipe(tls_out_);
  parser_ = ReplyParser(opts_.limits);
  auth_replies_ = 0;
  std::vector<ReplyCallback> failed;
  for (auto& p : sent_)
    if (p.cb) failed.push_back(std::move(p.cb));
  for (auto& q : queued_) {
    wipe(q.bytes);
    if (q.pending.cb) failed.push_back(std::move(q.pending.cb));
  }
  sent_.clear();
  queued_.clear();
  arm_conn_timer(TimerPurpose::Backoff, backoff_ms_);
  backoff_ms_ = std::min(backoff_ms_ * 2, opts_.backoff_max_ms);
  for (auto& cb : failed) defer(std::move(cb), unavailable(reason));
}

void Client::Core::close_tcp() {
  if (!tcp_open_ || tcp_closing_) return;
  tcp_closing_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), [](uv_handle_t* h) { static_cast<Core*>(h->data)->on_tcp_closed(); });
}

void Client::Core::on_tcp_closed() {
  tcp_open_ = false;
  tcp_closing_ = false;
  if (closing_) return handle_closed();  // may free this
  handle_closed();                       // cannot free an open Core
  if (state_ == ConnState::Connecting) {
    try_next_address();  // that attempt failed; the connect timer still bounds the walk
  } else if (start_after_close_) {
    start_after_close_ = false;
    start();
  }
}

void Client::Core::handle_closed() {
  if (--handles_ == 0 && closing_) delete this;
}

void Client::Core::shutdown() {
  closing_ = true;
  state_ = ConnState::Closed;
  std::vector<ReplyCallback> failed;
  for (auto& p : sent_)
    if (p.cb) failed.push_back(std::move(p.cb));
  for (auto& q : queued_) {
    wipe(q.bytes);
    if (q.pending.cb) failed.push_back(std::move(q.pending.cb));
  }
  for (auto& d : deferred_) failed.push_back(std::move(d.first));
  sent_.clear();
  queued_.clear();
  deferred_.clear();
  tls_.reset();
  wipe(tls_out_);
  if (gai_pending_) uv_cancel(reinterpret_cast<uv_req_t*>(&gai_));  // a lookup in flight
  close_tcp();
  // The Core may be freed by the last close callback, which runs on a later loop turn, so
  // answering the callbacks below is safe even though one of them may close more things.
  ++handles_;  // held while the callbacks run
  for (uv_timer_t* t : {&deadline_timer_, &conn_timer_, &defer_timer_})
    uv_close(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) { static_cast<Core*>(h->data)->handle_closed(); });
  for (auto& cb : failed)
    if (cb) cb(unavailable("redis client closed"));
  handle_closed();
}

// ---- Client -------------------------------------------------------------------------------

Result<std::unique_ptr<Client>> Client::create(uv_loop_t* loop, Url url, ClientOptions opts) {
  std::unique_ptr<tls::ClientContext> ctx;
  if (url.tls) {
    auto c = tls::ClientContext::create(opts.extra_ca_file);
    if (!c.ok()) return make_error(ErrorCode::Invalid, "redis TLS setup failed: " + c.error().message);
    ctx = std::move(c.value());
  }
  auto* core = new Core(loop, std::move(url), std::move(opts), std::move(ctx));  // frees itself
  core->start();
  return std::unique_ptr<Client>(new Client(core));
}

Client::~Client() { core_->shutdown(); }

void Client::command(std::vector<std::string> args, ReplyCallback cb) {
  core_->send(std::move(args), core_->deadline_from_now(), std::move(cb));
}

void Client::eval(const Script& script, const std::vector<std::string>& keys, const std::vector<std::string>& args,
                  ReplyCallback cb) {
  std::vector<std::string> argv;
  argv.reserve(3 + keys.size() + args.size());
  argv.push_back("EVALSHA");
  argv.push_back(script.sha1);
  argv.push_back(std::to_string(keys.size()));
  argv.insert(argv.end(), keys.begin(), keys.end());
  argv.insert(argv.end(), args.begin(), args.end());
  core_->eval(script, std::move(argv), std::move(cb));
}

void Client::answer_later(Error error, ReplyCallback cb) { core_->defer(std::move(cb), std::move(error)); }

ConnState Client::state() const { return core_->state_; }
uint64_t Client::connects() const { return core_->connects_; }
std::string Client::where() const { return core_->where(); }

}  // namespace keypool::redis
