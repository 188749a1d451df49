#include "store/store.h"

#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "base/strings.h"
#include "store/migrations.h"
#include "store/sqlite.h"

namespace keypool::store {
namespace {

using nlohmann::json;

// Column lists shared by several queries; literals so they concatenate at compile time.
#define KP_KEY_COLS                                                                        \
  "id, name, tier, service, hint, enabled, disabled_reason, disabled_at, expires_at, "    \
  "max_concurrent, balance_total, balance_unit, created_at, updated_at, source, " \
  "suspended_reason, suspended_at"
#define KP_TOKEN_COLS                                                                     \
  "id, name, tier, services_json, expires_at, rpm, hash_hex, prefix, created_at, revoked_at, " \
  "allow_key_handout, prev_hash_hex, prev_valid_until, source"
#define KP_USAGE_COLS \
  "requests, errors, input_tokens, output_tokens, cost, last_used_at, last_error"

Error not_found(std::string what) { return make_error(ErrorCode::NotFound, what + " not found"); }

Error conflict(std::string msg) { return make_error(ErrorCode::Conflict, std::move(msg)); }

Error corrupt(std::string msg) { return make_error(ErrorCode::Corrupt, std::move(msg)); }

std::string tier_label(const std::string& name) { return "tier '" + name + "'"; }

std::string key_label(int64_t id) { return "key " + std::to_string(id); }

std::string plural(int64_t n, const char* noun) {
  return std::to_string(n) + " " + noun + (n == 1 ? "" : "s");
}

// Admin input may hold invalid UTF-8; replacing it beats an exception from dump().
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string features_json(const std::map<std::string, int64_t>& features) {
  json j = json::object();
  for (const auto& [feature, rpm] : features) j[feature] = rpm;
  return dump(j);
}

KeyRow read_key(const Stmt& st) {
  KeyRow k;
  k.id = st.i64(0);
  k.name = st.text(1);
  k.tier = st.text(2);
  k.service = st.text(3);
  k.hint = st.text(4);
  k.enabled = st.i64(5) != 0;
  k.disabled_reason = st.text(6);
  k.disabled_at = st.i64(7);
  k.expires_at = st.i64(8);
  k.max_concurrent = st.i64(9);
  if (!st.is_null(10)) k.balance_total = st.dbl(10);
  k.balance_unit = st.text(11);
  k.created_at = st.i64(12);
  k.updated_at = st.i64(13);
  k.source = st.text(14);
  k.suspended_reason = st.text(15);
  k.suspended_at = st.i64(16);
  return k;
}

Result<TierRow> read_tier(const Stmt& st) {
  TierRow t;
  t.name = st.text(0);
  json j = json::parse(st.text(1), nullptr, false);
  if (!j.is_object()) return corrupt(tier_label(t.name) + ": unreadable features");
  for (const auto& [feature, rpm] : j.items()) {
    if (!rpm.is_number_integer()) return corrupt(tier_label(t.name) + ": unreadable features");
    t.features[feature] = rpm.get<int64_t>();
  }
  t.max_wait_ms = st.i64(2);
  t.created_at = st.i64(3);
  t.source = st.text(4);
  return t;
}

Result<TokenRow> read_token(const Stmt& st) {
  TokenRow t;
  t.id = st.i64(0);
  t.name = st.text(1);
  t.tier = st.text(2);
  json j = json::parse(st.text(3), nullptr, false);
  if (!j.is_array()) return corrupt("token " + std::to_string(t.id) + ": unreadable services");
  for (const auto& s : j) {
    if (!s.is_string()) return corrupt("token " + std::to_string(t.id) + ": unreadable services");
    t.services.push_back(s.get<std::string>());
  }
  t.expires_at = st.i64(4);
  t.rpm = st.i64(5);
  t.hash_hex = st.text(6);
  t.prefix = st.text(7);
  t.created_at = st.i64(8);
  t.revoked_at = st.i64(9);
  t.allow_key_handout = st.i64(10) != 0;
  t.prev_hash_hex = st.text(11);
  t.prev_valid_until = st.i64(12);
  t.source = st.text(13);
  return t;
}

// Columns 1..7 in KP_USAGE_COLS order, after the id in column 0.
UsageTotals read_usage(const Stmt& st) {
  UsageTotals u;
  u.requests = st.i64(1);
  u.errors = st.i64(2);
  u.input_tokens = st.i64(3);
  u.output_tokens = st.i64(4);
  u.cost = st.dbl(5);
  u.last_used_at = st.i64(6);
  u.last_error = st.text(7);
  return u;
}

// Upsert-add for key_usage / token_usage. The EXISTS guard drops deltas for rows deleted
// after the request was counted, which the foreign key would otherwise turn into a failed
// batch. (The WHERE also keeps SQLite's parser from reading ON CONFLICT as a join.)
std::string usage_upsert_sql(const char* table, const char* id_col, const char* parent) {
  return std::string("INSERT INTO ") + table + "(" + id_col + ", " KP_USAGE_COLS ") " +
         "SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 WHERE EXISTS (SELECT 1 FROM " + parent +
         " WHERE id = ?1) ON CONFLICT(" + id_col + ") DO UPDATE SET "
         "requests = requests + excluded.requests, errors = errors + excluded.errors, "
         "input_tokens = input_tokens + excluded.input_tokens, "
         "output_tokens = output_tokens + excluded.output_tokens, "
         "cost = cost + excluded.cost, "
         "last_used_at = MAX(last_used_at, excluded.last_used_at), "
         "last_error = CASE WHEN excluded.last_error <> '' THEN excluded.last_error "
         "ELSE last_error END";
}

void bind_usage(Stmt& st, int64_t id, const UsageDelta& d) {
  st.bind_int(1, id);
  st.bind_int(2, d.requests);
  st.bind_int(3, d.errors);
  st.bind_int(4, d.input_tokens);
  st.bind_int(5, d.output_tokens);
  st.bind_double(6, d.cost);
  st.bind_int(7, d.last_used_at);
  st.bind_text(8, d.last_error);
}

// Applies a patch to a row in memory; the caller writes it back.
void apply_patch(KeyRow& row, const KeyPatch& p, int64_t now) {
  if (p.name) row.name = *p.name;
  if (p.tier) row.tier = *p.tier;
  if (p.expires_at) row.expires_at = *p.expires_at;
  if (p.max_concurrent) row.max_concurrent = *p.max_concurrent;
  if (p.enabled && *p.enabled != row.enabled) {
    row.enabled = *p.enabled;
    row.disabled_at = row.enabled ? 0 : now;
    row.disabled_reason.clear();
  }
  if (p.disabled_reason) row.disabled_reason = *p.disabled_reason;
  row.updated_at = now;
}

}  // namespace

// --- lifecycle ---

Store::Store(sqlite3* db, std::string path, crypto::MasterKey key)
    : db_(db), path_(std::move(path)), key_(std::move(key)) {}

Store::~Store() { sqlite3_close_v2(db_); }

Error Store::db_error(const char* what) const {
  // sqlite3_errmsg names the failing constraint or I/O error, never a bound value.
  return make_error(ErrorCode::Internal, path_ + ": " + what + ": " + sqlite3_errmsg(db_));
}

Result<std::unique_ptr<Store>> Store::open(const std::string& path,
                                           const crypto::MasterKey& key) {
  struct stat sb;
  bool existed = ::stat(path.c_str(), &sb) == 0;
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                           nullptr);
  // Adopted at once so every failure below closes the handle. The constructor is private.
  std::unique_ptr<Store> s(new Store(db, path, key.clone()));
  if (rc != SQLITE_OK) return s->db_error("cannot open database");
  // Ciphertexts and token hashes are not for other local users. SQLite gives the -wal and
  // -shm files the main file's mode, and they do not exist yet.
  if (!existed) ::chmod(path.c_str(), 0600);
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, 5000);

  if (auto w = s->enable_wal(); !w) return w.error();
  if (sqlite3_exec(db, "PRAGMA foreign_keys=ON; PRAGMA synchronous=FULL;", nullptr, nullptr,
                   nullptr) != SQLITE_OK)
    return s->db_error("cannot set pragmas");
  if (auto m = migrate(db, path); !m) return m.error();
  return s;
}

