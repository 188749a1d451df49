#include "telemetry/metrics.h"

#include <chrono>
#include <cstdio>
#include <tuple>

namespace keypool::telemetry {
namespace {

std::string fmt_double(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}


}  // namespace

void Histogram::observe(double seconds) {
  size_t i = 0;
  while (i < kBounds.size() && seconds > kBounds[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_us_.fetch_add(static_cast<uint64_t>(seconds * 1e6), std::memory_order_relaxed);
}

void Histogram::render(std::string& out, const std::string& name, const std::string& labels) const {
  uint64_t cumulative = 0;
  std::string sep = labels.empty() ? "" : ",";
  for (size_t i = 0; i < kBounds.size(); ++i) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    out += name + "_bucket{" + labels + sep + "le=\"" + fmt_double(kBounds[i]) + "\"} " +
           std::to_string(cumulative) + "\n";
  }
  cumulative += buckets_[kBounds.size()].load(std::memory_order_relaxed);
  out += name + "_bucket{" + labels + sep + "le=\"+Inf\"} " + std::to_string(cumulative) + "\n";
  out += name + "_sum{" + labels + "} " +
         fmt_double(static_cast<double>(sum_us_.load(std::memory_order_relaxed)) / 1e6) + "\n";
  out += name + "_count{" + labels + "} " + std::to_string(count_.load(std::memory_order_relaxed)) + "\n";
}

void History::add(Series s, int64_t now_ms) {
  int64_t minute = now_ms / 60000;
  Minute& m = ring_[static_cast<size_t>(minute) % kMinutes];
  if (m.start_ms != minute * 60000) m = Minute{minute * 60000, {}};  // a stale slot from an hour ago
  m.counts[static_cast<size_t>(s)]++;
}

std::vector<History::Minute> History::last_hour(int64_t now_ms) const {
  int64_t newest = now_ms / 60000;
  std::vector<Minute> out;
  out.reserve(kMinutes);
  for (int64_t minute = newest - static_cast<int64_t>(kMinutes) + 1; minute <= newest; ++minute) {
    const Minute& m = ring_[static_cast<size_t>(minute) % kMinutes];
    out.push_back(m.start_ms == minute * 60000 ? m : Minute{minute * 60000, {}});
  }
  return out;
}

int64_t Metrics::now() const {
  if (now_ms_) return now_ms_();
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

void Metrics::count(History::Series s) {
  history_.add(s, now());
  history_totals_[static_cast<size_t>(s)]++;
}

std::vector<History::Minute> Metrics::history(int64_t now_ms) const {
  std::lock_guard<std::mutex> lock(mu_);
  return history_.last_hour(now_ms);
}

std::array<uint64_t, 4> Metrics::history_totals() const {
  std::lock_guard<std::mutex> lock(mu_);
  return history_totals_;
}

Metrics::ServiceStats& Metrics::stats_of(std::string_view service) {
  auto it = services_.find(service);
  if (it == services_.end()) it = services_.try_emplace(std::string(service)).first;
  return it->second;
}

void Metrics::request(std::string_view service, Route route, int status, double seconds,
                      std::optional<double> upstream_seconds) {
  const auto r = static_cast<size_t>(route);
  size_t cls = status >= 100 && status < 600 ? static_cast<size_t>(status / 100) : 0;
  latency_[r].observe(seconds);
  std::lock_guard<std::mutex> lock(mu_);
  ServiceStats& s = stats_of(service);
  s.requests[r][cls]++;
  if (route == Route::Proxy) {
    count(History::Series::Requests);
    if (cls == 5) count(History::Series::Errors);
  }
  if (upstream_seconds) {
    s.upstream_latency.observe(*upstream_seconds);
    s.went_upstream = true;
  }
}

void Metrics::upstream(const std::string& service, double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  ServiceStats& s = stats_of(service);
  s.upstream_latency.observe(seconds);
  s.went_upstream = true;
}

void Metrics::upstream_error(const std::string& service, const std::string& kind) {
  std::lock_guard<std::mutex> lock(mu_);
  upstream_errors_[{service, kind, ""}]++;
}

void Metrics::failover(const std::string& service) {
  std::lock_guard<std::mutex> lock(mu_);
  failovers_[service]++;
  count(History::Series::Failovers);
}

void Metrics::rate_limited(const std::string& scope) {
  std::lock_guard<std::mutex> lock(mu_);
  rate_limited_[scope]++;
  count(History::Series::RateLimited);
}

void Metrics::key_outcome(const std::string& service, std::string_view outcome) {
  std::lock_guard<std::mutex> lock(mu_);
  key_outcomes_[{service, std::string(outcome), ""}]++;
}

void Metrics::suspension_capped(const std::string& service, const std::string& tier) {
  std::lock_guard<std::mutex> lock(mu_);
  suspensions_capped_[{service, tier, ""}]++;
}

void Metrics::probe(const std::string& service, std::string_view result) {
  std::lock_guard<std::mutex> lock(mu_);
  probes_[{service, std::string(result), ""}]++;
}

std::string Metrics::render(const std::vector<std::string>& gauge_lines) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  out += "# HELP keypool_requests_total Requests answered, by service, route kind and status class.\n";
  out += "# TYPE keypool_requests_total counter\n";
  for (const auto& [svc, stats] : services_)
    for (size_t r = 0; r < kRoutes.size(); ++r)
      for (size_t cls = 0; cls < 6; ++cls)
        if (stats.requests[r][cls])
          out += "keypool_requests_total{service=\"" + svc + "\",route=\"" + std::string(kRoutes[r]) +
                 "\",status=\"" + (cls ? std::to_string(cls) + "xx" : std::string("other")) + "\"} " +
                 std::to_string(stats.requests[r][cls]) + "\n";
  out += "# HELP keypool_request_duration_seconds Time from request head to response end.\n";
  out += "# TYPE keypool_request_duration_seconds histogram\n";
  for (size_t r = 0; r < kRoutes.size(); ++r)
    latency_[r].render(out, "keypool_request_duration_seconds", "route=\"" + std::string(kRoutes[r]) + "\"");
  out += "# HELP keypool_upstream_duration_seconds Time from upstream request to response head.\n";
  out += "# TYPE keypool_upstream_duration_seconds histogram\n";
  for (const auto& [svc, stats] : services_)
    if (stats.went_upstream)
      stats.upstream_latency.render(out, "keypool_upstream_duration_seconds", "service=\"" + svc + "\"");
  out += "# HELP keypool_upstream_errors_total Upstream failures by kind.\n";
  out += "# TYPE keypool_upstream_errors_total counter\n";
  for (const auto& [k, v] : upstream_errors_)
    out += "keypool_upstream_errors_total{service=\"" + k.a + "\",kind=\"" + k.b + "\"} " +
           std::to_string(v) + "\n";
  out += "# HELP keypool_failovers_total Retries with another key.\n";
  out += "# TYPE keypool_failovers_total counter\n";
  for (const auto& [svc, v] : failovers_)
    out += "keypool_failovers_total{service=\"" + svc + "\"} " + std::to_string(v) + "\n";
  out += "# HELP keypool_rate_limited_total 429 answers given out by keypool.\n";
  out += "# TYPE keypool_rate_limited_total counter\n";
  for (const auto& [scope, v] : rate_limited_)
    out += "keypool_rate_limited_total{scope=\"" + scope + "\"} " + std::to_string(v) + "\n";
  out += "# HELP keypool_key_outcomes_total Upstream error answers by what they said about the key.\n";
  out += "# TYPE keypool_key_outcomes_total counter\n";
  for (const auto& [k, v] : key_outcomes_)
    out += "keypool_key_outcomes_total{service=\"" + k.a + "\",outcome=\"" + k.b + "\"} " + std::to_string(v) + "\n";
  out += "# HELP keypool_suspensions_capped_total Suspensions refused because half the pool was suspended within 60 s.\n";
  out += "# TYPE keypool_suspensions_capped_total counter\n";
  for (const auto& [k, v] : suspensions_capped_)
    out += "keypool_suspensions_capped_total{service=\"" + k.a + "\",tier=\"" + k.b + "\"} " + std::to_string(v) + "\n";
  out += "# HELP keypool_health_probes_total Health probes of keys by result.\n";
  out += "# TYPE keypool_health_probes_total counter\n";
  for (const auto& [k, v] : probes_)
    out += "keypool_health_probes_total{service=\"" + k.a + "\",result=\"" + k.b + "\"} " + std::to_string(v) + "\n";
  for (const auto& line : gauge_lines) out += line;
  return out;
}

}  // namespace keypool::telemetry
