#pragma once
// store: keypool's durable state in one SQLite file (WAL, foreign keys, synchronous=FULL):
// tiers, keys (values sealed with crypto::seal, the row id as AAD), team tokens (SHA-256
// only), admin-defined services, the append-only audit log and usage totals.
//
// A Store is used from one thread at a time — in the running proxy the StoreThread
// (store_thread.h) owns it, so the event loops never wait on fsync. It does no caching:
// the pools keep the decrypted keys in memory, loaded once through load_keys().
// Times are int64 milliseconds since the Unix epoch; 0 means "never" / "none".
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/result.h"
#include "base/secret.h"
#include "crypto/crypto.h"

struct sqlite3;

namespace keypool::store {

// Who manages a tier, key or token row: the admin API, or the bootstrap file (only those
// are ever pruned by it).
inline constexpr const char* kSourceAdmin = "admin";
inline constexpr const char* kSourceBootstrap = "bootstrap";

struct TierRow {
  std::string name;
  std::map<std::string, int64_t> features;  // feature -> rpm per key
  int64_t max_wait_ms = 0;
  int64_t created_at = 0;
  std::string source = kSourceAdmin;
};

// Fields left empty are not changed.
struct TierPatch {
  std::optional<std::map<std::string, int64_t>> features;
  std::optional<int64_t> max_wait_ms;
};

struct KeyRow {
  int64_t id = 0;
  std::string name, tier, service /* "" = none */, hint;
  bool enabled = true;
  std::string disabled_reason;
  int64_t disabled_at = 0;
  int64_t expires_at = 0;      // 0 = never
  int64_t max_concurrent = 0;  // 0 = unlimited
  std::optional<double> balance_total;
  std::string balance_unit;
  int64_t created_at = 0, updated_at = 0;
  std::string source = kSourceAdmin;
  std::string suspended_reason;  // "" = not suspended
  int64_t suspended_at = 0;
};

struct KeyWithValue {
  KeyRow row;
  Secret value;
};

struct NewKey {
  std::string name, tier, service;
  Secret value;
  int64_t expires_at = 0;
  int64_t max_concurrent = 0;
  std::optional<double> balance_total;
  std::string balance_unit;
  std::string source = kSourceAdmin;
};

// Fields left empty are not changed. enabled=false stamps disabled_at; enabled=true clears
// the reason and the stamp (unless a reason is given in the same patch).
struct KeyPatch {
  std::optional<std::string> name, tier;
  std::optional<bool> enabled;
  std::optional<std::string> disabled_reason;
  std::optional<int64_t> expires_at;
  std::optional<int64_t> max_concurrent;
};

struct TokenRow {
  int64_t id = 0;
  std::string name, tier;
  std::vector<std::string> services;  // empty = every service of the tier
  int64_t expires_at = 0;
  int64_t rpm = 0;
  std::string hash_hex;  // sha256 of the token, never the token
  std::string prefix;    // first 8 chars, for display
  int64_t created_at = 0;
  int64_t revoked_at = 0;
  bool allow_key_handout = false;  // GET /key allowed (else proxy-only)
  // After a rotation with a grace period: the previous hash, valid until prev_valid_until.
  std::string prev_hash_hex;
  int64_t prev_valid_until = 0;
  std::string source = kSourceAdmin;
};

// Fields left empty are not changed.
struct TokenPatch {
  std::optional<std::string> name;
  std::optional<std::string> tier;  // the bootstrap file only; the tier must exist
  std::optional<std::vector<std::string>> services;
  std::optional<int64_t> rpm;
  std::optional<int64_t> expires_at;
  std::optional<bool> allow_key_handout;
};

// GET /key hand-outs of one caller and key within one minute, counted (Recorder).
struct HandoutCount {
  std::string actor;   // admin | token:<id>
  int64_t key_id = 0;
  int64_t minute_at = 0;  // the minute's start: the audit row's `at`
  std::string tier;
  std::map<std::string, int64_t, std::less<>> features;  // feature -> hand-outs
  int64_t count = 0, last_at = 0;
};

struct AuditRow {
  int64_t id = 0;
  int64_t at = 0;
  std::string actor;   // admin | system | token:<id>
  std::string action;  // key.create, tier.delete, ...
  std::string target, details_json;
};

// key_id or token_id 0 = not attributed to a key / token.
struct UsageDelta {
  int64_t key_id = 0;
  int64_t token_id = 0;
  int64_t requests = 0, errors = 0, input_tokens = 0, output_tokens = 0;
  double cost = 0;
  int64_t last_used_at = 0;
  std::string last_error;  // "" = keep the previous one
};

struct UsageTotals {
  int64_t requests = 0, errors = 0, input_tokens = 0, output_tokens = 0;
  double cost = 0;
  int64_t last_used_at = 0;
  std::string last_error;
};

class Store {
 public:
  // Opens or creates the database (the caller creates the parent directory) and applies
  // the missing migrations. A new file is made 0600. Errors name the path.
  static Result<std::unique_ptr<Store>> open(const std::string& path,
                                             const crypto::MasterKey& key);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  int schema_version();

