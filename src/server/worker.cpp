#include "server/worker.h"

#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "base/clock.h"
#include "server/connection.h"
#include "telemetry/log.h"

namespace keypool::server {

ServerOptions ServerOptions::from(const config::Config& cfg) {
  ServerOptions o;
  o.parser_limits.max_header_bytes = static_cast<size_t>(cfg.limits.max_header_bytes);
  o.parser_limits.max_header_count = static_cast<size_t>(cfg.limits.max_header_count);
  o.parser_limits.max_url_bytes = static_cast<size_t>(cfg.limits.max_url_bytes);
  o.request_head_ms = cfg.timeouts.request_head_ms;
  // The request body is one direction of the call's body traffic: the same gap limit as the
  // upstream's (upstream_idle_ms: "between body bytes, either direction").
  o.body_idle_ms = cfg.timeouts.upstream_idle_ms;
  o.request_total_ms = cfg.timeouts.request_total_ms;
  o.idle_keepalive_ms = cfg.timeouts.idle_keepalive_ms;
  o.drain_ms = cfg.timeouts.drain_ms;
  o.max_connections = cfg.limits.max_connections;
  o.write_high_watermark = static_cast<size_t>(cfg.proxy.write_high_watermark);
  return o;
}

int open_listen_socket(const std::string& host, int port, int* bound_port, std::string* error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string port_s = std::to_string(port);
  int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port_s.c_str(), &hints, &res);
  if (rc != 0) {
    *error = "cannot resolve listen host '" + host + "': " + gai_strerror(rc);
    return -1;
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> guard(res, freeaddrinfo);
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    *error = std::string("socket: ") + std::strerror(errno);
    return -1;
  }
  int one = 1;
  // Every worker binds the same port; the kernel spreads connections across them.
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 4096) != 0) {
    *error = "cannot listen on " + host + ":" + port_s + ": " + std::strerror(errno);
    ::close(fd);
    return -1;
  }
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  *bound_port = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                         : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return fd;
}

Worker::Worker(int index, ServerOptions opts) : index_(index), opts_(opts), read_buf_(64 * 1024) {
  uv_loop_init(&loop_);
  post_ = std::make_unique<LoopPost>(&loop_);
}

Worker::~Worker() {
  join();
  uv_loop_close(&loop_);
}

void Worker::start(int listen_fd) {
  thread_ = std::thread([this, listen_fd] { run(listen_fd); });
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::run(int listen_fd) {
  uv_tcp_init(&loop_, &listener_);
  listener_.data = this;
  uv_tcp_open(&listener_, listen_fd);
  uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 4096, &Worker::on_connection);
  uv_check_init(&loop_, &check_);
  check_.data = this;
  uv_check_start(&check_, &Worker::on_check);
  uv_timer_init(&loop_, &drain_timer_);
  drain_timer_.data = this;
  // The app's clock answers from this loop's time on this thread (see LoopWallClock).
  LoopWallClock wall_clock(&loop_);
  LoopWallClock::installed() = &wall_clock;
  uv_run(&loop_, UV_RUN_DEFAULT);
  // Anything closed during the last iteration still needs its close callbacks run.
  uv_run(&loop_, UV_RUN_DEFAULT);
  LoopWallClock::installed() = nullptr;
}

void Worker::on_connection(uv_stream_t* server, int status) {
  auto* self = static_cast<Worker*>(server->data);
  if (status < 0 || self->draining_) return;
  auto conn = std::make_shared<Connection>(*self);
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(conn->tcp())) != 0) {
    conn->close();
    self->connections_.emplace(conn.get(), conn);
    return;
  }
  self->stats_.accepted++;
  self->connections_.emplace(conn.get(), conn);
  if (static_cast<int64_t>(self->connections_.size()) > self->opts_.max_connections) {
    self->stats_.refused_overload++;
    conn->refuse_overloaded();
    return;
  }
  conn->start();
}

void Worker::on_check(uv_check_t* h) {
  auto* self = static_cast<Worker*>(h->data);
  // Deferred work may defer more work; run until quiet (bounded by what callers queue).
  // Swapping with a second vector keeps both capacities: no allocation per iteration.
  while (!self->deferred_.empty()) {
    self->running_.swap(self->deferred_);
    for (auto& d : self->running_) self->run(d);
    self->running_.clear();
  }
  self->retired_.clear();
}

void Worker::defer(std::function<void()> fn) { deferred_.push_back(Deferred{std::move(fn), {}}); }

void Worker::defer(std::weak_ptr<Connection> conn) { deferred_.push_back(Deferred{nullptr, std::move(conn)}); }

void Worker::run(Deferred& d) {
  if (d.fn) d.fn();
  else if (auto conn = d.conn.lock()) conn->run_deferred();
}

void Worker::retire(std::shared_ptr<RequestHandler> handler) {
  if (handler) retired_.push_back(std::move(handler));
}

void Worker::on_connection_closed(Connection* c) {
  // Freed at the next check phase: we are inside the connection's own close callback.
  auto it = connections_.find(c);
  if (it == connections_.end()) return;
  auto conn = std::move(it->second);
  connections_.erase(it);
  defer([conn] {});
  maybe_finish_drain();
}

void Worker::request_drain() {
  post_->post([this] { begin_drain(); });
}

void Worker::begin_drain() {
  if (draining_) return;
  draining_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
  std::vector<std::shared_ptr<Connection>> conns;
  for (auto& [_, c] : connections_) conns.push_back(c);
  for (auto& c : conns) c->drain();
  // In-flight requests get drain_ms; then everything still open is cut.
  uv_timer_start(&drain_timer_, [](uv_timer_t* t) {
    auto* self = static_cast<Worker*>(t->data);
    std::vector<std::shared_ptr<Connection>> left;
    for (auto& [_, c] : self->connections_) left.push_back(c);
    log::warn("drain timeout: closing connections", {{"open", static_cast<int64_t>(left.size())}});
    for (auto& c : left) c->close();
  }, static_cast<uint64_t>(opts_.drain_ms), 0);
  maybe_finish_drain();
}

void Worker::maybe_finish_drain() {
  if (!draining_ || stopping_ || !connections_.empty()) return;
  stopping_ = true;
  close_all();
}

void Worker::close_all() {
  if (on_stop_) on_stop_();
  uv_close(reinterpret_cast<uv_handle_t*>(&drain_timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&check_), nullptr);
  post_->close(nullptr);
  // Deferred releases must still run: they hold the last references to connections.
  for (auto& d : deferred_) run(d);
  deferred_.clear();
  retired_.clear();
}

}  // namespace keypool::server
