#pragma once
// Call: one admin request in flight. Endpoints read the request from it and answer through
// reply()/fail() directly or through in_store() for anything that touches the database.
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "admin/admin.h"
#include "base/result.h"
#include "store/store.h"

namespace keypool::admin {

struct Reply {
  int status = 200;
  nlohmann::json body;
  http::Headers headers;
};

class Call : public server::RequestHandler, public std::enable_shared_from_this<Call> {
 public:
  Call(Env env, router::Route route, http::RequestHead&& head, server::ResponseSink& sink);

  // RequestHandler
  void on_body(std::string_view data) override;
  void on_end() override;
  void on_abort() override { sink_ = nullptr; }
  void note_key(int64_t id) {
    if (sink_) sink_->note_key(id);
  }

  // For endpoints.
  state::App& app() { return env_.app; }
  uv_loop_t* loop() { return env_.loop; }
  upstream::Client* client() { return env_.client; }
  bool answered() const { return answered_ || !sink_; }
  const router::Route& route() const { return route_; }
  const http::RequestHead& head() const { return head_; }
  std::optional<std::string> query(std::string_view name) const;
  // The body as a JSON object; nullopt after answering 400 itself.
  std::optional<nlohmann::json> json_object();
  bool body_empty() const { return body_.empty(); }
  void reply(Reply r);
  void reply(int status, nlohmann::json body) { reply(Reply{status, std::move(body), {}}); }
  void reply_text(int status, std::string content_type, std::string text);
  // A body already serialized as JSON ("" for none), with any extra headers; wiped after
  // sending (it may hold a key).
  void reply_json(int status, std::string body, http::Headers extra = {});
  void fail(const Error& e);
  // Runs job on the store thread; its result is answered on this worker's loop. The job
  // may also update in-memory state (pool, tokens, services): doing that on the store
  // thread keeps memory changes in the same order as the commits.
  void in_store(std::function<Result<Reply>(store::Store&)> job);

 private:
  void dispatch();
  void record(int status);
  Env env_;
  router::Route route_;
  http::RequestHead head_;
  server::ResponseSink* sink_;
  std::string body_;
  bool answered_ = false;
  uint64_t started_ns_ = 0;
};

// Endpoint table lookup and execution (endpoints.cpp).
void dispatch(Call& call);

}  // namespace keypool::admin
