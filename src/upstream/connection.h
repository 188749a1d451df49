#pragma once
// Connection: one TCP (and maybe TLS) connection to an origin, serving one Exchange at a time.
// Internal to the upstream room; the proxy only sees Exchange.
//
// Ownership: a Connection owns itself. It is created by Client::start and deletes itself once
// close() was called and its timer and socket close callbacks (and any DNS lookup) returned,
// so no libuv callback ever sees freed memory and no handler callback frees it mid-call.
#include <uv.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "base/deadline.h"
#include "http/response_parser.h"
#include "tls/tls.h"
#include "upstream/client.h"

namespace keypool::upstream {

class Connection final : private http::ResponseParser::Sink {
 public:
  // Where the socket is in its life.
  enum class State { Resolving, Connecting, Handshaking, Open, Idle, Closing };
  // Where the response of the current exchange is.
  enum class ReadState { Head, Body, Tunnel, Done };
  // What the one timer is counting down to.
  enum class TimerPurpose { None, Connect, Head, Idle, Pool, DeferredError };

  // The adoption point: the returned connection frees itself (see above).
  static Connection* open(Client* client, uv_loop_t* loop, const Origin& origin, const ClientOptions& opts,
                          const tls::ClientContext* tls_ctx);

  void connect();
  // Begins an exchange on this connection (new or taken from the pool).
  void attach(Exchange* exchange, ExchangeHandler* handler, bool head_request);
  // The exchange was destroyed: back to the pool if clean, else close.
  void detach();
  void write(std::string bytes);
  std::string take_buffer();
  // The request was not sent whole (the response came early): never pool this connection.
  void forbid_reuse() { reusable_ = false; }
  size_t queued_bytes() const { return pending_bytes_ + inflight_bytes_; }
  void pause_read();
  void resume_read();
  // Idempotent. Unlinks the exchange and the client now, frees memory later.
  void close();
  // The client is being destroyed before this connection.
  void forget_client() { client_ = nullptr; }
  const std::string& key() const { return key_; }

 private:
  struct WriteReq;

  Connection(Client* client, uv_loop_t* loop, const Origin& origin, const ClientOptions& opts,
             const tls::ClientContext* tls_ctx);
  ~Connection() override;

  // Connecting.
  void on_resolved(int status, struct addrinfo* res);
  void connect_addresses();
  void try_next_address();
  void on_connect(int status);
  bool advance_handshake();
  void on_connected();

  // Reading.
  void update_read_state();
  void on_read(ssize_t nread, const uv_buf_t* buf);
  void on_ciphertext(const char* data, size_t len);
  void on_bytes(const char* data, size_t len);
  void on_eof(int status);
  bool on_head(http::ResponseHead& head) override;
  bool on_body(std::string_view data) override;

  // Writing.
  void flush_writes();
  void send(std::vector<std::string> bufs);
  void queue_write(std::vector<std::string> bufs);
  template <class Bufs>
  bool write_directly(Bufs& bufs, size_t* taken_out);
  void send_tls_output();
  void keep_buffer(std::string& written);
  void on_write_done(int status, size_t bytes);
  void on_written();

  // Timers and endings.
  void arm_timer(TimerPurpose purpose, int64_t ms);
  static void on_timer(uv_timer_t* t);
  void on_deadline();
  void fail(ErrorKind kind, std::string message);
  void fail_later(ErrorKind kind, std::string message);
  void end_and_close();
  void on_tcp_closed();
  void maybe_free();
  std::string where() const;  // "host:port" for messages

  Client* client_;
  uv_loop_t* loop_;
  Origin origin_;
  std::string key_;
  int64_t connect_timeout_ms_, head_timeout_ms_, idle_timeout_ms_, pool_idle_ms_, high_watermark_;
  const tls::ClientContext* tls_ctx_;

  State state_ = State::Resolving;
  ReadState read_state_ = ReadState::Head;
  TimerPurpose timer_purpose_ = TimerPurpose::None;

  // Handles and requests, each with data = this. tcp_ is initialised per connect attempt.
  uv_timer_t timer_;
  MovingDeadline deadline_{&timer_, &Connection::on_timer};  // when timer_purpose_ is due
  uv_tcp_t tcp_;
  uv_getaddrinfo_t gai_;
  uv_connect_t connect_req_;
  bool timer_closed_ = false;
  bool tcp_initialized_ = false;  // between uv_tcp_init and its close callback
  bool dns_pending_ = false;
  bool closing_ = false;
  bool reading_ = false;

  std::vector<sockaddr_storage> addrs_;
  size_t next_addr_ = 0;
  std::string last_connect_error_;

  std::unique_ptr<tls::ClientSession> tls_;
  http::ResponseParser parser_;
  std::unique_ptr<char[]> read_buf_;   // kReadBufSize, handed to uv_read
  std::unique_ptr<char[]> plain_buf_;  // kPlainBufSize, TLS plaintext (TLS connections only)

  // The current exchange. generation_ changes whenever it is attached or detached, so code
  // that called a handler can tell that the world moved under it.
  Exchange* exchange_ = nullptr;
  ExchangeHandler* handler_ = nullptr;
  uint64_t generation_ = 0;
  bool head_request_ = false;
  bool paused_ = false;
  bool keep_alive_ = false;
  bool reusable_ = true;       // false after stray bytes or a failed write
  // Whether any response byte came back to this exchange: a pooled connection
  // (exchange_->reused()) that dies before answering fails as Stale.
  bool answered_ = false;
  int in_write_ = 0;  // inside write(): failures are reported from the loop (see fail)
  bool write_broken_ = false;  // the socket refused a write; keep reading the response
  bool above_high_ = false;

  // Request bytes not yet handed to the socket (or to TLS). Wiped once taken.
  std::deque<std::string> pending_;
  size_t front_offset_ = 0;  // bytes of pending_.front() already given to TLS
  size_t pending_bytes_ = 0;
  size_t inflight_bytes_ = 0;  // in uv_write requests not yet called back
  // A written and wiped request buffer kept for take_buffer(): the next request head on this
  // connection is built into its storage.
  std::string spare_;
  ErrorKind deferred_kind_ = ErrorKind::Connect;
  std::string deferred_message_;
};

}  // namespace keypool::upstream