// A separate function so the PRAGMA's statement is finalized before the migrations run:
// an open statement would make their COMMIT fail.
Result<void> Store::enable_wal() {
  Stmt st(db_, "PRAGMA journal_mode=WAL");
  if (st.step() != SQLITE_ROW) return db_error("cannot enable WAL");
  std::string mode = st.text(0);
  if (mode != "wal")
    return make_error(ErrorCode::Internal,
                      path_ + ": cannot enable WAL (journal_mode is " + mode + ")");
  return Ok{};
}

int Store::schema_version() { return current_schema_version(db_); }

// --- helpers ---

Result<int64_t> Store::count(const char* sql, const std::string& arg) {
  Stmt st(db_, sql);
  st.bind_text(1, arg);
  if (st.step() != SQLITE_ROW) return db_error("count");
  return st.i64(0);
}

Result<bool> Store::tier_exists(const std::string& name) {
  auto n = count("SELECT COUNT(*) FROM tiers WHERE name = ?1", name);
  if (!n) return n.error();
  return *n > 0;
}

// Seals `value` for row `id` (the id is the AAD) and stores it with its fingerprint and
// hint. now == 0 keeps updated_at (re-encryption is not a change an admin made).
Result<void> Store::write_key_value(int64_t id, const Secret& value,
                                    const crypto::MasterKey& key, int64_t now) {
  Stmt st(db_,
          "UPDATE keys SET value_blob = ?2, fingerprint = ?3, hint = ?4, "
          "updated_at = CASE WHEN ?5 = 0 THEN updated_at ELSE ?5 END WHERE id = ?1");
  st.bind_int(1, id);
  st.bind_blob(2, crypto::seal(key, value.view(), std::to_string(id)));
  st.bind_text(3, crypto::fingerprint(key, value.view()));
  st.bind_text(4, key_hint(value.view()));
  st.bind_int(5, now);
  int rc = st.step();
  if (rc == SQLITE_CONSTRAINT_UNIQUE) return conflict("a key with this value already exists");
  if (rc != SQLITE_DONE) return db_error("cannot store key value");
  return Ok{};
}

