#include "admin/endpoints.h"

#include <algorithm>
#include <cstring>
#include <string_view>

#include "auth/auth.h"
#include "server/timer.h"
#include "session/session.h"
#include "state/gauges.h"

namespace keypool::admin {
namespace {

using router::RouteKind;

constexpr int64_t kWaitPollMs = 25;  // GET /key waiting for a key under the tier's max_wait_ms

enum class Id { None, Required };

struct Endpoint {
  std::string_view resource;
  Id id;
  std::string_view action;
  std::string_view method;
  void (*fn)(Call&);
};

// The whole admin API at a glance.
constexpr Endpoint kEndpoints[] = {
    {"tiers", Id::None, "", "POST", tiers_create},
    {"tiers", Id::None, "", "GET", tiers_list},
    {"tiers", Id::Required, "", "DELETE", tiers_delete},
    {"tiers", Id::Required, "", "PATCH", tiers_patch},
    {"keys", Id::None, "", "POST", keys_create},
    {"keys", Id::None, "", "GET", keys_list},
    {"keys", Id::Required, "", "DELETE", keys_delete},
    {"keys", Id::Required, "", "PATCH", keys_patch},
    {"keys", Id::Required, "rotate", "POST", keys_rotate},
    {"keys", Id::Required, "test", "POST", keys_test},
    {"tokens", Id::None, "", "POST", tokens_create},
    {"tokens", Id::None, "", "GET", tokens_list},
    {"tokens", Id::Required, "", "DELETE", tokens_revoke},
    {"tokens", Id::Required, "", "PATCH", tokens_patch},
    {"tokens", Id::Required, "rotate", "POST", tokens_rotate},
    {"services", Id::None, "", "POST", services_create},
    {"services", Id::None, "", "GET", services_list},
    {"services", Id::Required, "", "DELETE", services_delete},
    {"health", Id::None, "", "GET", nullptr},  // answered below: needs no store
    {"audit", Id::None, "", "GET", audit_query},
    {"stats", Id::None, "", "GET", stats_history},
};

Reply method_not_allowed(const std::string& method, const std::string& allow) {
  nlohmann::json err = {{"code", "method_not_allowed"},
                        {"message", method + " is not allowed here; allowed: " + allow}};
  return Reply{405, {{"error", err}}, {{"Allow", allow}}};
}

void admin_health(Call& c) {
  auto& app = c.app();
  c.reply(200, state::health_json(app));
}

// Appends s as a JSON string when it is printable ASCII with nothing to escape but quotes
// and backslashes (every real API key and most names); false otherwise.
bool append_plain_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c >= 0x7F) return false;
    if (c == '"' || c == '\\') out += '\\';
    out += ch;
  }
  out += '"';
  return true;
}

// GET /key's answer, written directly: it is built on every hand-out, and a JSON document
// per answer cost more than the rest of the request. Anything unusual in the strings goes
// through the JSON library instead, which escapes and replaces invalid UTF-8.
std::string key_json(const pool::Lease& lease) {
  std::string out;
  out.reserve(64 + lease.key_name.size() + lease.value->view().size() + lease.tier.size());
  out += "{\"key_id\":";
  out += std::to_string(lease.key_id);
  out += ",\"name\":";
  bool plain = append_plain_json_string(out, lease.key_name);
  out += ",\"value\":";
  plain = plain && append_plain_json_string(out, lease.value->view());
  out += ",\"tier\":";
  plain = plain && append_plain_json_string(out, lease.tier);
  out += '}';
  if (plain) return out;
  explicit_bzero(out.data(), out.size());
  nlohmann::json j = {{"key_id", lease.key_id}, {"name", lease.key_name},
                      {"value", std::string(lease.value->view())}, {"tier", lease.tier}};
  std::string dumped = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  auto& v = j["value"].get_ref<std::string&>();
  explicit_bzero(v.data(), v.size());
  return dumped;
}

