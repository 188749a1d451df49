#pragma once
// Runs the real keypool binary (path from KEYPOOL_BIN) for integration tests: a hermetic
// environment (PATH plus what the test gives), its own working directory, output to a log
// file that the test can read, and a bounded stop. Plus scratch directories and one-shot
// commands for CLI tests.
#include <sys/types.h>

#include <csignal>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace keypool::testing {

// A fresh directory under /tmp, removed with everything in it on destruction (kept when
// KEYPOOL_KEEP_TMP is set, to look at after a failure).
struct TempDir {
  std::string path;
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

std::string source_dir();   // KEYPOOL_SOURCE_DIR or "."
std::string keypool_bin();  // KEYPOOL_BIN; throws when unset

class KeypoolProcess {
 public:
  // Starts KEYPOOL_BIN with args in dir; stdout and stderr go to dir/keypool-<n>.log
  // (a new n per process, so a restart in the same dir never reads the old run's log).
  KeypoolProcess(const std::vector<std::string>& args,
                 const std::map<std::string, std::string>& env, const std::string& dir);
  ~KeypoolProcess();
  KeypoolProcess(const KeypoolProcess&) = delete;
  KeypoolProcess& operator=(const KeypoolProcess&) = delete;

  // Waits for the start-up log line (JSON `"msg":"listening"` with `"port":N`, or pretty
  // `listening ... port=N`) and returns N. Throws, with the log, on timeout or early exit.
  uint16_t wait_for_port(int timeout_ms = 10000);
  // Sends sig and waits; after timeout_ms it sends SIGKILL. Returns the exit code, or
  // 128 + signal when killed by one. Returns the same again when called twice.
  int stop(int sig = SIGTERM, int timeout_ms = 10000);
  void kill9();
  bool running();
  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }
  std::string log_contents() const;

 private:
  bool reap(bool block);  // true once the child is gone; sets status_

  pid_t pid_ = -1;
  int status_ = -1;  // exit code or 128 + signal once reaped
  std::string log_path_;
};

struct CommandResult {
  int exit_code = -1;  // or 128 + signal; 128 + SIGKILL after a timeout
  std::string output;  // stdout and stderr interleaved
  bool timed_out = false;
};
// Runs argv (argv[0] searched in PATH when it has no '/') with PATH plus env, feeding
// stdin_data; kills it after timeout_ms.
CommandResult run_command(const std::vector<std::string>& argv,
                          const std::map<std::string, std::string>& env,
                          const std::string& stdin_data = "", int timeout_ms = 30000);

}  // namespace keypool::testing
