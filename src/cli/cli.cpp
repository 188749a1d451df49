#include "cli/cli.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "cli/admin_commands.h"
#include "config/bootstrap_file.h"
#include "config/config.h"
#include "config/services.h"
#include "crypto/crypto.h"
#include "store/store.h"

namespace keypool::cli {
namespace {

const char* kUsageText =
    "usage: keypool [--config FILE] [COMMAND]\n"
    "       keypool [--url URL] [--json] tiers|keys|tokens|services SUBCOMMAND ...\n"
    "commands:\n"
    "  serve                   run the proxy (default)\n"
    "  check-config            validate the config, services.d and the bootstrap file; exit 2\n"
    "                          naming every problem\n"
    "  migrate                 create or upgrade the database, then exit\n"
    "  rotate-encryption-key   re-encrypt every key: old key in ENCRYPTION_KEY, new in NEW_ENCRYPTION_KEY\n"
    "  version                 print the version\n"
    "  help                    this text\n";

config::GetEnv real_env() {
  return [](const char* n) { return std::getenv(n); };
}

// Names every problem in one run, not just the first, so that one edit fixes them all: a
// bad environment variable does not stop the check of services.d (the directory the config
// names, or the default when that setting is what is wrong).
int check_config(const Options& o) {
  auto report = config::inspect_config(o.config_path, o.config_explicit, real_env());
  for (const auto& p : report.problems) std::fprintf(stderr, "%s\n", p.c_str());
  const config::Config& cfg = report.config;
  size_t problems = report.problems.size();
  auto services = config::load_services_dir(cfg.services_dir);
  for (const auto& e : services.errors) std::fprintf(stderr, "%s\n", e.c_str());
  problems += services.errors.size();
  // The bootstrap file is read as serve reads it (values included), but nothing is applied:
  // a tier or key it names that the store lacks is found only by serve.
  if (!cfg.bootstrap_file.empty()) {
    if (auto b = config::load_bootstrap(cfg.bootstrap_file, real_env()); !b) {
      std::fprintf(stderr, "%s\n", b.error().message.c_str());
      ++problems;
    }
  }
  if (problems) return kUsage;
  std::printf("config ok: %s, %zu services from %s%s%s\n", cfg.source.c_str(), services.services.size(),
              cfg.services_dir.c_str(), cfg.bootstrap_file.empty() ? "" : ", bootstrap file ",
              cfg.bootstrap_file.c_str());
  return kOk;
}

Result<std::unique_ptr<store::Store>> open_store(const config::Config& cfg, const crypto::MasterKey& key) {
  std::error_code ec;
  auto parent = std::filesystem::path(cfg.db_path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  return store::Store::open(cfg.db_path, key);
}

int migrate(const Options& o) {
  auto cfg = config::load_config(o.config_path, o.config_explicit, real_env());
  if (!cfg) {
    std::fprintf(stderr, "keypool: %s\n", cfg.error().message.c_str());
    return kUsage;
  }
  auto key = crypto::MasterKey::from_hex(cfg->encryption_key_hex.view());
  if (!key) return kUsage;
  auto st = open_store(*cfg, *key);
  if (!st) {
    std::fprintf(stderr, "keypool: %s\n", st.error().message.c_str());
    return kServerError;
  }
  std::printf("database %s at schema version %d\n", cfg->db_path.c_str(), (*st)->schema_version());
  return kOk;
}

int rotate_encryption_key(const Options& o) {
  auto cfg = config::load_config(o.config_path, o.config_explicit, real_env());
  if (!cfg) {
    std::fprintf(stderr, "keypool: %s\n", cfg.error().message.c_str());
    return kUsage;
  }
  const char* next = std::getenv("NEW_ENCRYPTION_KEY");
  if (!next) {
    std::fprintf(stderr, "keypool: env: NEW_ENCRYPTION_KEY: required (64 hex characters)\n");
    return kUsage;
  }
  auto old_key = crypto::MasterKey::from_hex(cfg->encryption_key_hex.view());
  auto new_key = crypto::MasterKey::from_hex(next);
  if (!old_key || !new_key) {
    std::fprintf(stderr, "keypool: env: NEW_ENCRYPTION_KEY: must be 64 hex characters (32 bytes)\n");
    return kUsage;
  }
  auto st = open_store(*cfg, *old_key);
  if (!st) {
    std::fprintf(stderr, "keypool: %s\n", st.error().message.c_str());
    return kServerError;
  }
  auto n = (*st)->reencrypt_all(*old_key, *new_key);
  if (!n) {
    std::fprintf(stderr, "keypool: %s\n", n.error().message.c_str());
    return kServerError;
  }
  std::printf("re-encrypted %lld keys; start keypool with the new ENCRYPTION_KEY\n", static_cast<long long>(*n));
  return kOk;
}

}  // namespace

Result<Options> parse(int argc, char** argv) {
  Options o;
  bool have_command = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--config" || a == "-c") {
      if (i + 1 >= argc) return make_error(ErrorCode::BadRequest, "--config needs a file");
      o.config_path = argv[++i];
      o.config_explicit = true;
    } else if (a.rfind("--config=", 0) == 0) {
      o.config_path = a.substr(9);
      o.config_explicit = true;
    } else if (a == "--url") {
      // Global flags of the admin subcommands, taken wherever they appear so that a value
      // before the command is never mistaken for the command.
      if (i + 1 >= argc) return make_error(ErrorCode::BadRequest, "--url needs a URL");
      o.url = argv[++i];
    } else if (a.rfind("--url=", 0) == 0) {
      o.url = a.substr(6);
    } else if (a == "--json") {
      o.json = true;
    } else if (!have_command && (a == "-h" || a == "--help")) {
      o.command = "help";
      have_command = true;
    } else if (!have_command && (a == "--version" || a == "-V")) {
      o.command = "version";
      have_command = true;
    } else if (!have_command && !a.empty() && a[0] != '-') {
      o.command = a;
      have_command = true;
    } else {
      o.args.push_back(a);
    }
  }
  if (const char* env = std::getenv("KEYPOOL_CONFIG"); env && !o.config_explicit) {
    o.config_path = env;
    o.config_explicit = true;
  }
  return o;
}

int run(const Options& o) {
  if (o.command == "version") {
    std::printf("keypool %s\n", KEYPOOL_VERSION);
    return kOk;
  }
  if (o.command == "help") {
    std::fputs(kUsageText, stdout);
    std::fputs(kAdminUsage, stdout);
    return kOk;
  }
  if (is_admin_command(o.command)) return run_admin(o);
  if (o.command == "check-config") return check_config(o);
  if (o.command == "migrate") return migrate(o);
  if (o.command == "rotate-encryption-key") return rotate_encryption_key(o);
  std::fprintf(stderr, "keypool: unknown command '%s'\n%s%s", o.command.c_str(), kUsageText, kAdminUsage);
  return kUsage;
}

}  // namespace keypool::cli
