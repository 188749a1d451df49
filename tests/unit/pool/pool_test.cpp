#include "pool/pool.h"

#include <doctest/doctest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

using namespace keypool;
using namespace keypool::pool;

namespace {

KeyInfo key(int64_t id, std::string tier = "pro", std::string service = "openai") {
  KeyInfo k;
  k.id = id;
  k.name = "key" + std::to_string(id);
  k.tier = std::move(tier);
  k.service = std::move(service);
  return k;
}

Query chat(std::optional<std::string> tier = "pro") {
  Query q;
  q.feature = "chat";
  q.tier = std::move(tier);
  return q;
}

// A pool with tier "pro" (chat: rpm per key) and keys 1..n.
struct Fixture {
  explicit Fixture(int64_t rpm = 2, int n = 3) : pool(clock) {
    pool.set_tiers({TierPolicy{"pro", {{"chat", rpm}}, 5000}});
    for (int i = 1; i <= n; ++i) pool.upsert_key(key(i), Secret("sk-" + std::to_string(i)));
  }
  int64_t next(const Query& q) {
    auto l = pool.lease(q);
    REQUIRE(l.ok());
    return l->key_id;
  }
  ManualClock clock;
  Pool pool;
};

}  // namespace

TEST_CASE("pool: round-robin across keys in id order") {
  Fixture f(100);
  std::vector<int64_t> order;
  for (int i = 0; i < 7; ++i) order.push_back(f.next(chat()));
  CHECK(order == std::vector<int64_t>{1, 2, 3, 1, 2, 3, 1});
  // A new key joins the rotation at its id position without skipping or repeating.
  f.pool.upsert_key(key(0), Secret("sk-0"));
  CHECK(f.next(chat()) == 2);
  CHECK(f.next(chat()) == 3);
  CHECK(f.next(chat()) == 0);
}