// Hands out a key, or (tier max_wait_ms) polls until one frees up or the wait is over.
void lease_for_get_key(std::shared_ptr<Call> c, pool::Query q, int64_t token_id, int64_t deadline_ms) {
  auto& app = c->app();
  auto lease = app.pool.lease(q);
  if (!lease) {
    int64_t now = app.clock.now_ms();
    if (lease.error().code == ErrorCode::RateLimited && now + kWaitPollMs <= deadline_ms) {
      std::weak_ptr<Call> weak = c;
      server::run_after(c->loop(), kWaitPollMs, [weak, q, token_id, deadline_ms] {
        if (auto self = weak.lock(); self && !self->answered()) lease_for_get_key(self, q, token_id, deadline_ms);
      });
      return;
    }
    if (lease.error().code == ErrorCode::RateLimited) app.metrics.rate_limited("key");
    return c->fail(lease.error());
  }
  // The caller uses the key on its own: no in-flight slot is held for it.
  app.pool.release(*lease);
  c->note_key(lease->key_id);
  int64_t now = app.clock.now_ms();
  app.recorder.handout(token_id, lease->key_id, q.feature, lease->tier, now);
  app.recorder.usage(store::UsageDelta{lease->key_id, token_id, 1, 0, 0, 0, 0, now, ""});
  c->reply_json(200, key_json(*lease));
}

