// The admin subcommands end to end: the real binary as a CLI against the real binary as a
// server, checking output, exit codes, and that a key value never shows up anywhere.
#include <doctest/doctest.h>

#include "fixture.h"

using namespace keypool::testing;
using nlohmann::json;

namespace {

// `keypool ARGS...` pointed at kp with the admin token in the environment.
struct Cli {
  Keypool& kp;
  std::map<std::string, std::string> env() const {
    return {{"ADMIN_TOKEN", kAdminToken},
            {"KEYPOOL_URL", "http://127.0.0.1:" + std::to_string(kp.port)}};
  }
  CommandResult operator()(std::vector<std::string> args,
                           const std::string& stdin_data = "") const {
    return with_env(std::move(args), env(), stdin_data);
  }
  static CommandResult with_env(std::vector<std::string> args,
                                const std::map<std::string, std::string>& env,
                                const std::string& stdin_data = "") {
    args.insert(args.begin(), keypool_bin());
    return run_command(args, env, stdin_data, 20000);
  }
};

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// The row of a table whose first cell is first.
std::string row_of(const std::string& table, const std::string& first) {
  size_t pos = 0;
  while (pos < table.size()) {
    size_t end = table.find('\n', pos);
    if (end == std::string::npos) end = table.size();
    std::string line = table.substr(pos, end - pos);
    if (line.rfind(first + " ", 0) == 0) return line;
    pos = end + 1;
  }
  return "";
}

}  // namespace

TEST_CASE("cli: tiers, keys and tokens through a full admin scenario") {
  Keypool kp;
  Cli cli{kp};
  const std::string value = "sk-clitest-7f3a9b2c4d5e6f70";
  kp.remember_secret(value);  // it goes in through the CLI, not kp.admin(): scan logs for it

  auto tier = cli({"tiers", "add", "free", "--feature", "chat=60", "--feature", "embed=100",
                   "--max-wait-ms", "250"});
  INFO(tier.output);
  REQUIRE(tier.exit_code == 0);
  auto tiers = cli({"tiers", "list"});
  REQUIRE(tiers.exit_code == 0);
  CHECK(contains(tiers.output, "NAME"));
  CHECK(contains(row_of(tiers.output, "free"), "chat=60,embed=100"));
  CHECK(contains(row_of(tiers.output, "free"), "250"));

  // The value goes in on stdin and never comes back out.
  auto added = cli({"keys", "add", "--name", "primary", "--tier", "free", "--max-concurrent", "4"},
                   value + "\n");
  INFO(added.output);
  REQUIRE(added.exit_code == 0);
  CHECK_FALSE(contains(added.output, value));
  auto key_id = kp.admin("GET", "/admin/keys").json()["keys"][0]["id"].get<int64_t>();
  std::string id = std::to_string(key_id);

  auto listed = cli({"keys", "list"});
  REQUIRE(listed.exit_code == 0);
  std::string row = row_of(listed.output, id);
  CHECK(contains(row, "primary"));
  CHECK(contains(row, "sk-...6f70"));  // the hint
  CHECK(contains(row, "active"));
  CHECK_FALSE(contains(listed.output, value));

  auto disabled = cli({"keys", "disable", id, "--reason", "billing hold"});
  REQUIRE(disabled.exit_code == 0);
  CHECK(contains(row_of(disabled.output, id), "disabled"));
  CHECK(contains(row_of(cli({"keys", "list"}).output, id), "billing hold"));
  CHECK(kp.admin("GET", "/admin/keys").json()["keys"][0]["enabled"] == false);
  auto enabled = cli({"keys", "enable", id});
  REQUIRE(enabled.exit_code == 0);
  CHECK(kp.admin("GET", "/admin/keys").json()["keys"][0]["enabled"] == true);

  auto created = cli({"tokens", "create", "--name", "ci", "--tier", "free", "--rpm", "30"});
  INFO(created.output);
  REQUIRE(created.exit_code == 0);
  auto tok = kp.admin("GET", "/admin/tokens").json()["tokens"][0];
  std::string tid = std::to_string(tok["id"].get<int64_t>());
  CHECK(contains(created.output, "token: kp_"));  // shown once, at creation
  {
    size_t at = created.output.find("token: ");
    REQUIRE(at != std::string::npos);
    size_t end = created.output.find_first_of(" \r\n", at + 7);
    kp.remember_secret(created.output.substr(at + 7, end == std::string::npos ? std::string::npos : end - at - 7));
  }
  auto tokens = cli({"tokens", "list"});
  REQUIRE(tokens.exit_code == 0);
  CHECK(contains(row_of(tokens.output, tid), "ci"));
  CHECK(contains(row_of(tokens.output, tid), "active"));
  CHECK_FALSE(contains(tokens.output, "token: kp_"));
  REQUIRE(cli({"tokens", "revoke", tid}).exit_code == 0);
  CHECK(contains(row_of(cli({"tokens", "list"}).output, tid), "revoked"));
  auto again = cli({"tokens", "revoke", tid});
  CHECK(again.exit_code == 1);  // the server's no, with its message
  CHECK(contains(again.output, "not found"));

  // --json prints the server's answer as it came, so scripts can parse it.
  auto raw = cli({"--json", "keys", "list"});
  REQUIRE(raw.exit_code == 0);
  json parsed = json::parse(raw.output);
  REQUIRE(parsed["keys"].size() == 1);
  CHECK(parsed["keys"][0]["hint"] == "sk-...6f70");
  auto raw_tiers = cli({"tiers", "list", "--json"});
  REQUIRE(raw_tiers.exit_code == 0);
  CHECK(json::parse(raw_tiers.output)["tiers"][0]["features"]["chat"] == 60);

  // Rotation reads the new value from a file; neither value is ever printed or logged.
  const std::string next = "sk-clitest-rotated-00aa11bb";
  kp.remember_secret(next);
  std::ofstream(kp.dir.path + "/next-key") << next << "\n";
  auto rotated = cli({"keys", "rotate", id, "--value-file", kp.dir.path + "/next-key"});
  REQUIRE(rotated.exit_code == 0);
  CHECK(contains(row_of(rotated.output, id), "sk-...11bb"));
  CHECK_FALSE(contains(rotated.output, next));

  std::string log = kp.proc->log_contents();
  CHECK_FALSE(contains(log, value));
  CHECK_FALSE(contains(log, next));

  CHECK(cli({"keys", "rm", id}).exit_code == 0);
  CHECK(cli({"tiers", "rm", "free"}).exit_code == 0);
  CHECK(kp.admin("GET", "/admin/tiers").json()["tiers"].empty());
}

