#include "rewrite/rewrite.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>  // explicit_bzero
#include <string>

using keypool::config::AuthScheme;
using keypool::config::ServiceDef;
using keypool::http::find_header;
using keypool::http::Headers;
namespace rw = keypool::rewrite;

namespace {

ServiceDef service(AuthScheme scheme = AuthScheme::Bearer) {
  ServiceDef s;
  s.name = "openai";
  s.base_url = "https://api.openai.com";
  s.tls = true;
  s.host = "api.openai.com";
  s.port = 443;
  s.auth_scheme = scheme;
  return s;
}

// The upstream request taken back apart from the head upstream_head writes, so that every
// check reads what the upstream would receive.
struct Upstream {
  std::string head;
  std::string method;
  std::string target;
  Headers headers;  // in order, the framing header included
};

Upstream parse(std::string head) {
  Upstream r;
  std::string_view rest(head);
  size_t eol = rest.find("\r\n");
  std::string_view line = rest.substr(0, eol);
  size_t sp = line.find(' ');
  r.method = std::string(line.substr(0, sp));
  if (sp != std::string_view::npos)
    r.target = std::string(line.substr(sp + 1, line.rfind(' ') - sp - 1));
  while (eol != std::string_view::npos) {
    rest.remove_prefix(eol + 2);
    eol = rest.find("\r\n");
    line = rest.substr(0, eol);
    if (line.empty()) break;
    size_t colon = line.find(':');
    r.headers.push_back({std::string(line.substr(0, colon)), std::string(line.substr(colon + 2))});
  }
  r.head = std::move(head);
  return r;
}

rw::ClientRequest request(std::string_view method, std::string_view rest, std::string_view query,
                          const Headers& client, bool upgrade,
                          rw::BodyFraming framing = rw::BodyFraming::None, uint64_t length = 0) {
  return {.method = method,
          .rest = rest,
          .query = query,
          .headers = client,
          .upgrade = upgrade,
          .framing = framing,
          .content_length = length};
}

Upstream build(const ServiceDef& svc, std::string_view method, std::string_view rest,
               std::string_view query, const Headers& client, std::string_view key, bool upgrade,
               rw::BodyFraming framing = rw::BodyFraming::None, uint64_t length = 0) {
  return parse(
      rw::upstream_head(svc, request(method, rest, query, client, upgrade, framing, length), key));
}

// The whole request as the upstream would see it, for "the key/token appears nowhere else".
const std::string& wire(const Upstream& r) { return r.head; }

size_t occurrences(std::string_view text, std::string_view needle) {
  size_t n = 0;
  for (size_t p = text.find(needle); p != std::string_view::npos; p = text.find(needle, p + 1)) ++n;
  return n;
}

void check_headers(const Headers& got, const Headers& want) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    CHECK(got[i].name == want[i].name);
    CHECK(got[i].value == want[i].value);
  }
}

bool same_headers(const Headers& a, const Headers& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](const auto& x, const auto& y) {
    return x.name == y.name && x.value == y.value;
  });
}

}  // namespace

TEST_CASE("rewrite: every auth scheme injects the key once") {
  struct Case {
    AuthScheme scheme;
    const char* header;  // nullptr: query parameter
    const char* value;
    const char* target;
  };
  const Case cases[] = {
      {AuthScheme::Bearer, "Authorization", "Bearer sk-KEY", "/v1/x?a=1"},
      {AuthScheme::XApiKey, "x-api-key", "sk-KEY", "/v1/x?a=1"},
      {AuthScheme::XiApiKey, "xi-api-key", "sk-KEY", "/v1/x?a=1"},
      {AuthScheme::AuthorizationRaw, "Authorization", "sk-KEY", "/v1/x?a=1"},
      {AuthScheme::AuthorizationToken, "Authorization", "Token sk-KEY", "/v1/x?a=1"},
      {AuthScheme::QueryParam, nullptr, nullptr, "/v1/x?a=1&api_key=sk-KEY"},
  };
  const Headers client = {{"Authorization", "Bearer team-TOKEN"}, {"Accept", "*/*"}};
  for (const auto& c : cases) {
    CAPTURE(static_cast<int>(c.scheme));
    auto r = build(service(c.scheme), "POST", "/v1/x", "a=1", client, "sk-KEY", false);
    CHECK(r.method == "POST");
    CHECK(r.target == c.target);
    if (c.header) {
      REQUIRE(find_header(r.headers, c.header));
      CHECK(*find_header(r.headers, c.header) == c.value);
      CHECK(keypool::http::count_header(r.headers, c.header) == 1);
    }
    auto w = wire(r);
    CHECK(occurrences(w, "sk-KEY") == 1);
    CHECK(occurrences(w, "team-TOKEN") == 0);
  }
}

