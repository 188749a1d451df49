#pragma once
// Auth: who is calling. Finds the team token a caller presented (in whichever header or
// query form its SDK uses), checks the admin token, and looks team tokens up in a
// registry keyed by their SHA-256. Pure apart from a lock: no I/O; the store loads the
// registry and keeps it current through upsert/remove.
//
// Secrets are never map keys, log fields or error text here: the registry holds only
// digests, and comparisons of secret-derived bytes run in constant time
// (equal_bytes, base/secret.h).
#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/result.h"
#include "http/headers.h"

namespace keypool::auth {

enum class CredentialSource {
  AuthorizationBearer,
  AuthorizationToken,
  AuthorizationRaw,  // "Authorization: <token>" with no scheme word (AssemblyAI's SDK)
  XApiKey,
  XiApiKey,
  QueryApiKey
};

// A presented credential. One in a header is a view into the request's headers (which
// outlive every use of it): copying it would cost each request an allocation and leave an
// unwiped copy of the token on the heap. One from the query is percent-decoded, so it is
// owned, and wiped when the Credential goes.
class Credential {
 public:
  Credential(std::string_view in_header, CredentialSource source) : view_(in_header), source_(source) {}
  Credential(std::string decoded, CredentialSource source) : decoded_(std::move(decoded)), source_(source) {}
  Credential(Credential&&) = default;
  Credential(const Credential&) = delete;
  Credential& operator=(const Credential&) = delete;
  Credential& operator=(Credential&&) = delete;
  ~Credential();

  std::string_view value() const {
    return source_ == CredentialSource::QueryApiKey ? std::string_view(decoded_) : view_;
  }
  CredentialSource source() const { return source_; }

 private:
  std::string_view view_;  // a header-borne credential
  std::string decoded_;    // a query-borne one (the only kind that is decoded)
  CredentialSource source_;
};

// Looks, in order, at Authorization ("Bearer x" or "Token x", scheme case-insensitive),
// x-api-key, xi-api-key, then the `api_key` query parameter. The first non-empty one wins;
// an empty or unrecognised one is skipped. nullopt when none is present.
std::optional<Credential> extract_credential(const http::Headers& headers, std::string_view query);

using Digest = std::array<unsigned char, 32>;

// The admin token as its SHA-256, hashed once at start rather than on every request.
// matches() is constant time in the token contents and lengths: it compares digests.
// An empty token disables admin access (matches nothing).
class AdminToken {
 public:
  explicit AdminToken(std::string_view token);
  bool matches(std::string_view presented) const;

 private:
  std::optional<Digest> digest_;  // nullopt: admin access disabled (or hashing failed)
};

// SHA-256 of the token, lower-case hex (64 chars). What the store keeps instead of the token.
// "" only if OpenSSL cannot hash at all; callers must treat that as a failure.
std::string hash_token(std::string_view token);

struct TokenInfo {
  int64_t id = 0;
  std::string name, tier;
  std::vector<std::string> services;  // empty = every service
  int64_t expires_at_ms = 0;          // 0 = never
  int64_t rpm = 0;                    // 0 = no per-token cap
  bool allow_key_handout = false;     // may take keys out through GET /key
  // Set on the entry of a rotated-out secret: it authenticates until then (the grace
  // period), 0 on the current secret's entry.
  int64_t valid_until_ms = 0;
};

// The last team token one client connection proved. SDKs send the same token on every
// request of a keep-alive connection; with the memo, the next request is checked with one
// constant-time compare of the presented bytes instead of a SHA-256 and a registry lookup.
// Owned by the connection (never shared between connections), wiped when replaced and when
// the connection goes. Any registry change (a revocation, a re-issue, an update) makes it
// stale, so a revoked token stops working on open connections at once.
class CredentialMemo {
 public:
  CredentialMemo() = default;
  CredentialMemo(const CredentialMemo&) = delete;
  CredentialMemo& operator=(const CredentialMemo&) = delete;
  ~CredentialMemo() { forget(); }
  void forget();
  bool empty() const { return info_ == nullptr; }

 private:
  friend class TokenRegistry;
  std::string secret_;
  uint64_t generation_ = 0;
  std::shared_ptr<const TokenInfo> info_;
};

// Live team tokens, shared by all workers. Reads (every request) take a shared lock; writes
// (admin changes, startup load) take it exclusively. Keyed by the digest, so a lookup's
// timing depends on the digest, which says nothing useful about the presented token.
class TokenRegistry {
 public:
  // Adds or replaces the token with info.id; a re-issued token (same id, new hash) replaces
  // the old hash, which stops working at once unless it is given as prev_hash_hex: then it
  // keeps working until prev_valid_until_ms (a rotation's grace period). hash_hex is
  // hash_token()'s output (any case).
  void upsert(std::string hash_hex, TokenInfo info, std::string_view prev_hash_hex = {},
              int64_t prev_valid_until_ms = 0);
  void remove(int64_t id);
  // Unauthorized "invalid token" for unknown or revoked tokens; Unauthorized "token expired"
  // when expires_at_ms is set and now_ms >= it.
  // Shared, not copied: the proxy asks on every request, and a token's names and service
  // list would otherwise be copied each time. An upsert replaces the entry; holders keep
  // the version they authenticated with.
  // memo (optional): the caller's connection memo, consulted first and refreshed on success.
  Result<std::shared_ptr<const TokenInfo>> authenticate(std::string_view presented, int64_t now_ms,
                                                        CredentialMemo* memo = nullptr) const;
  size_t size() const;

 private:
  mutable std::shared_mutex mu_;
  uint64_t generation_ = 1;  // guarded by mu_; moves on every change, see CredentialMemo
  // Keyed by the raw digest: a lookup needs no hex encoding, and a SHA-256 is already
  // uniformly spread, so its first 8 bytes serve as the bucket hash.
  struct DigestHash {
    size_t operator()(const Digest& d) const {
      size_t h;
      std::memcpy(&h, d.data(), sizeof h);
      return h;
    }
  };
  std::unordered_map<Digest, std::shared_ptr<const TokenInfo>, DigestHash> by_hash_;  // guarded by mu_
  // A token's current digest and, during a rotation's grace period, its previous one.
  struct Held {
    Digest current;
    std::optional<Digest> previous;
  };
  std::unordered_map<int64_t, Held> hash_by_id_;  // guarded by mu_
  void erase_locked(int64_t id);
};

}  // namespace keypool::auth
