// The pool under pressure, end to end: the real binary between the test client and a
// FakeUpstream that answers per key (by the Authorization it received). Failover on 429
// with each provider's reset header, cooldowns that end, 401s that suspend a key (and the
// audit rows that say so), connection drops before and after the first byte, exact rpm
// accounting under concurrency, token rpm caps, max_concurrent and max_wait_ms, session
// affinity, rotation, expiry, usage counting, 429 storms, /metrics and SIGHUP reloads.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <ctime>
#include <latch>
#include <map>
#include <mutex>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "fixture.h"
#include "proxy_helpers.h"
#include "support/fake_upstream.h"

using namespace keypool::testing;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

HeaderList bearer_of(const std::string& token) { return {{"Authorization", "Bearer " + token}}; }


int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// "2024-05-01T12:00:30.250Z"
std::string rfc3339_ms(int64_t ms) {
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[48];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[64];
  std::snprintf(out, sizeof out, "%s.%03dZ", buf, static_cast<int>(ms % 1000));
  return out;
}

// keypool's iso_time ("2024-05-01T12:00:30Z") -> Unix ms; 0 when it does not parse.
int64_t parse_iso_ms(const std::string& s) {
  std::tm tm{};
  const char* end = strptime(s.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (!end || *end) return 0;
  return static_cast<int64_t>(timegm(&tm)) * 1000;
}

// A complete JSON answer.
void reply(ResponseWriter& w, int status, const std::string& body, HeaderList extra = {}) {
  extra.push_back({"Content-Type", "application/json"});
  extra.push_back({"Content-Length", std::to_string(body.size())});
  w.head(status, extra);
  w.body(body);
}

// Requests the upstream received with this key (bearer scheme).
int count_key(const FakeUpstream& up, const std::string& value) {
  int n = 0;
  for (const auto& r : up.requests()) n += r.header("authorization") == "Bearer " + value;
  return n;
}

// Polls pred every step_ms until it holds or timeout_ms has passed; returns its last answer.
template <class Pred>
bool wait_until(Pred pred, int timeout_ms, int step_ms = 25) {
  auto t0 = Clock::now();
  for (;;) {
    if (pred()) return true;
    if (ms_since(t0) >= timeout_ms) return pred();
    std::this_thread::sleep_for(std::chrono::milliseconds(step_ms));
  }
}

// The key's row from GET /admin/keys (null when absent).
json key_row(Keypool& kp, int64_t id) {
  auto r = kp.admin("GET", "/admin/keys");
  REQUIRE_MESSAGE(r.status == 200, r.body);
  json keys = r.json()["keys"];  // held: a range-for over r.json()[...] would outlive its temporary
  for (const auto& k : keys)
    if (k["id"] == id) return k;
  return nullptr;
}

int64_t add_key_with(Keypool& kp, json body) {
  auto r = kp.admin("POST", "/admin/keys", body);
  REQUIRE_MESSAGE(r.status == 201, "POST /admin/keys: " << r.status << " " << r.body);
  return r.json()["id"].get<int64_t>();
}



// How a streamed response body ended, as the client saw it.
enum class BodyEnd { Complete, Broken, Timeout };
BodyEnd read_to_end(Connection& c, int timeout_ms, uint64_t* bytes) {
  try {
    while (auto chunk = c.read_chunk(timeout_ms)) *bytes += chunk->size();
  } catch (const TimeoutError&) {
    return BodyEnd::Timeout;
  } catch (const std::exception&) {
    return BodyEnd::Broken;
  }
  return BodyEnd::Complete;
}

}  // namespace

