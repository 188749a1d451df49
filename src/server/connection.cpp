#include "server/connection.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cassert>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <utility>

#include "base/secret.h"
#include "base/sized_writer.h"
#include "base/strings.h"
#include "base/try_send.h"
#include "server/status.h"
#include "server/worker.h"
#include "telemetry/log.h"

namespace keypool::server {
namespace {

// Reasons not to read, as bits, so that "the handler's upstream is slow" and "a pipelined
// request waits for its turn" do not cancel each other (nghttpx does the same).
constexpr unsigned kPauseHandler = 1;   // backpressure asked by the handler
constexpr unsigned kPausePipeline = 2;  // a complete request waits for its response
constexpr unsigned kPauseUpgrade = 4;   // an upgrade request waits for the upstream's 101
constexpr size_t kMaxPipelinedBytes = 64 * 1024;  // pipelined input held before reading stops
// After our final answer: how long a client gets to read it (its unread input discarded)
// before the connection closes.
constexpr uint64_t kLingerMs = 2000;
// The output buffer is reused from response to response; a small body gets room in it when
// its head is framed. An idle connection gives back more than kKeptOutCapacity.
constexpr uint64_t kReserveBodyUpTo = 16 * 1024;
constexpr size_t kKeptOutCapacity = 32 * 1024;

// "Content-Length: <length>\r\n" in buf (room for 48 bytes), as a view of it.
std::string_view content_length_line(char* buf, uint64_t length) {
  constexpr std::string_view kName = "Content-Length: ";
  std::memcpy(buf, kName.data(), kName.size());
  char* end = std::to_chars(buf + kName.size(), buf + 46, length).ptr;
  *end++ = '\r';
  *end++ = '\n';
  return std::string_view(buf, static_cast<size_t>(end - buf));
}

struct WriteReq {
  uv_write_t req;
  std::string data;
  Connection* conn;
};

std::string peer_name(uv_tcp_t* tcp) {
  sockaddr_storage ss{};
  int len = sizeof ss;
  if (uv_tcp_getpeername(tcp, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  char ip[INET6_ADDRSTRLEN] = "?";
  if (ss.ss_family == AF_INET)
    uv_ip4_name(reinterpret_cast<sockaddr_in*>(&ss), ip, sizeof ip);
  else if (ss.ss_family == AF_INET6)
    uv_ip6_name(reinterpret_cast<sockaddr_in6*>(&ss), ip, sizeof ip);
  return ip;
}

// Lines that end a request's life on this connection when the client cannot be trusted
// to frame the next one: JSON error, Connection: close.
std::string canned_error(int status, std::string_view code, std::string_view message) {
  std::string body = error_body(code, message);
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason_phrase(status)) +
                    "\r\nContent-Type: application/json\r\nContent-Length: " +
                    std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
  return out + body;
}

bool header_value_is(const http::Headers& h, http::FieldId name, std::string_view value) {
  auto v = http::find_header(h, name);
  return v && iequals(trim(*v), value);
}

}  // namespace

Connection::Connection(Worker& worker)
    : worker_(worker), parser_(worker.options().parser_limits, this) {
  uv_tcp_init(worker_.loop(), &tcp_);
  uv_timer_init(worker_.loop(), &timer_);
  tcp_.data = this;
  timer_.data = this;
  open_handles_ = 2;
  worker_.stats().open_connections++;
}

Connection::~Connection() { worker_.stats().open_connections--; }

void Connection::start() {
  uv_tcp_nodelay(&tcp_, 1);
  peer_ = peer_name(&tcp_);
  update_reading();
  arm_timer();
}

void Connection::refuse_overloaded() {
  write_now(canned_error(503, "overloaded", "too many open connections"));
  state_ = State::Lingering;
  flush();
}

bool Connection::idle() const {
  return state_ == State::Reading && !parser_.in_message() && inbuf_.empty();
}

void Connection::drain() {
  draining_ = true;
  keep_alive_ = false;
  if (idle()) close();
}

// ---------------------------------------------------------------- reading

void Connection::on_alloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
  auto* self = static_cast<Connection*>(h->data);
  // One buffer per worker: libuv reads into it and we consume it before returning.
  buf->base = self->worker_.read_buffer();
  buf->len = self->worker_.read_buffer_size();
}

void Connection::on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  auto* self = static_cast<Connection*>(s->data);
  auto keep = self->shared_from_this();  // a handler may close us from inside
  self->callback_depth_++;
  self->handle_read(nread, buf->base);
  self->callback_depth_--;
  self->flush();
}

