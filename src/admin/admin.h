#pragma once
// The admin room: JSON endpoints under /admin/*, GET /key, GET /health and GET /metrics,
// declared in one endpoint table (endpoints.cpp). Handlers collect the body (bounded),
// check the admin token in constant time, then either answer from memory or run a job on
// the store thread and answer when it is committed: a 2xx means it is on disk.
#include <memory>

#include "http/request.h"
#include "router/router.h"
#include "server/handler.h"
#include "server/loop_post.h"
#include "state/app.h"

namespace keypool::upstream {
class Client;
}

namespace keypool::admin {

struct Env {
  state::App& app;
  server::LoopPost& post;  // the worker loop, for answers coming back from the store thread
  uv_loop_t* loop;         // the same loop, for timers
  upstream::Client* client;  // the same loop's upstream client, for key probes
};

std::shared_ptr<server::RequestHandler> make_handler(Env env, router::Route route,
                                                     http::RequestHead&& head,
                                                     server::ResponseSink& sink);

}  // namespace keypool::admin