TEST_CASE("pressure: a 429 fails over with each reset style; the key cools until the reset, then serves again") {
  // Three services, each with keys A and B; A answers 429 with one provider's reset header
  // while `refuse` is set.
  struct Style {
    std::string service, a, b;
    int64_t a_id = 0, b_id = 0;
  };
  std::vector<Style> styles = {{"s-ra", "sk-ra-A-1111", "sk-ra-B-1111"},
                               {"s-oai", "sk-oai-A-2222", "sk-oai-B-2222"},
                               {"s-anth", "sk-anth-A-3333", "sk-anth-B-3333"}};
  std::atomic<bool> refuse{true};
  FakeUpstream up([&](const RecordedRequest& req, ResponseWriter& w) {
    auto auth = req.header("authorization");
    if (refuse) {
      std::string err = R"({"error":{"message":"rate limited"}})";
      if (auth == "Bearer " + styles[0].a) return reply(w, 429, err, {{"Retry-After", "2"}});
      if (auth == "Bearer " + styles[1].a) return reply(w, 429, err, {{"x-ratelimit-reset-requests", "2s"}});
      if (auth == "Bearer " + styles[2].a)
        return reply(w, 429, err, {{"anthropic-ratelimit-requests-reset", rfc3339_ms(wall_ms() + 2000)}});
    }
    reply(w, 200, R"({"ok":true})");
  });
  Keypool kp({}, false);
  for (const auto& s : styles) kp.write_service(s.service, service_yaml(s.service, up.base_url()));
  kp.start();
  add_tier(kp, "t", {{"s-ra", 1000}, {"s-oai", 1000}, {"s-anth", 1000}});
  for (auto& s : styles) {
    s.a_id = add_key(kp, s.service + "-A", s.a, "t", s.service);
    s.b_id = add_key(kp, s.service + "-B", s.b, "t", s.service);
  }
  std::string token = add_token(kp, {{"tier", "t"}})["token"];

  const int64_t sent_at = wall_ms();
  for (const auto& s : styles) {
    CAPTURE(s.service);
    // Round-robin starts at A: it answers 429, the client gets B's success.
    auto r = kp.get("/v1/" + s.service + "/x", bearer_of(token));
    CHECK_MESSAGE(r.status == 200, r.body);
    CHECK(r.header("X-Keypool-Key-Id") == std::to_string(s.b_id));
    CHECK(count_key(up, s.a) == 1);
    CHECK(count_key(up, s.b) == 1);
    // While A cools, the next request (whose turn would be A's) goes to B without trying A.
    r = kp.get("/v1/" + s.service + "/x", bearer_of(token));
    CHECK(r.status == 200);
    CHECK(r.header("X-Keypool-Key-Id") == std::to_string(s.b_id));
    CHECK(count_key(up, s.a) == 1);
  }
  for (const auto& s : styles) {
    CAPTURE(s.service);
    json a = key_row(kp, s.a_id);
    CAPTURE(a.dump());
    CHECK(a["state"] == "cooling");
    REQUIRE(a.contains("cooling_until"));
    int64_t until = parse_iso_ms(a["cooling_until"].get<std::string>());
    // ~2 s after the 429 (iso_time has whole seconds): never the 60 s default.
    CHECK(until >= sent_at);
    CHECK(until <= sent_at + 4000);
    CHECK(key_row(kp, s.b_id)["state"] == "active");
  }
  // Each cooldown is audited: actor system, target the key's id.
  auto audit = kp.admin("GET", "/admin/audit?action=key.cooldown");
  REQUIRE_MESSAGE(audit.status == 200, audit.body);
  json cooldown_rows = audit.json()["audit"];
  for (const auto& s : styles) {
    CAPTURE(s.service);
    bool found = false;
    for (const auto& row : cooldown_rows)
      found = found || (row["action"] == "key.cooldown" && row["actor"] == "system" &&
                        row["target"] == std::to_string(s.a_id));
    CHECK(found);
  }

  // After the reset A is active again and gets traffic.
  refuse = false;
  bool all_active = wait_until(
      [&] {
        for (const auto& s : styles)
          if (key_row(kp, s.a_id)["state"] != "active") return false;
        return true;
      },
      5000, 100);
  CHECK(all_active);
  for (const auto& s : styles) {
    CAPTURE(s.service);
    for (int i = 0; i < 2; ++i) CHECK(kp.get("/v1/" + s.service + "/x", bearer_of(token)).status == 200);
    CHECK(count_key(up, s.a) == 2);  // the 429 and one success after the reset
  }
}