Result<KeyRow> Store::write_key_fields(const KeyRow& row) {
  Stmt st(db_,
          "UPDATE keys SET name = ?2, tier = ?3, enabled = ?4, disabled_reason = ?5, "
          "disabled_at = ?6, expires_at = ?7, max_concurrent = ?8, updated_at = ?9 "
          "WHERE id = ?1");
  st.bind_int(1, row.id);
  st.bind_text(2, row.name);
  st.bind_text(3, row.tier);
  st.bind_int(4, row.enabled ? 1 : 0);
  st.bind_text(5, row.disabled_reason);
  st.bind_int(6, row.disabled_at);
  st.bind_int(7, row.expires_at);
  st.bind_int(8, row.max_concurrent);
  st.bind_int(9, row.updated_at);
  if (st.step() != SQLITE_DONE) return db_error("cannot update key");
  return row;
}

// --- tiers ---

Result<TierRow> Store::create_tier(const TierRow& tier, int64_t now) {
  Stmt st(db_,
          "INSERT INTO tiers(name, features_json, max_wait_ms, created_at, source) "
          "VALUES (?1, ?2, ?3, ?4, ?5)");
  st.bind_text(1, tier.name);
  st.bind_text(2, features_json(tier.features));
  st.bind_int(3, tier.max_wait_ms);
  st.bind_int(4, now);
  st.bind_text(5, tier.source);
  int rc = st.step();
  if (rc == SQLITE_CONSTRAINT_PRIMARYKEY) return conflict(tier_label(tier.name) + " already exists");
  if (rc != SQLITE_DONE) return db_error("cannot create tier");
  TierRow out = tier;
  out.created_at = now;
  return out;
}

Result<std::vector<TierRow>> Store::list_tiers() {
  Stmt st(db_, "SELECT name, features_json, max_wait_ms, created_at, source FROM tiers ORDER BY name");
  std::vector<TierRow> out;
  int rc;
  while ((rc = st.step()) == SQLITE_ROW) {
    auto t = read_tier(st);
    if (!t) return t.error();
    out.push_back(std::move(*t));
  }
  if (rc != SQLITE_DONE) return db_error("cannot list tiers");
  return out;
}

Result<void> Store::delete_tier(const std::string& name) {
  auto keys = count("SELECT COUNT(*) FROM keys WHERE tier = ?1", name);
  if (!keys) return keys.error();
  auto tokens = count("SELECT COUNT(*) FROM tokens WHERE tier = ?1 AND revoked_at = 0", name);
  if (!tokens) return tokens.error();
  if (*keys || *tokens) {
    std::string users = *keys ? plural(*keys, "key") : "";
    if (*tokens) users += (*keys ? " and " : "") + plural(*tokens, "token");
    return conflict(tier_label(name) + " is used by " + users);
  }
  Stmt st(db_, "DELETE FROM tiers WHERE name = ?1");
  st.bind_text(1, name);
  if (st.step() != SQLITE_DONE) return db_error("cannot delete tier");
  if (sqlite3_changes(db_) == 0) return not_found(tier_label(name));
  return Ok{};
}

