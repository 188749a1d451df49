#include "support/process.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "base/strings.h"
#include "support/socket_stream.h"

namespace keypool::testing {
namespace {

using Clock = std::chrono::steady_clock;

// PATH plus the test's variables: keypool reads its config from the environment, so nothing
// from the developer's shell may leak in. Sanitizer options pass too: they only steer the
// sanitizer runtime of an instrumented build, never keypool.
std::vector<std::string> child_env(const std::map<std::string, std::string>& env) {
  std::map<std::string, std::string> all;
  for (const char* name : {"PATH", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TSAN_OPTIONS"})
    if (const char* v = std::getenv(name)) all[name] = v;
  for (const auto& [k, v] : env) all[k] = v;
  std::vector<std::string> out;
  for (const auto& [k, v] : all) out.push_back(k + "=" + v);
  return out;
}

std::vector<char*> c_strings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// Forks and execs. Everything the child needs is prepared before fork(): a threaded parent
// (the fake upstream's threads) allows only async-signal-safe calls between fork and exec.
// stdin_fd becomes the child's fd 0 (unless -1), out_fd its fds 1 and 2.
pid_t spawn(std::vector<std::string> argv, std::vector<std::string> env, const std::string& dir,
            int stdin_fd, int out_fd) {
  if (argv.empty()) throw std::invalid_argument("spawn: empty argv");
  auto cargv = c_strings(argv);
  auto cenv = c_strings(env);
  bool search = argv[0].find('/') == std::string::npos;
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    // The child dies with the test binary instead of outliving a crashed test. Note: the
    // signal follows the parent *thread*, so start processes from a thread that outlives them.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    if (stdin_fd >= 0) ::dup2(stdin_fd, 0);
    ::dup2(out_fd, 1);
    ::dup2(out_fd, 2);
    ::close_range(3, ~0U, 0);  // no test socket or pipe leaks into the child
    if (!dir.empty() && ::chdir(dir.c_str()) != 0) ::_exit(127);
    if (search)
      ::execvpe(cargv[0], cargv.data(), cenv.data());
    else
      ::execve(cargv[0], cargv.data(), cenv.data());
    const char msg[] = "support/process: exec failed\n";
    ssize_t ignored = ::write(2, msg, sizeof msg - 1);
    (void)ignored;
    ::_exit(127);
  }
  return pid;
}

int decode_status(int st) { return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st); }

std::optional<uint16_t> listening_port(std::string_view line) {
  if (!line.empty() && line.front() == '{') {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return std::nullopt;
    auto msg = j.find("msg"), port = j.find("port");
    if (msg == j.end() || *msg != "listening" || port == j.end() || !port->is_number_unsigned())
      return std::nullopt;
    return port->get<uint16_t>();
  }
  // Pretty: "<ts> <LEVEL> listening key=value ...".
  auto tokens = split(line, ' ');
  if (tokens.size() < 3 || tokens[2] != "listening") return std::nullopt;
  for (auto t : tokens)
    if (starts_with(t, "port="))
      if (auto n = parse_uint(t.substr(5)); n && *n > 0 && *n < 65536)
        return static_cast<uint16_t>(*n);
  return std::nullopt;
}

}  // namespace

TempDir::TempDir() {
  std::string tmpl = "/tmp/keypool-test-XXXXXX";
  if (!::mkdtemp(tmpl.data()))
    throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
  path = tmpl;
}

TempDir::~TempDir() {
  if (std::getenv("KEYPOOL_KEEP_TMP")) return;
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

std::string source_dir() {
  const char* d = std::getenv("KEYPOOL_SOURCE_DIR");
  return d && *d ? d : ".";
}

std::string keypool_bin() {
  const char* b = std::getenv("KEYPOOL_BIN");
  if (!b || !*b) throw std::runtime_error("KEYPOOL_BIN is not set: point it at the keypool binary");
  return b;
}

KeypoolProcess::KeypoolProcess(const std::vector<std::string>& args,
                               const std::map<std::string, std::string>& env,
                               const std::string& dir) {
  static std::atomic<int> counter{0};
  log_path_ = dir + "/keypool-" + std::to_string(++counter) + ".log";
  int log_fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) throw std::runtime_error("open " + log_path_ + ": " + std::strerror(errno));
  std::vector<std::string> argv{keypool_bin()};
  argv.insert(argv.end(), args.begin(), args.end());
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  try {
    pid_ = spawn(argv, child_env(env), dir, null_fd, log_fd);
  } catch (...) {
    ::close(log_fd);
    ::close(null_fd);
    throw;
  }
  ::close(log_fd);
  ::close(null_fd);
}

KeypoolProcess::~KeypoolProcess() {
  if (!reap(false)) kill9();
}

bool KeypoolProcess::reap(bool block) {
  if (status_ != -1) return true;
  int st = 0;
  pid_t r;
  do r = ::waitpid(pid_, &st, block ? 0 : WNOHANG);
  while (r < 0 && errno == EINTR);
  if (r == 0) return false;
  status_ = r == pid_ ? decode_status(st) : 255;  // 255: lost track of it (ECHILD)
  return true;
}

bool KeypoolProcess::running() { return !reap(false); }

uint16_t KeypoolProcess::wait_for_port(int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    bool exited = !running();  // checked before reading, so a last line is not missed
    std::istringstream log(log_contents());
    for (std::string line; std::getline(log, line);)
      if (auto port = listening_port(line)) return *port;
    if (exited)
      throw std::runtime_error("keypool exited (" + std::to_string(status_) +
                               ") before listening; log:\n" + log_contents());
    if (Clock::now() >= deadline)
      throw std::runtime_error("keypool did not log `listening` within " +
                               std::to_string(timeout_ms) + " ms; log:\n" + log_contents());
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

int KeypoolProcess::stop(int sig, int timeout_ms) {
  if (reap(false)) return status_;
  ::kill(pid_, sig);
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    if (reap(false)) return status_;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill9();
  return status_;
}

void KeypoolProcess::kill9() {
  if (reap(false)) return;
  ::kill(pid_, SIGKILL);
  reap(true);
}

std::string KeypoolProcess::log_contents() const {
  std::ifstream in(log_path_, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

CommandResult run_command(const std::vector<std::string>& argv,
                          const std::map<std::string, std::string>& env,
                          const std::string& stdin_data, int timeout_ms) {
  ignore_sigpipe();  // a command that exits without reading its input must not kill the test
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  if (::pipe2(out, O_CLOEXEC) != 0) {
    ::close(in[0]);
    ::close(in[1]);
    throw std::runtime_error("pipe2 failed");
  }
  pid_t pid;
  try {
    pid = spawn(argv, child_env(env), "", in[0], out[1]);
  } catch (...) {
    for (int fd : {in[0], in[1], out[0], out[1]}) ::close(fd);
    throw;
  }
  ::close(in[0]);
  ::close(out[1]);
  ::fcntl(in[1], F_SETFL, O_NONBLOCK);
  int stdin_fd = in[1];
  size_t fed = 0;
  if (stdin_data.empty()) ::close(std::exchange(stdin_fd, -1));

  CommandResult result;
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  // Feed stdin and drain output together so neither side can fill its pipe and stall.
  for (bool eof = false; !eof;) {
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      result.timed_out = true;
      ::kill(pid, SIGKILL);
      break;
    }
    pollfd p[2] = {{out[0], POLLIN, 0}, {stdin_fd, POLLOUT, 0}};
    if (::poll(p, stdin_fd >= 0 ? 2 : 1, static_cast<int>(left)) < 0 && errno != EINTR) break;
    if (p[0].revents) {
      char buf[8192];
      ssize_t n = ::read(out[0], buf, sizeof buf);
      if (n > 0)
        result.output.append(buf, static_cast<size_t>(n));
      else if (n == 0 || errno != EINTR)
        eof = true;
    }
    if (stdin_fd >= 0 && p[1].revents) {
      ssize_t n = ::write(stdin_fd, stdin_data.data() + fed, stdin_data.size() - fed);
      if (n > 0) fed += static_cast<size_t>(n);
      if ((n < 0 && errno != EAGAIN && errno != EINTR) || fed == stdin_data.size())
        ::close(std::exchange(stdin_fd, -1));  // EOF tells the command its input is complete
    }
  }
  if (stdin_fd >= 0) ::close(stdin_fd);
  ::close(out[0]);
  // Output can end before the process does (it may close stdout), so the wait is bounded too.
  int st = 0;
  for (;;) {
    pid_t r = ::waitpid(pid, &st, WNOHANG);
    if (r == pid || (r < 0 && errno != EINTR)) break;
    if (r == 0 && Clock::now() >= deadline && !result.timed_out) {
      result.timed_out = true;
      ::kill(pid, SIGKILL);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  result.exit_code = decode_status(st);
  return result;
}

}  // namespace keypool::testing