TEST_CASE("pressure: a 401 suspends the key with a system audit row; PATCH enabled brings it back") {
  std::atomic<bool> reject_a{true};
  FakeUpstream up([&](const RecordedRequest& req, ResponseWriter& w) {
    if (reject_a && req.header("authorization") == "Bearer sk-dis-A-4444")
      return reply(w, 401, R"({"error":"invalid api key"})");
    reply(w, 200, R"({"ok":true})");
  });
  Keypool kp({}, false);
  kp.write_service("svc", service_yaml("svc", up.base_url()));
  kp.start();
  add_tier(kp, "t", {{"svc", 1000}});
  int64_t a = add_key(kp, "A", "sk-dis-A-4444", "t", "svc");
  int64_t b = add_key(kp, "B", "sk-dis-B-4444", "t", "svc");
  std::string token = add_token(kp, {{"tier", "t"}})["token"];

  auto r = kp.get("/v1/svc/x", bearer_of(token));
  CHECK(r.status == 200);
  CHECK(r.header("X-Keypool-Key-Id") == std::to_string(b));
  CHECK(count_key(up, "sk-dis-A-4444") == 1);

  json row;
  CHECK(wait_until([&] { return (row = key_row(kp, a)).value("state", "") == "suspended"; }, 3000));
  CAPTURE(row.dump());
  CHECK(row["enabled"] == true);  // suspended by keypool, not disabled by an admin
  CHECK(row["suspended_reason"] == "invalid");

  json disable_row;
  CHECK(wait_until(
      [&] {
        auto audit = kp.admin("GET", "/admin/audit?action=key.suspend");
        if (audit.status != 200) return false;
        json rows = audit.json()["audit"];
        for (const auto& x : rows)
          if (x["target"] == std::to_string(a)) disable_row = x;
        return !disable_row.is_null();
      },
      3000));
  CAPTURE(disable_row.dump());
  CHECK(disable_row["actor"] == "system");
  CHECK(disable_row["action"] == "key.suspend");
  CHECK(disable_row["details"]["state"] == "suspended");
  CHECK(disable_row["details"]["reason"] == "invalid");
  CHECK(disable_row["details"]["status"] == 401);

  // Suspended: only B is used.
  for (int i = 0; i < 3; ++i) CHECK(kp.get("/v1/svc/x", bearer_of(token)).status == 200);
  CHECK(count_key(up, "sk-dis-A-4444") == 1);

  reject_a = false;
  auto p = kp.admin("PATCH", "/admin/keys/" + std::to_string(a), {{"enabled", true}});
  REQUIRE_MESSAGE(p.status == 200, p.body);
  CHECK(key_row(kp, a)["state"] == "active");
  std::set<std::string> served_by;
  for (int i = 0; i < 4; ++i) {
    auto x = kp.get("/v1/svc/x", bearer_of(token));
    CHECK(x.status == 200);
    served_by.insert(x.header("X-Keypool-Key-Id"));
  }
  CHECK(served_by.count(std::to_string(a)) == 1);
  CHECK(count_key(up, "sk-dis-A-4444") >= 2);
}

TEST_CASE("pressure: a connection drop before the head fails over; /metrics counts exactly and leaks nothing") {
  FakeUpstream up([](const RecordedRequest& req, ResponseWriter& w) {
    if (req.header("authorization") == "Bearer sk-drop-A-5555") return w.close_now();
    reply(w, 200, R"({"ok":true})");
  });
  Keypool kp({}, false);
  kp.write_service("svc", service_yaml("svc", up.base_url()));
  kp.start();
  add_tier(kp, "t", {{"svc", 1000}});
  add_key(kp, "A", "sk-drop-A-5555", "t", "svc");
  int64_t b = add_key(kp, "B", "sk-drop-B-5555", "t", "svc");
  std::string token = add_token(kp, {{"tier", "t"}})["token"];

  const std::string ok_series = R"(keypool_requests_total{service="svc",route="proxy",status="2xx"})";
  const std::string fo_series = R"(keypool_failovers_total{service="svc"})";
  const std::string up_series = R"(keypool_upstream_duration_seconds_count{service="svc"})";
  std::string before = metrics_text(kp);
  double ok0 = metric_value(before, ok_series), fo0 = metric_value(before, fo_series);
  double up0 = metric_value(before, up_series);

  const int n = 5;
  for (int i = 0; i < n; ++i) {
    CAPTURE(i);
    auto r = kp.get("/v1/svc/x", bearer_of(token));
    CHECK_MESSAGE(r.status == 200, r.body);
    CHECK(r.header("X-Keypool-Key-Id") == std::to_string(b));
  }
  CHECK(count_key(up, "sk-drop-A-5555") >= 1);
  CHECK(count_key(up, "sk-drop-B-5555") == n);

  std::string after = metrics_text(kp);
  CHECK(metric_value(after, ok_series) - ok0 == n);
  CHECK(metric_value(after, fo_series) - fo0 >= 1);
  // Only answers have a time to the response head: the dropped attempts have none.
  CHECK(metric_value(after, up_series) - up0 == n);

  // Prometheus text: comments, or `name{labels} value` / `name value`.
  static const std::regex sample(
      R"(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*"(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*")*)?\})? (-?[0-9.]+([eE][-+]?[0-9]+)?|NaN|[+-]Inf)$)");
  std::istringstream in(after);
  std::string line;
  int samples = 0;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    CAPTURE(line);
    CHECK(std::regex_match(line, sample));
    ++samples;
  }
  CHECK(samples > 0);
  for (const std::string& secret : {std::string("sk-drop-A-5555"), std::string("sk-drop-B-5555"), token, kAdminToken}) {
    INFO("a secret appears in /metrics (length " << secret.size() << ")");
    CHECK(after.find(secret) == std::string::npos);
  }
}