Result<TierRow> Store::update_tier(const std::string& name, const TierPatch& patch) {
  Tx tx(db_);
  if (tx.begin() != SQLITE_OK) return db_error("cannot update tier");
  std::optional<TierRow> row;
  {
    Stmt st(db_, "SELECT name, features_json, max_wait_ms, created_at, source FROM tiers WHERE name = ?1");
    st.bind_text(1, name);
    int rc = st.step();
    if (rc == SQLITE_DONE) return not_found(tier_label(name));
    if (rc != SQLITE_ROW) return db_error("cannot read tier");
    auto t = read_tier(st);
    if (!t) return t.error();
    row = std::move(*t);
  }
  if (patch.features) row->features = *patch.features;
  if (patch.max_wait_ms) row->max_wait_ms = *patch.max_wait_ms;
  Stmt up(db_, "UPDATE tiers SET features_json = ?2, max_wait_ms = ?3 WHERE name = ?1");
  up.bind_text(1, name);
  up.bind_text(2, features_json(row->features));
  up.bind_int(3, row->max_wait_ms);
  if (up.step() != SQLITE_DONE || tx.commit() != SQLITE_OK) return db_error("cannot update tier");
  return std::move(*row);
}

// --- keys ---

Result<KeyRow> Store::create_key(const NewKey& k, int64_t now) {
  auto exists = tier_exists(k.tier);
  if (!exists) return exists.error();
  if (!*exists) return not_found(tier_label(k.tier));

  // The id is the AAD, and SQLite only hands it out on insert: insert with an empty blob,
  // then seal and update, inside one transaction so no row is ever left without a value.
  Tx tx(db_);
  if (tx.begin() != SQLITE_OK) return db_error("cannot create key");
  Stmt ins(db_,
           "INSERT INTO keys(name, tier, service, hint, value_blob, fingerprint, expires_at, "
           "max_concurrent, balance_total, balance_unit, created_at, updated_at, source) "
           "VALUES (?1, ?2, ?3, '', X'', ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10)");
  ins.bind_text(1, k.name);
  ins.bind_text(2, k.tier);
  ins.bind_text(3, k.service);
  ins.bind_text(4, crypto::fingerprint(key_, k.value.view()));
  ins.bind_int(5, k.expires_at);
  ins.bind_int(6, k.max_concurrent);
  if (k.balance_total) ins.bind_double(7, *k.balance_total);
  else ins.bind_null(7);
  ins.bind_text(8, k.balance_unit);
  ins.bind_int(9, now);
  ins.bind_text(10, k.source);
  int rc = ins.step();
  if (rc == SQLITE_CONSTRAINT_UNIQUE) return conflict("a key with this value already exists");
  if (rc != SQLITE_DONE) return db_error("cannot create key");

  int64_t id = sqlite3_last_insert_rowid(db_);
  if (auto w = write_key_value(id, k.value, key_, now); !w) return w.error();
  if (tx.commit() != SQLITE_OK) return db_error("cannot create key");
  return get_key(id);
}

Result<std::vector<KeyRow>> Store::list_keys() {
  Stmt st(db_, "SELECT " KP_KEY_COLS " FROM keys ORDER BY id");
  std::vector<KeyRow> out;
  int rc;
  while ((rc = st.step()) == SQLITE_ROW) out.push_back(read_key(st));
  if (rc != SQLITE_DONE) return db_error("cannot list keys");
  return out;
}

Result<KeyRow> Store::get_key(int64_t id) {
  Stmt st(db_, "SELECT " KP_KEY_COLS " FROM keys WHERE id = ?1");
  st.bind_int(1, id);
  int rc = st.step();
  if (rc == SQLITE_DONE) return not_found(key_label(id));
  if (rc != SQLITE_ROW) return db_error("cannot read key");
  return read_key(st);
}

Result<std::vector<KeyWithValue>> Store::load_keys() {
  Stmt st(db_, "SELECT " KP_KEY_COLS ", value_blob FROM keys ORDER BY id");
  std::vector<KeyWithValue> out;
  int rc;
  while ((rc = st.step()) == SQLITE_ROW) {
    KeyRow row = read_key(st);
    auto value = crypto::open(key_, st.blob(17), std::to_string(row.id));
    if (!value)
      return corrupt(key_label(row.id) +
                     ": cannot decrypt: wrong ENCRYPTION_KEY or tampered row");
    out.push_back(KeyWithValue{std::move(row), std::move(*value)});
  }
  if (rc != SQLITE_DONE) return db_error("cannot load keys");
  return out;
}