TEST_CASE("rewrite: query-param scheme with a custom param and an encoded key") {
  auto svc = service(AuthScheme::QueryParam);
  svc.auth_param = "key";
  struct Case {
    const char* query;
    const char* key;
    const char* target;
  };
  const Case cases[] = {
      {"", "abc", "/x?key=abc"},
      {"key=team", "abc", "/x?key=abc"},
      {"a=1&key=team&b=%2f+x&key=again", "abc", "/x?a=1&b=%2f+x&key=abc"},
      {"api_key=team&z=9", "abc", "/x?z=9&key=abc"},
      {"a=1", "a b/c+d=&", "/x?a=1&key=a%20b%2Fc%2Bd%3D%26"},
      {"k%65y=team", "abc", "/x?key=abc"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.query);
    auto r = build(svc, "GET", "/x", c.query, {}, c.key, false);
    CHECK(r.target == c.target);
  }
}

TEST_CASE("rewrite: query preserved byte-exact, client api_key stripped") {
  struct Case {
    const char* query;
    const char* target;
  };
  const Case cases[] = {
      {"", "/x"},
      {"a=1&b=%2F%2f&c=+&d", "/x?a=1&b=%2F%2f&c=+&d"},
      {"a=1&&b=2&", "/x?a=1&&b=2&"},
      {"api_key=team", "/x"},
      {"api_key=team&a=1", "/x?a=1"},
      {"a=1&api_key=team&api_key=t2&b=2", "/x?a=1&b=2"},
      {"api%5Fkey=team&a=1", "/x?a=1"},
      {"api_keys=1", "/x?api_keys=1"},
      {"x=api_key", "/x?x=api_key"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.query);
    auto r = build(service(), "GET", "/x", c.query, {}, "k", false);
    CHECK(r.target == c.target);
  }
}

TEST_CASE("rewrite: base path join") {
  struct Case {
    const char* base;
    const char* rest;
    const char* target;
  };
  const Case cases[] = {
      {"", "/v1/chat", "/v1/chat"},
      {"/openai", "/v1/x", "/openai/v1/x"},
      {"/openai", "/", "/openai/"},
      {"/openai", "", "/openai/"},
      {"", "", "/"},
      {"/a", "/b//c", "/a/b//c"},
  };
  for (const auto& c : cases) {
    auto svc = service();
    svc.base_path = c.base;
    CHECK(build(svc, "GET", c.rest, "", {}, "k", false).target == c.target);
  }
}

TEST_CASE("rewrite: Host header") {
  struct Case {
    bool tls;
    const char* host;
    uint16_t port;
    const char* want;
  };
  const Case cases[] = {
      {true, "api.openai.com", 443, "api.openai.com"},
      {true, "api.openai.com", 8443, "api.openai.com:8443"},
      {false, "localhost", 80, "localhost"},
      {false, "localhost", 443, "localhost:443"},
      {true, "127.0.0.1", 80, "127.0.0.1:80"},
      {false, "::1", 8080, "[::1]:8080"},
      {true, "2001:db8::1", 443, "[2001:db8::1]"},
  };
  for (const auto& c : cases) {
    auto svc = service();
    svc.tls = c.tls;
    svc.host = c.host;
    svc.port = c.port;
    const Headers client = {{"Host", "localhost:8080"}, {"host", "evil"}};
    auto r = build(svc, "GET", "/", "", client, "k", false);
    CHECK(keypool::http::count_header(r.headers, "host") == 1);
    CHECK(r.headers.front().name == "Host");
    CHECK(r.headers.front().value == c.want);
  }
}

