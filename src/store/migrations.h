#pragma once
// Numbered schema migrations, applied by Store::open. Internal to the store room.
#include <string>

#include "base/result.h"

struct sqlite3;

namespace keypool::store {

// The highest version this build knows.
int latest_schema_version();
// The version recorded in schema_version (0 for a new database), or -1 on a read error.
int current_schema_version(sqlite3* db);
// Applies each missing migration in its own transaction, in order. A database written by a
// newer keypool (a version above latest_schema_version()) is refused rather than guessed at.
Result<void> migrate(sqlite3* db, const std::string& path);

}  // namespace keypool::store
