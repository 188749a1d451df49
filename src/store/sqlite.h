#pragma once
// Thin RAII over the SQLite C API for the store room: a prepared statement and an
// IMMEDIATE transaction. Internal to src/store/; nothing else includes sqlite3.h.
#include <sqlite3.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace keypool::store {

// A prepared statement. A failed prepare is reported by the first step(), which returns
// the prepare error, so callers check one return code; binds on it are no-ops.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &s_, nullptr);
  }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  void bind_int(int i, int64_t v) {
    if (s_) sqlite3_bind_int64(s_, i, v);
  }
  void bind_double(int i, double v) {
    if (s_) sqlite3_bind_double(s_, i, v);
  }
  void bind_null(int i) {
    if (s_) sqlite3_bind_null(s_, i);
  }
  // SQLITE_TRANSIENT: SQLite copies, so the argument may die before step().
  void bind_text(int i, std::string_view v) {
    if (s_) sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }
  void bind_blob(int i, std::string_view v) {
    if (s_) sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }

  // SQLITE_ROW, SQLITE_DONE or an error code.
  int step() { return s_ ? sqlite3_step(s_) : (rc_ == SQLITE_OK ? SQLITE_MISUSE : rc_); }
  // Rewinds for another set of binds (batch inserts).
  void reset() {
    if (s_) {
      sqlite3_reset(s_);
      sqlite3_clear_bindings(s_);
    }
  }

  int64_t i64(int col) const { return sqlite3_column_int64(s_, col); }
  double dbl(int col) const { return sqlite3_column_double(s_, col); }
  bool is_null(int col) const { return sqlite3_column_type(s_, col) == SQLITE_NULL; }
  std::string text(int col) const {
    auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s_, col));
    return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(s_, col))) : std::string();
  }
  std::string blob(int col) const {
    auto* p = static_cast<const char*>(sqlite3_column_blob(s_, col));
    return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(s_, col))) : std::string();
  }

 private:
  sqlite3_stmt* s_ = nullptr;
  int rc_ = SQLITE_OK;
};

// BEGIN IMMEDIATE takes the write lock up front, so a transaction that reads then writes
// cannot fail half-way with SQLITE_BUSY. Rolls back unless commit() succeeded. Inside an
// open transaction (Store::transaction, which applies a whole bootstrap file at once) it
// becomes a savepoint, so the store's own multi-statement writes nest in the outer one.
class Tx {
 public:
  explicit Tx(sqlite3* db) : db_(db) {}
  ~Tx() {
    if (!open_) return;
    if (nested_) sqlite3_exec(db_, "ROLLBACK TO kp_tx; RELEASE kp_tx", nullptr, nullptr, nullptr);
    else sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  Tx(const Tx&) = delete;
  Tx& operator=(const Tx&) = delete;

  int begin() {
    nested_ = sqlite3_get_autocommit(db_) == 0;
    int rc = sqlite3_exec(db_, nested_ ? "SAVEPOINT kp_tx" : "BEGIN IMMEDIATE", nullptr, nullptr, nullptr);
    open_ = rc == SQLITE_OK;
    return rc;
  }
  int commit() {
    int rc = sqlite3_exec(db_, nested_ ? "RELEASE kp_tx" : "COMMIT", nullptr, nullptr, nullptr);
    if (rc == SQLITE_OK) open_ = false;
    return rc;
  }

 private:
  sqlite3* db_;
  bool open_ = false;
  bool nested_ = false;
};

}  // namespace keypool::store
