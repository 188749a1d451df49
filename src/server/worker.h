#pragma once
// Worker: one thread, one uv loop, one listening socket (SO_REUSEPORT), its connections.
//
// Worker::run reads as the list of what a worker does: open the listener, accept until
// told to drain, then wait for in-flight requests (bounded by drain_ms) and stop.
#include <uv.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "config/config.h"
#include "http/request_parser.h"
#include "server/handler.h"
#include "server/loop_post.h"

namespace keypool::server {

class Connection;

struct ServerOptions {
  http::RequestParser::Limits parser_limits;
  int64_t request_head_ms = 10'000;    // the request head, from its first byte
  int64_t body_idle_ms = 120'000;      // longest gap between request body bytes
  int64_t request_total_ms = 0;        // head arrived -> response end; 0 = no limit
  int64_t idle_keepalive_ms = 60'000;
  int64_t drain_ms = 10'000;
  int64_t max_connections = 4096;
  size_t write_high_watermark = 256 * 1024;
  static ServerOptions from(const config::Config& cfg);
};

// Creates a listening TCP socket bound to host:port with SO_REUSEPORT, so every worker can
// bind the same port. port 0 picks one; *bound_port says which.
int open_listen_socket(const std::string& host, int port, int* bound_port, std::string* error);

// Counters a worker keeps for /metrics and /admin/health; read from other threads.
struct WorkerStats {
  std::atomic<int64_t> open_connections{0};
  std::atomic<int64_t> accepted{0};
  std::atomic<int64_t> refused_overload{0};
};

class Worker {
 public:
  Worker(int index, ServerOptions opts);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Must be called before start(): what answers requests on this worker.
  void set_factory(std::unique_ptr<HandlerFactory> factory) { factory_ = std::move(factory); }
  uv_loop_t* loop() { return &loop_; }
  LoopPost& post() { return *post_; }
  int index() const { return index_; }
  // Starts the thread serving listen_fd (ownership of the fd passes to the worker).
  void start(int listen_fd);
  // Thread-safe: stop accepting, finish in-flight requests within drain_ms, then exit.
  void request_drain();
  void join();
  // Runs `fn` on this loop thread when the loop is about to stop (for the owner's
  // loop-bound resources such as the upstream client); set before start().
  void set_on_stop(std::function<void()> fn) { on_stop_ = std::move(fn); }

  // For connections:
  const ServerOptions& options() const { return opts_; }
  HandlerFactory& factory() { return *factory_; }
  char* read_buffer() { return read_buf_.data(); }
  size_t read_buffer_size() const { return read_buf_.size(); }
  // Runs fn in this iteration's check phase: after the current callbacks have returned.
  void defer(std::function<void()> fn);
  // Has the connection run its pending tasks (Connection::run_deferred), if it still exists
  // then. Kept apart from std::function: a closure holding a weak_ptr does not fit its inline
  // storage, and most requests queue one of these.
  void defer(std::weak_ptr<Connection> conn);
  void retire(std::shared_ptr<RequestHandler> handler);
  void on_connection_closed(Connection* c);
  bool draining() const { return draining_; }
  WorkerStats& stats() { return stats_; }

 private:
  static void on_connection(uv_stream_t* server, int status);
  static void on_check(uv_check_t* h);
  void run(int listen_fd);
  void begin_drain();
  void maybe_finish_drain();
  void close_all();

  int index_;
  ServerOptions opts_;
  uv_loop_t loop_;
  uv_tcp_t listener_;
  uv_check_t check_;
  uv_timer_t drain_timer_;
  std::unique_ptr<LoopPost> post_;
  std::unique_ptr<HandlerFactory> factory_;
  std::function<void()> on_stop_;
  std::vector<char> read_buf_;
  std::unordered_map<Connection*, std::shared_ptr<Connection>> connections_;
  struct Deferred {
    std::function<void()> fn;      // set, or else:
    std::weak_ptr<Connection> conn;
  };
  void run(Deferred& d);
  std::vector<Deferred> deferred_;
  std::vector<Deferred> running_;  // the batch on_check is running
  std::vector<std::shared_ptr<RequestHandler>> retired_;
  bool draining_ = false;
  bool stopping_ = false;
  WorkerStats stats_;
  std::thread thread_;
};

}  // namespace keypool::server
