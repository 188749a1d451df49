// The admin subcommands' pieces that need no running keypool: flag parsing, tables, base
// URLs, chunked decoding, and the blocking client against a scripted fake server.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "cli/admin_client.h"
#include "cli/args.h"
#include "cli/table.h"
#include "support/fake_upstream.h"

using namespace keypool;
using namespace keypool::cli;

TEST_CASE("parse_args takes flags in both spellings, repeats and positionals") {
  auto a = parse_args({"free", "--feature", "chat=60", "--feature=embed=100", "--max-wait-ms", "5"},
                      {{"--feature", true}, {"--max-wait-ms"}});
  REQUIRE(a);
  CHECK(a->positional == std::vector<std::string>{"free"});
  CHECK(a->all("--feature") == std::vector<std::string>{"chat=60", "embed=100"});
  CHECK(a->get("--max-wait-ms") == "5");
  CHECK_FALSE(a->get("--nope"));

  auto dashdash = parse_args({"--", "--not-a-flag"}, {});
  REQUIRE(dashdash);
  CHECK(dashdash->positional == std::vector<std::string>{"--not-a-flag"});
}

TEST_CASE("parse_args refuses unknown flags, missing values and repeats") {
  struct Case {
    std::vector<std::string> args;
    const char* message;
  };
  for (const auto& c : std::vector<Case>{{{"--bogus", "1"}, "unknown flag '--bogus'"},
                                         {{"--tier"}, "--tier needs a value"},
                                         {{"--tier", "a", "--tier", "b"}, "--tier given twice"},
                                         {{"-x"}, "unknown flag '-x'"}}) {
    auto a = parse_args(c.args, {{"--tier"}});
    REQUIRE_FALSE(a);
    CHECK(a.error().message == c.message);
  }
}

TEST_CASE("Table aligns columns and drops trailing spaces") {
  Table t({"ID", "NAME", "HINT"});
  t.add_row({"1", "alpha", "sk-...abcd"});
  t.add_row({"22", "b", ""});
  t.add_row({"3"});  // padded
  CHECK(t.render() ==
        "ID  NAME   HINT\n"
        "1   alpha  sk-...abcd\n"
        "22  b\n"
        "3\n");
  Table lines({"A", "B"});
  lines.add_row({"x\ny", "z"});
  CHECK(lines.render() == "A    B\nx y  z\n");
}

TEST_CASE("parse_base_url") {
  auto u = parse_base_url("http://127.0.0.1:9000");
  REQUIRE(u);
  CHECK(u->host == "127.0.0.1");
  CHECK(u->port == 9000);
  CHECK(u->prefix == "");
  auto p = parse_base_url("http://keypool.internal/proxy/");
  REQUIRE(p);
  CHECK(p->port == 80);
  CHECK(p->prefix == "/proxy");
  auto v6 = parse_base_url("http://[::1]:8080");
  REQUIRE(v6);
  CHECK(v6->host == "::1");
  CHECK(v6->port == 8080);
  for (const char* bad : {"https://x", "ftp://x", "127.0.0.1:8080", "http://", "http://x:0",
                          "http://x:99999", "http://[::1"})
    CHECK_FALSE(parse_base_url(bad));
}

TEST_CASE("decode_chunked waits for the whole body, then joins it") {
  std::string out;
  std::string whole = "4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\n";
  for (size_t n = 0; n < whole.size(); ++n)
    CHECK(decode_chunked(std::string_view(whole).substr(0, n), out) == ChunkedState::Incomplete);
  REQUIRE(decode_chunked(whole, out) == ChunkedState::Done);
  CHECK(out == "Wikipedia");
  CHECK(decode_chunked("0\r\nX-Trailer: 1\r\n\r\n", out) == ChunkedState::Done);
  CHECK(out == "");
  CHECK(decode_chunked("zz\r\n", out) == ChunkedState::Bad);
  CHECK(decode_chunked("2\r\nabc\r\n", out) == ChunkedState::Bad);
}

namespace {

BaseUrl local(uint16_t port) {
  auto u = parse_base_url("http://127.0.0.1:" + std::to_string(port));
  REQUIRE(u);
  return *u;
}

}  // namespace

TEST_CASE("AdminClient sends the token and reads length-framed and chunked answers") {
  testing::FakeUpstream up([](const testing::RecordedRequest& r, testing::ResponseWriter& w) {
    if (r.path == "/admin/chunked") {
      w.head(200, {{"Content-Type", "application/json"}});  // no length: chunked
      w.body("{\"a\":");
      w.body("1}");
      w.end();
    } else if (r.path == "/admin/fail") {
      std::string body = R"({"error":{"code":"conflict","message":"nope"}})";
      w.head(409, {{"Content-Length", std::to_string(body.size())}});
      w.body(body);
    } else {
      std::string body = "{\"auth\":\"" + r.header("authorization") + "\",\"body\":\"" +
                         std::to_string(r.body.size()) + "\"}";
      w.head(200, {{"Content-Length", std::to_string(body.size())}});
      w.body(body);
    }
  });
  AdminClient client(local(up.port()), "adm_secret");
  auto plain = client.call("POST", "/admin/x", "{\"k\":1}");
  REQUIRE(plain);
  CHECK(plain->status == 200);
  CHECK(plain->body == R"({"auth":"Bearer adm_secret","body":"7"})");
  auto chunked = client.call("GET", "/admin/chunked");
  REQUIRE(chunked);
  CHECK(chunked->body == R"({"a":1})");
  auto fail = client.call("DELETE", "/admin/fail");
  REQUIRE(fail);
  CHECK(fail->status == 409);
}

TEST_CASE("AdminClient gives up on a silent server and on a closed port") {
  testing::FakeUpstream up(
      [](const testing::RecordedRequest&, testing::ResponseWriter& w) { w.sleep_ms(3000); });
  AdminClient slow(local(up.port()), "t", 1000, 200);
  auto r = slow.call("GET", "/admin/tiers");
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("timed out") != std::string::npos);

  uint16_t closed_port = up.port();
  up.stop();
  AdminClient gone(local(closed_port), "t", 1000, 1000);
  auto g = gone.call("GET", "/admin/tiers");
  REQUIRE_FALSE(g);
  CHECK(g.error().message.find("cannot connect") != std::string::npos);
}