void Connection::handle_read(ssize_t nread, const char* data) {
  if (nread == 0) return;
  if (nread < 0) {
    if (state_ == State::Tunnel && handler_) {
      handler_->on_tunnel_eof();
      return;
    }
    close();
    return;
  }
  std::string_view bytes(data, static_cast<size_t>(nread));
  switch (state_) {
    case State::Tunnel:
      if (handler_) handler_->on_tunnel_data(bytes);
      return;
    case State::Responding:
      if (request_done_ && !upgrade_request_) {
        // A pipelined request arrives while the previous one is answered: keep it for its
        // turn. Reading stops only if a client piles up too much.
        inbuf_.append(bytes);
        if (inbuf_.size() > kMaxPipelinedBytes) {
          pause_bits_ |= kPausePipeline;
          update_reading();
        }
        return;
      }
      break;
    case State::Lingering:
    case State::Closing:
      return;  // discarded: we are done with this client
    case State::Reading:
      start_head_clock();
      break;
  }
  arm_timer();
  if (inbuf_.empty()) {
    process_input(bytes);
  } else {
    inbuf_.append(bytes);
    std::string pending = std::move(inbuf_);
    inbuf_.clear();
    process_input(pending);
  }
}

// Feeds the parser until it needs more bytes, pauses for a response, or fails. Unconsumed
// bytes are kept in inbuf_ for later.
void Connection::process_input(std::string_view data) {
  while (!data.empty()) {
    if (state_ == State::Closing || state_ == State::Lingering) return;
    size_t used = 0;
    auto status = parser_.feed(data, &used);
    data.remove_prefix(used);
    switch (status) {
      case http::RequestParser::Status::NeedMore:
        if (state_ == State::Reading && parser_.in_message() && head_deadline_ms_ == 0) {
          start_head_clock();
          arm_timer();
        }
        return;
      case http::RequestParser::Status::Paused:
        if (state_ == State::Responding && response_done_) {
          // Answered while it was being read (GET /key, errors): go straight on.
          if (!turn_over()) return;
          continue;
        }
        inbuf_.assign(data);
        if (inbuf_.size() > kMaxPipelinedBytes) {
          pause_bits_ |= kPausePipeline;
          update_reading();
        }
        return;
      case http::RequestParser::Status::Upgrade:
        if (state_ == State::Responding && response_done_) {
          // Refused at once (CONNECT, h2c, a bad token): no tunnel follows, close.
          turn_over();
          return;
        }
        inbuf_.assign(data);
        pause_bits_ |= kPauseUpgrade;
        update_reading();
        return;
      case http::RequestParser::Status::Error:
        refuse(parser_.error());
        return;
    }
  }
}

void Connection::refuse(const http::ParseError& err) {
  if (handler_) {
    // The head was accepted but the body framing broke (e.g. a bad chunk size).
    auto h = std::move(handler_);
    h->on_abort();
    worker_.retire(std::move(h));
    if (head_sent_) {
      close();
      return;
    }
  }
  method_ = method_.empty() ? "-" : method_;
  status_ = err.status;
  log_access();
  out_.clear();
  write_now(canned_error(err.status, err.code, err.message));
  state_ = State::Lingering;
  flush();
}

// ---------------------------------------------------------------- request events

void Connection::on_request_head(http::RequestHead&& head) {
  state_ = State::Responding;
  head_deadline_ms_ = 0;
  request_done_ = false;
  response_done_ = false;
  head_sent_ = false;
  status_ = 0;
  key_id_ = 0;
  keys_tried_.clear();
  service_.clear();
  bytes_out_ = 0;
  // The start time, method and path are read by the access line only: when that line is
  // off, a request costs no clock read and no copies for it.
  access_line_ = log::enabled(log::Level::Info);
  started_ns_ = access_line_ ? uv_hrtime() : 0;
  if (access_line_) {
    method_ = head.method;
    // Never log the query: it may hold a token. assign() reuses path_'s storage.
    path_.assign(head.target, 0, std::min<size_t>(head.target.find('?'), 256));
  } else {
    method_.clear();
    path_.clear();
  }
  http_minor_ = head.http_minor;
  request_has_body_ = head.has_body();
  keep_alive_ = head.keep_alive && !draining_ && !worker_.draining();
  upgrade_request_ = head.upgrade;
  if (head.upgrade) keep_alive_ = false;  // after a refused upgrade the stream is not HTTP
  head_request_ = head.method == "HEAD";
  bool expect_continue = head.http_minor == 1 && head.has_body() &&
                         header_value_is(head.headers, http::FieldId::Expect, "100-continue");
  const int64_t total_ms = worker_.options().request_total_ms;
  total_deadline_ms_ = total_ms > 0 ? uv_now(worker_.loop()) + static_cast<uint64_t>(total_ms) : 0;
  handler_ = worker_.factory().on_request(head, *this);
  // The client waits for our go-ahead before sending the body; the handler did not refuse.
  if (expect_continue && !head_sent_ && state_ == State::Responding) write_now("HTTP/1.1 100 Continue\r\n\r\n");
  if (state_ == State::Responding) arm_timer();  // the head's limit ends here
}

