// fuzz_service_yaml: bytes -> config::service_from_yaml (a services.d file) and the same
// bytes as config/keypool.yaml through config::load_config.
//
// load_config reads a path, so the bytes go into a memfd and the path is /proc/self/fd/N
// (no disk I/O, nothing left behind). The environment is injected: a valid key and token,
// so the YAML decides the outcome. Checks: every accepted service satisfies
// fuzz::check_service (including the JSON round trip); config errors are one line, start
// with the file path, and never contain a secret's value.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <sstream>

#include "config/config.h"
#include "config/services.h"
#include "fuzz_check.h"
#include "service_check.h"

namespace {

using namespace keypool;

constexpr const char* kEncryptionKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
constexpr const char* kAdminToken = "fuzz-admin-token-5c1e2a7b";

const char* fake_getenv(const char* name) {
  if (std::strcmp(name, "ENCRYPTION_KEY") == 0) return kEncryptionKey;
  if (std::strcmp(name, "ADMIN_TOKEN") == 0) return kAdminToken;
  return nullptr;
}

// One memfd for the whole run, rewritten for each input.
const std::string& config_path(std::string_view text) {
  static int fd = memfd_create("keypool-fuzz-config", 0);
  static const std::string path = "/proc/self/fd/" + std::to_string(fd);
  FUZZ_CHECK(fd >= 0, "memfd_create");
  FUZZ_CHECK(ftruncate(fd, 0) == 0, "ftruncate");
  FUZZ_CHECK(pwrite(fd, text.data(), text.size(), 0) == static_cast<ssize_t>(text.size()), "pwrite");
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);

  auto svc = config::service_from_yaml(text, "services.d/fuzz.yaml");
  if (svc) {
    FUZZ_CHECK(svc->source == "services.d/fuzz.yaml", "source kept");
    fuzz::check_service(*svc, /*from_json=*/false);
  } else {
    const std::string& m = svc.error().message;
    FUZZ_CHECK(m.rfind("services.d/fuzz.yaml: ", 0) == 0, "error names the file");
    FUZZ_CHECK(m.find('\n') == std::string::npos, "error is one line");
  }

  const std::string& path = config_path(text);
  auto cfg = config::load_config(path, /*path_required=*/true, fake_getenv);
  bool input_has_secret = text.find(kAdminToken) != std::string_view::npos ||
                          text.find(kEncryptionKey) != std::string_view::npos;
  if (!cfg) {
    const std::string& m = cfg.error().message;
    if (m.find('\n') != std::string::npos) std::fprintf(stderr, "config error: [%s]\n", m.c_str());
    FUZZ_CHECK(m.rfind(path + ": ", 0) == 0 || m.rfind("env: ", 0) == 0, "error names the source");
    // yaml-cpp's messages quote the offending byte raw; load_yaml_document escapes it.
    FUZZ_CHECK(m.find('\n') == std::string::npos, "error is one line");
    if (!input_has_secret) {
      FUZZ_CHECK(m.find(kAdminToken) == std::string::npos, "error never shows ADMIN_TOKEN");
      FUZZ_CHECK(m.find(kEncryptionKey) == std::string::npos, "error never shows ENCRYPTION_KEY");
    }
  } else {
    FUZZ_CHECK(cfg->port >= 0 && cfg->port <= 65535, "port range");
    FUZZ_CHECK(cfg->workers >= 1, "at least one worker");
    FUZZ_CHECK(cfg->source == path, "source kept");
  }
  return 0;
}
