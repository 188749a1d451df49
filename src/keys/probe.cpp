#include "keys/probe.h"

#include <algorithm>

#include "rewrite/rewrite.h"
#include "upstream/client.h"

namespace keypool::keys {
namespace {

// Owns itself while the exchange runs: the upstream client calls it back, and it lets go
// of itself (after the exchange) when it has its answer.
class Probe final : public upstream::ExchangeHandler {
 public:
  Probe(const config::ServiceDef& svc, std::shared_ptr<const Secret> key, ProbeDone done)
      : svc_(svc), key_(std::move(key)), done_(std::move(done)) {}

  void start(std::shared_ptr<Probe> self, upstream::Client& client) {
    self_ = std::move(self);
    const auto& check = *svc_.health_check;
    auto q = check.path.find('?');
    std::string_view path(check.path), rest = path.substr(0, q);
    std::string_view query = q == std::string::npos ? std::string_view() : path.substr(q + 1);
    upstream::Origin origin{svc_.tls, svc_.host, svc_.port};
    client.start(up_, origin, check.method, this);
    up_->write(rewrite::upstream_head(svc_, {.method = check.method, .rest = rest, .query = query,
                                             .headers = check.headers},
                                      key_->view()));
  }

  void on_response_head(upstream::ResponseHead& head) override {
    status_ = head.status;
    const auto& expect = svc_.health_check->expect;
    if (std::find(expect.begin(), expect.end(), status_) != expect.end()) {
      return finish({ProbeVerdict::Pass, status_, "ok", "upstream answered " + std::to_string(status_)});
    }
  }

  void on_response_body(std::string_view data) override {
    size_t room = kMaxInspectedBody - body_.size();
    body_.append(data.substr(0, room));
    if (body_.size() >= kMaxInspectedBody) judge();
  }

  void on_response_end() override { judge(); }

  void on_error(upstream::ErrorKind kind, const std::string& message) override {
    finish({ProbeVerdict::Error, status_, upstream::error_kind_name(kind), message});
  }

  void on_write_blocked() override {}  // a probe writes one head: nothing to hold back
  void on_writable() override {}

 private:
  // A status outside `expect`: what does the answer say about the key?
  void judge() {
    Outcome o = classify(svc_, status_, body_);
    auto verdict = o.verdict == Verdict::UpstreamFailed ? ProbeVerdict::Error : ProbeVerdict::Fail;
    std::string message = "upstream answered " + std::to_string(status_);
    // Masked whole, then cut: a cut first could leave a piece of the key too short to be
    // recognised as one at the excerpt's end.
    std::string excerpt = body_;
    rewrite::mask_fragments(excerpt, key_->view());
    excerpt.resize(std::min<size_t>(excerpt.size(), 300));
    if (!excerpt.empty()) message += ": " + excerpt;
    finish({verdict, status_, std::string(outcome_name(o)), std::move(message)});
  }

  void finish(ProbeResult r) {
    if (!self_) return;
    auto keep = std::move(self_);  // this object lives until the end of this function
    up_.reset();                   // a probe that stopped early closes its connection
    done_(r);
  }

  config::ServiceDef svc_;  // a copy: the catalog may change while the probe runs
  std::shared_ptr<const Secret> key_;
  ProbeDone done_;
  std::shared_ptr<Probe> self_;
  std::optional<upstream::Exchange> up_;
  int status_ = 0;
  std::string body_;
};

}  // namespace

const char* probe_verdict_name(ProbeVerdict v) {
  switch (v) {
    case ProbeVerdict::Pass: return "pass";
    case ProbeVerdict::Fail: return "fail";
    case ProbeVerdict::Error: return "error";
  }
  return "error";
}

void probe(upstream::Client& client, const config::ServiceDef& svc, std::shared_ptr<const Secret> key,
           ProbeDone done) {
  auto p = std::make_shared<Probe>(svc, std::move(key), std::move(done));
  p->start(p, client);
}

}  // namespace keypool::keys