TEST_CASE("rewrite: stripped and kept headers") {
  const Headers client = {
      {"Host", "localhost:8080"},
      {"Connection", "keep-alive, X-Secret-Hop"},
      {"connection", "close , Foo"},
      {"Proxy-Connection", "keep-alive"},
      {"Keep-Alive", "timeout=5"},
      {"TE", "trailers"},
      {"Trailer", "X-Checksum"},
      {"Transfer-Encoding", "chunked"},
      {"Upgrade", "websocket"},
      {"Proxy-Authorization", "Basic abc"},
      {"Proxy-Authenticate", "Basic"},
      {"X-Secret-Hop", "1"},
      {"foo", "2"},
      {"Authorization", "Bearer team"},
      {"authorization", "Token team"},
      {"X-Api-Key", "team"},
      {"xi-api-key", "team"},
      {"Api-Key", "team"},
      {"Content-Length", "12"},
      {"Expect", "100-continue"},
      {"X-Keypool-Feature", "x"},
      {"x-keypool-debug", "1"},
      {"Content-Type", "application/json"},
      {"Accept", "text/event-stream"},
      {"OpenAI-Beta", "assistants=v2"},
      {"X-Keypoolish", "kept"},
      {"Sec-WebSocket-Key", "abc"},
  };
  auto r = build(service(AuthScheme::XApiKey), "POST", "/x", "", client, "sk-KEY", false);
  const Headers want = {
      {"Host", "api.openai.com"},      {"Content-Type", "application/json"},
      {"Accept", "text/event-stream"}, {"OpenAI-Beta", "assistants=v2"},
      {"X-Keypoolish", "kept"},        {"Sec-WebSocket-Key", "abc"},
      {"Accept-Encoding", "identity"}, {"x-api-key", "sk-KEY"},
  };
  check_headers(r.headers, want);
}

TEST_CASE("rewrite: upgrade keeps Upgrade and sends Connection: Upgrade") {
  const Headers client = {{"Connection", "keep-alive, Upgrade"},
                          {"Upgrade", "websocket"},
                          {"Sec-WebSocket-Key", "dGhlIHNhbXBsZQ=="},
                          {"Sec-WebSocket-Version", "13"},
                          {"Keep-Alive", "5"}};
  auto r = build(service(), "GET", "/realtime", "", client, "k", true);
  CHECK(find_header(r.headers, "Upgrade") == "websocket");
  CHECK(keypool::http::count_header(r.headers, "Connection") == 1);
  CHECK(find_header(r.headers, "Connection") == "Upgrade");
  CHECK(find_header(r.headers, "Sec-WebSocket-Key") == "dGhlIHNhbXBsZQ==");
  CHECK(find_header(r.headers, "Sec-WebSocket-Version") == "13");
  CHECK_FALSE(find_header(r.headers, "Keep-Alive"));

  auto plain = build(service(), "GET", "/realtime", "", client, "k", false);
  CHECK_FALSE(find_header(plain.headers, "Upgrade"));
  CHECK_FALSE(find_header(plain.headers, "Connection"));
}

TEST_CASE("rewrite: fixed service headers replace client ones") {
  auto svc = service(AuthScheme::XApiKey);
  svc.headers = {{"Cartesia-Version", "2024-06-10"},
                 {"anthropic-version", "2023-06-01"},
                 {"x-api-key", "from-config"}};
  const Headers client = {
      {"cartesia-version", "1999"}, {"Anthropic-Version", "old"}, {"Accept", "*/*"}};
  auto r = build(svc, "POST", "/x", "", client, "sk-KEY", false);
  CHECK(keypool::http::count_header(r.headers, "cartesia-version") == 1);
  CHECK(find_header(r.headers, "Cartesia-Version") == "2024-06-10");
  CHECK(keypool::http::count_header(r.headers, "anthropic-version") == 1);
  CHECK(find_header(r.headers, "anthropic-version") == "2023-06-01");
  CHECK(find_header(r.headers, "Accept") == "*/*");
  // The pooled key wins over a credential-shaped fixed header.
  CHECK(keypool::http::count_header(r.headers, "x-api-key") == 1);
  CHECK(find_header(r.headers, "x-api-key") == "sk-KEY");
}