TEST_CASE("pool: pool_size counts one (service, tier) pool, whatever its keys' state") {
  Fixture f(2, 3);  // keys 1..3: openai / pro
  f.pool.upsert_key(key(4, "free"), Secret("sk-4"));
  f.pool.upsert_key(key(5, "pro", "groq"), Secret("sk-5"));
  f.pool.cool_down(2, f.clock.now_ms() + 60'000);
  CHECK(f.pool.pool_size("openai", "pro") == 3);
  CHECK(f.pool.pool_size("openai", "free") == 1);
  CHECK(f.pool.pool_size("groq", "pro") == 1);
  CHECK(f.pool.pool_size("groq", "free") == 0);
  f.pool.remove_key(1);
  CHECK(f.pool.pool_size("openai", "pro") == 2);
}

TEST_CASE("pool: cursors are per group") {
  Fixture f(100);
  CHECK(f.next(chat()) == 1);
  CHECK(f.next(chat()) == 2);
  CHECK(f.next(chat(std::nullopt)) == 1);  // the "*" group has its own cursor
  Query svc = chat();
  svc.service = "openai";
  CHECK(f.next(svc) == 1);
}

TEST_CASE("pool: skips disabled, expired, cooling, excluded and spent keys") {
  Fixture f(1, 5);
  f.pool.disable(1, "401 from upstream");
  auto k2 = key(2);
  k2.expires_at_ms = f.clock.now_ms();  // expires exactly now
  f.pool.update_key(k2);
  f.pool.cool_down(3, f.clock.now_ms() + 10'000);
  Query q = chat();
  q.exclude = {4};
  CHECK(f.next(q) == 5);
  // 5 is spent now, 4 is excluded: nothing left that is usable; cooldown of 3 is soonest.
  auto r = f.pool.lease(q);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::RateLimited);
  CHECK(r.error().retry_after_s == 10);
  CHECK(f.next(chat()) == 4);  // without the exclusion

  auto s = f.pool.statuses();
  REQUIRE(s.size() == 5);
  CHECK(s[0].state == KeyState::Disabled);
  CHECK(s[0].info.disabled_reason == "401 from upstream");
  CHECK(s[1].state == KeyState::Expired);
  CHECK(s[2].state == KeyState::Cooling);
  CHECK(s[3].state == KeyState::Active);
  CHECK(s[4].usage.size() == 1);
  CHECK(s[4].usage[0].used == 1);
  CHECK(s[4].usage[0].limit == 1);
  CHECK(s[4].usage[0].reset_in_s == 60);
}

TEST_CASE("pool: a cooldown ends with the clock") {
  Fixture f(100, 1);
  f.pool.cool_down(1, f.clock.now_ms() + 2500);
  auto r = f.pool.lease(chat());
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::RateLimited);
  CHECK(r.error().retry_after_s == 3);  // ceil(2.5)
  // A shorter report never shortens a longer cooldown.
  f.pool.cool_down(1, f.clock.now_ms() + 1000);
  f.clock.advance_ms(2499);
  CHECK_FALSE(f.pool.lease(chat()).ok());
  f.clock.advance_ms(1);
  CHECK(f.next(chat()) == 1);
  CHECK(f.pool.status(1)->state == KeyState::Active);
  // A time already past clears a cooldown.
  f.pool.cool_down(1, f.clock.now_ms() + 60'000);
  f.pool.cool_down(1, 0);
  CHECK(f.next(chat()) == 1);
}

TEST_CASE("pool: cap_cooldown only ever shortens a cooldown") {
  Fixture f(100, 2);
  const int64_t t0 = f.clock.now_ms();
  f.pool.cool_down(1, t0 + 60'000);
  f.pool.cap_cooldown(1, t0 + 1000);
  f.pool.cap_cooldown(1, t0 + 30'000);  // a later cap does not lengthen it again
  f.pool.cap_cooldown(2, t0 + 1000);    // not cooling: stays usable
  CHECK(f.pool.status(2)->state == KeyState::Active);
  CHECK(f.pool.status(1)->state == KeyState::Cooling);
  f.clock.advance_ms(1000);
  CHECK(f.pool.status(1)->state == KeyState::Active);
}

TEST_CASE("pool: retry_after is exact when every key is spent") {
  Fixture f(1, 3);
  const int64_t t0 = f.clock.now_ms();
  CHECK(f.next(chat()) == 1);
  f.clock.advance_ms(10'000);
  CHECK(f.next(chat()) == 2);
  f.clock.advance_ms(10'000);
  CHECK(f.next(chat()) == 3);
  f.clock.advance_ms(500);  // key 1 frees at t0 + 60 s: 39.5 s from now
  auto r = f.pool.lease(chat());
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::RateLimited);
  CHECK(r.error().retry_after_s == 40);
  f.clock.set_ms(t0 + 59'999);
  r = f.pool.lease(chat());
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().retry_after_s == 1);
  f.clock.set_ms(t0 + 60'000);
  CHECK(f.next(chat()) == 1);
}

TEST_CASE("pool: NotFound, Unavailable and RateLimited") {
  Fixture f(1, 1);
  Query q = chat();
  q.feature = "images";
  auto r = f.pool.lease(q);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::NotFound);
  CHECK(r.error().message == "unknown feature 'images'");

  // Covered by a tier, but no key of that tier.
  f.pool.upsert_tier(TierPolicy{"team", {{"images", 5}}, 0});
  r = f.pool.lease(q);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::NotFound);  // the query's tier "pro" does not list it
  q.tier = "team";
  r = f.pool.lease(q);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::Unavailable);
  CHECK(r.error().message.find("no keys for feature 'images'") == 0);

  // Keys that exist but are all disabled: waiting will not help.
  f.pool.disable(1, "revoked");
  r = f.pool.lease(chat());
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::Unavailable);

  // All already tried by this request.
  f.pool.upsert_key(key(2), Secret("sk-2"));
  Query tried = chat();
  tried.exclude = {2};
  r = f.pool.lease(tried);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::Unavailable);

  CHECK(f.next(chat()) == 2);
  r = f.pool.lease(chat());
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::RateLimited);
  CHECK(r.error().retry_after_s == 60);
}

