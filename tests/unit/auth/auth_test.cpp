#include "auth/auth.h"

#include <doctest/doctest.h>

#include <atomic>
#include <cctype>
#include <string>
#include <thread>
#include <vector>

using keypool::ErrorCode;
using keypool::auth::CredentialMemo;
using keypool::auth::CredentialSource;
using keypool::auth::extract_credential;
using keypool::auth::hash_token;
using keypool::auth::AdminToken;
using keypool::auth::TokenInfo;
using keypool::auth::TokenRegistry;
using keypool::http::Headers;

TEST_CASE("auth: extract_credential sources and precedence") {
  struct Case {
    const char* label;
    Headers headers;
    const char* query;
    std::optional<std::string> value;
    CredentialSource source;
  };
  const Case cases[] = {
      {"bearer",
       {{"Authorization", "Bearer tok1"}},
       "",
       "tok1",
       CredentialSource::AuthorizationBearer},
      {"bearer lower",
       {{"authorization", "bearer tok1"}},
       "",
       "tok1",
       CredentialSource::AuthorizationBearer},
      {"bearer upper",
       {{"AUTHORIZATION", "BEARER tok1"}},
       "",
       "tok1",
       CredentialSource::AuthorizationBearer},
      {"bearer extra spaces",
       {{"Authorization", "  Bearer   tok1  "}},
       "",
       "tok1",
       CredentialSource::AuthorizationBearer},
      {"token",
       {{"Authorization", "Token tok2"}},
       "",
       "tok2",
       CredentialSource::AuthorizationToken},
      {"token mixed",
       {{"Authorization", "tOkEn tok2"}},
       "",
       "tok2",
       CredentialSource::AuthorizationToken},
      {"x-api-key", {{"X-Api-Key", "tok3"}}, "", "tok3", CredentialSource::XApiKey},
      {"xi-api-key", {{"xi-api-key", " tok4 "}}, "", "tok4", CredentialSource::XiApiKey},
      {"query", {}, "a=1&api_key=tok5", "tok5", CredentialSource::QueryApiKey},
      {"query decoded", {}, "api_key=t%2Bo+k", "t+o k", CredentialSource::QueryApiKey},
      {"bearer beats x-api-key",
       {{"x-api-key", "tok3"}, {"Authorization", "Bearer tok1"}},
       "api_key=tok5",
       "tok1",
       CredentialSource::AuthorizationBearer},
      {"x-api-key beats xi-api-key",
       {{"xi-api-key", "tok4"}, {"x-api-key", "tok3"}},
       "",
       "tok3",
       CredentialSource::XApiKey},
      {"xi-api-key beats query",
       {{"xi-api-key", "tok4"}},
       "api_key=tok5",
       "tok4",
       CredentialSource::XiApiKey},
      {"basic is skipped",
       {{"Authorization", "Basic dXNlcjpwYXNz"}, {"x-api-key", "tok3"}},
       "",
       "tok3",
       CredentialSource::XApiKey},
      {"empty bearer is skipped",
       {{"Authorization", "Bearer "}, {"x-api-key", "tok3"}},
       "",
       "tok3",
       CredentialSource::XApiKey},
      {"a bare value with no scheme is the credential (AssemblyAI SDK)",
       {{"Authorization", "kp_rawtoken"}},
       "",
       "kp_rawtoken",
       CredentialSource::AuthorizationRaw},
      {"bare scheme is skipped",
       {{"Authorization", "Bearer"}},
       "api_key=tok5",
       "tok5",
       CredentialSource::QueryApiKey},
      {"empty x-api-key is skipped",
       {{"x-api-key", ""}, {"xi-api-key", "tok4"}},
       "",
       "tok4",
       CredentialSource::XiApiKey},
      {"first api_key wins", {}, "api_key=a&api_key=b", "a", CredentialSource::QueryApiKey},
      {"nothing", {{"Accept", "*/*"}}, "a=1", std::nullopt, CredentialSource::QueryApiKey},
      {"all empty",
       {{"Authorization", ""}, {"x-api-key", "  "}, {"xi-api-key", ""}},
       "api_key=",
       std::nullopt,
       CredentialSource::QueryApiKey},
      {"bad escape", {}, "api_key=%zz", std::nullopt, CredentialSource::QueryApiKey},
      {"param without value", {}, "api_key", std::nullopt, CredentialSource::QueryApiKey},
      {"similar name", {}, "api_keys=x&xapi_key=y", std::nullopt, CredentialSource::QueryApiKey},
  };
  for (const auto& c : cases) {
    CAPTURE(c.label);
    auto got = extract_credential(c.headers, c.query);
    if (!c.value) {
      CHECK_FALSE(got);
      continue;
    }
    REQUIRE(got);
    CHECK(got->value() == *c.value);
    CHECK(got->source() == c.source);
  }
}

