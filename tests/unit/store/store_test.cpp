#include "store/migrations.h"
#include "store/store.h"

#include <doctest/doctest.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "base/strings.h"
#include "crypto/crypto.h"

using namespace keypool;
using namespace keypool::store;

namespace {

constexpr int64_t kNow = 1'700'000'000'000;

crypto::MasterKey master(char c) { return crypto::MasterKey::from_hex(std::string(64, c)).value(); }

// A fresh directory under /tmp, removed with everything in it.
struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/keypool-store-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string db() const { return path + "/keypool.db"; }
  std::string path;
};

std::unique_ptr<Store> open_store(const std::string& path, const crypto::MasterKey& k) {
  auto s = Store::open(path, k);
  REQUIRE_MESSAGE(s.ok(), (s.ok() ? "" : s.error().message));
  return std::move(s).value();
}

// Raw SQL against the file, as an attacker or a broken disk would change it.
void raw_exec(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  std::string msg = err ? err : "";
  sqlite3_free(err);
  sqlite3_close(db);
  REQUIRE_MESSAGE(rc == SQLITE_OK, msg);
}

TierRow tier(const std::string& name) { return TierRow{name, {{"chat", 60}, {"image", 100}}, 500, 0}; }

NewKey new_key(const std::string& value, const std::string& tier_name = "pro") {
  NewKey k;
  k.name = "k-" + value.substr(value.size() - 2);
  k.tier = tier_name;
  k.service = "openai";
  k.value = Secret(value);
  return k;
}

TokenRow token(const std::string& name, const std::string& tier_name = "pro") {
  TokenRow t;
  t.name = name;
  t.tier = tier_name;
  t.services = {"openai", "groq"};
  t.rpm = 30;
  t.expires_at = kNow + 1000;
  t.hash_hex = crypto::sha256_hex("tok-" + name);
  t.prefix = "kp_abcde";
  return t;
}

}  // namespace

TEST_CASE("store: migrations on an empty database, then reopen keeps data") {
  TempDir dir;
  auto k = master('a');
  int version = 0;
  {
    auto s = open_store(dir.db(), k);
    version = s->schema_version();
    CHECK(version >= 2);
    REQUIRE(s->create_tier(tier("pro"), kNow).ok());
    REQUIRE(s->create_key(new_key("sk-live-aaaaaaaaaaaa01"), kNow).ok());
  }
  struct stat sb;
  REQUIRE(::stat(dir.db().c_str(), &sb) == 0);
  CHECK((sb.st_mode & 0777) == 0600);
  {
    auto s = open_store(dir.db(), k);
    CHECK(s->schema_version() == version);
    CHECK(s->list_tiers()->size() == 1);
    auto keys = s->load_keys();
    REQUIRE(keys.ok());
    REQUIRE(keys->size() == 1);
    CHECK((*keys)[0].value.view() == "sk-live-aaaaaaaaaaaa01");
  }
}

TEST_CASE("store: an older database gets only the missing migrations") {
  TempDir dir;
  auto k = master('a');
  {
    auto s = open_store(dir.db(), k);
    REQUIRE(s->create_tier(tier("pro"), kNow).ok());
  }
  // Roll the file back to schema 1 (migration 2 adds audit and usage, 3 key suspension, 4
  // token and source columns).
  raw_exec(dir.db(),
           "DROP TABLE audit; DROP TABLE key_usage; DROP TABLE token_usage; "
           "ALTER TABLE keys DROP COLUMN suspended_reason; ALTER TABLE keys DROP COLUMN suspended_at; "
           "ALTER TABLE tokens DROP COLUMN allow_key_handout; ALTER TABLE tokens DROP COLUMN prev_hash_hex; "
           "ALTER TABLE tokens DROP COLUMN prev_valid_until; ALTER TABLE tokens DROP COLUMN source; "
           "ALTER TABLE keys DROP COLUMN source; ALTER TABLE tiers DROP COLUMN source; "
           "DELETE FROM schema_version WHERE version >= 2;");
  auto s = open_store(dir.db(), k);
  CHECK(s->schema_version() == store::latest_schema_version());
  CHECK(s->list_tiers()->size() == 1);
  CHECK(s->append_audit({AuditRow{0, kNow, "admin", "tier.create", "pro", "{}"}}).ok());
}

