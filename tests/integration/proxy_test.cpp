// The proxy end to end: the real binary between the test client and a FakeUpstream on
// loopback. What the upstream sees (key injection per auth scheme, path and query, stripped
// credentials and hop-by-hop headers), what the client sees when the pool, the token or the
// upstream says no, streaming (SSE, 1 GiB both ways in bounded memory), failover and tunnels.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "fixture.h"
#include "proxy_helpers.h"
#include "support/certs.h"
#include "support/fake_upstream.h"

using namespace keypool::testing;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

HeaderList bearer(const std::string& token) { return {{"Authorization", "Bearer " + token}}; }


uint64_t big_bytes() {
  if (const char* v = std::getenv("KEYPOOL_BIG_BYTES"); v && *v) return std::strtoull(v, nullptr, 10);
  return 1ull << 30;
}

// How a streamed response body ended, as the client saw it.
enum class BodyEnd { Complete, Broken, Timeout };

struct BodyRead {
  BodyEnd end = BodyEnd::Complete;
  uint64_t bytes = 0;
};

// Reads the body of the response whose head was just read, until its framing says it is done
// (Complete), the connection breaks mid-body (Broken) or nothing arrives for timeout_ms.
BodyRead read_body(Connection& c, int timeout_ms) {
  BodyRead out;
  try {
    while (auto chunk = c.read_chunk(timeout_ms)) out.bytes += chunk->size();
  } catch (const TimeoutError&) {
    out.end = BodyEnd::Timeout;
  } catch (const std::exception&) {
    out.end = BodyEnd::Broken;
  }
  return out;
}

// Samples a process's VmRSS every 20 ms on a thread until stopped; remembers the peak.
class RssSampler {
 public:
  explicit RssSampler(pid_t pid) : pid_(pid), thread_([this] {
      while (!stop_) {
        long v = rss_kib(pid_);
        if (v > peak_) peak_ = v;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }) {}
  ~RssSampler() { finish(); }
  long finish() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    long v = rss_kib(pid_);
    if (v > peak_) peak_ = v;
    return peak_;
  }

 private:
  pid_t pid_;
  std::atomic<bool> stop_{false};
  std::atomic<long> peak_{0};
  std::thread thread_;
};

constexpr long kRssSlackKib = 32 * 1024;

// A key's usage counters from GET /admin/keys once `requests` requests have landed in them
// (the store gets usage each second), or whatever they hold after 3 s.
json key_counters(Keypool& kp, int64_t key, int requests) {
  json counters;
  for (int i = 0; i < 150; ++i) {
    json keys = kp.admin("GET", "/admin/keys").json()["keys"];
    for (const auto& k : keys)
      if (k["id"] == key && k.contains("counters")) counters = k["counters"];
    if (!counters.is_null() && counters["requests"] == requests) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return counters;
}

}  // namespace

TEST_CASE("proxy: each auth scheme injects the pooled key the way the service wants it") {
  FakeUpstream up(echo());
  Keypool kp({}, false);
  const std::string base = up.base_url();
  struct Case {
    std::string service, scheme, extra, key;
  };
  std::vector<Case> cases = {
      {"s-bearer", "bearer", "", "sk-bearer-1111"},
      {"s-xapikey", "x-api-key", "", "sk-xapi-2222"},
      {"s-xiapikey", "xi-api-key", "", "sk-xiapi-3333"},
      {"s-raw", "authorization-raw", "", "sk-raw-4444"},
      {"s-token", "authorization-token", "", "sk-token-5555"},
      {"s-query", "query-param", "auth_param: key\n", "sk-query-6666"},
      {"s-querydef", "query-param", "", "sk-querydef-7777"},
      {"s-fixed", "x-api-key", "headers:\n  Cartesia-Version: \"2024-06-10\"\n  X-Extra: fixed\n",
       "sk-fixed-8888"},
  };
  for (const auto& c : cases) kp.write_service(c.service, service_yaml(c.service, base, c.scheme, c.extra));
  kp.start();
  json features = json::object();
  for (const auto& c : cases) features[c.service] = 1000;
  add_tier(kp, "t", features);
  for (const auto& c : cases) add_key(kp, c.service + "-key", c.key, "t", c.service);
  std::string token = add_token(kp, {{"tier", "t"}})["token"];

  for (const auto& c : cases) {
    CAPTURE(c.scheme);
    CAPTURE(c.service);
    up.clear_requests();
    // A client-sent header under the fixed header's name must lose to the service's value.
    auto r = kp.get("/v1/" + c.service + "/things?x=1",
                    {{"Authorization", "Bearer " + token}, {"X-Extra", "from-client"}});
    REQUIRE_MESSAGE(r.status == 200, r.body);
    CHECK_FALSE(r.header("X-Keypool-Key-Id").empty());
    REQUIRE(up.request_count() == 1);
    auto seen = up.requests()[0];
    CHECK_FALSE(upstream_saw(seen, token));
    CHECK(seen.path == "/things");
    if (c.scheme == "bearer") {
      CHECK(header_count(seen.headers, "authorization") == 1);
      CHECK(seen.header("authorization") == "Bearer " + c.key);
      CHECK(seen.query == "x=1");
    } else if (c.scheme == "x-api-key") {
      CHECK(header_count(seen.headers, "x-api-key") == 1);
      CHECK(seen.header("x-api-key") == c.key);
      CHECK_FALSE(has_header(seen.headers, "authorization"));
      CHECK(seen.query == "x=1");
    } else if (c.scheme == "xi-api-key") {
      CHECK(header_count(seen.headers, "xi-api-key") == 1);
      CHECK(seen.header("xi-api-key") == c.key);
      CHECK_FALSE(has_header(seen.headers, "authorization"));
    } else if (c.scheme == "authorization-raw") {
      CHECK(header_count(seen.headers, "authorization") == 1);
      CHECK(seen.header("authorization") == c.key);
    } else if (c.scheme == "authorization-token") {
      CHECK(header_count(seen.headers, "authorization") == 1);
      CHECK(seen.header("authorization") == "Token " + c.key);
    } else if (c.service == "s-query") {
      CHECK_FALSE(has_header(seen.headers, "authorization"));
      CHECK(seen.query == "x=1&key=" + c.key);
    } else if (c.service == "s-querydef") {
      CHECK_FALSE(has_header(seen.headers, "authorization"));
      CHECK(seen.query == "x=1&api_key=" + c.key);
    }
    if (c.service == "s-fixed") {
      CHECK(seen.header("cartesia-version") == "2024-06-10");
      CHECK(header_count(seen.headers, "x-extra") == 1);
      CHECK(seen.header("x-extra") == "fixed");
    } else {
      CHECK(seen.header("x-extra") == "from-client");
    }
    // Host names the upstream origin, never keypool.
    CHECK(seen.header("host") == "127.0.0.1:" + std::to_string(up.port()));
  }
}