TEST_CASE("pool: tier and service filters") {
  ManualClock clock;
  Pool pool(clock);
  pool.set_tiers({TierPolicy{"pro", {{"chat", 10}}, 0}, TierPolicy{"free", {{"chat", 10}}, 0}});
  pool.upsert_key(key(1, "free", "openai"), Secret("a"));
  pool.upsert_key(key(2, "pro", "anthropic"), Secret("b"));
  pool.upsert_key(key(3, "pro", "openai"), Secret("c"));

  Query q = chat("pro");
  q.service = "openai";
  for (int i = 0; i < 3; ++i) CHECK(pool.lease(q)->key_id == 3);
  q.tier = "free";
  CHECK(pool.lease(q)->key_id == 1);
  q.tier.reset();  // any tier, openai only
  CHECK(pool.lease(q)->key_id == 1);
  CHECK(pool.lease(q)->key_id == 3);
  q.service = "elevenlabs";
  CHECK(pool.lease(q).error().code == ErrorCode::Unavailable);
  Query any = chat(std::nullopt);
  CHECK(pool.lease(any)->key_id == 1);
  CHECK(pool.lease(any)->key_id == 2);
  CHECK(pool.lease(any)->key_id == 3);
}

TEST_CASE("pool: fallback_rpm budgets features the tier does not list") {
  Fixture f(5, 2);
  Query q = chat();
  q.feature = "tts";
  CHECK(f.pool.lease(q).error().code == ErrorCode::NotFound);
  CHECK_FALSE(f.pool.feature_known("tts"));
  q.fallback_rpm = 1;
  CHECK(f.next(q) == 1);
  CHECK(f.next(q) == 2);
  auto r = f.pool.lease(q);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == ErrorCode::RateLimited);
  // The tier's own rpm wins over the fallback for features it lists.
  Query c = chat();
  c.fallback_rpm = 1;
  for (int i = 0; i < 10; ++i) CHECK(f.pool.lease(c).ok());
  CHECK_FALSE(f.pool.lease(c).ok());
  // Status shows the fallback window after the tier's features.
  auto s = f.pool.status(1);
  REQUIRE(s);
  REQUIRE(s->usage.size() == 2);
  CHECK(s->usage[0].feature == "chat");
  CHECK(s->usage[1].feature == "tts");
  CHECK(s->usage[1].used == 1);
  CHECK(s->usage[1].limit == 1);
}

TEST_CASE("pool: max_concurrent holds slots until release") {
  Fixture f(100, 1);
  auto k = key(1);
  k.max_concurrent = 2;
  f.pool.update_key(k);
  auto a = f.pool.lease(chat());
  auto b = f.pool.lease(chat());
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(a->counts_concurrency);
  CHECK(f.pool.status(1)->inflight == 2);
  auto c = f.pool.lease(chat());
  REQUIRE_FALSE(c.ok());
  CHECK(c.error().code == ErrorCode::RateLimited);
  CHECK(c.error().retry_after_s == 1);
  f.pool.release(*a);
  CHECK(f.pool.status(1)->inflight == 1);
  CHECK(f.pool.lease(chat()).ok());
  // Release frees the slot, not the window grant.
  CHECK(f.pool.status(1)->usage[0].used == 3);
}

TEST_CASE("pool: refund returns the window grant and the slot") {
  Fixture f(1, 1);
  auto k = key(1);
  k.max_concurrent = 1;
  f.pool.update_key(k);
  auto a = f.pool.lease(chat());
  REQUIRE(a.ok());
  CHECK_FALSE(f.pool.lease(chat()).ok());
  f.pool.refund(*a);
  CHECK(f.pool.status(1)->usage[0].used == 0);
  CHECK(f.pool.status(1)->inflight == 0);
  CHECK(f.pool.lease(chat()).ok());
}

TEST_CASE("pool: rotation keeps the old value for an existing lease") {
  Fixture f(100, 1);
  auto old_lease = f.pool.lease(chat());
  REQUIRE(old_lease.ok());
  f.pool.set_value(1, Secret("sk-new"));
  auto new_lease = f.pool.lease(chat());
  REQUIRE(new_lease.ok());
  CHECK(old_lease->value->view() == "sk-1");
  CHECK(new_lease->value->view() == "sk-new");
  // Metadata updates keep the value and the window.
  auto k = key(1);
  k.name = "renamed";
  f.pool.update_key(k);
  auto l = f.pool.lease(chat());
  CHECK(l->key_name == "renamed");
  CHECK(l->value->view() == "sk-new");
  CHECK(f.pool.status(1)->usage[0].used == 3);
  // upsert of an existing key replaces the value but keeps the window too.
  f.pool.upsert_key(key(1), Secret("sk-3"));
  CHECK(f.pool.lease(chat())->value->view() == "sk-3");
  CHECK(f.pool.status(1)->usage[0].used == 4);
}