TEST_CASE("store: a database from a newer keypool is refused") {
  TempDir dir;
  { open_store(dir.db(), master('a')); }
  raw_exec(dir.db(), "INSERT INTO schema_version(version, applied_at) VALUES (999, 0)");
  auto s = Store::open(dir.db(), master('a'));
  REQUIRE(!s.ok());
  CHECK(s.error().code == ErrorCode::Invalid);
  CHECK(s.error().message.find(dir.db()) != std::string::npos);
}

TEST_CASE("store: open failure names the path") {
  auto s = Store::open("/nonexistent-dir/keypool.db", master('a'));
  REQUIRE(!s.ok());
  CHECK(s.error().message.find("/nonexistent-dir/keypool.db") != std::string::npos);
}

TEST_CASE("store: tiers") {
  TempDir dir;
  auto s = open_store(dir.db(), master('a'));
  auto created = s->create_tier(tier("pro"), kNow);
  REQUIRE(created.ok());
  CHECK(created->created_at == kNow);
  CHECK(s->create_tier(tier("free"), kNow).ok());
  CHECK(s->create_tier(tier("pro"), kNow).error().code == ErrorCode::Conflict);

  auto tiers = s->list_tiers();
  REQUIRE(tiers.ok());
  REQUIRE(tiers->size() == 2);
  CHECK((*tiers)[0].name == "free");
  CHECK((*tiers)[1].features == std::map<std::string, int64_t>{{"chat", 60}, {"image", 100}});
  CHECK((*tiers)[1].max_wait_ms == 500);

  CHECK(s->delete_tier("nope").error().code == ErrorCode::NotFound);
  REQUIRE(s->create_key(new_key("sk-live-aaaaaaaaaaaa01"), kNow).ok());
  REQUIRE(s->create_key(new_key("sk-live-aaaaaaaaaaaa02"), kNow).ok());
  auto in_use = s->delete_tier("pro");
  CHECK(in_use.error().code == ErrorCode::Conflict);
  CHECK(in_use.error().message == "tier 'pro' is used by 2 keys");

  auto tok = s->create_token(token("t1", "free"), kNow);
  REQUIRE(tok.ok());
  CHECK(s->delete_tier("free").error().message == "tier 'free' is used by 1 token");
  // A revoked token no longer holds its tier.
  REQUIRE(s->revoke_token(tok->id, kNow).ok());
  CHECK(s->delete_tier("free").ok());
  CHECK(s->list_tiers()->size() == 1);
  CHECK(s->list_tokens()->size() == 1);
}

TEST_CASE("store: keys create, list, get, load round trip") {
  TempDir dir;
  auto s = open_store(dir.db(), master('a'));
  REQUIRE(s->create_tier(tier("pro"), kNow).ok());

  NewKey nk = new_key("sk-live-aaaaaaaaaaaa01");
  nk.expires_at = kNow + 5;
  nk.max_concurrent = 3;
  nk.balance_total = 12.5;
  nk.balance_unit = "USD";
  auto k1 = s->create_key(nk, kNow);
  REQUIRE(k1.ok());
  CHECK(k1->id > 0);
  CHECK(k1->hint == key_hint("sk-live-aaaaaaaaaaaa01"));
  CHECK(k1->hint.find("aaaaaaaa") == std::string::npos);
  CHECK(k1->tier == "pro");
  CHECK(k1->service == "openai");
  CHECK(k1->enabled);
  CHECK(k1->expires_at == kNow + 5);
  CHECK(k1->max_concurrent == 3);
  CHECK(k1->balance_total == 12.5);
  CHECK(k1->balance_unit == "USD");
  CHECK(k1->created_at == kNow);
  auto k2 = s->create_key(new_key("sk-live-bbbbbbbbbbbb02"), kNow + 1);
  REQUIRE(k2.ok());
  CHECK(!k2->balance_total);

  CHECK(s->create_key(new_key("sk-live-cccccccccccc03", "nope"), kNow).error().code ==
        ErrorCode::NotFound);

  auto list = s->list_keys();
  REQUIRE(list.ok());
  CHECK(list->size() == 2);
  CHECK(s->get_key(k2->id)->name == "k-02");
  CHECK(s->get_key(999).error().code == ErrorCode::NotFound);

  auto loaded = s->load_keys();
  REQUIRE(loaded.ok());
  REQUIRE(loaded->size() == 2);
  CHECK((*loaded)[0].row.id == k1->id);
  CHECK((*loaded)[0].value.view() == "sk-live-aaaaaaaaaaaa01");
  CHECK((*loaded)[1].value.view() == "sk-live-bbbbbbbbbbbb02");
}

