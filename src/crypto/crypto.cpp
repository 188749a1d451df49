#include "crypto/crypto.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <cstdlib>
#include <memory>

#include "base/secret.h"
#include "base/strings.h"
#include "telemetry/log.h"

namespace keypool::crypto {
namespace {

constexpr unsigned char kBlobVersion = 0x01;
constexpr size_t kNonceSize = 12;
constexpr size_t kTagSize = 16;
constexpr size_t kBlobOverhead = 1 + kNonceSize + kTagSize;
constexpr std::string_view kFingerprintInfo = "keypool fingerprint v1";

struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree>;

// OpenSSL failing on fixed, valid parameters means the library itself is broken; carrying
// on could write unencrypted or unauthenticated data, so stop.
[[noreturn]] void die(const char* what) {
  log::error("crypto failure", {{"op", what}});
  std::abort();
}

const unsigned char* u8(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

Error corrupt() {
  return make_error(ErrorCode::Corrupt,
                    "cannot decrypt: wrong ENCRYPTION_KEY or tampered data");
}

// HKDF-SHA256(ikm = master key, no salt, info) -> out (32 bytes).
void hkdf_sha256(const unsigned char* ikm, std::string_view info, unsigned char* out) {
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  if (!kdf) die("hkdf fetch");
  EVP_KDF_CTX* ctx = EVP_KDF_CTX_new(kdf);
  EVP_KDF_free(kdf);
  if (!ctx) die("hkdf ctx");
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, const_cast<char*>("SHA256"), 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<unsigned char*>(ikm),
                                        kMasterKeySize),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, const_cast<char*>(info.data()),
                                        info.size()),
      OSSL_PARAM_construct_end()};
  int rc = EVP_KDF_derive(ctx, out, kMasterKeySize, params);
  EVP_KDF_CTX_free(ctx);
  if (rc != 1) die("hkdf derive");
}

std::string hmac_hex(const unsigned char* key, size_t key_len, std::string_view data) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  if (!HMAC(EVP_sha256(), key, static_cast<int>(key_len), u8(data), data.size(), mac,
            &mac_len))
    die("hmac");
  return hex_encode(std::string_view(reinterpret_cast<char*>(mac), mac_len));
}

std::string base64url(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), u8(bytes),
                          static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  while (!out.empty() && out.back() == '=') out.pop_back();
  for (char& c : out) {
    if (c == '+') c = '-';
    else if (c == '/') c = '_';
  }
  return out;
}

}  // namespace

// --- MasterKey ---

MasterKey::MasterKey(const unsigned char* raw) {
  std::copy(raw, raw + kMasterKeySize, key_.begin());
  hkdf_sha256(key_.data(), kFingerprintInfo, fp_key_.data());
}

Result<MasterKey> MasterKey::from_hex(std::string_view hex) {
  auto bad = make_error(ErrorCode::Invalid, "must be 64 hex characters (32 bytes)");
  if (hex.size() != 2 * kMasterKeySize) return bad;
  std::optional<std::string> raw = hex_decode(hex);
  if (!raw) return bad;
  MasterKey key(u8(*raw));
  OPENSSL_cleanse(raw->data(), raw->size());
  return key;
}

MasterKey MasterKey::generate() {
  std::string raw = random_bytes(kMasterKeySize);
  MasterKey key(u8(raw));
  OPENSSL_cleanse(raw.data(), raw.size());
  return key;
}

MasterKey::MasterKey(MasterKey&& o) noexcept : key_(o.key_), fp_key_(o.fp_key_) { o.wipe(); }

MasterKey& MasterKey::operator=(MasterKey&& o) noexcept {
  if (this != &o) {
    key_ = o.key_;
    fp_key_ = o.fp_key_;
    o.wipe();
  }
  return *this;
}

MasterKey::~MasterKey() { wipe(); }

MasterKey MasterKey::clone() const { return MasterKey(key_.data()); }

void MasterKey::wipe() {
  OPENSSL_cleanse(key_.data(), key_.size());
  OPENSSL_cleanse(fp_key_.data(), fp_key_.size());
}

// --- seal / open ---

std::string seal(const MasterKey& key, std::string_view plaintext, std::string_view aad) {
  std::string blob(kBlobOverhead + plaintext.size(), '\0');
  auto* out = reinterpret_cast<unsigned char*>(blob.data());
  out[0] = kBlobVersion;
  unsigned char* nonce = out + 1;
  unsigned char* ct = nonce + kNonceSize;
  if (RAND_bytes(nonce, kNonceSize) != 1) die("rand");

  CipherCtx ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  if (!ctx ||
      EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), nonce) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &len, u8(aad), static_cast<int>(aad.size())) != 1 ||
      EVP_EncryptUpdate(ctx.get(), ct, &len, u8(plaintext),
                        static_cast<int>(plaintext.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), ct + len, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTagSize,
                          ct + plaintext.size()) != 1)
    die("seal");
  return blob;
}

Result<Secret> open(const MasterKey& key, std::string_view blob, std::string_view aad) {
  if (blob.size() < kBlobOverhead || static_cast<unsigned char>(blob[0]) != kBlobVersion)
    return corrupt();
  const unsigned char* nonce = u8(blob) + 1;
  const unsigned char* ct = nonce + kNonceSize;
  size_t ct_len = blob.size() - kBlobOverhead;
  auto* tag = const_cast<unsigned char*>(ct + ct_len);

  // Reserve beyond the small-string buffer so the plaintext lives on the heap: moving it
  // into the Secret then hands over the pointer instead of leaving a copy behind.
  std::string pt;
  pt.reserve(ct_len < 32 ? 32 : ct_len);
  pt.resize(ct_len);
  auto* out = reinterpret_cast<unsigned char*>(pt.data());

  CipherCtx ctx(EVP_CIPHER_CTX_new());
  if (!ctx) die("cipher ctx");
  int len = 0;
  bool ok =
      EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), nonce) == 1 &&
      EVP_DecryptUpdate(ctx.get(), nullptr, &len, u8(aad), static_cast<int>(aad.size())) == 1 &&
      EVP_DecryptUpdate(ctx.get(), out, &len, ct, static_cast<int>(ct_len)) == 1 &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTagSize, tag) == 1 &&
      EVP_DecryptFinal_ex(ctx.get(), out + len, &len) == 1;
  if (!ok) {
    // GCM decrypts before it verifies: the buffer holds unauthenticated bytes.
    OPENSSL_cleanse(pt.data(), pt.size());
    return corrupt();
  }
  return Secret(std::move(pt));
}

// --- hashes, randomness, comparison ---

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &md_len, EVP_sha256(), nullptr) != 1)
    die("sha256");
  return hex_encode(std::string_view(reinterpret_cast<char*>(md), md_len));
}

std::string hmac_sha256_hex(std::string_view key, std::string_view data) {
  return hmac_hex(u8(key), key.size(), data);
}

std::string fingerprint(const MasterKey& key, std::string_view value) {
  return hmac_hex(key.fingerprint_key(), kMasterKeySize, value);
}

std::string random_bytes(size_t n) {
  std::string out(n, '\0');
  if (n && RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1)
    die("rand");
  return out;
}

std::string random_token(std::string_view prefix) {
  std::string raw = random_bytes(32);
  std::string token = std::string(prefix) + base64url(raw);
  OPENSSL_cleanse(raw.data(), raw.size());
  return token;
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  bool same_len = a.size() == b.size();
  const char* other = same_len ? b.data() : a.data();
  return equal_bytes(a.data(), other, a.size()) && same_len;
}

}  // namespace keypool::crypto
