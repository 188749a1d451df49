#include <uv.h>

#include <nlohmann/json.hpp>

#include "base/secret.h"
#include "server/status.h"
#include "session/session.h"
#include "ui/ui.h"

namespace keypool::ui {
namespace {

constexpr size_t kMaxBody = 4096;  // a login body is one token

// One /ui request: collects the (small) body, then answers from memory.
class UiCall final : public server::RequestHandler {
 public:
  UiCall(state::App& app, router::Route route, http::RequestHead&& head, server::ResponseSink& sink)
      : app_(app),
        route_(std::move(route)),
        head_(std::move(head)),
        sink_(&sink),
        started_ns_(uv_hrtime()) {}
  ~UiCall() override {
    explicit_bzero(body_.data(), body_.size());
  }  // a login body holds the admin token

  void on_body(std::string_view data) override {
    if (body_.size() + data.size() > kMaxBody) {
      too_big_ = true;
      return;
    }
    body_.append(data);
  }
  void on_end() override;
  void on_abort() override { sink_ = nullptr; }

 private:
  void answer(Answer a);
  Answer error(int status, std::string_view code, std::string_view message);
  Answer json(int status, const nlohmann::json& body, http::Headers extra = {});
  Answer login();
  Answer logout();
  Answer current();
  Answer method_not_allowed(std::string_view allow);

  state::App& app_;
  router::Route route_;
  http::RequestHead head_;
  server::ResponseSink* sink_;
  std::string body_;
  bool too_big_ = false;
  uint64_t started_ns_;
};

void UiCall::on_end() {
  if (!sink_) return;
  const std::string& path = route_.path;
  const std::string& method = head_.method;
  const bool read = method == "GET" || method == "HEAD";
  if (path == "/ui") {
    Answer a{308, security_headers(), {}};
    a.headers.push_back({"Location", "/ui/"});
    return answer(std::move(a));
  }
  std::string_view rest = std::string_view(path).substr(4);  // after "/ui/"
  if (rest == "login") return answer(method == "POST" ? login() : method_not_allowed("POST"));
  if (rest == "logout") return answer(method == "POST" ? logout() : method_not_allowed("POST"));
  if (rest == "session") return answer(read ? current() : method_not_allowed("GET"));
  if (!read) return answer(method_not_allowed("GET, HEAD"));
  answer(serve_asset(embedded(), rest, head_.headers));
}

void UiCall::answer(Answer a) {
  if (!sink_) return;
  app_.metrics.request("", telemetry::Metrics::Route::Admin, a.status,
                       static_cast<double>(uv_hrtime() - started_ns_) / 1e9);
  server::BodyMode mode =
      a.status == 304 ? server::BodyMode::Empty : server::BodyMode::ContentLength;
  sink_->send_head(a.status, a.headers, mode, a.body.size());
  if (mode == server::BodyMode::ContentLength && !a.body.empty()) sink_->send_body(a.body);
  sink_->end();
  sink_ = nullptr;
}

Answer UiCall::json(int status, const nlohmann::json& body, http::Headers extra) {
  Answer a{status, security_headers(), body.dump()};
  a.headers.insert(a.headers.end(), extra.begin(), extra.end());
  a.headers.push_back({"Content-Type", "application/json"});
  a.headers.push_back({"Cache-Control", "no-store"});
  return a;
}

Answer UiCall::error(int status, std::string_view code, std::string_view message) {
  Answer a{status, security_headers(), server::error_body(code, message)};
  a.headers.push_back({"Content-Type", "application/json"});
  a.headers.push_back({"Cache-Control", "no-store"});
  return a;
}

Answer UiCall::method_not_allowed(std::string_view allow) {
  Answer a = error(405, "method_not_allowed",
                   head_.method + " is not allowed here; allowed: " + std::string(allow));
  a.headers.push_back({"Allow", std::string(allow)});
  return a;
}

// The admin token for a session. Refused from another origin: a page elsewhere must not be
// able to log this browser in (login CSRF) any more than use its session.
Answer UiCall::login() {
  if (!session::same_origin(head_.headers))
    return error(403, "cross_origin", "login from another origin is refused");
  if (too_big_) return error(413, "payload_too_large", "a login body is {\"token\": \"...\"}");
  auto j = nlohmann::json::parse(body_, nullptr, false);
  if (!j.is_object() || !j.contains("token") || !j["token"].is_string())
    return error(400, "bad_request", "body must be {\"token\": \"<admin token>\"}");
  std::string& token = j["token"].get_ref<std::string&>();
  const bool ok = app_.admin.matches(token);  // constant time: compares digests
  explicit_bzero(token.data(), token.size());
  if (!ok) return error(401, "unauthorized", "invalid admin token");
  int64_t now = app_.clock.now_ms();
  session::Issued s = app_.sessions.open(now);
  const bool tls = session::came_over_tls(head_.headers);
  return json(200, {{"csrf", s.csrf}, {"expires_at_ms", s.expires_at_ms}},
              {{"Set-Cookie", session::set_cookie(s, now, tls)}});
}

Answer UiCall::logout() {
  if (!session::same_origin(head_.headers))
    return error(403, "cross_origin", "logout from another origin is refused");
  if (auto id = session::cookie(head_.headers, session::kCookieName)) app_.sessions.close(*id);
  return json(200, {{"logged_out", true}},
              {{"Set-Cookie", session::clear_cookie(session::came_over_tls(head_.headers))}});
}

// Lets a reloaded page pick its session up again: the CSRF token is readable only by this
// origin's script (the answer carries no CORS headers, and other origins get 403).
Answer UiCall::current() {
  if (!session::same_origin(head_.headers))
    return error(403, "cross_origin", "cross-origin request refused");
  auto id = session::cookie(head_.headers, session::kCookieName);
  auto live = id ? app_.sessions.touch(*id, app_.clock.now_ms()) : std::nullopt;
  if (!live) return error(401, "unauthorized", "no live session; log in");
  return json(200, {{"csrf", live->csrf}, {"expires_at_ms", live->expires_at_ms}});
}

}  // namespace

std::shared_ptr<server::RequestHandler> make_handler(state::App& app, router::Route route,
                                                     http::RequestHead&& head,
                                                     server::ResponseSink& sink) {
  return std::make_shared<UiCall>(app, std::move(route), std::move(head), sink);
}

}  // namespace keypool::ui
