#pragma once
// The proxy room: one client request under /v1/<service>/ end to end. Authenticate the
// team token, lease a key, rewrite, send upstream, stream both ways with backpressure,
// and fail over to the next key when the upstream refuses before anything was answered.
#include <memory>

#include "http/request.h"
#include "router/router.h"
#include "server/handler.h"
#include "server/worker.h"
#include "state/app.h"

namespace keypool::upstream {
class Client;
}

namespace keypool::proxy {

struct Env {
  state::App& app;
  server::Worker& worker;
  upstream::Client* client;
};

std::shared_ptr<server::RequestHandler> make_handler(Env env, router::Route&& route,
                                                     http::RequestHead&& head,
                                                     server::ResponseSink& sink);

}  // namespace keypool::proxy