Result<KeyRow> Store::update_key(int64_t id, const KeyPatch& patch, int64_t now) {
  Tx tx(db_);
  if (tx.begin() != SQLITE_OK) return db_error("cannot update key");
  auto row = get_key(id);
  if (!row) return row.error();
  if (patch.tier && *patch.tier != row->tier) {
    auto exists = tier_exists(*patch.tier);
    if (!exists) return exists.error();
    if (!*exists) return not_found(tier_label(*patch.tier));
  }
  apply_patch(*row, patch, now);
  auto written = write_key_fields(*row);
  if (!written) return written;
  if (tx.commit() != SQLITE_OK) return db_error("cannot update key");
  return written;
}

Result<KeyRow> Store::rotate_key(int64_t id, const Secret& new_value, int64_t now) {
  Tx tx(db_);
  if (tx.begin() != SQLITE_OK) return db_error("cannot rotate key");
  if (auto row = get_key(id); !row) return row.error();
  if (auto w = write_key_value(id, new_value, key_, now); !w) return w.error();
  if (tx.commit() != SQLITE_OK) return db_error("cannot rotate key");
  return get_key(id);
}

Result<void> Store::set_key_suspension(int64_t id, const std::string& reason, int64_t at) {
  Stmt st(db_, "UPDATE keys SET suspended_reason = ?2, suspended_at = ?3 WHERE id = ?1");
  st.bind_int(1, id);
  st.bind_text(2, reason);
  st.bind_int(3, reason.empty() ? 0 : at);
  if (st.step() != SQLITE_DONE) return db_error("cannot record key suspension");
  if (sqlite3_changes(db_) == 0) return not_found(key_label(id));
  return Ok{};
}

Result<void> Store::delete_key(int64_t id) {
  Stmt st(db_, "DELETE FROM keys WHERE id = ?1");
  st.bind_int(1, id);
  if (st.step() != SQLITE_DONE) return db_error("cannot delete key");
  if (sqlite3_changes(db_) == 0) return not_found(key_label(id));
  return Ok{};
}

Result<bool> Store::key_value_is(int64_t id, const Secret& value) {
  Stmt st(db_, "SELECT fingerprint FROM keys WHERE id = ?1");
  st.bind_int(1, id);
  int rc = st.step();
  if (rc == SQLITE_DONE) return not_found(key_label(id));
  if (rc != SQLITE_ROW) return db_error("cannot read key");
  std::string want = crypto::fingerprint(key_, value.view());
  std::string have = st.text(0);
  return have.size() == want.size() && equal_bytes(have.data(), want.data(), want.size());
}

// --- tokens ---

Result<TokenRow> Store::create_token(const TokenRow& t, int64_t now) {
  auto exists = tier_exists(t.tier);
  if (!exists) return exists.error();
  if (!*exists) return not_found(tier_label(t.tier));
  Stmt st(db_,
          "INSERT INTO tokens(name, tier, services_json, expires_at, rpm, hash_hex, prefix, "
          "created_at, allow_key_handout, source) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)");
  st.bind_text(1, t.name);
  st.bind_text(2, t.tier);
  st.bind_text(3, dump(json(t.services)));
  st.bind_int(4, t.expires_at);
  st.bind_int(5, t.rpm);
  st.bind_text(6, t.hash_hex);
  st.bind_text(7, t.prefix);
  st.bind_int(8, now);
  st.bind_int(9, t.allow_key_handout ? 1 : 0);
  st.bind_text(10, t.source);
  int rc = st.step();
  if (rc == SQLITE_CONSTRAINT_UNIQUE) return conflict("a token with this hash already exists");
  if (rc != SQLITE_DONE) return db_error("cannot create token");
  TokenRow out = t;
  out.id = sqlite3_last_insert_rowid(db_);
  out.created_at = now;
  out.revoked_at = 0;
  return out;
}

