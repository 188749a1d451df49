#pragma once
// What an upstream answer says about the key that made the request. Pure: a status, the
// first bytes of the body and the service's key_errors rules in, a verdict out.
//
//   invalid         401 (and whatever a rule says): suspend the key, fail over
//   out of quota    402, 429 whose body says insufficient_quota: suspend ("quota"), fail over
//   rate limited    any other 429: cool the key down, fail over
//   request refused 400, 403, 404, 409, 413, 422 and every other 4xx: the answer goes to the
//                   client unchanged; no failover, the key is untouched
//   upstream failed 5xx (and transport errors, which never reach here): fail over, counted,
//                   the key is untouched
//
// A 403 says the request may not do something, not that the key is bad: treating it as the
// key's fault let one client's mistake suspend every key of a pool. Services whose provider
// does say "this key is bad" with a 403 (or a 400) list that body in key_errors.
//
// The body is only read when a rule for the status needs it (needs_body); the caller holds
// at most kMaxInspectedBody bytes of it. Bodies arrive here decoded: this is the one place
// an error body is judged, so a decoder goes in front of it, never inside.
#include <cstddef>
#include <string_view>

#include "config/service.h"

namespace keypool::keys {

// How much of an error body is held before the decision; markers sit near the start of
// every provider's error object.
constexpr size_t kMaxInspectedBody = 16 * 1024;

enum class Verdict {
  Serve,           // 1xx-3xx: the answer is what the client asked for
  Refused,         // pass to the client; the key is fine
  RateLimited,     // cool the key down, fail over
  Suspend,         // take the key out (reason), fail over
  UpstreamFailed,  // fail over; the key is fine
};

struct Outcome {
  Verdict verdict = Verdict::Serve;
  // Verdict::Suspend: "invalid", "quota" or a rule's reason. Points at static or rule storage.
  std::string_view reason;
  // Whether a key_errors rule decided (for logs).
  bool by_rule = false;
};

// The label metrics and logs use: "ok", "refused", "rate_limited", "invalid", "quota"
// (or the rule's reason), "upstream_failed".
std::string_view outcome_name(const Outcome& o);

// Whether classify() would look at the body of an answer with this status: some rule for it
// has body_contains (the service's, or the 429 insufficient_quota default).
bool needs_body(const config::ServiceDef& svc, int status);

// body: up to kMaxInspectedBody decoded bytes of the answer ("" when not read).
Outcome classify(const config::ServiceDef& svc, int status, std::string_view body);

// Whether the verdict sends the request to another key (when one is left).
inline bool fails_over(Verdict v) {
  return v == Verdict::RateLimited || v == Verdict::Suspend || v == Verdict::UpstreamFailed;
}

}  // namespace keypool::keys
