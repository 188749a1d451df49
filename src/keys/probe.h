#pragma once
// One health probe: the service's health_check request sent with one key, on the calling
// loop's upstream client (never blocking), judged by its status: one of `expect` passes.
// Anything else fails, and the answer is classified (keys/outcome.h) so the caller can say
// why; a transport error or a 5xx is an error, which says nothing about the key.
#include <functional>
#include <memory>
#include <string>

#include "base/secret.h"
#include "config/service.h"
#include "keys/outcome.h"

namespace keypool::upstream {
class Client;
}

namespace keypool::keys {

enum class ProbeVerdict { Pass, Fail, Error };
const char* probe_verdict_name(ProbeVerdict v);  // "pass", "fail", "error"

struct ProbeResult {
  ProbeVerdict verdict = ProbeVerdict::Error;
  int status = 0;        // the upstream's status; 0 when none came
  std::string outcome;   // outcome_name() of the answer, or the transport error's kind
  std::string message;   // for people: what happened (never the key)
};

using ProbeDone = std::function<void(const ProbeResult&)>;

// Sends svc.health_check (which must be set) with `key`. `done` runs once on the client's
// loop, never inside probe() itself.
void probe(upstream::Client& client, const config::ServiceDef& svc, std::shared_ptr<const Secret> key,
           ProbeDone done);

}  // namespace keypool::keys