TEST_CASE("pressure: every upstream answer's time is recorded, a failed-over attempt's too") {
  // Key A answers 500 (a head, then a failover); key B answers 200.
  FakeUpstream up([](const RecordedRequest& req, ResponseWriter& w) {
    if (req.header("authorization") == "Bearer sk-five-A-6666") return reply(w, 500, R"({"error":"down"})");
    reply(w, 200, R"({"ok":true})");
  });
  Keypool kp({}, false);
  kp.write_service("svc", service_yaml("svc", up.base_url()));
  kp.start();
  add_tier(kp, "t", {{"svc", 1000}});
  add_key(kp, "A", "sk-five-A-6666", "t", "svc");
  add_key(kp, "B", "sk-five-B-6666", "t", "svc");
  std::string token = add_token(kp, {{"tier", "t"}})["token"];

  const std::string up_series = R"(keypool_upstream_duration_seconds_count{service="svc"})";
  const double up0 = metric_value(metrics_text(kp), up_series);
  const int n = 4;
  for (int i = 0; i < n; ++i) CHECK(kp.get("/v1/svc/x", bearer_of(token)).status == 200);
  CHECK(count_key(up, "sk-five-A-6666") >= 1);  // at least one request failed over from A
  CHECK(count_key(up, "sk-five-B-6666") == n);
  CHECK(metric_value(metrics_text(kp), up_series) - up0 == static_cast<double>(up.request_count()));
}

TEST_CASE("pressure: a response that already sent bytes is never retried on another key") {
  FakeUpstream up([](const RecordedRequest&, ResponseWriter& w) {
    w.head(200, {{"Content-Type", "text/event-stream"}});
    w.body("data: {\"i\":0}\n\n");
    w.sleep_ms(200);
    w.close_now();
  });
  Keypool kp({}, false);
  kp.write_service("svc", service_yaml("svc", up.base_url()));
  kp.start();
  std::string token = setup_pool(kp, "svc", {"sk-mid-A-6666", "sk-mid-B-6666"});

  Connection c = Connection::connect("127.0.0.1", kp.port);
  c.send("GET", "/v1/svc/stream", bearer_of(token));
  auto head = c.read_head();
  REQUIRE(head.status == 200);
  uint64_t bytes = 0;
  CHECK(read_to_end(c, 5000, &bytes) == BodyEnd::Broken);
  CHECK(bytes == std::string("data: {\"i\":0}\n\n").size());
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // a retry would have gone out by now
  CHECK(up.request_count() == 1);
}

TEST_CASE("pressure: 500 concurrent requests over 4 keys at rpm 50: exactly 200 reach the upstream") {
  FakeUpstream up(json_ok());
  Keypool kp({}, false);
  kp.write_service("svc", service_yaml("svc", up.base_url()));
  kp.start();
  const std::vector<std::string> keys = {"sk-rpm-0-7777", "sk-rpm-1-7777", "sk-rpm-2-7777", "sk-rpm-3-7777"};
  std::string token = setup_pool(kp, "svc", keys, /*rpm=*/50);

  std::atomic<int> ok{0}, limited{0}, other{0}, no_retry_after{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 25; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 20; ++i) {
        try {
          auto r = kp.get("/v1/svc/x", bearer_of(token));
          if (r.status == 200) ++ok;
          else if (r.status == 429) {
            ++limited;
            if (std::atoi(r.header("Retry-After").c_str()) < 1) ++no_retry_after;
          } else {
            ++other;
          }
        } catch (const std::exception&) {
          ++other;
        }
      }
    });
  for (auto& th : threads) th.join();
  CHECK(ok == 200);
  CHECK(limited == 300);
  CHECK(other == 0);
  CHECK(no_retry_after == 0);
  // Counted on the upstream side: no key over its 50, 200 in all.
  CHECK(up.request_count() == 200);
  for (const auto& k : keys) {
    CAPTURE(k);
    CHECK(count_key(up, k) <= 50);
  }
}

