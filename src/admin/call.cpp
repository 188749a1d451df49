#include "admin/call.h"

#include <uv.h>

#include "server/status.h"

namespace keypool::admin {

Call::Call(Env env, router::Route route, http::RequestHead&& head, server::ResponseSink& sink)
    : env_(env), route_(std::move(route)), head_(std::move(head)), sink_(&sink), started_ns_(uv_hrtime()) {
  // Refuse an oversized body up front when its length is declared.
  auto limit = static_cast<uint64_t>(env_.app.cfg.limits.max_admin_body_bytes);
  if (head_.content_length && *head_.content_length > limit)
    fail(make_error(ErrorCode::PayloadTooLarge,
                    "request body exceeds " + std::to_string(limit) + " bytes"));
}

void Call::on_body(std::string_view data) {
  if (answered_) return;
  auto limit = static_cast<size_t>(env_.app.cfg.limits.max_admin_body_bytes);
  if (body_.size() + data.size() > limit) {
    fail(make_error(ErrorCode::PayloadTooLarge, "request body exceeds " + std::to_string(limit) + " bytes"));
    return;
  }
  body_.append(data);
}

void Call::on_end() {
  if (!answered_) dispatch();
}

void Call::dispatch() { admin::dispatch(*this); }

void Call::record(int status) {
  using Route = telemetry::Metrics::Route;
  Route kind = Route::Admin;
  switch (route_.kind) {
    case router::RouteKind::Health: kind = Route::Health; break;
    case router::RouteKind::GetKey: kind = Route::Key; break;
    case router::RouteKind::Metrics: kind = Route::Metrics; break;
    default: break;
  }
  env_.app.metrics.request("", kind, status, static_cast<double>(uv_hrtime() - started_ns_) / 1e9);
}

std::optional<std::string> Call::query(std::string_view name) const {
  return router::query_param(route_.query, name);
}

std::optional<nlohmann::json> Call::json_object() {
  if (body_.empty()) {
    fail(make_error(ErrorCode::BadRequest, "request body must be a JSON object"));
    return std::nullopt;
  }
  auto j = nlohmann::json::parse(body_, nullptr, false);
  if (j.is_discarded()) {
    fail(make_error(ErrorCode::BadRequest, "malformed JSON body"));
    return std::nullopt;
  }
  if (!j.is_object()) {
    fail(make_error(ErrorCode::BadRequest, "request body must be a JSON object"));
    return std::nullopt;
  }
  return j;
}

void Call::reply(Reply r) {
  if (answered_ || !sink_) return;
  reply_json(r.status,
             r.body.is_null() ? std::string() : r.body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
             std::move(r.headers));
}

void Call::reply_json(int status, std::string body, http::Headers extra) {
  if (answered_ || !sink_) return;
  answered_ = true;
  record(status);
  static const http::Headers kJsonHeaders{{"Content-Type", "application/json"}, {"Cache-Control", "no-store"}};
  if (!extra.empty()) extra.insert(extra.end(), kJsonHeaders.begin(), kJsonHeaders.end());
  const http::Headers& headers = extra.empty() ? kJsonHeaders : extra;
  if (body.empty()) {
    sink_->send_head(status, headers, server::BodyMode::Empty, 0);
  } else {
    sink_->send_head(status, headers, server::BodyMode::ContentLength, body.size());
    sink_->send_body(body);
  }
  // The body may hold a key value (GET /key): wipe our copy.
  explicit_bzero(body.data(), body.size());
  sink_->end();
}

void Call::reply_text(int status, std::string content_type, std::string text) {
  if (answered_ || !sink_) return;
  answered_ = true;
  record(status);
  sink_->send_head(status, {{"Content-Type", std::move(content_type)}}, server::BodyMode::ContentLength,
                   text.size());
  sink_->send_body(text);
  sink_->end();
}

void Call::fail(const Error& e) {
  if (answered_ || !sink_) return;
  answered_ = true;
  int status = server::status_for(e.code);
  record(status);
  std::string body = server::error_body(server::code_name(e.code), e.message, e.retry_after_s);
  http::Headers headers{{"Content-Type", "application/json"}, {"Cache-Control", "no-store"}};
  if (e.code == ErrorCode::RateLimited && e.retry_after_s > 0)
    headers.push_back({"Retry-After", std::to_string(e.retry_after_s)});
  if (e.code == ErrorCode::Unauthorized) headers.push_back({"WWW-Authenticate", "Bearer"});
  sink_->send_head(status, headers, server::BodyMode::ContentLength, body.size());
  sink_->send_body(body);
  sink_->end();
}

void Call::in_store(std::function<Result<Reply>(store::Store&)> job) {
  std::weak_ptr<Call> weak = weak_from_this();
  server::LoopPost* post = &env_.post;
  env_.app.store.post([weak, post, job = std::move(job)](store::Store& s) {
    auto result = std::make_shared<Result<Reply>>(job(s));
    post->post([weak, result] {
      auto self = weak.lock();
      if (!self) return;  // the client went away; the change is committed all the same
      if (result->ok()) self->reply(std::move(result->value()));
      else self->fail(result->error());
    });
  });
}

std::shared_ptr<server::RequestHandler> make_handler(Env env, router::Route route,
                                                     http::RequestHead&& head,
                                                     server::ResponseSink& sink) {
  return std::make_shared<Call>(env, std::move(route), std::move(head), sink);
}

}  // namespace keypool::admin
