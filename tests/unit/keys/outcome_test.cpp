#include "keys/outcome.h"

#include <doctest/doctest.h>

#include <string>

#include "config/services.h"

using namespace keypool;
using keys::Verdict;

namespace {

config::ServiceDef service(const std::string& extra = "") {
  auto s = config::service_from_yaml("name: svc\nbase_url: https://api.example.com\nauth_scheme: bearer\n" + extra,
                                     "svc.yaml");
  REQUIRE_MESSAGE(s.ok(), s.error().message);
  return std::move(s.value());
}

// Each provider's error body, as TRAFFIC.md describes them.
const std::string kOpenAiInvalid =
    R"({"error":{"message":"Incorrect API key provided: sk-proj-****abcd.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}})";
const std::string kOpenAiQuota =
    R"({"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}})";
const std::string kOpenAiRate =
    R"({"error":{"message":"Rate limit reached for gpt-4o-mini","type":"requests","param":null,"code":"rate_limit_exceeded"}})";
const std::string kOpenAiModel =
    R"({"error":{"message":"The model `gpt-5-secret` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}})";
const std::string kAnthropicPermission =
    R"({"type":"error","error":{"type":"permission_error","message":"Your API key does not have permission to use the specified resource."}})";
const std::string kGoogleInvalid =
    R"({"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"reason":"API_KEY_INVALID"}]}})";

}  // namespace

TEST_CASE("outcome: the defaults judge by status, and 429 by its body") {
  auto svc = service();
  struct Case {
    int status;
    std::string body;
    Verdict verdict;
    std::string name;
  };
  const Case cases[] = {
      {200, "", Verdict::Serve, "ok"},
      {304, "", Verdict::Serve, "ok"},
      {401, kOpenAiInvalid, Verdict::Suspend, "invalid"},
      {401, "", Verdict::Suspend, "invalid"},
      {402, "", Verdict::Suspend, "quota"},
      {429, kOpenAiQuota, Verdict::Suspend, "quota"},
      {429, kOpenAiRate, Verdict::RateLimited, "rate_limited"},
      {429, "", Verdict::RateLimited, "rate_limited"},
      // The request is refused, not the key: the pool must survive a client asking for it.
      {403, kAnthropicPermission, Verdict::Refused, "refused"},
      {403, "", Verdict::Refused, "refused"},
      {400, kGoogleInvalid, Verdict::Refused, "refused"},  // only a service rule says otherwise
      {404, kOpenAiModel, Verdict::Refused, "refused"},
      {409, "", Verdict::Refused, "refused"},
      {413, "", Verdict::Refused, "refused"},
      {422, "", Verdict::Refused, "refused"},
      {500, "", Verdict::UpstreamFailed, "upstream_failed"},
      {502, "<html>bad gateway</html>", Verdict::UpstreamFailed, "upstream_failed"},
      {529, R"({"type":"error","error":{"type":"overloaded_error"}})", Verdict::UpstreamFailed, "upstream_failed"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.status);
    CAPTURE(c.body);
    auto o = keys::classify(svc, c.status, c.body);
    CHECK(o.verdict == c.verdict);
    CHECK(keys::outcome_name(o) == c.name);
    CHECK_FALSE(o.by_rule);
  }
  CHECK(keys::fails_over(Verdict::Suspend));
  CHECK(keys::fails_over(Verdict::RateLimited));
  CHECK(keys::fails_over(Verdict::UpstreamFailed));
  CHECK_FALSE(keys::fails_over(Verdict::Refused));
  CHECK_FALSE(keys::fails_over(Verdict::Serve));
}

TEST_CASE("outcome: key_errors rules come first, in order, matching body text without case") {
  auto svc = service(
      "key_errors:\n"
      "  - {status: 403, body_contains: organization has been disabled, action: suspend}\n"
      "  - {status: 403, body_contains: permission_error, action: pass}\n"
      "  - {status: 400, body_contains: api_key_invalid, action: suspend}\n"
      "  - {status: 401, body_contains: quota_exceeded, action: suspend, reason: quota}\n"
      "  - {status: 401, action: pass}\n"
      "  - {status: 503, action: cooldown}\n");
  auto o = keys::classify(svc, 403, R"({"error":{"message":"Your Organization has been disabled."}})");
  CHECK(o.verdict == Verdict::Suspend);
  CHECK(o.reason == "invalid");
  CHECK(o.by_rule);
  o = keys::classify(svc, 403, kAnthropicPermission);
  CHECK(o.verdict == Verdict::Refused);
  CHECK(o.by_rule);
  // A 403 no rule names keeps the default.
  o = keys::classify(svc, 403, "forbidden");
  CHECK(o.verdict == Verdict::Refused);
  CHECK_FALSE(o.by_rule);
  o = keys::classify(svc, 400, kGoogleInvalid);  // "API_KEY_INVALID" matched by "api_key_invalid"
  CHECK(o.verdict == Verdict::Suspend);
  o = keys::classify(svc, 400, R"({"error":"bad json"})");
  CHECK(o.verdict == Verdict::Refused);
  // The first matching rule wins: quota before the catch-all pass for 401.
  o = keys::classify(svc, 401, R"({"detail":{"status":"quota_exceeded"}})");
  CHECK(o.verdict == Verdict::Suspend);
  CHECK(keys::outcome_name(o) == "quota");
  o = keys::classify(svc, 401, R"({"detail":{"status":"invalid_api_key"}})");
  CHECK(o.verdict == Verdict::Refused);
  o = keys::classify(svc, 503, "");
  CHECK(o.verdict == Verdict::RateLimited);
}

TEST_CASE("outcome: the body is read only when a rule for the status needs it") {
  auto svc = service(
      "key_errors:\n"
      "  - {status: 403, body_contains: disabled, action: suspend}\n"
      "  - {status: 400, action: suspend, reason: billing}\n");
  CHECK(keys::needs_body(svc, 403));
  CHECK(keys::needs_body(svc, 429));  // the insufficient_quota default
  CHECK_FALSE(keys::needs_body(svc, 400));
  CHECK_FALSE(keys::needs_body(svc, 401));
  CHECK_FALSE(keys::needs_body(svc, 500));
  auto o = keys::classify(svc, 400, "");
  CHECK(o.verdict == Verdict::Suspend);
  CHECK(keys::outcome_name(o) == "billing");
  CHECK_FALSE(keys::needs_body(service(), 403));
}

TEST_CASE("outcome: a marker past the inspected prefix is not seen") {
  auto svc = service("key_errors:\n  - {status: 403, body_contains: org_disabled, action: suspend}\n");
  std::string body(keys::kMaxInspectedBody, ' ');
  body += "org_disabled";
  // The caller passes at most kMaxInspectedBody bytes.
  CHECK(keys::classify(svc, 403, std::string_view(body).substr(0, keys::kMaxInspectedBody)).verdict ==
        Verdict::Refused);
  CHECK(keys::classify(svc, 403, body).verdict == Verdict::Suspend);
}