TEST_CASE("proxy: path, query and method reach the upstream exactly, under base_url's prefix") {
  FakeUpstream up(echo());
  Keypool kp({}, false);
  kp.write_service("pfx", service_yaml("pfx", up.base_url() + "/prefix/v2"));
  kp.write_service("plain", service_yaml("plain", up.base_url()));
  kp.start();
  add_tier(kp, "t", {{"pfx", 1000}, {"plain", 1000}});
  add_key(kp, "a", "sk-pfx-0123456789", "t", "pfx");
  add_key(kp, "b", "sk-plain", "t", "plain");
  std::string token = add_token(kp, {{"tier", "t"}})["token"];

  struct Case {
    std::string method, client_target, upstream_target;
  };
  std::vector<Case> cases = {
      {"GET", "/v1/pfx/chat/completions", "/prefix/v2/chat/completions"},
      {"GET", "/v1/pfx/a/b?model=a%20b&x=1&x=2&empty=&flag", "/prefix/v2/a/b?model=a%20b&x=1&x=2&empty=&flag"},
      {"GET", "/v1/pfx/files/a%20b%2Bc.txt?q=%E2%9C%93", "/prefix/v2/files/a%20b%2Bc.txt?q=%E2%9C%93"},
      {"DELETE", "/v1/pfx/items/42/", "/prefix/v2/items/42/"},
      {"POST", "/v1/plain/v1/messages?beta=true", "/v1/messages?beta=true"},
      {"PUT", "/v1/plain/x:y@z;p=1?a=b=c&d", "/x:y@z;p=1?a=b=c&d"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.client_target);
    up.clear_requests();
    std::string body = c.method == "POST" || c.method == "PUT" ? R"({"hello":"world"})" : "";
    auto r = request(kp.port, c.method, c.client_target, bearer(token), body);
    REQUIRE_MESSAGE(r.status == 200, r.body);
    REQUIRE(up.request_count() == 1);
    auto seen = up.requests()[0];
    CHECK(seen.method == c.method);
    CHECK(seen.target == c.upstream_target);
    CHECK(seen.body == body);
  }

  SUBCASE("unsafe paths are refused before any upstream request") {
    up.clear_requests();
    for (std::string t : {"/v1/pfx/a/../b", "/v1/pfx/./a", "/v1/pfx/a%2Fb", "/v1/pfx/a%2fb", "/v1/pfx/%2e%2e/x"}) {
      CAPTURE(t);
      CHECK(kp.get(t, bearer(token)).status == 400);
    }
    CHECK(up.request_count() == 0);
  }
}

TEST_CASE("proxy: the client's credential is stripped in every inbound form") {
  FakeUpstream up(echo());
  Keypool kp({}, false);
  // The ?api_key= forms need the service to opt in (accept_query_token).
  kp.write_service("svc", service_yaml("svc", up.base_url(), "x-api-key") + "accept_query_token: true\n");
  kp.start();
  std::string token = setup_pool(kp, "svc", {"sk-pooled-key-abc"});

  struct Form {
    std::string name, target;
    HeaderList headers;
    std::string upstream_query;
  };
  std::vector<Form> forms = {
      {"Authorization: Bearer", "/v1/svc/x?a=1", {{"Authorization", "Bearer " + token}}, "a=1"},
      {"Authorization: Token", "/v1/svc/x?a=1", {{"Authorization", "Token " + token}}, "a=1"},
      {"Authorization: raw", "/v1/svc/x?a=1", {{"Authorization", token}}, "a=1"},  // AssemblyAI's SDK
      {"x-api-key", "/v1/svc/x?a=1", {{"x-api-key", token}}, "a=1"},
      {"xi-api-key", "/v1/svc/x?a=1", {{"xi-api-key", token}}, "a=1"},
      {"?api_key= first", "/v1/svc/x?api_key=" + token + "&a=1", {}, "a=1"},
      {"?api_key= middle", "/v1/svc/x?a=1&api_key=" + token + "&b=2", {}, "a=1&b=2"},
      {"?api_key= alone", "/v1/svc/x?api_key=" + token, {}, ""},
  };
  for (const auto& f : forms) {
    CAPTURE(f.name);
    up.clear_requests();
    auto r = kp.get(f.target, f.headers);
    REQUIRE_MESSAGE(r.status == 200, r.body);
    REQUIRE(up.request_count() == 1);
    auto seen = up.requests()[0];
    CHECK_FALSE(upstream_saw(seen, token));
    CHECK(seen.query == f.upstream_query);
    CHECK(seen.path == "/x");
    CHECK_FALSE(has_header(seen.headers, "authorization"));
    CHECK_FALSE(has_header(seen.headers, "xi-api-key"));
    CHECK(header_count(seen.headers, "x-api-key") == 1);
    CHECK(seen.header("x-api-key") == "sk-pooled-key-abc");
  }
}