Result<std::vector<TokenRow>> Store::list_tokens() {
  Stmt st(db_, "SELECT " KP_TOKEN_COLS " FROM tokens ORDER BY id");
  std::vector<TokenRow> out;
  int rc;
  while ((rc = st.step()) == SQLITE_ROW) {
    auto t = read_token(st);
    if (!t) return t.error();
    out.push_back(std::move(*t));
  }
  if (rc != SQLITE_DONE) return db_error("cannot list tokens");
  return out;
}

Result<void> Store::revoke_token(int64_t id, int64_t now) {
  Stmt st(db_, "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at = 0");
  st.bind_int(1, id);
  st.bind_int(2, now);
  if (st.step() != SQLITE_DONE) return db_error("cannot revoke token");
  if (sqlite3_changes(db_) == 0) return not_found("active token " + std::to_string(id));
  return Ok{};
}

Result<TokenRow> Store::get_token(int64_t id) {
  Stmt st(db_, "SELECT " KP_TOKEN_COLS " FROM tokens WHERE id = ?1");
  st.bind_int(1, id);
  int rc = st.step();
  if (rc == SQLITE_DONE) return not_found("token " + std::to_string(id));
  if (rc != SQLITE_ROW) return db_error("cannot read token");
  return read_token(st);
}

Result<TokenRow> Store::update_token(int64_t id, const TokenPatch& p) {
  Tx tx(db_);
  if (tx.begin() != SQLITE_OK) return db_error("cannot update token");
  auto row = get_token(id);
  if (!row) return row.error();
  if (row->revoked_at) return not_found("active token " + std::to_string(id));
  if (p.tier && *p.tier != row->tier) {
    auto exists = tier_exists(*p.tier);
    if (!exists) return exists.error();
    if (!*exists) return not_found(tier_label(*p.tier));
    row->tier = *p.tier;
  }
  if (p.name) row->name = *p.name;
  if (p.services) row->services = *p.services;
  if (p.rpm) row->rpm = *p.rpm;
  if (p.expires_at) row->expires_at = *p.expires_at;
  if (p.allow_key_handout) row->allow_key_handout = *p.allow_key_handout;
  Stmt st(db_,
          "UPDATE tokens SET name = ?2, services_json = ?3, rpm = ?4, expires_at = ?5, "
          "allow_key_handout = ?6, tier = ?7 WHERE id = ?1");
  st.bind_int(1, id);
  st.bind_text(2, row->name);
  st.bind_text(3, dump(json(row->services)));
  st.bind_int(4, row->rpm);
  st.bind_int(5, row->expires_at);
  st.bind_int(6, row->allow_key_handout ? 1 : 0);
  st.bind_text(7, row->tier);
  if (st.step() != SQLITE_DONE || tx.commit() != SQLITE_OK) return db_error("cannot update token");
  return row;
}

Result<TokenRow> Store::rotate_token(int64_t id, const std::string& new_hash_hex, const std::string& new_prefix,
                                     int64_t prev_valid_until) {
  Tx tx(db_);
  if (tx.begin() != SQLITE_OK) return db_error("cannot rotate token");
  auto row = get_token(id);
  if (!row) return row.error();
  if (row->revoked_at) return not_found("active token " + std::to_string(id));
  row->prev_hash_hex = prev_valid_until > 0 ? row->hash_hex : "";
  row->prev_valid_until = prev_valid_until > 0 ? prev_valid_until : 0;
  row->hash_hex = new_hash_hex;
  row->prefix = new_prefix;
  Stmt st(db_,
          "UPDATE tokens SET hash_hex = ?2, prefix = ?3, prev_hash_hex = ?4, prev_valid_until = ?5 "
          "WHERE id = ?1");
  st.bind_int(1, id);
  st.bind_text(2, row->hash_hex);
  st.bind_text(3, row->prefix);
  st.bind_text(4, row->prev_hash_hex);
  st.bind_int(5, row->prev_valid_until);
  int rc = st.step();
  if (rc == SQLITE_CONSTRAINT_UNIQUE) return conflict("a token with this hash already exists");
  if (rc != SQLITE_DONE || tx.commit() != SQLITE_OK) return db_error("cannot rotate token");
  return row;
}

// --- services ---

Result<void> Store::upsert_service(const std::string& name, const std::string& json_text) {
  Stmt st(db_,
          "INSERT INTO services(name, json) VALUES (?1, ?2) "
          "ON CONFLICT(name) DO UPDATE SET json = excluded.json");
  st.bind_text(1, name);
  st.bind_text(2, json_text);
  if (st.step() != SQLITE_DONE) return db_error("cannot store service");
  return Ok{};
}

