#include "state/gauges.h"

#include <map>
#include <mutex>

namespace keypool::state {
namespace {

std::mutex g_conn_mu;
std::function<std::pair<int64_t, int64_t>()> g_conn_fn;


std::pair<int64_t, int64_t> connections() {
  std::lock_guard<std::mutex> lock(g_conn_mu);
  return g_conn_fn ? g_conn_fn() : std::pair<int64_t, int64_t>{0, 0};
}

}  // namespace

void set_connection_counter(std::function<std::pair<int64_t, int64_t>()> fn) {
  std::lock_guard<std::mutex> lock(g_conn_mu);
  g_conn_fn = std::move(fn);
}

nlohmann::json health_json(App& app) {
  auto statuses = app.pool.statuses();
  nlohmann::json tiers = nlohmann::json::object();
  std::map<std::string, int64_t> totals;
  for (const auto& st : statuses) {
    auto& t = tiers[st.info.tier];
    if (t.is_null())
      t = {{"total", 0}, {"active", 0}, {"cooling", 0}, {"suspended", 0}, {"disabled", 0}, {"expired", 0}};
    t["total"] = t["total"].get<int64_t>() + 1;
    t[pool::state_name(st.state)] = t[pool::state_name(st.state)].get<int64_t>() + 1;
    totals[pool::state_name(st.state)]++;
  }
  auto [down, up] = connections();
  // Pools where the blast-radius cap refused suspensions: an upstream (or a key_errors rule)
  // called more keys bad than keypool would take out.
  nlohmann::json capped = nlohmann::json::array();
  int64_t now = app.clock.now_ms();
  for (const auto& c : app.suspensions.capped(now)) {
    auto slash = c.scope.find('/');
    capped.push_back({{"service", c.scope.substr(0, slash)},
                      {"tier", slash == std::string::npos ? "" : c.scope.substr(slash + 1)},
                      {"capped", c.capped},
                      {"last_capped_ms", c.last_capped_ms},
                      {"suspended_last_60s", c.recent}});
  }
  return {{"status", "ok"},
          {"pool_size", statuses.size()},
          {"keys", {{"total", statuses.size()}, {"active", totals["active"]}, {"cooling", totals["cooling"]},
                    {"suspended", totals["suspended"]}, {"disabled", totals["disabled"]},
                    {"expired", totals["expired"]}}},
          {"suspension_cap", capped},
          {"tiers", tiers},
          {"services", app.services.snapshot()->size()},
          {"tokens", app.tokens.size()},
          {"connections", {{"client", down}, {"upstream", up}}}};
}

std::vector<std::string> gauge_lines(App& app) {
  std::vector<std::string> out;
  std::map<std::tuple<std::string, std::string, std::string>, int64_t> by_state;
  std::map<std::pair<std::string, std::string>, int64_t> budget_left;
  for (const auto& st : app.pool.statuses()) {
    by_state[{st.info.service.empty() ? "-" : st.info.service, st.info.tier, pool::state_name(st.state)}]++;
    bool usable = st.state == pool::KeyState::Active;
    for (const auto& u : st.usage)
      budget_left[{st.info.tier, u.feature}] += usable ? std::max<int64_t>(0, u.limit - u.used) : 0;
  }
  out.push_back("# HELP keypool_keys Keys by state, service and tier.\n# TYPE keypool_keys gauge\n");
  for (const auto& [k, v] : by_state)
    out.push_back("keypool_keys{service=\"" + std::get<0>(k) + "\",tier=\"" + std::get<1>(k) + "\",state=\"" +
                  std::get<2>(k) + "\"} " + std::to_string(v) + "\n");
  out.push_back("# HELP keypool_budget_remaining Requests left in the current 60 s windows of usable keys.\n"
                "# TYPE keypool_budget_remaining gauge\n");
  for (const auto& [k, v] : budget_left)
    out.push_back("keypool_budget_remaining{tier=\"" + k.first + "\",feature=\"" + k.second + "\"} " +
                  std::to_string(v) + "\n");
  auto [down, up] = connections();
  out.push_back("# HELP keypool_open_connections Open connections by side.\n# TYPE keypool_open_connections gauge\n");
  out.push_back("keypool_open_connections{side=\"client\"} " + std::to_string(down) + "\n");
  out.push_back("keypool_open_connections{side=\"upstream\"} " + std::to_string(up) + "\n");
  return out;
}

}  // namespace keypool::state
