// A sidecar set up from files: the bootstrap file applied at start and on SIGHUP, with
// values only from the environment or files, idempotent, rotating changed keys, pruning
// only what it made, and refusing bad files whole.
#include <doctest/doctest.h>
#include <signal.h>

#include <chrono>
#include <fstream>
#include <set>
#include <string>
#include <thread>

#include "auth/auth.h"
#include "proxy_helpers.h"

using namespace keypool;
using namespace keypool::testing;
using nlohmann::json;

namespace {

const std::string kKey1 = "sk-boot-openai-key-0001";
const std::string kKey2 = "sk-boot-openai-key-0002";
const std::string kTeamA = "team-a-token-0123456789abcdef";
const std::string kTeamB = "team-b-token-fedcba9876543210";

template <class F>
bool eventually(F fn, int timeout_ms = 10000) {
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < until) {
    if (fn()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return fn();
}

size_t count_of(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos; at = haystack.find(needle, at + 1)) ++n;
  return n;
}

// The example file, with team-b given by its SHA-256.
std::string example_file(const std::string& dir, const std::string& extra_keys = "", bool with_key2 = true,
                         bool with_team_b = true, bool prune = false) {
  std::string f =
      "tiers:\n"
      "  - {name: default, features: {openai: 60}, max_wait_ms: 0}\n"
      "keys:\n"
      "  - {name: openai-1, tier: default, service: openai, value_env: OPENAI_KEY_1}\n";
  if (with_key2) f += "  - {name: openai-2, tier: default, service: openai, value_file: " + dir + "/secrets/openai-2}\n";
  f += extra_keys;
  f += "tokens:\n"
       "  - {name: team-a, tier: default, services: [openai], value_env: TEAM_A_TOKEN}\n";
  if (with_team_b)
    f += "  - {name: team-b, tier: default, allow_key_handout: true, sha256: \"" + auth::hash_token(kTeamB) + "\"}\n";
  f += std::string("prune: ") + (prune ? "true" : "false") + "\n";
  return f;
}

struct Sidecar {
  FakeUpstream up{json_ok()};
  Keypool kp{{}, false};
  std::string file;

  Sidecar() {
    file = kp.dir.path + "/bootstrap.yaml";
    kp.env["BOOTSTRAP_FILE"] = file;
    kp.env["OPENAI_KEY_1"] = kKey1;
    kp.env["TEAM_A_TOKEN"] = kTeamA;
    for (const auto& s : {kKey1, kKey2, kTeamA, kTeamB}) kp.remember_secret(s);
    std::system(("mkdir -p " + kp.dir.path + "/secrets").c_str());
    write_secret("openai-2", kKey2 + "\n");  // a trailing newline, as `echo >` leaves it
    kp.write_service("openai", service_yaml("openai", up.base_url()));
    write(example_file(kp.dir.path));
  }
  void write(const std::string& text) { std::ofstream(file) << text; }
  void write_secret(const std::string& name, const std::string& value) {
    std::ofstream(kp.dir.path + "/secrets/" + name) << value;
  }
  // Sends SIGHUP and waits until the store thread has dealt with the file (applied or refused).
  void hup() {
    auto seen = [&] {
      std::string log = kp.proc->log_contents();
      return count_of(log, "bootstrap file applied") + count_of(log, "bootstrap file refused");
    };
    size_t before = seen();
    REQUIRE(::kill(kp.proc->pid(), SIGHUP) == 0);
    REQUIRE(eventually([&] { return seen() > before; }));
  }
  int proxy(const std::string& token) {
    return kp.get("/v1/openai/v1/models", {{"Authorization", "Bearer " + token}}).status;
  }
  json audit() {
    auto a = kp.admin("GET", "/admin/audit?limit=10000").json()["audit"];
    json out = json::array();
    for (const auto& row : a)
      if (row["action"] != "key.handout") out.push_back(row);
    return out;
  }
  json keys() { return kp.admin("GET", "/admin/keys").json()["keys"]; }
};

}  // namespace