void Connection::on_request_body(std::string_view data) {
  if (handler_ && !response_done_) handler_->on_body(data);
}

void Connection::on_request_complete() {
  request_done_ = true;
  // If the handler answers inside on_end, process_input sees Paused with the response done
  // and turns over to the next request itself.
  if (handler_ && !response_done_) handler_->on_end();
  if (state_ == State::Responding) arm_timer();  // the body's gap limit ends here
}

// ---------------------------------------------------------------- response sink

void Connection::send_head(int status, const http::Headers& headers, BodyMode mode, uint64_t length) {
  if (head_sent_ || state_ == State::Closing) return;
  head_sent_ = true;
  status_ = status;
  if (!request_done_ && request_has_body_ && mode != BodyMode::Raw)
    keep_alive_ = false;  // an unread body cannot be skipped safely: close after this
  // The lines keypool adds are chosen first, so the head's size is known before a byte of
  // it is written (see SizedWriter).
  char code[8];
  std::string_view code_text(code, static_cast<size_t>(std::to_chars(code, code + sizeof code, status).ptr - code));
  char length_line[48];
  std::string_view framing;
  chunked_out_ = false;
  switch (mode) {
    case BodyMode::Empty:
      if (status != 204 && status != 304 && status >= 200) framing = "Content-Length: 0\r\n";
      break;
    case BodyMode::ContentLength:
      framing = content_length_line(length_line, length);
      break;
    case BodyMode::Stream:
      if (head_request_) break;
      if (http_minor_ >= 1) {
        framing = "Transfer-Encoding: chunked\r\n";
        chunked_out_ = true;
      } else {
        keep_alive_ = false;  // HTTP/1.0: the close marks the end
      }
      break;
    case BodyMode::Raw:
      break;
  }
  std::string_view connection;
  if (mode != BodyMode::Raw) {
    if (!keep_alive_) connection = "Connection: close\r\n";
    else if (http_minor_ == 0) connection = "Connection: keep-alive\r\n";
  }
  const std::string_view reason = reason_phrase(status);
  size_t size = (sizeof "HTTP/1.1 " - 1) + code_text.size() + 1 + reason.size() + 2 + framing.size() +
                connection.size() + 2;
  for (const auto& h : headers) size += h.name.size() + h.value.size() + 4;
  // Framed straight into the output buffer, which keeps its capacity from earlier
  // responses on this connection: a small answer costs no allocation. Room for a small
  // body too, so the send_body that follows does not grow it again.
  const size_t at = out_.size();
  out_.reserve(at + size + (mode == BodyMode::ContentLength && length <= kReserveBodyUpTo ? length : 0));
  out_.resize(at + size);
  SizedWriter w(out_.data() + at, size);
  w.append("HTTP/1.1 ");
  w.append(code_text);
  w.append(" ");
  w.append(reason);
  w.append("\r\n");
  for (const auto& h : headers) {
    w.append(h.name);
    w.append(": ");
    w.append(h.value);
    w.append("\r\n");
  }
  w.append(framing);
  w.append(connection);
  w.append("\r\n");
  assert(w.size() == size);  // the count above and the writes agree
  after_append();
  if (mode == BodyMode::Raw && status == 101) enter_tunnel();
}

