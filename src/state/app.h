#pragma once
// App: what every worker's handlers share, built once by main. Each member guards itself
// (pool and token registry take short locks; the store is reached only through its thread).
#include <memory>

#include "auth/auth.h"
#include "base/clock.h"
#include "config/config.h"
#include "pool/pool.h"
#include "session/session.h"
#include "state/limits.h"
#include "state/recorder.h"
#include "state/services.h"
#include "store/store_thread.h"
#include "telemetry/metrics.h"

namespace keypool::state {

struct App {
  App(const config::Config& c, Clock& clk, store::StoreThread& st)
      : cfg(c),
        admin(c.admin_token.view()),
        clock(clk),
        pool(clk),
        store(st),
        recorder(st),
        sessions(session::Limits{c.ui.session_idle_s * 1000, c.ui.session_max_s * 1000}) {}
  const config::Config& cfg;
  auth::AdminToken admin;
  Clock& clock;
  pool::Pool pool;
  auth::TokenRegistry tokens;
  ServiceCatalog services;
  store::StoreThread& store;
  Recorder recorder;
  telemetry::Metrics metrics;
  TokenLimits token_limits;
  StormDetector storms;
  session::Store sessions;  // the console's logins (memory only, this process only)
  SuspensionGuard suspensions;
};

}  // namespace keypool::state