TEST_CASE("bootstrap: the file is applied at start, then re-applied without a change") {
  Sidecar s;
  s.kp.start();
  auto tiers = s.kp.admin("GET", "/admin/tiers").json()["tiers"];
  REQUIRE(tiers.size() == 1);
  CHECK(tiers[0]["name"] == "default");
  CHECK(tiers[0]["features"]["openai"] == 60);
  auto keys = s.keys();
  REQUIRE(keys.size() == 2);
  CHECK(keys[0]["name"] == "openai-1");
  CHECK(keys[0]["service"] == "openai");
  CHECK(keys[0]["source"] == "bootstrap");
  CHECK(keys[1]["hint"] == "sk-...0002");  // the file's value, without its newline

  // team-a by value (proxy-only, openai only), team-b by its SHA-256 (may take keys out).
  CHECK(s.proxy(kTeamA) == 200);
  CHECK(s.proxy(kTeamB) == 200);
  CHECK(s.kp.get("/key?service=openai", {{"Authorization", "Bearer " + kTeamA}}).status == 403);
  auto handed = s.kp.get("/key?service=openai", {{"Authorization", "Bearer " + kTeamB}});
  REQUIRE(handed.status == 200);
  std::string v = handed.json()["value"];
  CHECK((v == kKey1 || v == kKey2));
  auto tokens = s.kp.admin("GET", "/admin/tokens").json()["tokens"];
  REQUIRE(tokens.size() == 2);
  CHECK(tokens[0]["services"] == json::array({"openai"}));
  CHECK(tokens[0]["source"] == "bootstrap");
  CHECK(tokens[1]["allow_key_handout"] == true);

  const json first = s.audit();
  CHECK(first.size() == 5);  // tier, two keys, two tokens
  for (const auto& row : first) CHECK(row["actor"] == "bootstrap");
  CHECK(first.dump().find(kKey1) == std::string::npos);

  // Again at SIGHUP, and again at a restart: nothing changes, nothing is audited.
  s.hup();
  CHECK(s.audit() == first);
  s.kp.restart();
  CHECK(s.audit() == first);
  CHECK(s.keys()[0]["id"] == keys[0]["id"]);
  CHECK(s.proxy(kTeamA) == 200);
  CHECK(s.proxy(kTeamB) == 200);
}

TEST_CASE("bootstrap: SIGHUP applies a change; a changed key value is a rotation") {
  Sidecar s;
  s.kp.start();
  auto before = s.keys();
  const std::string rotated = "sk-boot-openai-key-0002-new";
  s.kp.remember_secret(rotated);
  s.write_secret("openai-2", rotated);
  // And the tier's rate and team-a's services change in the file.
  std::string f = example_file(s.kp.dir.path);
  f.replace(f.find("openai: 60"), 10, "openai: 90");
  s.write(f);
  s.hup();

  auto after = s.keys();
  REQUIRE(after.size() == 2);
  CHECK(after[1]["id"] == before[1]["id"]);  // the same key, a new value
  CHECK(after[1]["hint"] == "sk-...-new");
  CHECK(s.kp.admin("GET", "/admin/tiers").json()["tiers"][0]["features"]["openai"] == 90);
  auto rot = s.kp.admin("GET", "/admin/audit?action=key.rotate").json()["audit"];
  REQUIRE(rot.size() == 1);
  CHECK(rot[0]["actor"] == "bootstrap");
  CHECK(rot[0]["target"] == std::to_string(after[1]["id"].get<int64_t>()));
  CHECK(s.kp.admin("GET", "/admin/audit?action=tier.update").json()["audit"].size() == 1);
  // The pool serves the new value.
  bool seen_new = false;
  for (int i = 0; i < 6 && !seen_new; ++i) {
    auto r = s.kp.get("/key?service=openai", {{"Authorization", "Bearer " + kTeamB}});
    REQUIRE(r.status == 200);
    seen_new = r.json()["value"] == rotated;
  }
  CHECK(seen_new);
  // A new token value in the environment only takes effect at a restart (SIGHUP cannot
  // change a process's environment); a new team-b hash in the file does at once.
  const std::string next_b = "team-b-token-rotated-00000001";
  s.kp.remember_secret(next_b);
  std::string g = example_file(s.kp.dir.path);
  g.replace(g.find("openai: 60"), 10, "openai: 90");
  g.replace(g.find(auth::hash_token(kTeamB)), 64, auth::hash_token(next_b));
  s.write(g);
  s.hup();
  CHECK(s.proxy(next_b) == 200);
  CHECK(s.proxy(kTeamB) == 401);
  CHECK(s.kp.admin("GET", "/admin/audit?action=token.rotate").json()["audit"].size() == 1);
}

TEST_CASE("bootstrap: prune removes only what the file made, and only with prune: true") {
  Sidecar s;
  s.kp.start();
  auto manual = s.kp.admin("POST", "/admin/keys",
                           {{"name", "manual"}, {"key", "sk-manual-admin-key-01"}, {"tier", "default"}, {"service", "openai"}});
  REQUIRE(manual.status == 201);
  auto manual_tok = add_token(s.kp, {{"name", "manual"}, {"tier", "default"}});

  // Dropped from the file without prune: kept.
  s.write(example_file(s.kp.dir.path, "", false, false, false));
  s.hup();
  CHECK(s.keys().size() == 3);
  CHECK(s.proxy(kTeamB) == 200);

  // With prune: openai-2 and team-b go; the admin-made key and token stay.
  s.write(example_file(s.kp.dir.path, "", false, false, true));
  s.hup();
  auto keys = s.keys();
  std::set<std::string> names;
  for (const auto& k : keys) names.insert(k["name"]);
  CHECK(names == std::set<std::string>{"openai-1", "manual"});
  CHECK(s.proxy(kTeamB) == 401);
  CHECK(s.proxy(kTeamA) == 200);
  CHECK(s.proxy(manual_tok["token"]) == 200);
  CHECK(s.kp.admin("GET", "/admin/audit?action=key.delete").json()["audit"].size() == 1);
  CHECK(s.kp.admin("GET", "/admin/audit?action=token.revoke").json()["audit"].size() == 1);
  // A pruned tier goes too, unless something the admin made still uses it.
  std::string only_tier = "tiers:\n  - {name: other, features: {openai: 5}}\nprune: true\n";
  s.write(only_tier);
  s.hup();
  auto tiers = s.kp.admin("GET", "/admin/tiers").json()["tiers"];
  std::set<std::string> tier_names;
  for (const auto& t : tiers) tier_names.insert(t["name"]);
  CHECK(tier_names == std::set<std::string>{"default", "other"});  // default: the manual key uses it
  CHECK(s.keys().size() == 1);
}