TEST_CASE("store: the value is never stored in clear") {
  TempDir dir;
  {
    auto s = open_store(dir.db(), master('a'));
    REQUIRE(s->create_tier(tier("pro"), kNow).ok());
    REQUIRE(s->create_key(new_key("sk-live-plaintextcheck99"), kNow).ok());
  }
  raw_exec(dir.db(), "PRAGMA wal_checkpoint(TRUNCATE)");
  for (const char* suffix : {"", "-wal"}) {
    std::string p = dir.db() + suffix;
    if (!std::filesystem::exists(p)) continue;
    FILE* f = fopen(p.c_str(), "rb");
    REQUIRE(f);
    std::string bytes;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) bytes.append(buf, n);
    fclose(f);
    CHECK(bytes.find("plaintextcheck") == std::string::npos);
  }
}

TEST_CASE("store: duplicate value is a Conflict that does not echo the value") {
  TempDir dir;
  auto s = open_store(dir.db(), master('a'));
  REQUIRE(s->create_tier(tier("pro"), kNow).ok());
  REQUIRE(s->create_key(new_key("sk-live-aaaaaaaaaaaa01"), kNow).ok());
  auto dup = s->create_key(new_key("sk-live-aaaaaaaaaaaa01"), kNow);
  REQUIRE(!dup.ok());
  CHECK(dup.error().code == ErrorCode::Conflict);
  CHECK(dup.error().message == "a key with this value already exists");
  // The failed attempt left nothing behind.
  CHECK(s->list_keys()->size() == 1);
}

TEST_CASE("store: reopening with a wrong MasterKey makes load_keys Corrupt") {
  TempDir dir;
  {
    auto s = open_store(dir.db(), master('a'));
    REQUIRE(s->create_tier(tier("pro"), kNow).ok());
    REQUIRE(s->create_key(new_key("sk-live-aaaaaaaaaaaa01"), kNow).ok());
  }
  auto s = open_store(dir.db(), master('b'));
  auto loaded = s->load_keys();
  REQUIRE(!loaded.ok());
  CHECK(loaded.error().code == ErrorCode::Corrupt);
  CHECK(loaded.error().message == "key 1: cannot decrypt: wrong ENCRYPTION_KEY or tampered row");
}

TEST_CASE("store: a tampered ciphertext is Corrupt naming the id") {
  TempDir dir;
  auto k = master('a');
  int64_t id = 0;
  {
    auto s = open_store(dir.db(), k);
    REQUIRE(s->create_tier(tier("pro"), kNow).ok());
    REQUIRE(s->create_key(new_key("sk-live-aaaaaaaaaaaa01"), kNow).ok());
    id = s->create_key(new_key("sk-live-bbbbbbbbbbbb02"), kNow)->id;
  }
  // Change one ciphertext byte (offset 21: past the version byte and the nonce).
  raw_exec(dir.db(),
           "UPDATE keys SET value_blob = substr(value_blob, 1, 20) || "
           "CASE WHEN substr(value_blob, 21, 1) = X'41' THEN X'42' ELSE X'41' END || "
           "substr(value_blob, 22) WHERE id = " + std::to_string(id));
  auto s = open_store(dir.db(), k);
  auto loaded = s->load_keys();
  REQUIRE(!loaded.ok());
  CHECK(loaded.error().code == ErrorCode::Corrupt);
  CHECK(loaded.error().message.rfind("key " + std::to_string(id) + ": ", 0) == 0);
}

TEST_CASE("store: the AAD binds a value to its row id") {
  TempDir dir;
  auto k = master('a');
  {
    auto s = open_store(dir.db(), k);
    REQUIRE(s->create_tier(tier("pro"), kNow).ok());
    REQUIRE(s->create_key(new_key("sk-live-aaaaaaaaaaaa01"), kNow).ok());
    REQUIRE(s->create_key(new_key("sk-live-bbbbbbbbbbbb02"), kNow).ok());
  }
  raw_exec(dir.db(),
           "UPDATE keys SET value_blob = CASE id "
           "WHEN 1 THEN (SELECT value_blob FROM keys WHERE id = 2) "
           "WHEN 2 THEN (SELECT value_blob FROM keys WHERE id = 1) END");
  auto s = open_store(dir.db(), k);
  auto loaded = s->load_keys();
  REQUIRE(!loaded.ok());
  CHECK(loaded.error().code == ErrorCode::Corrupt);
  CHECK(loaded.error().message.rfind("key 1: ", 0) == 0);
}