TEST_CASE("rewrite: framing header") {
  auto svc = service(AuthScheme::XApiKey);
  svc.host = "h";
  const Headers client = {{"Accept", "*/*"}};
  struct Case {
    rw::BodyFraming framing;
    uint64_t length;
    const char* want;
  };
  const Case cases[] = {
      {rw::BodyFraming::None, 99,
       "POST /v1/x?a=1 HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nAccept-Encoding: identity\r\nx-api-key: k\r\n\r\n"},
      {rw::BodyFraming::ContentLength, 0,
       "POST /v1/x?a=1 HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nAccept-Encoding: identity\r\nx-api-key: k\r\n"
       "Content-Length: 0\r\n\r\n"},
      {rw::BodyFraming::ContentLength, 18446744073709551615ull,
       "POST /v1/x?a=1 HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nAccept-Encoding: identity\r\nx-api-key: k\r\n"
       "Content-Length: 18446744073709551615\r\n\r\n"},
      {rw::BodyFraming::Chunked, 5,
       "POST /v1/x?a=1 HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nAccept-Encoding: identity\r\nx-api-key: k\r\n"
       "Transfer-Encoding: chunked\r\n\r\n"},
  };
  for (const auto& c : cases)
    CHECK(wire(build(svc, "POST", "/v1/x", "a=1", client, "k", false, c.framing, c.length)) ==
          c.want);
}

TEST_CASE("rewrite: headers that could split the head are left out") {
  auto svc = service(AuthScheme::XApiKey);
  svc.host = "h";
  svc.headers = {{"Fixed Name", "v"}, {"X-Fixed", "a\rb"}};
  const Headers client = {
      {"Bad Name", "v"}, {"Bad:Name", "v"}, {"", "v"},       {"Nul", std::string("a\0b", 3)},
      {"Ctl", "a\x01z"}, {"Del", "a\x7f"},  {"Tab", "a\tb"}, {"Utf8", "caf\xc3\xa9"}};
  // The key's header goes too: a bad stored key cannot forge "X-Evil".
  CHECK(wire(build(svc, "GET", "/", "", client, "k\r\nX-Evil: 1", false)) ==
        "GET / HTTP/1.1\r\nHost: h\r\nTab: a\tb\r\nUtf8: caf\xc3\xa9\r\nAccept-Encoding: identity\r\n\r\n");
  // A key with a line break is refused, not smuggled as a second header.
  auto built = build(service(), "GET", "/", "", {}, "k\r\nX-Evil: 1", false);
  CHECK(wire(built).find("X-Evil") == std::string::npos);
}

TEST_CASE("rewrite: headers named in Connection are dropped whatever their case") {
  const Headers client = {{"Connection", "X-Trace-Hop,  x-DEBUG-hop\t, ,"},
                          {"connection", "FOO"},
                          {"x-trace-hop", "1"},
                          {"X-Debug-Hop", "2"},
                          {"foo", "3"},
                          {"X-Trace-Hop-Not", "4"},
                          {"Accept", "*/*"}};
  auto r = build(service(), "GET", "/x", "", client, "k", false);
  check_headers(r.headers, {{"Host", "api.openai.com"},
                            {"X-Trace-Hop-Not", "4"},
                            {"Accept", "*/*"},
                            {"Accept-Encoding", "identity"},
                            {"Authorization", "Bearer k"}});
}

TEST_CASE("rewrite: hop-by-hop and credential names are matched whatever their case") {
  const Headers client = {{"CONNECTION", "close"},
                          {"Keep-ALIVE", "timeout=5"},
                          {"tRaNsFeR-eNcOdInG", "chunked"},
                          {"tE", "trailers"},
                          {"TRAILER", "X-Sum"},
                          {"UPGRADE", "websocket"},
                          {"PROXY-Connection", "keep-alive"},
                          {"Proxy-AUTHORIZATION", "Basic abc"},
                          {"AUTHORIZATION", "Bearer team"},
                          {"X-API-KEY", "team"},
                          {"XI-Api-Key", "team"},
                          {"API-KEY", "team"},
                          {"HOST", "evil"},
                          {"CONTENT-LENGTH", "3"},
                          {"EXPECT", "100-continue"},
                          {"X-KEYPOOL-Session", "s"},
                          {"ACCEPT-encoding", "gzip, br"},
                          {"User-Agent", "sdk"}};
  auto r = build(service(), "POST", "/x", "", client, "sk-KEY", false);
  check_headers(r.headers, {{"Host", "api.openai.com"},
                            {"User-Agent", "sdk"},
                            {"Accept-Encoding", "identity"},
                            {"Authorization", "Bearer sk-KEY"}});
  // An upgrade keeps the client's Upgrade as written, whatever its case.
  auto up = build(service(), "GET", "/x", "", client, "sk-KEY", true);
  check_headers(up.headers, {{"Host", "api.openai.com"},
                             {"UPGRADE", "websocket"},
                             {"User-Agent", "sdk"},
                             {"Connection", "Upgrade"},
                             {"Authorization", "Bearer sk-KEY"}});
}