TEST_CASE("pool: affinity sticks and falls back when the key is spent") {
  Fixture f(3, 3);
  Query q = chat();
  q.affinity = "session-a";
  CHECK(f.next(q) == 1);
  CHECK(f.next(q) == 1);
  CHECK(f.next(chat()) == 2);  // sticky leases did not move the cursor
  CHECK(f.next(q) == 1);       // key 1 now spent (3 grants)
  CHECK(f.next(q) == 3);       // falls back to round-robin and re-binds
  CHECK(f.next(q) == 3);
  Query other = chat();
  other.affinity = "session-b";
  CHECK(f.next(other) == 2);
  // A removed key falls back silently.
  f.pool.remove_key(3);
  CHECK(f.next(q) == 2);
  CHECK(f.pool.key_count() == 2);
}

TEST_CASE("pool: affinity map evicts the least recently used") {
  AffinityMap m(2);
  m.put("a", 1);
  m.put("b", 2);
  CHECK(m.get("a") == 1);  // a is now the most recent
  m.put("c", 3);
  CHECK_FALSE(m.get("b").has_value());
  CHECK(m.get("a") == 1);
  CHECK(m.get("c") == 3);
  m.put("c", 4);
  CHECK(m.get("c") == 4);
  CHECK(m.size() == 2);
}

TEST_CASE("pool: tier changes keep window history") {
  Fixture f(2, 1);
  CHECK(f.pool.lease(chat()).ok());
  CHECK(f.pool.lease(chat()).ok());
  CHECK_FALSE(f.pool.lease(chat()).ok());
  f.pool.set_tiers({TierPolicy{"pro", {{"chat", 3}}, 1234}});
  CHECK(f.pool.tier_max_wait_ms("pro") == 1234);
  CHECK_FALSE(f.pool.tier_max_wait_ms("none").has_value());
  CHECK(f.pool.lease(chat()).ok());  // one more, not three
  CHECK_FALSE(f.pool.lease(chat()).ok());
  f.pool.remove_tier("pro");
  CHECK_FALSE(f.pool.tier_exists("pro"));
  CHECK(f.pool.lease(chat()).error().code == ErrorCode::NotFound);
}