TEST_CASE("proxy: hop-by-hop headers are dropped in both directions") {
  FakeUpstream up([](const RecordedRequest& req, ResponseWriter& w) {
    std::string body = "ok";
    // Kept fields around Connection: the proxy filters in place, and the field Connection
    // names comes after a kept one has moved into Connection's slot.
    w.head(200, {{"X-End-To-End", "kept"},
                 {"Connection", "X-Up-Hop"},
                 {"X-Also-Kept", "yes"},
                 {"Content-Length", std::to_string(body.size())},
                 {"X-Up-Hop", "secret-hop"},
                 {"Keep-Alive", "timeout=5"},
                 {"Proxy-Connection", "keep-alive"}});
    w.body(body);
    (void)req;
  });
  Keypool kp({}, false);
  kp.write_service("svc", service_yaml("svc", up.base_url()));
  kp.start();
  std::string token = setup_pool(kp, "svc", {"sk-hop-0123456789"});

  auto r = kp.get("/v1/svc/x", {{"Authorization", "Bearer " + token},
                                {"Connection", "close, X-Client-Hop"},
                                {"X-Client-Hop", "drop-me"},
                                {"Keep-Alive", "timeout=5"},
                                {"TE", "trailers"},
                                {"Trailer", "X-Checksum"},
                                {"Proxy-Authorization", "Basic Zm9vOmJhcg=="},
                                {"Proxy-Connection", "keep-alive"},
                                {"X-Keypool-Debug", "1"},
                                {"X-End-To-End", "kept"}});
  REQUIRE_MESSAGE(r.status == 200, r.body);
  CHECK(r.body == "ok");
  REQUIRE(up.request_count() == 1);
  auto seen = up.requests()[0];
  for (const char* h : {"x-client-hop", "keep-alive", "te", "trailer", "proxy-authorization",
                        "proxy-connection", "x-keypool-debug"}) {
    CAPTURE(h);
    CHECK_FALSE(has_header(seen.headers, h));
  }
  CHECK_FALSE(header_lists_token(seen.headers, "connection", "x-client-hop"));
  CHECK(seen.header("x-end-to-end") == "kept");
  // And on the way back.
  CHECK_FALSE(has_header(r.headers, "x-up-hop"));
  CHECK_FALSE(has_header(r.headers, "keep-alive"));
  CHECK_FALSE(has_header(r.headers, "proxy-connection"));
  CHECK_FALSE(header_lists_token(r.headers, "connection", "x-up-hop"));
  CHECK(r.header("x-end-to-end") == "kept");
  CHECK(r.header("x-also-kept") == "yes");
}

