// The admin subcommands' pieces that need no running keypool: flag parsing, tables, base
// URLs, and the blocking client against a scripted fake server (framing, limits, cut-offs).
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

TEST_CASE("parse_admin_url takes plain http base URLs, as config's parser reads them") {
  auto u = parse_admin_url("http://127.0.0.1:9000");
  REQUIRE(u);
  CHECK(u->host == "127.0.0.1");
  CHECK(u->port == 9000);
  CHECK(u->path == "");
  auto p = parse_admin_url("HTTP://Keypool.internal/proxy/");
  REQUIRE(p);
  CHECK(p->host == "keypool.internal");
  CHECK(p->port == 80);
  CHECK(p->path == "/proxy");
  auto v6 = parse_admin_url("http://[::1]:8080");
  REQUIRE(v6);
  CHECK(v6->host == "::1");
  CHECK(v6->port == 8080);
  auto compose = parse_admin_url("http://keypool_admin:8080");  // container DNS names may hold '_'
  REQUIRE(compose);
  CHECK(compose->host == "keypool_admin");
  for (const char* bad : {"https://x", "ftp://x", "127.0.0.1:8080", "http://", "http://x:0",
                          "http://x:99999", "http://[::1", "http://x?a=1"}) {
    auto r = parse_admin_url(bad);
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find(std::string("--url '") + bad + "'") == 0);
  }
}

TEST_CASE("parse_admin_url refuses user info without repeating it") {
  for (const char* url :
       {"http://admin:hunter2@127.0.0.1:8080", "http://admin:hunter2@[::1]/x",
        "https://admin:hunter2@keypool.internal", "admin:hunter2@keypool.internal://x"}) {
    auto r = parse_admin_url(url);
    REQUIRE_FALSE(r);
    INFO(r.error().message);
    CHECK(r.error().message.find("hunter2") == std::string::npos);
    CHECK(r.error().message.find("admin") == std::string::npos);
    CHECK(r.error().message.find("--url") == 0);
  }
  auto r = parse_admin_url("http://admin:hunter2@127.0.0.1:8080");
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find("must not contain user info") != std::string::npos);
}

namespace {

BaseUrl local(uint16_t port) {
  auto u = parse_admin_url("http://127.0.0.1:" + std::to_string(port));
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

namespace {

// The admin client against a fake that answers every request with these bytes, then closes.
Result<HttpReply> call_raw(std::string bytes, const std::string& method = "GET") {
  testing::FakeUpstream up(
      [bytes](const testing::RecordedRequest&, testing::ResponseWriter& w) { w.raw(bytes); });
  AdminClient client(local(up.port()), "t", 1000, 2000);
  return client.call(method, "/admin/x");
}

bool has(const Error& e, std::string_view text) {
  return e.message.find(text) != std::string::npos;
}

}  // namespace

TEST_CASE("AdminClient reads close-delimited, chunked and interim-headed answers") {
  auto close_delimited =
      call_raw("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"a\":1}");
  REQUIRE(close_delimited);
  CHECK(close_delimited->status == 200);
  CHECK(close_delimited->body == R"({"a":1})");

  auto chunked = call_raw(
      "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
      "4\r\n{\"a\"\r\n3;ext=1\r\n:1}\r\n0\r\nX-Trailer: 1\r\n\r\n");
  REQUIRE(chunked);
  CHECK(chunked->status == 201);
  CHECK(chunked->body == R"({"a":1})");

  auto interim =
      call_raw("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
  REQUIRE(interim);
  CHECK(interim->status == 200);
  CHECK(interim->body == "{}");

  // A HEAD answer's Content-Length describes a body that is not sent.
  auto head = call_raw("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", "HEAD");
  REQUIRE(head);
  CHECK(head->body == "");
}

TEST_CASE("AdminClient refuses answers cut off before their end") {
  for (const char* cut : {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{\"a\":",
                          "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n{\"a\":",
                          "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{}\n\r\n",
                          "HTTP/1.1 200 OK\r\nContent-Le", ""}) {
    auto r = call_raw(cut);
    INFO(cut);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == ErrorCode::Unavailable);
    CHECK(has(r.error(), "closed the connection before a complete response"));
  }
}

TEST_CASE("AdminClient refuses malformed answers and oversized heads and bodies") {
  auto bad = call_raw("HTTP/1.1 2xx OK\r\n\r\n");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == ErrorCode::BadGateway);
  CHECK(has(bad.error(), "malformed response"));

  auto big_head = call_raw("HTTP/1.1 200 OK\r\nX-Pad: " + std::string(70 * 1024, 'a') +
                           "\r\nContent-Length: 0\r\n\r\n");
  REQUIRE_FALSE(big_head);
  CHECK(has(big_head.error(), "response head larger than 65536 bytes"));

  // Declared too long: refused on the head, before any of the body is read.
  auto declared = call_raw("HTTP/1.1 200 OK\r\nContent-Length: 67108865\r\n\r\n{}");
  REQUIRE_FALSE(declared);
  CHECK(declared.error().code == ErrorCode::BadGateway);
  CHECK(has(declared.error(), "response too large"));

  // Undeclared (chunked, no length): refused once the collected body passes 64 MiB.
  testing::FakeUpstream up([](const testing::RecordedRequest&, testing::ResponseWriter& w) {
    w.head(200);  // chunked
    const std::string mib(1024 * 1024, 'x');
    for (int i = 0; i < 65 && !w.client_gone(); ++i) w.body(mib);
    w.end();
  });
  AdminClient client(local(up.port()), "t", 1000, 5000);
  auto streamed = client.call("GET", "/admin/x");
  REQUIRE_FALSE(streamed);
  CHECK(has(streamed.error(), "response too large"));
}