TEST_CASE("pool: threads never over-grant") {
  Fixture f(50, 3);
  std::atomic<int> total{0};
  std::mutex mu;
  std::map<int64_t, int> per_key;
  auto worker = [&] {
    std::map<int64_t, int> mine;
    for (int i = 0; i < 2000; ++i) {
      auto l = f.pool.lease(chat());
      if (!l.ok()) {
        CHECK(l.error().code == ErrorCode::RateLimited);
        continue;
      }
      ++total;
      ++mine[l->key_id];
      f.pool.release(*l);
    }
    std::lock_guard lock(mu);
    for (auto [id, n] : mine) per_key[id] += n;
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  CHECK(total.load() == 150);
  for (auto [id, n] : per_key) CHECK(n == 50);
}

// lease() keeps per-group caches of each key's rpm, filters and window (see pool.cpp); every
// configuration change must show at the very next lease.
TEST_CASE("pool: a tier's new rpm applies at the next lease") {
  Fixture f(1, 1);
  CHECK(f.next(chat()) == 1);
  CHECK(f.pool.lease(chat()).error().code == ErrorCode::RateLimited);
  f.pool.upsert_tier(TierPolicy{"pro", {{"chat", 2}}, 0});
  CHECK(f.next(chat()) == 1);
  CHECK(f.pool.lease(chat()).error().code == ErrorCode::RateLimited);
  f.pool.set_tiers({TierPolicy{"pro", {{"chat", 3}}, 0}});
  CHECK(f.next(chat()) == 1);
  CHECK(f.pool.lease(chat()).error().code == ErrorCode::RateLimited);
}

TEST_CASE("pool: tier changes decide coverage at the next lease") {
  Fixture f(5, 2);
  Query any = chat(std::nullopt);
  CHECK(f.next(any) == 1);
  CHECK(f.next(chat()) == 1);
  // Dropping the feature from the tier: NotFound for both the tier's and the any-tier group.
  f.pool.upsert_tier(TierPolicy{"pro", {{"images", 5}}, 0});
  CHECK(f.pool.lease(chat()).error().code == ErrorCode::NotFound);
  CHECK(f.pool.lease(any).error().code == ErrorCode::NotFound);
  // A fallback budget still serves it, with the fallback's rpm.
  Query fb = chat();
  fb.fallback_rpm = 2;
  CHECK(f.next(fb) == 2);  // the cursor survived the rebuild
  CHECK(f.next(fb) == 2);  // key 1 already holds two chat grants: spent at rpm 2
  CHECK(f.pool.lease(fb).error().code == ErrorCode::RateLimited);
  // The feature comes back; the keys' windows kept their history.
  f.pool.set_tiers({TierPolicy{"pro", {{"chat", 3}}, 0}});
  CHECK(f.next(chat()) == 1);
  CHECK(f.next(chat()) == 2);
  CHECK(f.pool.lease(chat()).error().code == ErrorCode::RateLimited);
  f.pool.remove_tier("pro");
  CHECK(f.pool.lease(chat()).error().code == ErrorCode::NotFound);
  CHECK(f.pool.lease(any).error().code == ErrorCode::NotFound);
}

TEST_CASE("pool: key changes apply at the next lease") {
  ManualClock clock;
  Pool pool(clock);
  pool.set_tiers({TierPolicy{"pro", {{"chat", 100}}, 0}, TierPolicy{"free", {{"chat", 100}}, 0}});
  for (int i = 1; i <= 3; ++i) pool.upsert_key(key(i), Secret("sk"));
  Query pro = chat("pro");
  pro.service = "openai";
  Query free = chat("free");
  free.service = "openai";
  CHECK(pool.lease(pro)->key_id == 1);
  CHECK(pool.lease(free).error().code == ErrorCode::Unavailable);

  // update_key: key 2 moves to tier "free", then key 3 to another service.
  pool.update_key(key(2, "free"));
  CHECK(pool.lease(pro)->key_id == 3);
  CHECK(pool.lease(free)->key_id == 2);
  pool.update_key(key(3, "pro", "groq"));
  CHECK(pool.lease(pro)->key_id == 1);
  CHECK(pool.lease(pro)->key_id == 1);

  // upsert_key: a new key joins the group, and an existing one can be moved back.
  pool.upsert_key(key(4), Secret("sk"));
  CHECK(pool.lease(pro)->key_id == 4);
  pool.upsert_key(key(3), Secret("sk"));
  CHECK(pool.lease(pro)->key_id == 1);
  CHECK(pool.lease(pro)->key_id == 3);

  // remove_key: never handed out again, and the rotation carries on from the next id.
  pool.remove_key(4);
  CHECK(pool.lease(pro)->key_id == 1);
  pool.remove_key(1);
  CHECK(pool.lease(pro)->key_id == 3);
  CHECK(pool.lease(pro)->key_id == 3);
  pool.remove_key(3);
  CHECK(pool.lease(pro).error().code == ErrorCode::Unavailable);
  CHECK(pool.lease(free)->key_id == 2);
}

TEST_CASE("pool: groups share each key's window") {
  Fixture f(2, 1);
  // Builds the tier group while key 1 has no window yet.
  Query tried = chat();
  tried.exclude = {1};
  CHECK(f.pool.lease(tried).error().code == ErrorCode::Unavailable);
  // The any-tier group opens the window and spends it...
  CHECK(f.next(chat(std::nullopt)) == 1);
  CHECK(f.next(chat(std::nullopt)) == 1);
  // ...and the tier group sees that, as does a group filtering by service.
  CHECK(f.pool.lease(chat()).error().code == ErrorCode::RateLimited);
  Query svc = chat();
  svc.service = "openai";
  CHECK(f.pool.lease(svc).error().code == ErrorCode::RateLimited);
  CHECK(f.pool.status(1)->usage[0].used == 2);
}

TEST_CASE("pool: affinity follows key changes") {
  Fixture f(100, 2);
  Query q = chat();
  q.affinity = "s";
  CHECK(f.next(q) == 1);
  f.pool.update_key(key(1, "free"));  // no longer in the query's tier
  CHECK(f.next(q) == 2);
  CHECK(f.next(q) == 2);
}

TEST_CASE("pool: leases stay exact while the configuration changes") {
  Fixture f(50, 3);
  std::atomic<bool> stop{false};
  std::atomic<int> total{0};
  // Churns keys 10..19 (never leasable: another service) and rewrites the tier.
  std::thread admin([&] {
    for (int i = 0; !stop; ++i) {
      const int64_t id = 10 + i % 10;
      if (i % 3 == 0) f.pool.upsert_key(key(id, "pro", "other"), Secret("x"));
      else if (i % 3 == 1) f.pool.update_key(key(id, "free", "other"));
      else f.pool.remove_key(id);
      if (i % 7 == 0) f.pool.set_tiers({TierPolicy{"pro", {{"chat", 50}}, 0}});
    }
  });
  auto worker = [&] {
    Query q = chat();
    q.service = "openai";
    for (int i = 0; i < 1000; ++i) {
      auto l = f.pool.lease(q);
      if (!l.ok()) continue;
      ++total;
      f.pool.release(*l);
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  stop = true;
  admin.join();
  CHECK(total.load() == 150);
}

TEST_CASE("pool: a suspended key is skipped, shown as suspended, probed when due, and lifted") {
  Fixture f(100, 2);
  CHECK(f.pool.suspend(1, Suspension{"invalid", 1000, 5000, 4000}));
  CHECK_FALSE(f.pool.suspend(1, Suspension{"quota", 1000, 5000, 4000}));  // already suspended
  auto st = f.pool.status(1);
  CHECK(st->state == KeyState::Suspended);
  CHECK(std::string(state_name(st->state)) == "suspended");
  REQUIRE(st->suspension);
  CHECK(st->suspension->reason == "invalid");
  for (int i = 0; i < 4; ++i) CHECK(f.next(chat()) == 2);
  // Key 2 suspended too: nothing will free up by waiting.
  CHECK(f.pool.suspend(2, Suspension{"quota", 1000, 9000, 8000}));
  auto l = f.pool.lease(chat());
  REQUIRE_FALSE(l.ok());
  CHECK(l.error().code == ErrorCode::Unavailable);
  // Probes: only the due ones, each once until settled.
  CHECK(f.pool.take_due_probes(4999).empty());
  auto due = f.pool.take_due_probes(5000);
  REQUIRE(due.size() == 1);
  CHECK(due[0].key_id == 1);
  CHECK(due[0].service == "openai");
  CHECK(due[0].value->view() == "sk-1");
  CHECK(due[0].probe_backoff_ms == 4000);
  CHECK(f.pool.take_due_probes(6000).empty());  // still being probed
  f.pool.probe_failed(1, 14000, 8000);
  auto second = f.pool.take_due_probes(13999);  // key 2's first probe (due at 9000)
  REQUIRE(second.size() == 1);
  CHECK(second[0].key_id == 2);
  REQUIRE(f.pool.take_due_probes(14000).size() == 1);  // key 1's second
  // An admin's disable outranks a suspension, in the state and for probes.
  f.pool.probe_failed(2, 20000, 16000);
  auto info = key(2);
  info.enabled = false;
  f.pool.update_key(info);
  CHECK(f.pool.status(2)->state == KeyState::Disabled);
  CHECK(f.pool.take_due_probes(30000).empty());
  CHECK(f.pool.unsuspend(1));
  CHECK_FALSE(f.pool.unsuspend(1));
  CHECK(f.pool.status(1)->state == KeyState::Active);
  CHECK(f.next(chat()) == 1);
}