TEST_CASE("proxy: the access line names method, path, service and key, never the query") {
  FakeUpstream up(json_ok());
  Keypool kp({{"LOG_LEVEL", "info"}, {"LOG_FORMAT", "json"}}, false);
  kp.write_service("svc", service_yaml("svc", up.base_url()) + "accept_query_token: true\n");
  kp.start();
  std::string token = setup_pool(kp, "svc", {"sk-access-0123456789"});
  // The token rides in the query, which the line must leave out.
  auto r = kp.get("/v1/svc/x/y?api_key=" + token + "&q=1", {});
  REQUIRE(r.status == 200);
  const std::string key_id = r.header("X-Keypool-Key-Id");
  // The line is written before the response is sent; a short bounded wait covers the
  // file's catching up.
  const std::string path_field = "\"path\":\"/v1/svc/x/y\"";
  std::string log;
  for (int i = 0; i < 40; ++i) {
    log = kp.proc->log_contents();
    if (log.find(path_field) != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  const size_t at = log.find(path_field);
  REQUIRE(at != std::string::npos);
  const size_t begin = log.rfind('\n', at) + 1;  // npos + 1 == 0 for the first line
  const std::string line = log.substr(begin, log.find('\n', at) - begin);
  CAPTURE(line);
  CHECK(line.find("\"access\"") != std::string::npos);
  CHECK(line.find("\"method\":\"GET\"") != std::string::npos);
  CHECK(line.find("\"service\":\"svc\"") != std::string::npos);
  CHECK(line.find("\"key_id\":" + key_id) != std::string::npos);
  CHECK(line.find("q=1") == std::string::npos);
  CHECK(line.find(token) == std::string::npos);
}

TEST_CASE("proxy: a token revoked while its keep-alive connection is open stops working on it") {
  FakeUpstream up(json_ok());
  Keypool kp({}, false);
  kp.write_service("svc", service_yaml("svc", up.base_url()));
  kp.start();
  setup_pool(kp, "svc", {"sk-revoke-0123456789"});
  auto created = add_token(kp, {{"tier", "t"}});
  std::string token = created["token"].get<std::string>();
  std::string other = add_token(kp, {{"tier", "t"}, {"name", "other"}})["token"].get<std::string>();

  // One connection, as an SDK keeps it: the token is proved on the first request and
  // presented again on each one after.
  Connection c = Connection::connect("127.0.0.1", kp.port);
  for (int i = 0; i < 2; ++i) {
    c.send("GET", "/v1/svc/x", bearer(token));
    CHECK(c.read_response().status == 200);
  }
  // A wrong token on the same connection is still checked in full.
  std::string wrong = token;
  wrong.back() = wrong.back() == 'A' ? 'B' : 'A';
  c.send("GET", "/v1/svc/x", bearer(wrong));
  CHECK(c.read_response().status == 401);
  c.send("GET", "/v1/svc/x", bearer(other));
  CHECK(c.read_response().status == 200);
  c.send("GET", "/v1/svc/x", bearer(token));
  CHECK(c.read_response().status == 200);

  REQUIRE(kp.admin("DELETE", "/admin/tokens/" + std::to_string(created["id"].get<int64_t>())).status == 200);
  c.send("GET", "/v1/svc/x", bearer(token));
  auto r = c.read_response();
  CHECK(r.status == 401);
  CHECK(r.json()["error"]["code"] == "unauthorized");
  c.send("GET", "/v1/svc/x", bearer(other));
  CHECK(c.read_response().status == 200);
  CHECK(up.request_count() == 5);  // the 401s never reached it
}

TEST_CASE("proxy: a spent pool answers 429 with Retry-After") {
  FakeUpstream up(json_ok());
  Keypool kp({}, false);
  kp.write_service("svc", service_yaml("svc", up.base_url()));
  kp.start();
  std::string token = setup_pool(kp, "svc", {"sk-only-0123456789"}, /*rpm=*/1);

  CHECK(kp.get("/v1/svc/x", bearer(token)).status == 200);
  auto r = kp.get("/v1/svc/x", bearer(token));
  CHECK(r.status == 429);
  auto ra = std::atoi(r.header("Retry-After").c_str());
  CHECK(ra >= 1);
  CHECK(ra <= 60);
  CHECK(r.json()["error"]["code"] == "rate_limited");
  CHECK(up.request_count() == 1);  // the refused request never reached the upstream
}

TEST_CASE("proxy: missing, unknown, revoked and expired tokens get 401; other services 403") {
  FakeUpstream up(json_ok());
  Keypool kp({}, false);
  kp.write_service("svc", service_yaml("svc", up.base_url()));
  kp.write_service("other", service_yaml("other", up.base_url()));
  kp.start();
  add_tier(kp, "t", {{"svc", 1000}, {"other", 1000}});
  add_key(kp, "a", "sk-a-0123456789", "t", "svc");
  add_key(kp, "b", "sk-b-0123456789", "t", "other");
  auto live = add_token(kp, {{"tier", "t"}});
  auto doomed = add_token(kp, {{"tier", "t"}, {"name", "doomed"}});
  auto now_s = std::chrono::duration_cast<std::chrono::seconds>(
                   std::chrono::system_clock::now().time_since_epoch()).count();
  auto expired = add_token(kp, {{"tier", "t"}, {"name", "old"}, {"expires_at", now_s - 60}});
  auto future = add_token(kp, {{"tier", "t"}, {"name", "new"}, {"expires_at", now_s + 3600}});
  auto only_other = add_token(kp, {{"tier", "t"}, {"name", "narrow"}, {"services", {"other"}}});

  CHECK(kp.get("/v1/svc/x").status == 401);
  CHECK(kp.get("/v1/svc/x", bearer("kp_not_a_real_token_000000000000")).status == 401);
  CHECK(kp.get("/v1/svc/x", bearer(live["token"])).status == 200);
  CHECK(kp.get("/v1/svc/x", bearer(future["token"])).status == 200);

  CHECK(kp.get("/v1/svc/x", bearer(doomed["token"])).status == 200);
  auto del = kp.admin("DELETE", "/admin/tokens/" + std::to_string(doomed["id"].get<int64_t>()));
  REQUIRE_MESSAGE(del.status == 200, del.body);
  auto revoked = kp.get("/v1/svc/x", bearer(doomed["token"]));
  CHECK(revoked.status == 401);
  CHECK(revoked.json()["error"]["code"] == "unauthorized");

  auto exp = kp.get("/v1/svc/x", bearer(expired["token"]));
  CHECK(exp.status == 401);
  CHECK(exp.json()["error"]["code"] == "unauthorized");

  auto narrow = kp.get("/v1/svc/x", bearer(only_other["token"]));
  CHECK(narrow.status == 403);
  CHECK(narrow.json()["error"]["code"] == "forbidden");
  CHECK(kp.get("/v1/other/x", bearer(only_other["token"])).status == 200);

  // Only the accepted requests went upstream: live, future, doomed (before revoke), narrow on other.
  CHECK(up.request_count() == 4);
}

TEST_CASE("proxy: SSE events reach the client as the upstream sends them") {
  FakeUpstream up(sse(5, 200));
  Keypool kp({}, false);
  kp.write_service("svc", service_yaml("svc", up.base_url()));
  kp.start();
  std::string token = setup_pool(kp, "svc", {"sk-sse-0123456789"});

  Connection c = Connection::connect("127.0.0.1", kp.port);
  auto t0 = Clock::now();
  c.send("GET", "/v1/svc/stream", {{"Authorization", "Bearer " + token}, {"Accept", "text/event-stream"}});
  auto head = c.read_head();
  REQUIRE(head.status == 200);
  CHECK(head.header("content-type").rfind("text/event-stream", 0) == 0);

  std::string buf;
  std::vector<int64_t> arrivals;  // ms after the request, one per complete event
  bool done = false;
  while (!done) {
    auto chunk = c.read_chunk(5000);
    if (!chunk) break;
    buf += *chunk;
    size_t pos;
    while ((pos = buf.find("\n\n")) != std::string::npos) {
      CHECK(buf.substr(0, pos) == "data: {\"i\":" + std::to_string(arrivals.size()) + "}");
      arrivals.push_back(ms_since(t0));
      buf.erase(0, pos + 2);
    }
    done = arrivals.size() > 5;
  }
  REQUIRE(arrivals.size() == 5);
  CHECK(buf.empty());
  // The upstream spends ~800 ms between its first and last event; a buffering proxy would
  // deliver all five together at the end.
  CHECK(arrivals.back() - arrivals.front() >= 600);
  // Each event comes no earlier than its turn (200 ms apart upstream). Measured from the
  // first event, not the previous one: one late event would make the next gap look short.
  for (size_t i = 1; i < arrivals.size(); ++i) {
    CAPTURE(i);
    CHECK(arrivals[i] - arrivals[0] >= static_cast<int64_t>(i) * 100);
  }
}

TEST_CASE("proxy: HTTPS upstream trusted through UPSTREAM_CA_FILE; an untrusted one is 502") {
  TempDir pki_dir;
  TestPki pki = make_test_pki(pki_dir.path + "/pki");
  FakeUpstream up(echo(), /*tls=*/true, &pki);

  SUBCASE("trusted") {
    Keypool kp({{"UPSTREAM_CA_FILE", pki.ca_cert}}, false);
    kp.write_service("svc", service_yaml("svc", up.base_url() + "/base"));
    kp.start();
    std::string token = setup_pool(kp, "svc", {"sk-tls-key"});
    for (int i = 0; i < 3; ++i) {  // the second and third may reuse a pooled TLS connection
      CAPTURE(i);
      auto r = kp.get("/v1/svc/secure?z=9", bearer(token));
      REQUIRE_MESSAGE(r.status == 200, r.body);
      CHECK(r.json()["target"] == "/base/secure?z=9");
      CHECK(r.json()["headers"]["authorization"] == "Bearer sk-tls-key");
    }
  }
  SUBCASE("not trusted") {
    Keypool kp({}, false);
    kp.write_service("svc", service_yaml("svc", up.base_url()));
    kp.start();
    std::string token = setup_pool(kp, "svc", {"sk-tls-key"});
    auto r = kp.get("/v1/svc/secure", bearer(token));
    CHECK(r.status == 502);
    CHECK(r.json()["error"]["code"] == "bad_gateway");
    CHECK(up.request_count() == 0);
    CHECK(r.body.find("sk-tls-key") == std::string::npos);
  }
}

TEST_CASE("proxy: upstream down is 502 JSON; a slow upstream is 504") {
  std::map<std::string, std::string> cfg;
  SUBCASE("connection refused") {
    uint16_t dead = closed_port();
    Keypool kp({}, false);
    kp.write_service("svc", service_yaml("svc", "http://127.0.0.1:" + std::to_string(dead)));
    kp.start();
    std::string token = setup_pool(kp, "svc", {"sk-down-0123456789"});
    auto t0 = Clock::now();
    auto r = kp.get("/v1/svc/x", bearer(token));
    CHECK(r.status == 502);
    CHECK(r.header("content-type").find("application/json") != std::string::npos);
    CHECK(r.json()["error"]["code"] == "bad_gateway");
    CHECK(ms_since(t0) < 10000);
  }
  // With one key and the default max_attempts the timeout also goes through failover,
  // which must still end in 504 once no other key is left.
  SUBCASE("no response head within upstream_head_ms, one attempt") {
    cfg = {{"upstream_head_ms", "400"}, {"max_attempts", "1"}};
  }
  SUBCASE("no response head within upstream_head_ms, default attempts") { cfg = {{"upstream_head_ms", "400"}}; }
  if (cfg.count("upstream_head_ms")) {
    FakeUpstream up([](const RecordedRequest&, ResponseWriter& w) {
      w.sleep_ms(5000);
      if (!w.client_gone()) w.head(200, {{"Content-Length", "0"}});
    });
    Keypool kp({}, false);
    kp.write_config(cfg);
    kp.write_service("svc", service_yaml("svc", up.base_url()));
    kp.start();
    std::string token = setup_pool(kp, "svc", {"sk-slow-0123456789"});
    auto t0 = Clock::now();
    auto r = kp.get("/v1/svc/x", bearer(token));
    auto took = ms_since(t0);
    CHECK(r.status == 504);
    CHECK(r.json()["error"]["code"] == "upstream_timeout");
    CHECK(took >= 350);
    CHECK(took < 4000);
  }
}

TEST_CASE("proxy: an upstream cut mid-body gives the client a broken response, never a clean end") {
  FakeUpstream up(json_ok());
  Keypool kp({}, false);
  kp.write_service("svc", service_yaml("svc", up.base_url()));
  kp.start();
  std::string token = setup_pool(kp, "svc", {"sk-cut-0123456789"});

  SUBCASE("Content-Length declared") {
    up.set_handler([](const RecordedRequest&, ResponseWriter& w) {
      w.head(200, {{"Content-Type", "application/octet-stream"}, {"Content-Length", "100000"}});
      w.body(std::string(10000, 'z'));
      w.sleep_ms(300);  // the head and the first bytes have surely gone to the client by now
      w.close_now();
    });
    Connection c = Connection::connect("127.0.0.1", kp.port);
    c.send("GET", "/v1/svc/file", bearer(token));
    auto head = c.read_head();
    REQUIRE(head.status == 200);
    CHECK(head.header("content-length") == "100000");
    auto body = read_body(c, 5000);
    CHECK(body.end == BodyEnd::Broken);
    CHECK(body.bytes == 10000);  // all that was sent before the cut, and nothing passed off as more
  }
  SUBCASE("chunked") {
    up.set_handler([](const RecordedRequest&, ResponseWriter& w) {
      w.head(200, {{"Content-Type", "text/plain"}});
      w.body("first chunk\n");
      w.sleep_ms(300);
      w.close_now();
    });
    Connection c = Connection::connect("127.0.0.1", kp.port);
    c.send("GET", "/v1/svc/file", bearer(token));
    auto head = c.read_head();
    REQUIRE(head.status == 200);
    auto body = read_body(c, 5000);
    CHECK(body.end == BodyEnd::Broken);  // never the terminating zero-size chunk
    CHECK(body.bytes == 12);
  }
}

TEST_CASE("proxy: big upload streams through in bounded memory") {
  const uint64_t n = big_bytes();
  FakeUpstream up(echo());
  up.set_store_bodies(false);
  Keypool kp({}, false);
  kp.write_service("svc", service_yaml("svc", up.base_url()));
  kp.start();
  std::string token = setup_pool(kp, "svc", {"sk-up-0123456789"});
  REQUIRE(kp.get("/v1/svc/warmup", bearer(token)).status == 200);
  long idle = rss_kib(kp.proc->pid());
  REQUIRE(idle > 0);

  RssSampler sampler(kp.proc->pid());
  Connection c = Connection::connect("127.0.0.1", kp.port, 30000);
  c.send("POST", "/v1/svc/upload",
         {{"Authorization", "Bearer " + token}, {"Content-Type", "application/octet-stream"},
          {"Content-Length", std::to_string(n)}});
  const std::string block(1 << 20, 'u');
  for (uint64_t sent = 0; sent < n;) {
    size_t k = static_cast<size_t>(std::min<uint64_t>(block.size(), n - sent));
    c.send_raw(std::string_view(block).substr(0, k));
    sent += k;
  }
  auto r = c.read_response();
  long peak = sampler.finish();
  REQUIRE_MESSAGE(r.status == 200, r.body);
  CHECK(r.json()["body_bytes"].get<uint64_t>() == n);
  MESSAGE("upload " << n << " bytes: idle RSS " << idle << " KiB, peak " << peak << " KiB");
  CHECK(peak - idle <= kRssSlackKib);
}

TEST_CASE("proxy: big download streams through in bounded memory") {
  const uint64_t n = big_bytes();
  FakeUpstream up(big_download(n));
  Keypool kp({}, false);
  kp.write_service("svc", service_yaml("svc", up.base_url()));
  kp.start();
  std::string token = setup_pool(kp, "svc", {"sk-down-0123456789"});
  up.set_handler(json_ok());
  REQUIRE(kp.get("/v1/svc/warmup", bearer(token)).status == 200);
  up.set_handler(big_download(n));
  long idle = rss_kib(kp.proc->pid());
  REQUIRE(idle > 0);

  RssSampler sampler(kp.proc->pid());
  Connection c = Connection::connect("127.0.0.1", kp.port, 30000);
  c.send("GET", "/v1/svc/download", bearer(token));
  auto head = c.read_head();
  REQUIRE(head.status == 200);
  CHECK(head.header("content-length") == std::to_string(n));
  // Checks every byte against the pattern without building the whole body.
  static const std::string pattern = download_pattern(0, (1 << 20) + 26);
  uint64_t got = 0;
  bool match = true;
  CAPTURE(got);
  while (auto chunk = c.read_chunk(10000)) {
    for (size_t off = 0; off < chunk->size() && match;) {
      size_t k = std::min<size_t>(1 << 20, chunk->size() - off);
      match = std::memcmp(chunk->data() + off, pattern.data() + (got + off) % 26, k) == 0;
      off += k;
    }
    got += chunk->size();
  }
  long peak = sampler.finish();
  CHECK(got == n);
  CHECK(match);
  MESSAGE("download " << n << " bytes: idle RSS " << idle << " KiB, peak " << peak << " KiB");
  CHECK(peak - idle <= kRssSlackKib);
}

// An embeddings batch answers with megabytes of JSON and its usage at the very end. The
// usage is read as the body streams past, so it counts, however big the body, and the body
// is not held.
TEST_CASE("proxy: a big JSON answer's usage is counted without holding the body") {
  const std::string head = R"({"object":"list","data":[{"object":"embedding","embedding":[)";
  const std::string tail = R"(0.5]}],"model":"m","usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}})";
  std::string piece;
  while (piece.size() < (64 << 10)) piece += "0.0123456789,-0.9876543210,";
  const int pieces = 1024;  // about 64 MiB
  FakeUpstream up([&](const RecordedRequest&, ResponseWriter& w) {
    w.head(200, {{"Content-Type", "application/json"}});  // chunked
    w.body(head);
    for (int i = 0; i < pieces; ++i) w.body(piece);
    w.body(tail);
    w.end();
  });
  Keypool kp({}, false);
  kp.write_service("svc", service_yaml("svc", up.base_url()));
  kp.start();
  add_tier(kp, "t", {{"svc", 1000}});
  int64_t key = add_key(kp, "k", "sk-embed-key", "t", "svc");
  std::string token = add_token(kp, {{"tier", "t"}})["token"];
  long idle = rss_kib(kp.proc->pid());
  REQUIRE(idle > 0);

  RssSampler sampler(kp.proc->pid());
  Connection c = Connection::connect("127.0.0.1", kp.port, 30000);
  c.send("POST", "/v1/svc/v1/embeddings", bearer(token), R"({"input":["a"]})");
  auto h = c.read_head();
  REQUIRE(h.status == 200);
  uint64_t got = 0;
  std::string last;
  while (auto chunk = c.read_chunk(10000)) {
    got += chunk->size();
    last += *chunk;  // the body's last bytes, not the body
    if (last.size() > tail.size()) last.erase(0, last.size() - tail.size());
  }
  long peak = sampler.finish();
  CHECK(got == head.size() + pieces * piece.size() + tail.size());
  CHECK(last == tail);
  MESSAGE("JSON body " << got << " bytes: idle RSS " << idle << " KiB, peak " << peak << " KiB");
  CHECK(peak - idle <= kRssSlackKib);

  json counters = key_counters(kp, key, 1);
  CAPTURE(counters.dump());
  CHECK(counters["input_tokens"] == 7);
  CHECK(counters["output_tokens"] == 3);
}

