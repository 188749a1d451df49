// The README's five-minute walk-through is run as written (only KP points at the test's
// keypool, and the openai service is redefined through the admin API to point at a fake
// upstream), so the documented commands cannot drift from what keypool does.
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>

#include "fixture.h"
#include "support/fake_upstream.h"

using namespace keypool::testing;

namespace {

// The first ```sh block after the walk-through heading.
std::string walkthrough_block() {
  std::ifstream in(source_dir() + "/README.md");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  auto heading = text.find("## Five-minute walk-through");
  REQUIRE(heading != std::string::npos);
  auto start = text.find("```sh\n", heading);
  REQUIRE(start != std::string::npos);
  start += 6;
  auto end = text.find("```", start);
  REQUIRE(end != std::string::npos);
  return text.substr(start, end - start);
}

}  // namespace

TEST_CASE("readme: the five-minute walk-through runs as written") {
  FakeUpstream upstream(echo());
  Keypool kp;
  kp.remember_secret("sk-proj-your-key");
  // The shipped openai service points at api.openai.com; an admin definition wins over the
  // file, which is also what the README says.
  auto svc = kp.admin("POST", "/admin/services",
                      {{"name", "openai"}, {"base_url", "http://127.0.0.1:" + std::to_string(upstream.port())},
                       {"auth_scheme", "bearer"}});
  REQUIRE(svc.status == 201);

  std::system(("mkdir -p " + kp.dir.path + "/data").c_str());
  std::ofstream(kp.dir.path + "/data/dev.env") << "ENCRYPTION_KEY=" << kEncryptionKey << "\nADMIN_TOKEN=" << kAdminToken << "\n";
  std::string script = kp.dir.path + "/walkthrough.sh";
  // After the block, the team token step 3 created goes to a file (not the output), so the
  // log scan can look for it.
  std::ofstream(script) << "set -euo pipefail\ncd " << kp.dir.path << "\n" << walkthrough_block()
                        << "\nprintf %s \"$TOKEN\" > " << kp.dir.path << "/team-token\n";

  auto r = run_command({"bash", script}, {{"PATH", "/usr/bin:/bin"}, {"KP", "http://127.0.0.1:" + std::to_string(kp.port)}}, "", 30000);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  // The walk-through creates the team token itself: scan the logs for it too.
  {
    std::ifstream in(kp.dir.path + "/team-token");
    std::string token((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    REQUIRE(token.rfind("kp_", 0) == 0);
    kp.remember_secret(token);
  }
  CHECK(r.output.find("\"name\":\"default\"") != std::string::npos);
  CHECK(r.output.find("\"hint\":\"sk-...-key\"") != std::string::npos);
  CHECK(r.output.find("\"value\":\"sk-proj-your-key\"") != std::string::npos);  // step 5, GET /key
  CHECK(r.output.find("\"pool_size\":1") != std::string::npos);                  // /admin/health

  // Step 4 reached the upstream with the pooled key, not the team token.
  auto reqs = upstream.requests();
  REQUIRE(reqs.size() == 1);
  CHECK(reqs[0].method == "POST");
  CHECK(reqs[0].path == "/v1/chat/completions");
  CHECK(reqs[0].header("authorization") == "Bearer sk-proj-your-key");
}