void Connection::send_body(std::string_view data) {
  if (!head_sent_ || response_done_ || data.empty() || state_ == State::Closing) return;
  if (head_request_) return;  // HEAD: the head says how long the body would be, nothing follows
  bytes_out_ += data.size();
  // Framed straight into the output buffer: no copy of the body on the way.
  if (chunked_out_) {
    char size_line[24];
    int n = std::snprintf(size_line, sizeof size_line, "%zx\r\n", data.size());
    append_out(std::string_view(size_line, static_cast<size_t>(n)));
    append_out(data);
    append_out("\r\n");
  } else {
    append_out(data);
  }
}

void Connection::end() {
  if (response_done_ || state_ == State::Closing) return;
  if (!head_sent_) send_head(500, {}, BodyMode::Empty, 0);
  response_done_ = true;
  if (chunked_out_ && !head_request_) write_now("0\r\n\r\n");
  log_access();
  if (state_ == State::Tunnel) {
    state_ = State::Lingering;
    flush();
    return;
  }
  if (!request_done_ && request_has_body_) {
    // Answered before the body was read (an error): discard the rest and close.
    if (handler_) worker_.retire(std::move(handler_));
    state_ = State::Lingering;
  } else if (callback_depth_ == 0) {
    // Called from outside our read processing (an upstream or store callback). Finishing
    // releases the handler, which may be the caller: do it after it returns.
    // finish_seq_ names the exchange this is for: a later one must not be finished by it.
    finish_seq_ = exchange_seq_;
    defer_task(kFinishTask);
  }
  flush();
}

void Connection::abort() {
  if (status_ == 0) status_ = 502;
  if (!response_done_) log_access();
  response_done_ = true;
  // A reset tells the client the response is incomplete; a clean close after a
  // Content-Length body or without the last chunk would too, but RST is unambiguous.
  if (handler_) worker_.retire(std::move(handler_));
  if (state_ != State::Closing) {
    uv_tcp_close_reset(&tcp_, &Connection::on_handle_closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), &Connection::on_handle_closed);
    state_ = State::Closing;
  }
}

void Connection::pause_read() {
  pause_bits_ |= kPauseHandler;
  update_reading();
  arm_timer();
}

void Connection::resume_read() {
  if (!(pause_bits_ & kPauseHandler)) return;
  pause_bits_ &= ~kPauseHandler;
  update_reading();
  arm_timer();
}

// ---------------------------------------------------------------- request turnover

// The current exchange is over: release its handler and get ready for the next request, or
// close. Returns false when the connection will not read another request.
bool Connection::turn_over() {
  exchange_seq_++;
  auto done = std::move(handler_);
  // Watermark news goes to the handler that fills the queue: the next one is told again
  // (after_append) if it writes while the queue is still over the mark.
  above_high_ = false;
  if (!keep_alive_ || draining_ || worker_.draining()) {
    worker_.retire(std::move(done));
    state_ = State::Lingering;
    flush();
    return false;
  }
  if (done) {
    if (http::RequestHead* spent = done->spent_head()) parser_.recycle(*spent);
    worker_.retire(std::move(done));
  }
  state_ = State::Reading;
  pause_bits_ &= ~(kPausePipeline | kPauseHandler);
  parser_.resume();
  arm_timer();
  update_reading();
  return true;
}

void Connection::finish_exchange() {
  if (state_ != State::Responding || !response_done_ || !request_done_) return;
  if (!turn_over()) return;
  if (!inbuf_.empty()) {
    start_head_clock();
    arm_timer();
    std::string pending = std::move(inbuf_);
    inbuf_.clear();
    callback_depth_++;
    process_input(pending);
    callback_depth_--;
    flush();
  }
}

void Connection::enter_tunnel() {
  state_ = State::Tunnel;
  arm_timer();  // none: the tunnel's peers decide how long it lives
  pause_bits_ &= ~kPauseUpgrade;
  update_reading();
  if (!inbuf_.empty() && handler_) {
    std::string early = std::move(inbuf_);
    inbuf_.clear();
    handler_->on_tunnel_data(early);
  }
}

// ---------------------------------------------------------------- timers

// The whole head must arrive within request_head_ms of its first byte: a deadline, not a
// gap timer, or a client trickling a byte at a time would hold us forever.
void Connection::start_head_clock() {
  if (head_deadline_ms_ == 0) head_deadline_ms_ = uv_now(worker_.loop()) + worker_.options().request_head_ms;
}

