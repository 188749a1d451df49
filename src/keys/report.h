#pragma once
// Acting on what an upstream said about a key: cool it down, suspend it (within the
// blast-radius cap), lift a suspension. Each change goes to the pool at once (the next
// lease sees it), then to the store and the audit log through the store thread.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "keys/outcome.h"
#include "state/app.h"

namespace keypool::keys {

// The key an answer was about and the pool it belongs to.
struct KeyRef {
  int64_t key_id = 0;
  std::string_view service, tier;
  const std::string& scope;  // "<service>/<tier>": the storm and blast-radius scope
};

enum class Applied {
  Nothing,           // Serve, Refused, UpstreamFailed: the key stays as it is
  CooledDown,
  Suspended,
  AlreadySuspended,  // another request suspended it first
  Capped,            // the blast-radius cap refused the suspension: pass the answer on
};

// Applies the outcome of an answer with `status` to the key. wait_ms: how long the answer
// asked us to back off (its reset headers), for a cooldown; nullopt = the configured default.
Applied report(state::App& app, const KeyRef& key, const Outcome& outcome, int status,
               std::optional<int64_t> wait_ms);

// Suspends a key outside the proxy's path (a failed on-demand test does not; this is for
// reports). Exposed for report() and tests; returns Suspended, AlreadySuspended or Capped.
Applied suspend(state::App& app, const KeyRef& key, std::string_view reason, int status);

// Lifts a suspension (probe passed, or an admin re-enabled the key); `actor` and `why` go
// to the audit row. False when the key was not suspended.
bool lift_suspension(state::App& app, int64_t key_id, const std::string& actor, const std::string& why);

}  // namespace keypool::keys
