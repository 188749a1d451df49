#include "dispatch/dispatch.h"

#include "admin/admin.h"
#include "proxy/proxy.h"
#include "router/router.h"
#include "server/status.h"
#include "state/gauges.h"
#include "ui/ui.h"

namespace keypool::dispatch {
namespace {

// Answers a request that no handler will own (bad target, refused method).
class Refusal final : public server::RequestHandler {
 public:
  Refusal(server::ResponseSink& sink, int status, std::string_view code, std::string_view message,
          http::Headers extra = {}) {
    std::string body = server::error_body(code, message);
    extra.push_back({"Content-Type", "application/json"});
    sink.send_head(status, extra, server::BodyMode::ContentLength, body.size());
    sink.send_body(body);
    sink.end();
  }
  struct Answered {};
  explicit Refusal(Answered) {}  // the caller already answered through the sink
  void on_body(std::string_view) override {}
  void on_end() override {}
  void on_abort() override {}
};

class Factory final : public server::HandlerFactory {
 public:
  Factory(state::App& app, server::Worker& worker, upstream::Client* client)
      : app_(app), worker_(worker), client_(client) {}

  std::shared_ptr<server::RequestHandler> on_request(http::RequestHead& head,
                                                     server::ResponseSink& sink) override {
    // CONNECT would make keypool a tunnel to anywhere; TRACE echoes credentials back.
    if (head.method == "CONNECT" || head.method == "TRACE")
      return std::make_shared<Refusal>(sink, 405, "method_not_allowed", head.method + " is not supported");
    auto route = router::route(head.method, head.target);
    if (!route) {
      const auto& e = route.error();
      const int status = server::status_for(e.code);
      // A target no client should send (dot segments, escaped separators): like a
      // malformed request, answered and the connection closed. A 404 keeps it.
      if (status == 400) sink.close_after_response();
      return std::make_shared<Refusal>(sink, status, server::code_name(e.code), e.message);
    }
    if (route->kind == router::RouteKind::Proxy) {
      sink.note_service(route->service);
      return proxy::make_handler(proxy::Env{app_, worker_, client_}, std::move(route.value()), std::move(head), sink);
    }
    // A WebSocket offer to the admin API is ignored (RFC 9110 §7.8): the request is answered
    // over HTTP/1.1, and the connection closes after it (see server::Connection).
    head.upgrade = false;
    if (route->kind == router::RouteKind::Ui) return ui::make_handler(app_, std::move(route.value()), std::move(head), sink);
    return admin::make_handler(admin::Env{app_, worker_.post(), worker_.loop(), client_}, std::move(route.value()), std::move(head),
                               sink);
  }

 private:
  state::App& app_;
  server::Worker& worker_;
  upstream::Client* client_;
};

class MetricsFactory final : public server::HandlerFactory {
 public:
  explicit MetricsFactory(state::App& app) : app_(app) {}
  std::shared_ptr<server::RequestHandler> on_request(http::RequestHead& head,
                                                     server::ResponseSink& sink) override {
    auto route = router::route(head.method, head.target);
    if (!route || (route->kind != router::RouteKind::Metrics && route->kind != router::RouteKind::Health))
      return std::make_shared<Refusal>(sink, 404, "not_found", "this listener serves /metrics and /health only");
    if (head.method != "GET")
      return std::make_shared<Refusal>(sink, 405, "method_not_allowed", "use GET", http::Headers{{"Allow", "GET"}});
    std::string body = route->kind == router::RouteKind::Health
                           ? std::string("{\"status\":\"ok\"}")
                           : app_.metrics.render(state::gauge_lines(app_));
    const char* type = route->kind == router::RouteKind::Health ? "application/json"
                                                                 : "text/plain; version=0.0.4; charset=utf-8";
    sink.send_head(200, {{"Content-Type", type}}, server::BodyMode::ContentLength, body.size());
    sink.send_body(body);
    sink.end();
    return std::make_shared<Refusal>(Refusal::Answered{});
  }

 private:
  state::App& app_;
};

}  // namespace

std::unique_ptr<server::HandlerFactory> make_metrics_factory(state::App& app, server::Worker&) {
  return std::make_unique<MetricsFactory>(app);
}

std::unique_ptr<server::HandlerFactory> make_factory(state::App& app, server::Worker& worker,
                                                     upstream::Client* client) {
  return std::make_unique<Factory>(app, worker, client);
}

}  // namespace keypool::dispatch