// Sets the one timer for the phase the connection is in. Called whenever the phase may have
// changed (a read, a head, the end of a request body, a pause, a turnover), so a limit never
// outlives its phase: the head's deadline must not cut off the answer that follows it, which
// for an LLM call can take minutes.
void Connection::arm_timer() {
  if (state_ == State::Closing) return;
  const auto& opts = worker_.options();
  const uint64_t now = uv_now(worker_.loop());
  Clock clock = Clock::None;
  uint64_t due = 0;
  switch (state_) {
    case State::Closing:
    case State::Tunnel:  // the tunnel's peers decide how long it lives
      break;
    case State::Lingering:
      clock = Clock::Linger;
      due = now + kLingerMs;
      break;
    case State::Reading:
      if (head_deadline_ms_ != 0) {
        clock = Clock::Head;
        due = head_deadline_ms_;
      } else {
        clock = Clock::KeepAliveIdle;
        due = now + static_cast<uint64_t>(opts.idle_keepalive_ms);
      }
      break;
    case State::Responding:
      if (total_deadline_ms_ != 0) {
        clock = Clock::Total;
        due = total_deadline_ms_;
      }
      // A request body that stalls, unless we stopped reading it ourselves (upstream
      // backpressure). Once it is read, the upstream's head and idle clocks govern.
      if (!request_done_ && !(pause_bits_ & kPauseHandler)) {
        uint64_t gap_due = now + static_cast<uint64_t>(opts.body_idle_ms);
        if (clock == Clock::None || gap_due < due) {
          clock = Clock::BodyGap;
          due = gap_due;
        }
      }
      break;
  }
  clock_ = clock;
  if (clock == Clock::None) deadline_.clear();
  else deadline_.set_at(due);
}

void Connection::on_timer(uv_timer_t* t) {
  auto* self = static_cast<Connection*>(t->data);
  if (!self->deadline_.reached()) return;
  auto keep = self->shared_from_this();
  self->on_clock_due();
}

// The limit of the current phase ran out. Before the response began, the client gets an
// answer saying which; after, only a broken connection can tell it the body is incomplete.
void Connection::on_clock_due() {
  const Clock clock = clock_;
  clock_ = Clock::None;
  if (state_ == State::Lingering || state_ == State::Closing) {
    close();
    return;
  }
  switch (clock) {
    case Clock::None:
      return;
    case Clock::Head:
      refuse(http::ParseError{408, "request_timeout", "request head not received in time"});
      return;
    case Clock::BodyGap:
      if (head_sent_) break;
      refuse(http::ParseError{408, "request_timeout", "request body stalled: no byte within timeouts.upstream_idle_ms"});
      return;
    case Clock::Total:
      if (head_sent_) {
        abort();  // a reset, so the client cannot take the cut body for a whole one
        return;
      }
      refuse(http::ParseError{504, "request_timeout", "the call took longer than timeouts.request_total_ms"});
      return;
    case Clock::KeepAliveIdle:
    case Clock::Linger:
      break;
  }
  close();
}

// ---------------------------------------------------------------- writing

// Bytes are gathered and written once per loop iteration (at the end of our read callback,
// or in the worker's check phase), so a head and its body leave in one write(2).
void Connection::write_now(std::string&& bytes) {
  if (out_.empty()) out_ = std::move(bytes);
  else out_.append(bytes);
  after_append();
}

void Connection::append_out(std::string_view bytes) {
  out_.append(bytes);
  after_append();
}

void Connection::after_append() {
  // This connection owns its output queue's watermarks: it tells the handler when the queue
  // passes the high one, and (in flush) when it drains to the low one.
  if (!above_high_ && queued_bytes() > worker_.options().write_high_watermark) {
    above_high_ = true;
    if (handler_) handler_->on_write_blocked();
  }
  if (callback_depth_ == 0) defer_task(kFlushTask);
}

void Connection::defer_task(Task t) {
  const bool queued = deferred_tasks_ != 0;
  deferred_tasks_ |= t;
  if (!queued) worker_.defer(weak_from_this());
}

void Connection::run_deferred() {
  // Cleared first: what these tasks do may queue new work, which needs an entry of its own.
  const uint8_t tasks = std::exchange(deferred_tasks_, 0);
  if (tasks & kFlushTask) flush();
  if ((tasks & kFinishTask) && exchange_seq_ == finish_seq_) finish_exchange();
}

