#include "config/bootstrap_file.h"

#include <doctest/doctest.h>

#include <map>
#include <string>

#include "crypto/crypto.h"

namespace cfg = keypool::config;

namespace {

const std::map<std::string, std::string> kEnv = {{"OPENAI_KEY_1", "sk-env-value-0001"},
                                                 {"TEAM_A_TOKEN", "team-a-token-0123456789"}};
const std::map<std::string, std::string> kFiles = {{"/run/secrets/openai-2", "sk-file-value-0002\n"},
                                                   {"/run/secrets/empty", "\n"}};

cfg::GetEnv env() {
  return [](const char* n) -> const char* {
    auto it = kEnv.find(n);
    return it == kEnv.end() ? nullptr : it->second.c_str();
  };
}

cfg::ReadFile files() {
  return [](const std::string& p) -> std::optional<std::string> {
    auto it = kFiles.find(p);
    if (it == kFiles.end()) return std::nullopt;
    return it->second;
  };
}

keypool::Result<cfg::Bootstrap> parse(const std::string& text) {
  return cfg::parse_bootstrap(text, "boot.yaml", env(), files());
}

}  // namespace

TEST_CASE("bootstrap file: the issue's example parses, values from env and files") {
  const std::string sha(64, 'A');
  auto b = parse(
      "tiers:\n"
      "  - {name: default, features: {openai: 60}, max_wait_ms: 0}\n"
      "keys:\n"
      "  - {name: openai-1, tier: default, service: openai, value_env: OPENAI_KEY_1}\n"
      "  - {name: openai-2, tier: default, service: openai, value_file: /run/secrets/openai-2, max_concurrent: 4}\n"
      "tokens:\n"
      "  - {name: team-a, tier: default, services: [openai], value_env: TEAM_A_TOKEN, rpm: 30}\n"
      "  - {name: team-b, tier: default, allow_key_handout: true, sha256: \"" +
      sha +
      "\"}\n"
      "prune: true\n");
  REQUIRE_MESSAGE(b.ok(), (b.ok() ? "" : b.error().message));
  CHECK(b->file == "boot.yaml");
  CHECK(b->prune);
  REQUIRE(b->tiers.size() == 1);
  CHECK(b->tiers[0].features.at("openai") == 60);
  REQUIRE(b->keys.size() == 2);
  CHECK(b->keys[0].value.view() == "sk-env-value-0001");
  CHECK(b->keys[1].value.view() == "sk-file-value-0002");  // the newline is not part of it
  CHECK(b->keys[1].max_concurrent == 4);
  REQUIRE(b->tokens.size() == 2);
  CHECK(b->tokens[0].hash_hex == keypool::crypto::sha256_hex("team-a-token-0123456789"));
  CHECK(b->tokens[0].prefix == "team-a-t");
  CHECK(b->tokens[0].services == std::vector<std::string>{"openai"});
  CHECK(b->tokens[0].rpm == 30);
  CHECK_FALSE(b->tokens[0].allow_key_handout);
  CHECK(b->tokens[1].hash_hex == std::string(64, 'a'));  // lower-cased
  CHECK(b->tokens[1].prefix.empty());
  CHECK(b->tokens[1].allow_key_handout);
  CHECK(parse("").ok());  // an empty file sets up nothing
}

