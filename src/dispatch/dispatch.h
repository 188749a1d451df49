#pragma once
// The HandlerFactory each worker uses: refuses methods keypool never serves, routes the
// target, and hands the request to the proxy (/v1/...) or the admin room (everything else).
#include <memory>

#include "server/handler.h"
#include "server/worker.h"
#include "state/app.h"

namespace keypool::upstream {
class Client;
}

namespace keypool::dispatch {

std::unique_ptr<server::HandlerFactory> make_factory(state::App& app, server::Worker& worker,
                                                     upstream::Client* client);

// For the separate metrics listener (config metrics.listen): GET /metrics without the
// admin token, GET /health, and nothing else. Meant for a port only the scraper reaches.
std::unique_ptr<server::HandlerFactory> make_metrics_factory(state::App& app, server::Worker& worker);

}  // namespace keypool::dispatch
