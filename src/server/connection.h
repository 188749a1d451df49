#pragma once
// Connection: one downstream (client) TCP connection on a worker's loop.
//
// It reads bytes, feeds the RequestParser, hands each request head to the HandlerFactory and
// frames whatever the handler answers through the ResponseSink interface. Requests on one
// connection are answered strictly in order: the parser pauses after each message until
// the response to it has ended.
//
// Lifetime: owned by the Worker (shared_ptr, so deferred work can hold a weak_ptr); freed
// only after both of its libuv handles are closed. Handlers are released at a safe point
// (the worker's check phase), never while one of their callbacks is on the stack.
#include <uv.h>

#include <memory>
#include <string>

#include "base/deadline.h"
#include "http/request_parser.h"
#include "server/handler.h"
#include "server/worker.h"

namespace keypool::server {


class Connection final : public ResponseSink,
                         private http::RequestParser::Events,
                         public std::enable_shared_from_this<Connection> {
 public:
  explicit Connection(Worker& worker);
  ~Connection() override;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  uv_tcp_t* tcp() { return &tcp_; }
  // Starts reading after uv_accept succeeded.
  void start();
  // Refuses the connection with a canned 503 (connection cap reached).
  void refuse_overloaded();
  // Begins closing; idempotent. The handler (if any) gets on_abort().
  void close();
  // SIGTERM: close now if idle, else answer the current request with Connection: close.
  void drain();
  bool idle() const;
  // Work this connection queued with Worker::defer, run in the check phase.
  void run_deferred();  // the check phase runs the tasks queued by defer_task

  // ResponseSink
  void send_head(int status, const http::Headers& headers, BodyMode mode, uint64_t length) override;
  void send_body(std::string_view data) override;
  void end() override;
  void abort() override;
  bool head_sent() const override { return head_sent_; }
  size_t queued_bytes() const override { return out_.size() + in_flight_; }
  void close_after_response() override { keep_alive_ = false; }
  void pause_read() override;
  void resume_read() override;
  void note_key(int64_t key_id) override {
    // Every key an exchange tried shows in its access line: failovers are visible there.
    if (key_id_ != 0 && key_id_ != key_id) {
      if (!keys_tried_.empty()) keys_tried_ += ',';
      keys_tried_ += std::to_string(key_id_);
    }
    key_id_ = key_id;
  }
  void note_service(std::string_view s) override {
    if (access_line_) service_ = s;  // read by the access line only
  }
  std::string_view peer() const override { return peer_; }
  std::unique_ptr<ConnectionState>& connection_state() override { return handler_state_; }

 private:
  enum class State {
    Reading,     // waiting for or reading a request
    Responding,  // a handler owns the current request
    Tunnel,      // after a 101: raw bytes both ways
    Lingering,   // final response written: shut down our side, discard input, then close
    Closing,
  };
  // RequestParser::Events
  void on_request_head(http::RequestHead&& head) override;
  void on_request_body(std::string_view data) override;
  void on_request_complete() override;

  static void on_alloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void on_timer(uv_timer_t* t);
  static void on_write_done(uv_write_t* req, int status);
  static void on_handle_closed(uv_handle_t* h);

  void handle_read(ssize_t nread, const char* data);
  void process_input(std::string_view data);
  void refuse(const http::ParseError& err);
  bool turn_over();
  void finish_exchange();
  void enter_tunnel();
  void start_head_clock();
  void arm_timer();
  void on_clock_due();
  void flush();
  void write_now(std::string&& bytes);
  void append_out(std::string_view bytes);
  void after_append();  // watermark and flush scheduling after out_ grew
  void update_reading();
  void log_access();

  Worker& worker_;
  uv_tcp_t tcp_;
  uv_timer_t timer_;
  int open_handles_ = 0;
  State state_ = State::Reading;
  http::RequestParser parser_;
  std::string inbuf_;   // unparsed bytes (pipelined requests, or tunnel data before the 101)
  std::string out_;     // framed response bytes not yet handed to uv_write
  size_t in_flight_ = 0;  // bytes inside pending uv_write requests
  bool above_high_ = false;
  int callback_depth_ = 0;  // >0 while inside our own read processing: writes coalesce
  unsigned pause_bits_ = 0;  // reasons not to read; see connection.cpp
  bool reading_ = false;
  // Work queued for the worker's check phase, as bits: a response that flushes and then ends
  // from an upstream callback (every small proxied response) queues one entry, not two.
  enum Task : uint8_t { kFlushTask = 1, kFinishTask = 2 };
  uint8_t deferred_tasks_ = 0;
  void defer_task(Task t);
  bool in_writable_ = false;  // guards against on_writable re-entering through flush
  // Which limit the connection's one timer stands for now. Each phase of a request has its
  // own (see arm_timer); once the request is read, the upstream's clocks govern and the
  // client side only keeps the optional total limit.
  enum class Clock {
    None,           // nothing limits this phase (a read request waiting for its answer)
    KeepAliveIdle,  // between requests: idle_keepalive_ms
    Head,           // a request head is arriving: request_head_ms from its first byte
    BodyGap,        // a request body is arriving: body_idle_ms between its bytes
    Total,          // request_total_ms since the head arrived (off unless configured)
    Linger,         // our final answer is out: discard input a little while, then close
  };
  Clock clock_ = Clock::None;
  uint64_t head_deadline_ms_ = 0;  // uv_now by which the current head must be complete; 0 = none
  uint64_t total_deadline_ms_ = 0;  // uv_now by which this exchange must be over; 0 = no limit
  MovingDeadline deadline_{&timer_, &Connection::on_timer};  // when on_timer acts

  std::shared_ptr<RequestHandler> handler_;
  std::unique_ptr<ConnectionState> handler_state_;
  bool request_done_ = false;
  bool request_has_body_ = false;
  bool response_done_ = false;
  bool head_sent_ = false;
  bool keep_alive_ = true;
  bool chunked_out_ = false;
  bool upgrade_request_ = false;
  bool head_request_ = false;
  bool draining_ = false;
  bool shutdown_sent_ = false;
  uint64_t exchange_seq_ = 0;  // guards deferred finish_exchange calls against a later request
  uint64_t finish_seq_ = 0;    // the exchange a deferred finish_exchange was queued for
  int http_minor_ = 1;

  // access log
  std::string method_, path_, service_, peer_;
  bool access_line_ = false;  // this request's access line will be written (Info logging on)
  int status_ = 0;
  int64_t key_id_ = 0;
  std::string keys_tried_;  // earlier keys of this exchange (failover), "1,4"; ids only
  uint64_t started_ns_ = 0;
  uint64_t bytes_out_ = 0;
};

}  // namespace keypool::server