TEST_CASE("bootstrap file: each refusal names the file, the object and the field") {
  struct Case {
    std::string yaml, message;
  };
  const Case cases[] = {
      {"colour: red\n", "boot.yaml: colour: unknown field (expected tiers, keys, tokens, prune)"},
      {"prune: yes\n", "boot.yaml: prune: must be true or false"},
      {"tiers: {a: 1}\n", "boot.yaml: tiers: must be a list"},
      {"tiers:\n  - {features: {a: 1}}\n", "boot.yaml: tiers[0]: name: is required"},
      {"tiers:\n  - {name: 'a b', features: {a: 1}}\n", "boot.yaml: tiers[0] (a b): name: use 1-64 of A-Z a-z 0-9 _ . -"},
      {"tiers:\n  - {name: t, features: {}}\n",
       "boot.yaml: tiers[0] (t): features: must be a non-empty mapping of feature -> requests per minute"},
      {"tiers:\n  - {name: t, features: {a: 0}}\n", "boot.yaml: tiers[0] (t): features.a: must be an integer from 1 to 1000000"},
      {"tiers:\n  - {name: t, features: {a: 1}, max_wait_ms: 60001}\n",
       "boot.yaml: tiers[0] (t): max_wait_ms: must be an integer from 0 to 60000"},
      {"keys:\n  - {name: k, tier: t, value: sk-inline-1}\n",
       "boot.yaml: keys[0] (k): value: secrets are never written in this file; use value_env or value_file"},
      {"keys:\n  - {name: k, tier: t}\n", "boot.yaml: keys[0] (k): value_env: is required (or value_file)"},
      {"keys:\n  - {name: k, tier: t, value_env: NOPE}\n",
       "boot.yaml: keys[0] (k): value_env: environment variable 'NOPE' is not set or empty"},
      {"keys:\n  - {name: k, tier: t, value_env: OPENAI_KEY_1, value_file: /run/secrets/openai-2}\n",
       "boot.yaml: keys[0] (k): value_env: give value_env or value_file, not both"},
      {"keys:\n  - {name: k, tier: t, value_file: /missing}\n", "boot.yaml: keys[0] (k): value_file: cannot read '/missing'"},
      {"keys:\n  - {name: k, tier: t, value_file: /run/secrets/empty}\n",
       "boot.yaml: keys[0] (k): value_file: '/run/secrets/empty' is empty"},
      {"keys:\n  - {name: k, tier: t, service: Open AI, value_env: OPENAI_KEY_1}\n",
       "boot.yaml: keys[0] (k): service: not a valid service name"},
      {"keys:\n  - {name: k, value_env: OPENAI_KEY_1}\n", "boot.yaml: keys[0] (k): tier: is required"},
      {"tokens:\n  - {name: t, tier: t, sha256: abc}\n", "boot.yaml: tokens[0] (t): sha256: must be 64 hex characters"},
      {"tokens:\n  - {name: t, tier: t}\n", "boot.yaml: tokens[0] (t): value_env: is required (or value_file)"},
      {"tokens:\n  - {name: t, tier: t, value_env: OPENAI_KEY_1, sha256: " + std::string(64, 'a') + "}\n",
       "boot.yaml: tokens[0] (t): sha256: give sha256 or value_env/value_file, not both"},
      {"tokens:\n  - {name: t, tier: t, services: openai, value_env: TEAM_A_TOKEN}\n",
       "boot.yaml: tokens[0] (t): services: must be a list of service names"},
      {"tokens:\n  - {name: t, tier: t, allow_key_handout: 1, value_env: TEAM_A_TOKEN}\n",
       "boot.yaml: tokens[0] (t): allow_key_handout: must be true or false"},
      {"keys:\n  - {name: k, tier: t, value_env: OPENAI_KEY_1}\n  - {name: k, tier: t, value_file: /run/secrets/openai-2}\n",
       "boot.yaml: keys[1] (k): name: 'k' is listed twice"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.yaml);
    auto b = parse(c.yaml);
    REQUIRE_FALSE(b.ok());
    CHECK(b.error().code == keypool::ErrorCode::Invalid);
    CHECK(b.error().message == c.message);
    CHECK(b.error().message.find("sk-env-value") == std::string::npos);
    CHECK(b.error().message.find("sk-inline") == std::string::npos);
  }
}

TEST_CASE("bootstrap file: a short team token by value is refused (its hash alone would be guessable)") {
  setenv("KP_SHORT_TOKEN_TEST", "short", 1);
  auto b = cfg::parse_bootstrap("tokens:\n  - {name: t, tier: t, value_env: KP_SHORT_TOKEN_TEST}\n", "boot.yaml",
                                [](const char* n) { return std::getenv(n); }, files());
  REQUIRE_FALSE(b.ok());
  CHECK(b.error().message == "boot.yaml: tokens[0] (t): value_env: a team token must be at least 16 characters");
}
