#pragma once
// Point-in-time views of the shared state: GET /admin/health and the gauges of /metrics.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "state/app.h"

namespace keypool::state {

nlohmann::json health_json(App& app);
std::vector<std::string> gauge_lines(App& app);
// Open downstream/upstream connections, summed over workers by whoever owns them.
void set_connection_counter(std::function<std::pair<int64_t, int64_t>()> fn);

}  // namespace keypool::state
