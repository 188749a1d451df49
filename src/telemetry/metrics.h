#pragma once
// Metrics: counters and histograms for GET /metrics in the Prometheus text format.
// Labels are service names, route kinds, status classes, key ids: never a secret.
#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace keypool::telemetry {

// Fixed-bucket latency histogram (seconds), lock-free on the hot path.
class Histogram {
 public:
  static constexpr std::array<double, 14> kBounds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                      0.1,    0.25,  0.5,    1,     2.5,   5,     10};
  void observe(double seconds);
  void render(std::string& out, const std::string& name, const std::string& labels) const;

 private:
  std::array<std::atomic<uint64_t>, kBounds.size() + 1> buckets_{};
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_us_{0};
};

// The last hour of the console's Overview charts, one bucket per minute: proxied requests,
// those answered 5xx, keypool's own 429s and failovers. Each is counted where the matching
// /metrics counter is, so the charts' totals are the same numbers. Kept in memory only.
class History {
 public:
  enum class Series : uint8_t { Requests, Errors, RateLimited, Failovers };
  static constexpr size_t kMinutes = 60;
  struct Minute {
    int64_t start_ms = 0;  // the minute's first millisecond (Unix time)
    std::array<uint64_t, 4> counts{};
  };
  void add(Series s, int64_t now_ms);  // caller holds Metrics' lock
  // Oldest first, kMinutes of them ending with the one holding now_ms; quiet minutes are 0.
  std::vector<Minute> last_hour(int64_t now_ms) const;

 private:
  std::array<Minute, kMinutes> ring_{};  // slot = minute number % kMinutes
};

class Metrics {
 public:
  // A request finished: route kind is health|key|admin|proxy|metrics.
  // What kind of request it was; the order is kRoutes' order (the route label).
  enum class Route : uint8_t { Health, Key, Admin, Metrics, Proxy };
  // upstream_seconds: the time to the upstream's response head, when the request went
  // upstream; recorded with the request under one lock and one lookup. Further attempts of
  // the same request (failovers) are recorded with upstream().
  void request(std::string_view service, Route route, int status, double seconds,
               std::optional<double> upstream_seconds = std::nullopt);
  void upstream(const std::string& service, double seconds);
  void upstream_error(const std::string& service, const std::string& kind);
  void failover(const std::string& service);
  void rate_limited(const std::string& scope);
  // What an upstream error answer said about the key (keys/outcome.h): refused, rate_limited,
  // invalid, quota, upstream_failed, or a key_errors rule's reason.
  void key_outcome(const std::string& service, std::string_view outcome);
  // A suspension the blast-radius cap refused.
  void suspension_capped(const std::string& service, const std::string& tier);
  // A health probe's result: pass, fail or error.
  void probe(const std::string& service, std::string_view result);
  // Renders everything, plus the gauges the caller computes (keys by state, budgets,
  // connections) passed in as ready-made lines.
  std::string render(const std::vector<std::string>& gauge_lines) const;
  // The Overview's per-minute series (see History), and since-start totals of the same four
  // (each the sum of the /metrics counter it mirrors).
  std::vector<History::Minute> history(int64_t now_ms) const;
  std::array<uint64_t, 4> history_totals() const;
  // The wall clock History is stamped with; tests of the metrics room replace it.
  void set_clock(int64_t (*now_ms)()) { now_ms_ = now_ms; }

 private:
  struct Key {
    std::string a, b, c;
    bool operator<(const Key& o) const { return std::tie(a, b, c) < std::tie(o.a, o.b, o.c); }
  };
  // Route kinds are a fixed set, so per-request counting needs no allocation: counts live in
  // an array per service, found by string_view (std::less<> allows that lookup).
  static constexpr std::array<std::string_view, 5> kRoutes = {"health", "key", "admin", "metrics", "proxy"};
  static_assert(static_cast<size_t>(Route::Proxy) + 1 == kRoutes.size(), "one label per Route");
  using RouteCounts = std::array<std::array<uint64_t, 6>, kRoutes.size()>;  // [route][status/100]
  mutable std::mutex mu_;
  // Everything counted per service, so that a proxied request finds it with one lookup.
  struct ServiceStats {
    RouteCounts requests{};
    Histogram upstream_latency;
    bool went_upstream = false;  // upstream_latency has observations to render
  };
  ServiceStats& stats_of(std::string_view service);  // mu_ held
  std::map<std::string, ServiceStats, std::less<>> services_;  // by service ("" for non-proxy)
  std::array<Histogram, kRoutes.size()> latency_;             // by route, lock-free
  std::map<Key, uint64_t> upstream_errors_;  // service, kind
  std::map<std::string, uint64_t> failovers_;
  std::map<std::string, uint64_t> rate_limited_;
  History history_;                       // guarded by mu_
  std::array<uint64_t, 4> history_totals_{};  // guarded by mu_
  int64_t (*now_ms_)() = nullptr;         // nullptr: the system clock
  int64_t now() const;
  void count(History::Series s);          // mu_ held
  std::map<Key, uint64_t> key_outcomes_;         // service, outcome
  std::map<Key, uint64_t> suspensions_capped_;   // service, tier
  std::map<Key, uint64_t> probes_;               // service, result
};

}  // namespace keypool::telemetry