TEST_CASE("pressure: a token's rpm cap answers 429 with Retry-After before any key is used") {
  FakeUpstream up(json_ok());
  Keypool kp({}, false);
  kp.write_service("svc", service_yaml("svc", up.base_url()));
  kp.start();
  add_tier(kp, "t", {{"svc", 1000}});
  add_key(kp, "A", "sk-trpm-A-8888", "t", "svc");
  add_key(kp, "B", "sk-trpm-B-8888", "t", "svc");
  std::string token = add_token(kp, {{"tier", "t"}, {"rpm", 3}})["token"];

  for (int i = 0; i < 3; ++i) CHECK(kp.get("/v1/svc/x", bearer_of(token)).status == 200);
  auto r = kp.get("/v1/svc/x", bearer_of(token));
  CHECK(r.status == 429);
  int ra = std::atoi(r.header("Retry-After").c_str());
  CHECK(ra >= 1);
  CHECK(ra <= 60);
  CHECK(r.json()["error"]["code"] == "rate_limited");
  CHECK(up.request_count() == 3);
}

TEST_CASE("pressure: max_concurrent 1 on two keys: a third concurrent request is refused, or waits with max_wait_ms") {
  std::mutex mu;
  std::map<std::string, int> inflight, peak;
  FakeUpstream up([&](const RecordedRequest& req, ResponseWriter& w) {
    auto k = req.header("authorization");
    {
      std::lock_guard<std::mutex> l(mu);
      peak[k] = std::max(peak[k], ++inflight[k]);
    }
    w.sleep_ms(300);
    {
      std::lock_guard<std::mutex> l(mu);
      --inflight[k];
    }
    reply(w, 200, R"({"ok":true})");
  });
  Keypool kp({}, false);
  kp.write_service("svc", service_yaml("svc", up.base_url()));
  kp.start();
  add_tier(kp, "t0", {{"svc", 1000}});
  auto tw = kp.admin("POST", "/admin/tiers", {{"name", "tw"}, {"features", {{"svc", 1000}}}, {"max_wait_ms", 1000}});
  REQUIRE_MESSAGE(tw.status == 201, tw.body);
  for (std::string tier : {"t0", "tw"})
    for (std::string k : {"A", "B"})
      add_key_with(kp, {{"name", tier + k}, {"key", "sk-mc-" + tier + "-" + k + "-9999"}, {"tier", tier},
                        {"service", "svc"}, {"max_concurrent", 1}});
  std::string tok0 = add_token(kp, {{"tier", "t0"}})["token"];
  std::string tokw = add_token(kp, {{"tier", "tw"}, {"name", "waiter"}})["token"];

  struct Result {
    int status = 0;
    int64_t ms = 0;
    std::string retry_after;
  };
  auto burst = [&](const std::string& token) {
    std::vector<Result> out(3);
    std::latch go(3);
    std::vector<std::thread> th;
    for (int i = 0; i < 3; ++i)
      th.emplace_back([&, i] {
        go.arrive_and_wait();
        auto t0 = Clock::now();
        try {
          auto r = kp.get("/v1/svc/x", bearer_of(token));
          out[i] = {r.status, ms_since(t0), r.header("Retry-After")};
        } catch (const std::exception&) {
          out[i] = {-1, ms_since(t0), ""};
        }
      });
    for (auto& t : th) t.join();
    std::sort(out.begin(), out.end(), [](const Result& a, const Result& b) { return a.ms < b.ms; });
    return out;
  };

  SUBCASE("no wait: 429") {
    auto res = burst(tok0);
    // The refused one answers at once; the other two run side by side.
    CHECK(res[0].status == 429);
    CHECK(res[0].ms < res[1].ms - 150);  // answered well before the 300 ms upstream calls end
    CHECK(std::atoi(res[0].retry_after.c_str()) >= 1);
    CHECK(res[1].status == 200);
    CHECK(res[2].status == 200);
    CHECK(res[2].ms < 1000);
    CHECK(up.request_count() == 2);
  }
  SUBCASE("max_wait_ms 1000: the third waits for a slot") {
    auto res = burst(tokw);
    for (const auto& r : res) CHECK(r.status == 200);
    CHECK(res[1].ms < res[2].ms - 150);  // the first two at once, the third a call later
    CHECK(res[2].ms >= 500);  // the third after one of them ended, then its own 300 ms
    CHECK(res[2].ms < 1500);
    CHECK(up.request_count() == 3);
  }
  std::lock_guard<std::mutex> l(mu);
  for (const auto& kv : peak) {
    const auto& k = kv.first;  // a named copy: clang < 16 cannot capture structured bindings
    CAPTURE(k);
    CHECK(kv.second <= 1);
  }
}

