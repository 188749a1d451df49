#include "upstream/client.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <charconv>

#include "tls/tls.h"
#include "upstream/connection.h"

namespace keypool::upstream {

std::string Origin::key() const {
  std::string k;
  key_into(k);
  return k;
}

void Origin::key_into(std::string& out) const {
  out.assign(tls ? "https://" : "http://");
  out += host;
  out += ':';
  char port_text[8];
  auto [end, ec] = std::to_chars(port_text, port_text + sizeof port_text, port);
  out.append(port_text, end);
}

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::Dns: return "dns";
    case ErrorKind::Connect: return "connect";
    case ErrorKind::Tls: return "tls";
    case ErrorKind::ConnectTimeout: return "connect_timeout";
    case ErrorKind::HeadTimeout: return "head_timeout";
    case ErrorKind::IdleTimeout: return "idle_timeout";
    case ErrorKind::Protocol: return "protocol";
    case ErrorKind::Closed: return "closed";
    case ErrorKind::Stale: return "stale_connection";
  }
  return "unknown";
}

// ---- Exchange: a handle on the connection serving it ---------------------------------------

void Exchange::write(std::string bytes) {
  if (conn_) {
    conn_->write(std::move(bytes));
  } else if (!bytes.empty()) {
    OPENSSL_cleanse(bytes.data(), bytes.size());
  }
}

std::string Exchange::take_buffer() { return conn_ ? conn_->take_buffer() : std::string(); }

size_t Exchange::queued_bytes() const { return conn_ ? conn_->queued_bytes() : 0; }

void Exchange::pause_read() {
  if (conn_) conn_->pause_read();
}

void Exchange::resume_read() {
  if (conn_) conn_->resume_read();
}

void Exchange::forbid_reuse() {
  if (conn_) conn_->forbid_reuse();
}

Exchange::~Exchange() {
  if (conn_) conn_->detach();
}

// ---- Client -------------------------------------------------------------------------------

Result<std::unique_ptr<Client>> Client::create(uv_loop_t* loop, ClientOptions opts) {
  auto ctx = tls::ClientContext::create(opts.extra_ca_file);
  if (!ctx.ok()) return ctx.error();
  return std::unique_ptr<Client>(new Client(loop, std::move(opts), std::move(ctx.value())));
}

Client::Client(uv_loop_t* loop, ClientOptions opts, std::unique_ptr<tls::ClientContext> tls)
    : loop_(loop), opts_(std::move(opts)), tls_(std::move(tls)) {}

Client::~Client() {
  // Connections outlive us until their close callbacks run; they must not call back.
  std::vector<Connection*> all(conns_.begin(), conns_.end());
  conns_.clear();
  idle_.clear();
  for (Connection* c : all) {
    c->forget_client();
    c->close();
  }
}

std::unique_ptr<Exchange> Client::start(const Origin& origin, std::string_view method, ExchangeHandler* handler) {
  auto ex = std::make_unique<Exchange>(Exchange::Key());
  begin(*ex, origin, method, handler, Reuse::Pooled);
  return ex;
}

Exchange& Client::start(std::optional<Exchange>& slot, const Origin& origin, std::string_view method,
                        ExchangeHandler* handler, Reuse reuse) {
  slot.reset();  // detaches the previous exchange before the new one takes the slot
  Exchange& ex = slot.emplace(Exchange::Key());
  begin(ex, origin, method, handler, reuse);
  return ex;
}

void Client::begin(Exchange& ex, const Origin& origin, std::string_view method, ExchangeHandler* handler,
                   Reuse reuse) {
  const bool head_request = method == "HEAD";
  origin.key_into(key_buf_);  // a reused buffer: this runs for every proxied request
  if (Connection* c = reuse == Reuse::Pooled ? take_idle(key_buf_) : nullptr) {
    ex.reused_ = true;
    ex.conn_ = c;
    c->attach(&ex, handler, head_request);
    return;
  }
  Connection* c = Connection::open(this, loop_, origin, opts_, tls_.get());
  conns_.insert(c);
  ex.conn_ = c;
  c->attach(&ex, handler, head_request);
  c->connect();
}

const std::vector<sockaddr_storage>* Client::cached_addresses(const std::string& origin_key) {
  auto it = resolved_.find(origin_key);
  if (it == resolved_.end()) return nullptr;
  if (uv_now(loop_) >= it->second.expires_ms) {
    resolved_.erase(it);
    return nullptr;
  }
  return &it->second.addrs;
}

void Client::remember_addresses(const std::string& origin_key, const std::vector<sockaddr_storage>& addrs) {
  if (opts_.dns_cache_ms <= 0 || addrs.empty()) return;
  // One entry per upstream name, so this stays as small as the service list; the bound only
  // guards against a configuration with very many names.
  constexpr size_t kMaxNames = 1024;
  if (resolved_.size() >= kMaxNames && !resolved_.count(origin_key)) resolved_.clear();
  resolved_[origin_key] = ResolvedName{addrs, uv_now(loop_) + static_cast<uint64_t>(opts_.dns_cache_ms)};
}

size_t Client::idle_connections() const {
  size_t n = 0;
  for (const auto& [key, list] : idle_) n += list.size();
  return n;
}

void Client::close_idle() {
  std::vector<Connection*> idle;
  for (auto& [key, list] : idle_) idle.insert(idle.end(), list.begin(), list.end());
  for (Connection* c : idle) c->close();  // close() calls forget(), which empties idle_
}

bool Client::offer_idle(Connection* c) {
  auto& list = idle_[c->key()];
  if (static_cast<int64_t>(list.size()) >= opts_.max_idle_per_origin) return false;
  list.push_back(c);
  return true;
}

Connection* Client::take_idle(const std::string& key) {
  auto it = idle_.find(key);
  if (it == idle_.end() || it->second.empty()) return nullptr;
  // An emptied list stays: the next offer_idle of this origin (usually this very
  // connection, a moment from now) then allocates nothing.
  Connection* c = it->second.back();
  it->second.pop_back();
  return c;
}

void Client::forget(Connection* c) {
  conns_.erase(c);
  auto it = idle_.find(c->key());
  if (it == idle_.end()) return;
  auto& list = it->second;
  list.erase(std::remove(list.begin(), list.end(), c), list.end());
  if (list.empty()) idle_.erase(it);
}

}  // namespace keypool::upstream
