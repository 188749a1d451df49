// keypool: wiring only. config -> store -> shared state -> workers -> wait for a signal.
#include <sys/prctl.h>
#include <sys/stat.h>
#include <uv.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cli/cli.h"
#include "config/config.h"
#include "config/services.h"
#include "crypto/crypto.h"
#include "dispatch/dispatch.h"
#include "provision/provision.h"
#include "keys/health.h"
#include "server/worker.h"
#include "state/app.h"
#include "state/bootstrap.h"
#include "state/gauges.h"
#include "store/store.h"
#include "store/store_thread.h"
#include "telemetry/log.h"
#include "upstream/client.h"

using namespace keypool;

namespace {

int fail(int code, const std::string& message) {
  std::fprintf(stderr, "keypool: %s\n", message.c_str());
  return code;
}

upstream::ClientOptions client_options(const config::Config& cfg) {
  upstream::ClientOptions o;
  o.connect_timeout_ms = cfg.timeouts.upstream_connect_ms;
  o.head_timeout_ms = cfg.timeouts.upstream_head_ms;
  o.idle_timeout_ms = cfg.timeouts.upstream_idle_ms;
  o.pool_idle_ms = cfg.timeouts.upstream_pool_idle_ms;
  o.dns_cache_ms = cfg.timeouts.upstream_dns_cache_ms;
  o.max_idle_per_origin = cfg.proxy.max_idle_per_origin;
  o.max_response_header_bytes = cfg.limits.max_header_bytes;
  o.extra_ca_file = cfg.proxy.extra_ca_file;
  o.write_high_watermark = cfg.proxy.write_high_watermark;
  return o;
}

// Loads services.d. On a reload, a file that is now broken keeps its previous definition:
// a typo made while editing must not take a working service down.
void load_service_files(state::App& app, bool reload) {
  auto loaded = config::load_services_dir(app.cfg.services_dir);
  for (const auto& e : loaded.errors) log::error("service definition refused", {{"error", e}});
  if (reload) {
    auto old = app.services.snapshot();
    for (const auto& [name, def] : *old) {
      if (def.source == "admin") continue;
      bool broken = false;
      for (const auto& e : loaded.errors) broken = broken || e.rfind(def.source + ":", 0) == 0;
      bool present = false;
      for (const auto& d : loaded.services) present = present || d.name == name;
      if (broken && !present) {
        log::warn("keeping the previous definition", {{"service", name}, {"file", def.source}});
        loaded.services.push_back(def);
      }
    }
  }
  log::info("services loaded", {{"dir", app.cfg.services_dir},
                                {"count", static_cast<int64_t>(loaded.services.size())}});
  app.services.set_file_services(std::move(loaded.services));
}

// SIGHUP: services.d again, and the config settings that can change without a restart
// (log level and format). The rest is logged as needing a restart.
void reload(state::App& app, const cli::Options& opts) {
  auto cfg = config::load_config(opts.config_path, opts.config_explicit, [](const char* n) { return std::getenv(n); });
  if (!cfg) {
    log::error("reload: config refused, keeping the running one", {{"error", cfg.error().message}});
  } else {
    log::configure(cfg->log_level, cfg->log_format);
    if (cfg->port != app.cfg.port || cfg->host != app.cfg.host || cfg->workers != app.cfg.workers ||
        cfg->db_path != app.cfg.db_path)
      log::warn("reload: listen address, workers and db_path change only on restart");
  }
  load_service_files(app, true);
  // Re-read from the path given at start, on the store thread.
  if (!app.cfg.bootstrap_file.empty()) provision::reload(app, app.cfg.bootstrap_file);
}

// The main thread's own loop: signals and the once-a-second flush of usage and audit rows.
struct Control {
  state::App& app;
  const cli::Options& opts;
  std::vector<std::unique_ptr<server::Worker>>& workers;
  uv_loop_t loop;
  uv_signal_t sigterm, sigint, sighup;
  uv_timer_t flush_timer, prune_timer;
  bool stopping = false;

  void run() {
    uv_loop_init(&loop);
    for (auto* s : {&sigterm, &sigint, &sighup}) {
      uv_signal_init(&loop, s);
      s->data = this;
    }
    uv_signal_start(&sigterm, on_stop_signal, SIGTERM);
    uv_signal_start(&sigint, on_stop_signal, SIGINT);
    uv_signal_start(&sighup, on_hup, SIGHUP);
    uv_timer_init(&loop, &flush_timer);
    flush_timer.data = this;
    uv_timer_start(&flush_timer, [](uv_timer_t* t) { static_cast<Control*>(t->data)->app.recorder.flush(); },
                   1000, 1000);
    // Audit retention: soon after start, then hourly. The deleting runs on the store thread.
    uv_timer_init(&loop, &prune_timer);
    prune_timer.data = this;
    uv_timer_start(&prune_timer, [](uv_timer_t* t) {
          auto& app = static_cast<Control*>(t->data)->app;
          app.recorder.prune_audit(app.clock.now_ms(), app.cfg.audit_retention_days);
        }, 1000, 3'600'000);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
  }

  static void on_stop_signal(uv_signal_t* s, int signum) {
    auto* self = static_cast<Control*>(s->data);
    if (self->stopping) return;
    self->stopping = true;
    log::info("shutting down", {{"signal", signum}});
    for (auto& w : self->workers) w->request_drain();
    for (auto* h : {&self->sigterm, &self->sigint, &self->sighup})
      uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&self->flush_timer), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&self->prune_timer), nullptr);
  }

  static void on_hup(uv_signal_t* s, int) {
    auto* self = static_cast<Control*>(s->data);
    log::info("SIGHUP: reloading config, services and the bootstrap file");
    reload(self->app, self->opts);
  }
};