bool may_use(const auth::TokenInfo* tok, const std::string& service) {
  return !tok || tok->services.empty() ||
         std::find(tok->services.begin(), tok->services.end(), service) != tok->services.end();
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

// Which keys a GET /key may hand out: ?service=S names the service (its feature is the
// budget); ?feature=F names the one service whose feature is F, among those the caller may
// use. A key tagged with a service serves only that service; a key tagged with none serves
// any feature of its tier (so a feature that belongs to no service is served only by them).
Result<pool::Query> key_scope(Call& c, const auth::TokenInfo* tok) {
  auto feature = c.query("feature");
  auto service = c.query("service");
  auto services = c.app().services.snapshot();
  pool::Query q;
  if (service) {
    auto it = services->find(*service);
    if (service->empty() || it == services->end())
      return make_error(ErrorCode::NotFound, "no service named '" + *service + "'");
    if (!may_use(tok, *service)) return make_error(ErrorCode::Forbidden, "this token may not use service '" + *service + "'");
    if (feature && *feature != it->second.feature)
      return make_error(ErrorCode::BadRequest, "service '" + *service + "' is budgeted as feature '" +
                                                   it->second.feature + "', not '" + *feature + "'");
    q.feature = it->second.feature;
    q.service = *service;
    q.or_untagged = true;
    return q;
  }
  if (!feature || feature->empty())
    return make_error(ErrorCode::BadRequest, "query parameter 'service' or 'feature' is required");
  q.feature = *feature;
  std::vector<std::string> declaring, allowed;
  for (const auto& [name, def] : *services) {
    if (def.feature != *feature) continue;
    declaring.push_back(name);
    if (may_use(tok, name)) allowed.push_back(name);
  }
  if (allowed.size() > 1)
    return make_error(ErrorCode::BadRequest, "feature '" + *feature + "' is ambiguous: services " + joined(allowed) +
                                                 " all use it; name one with ?service=");
  if (allowed.size() == 1) {
    q.service = allowed.front();
    q.or_untagged = true;
    return q;
  }
  if (!declaring.empty())
    return make_error(ErrorCode::Forbidden, "this token may not use the service of feature '" + *feature + "' (" +
                                                joined(declaring) + ")");
  if (tok && !tok->services.empty())
    return make_error(ErrorCode::Forbidden, "feature '" + *feature +
                                                "' belongs to no service, and this token is limited to services " +
                                                joined(tok->services));
  q.service = "";  // keys tagged with no service only
  return q;
}

// GET /key?service=S or ?feature=F: a decrypted key for callers that do not proxy. Admin
// token: any tier covering the feature; team token: its own tier, its services, and only
// when the token has allow_key_handout.
void get_key(Call& c) {
  auto& app = c.app();
  auto cred = auth::extract_credential(c.head().headers, c.route().query);
  if (!cred) return c.fail(make_error(ErrorCode::Unauthorized, "missing credentials"));
  // A credential in the URL lands in shell histories and access logs; this endpoint hands
  // out keys, so it takes one from a header only.
  if (cred->source() == auth::CredentialSource::QueryApiKey)
    return c.fail(make_error(ErrorCode::Unauthorized,
                             "GET /key does not accept a token in the URL; send it in the Authorization header"));
  int64_t token_id = 0;
  int64_t max_wait = 0;
  std::shared_ptr<const auth::TokenInfo> tok;
  // The hand-out is audited by token id (0: admin) in lease_for_get_key.
  if (!app.admin.matches(cred->value())) {
    auto found = app.tokens.authenticate(cred->value(), app.clock.now_ms());
    if (!found) return c.fail(found.error());
    tok = std::move(found.value());
    if (!tok->allow_key_handout)
      return c.fail(make_error(ErrorCode::Forbidden,
                               "this token is proxy-only: it may not take keys out (allow_key_handout is false)"));
  }
  auto q = key_scope(c, tok.get());
  if (!q) return c.fail(q.error());
  if (tok) {
    q->tier = tok->tier;
    token_id = tok->id;
    max_wait = app.pool.tier_max_wait_ms(tok->tier).value_or(0);
    if (int64_t wait = app.token_limits.acquire(token_id, tok->rpm, app.clock.now_ms()); wait > 0) {
      app.metrics.rate_limited("token");
      Error e = make_error(ErrorCode::RateLimited, "this token's rpm limit is spent");
      e.retry_after_s = (wait + 999) / 1000;
      return c.fail(e);
    }
  }
  if (!app.pool.feature_known(q->feature))
    return c.fail(make_error(ErrorCode::NotFound, "unknown feature '" + q->feature + "'"));
  lease_for_get_key(c.shared_from_this(), std::move(*q), token_id, app.clock.now_ms() + max_wait);
}

void metrics(Call& c) {
  auto& app = c.app();
  std::string text = app.metrics.render(state::gauge_lines(app));
  // Prometheus text is not JSON: send it through a plain reply.
  c.reply_text(200, "text/plain; version=0.0.4; charset=utf-8", std::move(text));
}

// No bearer token: the console's session cookie may stand in for it (session room).
bool authorized_by_session(Call& c) {
  auto& app = c.app();
  switch (session::check(app.sessions, c.head().headers, c.head().method, app.clock.now_ms())) {
    case session::Verdict::Ok: return true;
    case session::Verdict::NoSession:
      c.fail(make_error(ErrorCode::Unauthorized, "missing admin token (Authorization: Bearer ...)"));
      return false;
    case session::Verdict::Expired:
      c.fail(make_error(ErrorCode::Unauthorized, "session expired or logged out; log in again"));
      return false;
    case session::Verdict::CrossOrigin:
      c.fail(make_error(ErrorCode::Forbidden, "cross-origin request refused"));
      return false;
    case session::Verdict::BadCsrf:
      c.fail(make_error(ErrorCode::Forbidden, "missing or wrong X-CSRF-Token for this session"));
      return false;
  }
  return false;
}

bool authorized_admin(Call& c) {
  auto cred = auth::extract_credential(c.head().headers, "");
  if (!cred || cred->source() != auth::CredentialSource::AuthorizationBearer) return authorized_by_session(c);
  if (!c.app().admin.matches(cred->value())) {
    c.fail(make_error(ErrorCode::Unauthorized, "invalid admin token"));
    return false;
  }
  return true;
}

void dispatch_admin(Call& c) {
  const auto& r = c.route();
  Id id = r.id.empty() ? Id::None : Id::Required;
  std::string allow;
  for (const auto& e : kEndpoints) {
    if (e.resource != r.resource || e.id != id || e.action != r.action) continue;
    if (e.method == c.head().method) {
      if (e.fn) e.fn(c);
      else admin_health(c);
      return;
    }
    if (!allow.empty()) allow += ", ";
    allow += e.method;
  }
  if (allow.empty()) return c.fail(make_error(ErrorCode::NotFound, "no such admin endpoint: " + r.path));
  c.reply(method_not_allowed(c.head().method, allow));
}

}  // namespace

