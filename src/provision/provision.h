#pragma once
// provision: applies the bootstrap file (config/bootstrap_file.h) to the store and to the
// in-memory state, at start and on SIGHUP. It makes the store hold what the file lists:
// tiers, keys and tokens it does not have are created, changed ones updated, a key whose
// value changed is rotated, a token whose secret changed is re-issued. Applying the same
// file twice changes nothing and writes no audit row. With `prune: true`, what the file
// created earlier and no longer lists is removed; objects created through the admin API
// are never removed (the store marks each row's source).
//
// Everything runs on the store thread, in one transaction: a file that fails half-way
// leaves the store and the memory as they were.
#include <cstdint>
#include <string>

#include "base/result.h"
#include "config/bootstrap_file.h"
#include "state/app.h"
#include "store/store.h"

namespace keypool::provision {

struct Outcome {
  int64_t created = 0, updated = 0, rotated = 0, removed = 0;
  bool changed() const { return created || updated || rotated || removed; }
};

// On the store thread. Errors (ErrorCode::Invalid) name the file and the object.
Result<Outcome> apply(const config::Bootstrap& file, store::Store& s, state::App& app);

// SIGHUP: reads the file again and applies it, all on the store thread (the caller's loop
// never waits). A bad file is refused whole and logged; the running state is kept.
void reload(state::App& app, const std::string& path);

}  // namespace keypool::provision
