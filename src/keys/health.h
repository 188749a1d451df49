#pragma once
// Health checks of keys. The HealthMonitor runs on one worker's loop: once a second it asks
// the pool for suspended keys whose probe is due, probes each through that loop's upstream
// client, lifts the suspension of a key whose probe passes, and otherwise doubles the wait
// (health.probe_initial_s up to health.probe_max_s). test_key() is the same probe on
// demand (POST /admin/keys/{id}/test). Every probe result and state change is audited.
#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "keys/probe.h"
#include "state/app.h"

namespace keypool::keys {

class HealthMonitor {
 public:
  // Call on the loop's thread, or before the loop runs.
  HealthMonitor(state::App& app, uv_loop_t* loop, upstream::Client& client);
  HealthMonitor(const HealthMonitor&) = delete;
  HealthMonitor& operator=(const HealthMonitor&) = delete;
  // Closes the timer; on the loop's thread, before the loop stops. The monitor must outlive
  // the loop: probes still running report to it.
  void stop();

 private:
  static constexpr int64_t kTickMs = 1000;
  void tick();
  void probe_key(const pool::ProbeTask& task);
  void settle(const pool::ProbeTask& task, const std::string& service, const ProbeResult& r);

  state::App& app_;
  upstream::Client& client_;
  uv_timer_t timer_;
};

// What test_key found.
struct KeyTest {
  int64_t key_id = 0;
  ProbeResult result;
  bool resumed = false;  // the key was suspended and the passing probe lifted it
};
using KeyTestDone = std::function<void(Result<KeyTest>)>;

// Probes one key now. NotFound for an unknown key; Invalid when its service is unknown or
// has no health_check. A pass lifts a suspension; a failure changes nothing (the report
// says what the upstream answered). `done` runs on the client's loop.
void test_key(state::App& app, upstream::Client& client, int64_t key_id, KeyTestDone done);

// The service's health_check request, or an Invalid error naming why there is none.
Result<const config::ServiceDef*> probe_service(const state::ServiceMap& services, const std::string& service);

}  // namespace keypool::keys