TEST_CASE("cli: services add from YAML on stdin, list and rm") {
  Keypool kp;
  Cli cli{kp};
  auto added = cli({"services", "add"},
                   "name: groqish\nbase_url: https://api.groq.com/openai\nauth_scheme: bearer\n");
  INFO(added.output);
  REQUIRE(added.exit_code == 0);
  auto list = cli({"services", "list"});
  REQUIRE(list.exit_code == 0);
  CHECK(contains(row_of(list.output, "groqish"), "https://api.groq.com/openai"));
  CHECK(contains(row_of(list.output, "groqish"), "admin"));
  auto json_add =
      cli({"services", "add"},
          R"({"name":"other","base_url":"http://127.0.0.1:9","auth_scheme":"x-api-key"})");
  INFO(json_add.output);
  CHECK(json_add.exit_code == 0);
  CHECK(cli({"services", "rm", "groqish"}).exit_code == 0);
  auto gone = cli({"services", "rm", "groqish"});
  CHECK(gone.exit_code == 1);
  CHECK(contains(gone.output, "no service named"));
}

TEST_CASE("cli: usage errors exit 2 and an unreachable server exits 1") {
  Keypool kp;
  Cli cli{kp};
  std::vector<std::vector<std::string>> usage_errors = {
      {"tiers"},                                                          // no subcommand
      {"tiers", "frob"},                                                  // unknown subcommand
      {"tiers", "add", "free"},                                           // no --feature
      {"tiers", "add", "free", "--feature", "chat"},                      // no =RPM
      {"tiers", "list", "--bogus"},                                       // unknown flag
      {"keys", "disable", "abc"},                                         // not an id
      {"tokens", "create", "--name", "x"},                                // no --tier
      {"tokens", "create", "--name", "x", "--tier", "t", "--rpm", "lots"},
      {"services", "add", "--file", "/nonexistent/svc.yaml"},
      {"--url"},
      {"frobnicate"},
  };
  for (const auto& args : usage_errors) {
    auto r = cli(args);
    INFO(args[0] << " " << (args.size() > 1 ? args[1] : "") << ": " << r.output);
    CHECK(r.exit_code == 2);
  }
  // These would also fail on the empty stdin alone: give them a valid value so that only
  // the flag at fault can make them fail, and check the message names it.
  struct FlagCase {
    std::vector<std::string> args;
    std::string names;
  };
  const FlagCase flag_errors[] = {
      {{"keys", "add", "--name", "k", "--tier"}, "--tier"},                          // missing value
      {{"keys", "add", "--tier", "free"}, "--name"},                                 // no --name
      {{"keys", "add", "--name", "k", "--tier", "free", "--key", "sk-x"}, "--key"},  // no value flag exists
  };
  for (const auto& c : flag_errors) {
    auto r = cli(c.args, "sk-valid-value-123\n");
    INFO(c.names << ": " << r.output);
    CHECK(r.exit_code == 2);
    CHECK(contains(r.output, c.names));
  }
  // A key value on stdin is required; an empty stdin is a usage error, not an empty key.
  CHECK(cli({"keys", "add", "--name", "k", "--tier", "free"}).exit_code == 2);

  auto no_token = Cli::with_env({"tiers", "list"},
                                {{"KEYPOOL_URL", "http://127.0.0.1:" + std::to_string(kp.port)}});
  CHECK(no_token.exit_code == 2);
  CHECK(contains(no_token.output, "ADMIN_TOKEN"));

  // A wrong token reaches the server, which refuses: exit 1 with its message.
  auto wrong = Cli::with_env({"tiers", "list"},
                             {{"ADMIN_TOKEN", "adm_wrong"},
                              {"KEYPOOL_URL", "http://127.0.0.1:" + std::to_string(kp.port)}});
  CHECK(wrong.exit_code == 1);
  CHECK(contains(wrong.output, "unauthorized"));

  // Port 1 on loopback has nobody listening.
  auto unreachable = cli({"--url", "http://127.0.0.1:1", "tiers", "list"});
  CHECK(unreachable.exit_code == 1);
  CHECK(contains(unreachable.output, "cannot connect"));
  CHECK(cli({"tiers", "list", "--url=https://127.0.0.1:1"}).exit_code == 2);
  // Credentials in the URL are refused, and the message must not hand them back to a log.
  auto userinfo = cli({"--url", "http://admin:hunter2@127.0.0.1:1", "tiers", "list"});
  CHECK(userinfo.exit_code == 2);
  CHECK(contains(userinfo.output, "must not contain user info"));
  CHECK_FALSE(contains(userinfo.output, "hunter2"));

  auto help = cli({"help"});
  CHECK(help.exit_code == 0);
  for (const char* cmd :
       {"tiers add", "keys add", "keys rotate", "tokens create", "tokens revoke", "services add"})
    CHECK(contains(help.output, cmd));
  CHECK(cli({"keys", "--help"}).exit_code == 0);
}

TEST_CASE("cli: check-config names every problem in one run, a bad environment and a broken services.d alike") {
  TempDir dir;
  const std::string services = dir.path + "/services.d";
  std::system(("mkdir -p " + services).c_str());
  std::ofstream(services + "/good.yaml") << "name: good\nbase_url: https://api.example.com\nauth_scheme: bearer\n";
  std::ofstream(services + "/broken.yaml") << "name: broken\nbase_url: ftp://api.example.com\nauth_scheme: bearer\n";
  std::map<std::string, std::string> env{{"ENCRYPTION_KEY", kEncryptionKey},
                                         {"ADMIN_TOKEN", kAdminToken},
                                         {"SERVICES_DIR", services},
                                         {"LOG_LEVEL", "chatty"}};
  const std::vector<std::string> args{"--config", source_dir() + "/config/keypool.yaml", "check-config"};

  auto both = Cli::with_env(args, env);
  INFO(both.output);
  CHECK(both.exit_code == 2);
  CHECK(contains(both.output, "LOG_LEVEL"));
  CHECK(contains(both.output, "broken.yaml"));
  CHECK_FALSE(contains(both.output, "good.yaml"));
  CHECK_FALSE(contains(both.output, kEncryptionKey));

  env["LOG_LEVEL"] = "info";
  auto services_only = Cli::with_env(args, env);
  INFO(services_only.output);
  CHECK(services_only.exit_code == 2);
  CHECK_FALSE(contains(services_only.output, "LOG_LEVEL"));
  CHECK(contains(services_only.output, "broken.yaml"));

  std::remove((services + "/broken.yaml").c_str());
  auto fine = Cli::with_env(args, env);
  INFO(fine.output);
  CHECK(fine.exit_code == 0);
  CHECK(contains(fine.output, "config ok"));
  CHECK(contains(fine.output, "1 services"));
}

TEST_CASE("cli: tiers update, tokens update and tokens rotate") {
  Keypool kp;
  Cli cli{kp};
  REQUIRE(cli({"tiers", "add", "free", "--feature", "chat=60"}).exit_code == 0);
  auto up = cli({"tiers", "update", "free", "--feature", "chat=90", "--feature", "embed=5", "--max-wait-ms", "40"});
  INFO(up.output);
  REQUIRE(up.exit_code == 0);
  CHECK(contains(row_of(up.output, "free"), "chat=90,embed=5"));
  auto tier = kp.admin("GET", "/admin/tiers").json()["tiers"][0];
  CHECK(tier["features"]["embed"] == 5);
  CHECK(tier["max_wait_ms"] == 40);
  CHECK(cli({"tiers", "update", "free"}).exit_code == 2);  // nothing to change
  CHECK(cli({"tiers", "update", "ghost", "--max-wait-ms", "1"}).exit_code == 1);

  auto created = cli({"tokens", "create", "--name", "ci", "--tier", "free", "--allow-key-handout", "true"});
  REQUIRE(created.exit_code == 0);
  auto tok = kp.admin("GET", "/admin/tokens").json()["tokens"][0];
  CHECK(tok["allow_key_handout"] == true);
  std::string tid = std::to_string(tok["id"].get<int64_t>());

  auto updated = cli({"tokens", "update", tid, "--name", "ci-2", "--services", "openai, exa", "--rpm", "7",
                      "--allow-key-handout", "false", "--expires-at", "2099-01-01T00:00:00Z"});
  INFO(updated.output);
  REQUIRE(updated.exit_code == 0);
  CHECK(contains(row_of(updated.output, tid), "ci-2"));
  tok = kp.admin("GET", "/admin/tokens").json()["tokens"][0];
  CHECK(tok["name"] == "ci-2");
  CHECK(tok["services"] == json::array({"openai", "exa"}));
  CHECK(tok["rpm"] == 7);
  CHECK(tok["allow_key_handout"] == false);
  CHECK(tok["expires_at"] == "2099-01-01T00:00:00Z");
  REQUIRE(cli({"tokens", "update", tid, "--services", "", "--expires-at", "none"}).exit_code == 0);
  tok = kp.admin("GET", "/admin/tokens").json()["tokens"][0];
  CHECK(tok["services"].empty());
  CHECK(tok["expires_at"].is_null());
  CHECK(cli({"tokens", "update", tid}).exit_code == 2);
  CHECK(cli({"tokens", "update", tid, "--allow-key-handout", "yes"}).exit_code == 2);

  auto rotated = cli({"tokens", "rotate", tid, "--grace-s", "60"});
  INFO(rotated.output);
  REQUIRE(rotated.exit_code == 0);
  size_t at = rotated.output.find("token: kp_");
  REQUIRE(at != std::string::npos);
  std::string secret = rotated.output.substr(at + 7, rotated.output.find_first_of(" \r\n", at + 7) - at - 7);
  kp.remember_secret(secret);
  CHECK(contains(rotated.output, "keeps working until"));
  // Known (403: proxy-only), where an unknown token gets 401.
  CHECK(kp.get("/key?feature=chat", {{"Authorization", "Bearer " + secret}}).status == 403);
  CHECK(kp.get("/key?feature=chat", {{"Authorization", "Bearer kp_unknown_token_0000"}}).status == 401);
  auto listed = cli({"tokens", "list"});
  CHECK_FALSE(contains(listed.output, secret));
  CHECK(cli({"tokens", "rotate", tid, "--grace-s", "86401"}).exit_code == 1);  // the server's 400
  CHECK(cli({"tokens", "rotate", "999"}).exit_code == 1);
}