TEST_CASE("bootstrap: a bad file at start exits 2 naming the file, the object and the field") {
  struct Case {
    std::string name, text, mentions;
  };
  Sidecar s;
  std::vector<Case> cases = {
      {"unset variable", example_file(s.kp.dir.path), "keys[0] (openai-1): value_env"},
      {"inline secret", "keys:\n  - {name: k, tier: default, value: sk-inline-0000000001}\n", "keys[0] (k): value"},
      {"unreadable file", "keys:\n  - {name: k, tier: default, value_file: /nonexistent/x}\n",
       "keys[0] (k): value_file"},
      {"bad sha256", "tokens:\n  - {name: t, tier: default, sha256: abc}\n", "tokens[0] (t): sha256"},
      {"unknown field", "tiers:\n  - {name: x, features: {a: 1}, colour: red}\n", "tiers[0] (x): colour"},
      {"unknown tier", "keys:\n  - {name: k, tier: ghost, value_env: OPENAI_KEY_1}\n", "keys[0] (k): tier 'ghost' not found"},
      {"twice", "tiers:\n  - {name: x, features: {a: 1}}\n  - {name: x, features: {a: 2}}\n", "tiers[1] (x): name"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    s.write(c.text);
    auto env = s.kp.env;
    if (c.name == "unset variable") env.erase("OPENAI_KEY_1");
    auto r = run_command({keypool_bin(), "--config", source_dir() + "/config/keypool.yaml"}, env, "", 20000);
    INFO(r.output);
    CHECK(r.exit_code == 2);
    CHECK(r.output.find(s.file) != std::string::npos);
    CHECK(r.output.find(c.mentions) != std::string::npos);
    CHECK(r.output.find("sk-inline") == std::string::npos);
    CHECK(r.output.find(kKey1) == std::string::npos);
  }
  // check-config reads the file the same way.
  s.write("keys:\n  - {name: k, tier: default, value_env: NOT_SET_ANYWHERE}\n");
  auto check = run_command({keypool_bin(), "--config", source_dir() + "/config/keypool.yaml", "check-config"},
                           s.kp.env, "", 20000);
  CHECK(check.exit_code == 2);
  CHECK(check.output.find("keys[0] (k): value_env") != std::string::npos);
  s.write(example_file(s.kp.dir.path));
  auto good = run_command({keypool_bin(), "--config", source_dir() + "/config/keypool.yaml", "check-config"},
                          s.kp.env, "", 20000);
  CHECK(good.exit_code == 0);
  // Nothing of a refused file was kept: a good file starts on an empty store.
  s.write(example_file(s.kp.dir.path));
  s.kp.start();
  CHECK(s.kp.admin("GET", "/admin/tiers").json()["tiers"].size() == 1);
}

TEST_CASE("bootstrap: at SIGHUP a bad file is refused whole and the running state kept") {
  Sidecar s;
  s.kp.start();
  const json audit = s.audit();
  const json keys = s.keys();
  // Parses, but fails half-way through applying: the new tier must not stay behind.
  s.write(example_file(s.kp.dir.path, "  - {name: stray, tier: ghost, value_env: OPENAI_KEY_1}\n")
              .replace(0, 7, "tiers:\n  - {name: extra, features: {openai: 1}}\n"));
  s.hup();
  CHECK(s.kp.admin("GET", "/admin/tiers").json()["tiers"].size() == 1);
  // Does not parse.
  s.write("tiers: [\n");
  s.hup();
  s.write("keys:\n  - {name: k, tier: default, value_env: NOT_SET_ANYWHERE}\n");
  s.hup();
  CHECK(s.audit() == audit);
  CHECK(s.keys() == keys);
  CHECK(s.proxy(kTeamA) == 200);
  std::string log = s.kp.proc->log_contents();
  CHECK(count_of(log, "bootstrap file refused") == 3);
  CHECK(log.find("NOT_SET_ANYWHERE") != std::string::npos);  // the error names the variable
  CHECK(s.kp.proc->running());
}
