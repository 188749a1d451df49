#pragma once
// crypto: the few primitives keypool needs, on OpenSSL's EVP interface. Key values are
// sealed with AES-256-GCM under the master key (ENCRYPTION_KEY) with the row's id as
// additional data, so a ciphertext copied onto another row fails to open. Team tokens are
// random and stored only as SHA-256. This room does no I/O and knows nothing of SQLite.
#include <array>
#include <cstddef>
#include <string>
#include <string_view>

#include "base/result.h"
#include "base/secret.h"

namespace keypool::crypto {

inline constexpr size_t kMasterKeySize = 32;

// The 32-byte ENCRYPTION_KEY plus the fingerprint subkey derived from it. Both are wiped
// (OPENSSL_cleanse) on destruction and when moved from; copies are explicit (clone()).
class MasterKey {
 public:
  // Exactly 64 hex characters, else Invalid. The message never repeats the input.
  static Result<MasterKey> from_hex(std::string_view hex);
  // A fresh random key; for tests and for generating a first ENCRYPTION_KEY.
  static MasterKey generate();

  MasterKey(const MasterKey&) = delete;
  MasterKey& operator=(const MasterKey&) = delete;
  MasterKey(MasterKey&& o) noexcept;
  MasterKey& operator=(MasterKey&& o) noexcept;
  ~MasterKey();

  MasterKey clone() const;
  const unsigned char* data() const { return key_.data(); }
  // HMAC key for fingerprint(); derived once so duplicate checks stay cheap.
  const unsigned char* fingerprint_key() const { return fp_key_.data(); }

 private:
  explicit MasterKey(const unsigned char* raw);
  void wipe();

  std::array<unsigned char, kMasterKeySize> key_{};
  std::array<unsigned char, kMasterKeySize> fp_key_{};
};

// AES-256-GCM. Blob = version byte 0x01 || 12-byte random nonce || ciphertext || 16-byte tag.
std::string seal(const MasterKey& key, std::string_view plaintext, std::string_view aad);
// Corrupt on a wrong key, tampering, an unknown version or a short blob; never garbage.
Result<Secret> open(const MasterKey& key, std::string_view blob, std::string_view aad);

std::string sha256_hex(std::string_view data);
std::string hmac_sha256_hex(std::string_view key, std::string_view data);
// Keyed fingerprint of a key value for duplicate detection: HMAC-SHA256 under a subkey
// derived from the master key (HKDF-SHA256, info "keypool fingerprint v1"), hex. Keyed so a
// stolen database does not let anyone confirm a guessed key value offline.
std::string fingerprint(const MasterKey& key, std::string_view value);

// RAND_bytes; aborts on failure, because there is no safe way to continue without entropy.
std::string random_bytes(size_t n);
// prefix + base64url(32 random bytes), no padding.
std::string random_token(std::string_view prefix);
// A length mismatch returns false but still walks `a`, so the time taken does not depend on
// where the contents differ.
bool constant_time_equal(std::string_view a, std::string_view b);

}  // namespace keypool::crypto
