#include "keys/outcome.h"

#include <algorithm>

namespace keypool::keys {
namespace {

// OpenAI (and the APIs that copy its error shape: Groq and others) say a key has no money
// left with a 429 whose error code is insufficient_quota; a plain 429 is a rate limit.
constexpr std::string_view kQuotaMarker = "insufficient_quota";

bool contains_nocase(std::string_view hay, std::string_view needle) {
  if (needle.empty()) return true;
  auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
  auto it = std::search(hay.begin(), hay.end(), needle.begin(), needle.end(),
                        [&](char a, char b) { return lower(a) == lower(b); });
  return it != hay.end();
}

std::string_view default_reason(int status) { return status == 402 || status == 429 ? "quota" : "invalid"; }

Outcome from_rule(const config::KeyErrorRule& r) {
  switch (r.action) {
    case config::KeyAction::Suspend:
      return {Verdict::Suspend, r.reason.empty() ? default_reason(r.status) : std::string_view(r.reason), true};
    case config::KeyAction::Cooldown:
      return {Verdict::RateLimited, {}, true};
    case config::KeyAction::Pass:
      return {Verdict::Refused, {}, true};
  }
  return {Verdict::Refused, {}, true};
}

Outcome by_default(int status, std::string_view body) {
  if (status < 400) return {Verdict::Serve, {}, false};
  if (status == 401) return {Verdict::Suspend, "invalid", false};
  if (status == 402) return {Verdict::Suspend, "quota", false};
  if (status == 429) {
    if (contains_nocase(body, kQuotaMarker)) return {Verdict::Suspend, "quota", false};
    return {Verdict::RateLimited, {}, false};
  }
  if (status >= 500) return {Verdict::UpstreamFailed, {}, false};
  return {Verdict::Refused, {}, false};  // 403, 400, 404, 409, 413, 422, ...
}

}  // namespace

std::string_view outcome_name(const Outcome& o) {
  switch (o.verdict) {
    case Verdict::Serve: return "ok";
    case Verdict::Refused: return "refused";
    case Verdict::RateLimited: return "rate_limited";
    case Verdict::Suspend: return o.reason;
    case Verdict::UpstreamFailed: return "upstream_failed";
  }
  return "ok";
}

bool needs_body(const config::ServiceDef& svc, int status) {
  if (status == 429) return true;
  return std::any_of(svc.key_errors.begin(), svc.key_errors.end(),
                     [&](const config::KeyErrorRule& r) { return r.status == status && !r.body_contains.empty(); });
}

Outcome classify(const config::ServiceDef& svc, int status, std::string_view body) {
  for (const auto& r : svc.key_errors)
    if (r.status == status && contains_nocase(body, r.body_contains)) return from_rule(r);
  return by_default(status, body);
}

}  // namespace keypool::keys
