#include "auth/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <mutex>

#include "base/secret.h"
#include "base/strings.h"

// SHA-256 comes straight from OpenSSL here and the constant-time compare from base, rather
// than from the crypto room, so auth does not depend on it.

namespace keypool::auth {
namespace {

// One digest context per thread, fetched and created once: EVP_Digest with EVP_sha256()
// looks the algorithm up and allocates a context on every call, which showed up on every
// proxied request. nullopt only if OpenSSL cannot hash at all (allocation failure, no
// provider); callers then fail closed, since a zero digest standing in would make two
// failures compare equal.
std::optional<Digest> sha256(std::string_view data) {
  struct Hasher {
    EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    ~Hasher() {
      EVP_MD_CTX_free(ctx);
      EVP_MD_free(md);
    }
  };
  thread_local Hasher h;
  Digest d{};
  unsigned int len = 0;
  if (!h.md || !h.ctx || EVP_DigestInit_ex2(h.ctx, h.md, nullptr) != 1 ||
      EVP_DigestUpdate(h.ctx, data.data(), data.size()) != 1 || EVP_DigestFinal_ex(h.ctx, d.data(), &len) != 1 ||
      len != d.size())
    return std::nullopt;
  return d;
}

// Lower-case hex of a digest, written into the caller's buffer (no allocation).
std::string_view hex_of(const Digest& d, std::array<char, 64>& out) {
  hex_encode_to(std::string_view(reinterpret_cast<const char*>(d.data()), d.size()), out.data());
  return {out.data(), out.size()};
}

// The credential after "<scheme> ": RFC 9110 allows one or more spaces; we trim the rest.
std::optional<Credential> from_authorization(std::string_view value) {
  value = trim(value);
  // A plain scan: find_first_of calls memchr on its set once per byte of the value.
  auto blank = std::find_if(value.begin(), value.end(), [](char c) { return c == ' ' || c == '\t'; });
  size_t sp = blank == value.end() ? std::string_view::npos : static_cast<size_t>(blank - value.begin());
  // A bare value with no scheme (the AssemblyAI SDK sends "Authorization: <key>").
  if (sp == std::string_view::npos) {
    if (value.empty() || iequals(value, "bearer") || iequals(value, "token") || iequals(value, "basic"))
      return std::nullopt;
    return Credential(value, CredentialSource::AuthorizationRaw);
  }
  std::string_view scheme = value.substr(0, sp);
  std::string_view cred = trim(value.substr(sp + 1));
  if (cred.empty()) return std::nullopt;
  if (iequals(scheme, "bearer"))
    return Credential(cred, CredentialSource::AuthorizationBearer);
  if (iequals(scheme, "token"))
    return Credential(cred, CredentialSource::AuthorizationToken);
  return std::nullopt;
}

std::optional<Credential> from_header(const std::string* value, CredentialSource source) {
  if (!value) return std::nullopt;
  auto cred = trim(*value);
  if (cred.empty()) return std::nullopt;
  return Credential(cred, source);
}

// First `api_key` value in the query, form-decoded. Kept local so auth needs only base.
std::optional<std::string> query_api_key(std::string_view query) {
  if (query.empty()) return std::nullopt;
  auto form_decode = [](std::string_view s) {
    std::string raw(s);
    for (auto& c : raw)
      if (c == '+') c = ' ';
    return percent_decode(raw);
  };
  for (auto part : split(query, '&')) {
    size_t eq = part.find('=');
    auto name = form_decode(part.substr(0, eq));
    if (!name || *name != "api_key") continue;
    if (eq == std::string_view::npos) return std::nullopt;
    return form_decode(part.substr(eq + 1));
  }
  return std::nullopt;
}

Error unauthorized(std::string message) {
  return make_error(ErrorCode::Unauthorized, std::move(message));
}

}  // namespace

std::optional<Credential> extract_credential(const http::Headers& headers, std::string_view query) {
  // One pass. The first Authorization comes before everything else, so a usable one ends
  // the search; otherwise the first X-Api-Key, then the first Xi-Api-Key, are tried after.
  bool authorization_seen = false;
  const std::string *x_api_key = nullptr, *xi_api_key = nullptr;
  for (const auto& h : headers) {
    switch (http::field_id(h)) {
      case http::FieldId::Authorization:
        if (authorization_seen) break;
        authorization_seen = true;
        if (auto c = from_authorization(h.value)) return c;
        break;
      case http::FieldId::XApiKey:
        if (!x_api_key) x_api_key = &h.value;
        break;
      case http::FieldId::XiApiKey:
        if (!xi_api_key) xi_api_key = &h.value;
        break;
      default:
        break;
    }
  }
  if (auto c = from_header(x_api_key, CredentialSource::XApiKey)) return c;
  if (auto c = from_header(xi_api_key, CredentialSource::XiApiKey)) return c;
  auto q = query_api_key(query);
  if (q && !q->empty()) return Credential(std::move(*q), CredentialSource::QueryApiKey);
  return std::nullopt;
}

Credential::~Credential() {
  if (!decoded_.empty()) OPENSSL_cleanse(decoded_.data(), decoded_.size());
}

AdminToken::AdminToken(std::string_view token) {
  if (!token.empty()) digest_ = sha256(token);
}

bool AdminToken::matches(std::string_view presented) const {
  // Hash the presented token so the compare runs over 32 bytes whatever the lengths; the
  // early return only reveals whether admin access is configured at all, not a secret.
  if (!digest_) return false;
  auto d = sha256(presented);
  if (!d) return false;
  bool equal = equal_bytes(d->data(), digest_->data(), d->size());
  return equal && !presented.empty();
}

std::string hash_token(std::string_view token) {
  auto d = sha256(token);
  if (!d) return {};
  std::array<char, 64> hex;
  return std::string(hex_of(*d, hex));
}

void CredentialMemo::forget() {
  if (!secret_.empty()) OPENSSL_cleanse(secret_.data(), secret_.size());
  secret_.clear();
  info_.reset();
}

namespace {
std::optional<Digest> digest_of_hex(std::string_view hash_hex) {
  // Digests from the store may be upper-case; hex_decode takes either.
  auto raw = hex_decode(hash_hex);
  Digest d;
  if (!raw || raw->size() != d.size()) return std::nullopt;  // not a SHA-256: nothing can match it
  std::memcpy(d.data(), raw->data(), d.size());
  return d;
}
}  // namespace

void TokenRegistry::erase_locked(int64_t id) {
  auto it = hash_by_id_.find(id);
  if (it == hash_by_id_.end()) return;
  by_hash_.erase(it->second.current);
  if (it->second.previous) by_hash_.erase(*it->second.previous);
  hash_by_id_.erase(it);
}

void TokenRegistry::upsert(std::string hash_hex, TokenInfo info, std::string_view prev_hash_hex,
                           int64_t prev_valid_until_ms) {
  auto d = digest_of_hex(hash_hex);
  auto prev = prev_valid_until_ms > 0 ? digest_of_hex(prev_hash_hex) : std::nullopt;
  std::unique_lock lock(mu_);
  ++generation_;
  // A re-issued token (same id, new hash) stops the old hash working at once.
  erase_locked(info.id);
  if (!d) return;
  // A digest held by another token id moves to this one.
  for (const auto& digest : {std::optional<Digest>(d), prev}) {
    if (!digest) continue;
    if (auto other = by_hash_.find(*digest); other != by_hash_.end() && other->second->id != info.id)
      erase_locked(other->second->id);
  }
  Held held{*d, std::nullopt};
  if (prev && *prev != *d) {
    TokenInfo old = info;
    old.valid_until_ms = prev_valid_until_ms;
    by_hash_[*prev] = std::make_shared<const TokenInfo>(std::move(old));
    held.previous = *prev;
  }
  hash_by_id_[info.id] = held;
  by_hash_[*d] = std::make_shared<const TokenInfo>(std::move(info));
}

void TokenRegistry::remove(int64_t id) {
  std::unique_lock lock(mu_);
  ++generation_;
  erase_locked(id);
}

Result<std::shared_ptr<const TokenInfo>> TokenRegistry::authenticate(std::string_view presented, int64_t now_ms,
                                                                     CredentialMemo* memo) const {
  if (presented.empty()) return unauthorized("invalid token");
  std::shared_ptr<const TokenInfo> info;
  {
    std::shared_lock lock(mu_);
    // The lengths are compared first: that says only whether this connection now sends a
    // token as long as the one it sent before.
    if (memo && memo->info_ && memo->generation_ == generation_ && memo->secret_.size() == presented.size() &&
        equal_bytes(memo->secret_.data(), presented.data(), presented.size()))
      info = memo->info_;
  }
  if (!info) {
    auto digest = sha256(presented);
    if (!digest) return unauthorized("invalid token");
    std::shared_lock lock(mu_);
    auto it = by_hash_.find(*digest);
    // The map found it by equality already; the explicit constant-time compare keeps the
    // decision itself independent of the early-exit comparison the map used.
    if (it == by_hash_.end() || !equal_bytes(it->first.data(), digest->data(), digest->size()))
      return unauthorized("invalid token");
    info = it->second;
    if (memo) {
      memo->forget();
      memo->secret_.assign(presented);
      memo->generation_ = generation_;  // read under the same lock as the lookup
      memo->info_ = info;
    }
  }
  if (info->valid_until_ms > 0 && now_ms >= info->valid_until_ms) return unauthorized("invalid token");
  if (info->expires_at_ms > 0 && now_ms >= info->expires_at_ms) return unauthorized("token expired");
  return info;
}

size_t TokenRegistry::size() const {
  std::shared_lock lock(mu_);
  return hash_by_id_.size();
}

}  // namespace keypool::auth