void dispatch(Call& c) {
  const auto& r = c.route();
  const auto& method = c.head().method;
  switch (r.kind) {
    case RouteKind::Health:
      if (method != "GET" && method != "HEAD")
        return c.reply(method_not_allowed(method, "GET"));
      return c.reply(200, {{"status", "ok"}});
    case RouteKind::GetKey:
      if (method != "GET")
        return c.reply(method_not_allowed(method, "GET"));
      return get_key(c);
    case RouteKind::Metrics:
      if (method != "GET")
        return c.reply(method_not_allowed(method, "GET"));
      if (!authorized_admin(c)) return;
      return metrics(c);
    case RouteKind::Admin:
      if (!authorized_admin(c)) return;
      return dispatch_admin(c);
    case RouteKind::Proxy:
    case RouteKind::Ui:
      break;  // never routed here
  }
  c.fail(make_error(ErrorCode::NotFound, "not found"));
}

pool::KeyInfo key_info(const store::KeyRow& row) {
  pool::KeyInfo k;
  k.id = row.id;
  k.name = row.name;
  k.tier = row.tier;
  k.service = row.service;
  k.enabled = row.enabled;
  k.disabled_reason = row.disabled_reason;
  k.expires_at_ms = row.expires_at;
  k.max_concurrent = row.max_concurrent;
  return k;
}

pool::TierPolicy tier_policy(const store::TierRow& row) {
  return pool::TierPolicy{row.name, row.features, row.max_wait_ms};
}

store::AuditRow audit_row(Call& c, std::string action, std::string target, nlohmann::json details) {
  store::AuditRow row;
  row.at = c.app().clock.now_ms();
  row.actor = "admin";  // every admin endpoint needs the admin token
  row.action = std::move(action);
  row.target = std::move(target);
  row.details_json = details.is_null() ? "{}" : details.dump();
  return row;
}

// GET /admin/stats: the Overview's last hour, per minute, and the since-start totals of the
// same four series (see telemetry::History for which /metrics counters they mirror).
void stats_history(Call& c) {
  auto& m = c.app().metrics;
  int64_t now = c.app().clock.now_ms();
  nlohmann::json minutes = nlohmann::json::array();
  for (const auto& minute : m.history(now))
    minutes.push_back({{"at_ms", minute.start_ms}, {"requests", minute.counts[0]}, {"errors", minute.counts[1]},
                       {"rate_limited", minute.counts[2]}, {"failovers", minute.counts[3]}});
  auto t = m.history_totals();
  c.reply(200, {{"now_ms", now},
                {"minutes", minutes},
                {"totals", {{"requests", t[0]}, {"errors", t[1]}, {"rate_limited", t[2]}, {"failovers", t[3]}}}});
}

void audit_query(Call& c) {
  int64_t limit = 100;
  if (auto l = c.query("limit")) {
    auto v = parse_uint(*l);
    if (!v || *v < 1 || *v > 10000)
      return c.fail(make_error(ErrorCode::BadRequest, "query parameter 'limit' must be 1..10000"));
    limit = *v;
  }
  std::string action = c.query("action").value_or("");
  int64_t since = 0;
  if (auto s = c.query("since")) {
    auto v = parse_uint(*s);
    if (!v) return c.fail(make_error(ErrorCode::BadRequest, "query parameter 'since' must be Unix seconds"));
    since = *v * 1000;
  }
  // Rows gathered on the loops are still in memory: write them first so the answer is complete.
  c.app().recorder.flush();
  c.in_store([limit, action, since](store::Store& s) -> Result<Reply> {
    auto rows = s.query_audit(limit, action, since);
    if (!rows) return rows.error();
    nlohmann::json out = nlohmann::json::array();
    for (const auto& r : *rows) {
      auto details = nlohmann::json::parse(r.details_json, nullptr, false);
      out.push_back({{"id", r.id}, {"at", iso_time(r.at)}, {"at_ms", r.at}, {"actor", r.actor},
                     {"action", r.action}, {"target", r.target},
                     {"details", details.is_discarded() ? nlohmann::json::object() : details}});
    }
    return Reply{200, {{"audit", out}}, {}};
  });
}

}  // namespace keypool::admin