TEST_CASE("rewrite: the upstream is asked for identity, unless the service fixes Accept-Encoding") {
  const Headers client = {{"Accept-Encoding", "gzip, deflate, br, zstd"}, {"accept-encoding", "gzip"}};
  auto r = build(service(), "POST", "/x", "", client, "k", false);
  CHECK(keypool::http::count_header(r.headers, "accept-encoding") == 1);
  CHECK(find_header(r.headers, "Accept-Encoding") == "identity");
  // Also when the client sent none: an upstream's default may be to compress.
  auto none = build(service(), "POST", "/x", "", {}, "k", false);
  CHECK(find_header(none.headers, "Accept-Encoding") == "identity");
  // An operator's fixed header is the operator's choice (keypool decodes what comes back).
  auto svc = service();
  svc.headers = {{"Accept-Encoding", "gzip"}};
  auto fixed = build(svc, "POST", "/x", "", client, "k", false);
  CHECK(keypool::http::count_header(fixed.headers, "accept-encoding") == 1);
  CHECK(find_header(fixed.headers, "Accept-Encoding") == "gzip");
}

TEST_CASE("rewrite: the console's session cookie never goes upstream, other cookies do") {
  auto cookie_sent = [](std::string value) {
    auto r = build(service(), "GET", "/x", "", {{"Cookie", value}}, "k", false);
    return std::make_pair(keypool::http::count_header(r.headers, "cookie"),
                          std::string(find_header(r.headers, "Cookie").value_or("")));
  };
  CHECK(cookie_sent("a=1; b=2") == std::make_pair(size_t{1}, std::string("a=1; b=2")));
  CHECK(cookie_sent("kp_session=s3cr3t-session-id").first == 0);
  CHECK(cookie_sent("a=1; kp_session=s3cr3t; b=2") == std::make_pair(size_t{1}, std::string("a=1; b=2")));
  CHECK(cookie_sent("kp_session=s3cr3t;theme=dark") == std::make_pair(size_t{1}, std::string("theme=dark")));
  CHECK(cookie_sent(" kp_session = s3cr3t ; x=kp_session") == std::make_pair(size_t{1}, std::string("x=kp_session")));
  // A longer name that starts the same is somebody else's cookie.
  CHECK(cookie_sent("kp_session_pref=1") == std::make_pair(size_t{1}, std::string("kp_session_pref=1")));
  // Two Cookie fields (HTTP/1.1 clients may send them apart): each is filtered.
  auto r = build(service(), "GET", "/x", "", {{"Cookie", "kp_session=s"}, {"cookie", "z=9; kp_session=s"}}, "k", false);
  CHECK(keypool::http::count_header(r.headers, "cookie") == 1);
  CHECK(find_header(r.headers, "Cookie").value_or("") == "z=9");
}

TEST_CASE("rewrite: the key is written into the head only, and wiping the head leaves none") {
  struct Case {
    AuthScheme scheme;
    const char* in_head;  // the key as it appears in the head
  };
  const Case cases[] = {{AuthScheme::Bearer, "sk-KEY/+x"},
                        {AuthScheme::QueryParam, "sk-KEY%2F%2Bx"}};
  Headers client = {{"Authorization", "Bearer team-TOKEN"},
                    {"User-Agent", "sdk"},
                    {"Connection", "keep-alive"},
                    {"Content-Length", "2"}};
  const Headers before = client;
  for (const auto& c : cases) {
    CAPTURE(c.in_head);
    auto req = request("POST", "/v1/x", "a=1", client, false, rw::BodyFraming::ContentLength, 2);
    std::string head = rw::upstream_head(service(c.scheme), req, "sk-KEY/+x");
    CHECK(occurrences(head, c.in_head) == 1);
    // A failover builds its head again from the same client headers: they are only read.
    CHECK(same_headers(client, before));
    CHECK(rw::upstream_head(service(c.scheme), req, "sk-KEY/+x") == head);
    // What upstream::Connection does with every buffer once written.
    explicit_bzero(head.data(), head.size());
    CHECK(occurrences(head, "sk-KEY") == 0);
    CHECK(std::all_of(head.begin(), head.end(), [](char ch) { return ch == '\0'; }));
    CHECK(same_headers(client, before));
  }
}

