#include "proxy/exchange.h"

#include <uv.h>

#include <algorithm>
#include <charconv>
#include <typeinfo>

#include "base/strings.h"
#include "keys/report.h"
#include "proxy/cooldown.h"
#include "server/status.h"
#include "server/timer.h"
#include "telemetry/log.h"

namespace keypool::proxy {
namespace {

constexpr size_t kMaxHeldErrorBody = 256 * 1024;
constexpr int64_t kWaitPollMs = 25;  // how often a request waiting for a key (max_wait_ms) looks again

// Response headers that describe this hop only (RFC 9110 §7.6.1) or that keypool frames
// itself.
bool hop_only_response_header(http::FieldId id, bool tunnel) {
  using http::FieldId;
  switch (id) {
    case FieldId::Te:
    case FieldId::Trailer:
    case FieldId::KeepAlive:
    case FieldId::ContentLength:
    case FieldId::ProxyConnection:
    case FieldId::TransferEncoding:
      return true;
    case FieldId::Upgrade:
    case FieldId::Connection:
      return !tunnel;
    default:
      return false;
  }
}

// Moves the headers that go on to the client to the front, in order, and returns how many
// there are. The dropped ones stay behind them, storage and all, for put_header to reuse.
size_t keep_end_to_end_headers(http::Headers& headers, bool tunnel) {
  // A tunnel's Connection: Upgrade names a field the client needs.
  const auto named = tunnel ? http::ConnectionTokens() : http::ConnectionTokens(headers);
  size_t kept = 0;
  for (size_t i = 0; i < headers.size(); ++i) {
    const auto& h = headers[i];
    if (hop_only_response_header(http::field_id(h), tunnel) || named.names(h)) continue;
    if (kept != i) headers[kept] = std::move(headers[i]);
    ++kept;
  }
  return kept;
}

// Sets headers[at], reusing the storage a dropped header left in that slot (at most one
// past the end), and returns the index after it.
size_t put_header(http::Headers& headers, size_t at, std::string_view name, std::string_view value) {
  if (at == headers.size()) headers.emplace_back();
  headers[at].name.assign(name);
  headers[at].id = http::FieldId::Unclassified;  // the slot's old id was for the old name
  headers[at].value.assign(value);
  return at + 1;
}

// Every value of a field, joined by ',' as RFC 9110 §5.3 allows: "Content-Encoding: gzip"
// twice is two codings, not one.
std::string joined_values(const http::Headers& headers, http::FieldId id) {
  std::string out;
  for (const auto& h : headers) {
    if (http::field_id(h) != id) continue;
    if (!out.empty()) out += ',';
    out += h.value;
  }
  return out;
}

// What the proxy keeps on a client connection between its requests.
struct ClientState final : server::ConnectionState {
  auth::CredentialMemo memo;
};

auth::CredentialMemo& credential_memo(server::ResponseSink& sink) {
  auto& slot = sink.connection_state();
  // typeid, not dynamic_cast: an exact-type check is one compare, and the slot only ever
  // holds what a handler put there.
  if (!slot || typeid(*slot) != typeid(ClientState)) slot = std::make_unique<ClientState>();
  return static_cast<ClientState&>(*slot).memo;
}

double seconds_since(uint64_t start_ns) { return static_cast<double>(uv_hrtime() - start_ns) / 1e9; }

}  // namespace

ProxyExchange::ProxyExchange(Env env, router::Route&& route, http::RequestHead&& head,
                             server::ResponseSink& sink)
    : env_(env), route_(std::move(route)), head_(std::move(head)), sink_(&sink) {
  started_ns_ = uv_hrtime();
  if (head_.chunked) framing_ = rewrite::BodyFraming::Chunked;
  else if (head_.content_length) framing_ = rewrite::BodyFraming::ContentLength;
}

ProxyExchange::~ProxyExchange() {
  drop_upstream();
  release_lease(false, "");
  // An upstream time not yet recorded with the request (no ending recorded metrics).
  if (upstream_seconds_ && svc_) env_.app.metrics.upstream(svc_->name, *upstream_seconds_);
}

// ---------------------------------------------------------------- start

void ProxyExchange::begin() {
  services_ = env_.app.services.snapshot();
  auto it = services_->find(route_.service);
  if (it == services_->end()) return fail(404, "unknown_service", "no service named '" + route_.service + "'");
  svc_ = &it->second;
  if (!authenticate()) return;
  if (head_.upgrade) tunnel_ = true;
  acquire_and_start();
}

// Leases a key and sends the attempt; when the pool is spent and the tier allows waiting
// (max_wait_ms), polls until a key frees up or the wait is over.
void ProxyExchange::acquire_and_start() {
  switch (lease_key()) {
    case LeaseOutcome::Leased:
      if (sink_) sink_->resume_read();
      start_attempt();
      return;
    case LeaseOutcome::Waiting: {
      if (sink_) sink_->pause_read();  // hold the body back until there is somewhere to send it
      std::weak_ptr<ProxyExchange> weak = weak_from_this();
      server::run_after(env_.worker.loop(), kWaitPollMs, [weak] {
        if (auto self = weak.lock(); self && self->sink_ && !self->response_done_) self->acquire_and_start();
      });
      return;
    }
    case LeaseOutcome::Answered:
      return;
  }
}

bool ProxyExchange::authenticate() {
  auto& app = env_.app;
  auto cred = auth::extract_credential(head_.headers, route_.query);
  if (!cred) {
    fail(401, "unauthorized", "missing team token (Authorization: Bearer, x-api-key, xi-api-key or api_key)");
    return false;
  }
  if (cred->source() == auth::CredentialSource::QueryApiKey && !svc_->accept_query_token) {
    fail(401, "unauthorized",
         "service '" + svc_->name +
             "' does not accept the team token in the api_key query parameter (accept_query_token); send it in a header");
    return false;
  }
  const int64_t now = app.clock.now_ms();
  auto tok = app.tokens.authenticate(cred->value(), now, sink_ ? &credential_memo(*sink_) : nullptr);
  if (!tok) {
    fail(401, "unauthorized", tok.error().message);
    return false;
  }
  token_ = std::move(tok.value());
  if (!token_->services.empty() &&
      std::find(token_->services.begin(), token_->services.end(), svc_->name) == token_->services.end()) {
    fail(403, "forbidden", "this token may not use service '" + svc_->name + "'");
    return false;
  }
  if (auto wait = app.token_limits.acquire(token_->id, token_->rpm, now); wait > 0) {
    app.metrics.rate_limited("token");
    fail(429, "rate_limited", "this token's rpm limit is spent", (wait + 999) / 1000);
    return false;
  }
  return true;
}

// Borrows, copies nothing: the service (services_), token, tried_ and request head all
// outlive the lease() call each view is made for.
pool::QueryView ProxyExchange::pool_query() const {
  pool::QueryView q;
  q.feature = svc_->feature;
  q.tier = token_->tier;
  q.service = svc_->name;
  q.fallback_rpm = svc_->rate_limit_rpm;
  q.exclude = tried_;
  if (auto s = http::find_header(head_.headers, http::FieldId::XKeypoolSession)) q.affinity = *s;
  return q;
}

void ProxyExchange::take_lease(pool::Lease&& lease) {
  lease_.emplace(std::move(lease));  // one move: lease_ is empty here (released or never set)
  if (sink_) sink_->note_key(lease_->key_id);
}

ProxyExchange::LeaseOutcome ProxyExchange::lease_key() {
  auto& app = env_.app;
  auto lease = app.pool.lease(pool_query());
  if (lease) {
    take_lease(std::move(lease.value()));
    return LeaseOutcome::Leased;
  }
  const auto& e = lease.error();
  switch (e.code) {
    case ErrorCode::RateLimited: {
      int64_t now = app.clock.now_ms();
      if (wait_deadline_ms_ == 0) wait_deadline_ms_ = now + app.pool.tier_max_wait_ms(token_->tier).value_or(0);
      if (now + kWaitPollMs <= wait_deadline_ms_) return LeaseOutcome::Waiting;
      app.metrics.rate_limited("pool");
      fail(429, "rate_limited", "every key of this pool is at its limit; retry later", e.retry_after_s);
      break;
    }
    case ErrorCode::NotFound:
      fail(403, "forbidden", "tier '" + token_->tier + "' does not cover service '" + svc_->name + "'");
      break;
    default:
      fail(503, "no_keys", "no usable key for service '" + svc_->name + "' in tier '" + token_->tier + "'");
  }
  return LeaseOutcome::Answered;
}

// Sends the request head (and whatever body is already held) with the current key.
void ProxyExchange::start_attempt() {
  attempts_++;
  send_attempt(upstream::Client::Reuse::Pooled);
}

void ProxyExchange::send_attempt(upstream::Client::Reuse reuse) {
  upstream::Origin origin{svc_->tls, svc_->host, svc_->port};
  upstream_started_ns_ = uv_hrtime();
  // A new connection brings a new write queue: a pause the previous attempt's queue asked
  // for is lifted, and this one says again if the replayed body fills it.
  if (sink_) sink_->resume_read();
  env_.client->start(up_, origin, head_.method, &up_handler_, reuse);
  // The head is the only copy of the key rewrite makes; upstream writes wipe it once written.
  // It is built into a buffer the connection kept from an earlier request, so a pooled
  // connection sends it without an allocation. head_.headers are only read: a failover
  // builds the next attempt's head from them again.
  std::string head = up_->take_buffer();
  rewrite::upstream_head_into(head, *svc_,
                              {.method = head_.method,
                               .rest = route_.rest,
                               .query = route_.query,
                               .headers = head_.headers,
                               .upgrade = tunnel_,
                               .framing = framing_,
                               .content_length = head_.content_length.value_or(0)},
                              lease_->value->view());
  up_->write(std::move(head));
  if (!replay_.empty()) up_->write(replay_);
  if (request_done_ && framing_ == rewrite::BodyFraming::Chunked) up_->write("0\r\n\r\n");
}

// ---------------------------------------------------------------- client -> upstream

void ProxyExchange::on_body(std::string_view data) {
  if (response_done_) return;
  request_bytes_ += data.size();
  if (replayable_) {
    if (replay_.size() + data.size() <= static_cast<size_t>(env_.app.cfg.proxy.replay_buffer_bytes)) {
      // Kept as framed bytes, so a replay is a plain write.
      if (framing_ == rewrite::BodyFraming::Chunked) {
        char line[24];
        int n = std::snprintf(line, sizeof line, "%zx\r\n", data.size());
        replay_.append(line, static_cast<size_t>(n));
        replay_.append(data);
        replay_.append("\r\n");
      } else {
        replay_.append(data);
      }
    } else {
      replayable_ = false;  // too big to send twice: this attempt is the only one
      std::string().swap(replay_);
    }
  }
  if (!up_) {
    // Waiting for a key: the bytes are safe only in the replay buffer.
    if (!replayable_)
      fail(503, "body_too_large", "request body too large to hold while waiting for a free key");
    return;
  }
  if (framing_ == rewrite::BodyFraming::Chunked) {
    char line[24];
    int n = std::snprintf(line, sizeof line, "%zx\r\n", data.size());
    std::string frame;
    frame.reserve(data.size() + static_cast<size_t>(n) + 2);
    frame.append(line, static_cast<size_t>(n));
    frame.append(data);
    frame.append("\r\n");
    up_->write(std::move(frame));
  } else {
    up_->write(std::string(data));
  }
}

void ProxyExchange::on_end() {
  request_done_ = true;
  if (!up_ || response_done_) return;
  if (framing_ == rewrite::BodyFraming::Chunked) up_->write("0\r\n\r\n");
}

// Backpressure: each connection watches its own write queue and says when it passes its
// high watermark and when it drains; the exchange only stops and restarts the other side.
void ProxyExchange::upstream_blocked() {
  if (sink_) sink_->pause_read();
}

void ProxyExchange::upstream_writable() {
  if (sink_) sink_->resume_read();
}

void ProxyExchange::on_tunnel_data(std::string_view data) {
  if (up_) up_->write(std::string(data));
}

void ProxyExchange::on_tunnel_eof() {
  drop_upstream();
  if (sink_) sink_->end();
  response_done_ = true;
}

void ProxyExchange::on_abort() {
  // The client is gone: abandon the upstream request too (closing its connection).
  sink_ = nullptr;
  if (!response_done_) status_ = status_ ? status_ : 499;
  drop_upstream();
  release_lease(false, "");
  record_metrics();
}

void ProxyExchange::on_write_blocked() {
  client_blocked_ = true;
  if (up_) up_->pause_read();
}

void ProxyExchange::on_writable() {
  client_blocked_ = false;
  if (decoding_ != Decoding::Flowing) return resume_decoding();
  if (up_) up_->resume_read();
}

// ---------------------------------------------------------------- upstream -> client

void ProxyExchange::on_response_head(upstream::ResponseHead& head) {
  // Recorded with the request at its end (one lookup for both); an earlier attempt's time,
  // left by a failover, goes in on its own.
  if (upstream_seconds_) env_.app.metrics.upstream(svc_->name, *upstream_seconds_);
  upstream_seconds_ = seconds_since(upstream_started_ns_);
  if (head.status == 101 && !tunnel_) {
    // Switching protocols the client never offered: what follows is no HTTP answer to relay,
    // and the connection is no HTTP connection any more. No tunnel opens; the client gets 502.
    up_->forbid_reuse();
    return on_error(upstream::ErrorKind::Protocol,
                    "upstream " + svc_->name + " answered 101 Switching Protocols to a request without Upgrade");
  }
  if (head.status >= 400 && !streaming_) {
    if (keys::needs_body(*svc_, head.status) && head_.method != "HEAD") {
      // What the answer means for the key is in its body. Error answers are held anyway (to
      // mask the key), so the head goes the usual way and the answer is judged once the
      // first bytes of its body are here, decoded (inspect_body).
      inspecting_.emplace(Inspection{head.status, head.headers});
    } else if (auto why = judge_answer(head.status, head.headers, {}); why && try_failover(*why)) {
      return;
    }
  }
  forward_head(head);
}

// Acts on what the answer says about the key (keys/outcome.h). Returns why the request
// should go on to another key, or nullopt when this answer goes to the client.
std::optional<std::string> ProxyExchange::judge_answer(int status, const http::Headers& headers,
                                                       std::string_view body) {
  auto& app = env_.app;
  keys::Outcome outcome = keys::classify(*svc_, status, body);
  if (outcome.verdict == keys::Verdict::Serve || !lease_) return std::nullopt;
  app.metrics.key_outcome(svc_->name, keys::outcome_name(outcome));
  std::optional<int64_t> wait;
  if (outcome.verdict == keys::Verdict::RateLimited) wait = cooldown_ms(headers, app.clock.now_ms());
  auto applied = keys::report(app, {lease_->key_id, svc_->name, token_->tier, storm_scope()}, outcome, status, wait);
  // Past the blast-radius cap the key stays, and so does the answer: the client sees it.
  if (applied == keys::Applied::Capped || !keys::fails_over(outcome.verdict)) return std::nullopt;
  return "upstream answered " + std::to_string(status) + " (" + std::string(keys::outcome_name(outcome)) + ")";
}

// The one place an error body is read before it is judged: decoded text, as the client
// would get it. Holds at most kMaxInspectedBody, then decides.
void ProxyExchange::inspect_body(std::string_view data) {
  size_t take = std::min(keys::kMaxInspectedBody - inspected_.size(), data.size());
  inspected_.append(data.substr(0, take));
  if (inspected_.size() < keys::kMaxInspectedBody) return;
  if (end_inspection()) return;  // failed over: `data` (the decoder's) is not touched again
  if (take < data.size()) take_body(data.substr(take));
}

// Judges the inspected answer; true when the request went on to another key. Otherwise the
// inspected bytes go the way of any error body (held, masked, sent).
bool ProxyExchange::end_inspection() {
  Inspection ins = std::move(*inspecting_);
  inspecting_.reset();
  std::string body;
  body.swap(inspected_);
  if (auto why = judge_answer(ins.status, ins.headers, body); why && retract_and_fail_over(*why)) return true;
  if (ins.status == 429 && mask_errors_ && !held_sent_ && env_.app.storms.active(storm_scope(), env_.app.clock.now_ms())) {
    // This 429 may have been the one that showed the storm, after forward_head looked: the
    // client may come back soon, as forward_head tells it during a storm.
    http::remove_header(held_head_, "retry-after");
    held_head_.push_back({"Retry-After", "1"});
  }
  if (!body.empty()) take_body(body);
  return false;
}

// An error answer is held until its end to mask the key, so one that the key's outcome sends
// elsewhere has not reached the client: drop what forward_head set up and try the next key.
// False, with nothing changed, when there is no next key or the answer already went out.
bool ProxyExchange::retract_and_fail_over(const std::string& why) {
  if (!sink_ || !mask_errors_ || held_sent_) return false;
  streaming_ = false;
  if (!try_failover(why)) {
    streaming_ = true;
    return false;
  }
  mask_errors_ = false;
  std::string().swap(held_);
  held_head_.clear();
  decoder_.reset();
  decoding_ = Decoding::Flowing;
  usage_.reset();
  status_ = 0;
  return true;
}

void ProxyExchange::forward_head(upstream::ResponseHead& head) {
  status_ = head.status;
  if (!sink_) return;
  streaming_ = true;
  bool switching = tunnel_ && head.status == 101;
  usage_.emplace(http::find_header(head.headers, http::FieldId::ContentType).value_or(""));
  http::Headers& headers = head.headers;
  // The headers keypool adds go into the slots of dropped ones: on a keep-alive upstream
  // connection those strings already have room, so adding them allocates nothing.
  size_t count = keep_end_to_end_headers(headers, switching);
  if (head.status == 429 && env_.app.storms.active(storm_scope(), env_.app.clock.now_ms())) {
    // A storm: the keys stay usable (short cooldowns), so the client may come back soon.
    headers.resize(count);
    http::remove_header(headers, "retry-after");
    count = put_header(headers, headers.size(), "Retry-After", "1");
  }
  char key_id[24];
  char* key_id_end = std::to_chars(key_id, key_id + sizeof key_id, lease_->key_id).ptr;
  count = put_header(headers, count, "X-Keypool-Key-Id", std::string_view(key_id, static_cast<size_t>(key_id_end - key_id)));
  headers.resize(count);
  if (switching) {
    sink_->send_head(101, headers, server::BodyMode::Raw, 0);
    return;
  }
  // Error answers may quote the key we injected ("Incorrect API key provided: sk-..."):
  // hold them (bounded) and mask the key before the client sees a byte.
  mask_errors_ = head.status >= 400;
  bool no_body = head_.method == "HEAD" || head.status == 204 || head.status == 304 ||
                 (head.status >= 100 && head.status < 200);
  if (!take_coding(head, no_body)) return;
  if (mask_errors_ && !no_body) {
    held_head_ = std::move(headers);  // the head goes out with the held body
    return;
  }
  if (no_body)
    sink_->send_head(head.status, headers,
                     head.content_length ? server::BodyMode::ContentLength : server::BodyMode::Empty,
                     head.content_length.value_or(0));
  else if (head.content_length && !head.chunked)
    sink_->send_head(head.status, headers, server::BodyMode::ContentLength, *head.content_length);
  else
    sink_->send_head(head.status, headers, server::BodyMode::Stream, 0);
}

// Decides what the answer's Content-Encoding means (codec::treatment) and sets the decoder
// up; a head whose body keypool decodes loses its Content-Encoding and its length (the text
// has a length of its own: it goes out chunked, or held and measured). False when it
// answered the client itself: a coding keypool cannot decode where it must read the body,
// or that the client cannot read.
bool ProxyExchange::take_coding(upstream::ResponseHead& head, bool no_body) {
  http::Headers& headers = head.headers;
  std::string coding = joined_values(headers, http::FieldId::ContentEncoding);
  if (coding.empty()) return true;
  std::string accepted = joined_values(head_.headers, http::FieldId::AcceptEncoding);
  switch (codec::treatment(coding, accepted, mask_errors_)) {
    case codec::Treatment::AsIs:
      return true;
    case codec::Treatment::Decode:
      std::erase_if(headers, [](const http::Header& h) {
        return http::field_id(h) == http::FieldId::ContentEncoding;
      });
      head.content_length.reset();
      head.chunked = !no_body;
      if (!no_body) decoder_ = codec::Decoder::make(codec::classify_content_encoding(coding));
      return true;
    case codec::Treatment::Relay:
      // The client reads it; keypool cannot, so its usage goes uncounted.
      usage_.reset();
      log::warn("upstream answered with a coding keypool cannot decode; relayed, usage not counted",
                {{"service", svc_->name},
                 {"key_id", lease_->key_id},
                 {"content_encoding", coding}});
      return true;
    case codec::Treatment::Refuse:
      break;
  }
  if (no_body) return true;  // nothing to read or to leak
  log::warn("upstream answered with a coding keypool cannot decode; refused",
            {{"service", svc_->name}, {"key_id", lease_->key_id}, {"content_encoding", coding},
             {"status", status_}});
  std::string why = mask_errors_ ? " (an error body is read to mask the key)"
                                 : " and the client does not accept";
  fail(502, "upstream_encoding",
       "upstream " + svc_->name + " answered " + std::to_string(status_) +
           " with Content-Encoding '" + coding + "', which keypool cannot decode" + why);
  return false;
}

void ProxyExchange::on_response_body(std::string_view data) {
  if (decoder_) return decode_body(data);
  take_body(data);
}

void ProxyExchange::decode_body(std::string_view data) {
  decoder_->push(data);  // appended to what a pause kept
  if (decoding_ == Decoding::Flowing) drain_decoder();
}

// Every piece of decoded text (at most codec::Limits::piece_bytes) goes the way a plain body
// goes, while the client keeps up. Once its write queue is over the high watermark the rest
// of the input is kept and the upstream paused: one coded read never becomes megabytes of
// queue, nor a long burst of work on the loop. The client connection says when its queue
// passes the mark (on_write_blocked), in the middle of take_body if need be.
void ProxyExchange::drain_decoder() {
  while (sink_ && decoder_) {  // a failover (end_inspection) drops the decoder
    if (client_blocked_) {
      decoder_->hold();
      decoding_ = Decoding::Paused;
      if (up_) up_->pause_read();
      return;
    }
    auto piece = decoder_->next();
    if (!piece) return decode_failed(piece.error().message);
    if (piece->empty()) return;
    take_body(*piece);
  }
}

// The client drained its queue (on_writable): decode on, then let the upstream go on, or
// end the response when the upstream's end was held back.
void ProxyExchange::resume_decoding() {
  const bool ended = decoding_ == Decoding::PausedEnded;
  decoding_ = Decoding::Flowing;
  drain_decoder();
  if (!decoder_ || response_done_) return;  // failed, and answered
  if (decoding_ == Decoding::Paused) {
    if (ended) decoding_ = Decoding::PausedEnded;
    return;
  }
  if (ended) return on_response_end();
  if (up_) up_->resume_read();
}

// A body that is corrupt, truncated or a bomb: like an upstream that broke mid-answer. A held
// error body has not reached the client: it gets a 502 instead; anything else is cut.
void ProxyExchange::decode_failed(const std::string& message) {
  log::warn("upstream body could not be decoded",
            {{"service", svc_->name}, {"key_id", lease_ ? lease_->key_id : 0}, {"error", message}});
  decoder_.reset();
  if (mask_errors_ && !held_sent_) {
    std::string().swap(held_);
    return fail(502, "bad_gateway", "upstream " + svc_->name + ": " + message);
  }
  drop_upstream();
  release_lease(true, "undecodable body");
  response_done_ = true;
  if (sink_) sink_->abort();
  sink_ = nullptr;
  record_metrics();
}

void ProxyExchange::take_body(std::string_view data) {
  if (inspecting_) return inspect_body(data);
  if (usage_) usage_->feed(data);
  if (mask_errors_) {
    if (held_.size() + data.size() <= kMaxHeldErrorBody) {
      held_.append(data);
      return;
    }
    // Too large to hold: send the head now and stream the rest masked piece by piece.
    flush_held(false);
  }
  send_to_client(data);
}

void ProxyExchange::send_to_client(std::string_view data) {
  if (!sink_) return;
  if (mask_errors_) {
    std::string copy(data);
    rewrite::mask_fragments(copy, lease_->value->view());
    sink_->send_body(copy);
  } else {
    sink_->send_body(data);
  }
}

// Sends the held error head and body (masked). complete: the body is all there is, so it
// can go with a Content-Length.
void ProxyExchange::flush_held(bool complete) {
  if (!sink_ || !mask_errors_ || held_sent_) return;
  held_sent_ = true;
  rewrite::mask_fragments(held_, lease_->value->view());
  if (complete) sink_->send_head(status_, held_head_, server::BodyMode::ContentLength, held_.size());
  else sink_->send_head(status_, held_head_, server::BodyMode::Stream, 0);
  if (!held_.empty()) sink_->send_body(held_);
  std::string().swap(held_);
}

void ProxyExchange::on_response_end() {
  if (decoder_) {
    if (decoding_ == Decoding::Paused) {
      decoding_ = Decoding::PausedEnded;  // resume_decoding ends it once the client caught up
      return;
    }
    // The body's framing ended; the coded stream must have ended with it.
    if (auto done = decoder_->finish(); !done) return decode_failed(done.error().message);
  }
  if (inspecting_ && end_inspection()) return;
  if (mask_errors_ && !held_sent_) flush_held(true);
  response_done_ = true;
  bool ok = status_ < 400;
  release_lease(!ok, ok ? "" : "http " + std::to_string(status_));
  drop_upstream();  // a complete exchange returns its connection to the pool
  if (sink_) sink_->end();
  record_metrics();
}

void ProxyExchange::on_error(upstream::ErrorKind kind, const std::string& message) {
  const char* kind_name = upstream::error_kind_name(kind);
  env_.app.metrics.upstream_error(svc_->name, kind_name);
  if (kind == upstream::ErrorKind::Stale && retry_stale(message)) return;
  inspecting_.reset();  // an error answer cut short: judged as the failure it became
  std::string().swap(inspected_);
  log::warn("upstream error", {{"service", svc_->name}, {"key_id", lease_ ? lease_->key_id : 0},
                               {"kind", kind_name}, {"error", message}, {"attempt", attempts_}});
  if (!streaming_ && !tunnel_ && try_failover(std::string("upstream ") + kind_name)) return;
  drop_upstream();
  release_lease(true, kind_name);
  if (streaming_ || (mask_errors_ && held_sent_)) {
    // Bytes already went out: the client must see a broken response, never a clean end.
    response_done_ = true;
    if (sink_) sink_->abort();
    sink_ = nullptr;
    record_metrics();
    return;
  }
  bool timeout = kind == upstream::ErrorKind::ConnectTimeout || kind == upstream::ErrorKind::HeadTimeout ||
                 kind == upstream::ErrorKind::IdleTimeout;
  if (timeout) fail(504, "upstream_timeout", std::string("upstream ") + svc_->name + ": " + kind_name);
  else fail(502, "bad_gateway", std::string("upstream ") + svc_->name + ": " + message);
}

// ---------------------------------------------------------------- failover

// An upstream closes a keep-alive connection it finds idle, and the close can cross our next
// request on the wire. Nothing came back, so the request is sent once more, with the same
// key, on a new connection: the key did nothing wrong, and with a single key the client
// would otherwise get a 502 for the upstream's housekeeping. Failover already sends a
// request that failed again (to another key); this is the same promise, kept more cheaply.
bool ProxyExchange::retry_stale(const std::string& message) {
  if (stale_retried_ || !sink_ || streaming_ || response_done_ || !replayable_ || !lease_) return false;
  stale_retried_ = true;
  log::info("upstream connection was stale; retrying on a new one",
            {{"service", svc_->name}, {"key_id", lease_->key_id}, {"error", message}});
  drop_upstream();
  send_attempt(upstream::Client::Reuse::Fresh);
  return true;
}

// The 429-storm detector's scope: one (service, tier) pool. Built once per exchange.
const std::string& ProxyExchange::storm_scope() {
  if (storm_scope_.empty()) storm_scope_ = svc_->name + "/" + token_->tier;
  return storm_scope_;
}

// Tries the next key when nothing reached the client yet and the body can be sent again.
bool ProxyExchange::try_failover(const std::string& why) {
  auto& app = env_.app;
  if (!sink_ || streaming_ || tunnel_ || !replayable_) return false;
  if (attempts_ >= app.cfg.proxy.max_attempts) return false;
  if (app.storms.active(storm_scope(), app.clock.now_ms())) return false;
  // Take the next key before giving up this attempt: with no other key left, the client
  // gets this attempt's own answer (the upstream's response, or a 502/504), not a 503.
  // The keys tried are noted here rather than at each lease: only a failover asks for
  // another key while one is held, and most requests never fail over (no allocation).
  if (lease_) tried_.push_back(lease_->key_id);
  auto next = app.pool.lease(pool_query());
  if (!next) return false;
  int64_t from = lease_ ? lease_->key_id : 0;
  release_lease(true, why);
  drop_upstream();
  take_lease(std::move(next.value()));
  app.metrics.failover(svc_->name);
  log::info("failover", {{"service", svc_->name}, {"from_key", from}, {"to_key", lease_->key_id},
                         {"reason", why}, {"attempt", attempts_ + 1}});
  start_attempt();
  return true;
}

// ---------------------------------------------------------------- endings

void ProxyExchange::fail(int status, std::string_view code, std::string message, long long retry_after_s) {
  status_ = status;
  response_done_ = true;
  drop_upstream();
  if (!sink_) return;
  std::string body = server::error_body(code, message, retry_after_s);
  http::Headers headers{{"Content-Type", "application/json"}};
  if (retry_after_s > 0) headers.push_back({"Retry-After", std::to_string(retry_after_s)});
  if (status == 401) headers.push_back({"WWW-Authenticate", "Bearer"});
  sink_->send_head(status, headers, server::BodyMode::ContentLength, body.size());
  sink_->send_body(body);
  sink_->end();
  record_metrics();
}

void ProxyExchange::release_lease(bool failed, const std::string& error) {
  if (!lease_) return;
  auto& app = env_.app;
  app.pool.release(*lease_);
  store::UsageDelta d;
  d.key_id = lease_->key_id;
  d.token_id = token_->id;
  d.requests = 1;
  d.errors = failed ? 1 : 0;
  d.last_used_at = app.clock.now_ms();
  d.last_error = error;
  if (usage_ && !failed) {
    auto u = usage_->finish();
    d.input_tokens = u.input_tokens;
    d.output_tokens = u.output_tokens;
  }
  app.recorder.usage(d);
  lease_.reset();
}

void ProxyExchange::drop_upstream() {
  // Destroying the exchange returns a finished connection to the pool or closes it; a
  // request whose body was not sent whole leaves the upstream expecting more bytes.
  if (up_ && !request_done_) up_->forbid_reuse();
  up_.reset();
}

void ProxyExchange::record_metrics() {
  if (metrics_done_) return;
  metrics_done_ = true;
  env_.app.metrics.request(svc_ ? svc_->name : route_.service, telemetry::Metrics::Route::Proxy, status_ ? status_ : 499,
                           seconds_since(started_ns_), upstream_seconds_);
  upstream_seconds_.reset();
}

std::shared_ptr<server::RequestHandler> make_handler(Env env, router::Route&& route,
                                                     http::RequestHead&& head,
                                                     server::ResponseSink& sink) {
  auto x = std::make_shared<ProxyExchange>(env, std::move(route), std::move(head), sink);
  x->begin();
  return x;
}

}  // namespace keypool::proxy