Result<std::vector<std::pair<std::string, std::string>>> Store::list_services() {
  Stmt st(db_, "SELECT name, json FROM services ORDER BY name");
  std::vector<std::pair<std::string, std::string>> out;
  int rc;
  while ((rc = st.step()) == SQLITE_ROW) out.emplace_back(st.text(0), st.text(1));
  if (rc != SQLITE_DONE) return db_error("cannot list services");
  return out;
}

Result<void> Store::delete_service(const std::string& name) {
  Stmt st(db_, "DELETE FROM services WHERE name = ?1");
  st.bind_text(1, name);
  if (st.step() != SQLITE_DONE) return db_error("cannot delete service");
  if (sqlite3_changes(db_) == 0) return not_found("service '" + name + "'");
  return Ok{};
}

// --- audit ---

Result<void> Store::append_audit(const std::vector<AuditRow>& rows) {
  Tx tx(db_);
  if (tx.begin() != SQLITE_OK) return db_error("cannot append audit");
  Stmt st(db_,
          "INSERT INTO audit(at, actor, action, target, details_json) "
          "VALUES (?1, ?2, ?3, ?4, ?5)");
  for (const AuditRow& r : rows) {
    st.reset();
    st.bind_int(1, r.at);
    st.bind_text(2, r.actor);
    st.bind_text(3, r.action);
    st.bind_text(4, r.target);
    st.bind_text(5, r.details_json.empty() ? "{}" : r.details_json);
    if (st.step() != SQLITE_DONE) return db_error("cannot append audit");
  }
  if (tx.commit() != SQLITE_OK) return db_error("cannot append audit");
  return Ok{};
}

Result<std::vector<AuditRow>> Store::query_audit(int64_t limit, const std::string& action,
                                                 int64_t since) {
  // A negative LIMIT means none in SQLite.
  Stmt st(db_,
          "SELECT id, at, actor, action, target, details_json FROM audit "
          "WHERE (?1 = '' OR action = ?1) AND at >= ?2 ORDER BY at DESC, id DESC LIMIT ?3");
  st.bind_text(1, action);
  st.bind_int(2, since);
  st.bind_int(3, limit > 0 ? limit : -1);
  std::vector<AuditRow> out;
  int rc;
  while ((rc = st.step()) == SQLITE_ROW)
    out.push_back(AuditRow{st.i64(0), st.i64(1), st.text(2), st.text(3), st.text(4), st.text(5)});
  if (rc != SQLITE_DONE) return db_error("cannot query audit");
  return out;
}

Result<void> Store::add_handouts(const std::vector<HandoutCount>& counts) {
  Tx tx(db_);
  if (tx.begin() != SQLITE_OK) return db_error("cannot count hand-outs");
  Stmt find(db_,
            "SELECT id, details_json FROM audit WHERE action = 'key.handout' AND actor = ?1 "
            "AND target = ?2 AND at = ?3 LIMIT 1");
  Stmt update(db_, "UPDATE audit SET details_json = ?2 WHERE id = ?1");
  Stmt insert(db_,
              "INSERT INTO audit(at, actor, action, target, details_json) "
              "VALUES (?1, ?2, 'key.handout', ?3, ?4)");
  for (const HandoutCount& h : counts) {
    find.reset();
    find.bind_text(1, h.actor);
    find.bind_text(2, std::to_string(h.key_id));
    find.bind_int(3, h.minute_at);
    int rc = find.step();
    json d = json::object();
    int64_t row_id = 0;
    if (rc == SQLITE_ROW) {
      row_id = find.i64(0);
      d = json::parse(find.text(1), nullptr, false);
      if (!d.is_object()) d = json::object();
    } else if (rc != SQLITE_DONE) {
      return db_error("cannot count hand-outs");
    }
    d["tier"] = h.tier;
    d["count"] = d.value("count", int64_t{0}) + h.count;
    d["last_at"] = std::max(d.value("last_at", int64_t{0}), h.last_at);
    if (!d["features"].is_object()) d["features"] = json::object();
    for (const auto& [feature, n] : h.features) d["features"][feature] = d["features"].value(feature, int64_t{0}) + n;
    Stmt& st = row_id ? update : insert;
    st.reset();
    if (row_id) {
      st.bind_int(1, row_id);
      st.bind_text(2, dump(d));
    } else {
      st.bind_int(1, h.minute_at);
      st.bind_text(2, h.actor);
      st.bind_text(3, std::to_string(h.key_id));
      st.bind_text(4, dump(d));
    }
    if (st.step() != SQLITE_DONE) return db_error("cannot count hand-outs");
  }
  if (tx.commit() != SQLITE_OK) return db_error("cannot count hand-outs");
  return Ok{};
}

