#include "store/migrations.h"

#include <sqlite3.h>

#include <span>

#include "store/sqlite.h"
#include "telemetry/log.h"

namespace keypool::store {
namespace {

struct Migration {
  int version;
  const char* what;
  const char* sql;
};

// Append only: a released migration is never edited, since databases in the field have
// already run it. Fix mistakes with a new migration.
constexpr Migration kMigrations[] = {
    {1, "tiers, keys, tokens, services", R"sql(
CREATE TABLE tiers (
  name          TEXT PRIMARY KEY,
  features_json TEXT NOT NULL DEFAULT '{}',
  max_wait_ms   INTEGER NOT NULL DEFAULT 0,
  created_at    INTEGER NOT NULL
);
-- AUTOINCREMENT: ids are never reused, so a stale ciphertext (sealed with its id as AAD)
-- can never open on a later row.
CREATE TABLE keys (
  id              INTEGER PRIMARY KEY AUTOINCREMENT,
  name            TEXT NOT NULL,
  tier            TEXT NOT NULL REFERENCES tiers(name),
  service         TEXT NOT NULL DEFAULT '',
  hint            TEXT NOT NULL DEFAULT '',
  value_blob      BLOB NOT NULL,
  fingerprint     TEXT NOT NULL UNIQUE,
  enabled         INTEGER NOT NULL DEFAULT 1,
  disabled_reason TEXT NOT NULL DEFAULT '',
  disabled_at     INTEGER NOT NULL DEFAULT 0,
  expires_at      INTEGER NOT NULL DEFAULT 0,
  max_concurrent  INTEGER NOT NULL DEFAULT 0,
  balance_total   REAL,
  balance_unit    TEXT NOT NULL DEFAULT '',
  created_at      INTEGER NOT NULL,
  updated_at      INTEGER NOT NULL
);
CREATE INDEX keys_tier ON keys(tier);
-- No foreign key on tier: revoked tokens stay listed after their tier is deleted.
CREATE TABLE tokens (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  name          TEXT NOT NULL,
  tier          TEXT NOT NULL,
  services_json TEXT NOT NULL DEFAULT '[]',
  expires_at    INTEGER NOT NULL DEFAULT 0,
  rpm           INTEGER NOT NULL DEFAULT 0,
  hash_hex      TEXT NOT NULL UNIQUE,
  prefix        TEXT NOT NULL DEFAULT '',
  created_at    INTEGER NOT NULL,
  revoked_at    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tokens_tier ON tokens(tier);
CREATE TABLE services (
  name TEXT PRIMARY KEY,
  json TEXT NOT NULL
);
)sql"},
    {2, "audit log and usage totals", R"sql(
CREATE TABLE audit (
  id           INTEGER PRIMARY KEY AUTOINCREMENT,
  at           INTEGER NOT NULL,
  actor        TEXT NOT NULL,
  action       TEXT NOT NULL,
  target       TEXT NOT NULL DEFAULT '',
  details_json TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_at ON audit(at);
CREATE INDEX audit_action_at ON audit(action, at);
CREATE TABLE key_usage (
  key_id        INTEGER PRIMARY KEY REFERENCES keys(id) ON DELETE CASCADE,
  requests      INTEGER NOT NULL DEFAULT 0,
  errors        INTEGER NOT NULL DEFAULT 0,
  input_tokens  INTEGER NOT NULL DEFAULT 0,
  output_tokens INTEGER NOT NULL DEFAULT 0,
  cost          REAL NOT NULL DEFAULT 0,
  last_used_at  INTEGER NOT NULL DEFAULT 0,
  last_error    TEXT NOT NULL DEFAULT ''
);
CREATE TABLE token_usage (
  token_id      INTEGER PRIMARY KEY REFERENCES tokens(id) ON DELETE CASCADE,
  requests      INTEGER NOT NULL DEFAULT 0,
  errors        INTEGER NOT NULL DEFAULT 0,
  input_tokens  INTEGER NOT NULL DEFAULT 0,
  output_tokens INTEGER NOT NULL DEFAULT 0,
  cost          REAL NOT NULL DEFAULT 0,
  last_used_at  INTEGER NOT NULL DEFAULT 0,
  last_error    TEXT NOT NULL DEFAULT ''
);
)sql"},
    // Suspension is keypool's own decision (the upstream said the key is invalid or out of
    // quota), kept apart from `enabled`, which is an admin's. A restart keeps it.
    {3, "key suspension", R"sql(
ALTER TABLE keys ADD COLUMN suspended_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE keys ADD COLUMN suspended_at INTEGER NOT NULL DEFAULT 0;
)sql"},
    // 3 is key suspension (another change); this one does not depend on it.
    {4, "scoped tokens, token rotation, bootstrap-managed objects", R"sql(
-- Tokens created before this version could take keys out through GET /key: they keep
-- that. New tokens are proxy-only unless created with allow_key_handout (the admin API
-- writes the column explicitly).
ALTER TABLE tokens ADD COLUMN allow_key_handout INTEGER NOT NULL DEFAULT 1;
-- A rotated token's previous hash stays valid until prev_valid_until (the grace period).
ALTER TABLE tokens ADD COLUMN prev_hash_hex TEXT NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN prev_valid_until INTEGER NOT NULL DEFAULT 0;
-- Who manages the row: 'admin' (the admin API) or 'bootstrap' (the bootstrap file). Only
-- bootstrap rows are ever pruned.
ALTER TABLE tokens ADD COLUMN source TEXT NOT NULL DEFAULT 'admin';
ALTER TABLE keys ADD COLUMN source TEXT NOT NULL DEFAULT 'admin';
ALTER TABLE tiers ADD COLUMN source TEXT NOT NULL DEFAULT 'admin';
-- GET /key hand-outs are counted in one row per (caller, key, minute), found again here.
CREATE INDEX audit_handout ON audit(action, actor, target, at);
)sql"},
};

Error fail(sqlite3* db, const std::string& path, int version) {
  return make_error(ErrorCode::Internal, path + ": migration " + std::to_string(version) +
                                             " failed: " + sqlite3_errmsg(db));
}

// One migration in its own transaction. The version is re-read inside it, so two processes
// opening the same new file cannot both apply it.
Result<void> apply(sqlite3* db, const std::string& path, const Migration& m) {
  Tx tx(db);
  if (tx.begin() != SQLITE_OK) return fail(db, path, m.version);
  int current = current_schema_version(db);
  if (current < 0) return fail(db, path, m.version);
  if (current >= m.version) return Ok{};
  if (sqlite3_exec(db, m.sql, nullptr, nullptr, nullptr) != SQLITE_OK)
    return fail(db, path, m.version);
  Stmt st(db,
          "INSERT INTO schema_version(version, applied_at) "
          "VALUES (?1, CAST(strftime('%s','now') AS INTEGER) * 1000)");
  st.bind_int(1, m.version);
  if (st.step() != SQLITE_DONE || tx.commit() != SQLITE_OK) return fail(db, path, m.version);
  log::info("store migrated", {{"path", path}, {"version", m.version}, {"what", m.what}});
  return Ok{};
}

}  // namespace

int latest_schema_version() { return std::span(kMigrations).back().version; }

int current_schema_version(sqlite3* db) {
  Stmt st(db, "SELECT COALESCE(MAX(version), 0) FROM schema_version");
  return st.step() == SQLITE_ROW ? static_cast<int>(st.i64(0)) : -1;
}

Result<void> migrate(sqlite3* db, const std::string& path) {
  if (sqlite3_exec(db,
                   "CREATE TABLE IF NOT EXISTS schema_version ("
                   "version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
                   nullptr, nullptr, nullptr) != SQLITE_OK)
    return fail(db, path, 0);
  int current = current_schema_version(db);
  if (current < 0) return fail(db, path, 0);
  if (current > latest_schema_version())
    return make_error(ErrorCode::Invalid,
                      path + ": schema version " + std::to_string(current) +
                          " is newer than this keypool understands (" +
                          std::to_string(latest_schema_version()) + ")");
  for (const Migration& m : kMigrations) {
    if (m.version <= current) continue;
    if (auto r = apply(db, path, m); !r) return r;
  }
  return Ok{};
}

}  // namespace keypool::store
