#include <doctest/doctest.h>

#include "telemetry/metrics.h"

using keypool::telemetry::History;
using keypool::telemetry::Metrics;

namespace {
int64_t g_now_ms = 0;
int64_t fake_now() { return g_now_ms; }
}  // namespace

TEST_CASE("history: counts land in their minute; the last hour is 60 minutes, oldest first") {
  History h;
  const int64_t t0 = 1'800'000'000'000;  // a minute boundary
  h.add(History::Series::Requests, t0 + 1);
  h.add(History::Series::Requests, t0 + 59'999);
  h.add(History::Series::Errors, t0 + 60'000);
  auto hour = h.last_hour(t0 + 60'500);
  REQUIRE(hour.size() == 60);
  CHECK(hour.back().start_ms == t0 + 60'000);
  CHECK(hour.back().counts[1] == 1);
  CHECK(hour[58].start_ms == t0);
  CHECK(hour[58].counts[0] == 2);
  CHECK(hour.front().start_ms == t0 - 58 * 60'000);
  // An hour later the slots are reused: old counts do not come back as new ones.
  h.add(History::Series::Failovers, t0 + 3'600'000 + 5);
  auto later = h.last_hour(t0 + 3'600'000 + 10);
  CHECK(later.back().counts[3] == 1);
  CHECK(later.back().counts[0] == 0);
  uint64_t sum = 0;
  for (const auto& m : later) sum += m.counts[0] + m.counts[1];
  CHECK(sum == 1);  // only the errors minute (t0+1m) is still inside the hour
}

TEST_CASE(
    "history: Metrics counts proxied requests, their 5xx, keypool's 429s and failovers like "
    "/metrics") {
  Metrics m;
  g_now_ms = 1'800'000'000'000 + 30'000;
  m.set_clock(fake_now);
  m.request("svc", Metrics::Route::Proxy, 200, 0.01);
  m.request("svc", Metrics::Route::Proxy, 502, 0.01);
  m.request("", Metrics::Route::Admin, 500, 0.01);  // not proxied: not in the Overview
  m.rate_limited("pool");
  m.rate_limited("token");
  m.failover("svc");
  auto t = m.history_totals();
  CHECK(t[0] == 2);
  CHECK(t[1] == 1);
  CHECK(t[2] == 2);
  CHECK(t[3] == 1);
  auto hour = m.history(g_now_ms);
  CHECK(hour.back().counts == t);
  auto text = m.render({});
  CHECK(text.find("keypool_failovers_total{service=\"svc\"} 1") != std::string::npos);
}
