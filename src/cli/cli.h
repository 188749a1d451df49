#pragma once
// The command line: `keypool [serve]` runs the server (main.cpp); every other command is
// run here: check-config, migrate, rotate-encryption-key, version, and the admin
// subcommands that call a running keypool's admin API.
#include <string>
#include <vector>

#include "base/result.h"

namespace keypool::cli {

struct Options {
  std::string command = "serve";
  std::vector<std::string> args;  // what follows the command
  std::string config_path = "config/keypool.yaml";
  bool config_explicit = false;   // --config given: the file must exist
  // Admin subcommands only: where the running keypool is, and raw JSON instead of tables.
  std::string url;                 // --url; empty means KEYPOOL_URL, else http://127.0.0.1:8080
  bool json = false;               // --json
};

// Exit codes shared by every command.
constexpr int kOk = 0;
constexpr int kServerError = 1;  // the server or the store said no
constexpr int kUsage = 2;        // bad arguments or configuration

Result<Options> parse(int argc, char** argv);
int run(const Options& opts);

}  // namespace keypool::cli