int serve(const cli::Options& opts) {
  auto cfg_r = config::load_config(opts.config_path, opts.config_explicit, [](const char* n) { return std::getenv(n); });
  if (!cfg_r) return fail(2, cfg_r.error().message);
  const config::Config& cfg = cfg_r.value();
  log::configure(cfg.log_level, cfg.log_format);
  // Keys live decrypted in memory: keep them out of core dumps.
  if (!cfg.allow_core_dumps) prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

  auto master = crypto::MasterKey::from_hex(cfg.encryption_key_hex.view());
  if (!master) return fail(2, "env: ENCRYPTION_KEY: " + master.error().message);
  std::error_code ec;
  auto parent = std::filesystem::path(cfg.db_path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  auto st = store::Store::open(cfg.db_path, master.value());
  if (!st) return fail(1, st.error().message);
  store::StoreThread store_thread(std::move(st.value()));

  SystemClock clock;
  state::App app(cfg, clock, store_thread);
  load_service_files(app, false);
  Result<void> loaded = Ok{};
  store_thread.post_and_wait([&](store::Store& s) { loaded = state::load_state(app, s); });
  if (!loaded) return fail(1, loaded.error().message);
  if (!cfg.bootstrap_file.empty()) {
    // A sidecar set up from files: a bad file stops start-up (exit 2) before anything listens.
    auto file = config::load_bootstrap(cfg.bootstrap_file, [](const char* n) { return std::getenv(n); });
    if (!file) return fail(2, file.error().message);
    Result<provision::Outcome> applied = provision::Outcome{};
    store_thread.post_and_wait([&](store::Store& s) { applied = provision::apply(*file, s, app); });
    if (!applied) return fail(2, applied.error().message);
  }

  // Workers: each its own loop and listening socket on the same port.
  std::vector<std::unique_ptr<server::Worker>> workers;
  std::vector<std::unique_ptr<upstream::Client>> clients(cfg.workers);
  std::unique_ptr<keys::HealthMonitor> monitor;  // outlives the workers' loops
  int port = cfg.port;
  auto opts_srv = server::ServerOptions::from(cfg);
  for (int i = 0; i < cfg.workers; ++i) {
    std::string err;
    int bound = 0;
    int fd = server::open_listen_socket(cfg.host, port, &bound, &err);
    if (fd < 0) return fail(1, err);
    port = bound;  // port 0: the first worker picks, the others join it
    auto w = std::make_unique<server::Worker>(i, opts_srv);
    auto client = upstream::Client::create(w->loop(), client_options(cfg));
    if (!client) return fail(2, client.error().message);
    clients[i] = std::move(client.value());
    w->set_factory(dispatch::make_factory(app, *w, clients[i].get()));
    upstream::Client* c = clients[i].get();
    // The first worker's loop also probes suspended keys; set up before its thread starts.
    if (i == 0) monitor = std::make_unique<keys::HealthMonitor>(app, w->loop(), *c);
    keys::HealthMonitor* m = i == 0 ? monitor.get() : nullptr;
    w->set_on_stop([c, m] {
      if (m) m->stop();
      c->close_idle();
    });
    workers.push_back(std::move(w));
    workers.back()->start(fd);
  }
  if (!cfg.metrics_listen.empty()) {
    // A listener of its own for the scraper: /metrics without the admin token.
    auto colon = cfg.metrics_listen.rfind(':');
    std::string host = cfg.metrics_listen.substr(0, colon);
    if (host.size() > 1 && host.front() == '[') host = host.substr(1, host.size() - 2);
    int mport = std::stoi(cfg.metrics_listen.substr(colon + 1));
    std::string err;
    int bound = 0;
    int fd = server::open_listen_socket(host, mport, &bound, &err);
    if (fd < 0) return fail(1, "metrics.listen: " + err);
    auto w = std::make_unique<server::Worker>(static_cast<int>(workers.size()), opts_srv);
    w->set_factory(dispatch::make_metrics_factory(app, *w));
    workers.push_back(std::move(w));
    workers.back()->start(fd);
    log::info("metrics listening", {{"host", host}, {"port", bound}});
  }
  state::set_connection_counter([&workers, &clients] {
    int64_t down = 0, up = 0;
    for (auto& w : workers) down += w->stats().open_connections.load();
    for (auto& c : clients) up += static_cast<int64_t>(c->open_connections());
    return std::pair<int64_t, int64_t>{down, up};
  });
  log::info("listening", {{"host", cfg.host}, {"port", port}, {"workers", cfg.workers},
                          {"version", KEYPOOL_VERSION}});

  Control control{app, opts, workers, {}, {}, {}, {}, {}, {}};
  control.run();
  for (auto& w : workers) w->join();
  state::set_connection_counter(nullptr);
  app.recorder.flush();
  store_thread.stop();
  clients.clear();
  workers.clear();
  log::info("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // A peer that closes while we write must be an error on that socket, not the end of the
  // process (libuv leaves SIGPIPE alone).
  signal(SIGPIPE, SIG_IGN);
  auto opts = cli::parse(argc, argv);
  if (!opts) return fail(2, opts.error().message);
  if (opts->command == "serve") return serve(*opts);
  return cli::run(*opts);
}
