#include "crypto/crypto.h"

#include <doctest/doctest.h>

#include <set>

#include "base/strings.h"

using namespace keypool;
using namespace keypool::crypto;

namespace {

MasterKey key_from(char c) { return MasterKey::from_hex(std::string(64, c)).value(); }

}  // namespace

TEST_CASE("seal/open round trip") {
  MasterKey k = key_from('a');
  for (std::string pt : {std::string(), std::string("x"), std::string("sk-live-0123456789abcdef"),
                         std::string(1000, 'z')}) {
    std::string blob = seal(k, pt, "7");
    CHECK(blob.size() == pt.size() + 29);
    CHECK(blob[0] == '\x01');
    auto r = open(k, blob, "7");
    REQUIRE(r.ok());
    CHECK(r->view() == pt);
  }
}

TEST_CASE("open refuses a wrong key, wrong AAD and tampering") {
  MasterKey k = key_from('a');
  std::string blob = seal(k, "sk-secret-value-123", "7");
  CHECK(open(key_from('b'), blob, "7").error().code == ErrorCode::Corrupt);
  CHECK(open(k, blob, "8").error().code == ErrorCode::Corrupt);
  CHECK(open(k, blob, "").error().code == ErrorCode::Corrupt);
  // Every byte matters: version, nonce, ciphertext and tag.
  for (size_t i = 0; i < blob.size(); ++i) {
    std::string t = blob;
    t[i] ^= 0x01;
    auto r = open(k, t, "7");
    CHECK_MESSAGE(!r.ok(), "byte " << i);
    if (!r.ok()) CHECK(r.error().code == ErrorCode::Corrupt);
  }
  CHECK(open(k, blob.substr(0, 28), "7").error().code == ErrorCode::Corrupt);
  CHECK(open(k, blob.substr(0, blob.size() - 1), "7").error().code == ErrorCode::Corrupt);
  CHECK(open(k, "", "7").error().code == ErrorCode::Corrupt);
  // The message names the likely cause, never the data.
  CHECK(open(k, blob, "8").error().message.find("secret") == std::string::npos);
}

TEST_CASE("two seals of the same plaintext differ (fresh nonce)") {
  MasterKey k = key_from('a');
  CHECK(seal(k, "same", "1") != seal(k, "same", "1"));
}

TEST_CASE("MasterKey::from_hex validates") {
  CHECK(MasterKey::from_hex(std::string(64, 'F')).ok());
  for (std::string bad : {std::string(), std::string(63, 'a'), std::string(65, 'a'),
                          std::string(62, 'a') + "zz", std::string(32, 'a')}) {
    auto r = MasterKey::from_hex(bad);
    REQUIRE(!r.ok());
    CHECK(r.error().code == ErrorCode::Invalid);
    CHECK(r.error().message == "must be 64 hex characters (32 bytes)");
  }
}

TEST_CASE("MasterKey moves and clones") {
  MasterKey a = key_from('c');
  std::string blob = seal(a, "v", "1");
  MasterKey b = a.clone();
  MasterKey c = std::move(a);
  CHECK(open(b, blob, "1").ok());
  CHECK(open(c, blob, "1").ok());
  CHECK(fingerprint(MasterKey::generate(), "v") != fingerprint(MasterKey::generate(), "v"));
}

TEST_CASE("fingerprint is stable and key-dependent") {
  MasterKey a = key_from('a');
  CHECK(fingerprint(a, "sk-1") == fingerprint(key_from('a'), "sk-1"));
  CHECK(fingerprint(a, "sk-1") != fingerprint(a, "sk-2"));
  CHECK(fingerprint(a, "sk-1") != fingerprint(key_from('b'), "sk-1"));
  CHECK(fingerprint(a, "sk-1").size() == 64);
  // Keyed by the derived subkey, not by the master key itself.
  CHECK(fingerprint(a, "sk-1") != hmac_sha256_hex(*hex_decode(std::string(64, 'a')), "sk-1"));
}

TEST_CASE("sha256 and hmac known answers") {
  CHECK(sha256_hex("abc") ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // RFC 4231 test case 2.
  CHECK(hmac_sha256_hex("Jefe", "what do ya want for nothing?") ==
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST_CASE("random_token: prefix, base64url, unique") {
  std::set<std::string> seen;
  for (int i = 0; i < 50; ++i) {
    std::string t = random_token("kp_");
    REQUIRE(t.size() == 3 + 43);
    CHECK(t.rfind("kp_", 0) == 0);
    CHECK(t.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                              3) == std::string::npos);
    seen.insert(t);
  }
  CHECK(seen.size() == 50);
  CHECK(random_bytes(0).empty());
  CHECK(random_bytes(17).size() == 17);
}

TEST_CASE("constant_time_equal") {
  CHECK(constant_time_equal("", ""));
  CHECK(constant_time_equal("abc", "abc"));
  CHECK(!constant_time_equal("abc", "abd"));
  CHECK(!constant_time_equal("abc", "ab"));
  CHECK(!constant_time_equal("ab", "abc"));
  CHECK(!constant_time_equal("", "a"));
  CHECK(constant_time_equal(std::string_view("a\0b", 3), std::string_view("a\0b", 3)));
  CHECK(!constant_time_equal(std::string_view("a\0b", 3), std::string_view("a\0c", 3)));
}
