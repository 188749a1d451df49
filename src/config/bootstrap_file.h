#pragma once
// The bootstrap file: tiers, keys and team tokens a sidecar is set up from (config
// `bootstrap_file`, env BOOTSTRAP_FILE), parsed once into an immutable struct. Secrets are
// never written in it: a key or token value comes from an environment variable
// (`value_env`) or a file (`value_file`, e.g. a Kubernetes Secret mount), and a token may
// be given as its SHA-256 (`sha256`) so the app and the sidecar can share one Secret.
// Applying it to the store is the provision room's job; this one only reads and checks.
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/secret.h"
#include "config/config.h"

namespace keypool::config {

struct BootstrapTier {
  std::string name;
  std::map<std::string, int64_t> features;  // feature -> rpm per key
  int64_t max_wait_ms = 0;
  std::string label;  // "tiers[0] (default)", for errors
};

struct BootstrapKey {
  std::string name, tier, service;  // service "" = untagged
  Secret value;
  int64_t max_concurrent = 0;
  std::string label;
};

struct BootstrapToken {
  std::string name, tier;
  std::vector<std::string> services;  // empty = every service
  int64_t rpm = 0;
  bool allow_key_handout = false;
  std::string hash_hex;  // lower-case SHA-256 of the token
  std::string prefix;    // first 8 characters when the token itself was given, else ""
  std::string label;
};

struct Bootstrap {
  std::string file;
  std::vector<BootstrapTier> tiers;
  std::vector<BootstrapKey> keys;
  std::vector<BootstrapToken> tokens;
  bool prune = false;  // remove what the file no longer lists (only what it created)
};

// Reads a whole file; nullopt when it cannot. Injectable for tests.
using ReadFile = std::function<std::optional<std::string>(const std::string&)>;

// Errors (ErrorCode::Invalid) are one line naming the file, the object and the field, e.g.
//   "/etc/keypool/bootstrap.yaml: keys[1] (openai-2): value_env: OPENAI_KEY_2 is not set"
// and never contain a secret.
Result<Bootstrap> parse_bootstrap(std::string_view text, const std::string& file, const GetEnv& getenv,
                                  const ReadFile& read);
Result<Bootstrap> load_bootstrap(const std::string& file, const GetEnv& getenv);

}  // namespace keypool::config