TEST_CASE("rewrite: a typical SDK request gives the head it always has") {
  // What the OpenAI Python SDK sends through httpx; the expected head was produced by the
  // rewrite that built a Headers copy first, and must not change byte for byte, but for the
  // client's Accept-Encoding, which keypool replaces with identity (it reads the answer).
  const Headers client = {
      {"Host", "localhost:8080"},
      {"Accept-Encoding", "gzip, deflate"},
      {"Connection", "keep-alive"},
      {"Accept", "application/json"},
      {"Content-Type", "application/json"},
      {"User-Agent", "OpenAI/Python 1.54.4"},
      {"X-Stainless-Lang", "python"},
      {"X-Stainless-Package-Version", "1.54.4"},
      {"X-Stainless-OS", "Linux"},
      {"X-Stainless-Arch", "x64"},
      {"X-Stainless-Runtime", "CPython"},
      {"X-Stainless-Runtime-Version", "3.12.3"},
      {"Authorization", "Bearer team-TOKEN"},
      {"X-Stainless-Retry-Count", "0"},
      {"Content-Length", "95"},
  };
  auto r = build(service(), "POST", "/v1/chat/completions", "", client, "sk-proj-abc123XYZ", false,
                 rw::BodyFraming::ContentLength, 95);
  CHECK(wire(r) ==
        "POST /v1/chat/completions HTTP/1.1\r\n"
        "Host: api.openai.com\r\n"
        "Accept: application/json\r\n"
        "Content-Type: application/json\r\n"
        "User-Agent: OpenAI/Python 1.54.4\r\n"
        "X-Stainless-Lang: python\r\n"
        "X-Stainless-Package-Version: 1.54.4\r\n"
        "X-Stainless-OS: Linux\r\n"
        "X-Stainless-Arch: x64\r\n"
        "X-Stainless-Runtime: CPython\r\n"
        "X-Stainless-Runtime-Version: 3.12.3\r\n"
        "X-Stainless-Retry-Count: 0\r\n"
        "Accept-Encoding: identity\r\n"
        "Authorization: Bearer sk-proj-abc123XYZ\r\n"
        "Content-Length: 95\r\n"
        "\r\n");
}

TEST_CASE("rewrite: mask_secret") {
  struct Case {
    std::string text;
    const char* secret;
    const char* want;
    size_t count;
  };
  const Case cases[] = {
      {"invalid key sk-abc123 given", "sk-abc123", "invalid key *** given", 1},
      {"sk-abc123sk-abc123", "sk-abc123", "******", 2},
      {"url ?key=a%2Fb%2Bc and a%2fb%2bc and a/b+c", "a/b+c", "url ?key=*** and *** and ***", 3},
      {"nothing here", "sk-abc", "nothing here", 0},
      {"x%2525y", "%25", "x***y", 1},
      {"abc", "", "abc", 0},
      {"", "k", "", 0},
      {"SK-ABC123", "sk-abc123", "SK-ABC123", 0},
  };
  for (const auto& c : cases) {
    CAPTURE(c.text);
    std::string text = c.text;
    CHECK(rw::mask_secret(text, c.secret) == c.count);
    CHECK(text == c.want);
  }
}

TEST_CASE("rewrite: percent_encode") {
  CHECK(rw::percent_encode("AZaz09-._~") == "AZaz09-._~");
  CHECK(rw::percent_encode("a b/+=&%\xff") == "a%20b%2F%2B%3D%26%25%FF");
}

TEST_CASE("rewrite: mask_fragments hides partial echoes of the key") {
  const std::string key = "sk-proj-abcdefghijklmnop1234";
  std::string body = R"({"error":"Incorrect API key provided: sk-proj-****************1234. Also efghijkl."})";
  CHECK(keypool::rewrite::mask_fragments(body, key) >= 2);
  CHECK(body.find("1234") == std::string::npos);
  CHECK(body.find("efghij") == std::string::npos);
  std::string clean = R"({"error":"rate limited, try again in 1234 ms"})";
  keypool::rewrite::mask_fragments(clean, key);
  CHECK(clean.find("1234") != std::string::npos);  // not preceded by a mask: left alone
}