  // Tiers. create: Conflict on a duplicate name. delete: NotFound; Conflict while keys or
  // unrevoked tokens use it.
  Result<TierRow> create_tier(const TierRow& tier, int64_t now);
  Result<std::vector<TierRow>> list_tiers();
  Result<void> delete_tier(const std::string& name);
  // NotFound if absent. Windows live in memory and are not touched here.
  Result<TierRow> update_tier(const std::string& name, const TierPatch& patch);

  // Keys. Unknown tier -> NotFound; a value already stored -> Conflict (never echoed).
  Result<KeyRow> create_key(const NewKey& key, int64_t now);
  Result<std::vector<KeyRow>> list_keys();
  Result<KeyRow> get_key(int64_t id);
  // Decrypts every key; the first failure is Corrupt and names the key id.
  Result<std::vector<KeyWithValue>> load_keys();
  Result<KeyRow> update_key(int64_t id, const KeyPatch& patch, int64_t now);
  Result<KeyRow> rotate_key(int64_t id, const Secret& new_value, int64_t now);
  // Records keypool's suspension of a key (reason "" lifts it). Not an admin change:
  // updated_at is kept. NotFound for an unknown id.
  Result<void> set_key_suspension(int64_t id, const std::string& reason, int64_t at);
  Result<void> delete_key(int64_t id);
  // Whether the key's stored value is `value` (compared by keyed fingerprint).
  Result<bool> key_value_is(int64_t id, const Secret& value);

  // Team tokens. create: the tier must exist (NotFound); the hash must be new (Conflict).
  Result<TokenRow> create_token(const TokenRow& token, int64_t now);
  Result<std::vector<TokenRow>> list_tokens();  // revoked ones included
  Result<void> revoke_token(int64_t id, int64_t now);  // NotFound if absent or revoked
  Result<TokenRow> get_token(int64_t id);
  // update/rotate: NotFound if absent or revoked. rotate: the new hash must be new
  // (Conflict); prev_valid_until > 0 keeps the old hash valid until then, 0 drops it.
  Result<TokenRow> update_token(int64_t id, const TokenPatch& patch);
  Result<TokenRow> rotate_token(int64_t id, const std::string& new_hash_hex, const std::string& new_prefix,
                                int64_t prev_valid_until);

  // Services defined through the admin API, kept as JSON text by name.
  Result<void> upsert_service(const std::string& name, const std::string& json);
  Result<std::vector<std::pair<std::string, std::string>>> list_services();  // by name
  Result<void> delete_service(const std::string& name);

  // Audit log, append-only. query: newest first; limit <= 0 = no limit, action "" = any,
  // since 0 = any.
  Result<void> append_audit(const std::vector<AuditRow>& rows);
  Result<std::vector<AuditRow>> query_audit(int64_t limit, const std::string& action,
                                            int64_t since);
  // Adds hand-out counts to the (caller, key, minute) row, creating it if needed: one row
  // per minute however many flushes the minute spans.
  Result<void> add_handouts(const std::vector<HandoutCount>& counts);
  // Deletes up to max_rows of the oldest rows older than before_ms; returns how many.
  Result<int64_t> prune_audit(int64_t before_ms, int64_t max_rows);

  // Adds a batch of deltas (one transaction) to the per-key and per-token totals. Deltas
  // for keys or tokens deleted meanwhile are dropped.
  Result<void> add_usage(const std::vector<UsageDelta>& deltas);
  Result<std::map<int64_t, UsageTotals>> key_usage();
  Result<std::map<int64_t, UsageTotals>> token_usage();

  // Re-seals every key value from `from` to `to` (and recomputes the fingerprints) in one
  // transaction: a crash half-way leaves everything readable with `from`. On success the
  // store seals with `to` from then on. Returns the number of keys re-encrypted.
  Result<int64_t> reencrypt_all(const crypto::MasterKey& from, const crypto::MasterKey& to);

  // Runs fn inside one transaction: committed if it succeeds, rolled back whole if it fails
  // (the store's own writes nest in it as savepoints). For the bootstrap file.
  Result<void> transaction(const std::function<Result<void>()>& fn);

 private:
  Store(sqlite3* db, std::string path, crypto::MasterKey key);
  Error db_error(const char* what) const;
  Result<void> enable_wal();
  Result<bool> tier_exists(const std::string& name);
  Result<int64_t> count(const char* sql, const std::string& arg);
  Result<void> write_key_value(int64_t id, const Secret& value, const crypto::MasterKey& key,
                               int64_t now);
  Result<KeyRow> write_key_fields(const KeyRow& row);

  sqlite3* db_;  // owned; closed in ~Store
  std::string path_;
  crypto::MasterKey key_;  // a copy of the key the store seals and fingerprints with
};

}  // namespace keypool::store
