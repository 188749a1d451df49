#include "session/session.h"

#include <algorithm>

#include "auth/auth.h"
#include "base/secret.h"
#include "base/strings.h"
#include "crypto/crypto.h"

namespace keypool::session {
namespace {

bool is_read(std::string_view method) { return method == "GET" || method == "HEAD"; }

// "https://host:port" -> "host:port"; "" for anything that is not http(s)://authority.
std::string_view origin_authority(std::string_view origin) {
  for (std::string_view scheme : {"http://", "https://"})
    if (origin.size() > scheme.size() && iequals(origin.substr(0, scheme.size()), scheme)) {
      auto rest = origin.substr(scheme.size());
      if (rest.find('/') != std::string_view::npos) return {};
      return rest;
    }
  return {};
}

}  // namespace

void Store::set_limits(Limits limits) {
  std::lock_guard<std::mutex> lock(mu_);
  limits_ = limits;
}

bool Store::expired(const Entry& e, int64_t now_ms) const {
  return now_ms - e.last_seen_ms >= limits_.idle_ms || now_ms - e.created_ms >= limits_.absolute_ms;
}

void Store::sweep(int64_t now_ms) {
  std::erase_if(by_hash_, [&](const auto& kv) { return expired(kv.second, now_ms); });
  // Still full: a login storm. Drop the least recently used so a new login always works.
  while (by_hash_.size() >= limits_.max_sessions && !by_hash_.empty()) {
    auto oldest = std::min_element(
        by_hash_.begin(), by_hash_.end(),
        [](const auto& a, const auto& b) { return a.second.last_seen_ms < b.second.last_seen_ms; });
    by_hash_.erase(oldest);
  }
}

Issued Store::open(int64_t now_ms) {
  Issued s{crypto::random_token("kps_"), crypto::random_token(""), 0};
  std::lock_guard<std::mutex> lock(mu_);
  sweep(now_ms);
  by_hash_[auth::hash_token(s.id)] = Entry{s.csrf, now_ms, now_ms};
  s.expires_at_ms = now_ms + limits_.absolute_ms;
  return s;
}

std::optional<View> Store::touch(std::string_view id, int64_t now_ms) {
  if (id.empty()) return std::nullopt;
  std::string hash = auth::hash_token(id);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return std::nullopt;
  if (expired(it->second, now_ms)) {
    by_hash_.erase(it);
    return std::nullopt;
  }
  it->second.last_seen_ms = now_ms;
  int64_t until = std::min(now_ms + limits_.idle_ms, it->second.created_ms + limits_.absolute_ms);
  return View{it->second.csrf, until};
}

void Store::close(std::string_view id) {
  std::string hash = auth::hash_token(id);
  std::lock_guard<std::mutex> lock(mu_);
  by_hash_.erase(hash);
}

size_t Store::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return by_hash_.size();
}

std::optional<std::string_view> cookie(const http::Headers& headers, std::string_view name) {
  for (const auto& h : headers) {
    if (!iequals(h.name, "cookie")) continue;
    for (auto part : split(h.value, ';')) {
      part = trim(part);
      size_t eq = part.find('=');
      if (eq != std::string_view::npos && part.substr(0, eq) == name) return part.substr(eq + 1);
    }
  }
  return std::nullopt;
}

bool same_origin(const http::Headers& headers) {
  if (auto site = http::find_header(headers, "sec-fetch-site")) {
    // "none": the user typed the address or used a bookmark, which no other site can cause.
    if (!iequals(*site, "same-origin") && !iequals(*site, "none")) return false;
  }
  auto origin = http::find_header(headers, "origin");
  if (!origin) return true;
  auto host = http::find_header(headers, "host");
  auto authority = origin_authority(trim(*origin));
  return host && !authority.empty() && iequals(authority, trim(*host));
}

Verdict check(Store& store, const http::Headers& headers, std::string_view method, int64_t now_ms) {
  auto id = cookie(headers, kCookieName);
  if (!id) return Verdict::NoSession;
  if (!same_origin(headers)) return Verdict::CrossOrigin;
  auto live = store.touch(*id, now_ms);
  if (!live) return Verdict::Expired;
  if (is_read(method)) return Verdict::Ok;
  auto csrf = http::find_header(headers, kCsrfHeader);
  if (!csrf || csrf->size() != live->csrf.size() ||
      !equal_bytes(csrf->data(), live->csrf.data(), csrf->size()))
    return Verdict::BadCsrf;
  return Verdict::Ok;
}

bool came_over_tls(const http::Headers& headers) {
  auto proto = http::find_header(headers, "x-forwarded-proto");
  return proto && iequals(trim(*proto), "https");
}

std::string set_cookie(const Issued& s, int64_t now_ms, bool secure) {
  int64_t max_age = std::max<int64_t>(0, (s.expires_at_ms - now_ms) / 1000);
  return std::string(kCookieName) + "=" + s.id + "; Path=/; Max-Age=" + std::to_string(max_age) +
         "; HttpOnly; SameSite=Strict" + (secure ? "; Secure" : "");
}

std::string clear_cookie(bool secure) {
  return std::string(kCookieName) + "=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict" +
         (secure ? "; Secure" : "");
}

}  // namespace keypool::session