TEST_CASE("store: update, rotate and delete keys") {
  TempDir dir;
  auto s = open_store(dir.db(), master('a'));
  REQUIRE(s->create_tier(tier("pro"), kNow).ok());
  REQUIRE(s->create_tier(tier("free"), kNow).ok());
  int64_t id = s->create_key(new_key("sk-live-aaaaaaaaaaaa01"), kNow)->id;
  int64_t other = s->create_key(new_key("sk-live-bbbbbbbbbbbb02"), kNow)->id;

  KeyPatch disable;
  disable.enabled = false;
  disable.disabled_reason = "billing";
  auto r = s->update_key(id, disable, kNow + 10);
  REQUIRE(r.ok());
  CHECK(!r->enabled);
  CHECK(r->disabled_reason == "billing");
  CHECK(r->disabled_at == kNow + 10);
  CHECK(r->updated_at == kNow + 10);

  KeyPatch move;
  move.tier = "free";
  move.name = "renamed";
  move.enabled = true;
  move.expires_at = kNow + 99;
  move.max_concurrent = 4;
  r = s->update_key(id, move, kNow + 20);
  REQUIRE(r.ok());
  CHECK(r->enabled);
  CHECK(r->disabled_reason.empty());
  CHECK(r->disabled_at == 0);
  CHECK(r->tier == "free");
  CHECK(r->name == "renamed");
  CHECK(r->expires_at == kNow + 99);
  CHECK(r->max_concurrent == 4);
  CHECK(s->get_key(id)->name == "renamed");

  KeyPatch bad_tier;
  bad_tier.tier = "nope";
  CHECK(s->update_key(id, bad_tier, kNow).error().code == ErrorCode::NotFound);
  CHECK(s->update_key(999, move, kNow).error().code == ErrorCode::NotFound);

  auto rotated = s->rotate_key(id, Secret("sk-live-cccccccccccc03"), kNow + 30);
  REQUIRE(rotated.ok());
  CHECK(rotated->hint == key_hint("sk-live-cccccccccccc03"));
  CHECK(rotated->updated_at == kNow + 30);
  CHECK(s->rotate_key(id, Secret("sk-live-bbbbbbbbbbbb02"), kNow).error().code ==
        ErrorCode::Conflict);
  CHECK(s->rotate_key(999, Secret("sk-live-dddddddddddd04"), kNow).error().code ==
        ErrorCode::NotFound);
  // The old value is free again once rotated away.
  CHECK(s->create_key(new_key("sk-live-aaaaaaaaaaaa01"), kNow).ok());
  auto loaded = s->load_keys();
  REQUIRE(loaded.ok());
  CHECK((*loaded)[0].value.view() == "sk-live-cccccccccccc03");

  CHECK(s->delete_key(other).ok());
  CHECK(s->delete_key(other).error().code == ErrorCode::NotFound);
  CHECK(s->list_keys()->size() == 2);
}

TEST_CASE("store: tokens create, list, revoke") {
  TempDir dir;
  auto s = open_store(dir.db(), master('a'));
  REQUIRE(s->create_tier(tier("pro"), kNow).ok());
  CHECK(s->create_token(token("t0", "nope"), kNow).error().code == ErrorCode::NotFound);
  auto t1 = s->create_token(token("t1"), kNow);
  REQUIRE(t1.ok());
  CHECK(t1->id > 0);
  CHECK(t1->created_at == kNow);
  CHECK(s->create_token(token("t1"), kNow).error().code == ErrorCode::Conflict);
  TokenRow bare = token("t2");
  bare.services.clear();
  auto t2 = s->create_token(bare, kNow);
  REQUIRE(t2.ok());

  CHECK(s->revoke_token(t1->id, kNow + 7).ok());
  CHECK(s->revoke_token(t1->id, kNow + 8).error().code == ErrorCode::NotFound);
  CHECK(s->revoke_token(999, kNow).error().code == ErrorCode::NotFound);

  auto list = s->list_tokens();
  REQUIRE(list.ok());
  REQUIRE(list->size() == 2);
  const TokenRow& a = (*list)[0];
  CHECK(a.name == "t1");
  CHECK(a.tier == "pro");
  CHECK(a.services == std::vector<std::string>{"openai", "groq"});
  CHECK(a.rpm == 30);
  CHECK(a.expires_at == kNow + 1000);
  CHECK(a.hash_hex == crypto::sha256_hex("tok-t1"));
  CHECK(a.prefix == "kp_abcde");
  CHECK(a.revoked_at == kNow + 7);
  CHECK((*list)[1].services.empty());
  CHECK((*list)[1].revoked_at == 0);
}

