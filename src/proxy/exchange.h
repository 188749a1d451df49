#pragma once
// ProxyExchange: the state of one proxied request. It is both the downstream handler
// (server::RequestHandler) and the upstream handler (upstream::ExchangeHandler).
//
// Directions and their states:
//   request:  Head -> Body -> Done        (body forwarded as it arrives, kept for replay
//                                          while it fits replay_buffer_bytes)
//   response: Waiting -> Streaming -> Done (nothing reaches the client before Streaming,
//                                          which is what makes failover invisible)
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "auth/auth.h"
#include "codec/codec.h"
#include "pool/pool.h"
#include "proxy/proxy.h"
#include "proxy/usage.h"
#include "rewrite/rewrite.h"
#include "upstream/client.h"

namespace keypool::proxy {

class ProxyExchange final : public server::RequestHandler,
                            public std::enable_shared_from_this<ProxyExchange> {
 public:
  ProxyExchange(Env env, router::Route&& route, http::RequestHead&& head, server::ResponseSink& sink);
  ~ProxyExchange() override;
  // Authenticates, leases and starts the first attempt; answers errors itself.
  void begin();

  // server::RequestHandler (client side)
  void on_body(std::string_view data) override;
  void on_end() override;
  void on_abort() override;
  void on_write_blocked() override;
  void on_writable() override;
  void on_tunnel_data(std::string_view data) override;
  void on_tunnel_eof() override;
  // Called once the response ended: nothing reads head_ after that (the upstream exchange
  // and the lease are gone), so the connection may parse its next request into it.
  http::RequestHead* spent_head() override { return &head_; }

  // API side, forwarded by UpstreamSide (upstream::ExchangeHandler): a separate object
  // because both interfaces name a callback on_writable.
  void on_response_head(upstream::ResponseHead& head);
  void on_response_body(std::string_view data);
  void on_response_end();
  void on_error(upstream::ErrorKind kind, const std::string& message);
  void upstream_blocked();
  void upstream_writable();

 private:
  // Receives the upstream client's callbacks and hands them to the exchange.
  class UpstreamSide final : public upstream::ExchangeHandler {
   public:
    explicit UpstreamSide(ProxyExchange& x) : x_(x) {}
    void on_response_head(upstream::ResponseHead& h) override { x_.on_response_head(h); }
    void on_response_body(std::string_view d) override { x_.on_response_body(d); }
    void on_response_end() override { x_.on_response_end(); }
    void on_error(upstream::ErrorKind k, const std::string& m) override { x_.on_error(k, m); }
    void on_write_blocked() override { x_.upstream_blocked(); }
    void on_writable() override { x_.upstream_writable(); }

   private:
    ProxyExchange& x_;
  };

  bool authenticate();
  enum class LeaseOutcome { Leased, Waiting, Answered };
  LeaseOutcome lease_key();
  pool::QueryView pool_query() const;
  void take_lease(pool::Lease&& lease);
  void acquire_and_start();
  void start_attempt();
  void send_attempt(upstream::Client::Reuse reuse);
  bool retry_stale(const std::string& message);
  bool try_failover(const std::string& why);
  std::optional<std::string> judge_answer(int status, const http::Headers& headers, std::string_view body);
  void inspect_body(std::string_view data);
  bool end_inspection();
  bool retract_and_fail_over(const std::string& why);
  const std::string& storm_scope();
  void forward_head(upstream::ResponseHead& head);
  bool take_coding(upstream::ResponseHead& head, bool no_body);
  void take_body(std::string_view data);
  void decode_body(std::string_view data);
  void drain_decoder();
  void resume_decoding();
  void decode_failed(const std::string& message);
  void send_to_client(std::string_view data);
  void flush_held(bool complete);
  void finish_response();
  void fail(int status, std::string_view code, std::string message, long long retry_after_s = 0);
  void release_lease(bool failed, const std::string& error);
  void drop_upstream();
  void record_metrics();

  Env env_;
  router::Route route_;
  http::RequestHead head_;
  server::ResponseSink* sink_;  // null after on_abort
  std::shared_ptr<const state::ServiceMap> services_;
  const config::ServiceDef* svc_ = nullptr;  // points into services_
  std::shared_ptr<const auth::TokenInfo> token_;  // set once authenticated
  std::optional<pool::Lease> lease_;
  std::vector<int64_t> tried_;  // keys given up by failovers: the pool skips them
  int attempts_ = 0;
  bool stale_retried_ = false;  // see retry_stale()
  int64_t wait_deadline_ms_ = 0;  // max_wait_ms: until when a spent pool is waited out
  std::string storm_scope_;       // see storm_scope()

  UpstreamSide up_handler_{*this};
  std::optional<upstream::Exchange> up_;  // in place: the exchange is not moved while it runs
  rewrite::BodyFraming framing_ = rewrite::BodyFraming::None;

  // Request body replay: everything sent so far, while it fits the limit.
  std::string replay_;
  bool replayable_ = true;
  bool request_done_ = false;
  uint64_t request_bytes_ = 0;

  // Response.
  bool streaming_ = false;      // the client has our head
  bool response_done_ = false;
  bool tunnel_ = false;
  bool mask_errors_ = false;    // status >= 400: hold the body to mask the key in it
  // An error answer whose meaning for the key depends on its body: its status and headers
  // wait here while up to keys::kMaxInspectedBody decoded bytes of the body gather in
  // inspected_ (the answer itself is held like every error answer, see mask_errors_).
  struct Inspection {
    int status = 0;
    http::Headers headers;
  };
  std::optional<Inspection> inspecting_;
  std::string inspected_;
  std::string held_;            // held error body
  http::Headers held_head_;     // the head that goes out with it
  bool held_sent_ = false;
  bool metrics_done_ = false;
  int status_ = 0;
  uint64_t started_ns_ = 0;
  uint64_t upstream_started_ns_ = 0;
  std::optional<double> upstream_seconds_;  // this attempt's time to the response head, not yet recorded
  std::optional<UsageTap> usage_;
  // Set when the upstream compressed its answer despite Accept-Encoding: identity: the body
  // is decoded before anything reads it (usage, masking) and goes to the client decoded.
  std::unique_ptr<codec::Decoder> decoder_;
  // Decoded text can be hundreds of times its coded size, so the decoder, not the upstream,
  // waits for the client: Paused keeps the undecoded input (the upstream's reads paused)
  // until on_writable; PausedEnded also holds back the upstream's end until it is drained.
  enum class Decoding : uint8_t { Flowing, Paused, PausedEnded };
  Decoding decoding_ = Decoding::Flowing;
  // The client connection said its write queue passed the high watermark (on_write_blocked)
  // and has not said it drained (on_writable): the connection owns that mark, not us.
  bool client_blocked_ = false;
};

}  // namespace keypool::proxy
