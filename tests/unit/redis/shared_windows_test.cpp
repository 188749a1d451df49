// SharedWindows against a real redis-server: exact windows across two instances (two
// threads, each with its own loop and connection), max_concurrent with release and
// expiry, round-robin, holds, TTLs on every key, bounded memory, per-token windows, and
// Redis Cluster (every key of one call in one slot).
#include <doctest/doctest.h>
#include <uv.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "redis/redis.h"
#include "support/redis_server.h"
#include "test_loop.h"

using namespace keypool::redis;
using keypool::Result;
using keypool::redis_test::TestLoop;
using keypool::testing::RedisServer;
using keypool::testing::RedisServerOptions;

namespace {

using SteadyClock = std::chrono::steady_clock;

// One keypool instance as Redis sees it: a connection and its SharedWindows.
struct Instance {
  std::unique_ptr<Client> client;
  std::unique_ptr<SharedWindows> windows;
  Instance(uv_loop_t* loop, const std::string& url, SharedOptions so, int64_t timeout_ms = 5000) {
    auto u = parse_url(url);
    ClientOptions co;
    co.timeout_ms = timeout_ms;
    client = std::move(Client::create(loop, std::move(u.value()), co).value());
    windows = std::move(SharedWindows::create(*client, std::move(so)).value());
  }
  ~Instance() {
    windows.reset();
    client.reset();
  }
};

struct Outcome {
  bool ok = false;        // false: a client error (message in error)
  bool granted = false;
  int64_t key_id = 0, at = 0, retry = 0, now = 0;
  std::optional<SharedLease> lease;
  std::string error;
};

Outcome to_outcome(Result<Admission> r) {
  Outcome o;
  if (!r.ok()) {
    o.error = r.error().message;
    return o;
  }
  o.ok = true;
  o.now = r->now_ms;
  if (r->lease) {
    o.granted = true;
    o.key_id = r->lease->key_id;
    o.at = r->lease->granted_at_ms;
    o.lease = r->lease;
  } else {
    o.retry = r->retry_after_ms;
  }
  return o;
}

Outcome admit(TestLoop& loop, Instance& in, const AdmitQuery& q) {
  std::optional<Outcome> out;
  in.windows->admit(q, [&](Result<Admission> r) { out = to_outcome(std::move(r)); });
  REQUIRE(loop.run_until([&] { return out.has_value(); }));
  return *out;
}

void wait_done(TestLoop& loop, const std::function<void(std::function<void(Result<void>)>)>& op) {
  std::optional<Result<void>> out;
  op([&](Result<void> r) { out.emplace(std::move(r)); });
  REQUIRE(loop.run_until([&] { return out.has_value(); }));
  REQUIRE(out->ok());
}

bool ready(TestLoop& loop, Instance& in) {
  return loop.run_until([&] { return in.client->state() == ConnState::Ready; });
}

// An instance on its own thread and loop, keeping `depth` admissions in flight until it has
// made `attempts` or run for `run_ms`. No doctest assertion runs off the main thread.
std::vector<Outcome> hammer(const std::string& url, SharedOptions so, AdmitQuery q, int attempts, int depth,
                            int run_ms = 60'000) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  std::vector<Outcome> out;
  {
    Instance in(&loop, url, so);
    int issued = 0, done = 0;
    const auto until = SteadyClock::now() + std::chrono::milliseconds(run_ms);
    std::function<void()> issue = [&] {
      if (issued >= attempts || SteadyClock::now() >= until) return;
      ++issued;
      in.windows->admit(q, [&](Result<Admission> r) {
        out.push_back(to_outcome(std::move(r)));
        ++done;
        issue();
      });
    };
    for (int i = 0; i < depth; ++i) issue();
    while (done < issued) uv_run(&loop, UV_RUN_ONCE);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return out;
}

std::vector<Outcome> two_instances(const std::string& url, SharedOptions so, const AdmitQuery& q, int attempts,
                                   int depth, int run_ms = 60'000) {
  std::vector<Outcome> a, b;
  std::thread ta([&] { a = hammer(url, so, q, attempts, depth, run_ms); });
  std::thread tb([&] { b = hammer(url, so, q, attempts, depth, run_ms); });
  ta.join();
  tb.join();
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

AdmitQuery one_key(int64_t rpm, int64_t max_concurrent = 0) {
  AdmitQuery q;
  q.tier = "gold";
  q.feature = "chat";
  q.candidates = {{7, rpm, max_concurrent}};
  return q;
}

int64_t pttl(RedisServer& s, const std::string& key) { return s.call({"PTTL", key}).integer; }

}  // namespace

TEST_CASE("shared windows: two instances on one key get exactly rpm grants and the exact retry time") {
  RedisServer server;
  SharedOptions so;
  so.prefix = "exact";
  const int64_t rpm = 200;
  auto all = two_instances(server.url(), so, one_key(rpm), 400, 8);
  REQUIRE(all.size() == 800);
  int64_t granted = 0, first_at = INT64_MAX;
  for (const auto& o : all) {
    REQUIRE_MESSAGE(o.ok, o.error);
    if (o.granted) {
      ++granted;
      first_at = std::min(first_at, o.at);
    }
  }
  CHECK(granted == rpm);
  // Every refusal after the window filled names the exact moment the oldest grant leaves.
  int refusals = 0;
  for (const auto& o : all) {
    if (o.granted) continue;
    ++refusals;
    CHECK(o.retry == first_at + 60'000 - o.now);
    CHECK(o.retry > 55'000);
  }
  CHECK(refusals == 800 - rpm);
  // The window in Redis agrees: 200 grants in runs of at most that many.
  SharedWindows* names = nullptr;
  TestLoop loop;
  {
    Instance in(loop.get(), server.url(), so);
    names = in.windows.get();
    CHECK(server.call({"GET", names->total_key("gold", 7, "chat")}).str == "200");
    auto runs = server.call({"LRANGE", names->window_key("gold", 7, "chat"), "0", "-1"});
    int64_t sum = 0;
    for (const auto& r : runs.elements) sum += std::stoll(r.str.substr(r.str.find(':') + 1));
    CHECK(sum == 200);
    CHECK(pttl(server, names->window_key("gold", 7, "chat")) > 55'000);
  }
}

TEST_CASE("shared windows: no 1 s span ever holds more than rpm grants, and the budget is used") {
  RedisServer server;
  SharedOptions so;
  so.prefix = "slide";
  so.window_ms = 1000;
  const int64_t rpm = 20;
  auto all = two_instances(server.url(), so, one_key(rpm), 1'000'000, 4, 3500);
  std::vector<int64_t> times;
  for (const auto& o : all) {
    REQUIRE_MESSAGE(o.ok, o.error);
    if (o.granted) times.push_back(o.at);
  }
  std::sort(times.begin(), times.end());
  REQUIRE_FALSE(times.empty());
  // Any span of 1000 ms starting at a grant (the worst spans start at one).
  size_t worst = 0;
  for (size_t i = 0, j = 0; i < times.size(); ++i) {
    while (j < times.size() && times[j] < times[i] + 1000) ++j;
    worst = std::max(worst, j - i);
  }
  CHECK(worst == static_cast<size_t>(rpm));
  // 3.5 s of demand far above the budget: at least three full windows were granted.
  CHECK(times.size() >= static_cast<size_t>(3 * rpm));
  CHECK(times.back() - times.front() >= 2000);
  // Each refusal was right to refuse, and its wait is exact: the window (now - 1 s, now]
  // was full, and the oldest grant in it leaves after exactly the wait.
  int checked = 0;
  for (const auto& o : all) {
    if (!o.ok || o.granted) continue;
    auto lo = std::upper_bound(times.begin(), times.end(), o.now - 1000);
    auto hi = std::upper_bound(times.begin(), times.end(), o.now);
    CHECK(hi - lo == rpm);
    CHECK(o.retry == *lo + 1000 - o.now);
    ++checked;
  }
  CHECK(checked > 0);
}

TEST_CASE("shared windows: max_concurrent across instances, with release and lease expiry") {
  RedisServer server;
  SharedOptions so;
  so.prefix = "conc";
  so.lease_ttl_ms = 600;
  TestLoop loop;
  {
    Instance a(loop.get(), server.url(), so), b(loop.get(), server.url(), so);
    REQUIRE(ready(loop, a));
    REQUIRE(ready(loop, b));
    const auto q = one_key(1000, 2);
    auto l1 = admit(loop, a, q), l2 = admit(loop, a, q);
    REQUIRE(l1.granted);
    REQUIRE(l2.granted);
    CHECK(l1.lease->counts_concurrency);
    CHECK(l1.lease->lease_id != l2.lease->lease_id);
    auto full = admit(loop, b, q);
    REQUIRE(full.ok);
    CHECK_FALSE(full.granted);
    CHECK(full.retry > 0);
    CHECK(full.retry <= 600);  // when the first lease would expire
    const std::string leases = a.windows->lease_key("gold", 7);
    CHECK(server.call({"ZCARD", leases}).integer == 2);
    CHECK(pttl(server, leases) > 0);
    CHECK(pttl(server, leases) <= 600);

    // A's request ends: its slot is free for B at once.
    wait_done(loop, [&](auto cb) { a.windows->release(*l1.lease, cb); });
    auto l3 = admit(loop, b, q);
    REQUIRE(l3.granted);
    CHECK_FALSE(admit(loop, b, q).granted);

    // A dies holding l2: nobody releases it, and it frees itself when its lease expires.
    auto before = SteadyClock::now();
    std::optional<Outcome> got;
    while (!got || !got->granted) {
      got = admit(loop, b, q);
      REQUIRE(got->ok);
      if (!got->granted) loop.run_for(static_cast<int>(std::max<int64_t>(got->retry, 1)));
      REQUIRE(SteadyClock::now() - before < std::chrono::seconds(5));
    }
    auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - before).count();
    CHECK(waited >= 300);  // l2 had about 600 ms left; it did not free early
    // l2 left the set by expiry; the new lease is in it.
    CHECK(server.call({"ZSCORE", leases, l2.lease->lease_id}).type == ReplyType::Nil);
    CHECK(server.call({"ZSCORE", leases, got->lease->lease_id}).type == ReplyType::Bulk);
  }
}

TEST_CASE("shared windows: round-robin across instances, holds skip keys, the earliest hold sets the wait") {
  RedisServer server;
  SharedOptions so;
  so.prefix = "rr";
  TestLoop loop;
  {
    Instance a(loop.get(), server.url(), so), b(loop.get(), server.url(), so);
    AdmitQuery q;
    q.tier = "gold";
    q.feature = "chat";
    q.candidates = {{11, 1000, 0}, {12, 1000, 0}, {13, 1000, 0}};
    std::vector<int64_t> order;
    for (int i = 0; i < 6; ++i) order.push_back(admit(loop, i % 2 ? b : a, q).key_id);
    CHECK(order == std::vector<int64_t>{11, 12, 13, 11, 12, 13});

    wait_done(loop, [&](auto cb) { b.windows->cool_down("gold", 12, 5000, cb); });
    order.clear();
    for (int i = 0; i < 4; ++i) order.push_back(admit(loop, i % 2 ? b : a, q).key_id);
    CHECK(order == std::vector<int64_t>{11, 13, 11, 13});

    // A shorter hold never replaces a longer one; the kind is kept with it.
    wait_done(loop, [&](auto cb) { a.windows->hold("gold", 12, Hold::Suspended, 100, cb); });
    CHECK(pttl(server, a.windows->hold_key("gold", 12)) > 4000);
    CHECK(server.call({"GET", a.windows->hold_key("gold", 12)}).str == "cooling");
    wait_done(loop, [&](auto cb) { a.windows->hold("gold", 12, Hold::Disabled, 9000, cb); });
    CHECK(server.call({"GET", a.windows->hold_key("gold", 12)}).str == "disabled");

    wait_done(loop, [&](auto cb) { a.windows->cool_down("gold", 11, 3000, cb); });
    wait_done(loop, [&](auto cb) { a.windows->hold("gold", 13, Hold::Suspended, 4000, cb); });
    auto none = admit(loop, b, q);
    REQUIRE(none.ok);
    CHECK_FALSE(none.granted);
    CHECK(none.retry <= 3000);  // key 11's hold is the first to end
    CHECK(none.retry > 2000);

    // Lifting the hold makes the key usable at once.
    wait_done(loop, [&](auto cb) { a.windows->cool_down("gold", 11, 0, cb); });
    CHECK(server.call({"EXISTS", a.windows->hold_key("gold", 11)}).integer == 0);
    CHECK(admit(loop, b, q).key_id == 11);

    // A key with no budget for the feature never frees: -1, not a wait.
    AdmitQuery nobudget = q;
    nobudget.candidates = {{21, 0, 0}};
    auto never = admit(loop, a, nobudget);
    REQUIRE(never.ok);
    CHECK_FALSE(never.granted);
    CHECK(never.retry == -1);
  }
}

TEST_CASE("shared windows: a refund gives the grant back; per-token windows are exact") {
  RedisServer server;
  SharedOptions so;
  so.prefix = "tok";
  TestLoop loop;
  {
    Instance a(loop.get(), server.url(), so);
    const auto q = one_key(1, 1);
    auto l = admit(loop, a, q);
    REQUIRE(l.granted);
    CHECK_FALSE(admit(loop, a, q).granted);
    wait_done(loop, [&](auto cb) { a.windows->refund(*l.lease, cb); });
    CHECK(server.call({"EXISTS", a.windows->total_key("gold", 7, "chat")}).integer == 0);
    auto again = admit(loop, a, q);
    CHECK(again.granted);
    // release (not refund) keeps the grant counted.
    wait_done(loop, [&](auto cb) { a.windows->release(*again.lease, cb); });
    CHECK_FALSE(admit(loop, a, q).granted);

    std::vector<TokenAdmission> got;
    for (int i = 0; i < 7; ++i)
      a.windows->admit_token("team-1", 5, [&](Result<TokenAdmission> r) {
        REQUIRE(r.ok());
        got.push_back(r.value());
      });
    REQUIRE(loop.run_until([&] { return got.size() == 7; }));
    int granted = 0;
    int64_t first = INT64_MAX;
    for (auto& t : got)
      if (t.granted) {
        ++granted;
        first = std::min(first, t.granted_at_ms);
      }
    CHECK(granted == 5);
    for (size_t i = 5; i < 7; ++i) {
      CHECK_FALSE(got[i].granted);
      CHECK(got[i].retry_after_ms > 59'000);
      CHECK(got[i].retry_after_ms <= 60'000);
    }
    auto now = server.call({"TIME"});
    int64_t now_ms = std::stoll(now.elements[0].str) * 1000 + std::stoll(now.elements[1].str) / 1000;
    CHECK(got[6].retry_after_ms >= first + 60'000 - now_ms);
    CHECK(pttl(server, a.windows->token_window_key("team-1")) > 59'000);
    CHECK(pttl(server, a.windows->token_total_key("team-1")) > 59'000);
    // Another token has its own window.
    std::optional<TokenAdmission> other;
    a.windows->admit_token("team-2", 5, [&](Result<TokenAdmission> r) { other = r.value(); });
    REQUIRE(loop.run_until([&] { return other.has_value(); }));
    CHECK(other->granted);
  }
}

TEST_CASE("shared windows: every key it writes has a TTL, all under the prefix") {
  RedisServer server;
  SharedOptions so;
  so.prefix = "ttl";
  so.lease_ttl_ms = 30'000;
  TestLoop loop;
  {
    Instance a(loop.get(), server.url(), so);
    AdmitQuery q;
    q.tier = "gold";
    q.feature = "chat";
    q.candidates = {{1, 100, 3}, {2, 100, 0}};
    for (int i = 0; i < 5; ++i) REQUIRE(admit(loop, a, q).granted);
    wait_done(loop, [&](auto cb) { a.windows->cool_down("gold", 2, 20'000, cb); });
    std::optional<TokenAdmission> t;
    a.windows->admit_token("tok", 10, [&](Result<TokenAdmission> r) { t = r.value(); });
    REQUIRE(loop.run_until([&] { return t.has_value(); }));
  }
  std::set<std::string> keys;
  std::string cursor = "0";
  do {
    auto r = server.call({"SCAN", cursor, "COUNT", "1000"});
    cursor = r.elements[0].str;
    for (const auto& k : r.elements[1].elements) keys.insert(k.str);
  } while (cursor != "0");
  // Window runs and total per key (2 keys), one lease set, one hold, the cursor, the token's two.
  CHECK(keys == std::set<std::string>{"{ttl:gold}:w:1:chat", "{ttl:gold}:n:1:chat", "{ttl:gold}:w:2:chat",
                                      "{ttl:gold}:n:2:chat", "{ttl:gold}:lease:1", "{ttl:gold}:hold:2",
                                      "{ttl:gold}:cursor:chat", "{ttl:token:tok}:w", "{ttl:token:tok}:n"});
  for (const auto& k : keys) {
    CAPTURE(k);
    CHECK(pttl(server, k) > 0);
  }
}

TEST_CASE("shared windows: a key at 100000 rpm hit 100000 times keeps a small window") {
  RedisServer server;
  SharedOptions so;
  so.prefix = "mem";
  const auto start = SteadyClock::now();
  std::vector<Outcome> all;
  std::thread t([&] { all = hammer(server.url(), so, one_key(100'000), 100'000, 256); });
  t.join();
  const auto elapsed_ms = std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - start).count();
  REQUIRE(all.size() == 100'000);
  int64_t granted = 0;
  for (const auto& o : all) {
    REQUIRE_MESSAGE(o.ok, o.error);
    granted += o.granted ? 1 : 0;
  }
  CHECK(granted == 100'000);
  TestLoop loop;
  Instance names(loop.get(), server.url(), so);
  const std::string w = names.windows->window_key("gold", 7, "chat");
  CHECK(server.call({"GET", names.windows->total_key("gold", 7, "chat")}).str == "100000");
  // One run per distinct millisecond, however many grants it holds.
  const int64_t runs = server.call({"LLEN", w}).integer;
  MESSAGE("runs: " << runs << " over " << elapsed_ms << " ms");
  CHECK(runs <= elapsed_ms + 1);
  CHECK(runs < 100'000 / 5);
  const int64_t bytes = server.call({"MEMORY", "USAGE", w}).integer;
  MESSAGE("MEMORY USAGE: " << bytes << " bytes");
  CHECK(bytes < 40 * runs + 4096);
}

TEST_CASE("shared windows: on Redis Cluster every call's keys share one slot") {
  RedisServerOptions opts;
  opts.cluster = true;
  RedisServer server(opts);
  SharedOptions so;
  so.prefix = "fleet";
  TestLoop loop;
  {
    Instance a(loop.get(), server.url(), so);
    AdmitQuery q;
    q.tier = "gold";
    q.feature = "chat";
    q.candidates = {{1, 100, 2}, {2, 100, 2}, {3, 100, 0}};
    // A cluster node refuses a script whose keys span slots (CROSSSLOT), so these running
    // at all is the check; the slots are compared below too.
    auto g = admit(loop, a, q);
    REQUIRE_MESSAGE(g.ok, g.error);
    REQUIRE(g.granted);
    wait_done(loop, [&](auto cb) { a.windows->release(*g.lease, cb); });
    wait_done(loop, [&](auto cb) { a.windows->cool_down("gold", 2, 1000, cb); });
    std::optional<Result<TokenAdmission>> t;
    a.windows->admit_token("team", 5, [&](Result<TokenAdmission> r) { t.emplace(std::move(r)); });
    REQUIRE(loop.run_until([&] { return t.has_value(); }));
    REQUIRE(t->ok());

    const int64_t slot = server.call({"CLUSTER", "KEYSLOT", a.windows->cursor_key("gold", "chat")}).integer;
    for (int64_t id : {1, 2, 3}) {
      for (const auto& k : {a.windows->window_key("gold", id, "chat"), a.windows->total_key("gold", id, "chat"),
                            a.windows->lease_key("gold", id), a.windows->hold_key("gold", id)})
        CHECK(server.call({"CLUSTER", "KEYSLOT", k}).integer == slot);
    }
    CHECK(server.call({"CLUSTER", "KEYSLOT", a.windows->token_window_key("team")}).integer ==
          server.call({"CLUSTER", "KEYSLOT", a.windows->token_total_key("team")}).integer);

    // Names that would break the hash tag are refused before anything is sent.
    AdmitQuery bad = q;
    bad.tier = "go}ld";
    auto refused = admit(loop, a, bad);
    CHECK_FALSE(refused.ok);
    SharedOptions brace;
    brace.prefix = "a{b";
    CHECK_FALSE(SharedWindows::create(*a.client, brace).ok());
  }
}

TEST_CASE("shared windows: the stored total always equals the grants in the stored runs") {
  // Refusals trim expired runs too; the total must follow them, or a key stays refused
  // (or, the other way round, over-granted) after its history moved on.
  RedisServer server;
  SharedOptions so;
  so.prefix = "sum";
  so.window_ms = 100;
  TestLoop loop;
  {
    Instance a(loop.get(), server.url(), so);
    const auto q = one_key(5);
    const std::string w = a.windows->window_key("gold", 7, "chat"), n = a.windows->total_key("gold", 7, "chat");
    int granted = 0, refused = 0;
    for (int i = 0; i < 600; ++i) {
      auto o = admit(loop, a, q);
      REQUIRE(o.ok);
      (o.granted ? granted : refused)++;
      auto total = server.call({"GET", n});
      auto runs = server.call({"LRANGE", w, "0", "-1"});
      int64_t sum = 0;
      for (const auto& r : runs.elements) sum += std::stoll(r.str.substr(r.str.find(':') + 1));
      CHECK(sum == (total.type == ReplyType::Nil ? 0 : std::stoll(total.str)));
      CHECK(sum <= 5);
      if (!o.granted) CHECK(o.retry <= 100);
    }
    CHECK(granted >= 5);
    CHECK(refused > 0);
  }
}