TEST_CASE("pressure: max_wait_ms waits out a short cooldown instead of answering 429") {
  std::atomic<int> seen{0};
  FakeUpstream up([&](const RecordedRequest&, ResponseWriter& w) {
    if (seen++ == 0) return reply(w, 429, R"({"error":"slow down"})", {{"Retry-After", "1"}});
    reply(w, 200, R"({"ok":true})");
  });
  Keypool kp({}, false);
  kp.write_service("svc", service_yaml("svc", up.base_url()));
  kp.start();
  auto t = kp.admin("POST", "/admin/tiers", {{"name", "t"}, {"features", {{"svc", 1000}}}, {"max_wait_ms", 2000}});
  REQUIRE_MESSAGE(t.status == 201, t.body);
  add_key(kp, "only", "sk-wait-A-1010", "t", "svc");
  std::string token = add_token(kp, {{"tier", "t"}})["token"];

  // The only key answers 429 (Retry-After: 1): with nowhere to fail over, the client gets it.
  auto first = kp.get("/v1/svc/x", bearer_of(token));
  CHECK(first.status == 429);
  // The next request waits for the cooldown to end, then succeeds on the same key.
  auto t0 = Clock::now();
  auto second = kp.get("/v1/svc/x", bearer_of(token));
  auto took = ms_since(t0);
  CHECK_MESSAGE(second.status == 200, second.body);
  CHECK(took >= 700);
  CHECK(took < 2500);
  CHECK(up.request_count() == 2);
}

TEST_CASE("pressure: X-Keypool-Session keeps a session on one key while other requests rotate") {
  FakeUpstream up(json_ok());
  Keypool kp({}, false);
  kp.write_service("svc", service_yaml("svc", up.base_url()));
  kp.start();
  std::string token = setup_pool(kp, "svc", {"sk-aff-0-1111", "sk-aff-1-1111", "sk-aff-2-1111"});

  std::set<std::string> session_keys, other_keys;
  std::vector<std::string> other_order;
  for (int i = 0; i < 6; ++i) {
    auto h = bearer_of(token);
    h.push_back({"X-Keypool-Session", "conversation-42"});
    auto s = kp.get("/v1/svc/x", h);
    CHECK(s.status == 200);
    session_keys.insert(s.header("X-Keypool-Key-Id"));
    auto o = kp.get("/v1/svc/x", bearer_of(token));
    CHECK(o.status == 200);
    other_keys.insert(o.header("X-Keypool-Key-Id"));
    other_order.push_back(o.header("X-Keypool-Key-Id"));
  }
  CHECK(session_keys.size() == 1);
  CHECK(other_keys.size() == 3);
  for (size_t i = 1; i < other_order.size(); ++i) {
    CAPTURE(i);
    CHECK(other_order[i] != other_order[i - 1]);
  }
}

TEST_CASE("pressure: a rotated key's new value goes upstream from the next request on") {
  FakeUpstream up(json_ok());
  Keypool kp({}, false);
  kp.write_service("svc", service_yaml("svc", up.base_url()));
  kp.start();
  add_tier(kp, "t", {{"svc", 1000}});
  int64_t id = add_key(kp, "rot", "sk-rot-old-1212", "t", "svc");
  std::string token = add_token(kp, {{"tier", "t"}})["token"];

  REQUIRE(kp.get("/v1/svc/x", bearer_of(token)).status == 200);
  CHECK(count_key(up, "sk-rot-old-1212") == 1);
  auto r = kp.admin("POST", "/admin/keys/" + std::to_string(id) + "/rotate", {{"key", "sk-rot-new-1212"}});
  REQUIRE_MESSAGE(r.status == 200, r.body);
  CHECK(r.body.find("sk-rot-new-1212") == std::string::npos);
  for (int i = 0; i < 3; ++i) CHECK(kp.get("/v1/svc/x", bearer_of(token)).status == 200);
  CHECK(count_key(up, "sk-rot-new-1212") == 3);
  CHECK(count_key(up, "sk-rot-old-1212") == 1);
}