TEST_CASE("store: services upsert, list, delete") {
  TempDir dir;
  auto s = open_store(dir.db(), master('a'));
  REQUIRE(s->upsert_service("openai", R"({"base_url":"https://a"})").ok());
  REQUIRE(s->upsert_service("groq", R"({"base_url":"https://g"})").ok());
  REQUIRE(s->upsert_service("openai", R"({"base_url":"https://b"})").ok());
  auto list = s->list_services();
  REQUIRE(list.ok());
  REQUIRE(list->size() == 2);
  CHECK((*list)[0].first == "groq");
  CHECK((*list)[1].second == R"({"base_url":"https://b"})");
  CHECK(s->delete_service("groq").ok());
  CHECK(s->delete_service("groq").error().code == ErrorCode::NotFound);
  CHECK(s->list_services()->size() == 1);
}

TEST_CASE("store: audit append and query") {
  TempDir dir;
  auto s = open_store(dir.db(), master('a'));
  REQUIRE(s->append_audit({
                              {0, kNow, "admin", "key.create", "key:1", R"({"tier":"pro"})"},
                              {0, kNow + 10, "admin", "key.delete", "key:1", ""},
                              {0, kNow + 20, "system", "key.disable", "key:2", "{}"},
                          })
              .ok());
  REQUIRE(s->append_audit({{0, kNow + 30, "token:3", "key.create", "key:4", "{}"}}).ok());
  REQUIRE(s->append_audit({}).ok());

  auto all = s->query_audit(0, "", 0);
  REQUIRE(all.ok());
  REQUIRE(all->size() == 4);
  CHECK((*all)[0].at == kNow + 30);  // newest first
  CHECK((*all)[0].actor == "token:3");
  CHECK((*all)[3].details_json == R"({"tier":"pro"})");
  CHECK((*all)[2].details_json == "{}");

  CHECK(s->query_audit(2, "", 0)->size() == 2);
  auto creates = s->query_audit(100, "key.create", 0);
  REQUIRE(creates->size() == 2);
  CHECK((*creates)[0].target == "key:4");
  CHECK(s->query_audit(100, "", kNow + 15)->size() == 2);
  CHECK(s->query_audit(100, "key.create", kNow + 15)->size() == 1);
  CHECK(s->query_audit(100, "nothing", 0)->empty());
}

TEST_CASE("store: usage accumulates per key and per token") {
  TempDir dir;
  auto s = open_store(dir.db(), master('a'));
  REQUIRE(s->create_tier(tier("pro"), kNow).ok());
  int64_t k1 = s->create_key(new_key("sk-live-aaaaaaaaaaaa01"), kNow)->id;
  int64_t k2 = s->create_key(new_key("sk-live-bbbbbbbbbbbb02"), kNow)->id;
  int64_t t1 = s->create_token(token("t1"), kNow)->id;

  UsageDelta a{k1, t1, 2, 1, 100, 50, 0.25, kNow + 5, "upstream 429"};
  UsageDelta b{k1, 0, 1, 0, 10, 5, 0.5, kNow + 3, ""};
  UsageDelta c{k2, t1, 1, 0, 0, 0, 0, kNow + 9, ""};
  UsageDelta gone{424242, 0, 1, 0, 0, 0, 0, kNow, ""};  // a key deleted meanwhile
  REQUIRE(s->add_usage({a, b}).ok());
  REQUIRE(s->add_usage({c, gone}).ok());

  auto ku = s->key_usage();
  REQUIRE(ku.ok());
  REQUIRE(ku->size() == 2);
  const UsageTotals& u1 = ku->at(k1);
  CHECK(u1.requests == 3);
  CHECK(u1.errors == 1);
  CHECK(u1.input_tokens == 110);
  CHECK(u1.output_tokens == 55);
  CHECK(u1.cost == doctest::Approx(0.75));
  CHECK(u1.last_used_at == kNow + 5);  // the later time wins, not the later delta
  CHECK(u1.last_error == "upstream 429");
  CHECK(ku->at(k2).requests == 1);

  auto tu = s->token_usage();
  REQUIRE(tu.ok());
  REQUIRE(tu->size() == 1);
  CHECK(tu->at(t1).requests == 3);
  CHECK(tu->at(t1).last_used_at == kNow + 9);

  // Deleting a key drops its totals.
  REQUIRE(s->delete_key(k2).ok());
  CHECK(s->key_usage()->size() == 1);
}

TEST_CASE("store: reencrypt_all moves every value to the new key") {
  TempDir dir;
  auto old_key = master('a');
  auto new_key_ = master('b');
  std::string fp_before;
  {
    auto s = open_store(dir.db(), old_key);
    REQUIRE(s->create_tier(tier("pro"), kNow).ok());
    REQUIRE(s->create_key(new_key("sk-live-aaaaaaaaaaaa01"), kNow).ok());
    REQUIRE(s->create_key(new_key("sk-live-bbbbbbbbbbbb02"), kNow).ok());
    // A wrong `from` key changes nothing.
    auto wrong = s->reencrypt_all(master('c'), new_key_);
    CHECK(wrong.error().code == ErrorCode::Corrupt);
    CHECK(s->load_keys().ok());

    auto n = s->reencrypt_all(old_key, new_key_);
    REQUIRE(n.ok());
    CHECK(*n == 2);
    // The same store now seals and fingerprints with the new key.
    CHECK(s->load_keys().ok());
    CHECK(s->create_key(new_key("sk-live-aaaaaaaaaaaa01"), kNow).error().code ==
          ErrorCode::Conflict);
    CHECK(s->create_key(new_key("sk-live-cccccccccccc03"), kNow).ok());
    CHECK(s->get_key(1)->updated_at == kNow);
  }
  CHECK(!open_store(dir.db(), old_key)->load_keys().ok());
  auto loaded = open_store(dir.db(), new_key_)->load_keys();
  REQUIRE(loaded.ok());
  REQUIRE(loaded->size() == 3);
  CHECK((*loaded)[1].value.view() == "sk-live-bbbbbbbbbbbb02");
}

TEST_CASE("store: hand-out counts add up in one audit row per caller, key and minute") {
  TempDir dir;
  auto s = open_store(dir.db(), master('a'));
  const int64_t minute = kNow - kNow % 60'000;
  HandoutCount a{"token:3", 7, minute, "pro", {{"chat", 2}}, 2, minute + 1'000};
  HandoutCount b{"token:3", 7, minute, "pro", {{"chat", 1}, {"image", 4}}, 5, minute + 9'000};
  HandoutCount other_minute{"token:3", 7, minute + 60'000, "pro", {{"chat", 1}}, 1, minute + 61'000};
  HandoutCount admin{"admin", 7, minute, "pro", {{"chat", 1}}, 1, minute + 2'000};
  REQUIRE(s->add_handouts({a}).ok());
  REQUIRE(s->add_handouts({b, other_minute, admin}).ok());
  auto rows = s->query_audit(0, "key.handout", 0);
  REQUIRE(rows.ok());
  REQUIRE(rows->size() == 3);
  bool found = false;
  for (const auto& r : *rows) {
    if (r.actor != "token:3" || r.at != minute) continue;
    found = true;
    auto d = nlohmann::json::parse(r.details_json);
    CHECK(d["count"] == 7);
    CHECK(d["features"]["chat"] == 3);
    CHECK(d["features"]["image"] == 4);
    CHECK(d["last_at"] == minute + 9'000);
    CHECK(r.target == "7");
  }
  CHECK(found);
}

TEST_CASE("store: prune_audit deletes the oldest rows before a time, a batch at a time") {
  TempDir dir;
  auto s = open_store(dir.db(), master('a'));
  std::vector<AuditRow> rows;
  for (int i = 0; i < 10; ++i) rows.push_back(AuditRow{0, kNow - 100'000 + i, "admin", "old", "", "{}"});
  rows.push_back(AuditRow{0, kNow, "admin", "new", "", "{}"});
  REQUIRE(s->append_audit(rows).ok());
  auto n = s->prune_audit(kNow - 1, 4);
  REQUIRE(n.ok());
  CHECK(*n == 4);
  auto left = s->query_audit(0, "old", 0);
  REQUIRE(left.ok());
  REQUIRE(left->size() == 6);
  CHECK(left->back().at == kNow - 100'000 + 4);  // the oldest went first
  CHECK(*s->prune_audit(kNow - 1, 100) == 6);
  CHECK(*s->prune_audit(kNow - 1, 100) == 0);
  CHECK(s->query_audit(0, "new", 0)->size() == 1);
}

TEST_CASE("store: token update, rotation with a previous hash, tier update, row source") {
  TempDir dir;
  auto s = open_store(dir.db(), master('a'));
  REQUIRE(s->create_tier(tier("pro"), kNow).ok());
  REQUIRE(s->create_tier(tier("free"), kNow).ok());
  auto t = s->create_token(token("a"), kNow);
  REQUIRE(t.ok());
  CHECK(t->source == "admin");
  CHECK_FALSE(t->allow_key_handout);
  TokenPatch p;
  p.rpm = 9;
  p.allow_key_handout = true;
  p.services = std::vector<std::string>{"openai"};
  p.tier = "free";
  auto u = s->update_token(t->id, p);
  REQUIRE(u.ok());
  CHECK(u->rpm == 9);
  CHECK(u->tier == "free");
  TokenPatch ghost;
  ghost.tier = "ghost";
  CHECK(s->update_token(t->id, ghost).error().code == ErrorCode::NotFound);
  const std::string old_hash = u->hash_hex;
  auto r = s->rotate_token(t->id, crypto::sha256_hex("next"), "kp_next0", kNow + 5'000);
  REQUIRE(r.ok());
  auto again = s->get_token(t->id);
  REQUIRE(again.ok());
  CHECK(again->hash_hex == crypto::sha256_hex("next"));
  CHECK(again->prev_hash_hex == old_hash);
  CHECK(again->prev_valid_until == kNow + 5'000);
  CHECK(again->allow_key_handout);
  CHECK(again->services == std::vector<std::string>{"openai"});
  auto r2 = s->rotate_token(t->id, crypto::sha256_hex("third"), "kp_third", 0);
  REQUIRE(r2.ok());
  CHECK(s->get_token(t->id)->prev_hash_hex.empty());
  REQUIRE(s->revoke_token(t->id, kNow).ok());
  CHECK(s->update_token(t->id, p).error().code == ErrorCode::NotFound);

  auto tu = s->update_tier("pro", TierPatch{std::map<std::string, int64_t>{{"chat", 1}}, std::nullopt});
  REQUIRE(tu.ok());
  CHECK(tu->features == std::map<std::string, int64_t>{{"chat", 1}});
  CHECK(tu->max_wait_ms == 500);  // unchanged
  CHECK(s->update_tier("ghost", TierPatch{}).error().code == ErrorCode::NotFound);

  NewKey k = new_key("sk-source-value-0001");
  k.source = kSourceBootstrap;
  auto key = s->create_key(k, kNow);
  REQUIRE(key.ok());
  CHECK(s->get_key(key->id)->source == "bootstrap");
  CHECK(*s->key_value_is(key->id, Secret(std::string("sk-source-value-0001"))));
  CHECK_FALSE(*s->key_value_is(key->id, Secret(std::string("sk-source-value-0002"))));
}

TEST_CASE("store: transaction rolls back every nested write when it fails") {
  TempDir dir;
  auto s = open_store(dir.db(), master('a'));
  auto r = s->transaction([&]() -> Result<void> {
    if (auto t = s->create_tier(tier("pro"), kNow); !t) return t.error();
    if (auto k = s->create_key(new_key("sk-tx-value-00001"), kNow); !k) return k.error();
    return s->create_key(new_key("sk-tx-value-00002", "ghost"), kNow).error();  // tier not found
  });
  CHECK_FALSE(r.ok());
  CHECK(s->list_tiers()->empty());
  CHECK(s->list_keys()->empty());
  REQUIRE(s->transaction([&]() -> Result<void> {
              if (auto t = s->create_tier(tier("pro"), kNow); !t) return t.error();
              return Ok{};
            })
              .ok());
  CHECK(s->list_tiers()->size() == 1);
}