TEST_CASE("auth: hash_token") {
  CHECK(hash_token("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(hash_token("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_CASE("auth: AdminToken hashes once and compares afresh every time") {
  AdminToken admin("s3cret-admin");
  CHECK(admin.matches("s3cret-admin"));
  CHECK_FALSE(admin.matches("s3cret-admiN"));
  CHECK_FALSE(admin.matches("s3cret-admin "));
  CHECK_FALSE(admin.matches(""));
  // Many checks in a row reuse the thread's digest context: each still hashes afresh.
  for (int i = 0; i < 1000; ++i) REQUIRE(admin.matches(i % 2 ? "s3cret-admin" : "x") == (i % 2 == 1));
  AdminToken disabled("");
  CHECK_FALSE(disabled.matches(""));
  CHECK_FALSE(disabled.matches("anything"));
}

TEST_CASE("auth: AdminToken matches only the exact token") {
  struct Case {
    const char* presented;
    const char* admin;
    bool want;
  };
  const Case cases[] = {
      {"s3cret-admin", "s3cret-admin", true},
      {"s3cret-admiN", "s3cret-admin", false},
      {"s3cret-admin ", "s3cret-admin", false},
      {"s3cret", "s3cret-admin", false},
      {"", "s3cret-admin", false},
      {"", "", false},
      {"anything", "", false},
  };
  for (const auto& c : cases) {
    CAPTURE(c.presented);
    CHECK(AdminToken(c.admin).matches(c.presented) == c.want);
  }
}

namespace {
TokenInfo info(int64_t id, std::string name, int64_t expires_at_ms = 0) {
  TokenInfo t;
  t.id = id;
  t.name = std::move(name);
  t.tier = "pro";
  t.expires_at_ms = expires_at_ms;
  return t;
}
}  // namespace

TEST_CASE("auth: TokenRegistry authenticate, expiry, removal, re-issue") {
  TokenRegistry reg;
  reg.upsert(hash_token("kp_alpha"), info(1, "alpha"));
  reg.upsert(hash_token("kp_beta"), info(2, "beta", 1'000));
  std::string upper = hash_token("kp_gamma");
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  reg.upsert(upper, info(3, "gamma"));
  CHECK(reg.size() == 3);

  struct Case {
    const char* token;
    int64_t now;
    bool ok;
    const char* name_or_message;
  };
  const Case cases[] = {
      {"kp_alpha", 5'000, true, "alpha"},
      {"kp_beta", 999, true, "beta"},
      {"kp_beta", 1'000, false, "token expired"},
      {"kp_beta", 2'000, false, "token expired"},
      {"kp_gamma", 0, true, "gamma"},
      {"kp_alphA", 0, false, "invalid token"},
      {"", 0, false, "invalid token"},
      {"kp_delta", 0, false, "invalid token"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.token);
    CAPTURE(c.now);
    auto r = reg.authenticate(c.token, c.now);
    REQUIRE(r.ok() == c.ok);
    if (c.ok) {
      CHECK((*r)->name == c.name_or_message);
      CHECK((*r)->tier == "pro");
    } else {
      CHECK(r.error().code == ErrorCode::Unauthorized);
      CHECK(r.error().message == c.name_or_message);
    }
  }

  reg.remove(1);
  CHECK(reg.size() == 2);
  CHECK_FALSE(reg.authenticate("kp_alpha", 0).ok());
  reg.remove(1);  // removing twice is harmless
  reg.remove(99);
  CHECK(reg.size() == 2);

  // Re-issuing token 2 under a new secret revokes the old one at once.
  reg.upsert(hash_token("kp_beta2"), info(2, "beta"));
  CHECK(reg.size() == 2);
  CHECK_FALSE(reg.authenticate("kp_beta", 0).ok());
  CHECK(reg.authenticate("kp_beta2", 5'000).ok());

  // Updating info under the same hash replaces it.
  auto updated = info(2, "beta-renamed");
  updated.services = {"openai", "groq"};
  updated.rpm = 30;
  reg.upsert(hash_token("kp_beta2"), updated);
  auto r = reg.authenticate("kp_beta2", 0);
  REQUIRE(r.ok());
  CHECK((*r)->name == "beta-renamed");
  CHECK((*r)->services == std::vector<std::string>{"openai", "groq"});
  CHECK((*r)->rpm == 30);

  // A hash moved to another id leaves no stale id entry behind.
  reg.upsert(hash_token("kp_beta2"), info(7, "moved"));
  CHECK(reg.size() == 2);
  reg.remove(2);
  CHECK(reg.size() == 2);
  CHECK((*reg.authenticate("kp_beta2", 0))->name == "moved");

  // A stored hash that is not a SHA-256 in hex (a damaged row) matches nothing, and still
  // replaces the id's previous hash: the old secret stops working.
  reg.upsert(hash_token("kp_eps"), info(8, "eps"));
  REQUIRE(reg.authenticate("kp_eps", 0).ok());
  for (std::string bad : {std::string("zz") + hash_token("kp_eps").substr(2), hash_token("kp_eps").substr(2),
                          std::string("kp_eps")}) {
    CAPTURE(bad);
    reg.upsert(bad, info(8, "eps"));
    CHECK_FALSE(reg.authenticate("kp_eps", 0).ok());
    CHECK(reg.size() == 2);
  }
}

TEST_CASE("auth: a connection's credential memo never outlives a registry change") {
  TokenRegistry reg;
  reg.upsert(hash_token("kp_one_0123456789"), info(1, "one"));
  reg.upsert(hash_token("kp_two_0123456789"), info(2, "two", 10'000));
  CredentialMemo memo;
  CHECK(memo.empty());

  // A proved token is remembered; the same bytes again are answered from the memo.
  REQUIRE(reg.authenticate("kp_one_0123456789", 0, &memo).ok());
  CHECK_FALSE(memo.empty());
  auto again = reg.authenticate("kp_one_0123456789", 0, &memo);
  REQUIRE(again.ok());
  CHECK((*again)->name == "one");

  // Other bytes are checked in full, whatever the memo holds: a wrong token of the same
  // length, a prefix, a longer one.
  for (const char* wrong : {"kp_one_0123456788", "kp_one_012345678", "kp_one_01234567890", ""}) {
    CAPTURE(wrong);
    CHECK_FALSE(reg.authenticate(wrong, 0, &memo).ok());
  }
  // Another valid token on the same connection replaces the memo.
  auto two = reg.authenticate("kp_two_0123456789", 0, &memo);
  REQUIRE(two.ok());
  CHECK((*two)->name == "two");
  // Expiry is checked on every request, memo or not.
  auto expired = reg.authenticate("kp_two_0123456789", 10'000, &memo);
  REQUIRE_FALSE(expired.ok());
  CHECK(expired.error().message == "token expired");

  // An update under the same hash is seen at once.
  reg.upsert(hash_token("kp_two_0123456789"), info(2, "two-renamed"));
  CHECK((*reg.authenticate("kp_two_0123456789", 20'000, &memo))->name == "two-renamed");
  // A revocation too, even though the memo still holds the token.
  REQUIRE_FALSE(memo.empty());
  reg.remove(2);
  CHECK_FALSE(reg.authenticate("kp_two_0123456789", 0, &memo).ok());
  // A change to another token makes the memo stale as well: the next request is verified
  // again and still succeeds.
  REQUIRE(reg.authenticate("kp_one_0123456789", 0, &memo).ok());
  reg.upsert(hash_token("kp_three_0123456"), info(3, "three"));
  CHECK(reg.authenticate("kp_one_0123456789", 0, &memo).ok());
  // Re-issuing token 1 stops its old secret on a connection that proved it.
  reg.upsert(hash_token("kp_one_new_0123456"), info(1, "one"));
  CHECK_FALSE(reg.authenticate("kp_one_0123456789", 0, &memo).ok());

  memo.forget();
  CHECK(memo.empty());
}

TEST_CASE("auth: TokenRegistry concurrent reads with a writer") {
  TokenRegistry reg;
  for (int i = 0; i < 50; ++i) reg.upsert(hash_token("tok" + std::to_string(i)), info(i, "t"));
  std::atomic<int> failures{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&, t] {
      for (int n = 0; n < 2'000; ++n) {
        int i = (n + t) % 50;
        if (!reg.authenticate("tok" + std::to_string(i), 0).ok()) failures.fetch_add(1);
      }
    });
  }
  // The writer churns tokens the readers never ask for.
  std::thread writer([&] {
    for (int n = 0; !stop.load(); ++n) {
      reg.upsert(hash_token("other" + std::to_string(n % 10)), info(1000 + n % 10, "o"));
      if (n % 3 == 0) reg.remove(1000 + (n % 10));
    }
  });
  for (auto& th : readers) th.join();
  stop.store(true);
  writer.join();
  CHECK(failures.load() == 0);
  CHECK(reg.size() >= 50);
}

TEST_CASE("auth: TokenRegistry keeps a rotated-out secret until its grace period ends") {
  TokenRegistry reg;
  reg.upsert(hash_token("kp_old"), info(1, "team"));
  keypool::auth::CredentialMemo memo;
  REQUIRE(reg.authenticate("kp_old", 0, &memo).ok());  // the connection remembers the old secret
  // Rotated at t=1000 with a grace period until t=5000.
  reg.upsert(hash_token("kp_new"), info(1, "team"), hash_token("kp_old"), 5'000);
  CHECK(reg.size() == 1);
  CHECK(reg.authenticate("kp_new", 1'000).ok());
  auto old = reg.authenticate("kp_old", 4'999, &memo);
  REQUIRE(old.ok());
  CHECK((*old)->id == 1);
  CHECK(reg.authenticate("kp_old", 5'000).error().message == "invalid token");
  CHECK(reg.authenticate("kp_old", 5'000, &memo).error().message == "invalid token");  // the memo too
  CHECK(reg.authenticate("kp_new", 9'999'999).ok());
  // Another rotation without grace drops both earlier secrets at once.
  reg.upsert(hash_token("kp_third"), info(1, "team"));
  CHECK_FALSE(reg.authenticate("kp_new", 1'000).ok());
  CHECK_FALSE(reg.authenticate("kp_old", 1'000).ok());
  CHECK(reg.authenticate("kp_third", 1'000).ok());
  // Revocation ends a grace period too.
  reg.upsert(hash_token("kp_fourth"), info(1, "team"), hash_token("kp_third"), 5'000);
  reg.remove(1);
  CHECK_FALSE(reg.authenticate("kp_third", 1'000).ok());
  CHECK_FALSE(reg.authenticate("kp_fourth", 1'000).ok());
  CHECK(reg.size() == 0);
}