TEST_CASE("pressure: an expired key is skipped") {
  FakeUpstream up(json_ok());
  Keypool kp({}, false);
  kp.write_service("svc", service_yaml("svc", up.base_url()));
  kp.start();
  add_tier(kp, "t", {{"svc", 1000}});
  int64_t old = add_key_with(kp, {{"name", "old"}, {"key", "sk-exp-old-1313"}, {"tier", "t"}, {"service", "svc"},
                                  {"expires_at", wall_ms() / 1000 - 60}});
  int64_t live = add_key(kp, "live", "sk-exp-live-1313", "t", "svc");
  std::string token = add_token(kp, {{"tier", "t"}})["token"];

  for (int i = 0; i < 4; ++i) {
    auto r = kp.get("/v1/svc/x", bearer_of(token));
    CHECK(r.status == 200);
    CHECK(r.header("X-Keypool-Key-Id") == std::to_string(live));
  }
  CHECK(count_key(up, "sk-exp-old-1313") == 0);
  CHECK(key_row(kp, old)["state"] == "expired");
}

TEST_CASE("pressure: reported usage (JSON, OpenAI SSE, Anthropic SSE) lands in key and token counters") {
  FakeUpstream up([](const RecordedRequest& req, ResponseWriter& w) {
    auto auth = req.header("authorization");
    if (auth == "Bearer sk-use-json-1414") {
      return reply(w, 200, R"({"id":"c1","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}})");
    }
    w.head(200, {{"Content-Type", "text/event-stream"}});
    if (auth == "Bearer sk-use-sse-1414") {
      w.body("data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n");
      w.body("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":13,\"completion_tokens\":4,\"total_tokens\":17}}\n\n");
      w.body("data: [DONE]\n\n");
    } else {
      w.body("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":"
             "{\"input_tokens\":25,\"output_tokens\":1}}}\n\n");
      w.body("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"hi\"}}\n\n");
      w.body("event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n\n");
      w.body("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    }
    w.end();
  });
  Keypool kp({}, false);
  for (std::string s : {"u-json", "u-sse", "u-anth"}) kp.write_service(s, service_yaml(s, up.base_url()));
  kp.start();
  add_tier(kp, "t", {{"u-json", 1000}, {"u-sse", 1000}, {"u-anth", 1000}});
  int64_t kj = add_key(kp, "json", "sk-use-json-1414", "t", "u-json");
  int64_t ks = add_key(kp, "sse", "sk-use-sse-1414", "t", "u-sse");
  int64_t ka = add_key(kp, "anth", "sk-use-anth-1414", "t", "u-anth");
  auto tok = add_token(kp, {{"tier", "t"}});
  std::string token = tok["token"];
  int64_t token_id = tok["id"];

  for (std::string path : {"/v1/u-json/chat/completions", "/v1/u-json/chat/completions",
                           "/v1/u-sse/chat/completions", "/v1/u-anth/v1/messages"}) {
    CAPTURE(path);
    auto r = kp.get(path, bearer_of(token));
    CHECK(r.status == 200);
    CHECK_FALSE(r.body.empty());
  }

  struct Want {
    int64_t id, requests, in, out;
  };
  std::vector<Want> want = {{kj, 2, 22, 14}, {ks, 1, 13, 4}, {ka, 1, 25, 9}};
  json keys;
  bool match = wait_until(
      [&] {
        auto r = kp.admin("GET", "/admin/keys");
        if (r.status != 200) return false;
        keys = r.json()["keys"];
        for (const auto& w : want) {
          bool ok = false;
          for (const auto& k : keys)
            if (k["id"] == w.id && k.contains("counters"))
              ok = k["counters"]["requests"] == w.requests && k["counters"]["input_tokens"] == w.in &&
                   k["counters"]["output_tokens"] == w.out;
          if (!ok) return false;
        }
        return true;
      },
      3000, 100);
  CAPTURE(keys.dump());
  CHECK(match);

  json trow;
  bool tmatch = wait_until(
      [&] {
        auto r = kp.admin("GET", "/admin/tokens");
        if (r.status != 200) return false;
        json tokens = r.json()["tokens"];
        for (const auto& t : tokens)
          if (t["id"] == token_id) trow = t;
        return !trow.is_null() && trow["requests"] == 4 && trow["input_tokens"] == 60 && trow["output_tokens"] == 27;
      },
      3000, 100);
  CAPTURE(trow.dump());
  CHECK(tmatch);
}