TEST_CASE("proxy: failover to the next key before the client sees a byte") {
  // Key A is refused (401 or 500 per subcase); key B works.
  auto handler_for = [](int a_status) {
    return [a_status](const RecordedRequest& req, ResponseWriter& w) {
      if (req.header("authorization") == "Bearer sk-key-A") {
        std::string body = R"({"error":"no"})";
        w.head(a_status, {{"Content-Type", "application/json"},
                          {"Content-Length", std::to_string(body.size())}});
        w.body(body);
        return;
      }
      echo()(req, w);
    };
  };
  FakeUpstream up(json_ok());
  Keypool kp({}, false);
  kp.write_service("svc", service_yaml("svc", up.base_url()));
  kp.start();
  add_tier(kp, "t", {{"svc", 1000}});
  int64_t key_a = add_key(kp, "A", "sk-key-A", "t", "svc");
  int64_t key_b = add_key(kp, "B", "sk-key-B", "t", "svc");
  std::string token = add_token(kp, {{"tier", "t"}})["token"];
  auto a_attempts = [&] {
    int n = 0;
    for (const auto& r : up.requests()) n += r.header("authorization") == "Bearer sk-key-A";
    return n;
  };

  SUBCASE("401 suspends key A") {
    up.set_handler(handler_for(401));
    // Round-robin: within two requests one of them starts with A.
    for (int i = 0; i < 2; ++i) {
      CAPTURE(i);
      auto r = kp.get("/v1/svc/x", bearer(token));
      CHECK(r.status == 200);
      CHECK(r.header("X-Keypool-Key-Id") == std::to_string(key_b));
    }
    CHECK(a_attempts() == 1);
    json a;
    for (int i = 0; i < 100; ++i) {  // the suspension may land a moment later
      auto keys = kp.admin("GET", "/admin/keys").json()["keys"];
      for (const auto& k : keys)
        if (k["id"] == key_a) a = k;
      if (a.value("state", "") == "suspended") break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    CAPTURE(a.dump());
    CHECK(a["enabled"] == true);
    CHECK(a["state"] == "suspended");
    // From now on only B is used.
    for (int i = 0; i < 3; ++i) CHECK(kp.get("/v1/svc/x", bearer(token)).status == 200);
    CHECK(a_attempts() == 1);
  }
  SUBCASE("500 on key A then 200 on key B") {
    up.set_handler(handler_for(500));
    for (int i = 0; i < 2; ++i) {
      CAPTURE(i);
      auto r = kp.get("/v1/svc/x", bearer(token));
      CHECK(r.status == 200);
      CHECK(r.header("X-Keypool-Key-Id") == std::to_string(key_b));
    }
    CHECK(a_attempts() >= 1);  // A may or may not be cooled after its 500
  }
  SUBCASE("every key failing: the client gets the upstream's last answer, not a keypool error") {
    // Failover has nowhere left to go after B; the 500 must reach the client as it was.
    up.set_handler([](const RecordedRequest&, ResponseWriter& w) {
      std::string body = R"({"error":"down for everyone"})";
      w.head(500, {{"Content-Type", "application/json"}, {"Content-Length", std::to_string(body.size())}});
      w.body(body);
    });
    auto r = kp.get("/v1/svc/x", bearer(token));
    CHECK(r.status == 500);
    CHECK(r.body == R"({"error":"down for everyone"})");
    CHECK(up.request_count() == 2);  // A and B, once each
  }
  SUBCASE("a request body beyond the replay buffer is not retried") {
    up.set_handler([](const RecordedRequest&, ResponseWriter& w) {
      std::string body = R"({"error":"boom"})";
      w.head(500, {{"Content-Type", "application/json"}, {"Content-Length", std::to_string(body.size())}});
      w.body(body);
    });
    up.set_store_bodies(false);
    std::string big((1 << 20) + (256 << 10), 'b');  // 1.25 MiB > replay_buffer_bytes (1 MiB)
    auto r = request(kp.port, "POST", "/v1/svc/upload", bearer(token), big);
    CHECK(r.status == 500);
    CHECK(r.body == R"({"error":"boom"})");
    REQUIRE(up.request_count() == 1);
    CHECK(up.requests()[0].body_bytes == big.size());
  }
}

// An upstream that drops a keep-alive connection as idle can do so just as keypool sends the
// next request on it. Nothing came back, so keypool sends the request again, with the same
// key, on a new connection: with a single key the client would otherwise get a 502, and the
// key would carry an error it did not cause.
TEST_CASE("proxy: a pooled connection the upstream dropped is retried once on a new one, same key") {
  bool reset = false;
  SUBCASE("closed (FIN)") { reset = false; }
  SUBCASE("reset (RST)") { reset = true; }
  // The second request on connection 1 meets a close; every other request is echoed.
  std::atomic<int> on_first{0};
  FakeUpstream up([&](const RecordedRequest& req, ResponseWriter& w) {
    if (req.connection_id == 1 && ++on_first == 2) {
      if (reset) return w.close_now();
      return w.raw("");
    }
    echo()(req, w);
  });
  Keypool kp({}, false);
  kp.write_service("svc", service_yaml("svc", up.base_url()));
  kp.start();
  add_tier(kp, "t", {{"svc", 1000}});
  int64_t key = add_key(kp, "only", "sk-only-key", "t", "svc");
  std::string token = add_token(kp, {{"tier", "t"}})["token"];

  REQUIRE(kp.get("/v1/svc/first", bearer(token)).status == 200);
  // A POST: its body must reach the new connection whole.
  auto r = request(kp.port, "POST", "/v1/svc/second", bearer(token), "hello body");
  CHECK_MESSAGE(r.status == 200, r.body);
  CHECK(r.header("X-Keypool-Key-Id") == std::to_string(key));
  auto reqs = up.requests();
  REQUIRE(reqs.size() == 3);
  CHECK(reqs[1].connection_id == 1);
  CHECK(reqs[1].path == "/second");
  CHECK(reqs[2].connection_id == 2);
  CHECK(reqs[2].path == "/second");
  CHECK(reqs[2].body == "hello body");
  CHECK(reqs[2].header("authorization") == "Bearer sk-only-key");
  CHECK(json::parse(r.body)["connection_id"] == 2);

  // Two requests, neither counted as an error against the key (usage lands within a second).
  json counters = key_counters(kp, key, 2);
  CAPTURE(counters.dump());
  CHECK(counters["requests"] == 2);
  CHECK(counters["errors"] == 0);
}

TEST_CASE("proxy: a request whose fresh retry fails too is answered 502, not retried again") {
  // The first request is answered; every later one meets a reset. The retry on a new
  // connection fails too, and that failure is final.
  FakeUpstream up([&](const RecordedRequest& req, ResponseWriter& w) {
    if (req.path == "/ok") return echo()(req, w);
    w.close_now();
  });
  Keypool kp({}, false);
  kp.write_service("svc", service_yaml("svc", up.base_url()));
  kp.start();
  add_tier(kp, "t", {{"svc", 1000}});
  add_key(kp, "only", "sk-only-key", "t", "svc");
  std::string token = add_token(kp, {{"tier", "t"}})["token"];

  REQUIRE(kp.get("/v1/svc/ok", bearer(token)).status == 200);
  auto r = kp.get("/v1/svc/drop", bearer(token));
  CHECK(r.status == 502);
  CHECK(json::parse(r.body)["error"]["code"] == "bad_gateway");
  // Once on the pooled connection, once on a new one; no third try.
  CHECK(up.request_count() == 3);
  CHECK(up.connections_accepted() == 2);
}

TEST_CASE("proxy: Upgrade requests are tunnelled after the upstream's 101") {
  FakeUpstream up(upgrade_echo());
  Keypool kp({}, false);
  kp.write_service("svc", service_yaml("svc", up.base_url()));
  kp.start();
  std::string token = setup_pool(kp, "svc", {"sk-ws-0123456789"});

  Connection c = Connection::connect("127.0.0.1", kp.port);
  c.send("GET", "/v1/svc/ws",
         {{"Authorization", "Bearer " + token},
          {"Connection", "Upgrade"},
          {"Upgrade", "websocket"},
          {"Sec-WebSocket-Version", "13"},
          {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}});
  auto head = c.read_head();
  REQUIRE(head.status == 101);
  CHECK(header_lists_token(head.headers, "connection", "upgrade"));
  CHECK(head.header("upgrade") == "websocket");

  for (std::string msg : {std::string("hello"), std::string("\x81\x05world", 7), std::string(100000, 'w')}) {
    CAPTURE(msg.size());
    c.send_raw(msg);
    std::string back;
    while (back.size() < msg.size()) {
      auto part = c.read_raw(msg.size() - back.size(), 5000);
      if (part.empty()) break;  // timeout or EOF
      back += part;
    }
    CHECK(back == msg);
  }
  REQUIRE(up.request_count() == 1);
  auto seen = up.requests()[0];
  CHECK(seen.path == "/ws");
  CHECK(seen.header("upgrade") == "websocket");
  CHECK(header_lists_token(seen.headers, "connection", "upgrade"));
  CHECK(seen.header("authorization") == "Bearer sk-ws-0123456789");
  CHECK(seen.header("sec-websocket-key") == "dGhlIHNhbXBsZSBub25jZQ==");
  CHECK_FALSE(upstream_saw(seen, token));

  // Closing the client's side ends the tunnel: the upstream sees EOF and keypool closes.
  c.shutdown_write();
  CHECK(c.closed_by_peer(5000));
}
