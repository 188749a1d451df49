#include "keys/health.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "keys/report.h"
#include "telemetry/log.h"
#include "upstream/client.h"

namespace keypool::keys {
namespace {

std::string probe_details(const std::string& service, const ProbeResult& r, const char* trigger) {
  return nlohmann::json{{"service", service},
                        {"result", probe_verdict_name(r.verdict)},
                        {"status", r.status},
                        {"outcome", r.outcome},
                        {"trigger", trigger}}
      .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

Result<const config::ServiceDef*> probe_service(const state::ServiceMap& services, const std::string& service) {
  if (service.empty()) return make_error(ErrorCode::Invalid, "the key has no service to probe");
  auto it = services.find(service);
  if (it == services.end()) return make_error(ErrorCode::Invalid, "no service named '" + service + "'");
  if (!it->second.health_check)
    return make_error(ErrorCode::Invalid, "service '" + service + "' has no health_check");
  return &it->second;
}

HealthMonitor::HealthMonitor(state::App& app, uv_loop_t* loop, upstream::Client& client)
    : app_(app), client_(client) {
  uv_timer_init(loop, &timer_);
  timer_.data = this;
  uv_timer_start(&timer_, [](uv_timer_t* t) { static_cast<HealthMonitor*>(t->data)->tick(); }, kTickMs, kTickMs);
}

void HealthMonitor::stop() {
  if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&timer_))) uv_close(reinterpret_cast<uv_handle_t*>(&timer_), nullptr);
}

void HealthMonitor::tick() {
  for (const auto& task : app_.pool.take_due_probes(app_.clock.now_ms())) probe_key(task);
}

void HealthMonitor::probe_key(const pool::ProbeTask& task) {
  auto services = app_.services.snapshot();
  auto svc = probe_service(*services, task.service);
  if (!svc) {
    // Nothing to probe with: an admin re-enables the key (PATCH enabled: true). Looked at
    // again after the longest wait, in case a health_check is added meanwhile.
    int64_t wait = app_.cfg.health.probe_max_s * 1000;
    app_.pool.probe_failed(task.key_id, app_.clock.now_ms() + wait, task.probe_backoff_ms);
    log::debug("suspended key cannot be probed", {{"key_id", task.key_id}, {"why", svc.error().message}});
    return;
  }
  std::string service = task.service;
  probe(client_, **svc, task.value, [this, task, service](const ProbeResult& r) { settle(task, service, r); });
}

void HealthMonitor::settle(const pool::ProbeTask& task, const std::string& service, const ProbeResult& r) {
  int64_t now = app_.clock.now_ms();
  app_.metrics.probe(service, probe_verdict_name(r.verdict));
  app_.recorder.audit({0, now, "system", "key.probe", std::to_string(task.key_id), probe_details(service, r, "schedule")});
  if (r.verdict == ProbeVerdict::Pass) {
    lift_suspension(app_, task.key_id, "system", "health probe passed");
    return;
  }
  int64_t max_ms = std::max(app_.cfg.health.probe_max_s, app_.cfg.health.probe_initial_s) * 1000;
  int64_t next = std::min(std::max<int64_t>(task.probe_backoff_ms, 1000) * 2, max_ms);
  app_.pool.probe_failed(task.key_id, now + next, next);
  log::info("suspended key still failing its probe",
            {{"key_id", task.key_id}, {"service", service}, {"status", r.status}, {"outcome", r.outcome},
             {"next_probe_s", next / 1000}});
}

void test_key(state::App& app, upstream::Client& client, int64_t key_id, KeyTestDone done) {
  auto task = app.pool.probe_task(key_id);
  if (!task) return done(make_error(ErrorCode::NotFound, "no key with id '" + std::to_string(key_id) + "'"));
  auto services = app.services.snapshot();
  auto svc = probe_service(*services, task->service);
  if (!svc) return done(svc.error());
  std::string service = task->service;
  probe(client, **svc, task->value, [&app, key_id, service, done](const ProbeResult& r) {
    int64_t now = app.clock.now_ms();
    app.metrics.probe(service, probe_verdict_name(r.verdict));
    app.recorder.audit({0, now, "admin", "key.probe", std::to_string(key_id), probe_details(service, r, "test")});
    KeyTest t{key_id, r, false};
    if (r.verdict == ProbeVerdict::Pass) t.resumed = lift_suspension(app, key_id, "admin", "key test passed");
    done(std::move(t));
  });
}

}  // namespace keypool::keys
