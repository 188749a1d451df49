#pragma once
// Loading the stored state (tiers, keys, tokens, admin-defined services) into memory at
// start-up. Runs on the store thread before any worker listens.
#include "base/result.h"
#include "state/app.h"
#include "store/store.h"

namespace keypool::state {

Result<void> load_state(App& app, store::Store& s);

}  // namespace keypool::state