TEST_CASE("pressure: a 429 storm over every key does not cool the pool for the upstream's 60 s") {
  std::atomic<bool> storm{true};
  FakeUpstream up([&](const RecordedRequest&, ResponseWriter& w) {
    if (storm) return reply(w, 429, R"({"error":"too many requests from this address"})", {{"Retry-After", "60"}});
    reply(w, 200, R"({"ok":true})");
  });
  Keypool kp({}, false);
  kp.write_service("svc", service_yaml("svc", up.base_url()));
  kp.start();
  add_tier(kp, "t", {{"svc", 1000}});
  std::vector<int64_t> ids;
  for (int i = 0; i < 4; ++i)
    ids.push_back(add_key(kp, "k" + std::to_string(i), "sk-storm-" + std::to_string(i) + "-1515", "t", "svc"));
  std::string token = add_token(kp, {{"tier", "t"}})["token"];

  // A few requests within a few seconds: every key the upstream sees answers 429.
  int refused = 0;
  for (int i = 0; i < 3; ++i) {
    auto r = kp.get("/v1/svc/x", bearer_of(token));
    CAPTURE(i);
    CHECK(r.status == 429);
    CHECK(std::atoi(r.header("Retry-After").c_str()) >= 1);
    MESSAGE("storm request " << i << ": " << r.status << " Retry-After " << r.header("Retry-After"));
    refused += r.status == 429;
  }
  CHECK(refused == 3);
  MESSAGE("upstream saw " << up.request_count() << " attempts during the storm");

  // The limit was on the address, not the keys: within ~2 s every key is usable again.
  storm = false;
  std::string states;
  bool recovered = wait_until(
      [&] {
        states.clear();
        bool all = true;
        for (int64_t id : ids) {
          auto k = key_row(kp, id);
          states += std::to_string(id) + ":" + k.value("state", "?") + " " + k.value("cooling_until", "") + "; ";
          all = all && k["state"] == "active";
        }
        return all;
      },
      2500, 100);
  CAPTURE(states);
  CHECK(recovered);
  auto r = kp.get("/v1/svc/x", bearer_of(token));
  CHECK(r.status == 200);
}

TEST_CASE("pressure: SIGHUP loads a new service file; a broken file keeps the previous definition") {
  FakeUpstream up(json_ok());
  Keypool kp({}, false);
  kp.write_service("svc1", service_yaml("svc1", up.base_url()));
  kp.start();
  add_tier(kp, "t", {{"svc1", 1000}, {"svc2", 1000}});
  add_key(kp, "one", "sk-hup-1-1616", "t", "svc1");
  add_key(kp, "two", "sk-hup-2-1616", "t", "svc2");
  std::string token = add_token(kp, {{"tier", "t"}})["token"];

  CHECK(kp.get("/v1/svc1/x", bearer_of(token)).status == 200);
  CHECK(kp.get("/v1/svc2/x", bearer_of(token)).status == 404);

  kp.write_service("svc2", service_yaml("svc2", up.base_url() + "/two"));
  REQUIRE(::kill(kp.proc->pid(), SIGHUP) == 0);
  int status = 0;
  CHECK(wait_until([&] { return (status = kp.get("/v1/svc2/x", bearer_of(token)).status) == 200; }, 3000, 50));
  CHECK(status == 200);
  CHECK(count_key(up, "sk-hup-2-1616") >= 1);
  CHECK(up.requests().back().path == "/two/x");

  // A broken edit: the file no longer parses. svc2 keeps its loaded definition.
  kp.write_service("svc2", "name: svc2\nbase_url: [" + up.base_url() + "\nauth_scheme: bearer\n");
  REQUIRE(::kill(kp.proc->pid(), SIGHUP) == 0);
  auto reloads = [&] {
    auto log = kp.proc->log_contents();
    size_t n = 0;
    for (size_t p = log.find("SIGHUP"); p != std::string::npos; p = log.find("SIGHUP", p + 1)) ++n;
    return n;
  };
  CHECK(wait_until(
      [&] {
        auto log = kp.proc->log_contents();
        return reloads() >= 2 && log.find("service definition refused") != std::string::npos &&
               log.find("keeping the previous definition") != std::string::npos;
      },
      3000, 50));
  auto log = kp.proc->log_contents();
  CHECK(log.find("svc2.yaml") != std::string::npos);  // the refusal names the file
  for (int i = 0; i < 3; ++i) {
    CHECK(kp.get("/v1/svc2/x", bearer_of(token)).status == 200);
    CHECK(kp.get("/v1/svc1/x", bearer_of(token)).status == 200);
  }
  CHECK(up.requests().back().path == "/x");
}
