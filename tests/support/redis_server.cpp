#include "support/redis_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace keypool::testing {
namespace {

using Clock = std::chrono::steady_clock;

std::string find_in_path(const std::string& name) {
  const char* path = getenv("PATH");
  std::stringstream ss(path ? path : "/usr/local/bin:/usr/bin:/bin");
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    std::string full = (dir.empty() ? "." : dir) + "/" + name;
    if (::access(full.c_str(), X_OK) == 0) return full;
  }
  for (const char* d : {"/usr/bin/", "/usr/sbin/", "/usr/local/bin/"}) {
    std::string full = std::string(d) + name;
    if (::access(full.c_str(), X_OK) == 0) return full;
  }
  return "";
}

// A port the kernel just handed out and took back. Another process could take it before
// redis-server binds it; start() retries with a new one when that happens.
uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    throw std::runtime_error("redis_server: cannot bind a loopback port");
  }
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

RedisServer::RedisServer(RedisServerOptions opts) : opts_(std::move(opts)) {
  if (opts_.tls)
    pki_ = opts_.tls_san.empty() ? make_test_pki("/tmp/keypool-test-pki")
                                 : make_test_pki(dir_.path + "/pki", opts_.tls_san);
  for (int attempt = 0;; ++attempt) {
    port_ = free_port();
    tls_port_ = 0;
    while (opts_.tls && (tls_port_ == 0 || tls_port_ == port_)) tls_port_ = free_port();
    bus_port_ = 0;
    while (opts_.cluster && (bus_port_ == 0 || bus_port_ == port_)) bus_port_ = free_port();
    try {
      start();
      break;
    } catch (const std::exception&) {
      // Lost a race for the port: try another, a few times.
      if (attempt >= 4 || log().find("Address already in use") == std::string::npos) throw;
    }
  }
  if (opts_.cluster) {
    auto r = call({"CLUSTER", "ADDSLOTSRANGE", "0", "16383"});
    if (r.type != redis::ReplyType::Status) throw std::runtime_error("redis_server: CLUSTER ADDSLOTSRANGE: " + r.str);
    // The node serves its slots once it marks the cluster state ok, within a second or so.
    auto until = Clock::now() + std::chrono::seconds(10);
    for (;;) {
      auto info = call({"CLUSTER", "INFO"});
      if (info.str.find("cluster_state:ok") != std::string::npos) break;
      if (Clock::now() > until) throw std::runtime_error("redis_server: cluster state never became ok");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
}

RedisServer::~RedisServer() { stop(); }

std::string RedisServer::url() const { return "redis://127.0.0.1:" + std::to_string(port_); }

void RedisServer::write_config() const {
  std::ofstream f(dir_.path + "/redis.conf");
  f << "bind 127.0.0.1\n"
    << "port " << port_ << "\n"
    << "dir " << dir_.path << "\n"
    << "logfile " << dir_.path << "/redis-" << runs_ << ".log\n"
    << "daemonize no\n"
    << "save \"\"\n"
    << "appendonly no\n"
    << "protected-mode no\n";
  if (!opts_.password.empty()) f << "requirepass " << opts_.password << "\n";
  for (const auto& u : opts_.acl_users) f << "user " << u << "\n";
  if (opts_.tls) {
    f << "tls-port " << tls_port_ << "\n"
      << "tls-cert-file " << pki_.server_cert << "\n"
      << "tls-key-file " << pki_.server_key << "\n"
      << "tls-ca-cert-file " << pki_.ca_cert << "\n"
      << "tls-auth-clients no\n";
  }
  if (opts_.cluster)
    f << "cluster-enabled yes\ncluster-port " << bus_port_ << "\ncluster-config-file " << dir_.path << "/nodes-"
      << runs_ << ".conf\n";
  for (const auto& line : opts_.config) f << line << "\n";
}

void RedisServer::start() {
  const std::string bin = find_in_path("redis-server");
  if (bin.empty())
    throw std::runtime_error(
        "redis-server not found in PATH: the Redis tests need it (Debian package redis-server, "
        "installed by packaging/install-deps.sh --test)");
  ++runs_;
  write_config();
  const std::string conf = dir_.path + "/redis.conf";
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    // Only async-signal-safe calls between fork and exec (the test may have threads).
    ::setpgid(0, 0);  // a ^C to the test run must not reach the server before the test stops it
    // A test binary that dies (a crash, a timeout's SIGKILL) takes its server with it, and
    // the server holds no pipe of the test run open: it logs to its own file.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    int devnull = ::open("/dev/null", O_RDWR);
    if (devnull >= 0) {
      ::dup2(devnull, 0);
      ::dup2(devnull, 1);
      ::dup2(devnull, 2);
    }
    ::execl(bin.c_str(), bin.c_str(), conf.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  pid_ = pid;
  wait_ready();
}

// The log says "Ready to accept connections" once every port listens (TLS included).
void RedisServer::wait_ready() {
  auto until = Clock::now() + std::chrono::seconds(15);
  for (;;) {
    if (log().find("Ready to accept connections") != std::string::npos) return;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("redis-server exited before it was ready:\n" + log());
    }
    if (Clock::now() > until) {
      stop();
      throw std::runtime_error("redis-server was not ready within 15 s:\n" + log());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::string RedisServer::log() const { return read_file(dir_.path + "/redis-" + std::to_string(runs_) + ".log"); }

void RedisServer::pause() {
  if (pid_ > 0) ::kill(pid_, SIGSTOP);
}

void RedisServer::resume() {
  if (pid_ > 0) ::kill(pid_, SIGCONT);
}

void RedisServer::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGCONT);  // a stopped process would never act on SIGTERM
  ::kill(pid_, SIGTERM);
  auto until = Clock::now() + std::chrono::seconds(10);
  int status = 0;
  while (::waitpid(pid_, &status, WNOHANG) != pid_) {
    if (Clock::now() > until) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  pid_ = -1;
}

void RedisServer::restart() {
  stop();
  start();
}

redis::Reply RedisServer::call(const std::vector<std::string>& args) const {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port_);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    throw std::runtime_error("redis_server: cannot connect to port " + std::to_string(port_));
  }
  std::string out;
  size_t replies = 1;
  if (!opts_.password.empty()) {
    redis::encode_command(out, {"AUTH", opts_.password});
    ++replies;
  }
  redis::encode_command(out, args);
  for (size_t off = 0; off < out.size();) {
    ssize_t n = ::send(fd, out.data() + off, out.size() - off, MSG_NOSIGNAL);
    if (n <= 0) {
      ::close(fd);
      throw std::runtime_error("redis_server: send failed");
    }
    off += static_cast<size_t>(n);
  }
  redis::ReplyParser parser;
  redis::Reply reply;
  while (replies > 0) {
    auto st = parser.next(&reply);
    if (st == redis::ReplyParser::Status::Reply) {
      --replies;
      continue;
    }
    if (st == redis::ReplyParser::Status::Failed) {
      ::close(fd);
      throw std::runtime_error("redis_server: bad reply: " + parser.error());
    }
    char buf[16384];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      ::close(fd);
      throw std::runtime_error("redis_server: connection closed before the reply");
    }
    parser.feed(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return reply;
}

}  // namespace keypool::testing