Result<int64_t> Store::prune_audit(int64_t before_ms, int64_t max_rows) {
  // Oldest first, a bounded batch per call: one long delete would hold the write lock.
  Stmt st(db_,
          "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < ?1 ORDER BY at LIMIT ?2)");
  st.bind_int(1, before_ms);
  st.bind_int(2, max_rows);
  if (st.step() != SQLITE_DONE) return db_error("cannot prune audit");
  return static_cast<int64_t>(sqlite3_changes(db_));
}

// --- usage ---

Result<void> Store::add_usage(const std::vector<UsageDelta>& deltas) {
  Tx tx(db_);
  if (tx.begin() != SQLITE_OK) return db_error("cannot add usage");
  std::string key_sql = usage_upsert_sql("key_usage", "key_id", "keys");
  std::string token_sql = usage_upsert_sql("token_usage", "token_id", "tokens");
  Stmt by_key(db_, key_sql.c_str());
  Stmt by_token(db_, token_sql.c_str());
  for (const UsageDelta& d : deltas) {
    for (auto [st, id] : {std::pair{&by_key, d.key_id}, std::pair{&by_token, d.token_id}}) {
      if (id == 0) continue;
      st->reset();
      bind_usage(*st, id, d);
      if (st->step() != SQLITE_DONE) return db_error("cannot add usage");
    }
  }
  if (tx.commit() != SQLITE_OK) return db_error("cannot add usage");
  return Ok{};
}

Result<std::map<int64_t, UsageTotals>> Store::key_usage() {
  Stmt st(db_, "SELECT key_id, " KP_USAGE_COLS " FROM key_usage");
  std::map<int64_t, UsageTotals> out;
  int rc;
  while ((rc = st.step()) == SQLITE_ROW) out[st.i64(0)] = read_usage(st);
  if (rc != SQLITE_DONE) return db_error("cannot read key usage");
  return out;
}

Result<std::map<int64_t, UsageTotals>> Store::token_usage() {
  Stmt st(db_, "SELECT token_id, " KP_USAGE_COLS " FROM token_usage");
  std::map<int64_t, UsageTotals> out;
  int rc;
  while ((rc = st.step()) == SQLITE_ROW) out[st.i64(0)] = read_usage(st);
  if (rc != SQLITE_DONE) return db_error("cannot read token usage");
  return out;
}

// --- key rotation of the master key ---

Result<int64_t> Store::reencrypt_all(const crypto::MasterKey& from, const crypto::MasterKey& to) {
  Tx tx(db_);
  if (tx.begin() != SQLITE_OK) return db_error("cannot re-encrypt");
  // Read everything first: updating rows under a live SELECT on the same table is legal
  // in SQLite but makes the visit order hard to reason about.
  std::vector<std::pair<int64_t, std::string>> blobs;
  {
    Stmt st(db_, "SELECT id, value_blob FROM keys ORDER BY id");
    int rc;
    while ((rc = st.step()) == SQLITE_ROW) blobs.emplace_back(st.i64(0), st.blob(1));
    if (rc != SQLITE_DONE) return db_error("cannot re-encrypt");
  }
  for (const auto& [id, blob] : blobs) {
    auto value = crypto::open(from, blob, std::to_string(id));
    if (!value)
      return corrupt(key_label(id) + ": cannot decrypt: wrong ENCRYPTION_KEY or tampered row");
    if (auto w = write_key_value(id, *value, to, 0); !w) return w.error();
  }
  if (tx.commit() != SQLITE_OK) return db_error("cannot re-encrypt");
  key_ = to.clone();
  return static_cast<int64_t>(blobs.size());
}

Result<void> Store::transaction(const std::function<Result<void>()>& fn) {
  Tx tx(db_);
  if (tx.begin() != SQLITE_OK) return db_error("cannot begin transaction");
  if (auto r = fn(); !r) return r;  // Tx rolls back
  if (tx.commit() != SQLITE_OK) return db_error("cannot commit");
  return Ok{};
}

#undef KP_KEY_COLS
#undef KP_TOKEN_COLS
#undef KP_USAGE_COLS

}  // namespace keypool::store