void Connection::flush() {
  if (state_ == State::Closing) return;
  if (!out_.empty()) {
    if (in_flight_ == 0) {
      // Most responses fit the socket buffer: try a direct write before queueing.
      uv_buf_t b = uv_buf_init(out_.data(), static_cast<unsigned>(out_.size()));
      int n = try_send(&tcp_, &b, 1);
      if (n > 0) {
        erase_front_wiped(out_, static_cast<size_t>(n));  // may have held a key (GET /key)
        if (out_.empty() && out_.capacity() > kKeptOutCapacity) std::string().swap(out_);
      }
      else if (n < 0 && n != UV_EAGAIN) {
        close();
        return;
      }
    }
    if (!out_.empty()) {
      auto req = std::make_unique<WriteReq>();
      req->data = std::move(out_);
      out_.clear();
      req->conn = this;
      in_flight_ += req->data.size();
      uv_buf_t b = uv_buf_init(req->data.data(), static_cast<unsigned>(req->data.size()));
      req->req.data = req.get();
      if (uv_write(&req->req, reinterpret_cast<uv_stream_t*>(&tcp_), &b, 1, &Connection::on_write_done) != 0) {
        in_flight_ -= req->data.size();
        close();
        return;
      }
      req.release();  // adopted back in on_write_done
    }
  }
  // The one place that reports a drained queue (after a direct write or a write callback);
  // after_append raises above_high_.
  size_t high = worker_.options().write_high_watermark;
  if (above_high_ && queued_bytes() <= high / 2 && handler_ && !in_writable_) {
    above_high_ = false;
    in_writable_ = true;
    auto h = handler_;
    h->on_writable();
    in_writable_ = false;
  }
  if (in_flight_ == 0 && out_.empty() && state_ == State::Lingering && !shutdown_sent_) {
    shutdown_sent_ = true;
    // Everything is written: stop sending, then let the client read it before we close.
    auto sd = std::make_unique<uv_shutdown_t>();
    sd->data = this;
    auto done = [](uv_shutdown_t* r, int) { std::unique_ptr<uv_shutdown_t> adopted(r); };
    if (uv_shutdown(sd.get(), reinterpret_cast<uv_stream_t*>(&tcp_), done) != 0) {
      close();
      return;
    }
    sd.release();  // adopted back in its callback
    pause_bits_ = 0;
    update_reading();
    arm_timer();
  }
}

void Connection::on_write_done(uv_write_t* req, int status) {
  std::unique_ptr<WriteReq> w(static_cast<WriteReq*>(req->data));
  Connection* self = w->conn;
  // Buffers may hold a key (tunnel or body bytes): wipe before freeing.
  explicit_bzero(w->data.data(), w->data.size());
  self->in_flight_ -= w->data.size();
  if (status < 0) {
    if (status != UV_ECANCELED) self->close();
    return;
  }
  if (self->state_ == State::Closing) return;
  auto keep = self->shared_from_this();
  self->flush();  // also tells the handler when the queue has drained (see flush)
}

void Connection::update_reading() {
  if (state_ == State::Closing) return;
  bool want = pause_bits_ == 0;
  if (want == reading_) return;
  reading_ = want;
  if (want) uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), &Connection::on_alloc, &Connection::on_read);
  else uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
}

// ---------------------------------------------------------------- closing

void Connection::close() {
  if (state_ == State::Closing) return;
  state_ = State::Closing;
  handler_state_.reset();  // may hold a verified credential: gone with the connection
  if (handler_) {
    auto h = std::move(handler_);
    if (!response_done_) {
      if (status_ == 0) status_ = 499;  // client closed the request
      log_access();
      h->on_abort();
    }
    worker_.retire(std::move(h));
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), &Connection::on_handle_closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), &Connection::on_handle_closed);
}

void Connection::on_handle_closed(uv_handle_t* h) {
  auto* self = static_cast<Connection*>(h->data);
  if (--self->open_handles_ == 0) self->worker_.on_connection_closed(self);
}

void Connection::log_access() {
  if (!log::enabled(log::Level::Info)) return;
  double ms = started_ns_ == 0 ? 0 : static_cast<double>(uv_hrtime() - started_ns_) / 1e6;
  log::info("access", {{"method", method_},
                       {"path", path_},
                       {"status", status_},
                       {"duration_ms", ms},
                       {"key_id", key_id_},
                       {"failed_over_from", keys_tried_},
                       {"service", service_},
                       {"bytes_out", static_cast<int64_t>(bytes_out_)},
                       {"peer", peer_}});
}

}  // namespace keypool::server
