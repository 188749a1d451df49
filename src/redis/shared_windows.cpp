#include "redis/shared_windows.h"

#include <openssl/rand.h>

#include "redis/scripts.h"

namespace keypool::redis {
namespace {

bool has_brace(const std::string& s) { return s.find_first_of("{}") != std::string::npos; }

Error unexpected(const char* what, const Reply& r) {
  return make_error(ErrorCode::BadGateway,
                    std::string("redis ") + what + ": " + (r.is_error() ? r.str : "unexpected reply"));
}

// The replies are arrays of integers; anything else is an error value or a broken script.
bool int_array(const Reply& r, size_t n) {
  if (r.type != ReplyType::Array || r.elements.size() < n) return false;
  for (size_t i = 0; i < n; ++i)
    if (r.elements[i].type != ReplyType::Integer) return false;
  return true;
}

}  // namespace

const char* hold_name(Hold h) {
  switch (h) {
    case Hold::Cooling: return "cooling";
    case Hold::Suspended: return "suspended";
    case Hold::Disabled: return "disabled";
  }
  return "cooling";
}

Result<std::unique_ptr<SharedWindows>> SharedWindows::create(Client& client, SharedOptions opts) {
  if (has_brace(opts.prefix)) return make_error(ErrorCode::Invalid, "shared.prefix must not contain '{' or '}'");
  return std::unique_ptr<SharedWindows>(new SharedWindows(client, std::move(opts)));
}

SharedWindows::SharedWindows(Client& client, SharedOptions opts) : client_(client), opts_(std::move(opts)) {
  unsigned char raw[8];
  if (RAND_bytes(raw, sizeof raw) != 1) {
    // Without randomness, the address of this object and the time still separate instances
    // well enough for lease ids, which are not secrets.
    uint64_t v = reinterpret_cast<uintptr_t>(this) ^ static_cast<uint64_t>(time(nullptr));
    memcpy(raw, &v, sizeof raw);
  }
  static const char* kHex = "0123456789abcdef";
  for (unsigned char b : raw) {
    instance_ += kHex[b >> 4];
    instance_ += kHex[b & 0xf];
  }
}

std::string SharedWindows::next_lease_id() { return instance_ + ":" + std::to_string(++next_lease_); }

std::string SharedWindows::tag(const std::string& tier) const { return "{" + opts_.prefix + ":" + tier + "}"; }
std::string SharedWindows::window_key(const std::string& tier, int64_t key_id, const std::string& feature) const {
  return tag(tier) + ":w:" + std::to_string(key_id) + ":" + feature;
}
std::string SharedWindows::total_key(const std::string& tier, int64_t key_id, const std::string& feature) const {
  return tag(tier) + ":n:" + std::to_string(key_id) + ":" + feature;
}
std::string SharedWindows::lease_key(const std::string& tier, int64_t key_id) const {
  return tag(tier) + ":lease:" + std::to_string(key_id);
}
std::string SharedWindows::hold_key(const std::string& tier, int64_t key_id) const {
  return tag(tier) + ":hold:" + std::to_string(key_id);
}
std::string SharedWindows::cursor_key(const std::string& tier, const std::string& group) const {
  return tag(tier) + ":cursor:" + group;
}
std::string SharedWindows::token_window_key(const std::string& token_id) const {
  return "{" + opts_.prefix + ":token:" + token_id + "}:w";
}
std::string SharedWindows::token_total_key(const std::string& token_id) const {
  return "{" + opts_.prefix + ":token:" + token_id + "}:n";
}

void SharedWindows::admit(const AdmitQuery& q, std::function<void(Result<Admission>)> cb) {
  const std::string& group = q.group.empty() ? q.feature : q.group;
  if (has_brace(q.tier) || has_brace(q.feature) || has_brace(group) || q.candidates.empty()) {
    // Answered from the loop, like every other result.
    return client_.answer_later(
        make_error(ErrorCode::Invalid, "shared admission needs candidates and names without '{' or '}'"),
        [cb = std::move(cb)](Result<Reply> r) { cb(r.error()); });
  }
  std::vector<std::string> keys{cursor_key(q.tier, group)};
  std::string lease_id = next_lease_id();
  std::vector<std::string> args{lease_id, std::to_string(opts_.lease_ttl_ms), std::to_string(opts_.window_ms),
                                std::to_string(opts_.cursor_ttl_ms)};
  keys.reserve(1 + 4 * q.candidates.size());
  for (const Candidate& c : q.candidates) {
    keys.push_back(window_key(q.tier, c.key_id, q.feature));
    keys.push_back(total_key(q.tier, c.key_id, q.feature));
    keys.push_back(lease_key(q.tier, c.key_id));
    keys.push_back(hold_key(q.tier, c.key_id));
    args.push_back(std::to_string(c.rpm));
    args.push_back(std::to_string(c.max_concurrent));
  }
  client_.eval(scripts::admit(), keys, args,
               [cb = std::move(cb), q, lease_id = std::move(lease_id)](Result<Reply> r) mutable {
                 if (!r.ok()) return cb(r.error());
                 const Reply& rep = r.value();
                 if (!int_array(rep, 2)) return cb(unexpected("admission", rep));
                 Admission a;
                 if (rep.elements[0].integer == 0) {
                   if (!int_array(rep, 3)) return cb(unexpected("admission", rep));
                   a.retry_after_ms = rep.elements[1].integer;
                   a.now_ms = rep.elements[2].integer;
                   return cb(std::move(a));
                 }
                 if (!int_array(rep, 4) || rep.elements[1].integer < 1 ||
                     static_cast<size_t>(rep.elements[1].integer) > q.candidates.size())
                   return cb(unexpected("admission", rep));
                 const Candidate& c = q.candidates[static_cast<size_t>(rep.elements[1].integer - 1)];
                 a.lease = SharedLease{q.tier, q.feature, c.key_id, std::move(lease_id), rep.elements[2].integer,
                                       c.max_concurrent > 0};
                 a.now_ms = rep.elements[3].integer;
                 cb(std::move(a));
               });
}

void SharedWindows::end_lease(const SharedLease& l, bool give_back, std::function<void(Result<void>)> cb) {
  std::vector<std::string> keys{lease_key(l.tier, l.key_id), window_key(l.tier, l.key_id, l.feature),
                                total_key(l.tier, l.key_id, l.feature)};
  std::vector<std::string> args{l.lease_id, std::to_string(give_back ? l.granted_at_ms : 0)};
  client_.eval(scripts::release(), keys, args, [cb = std::move(cb)](Result<Reply> r) {
    if (!cb) return;
    if (!r.ok()) return cb(r.error());
    if (!int_array(r.value(), 2)) return cb(unexpected("release", r.value()));
    cb(Ok{});
  });
}

void SharedWindows::release(const SharedLease& l, std::function<void(Result<void>)> cb) {
  end_lease(l, false, std::move(cb));
}

void SharedWindows::refund(const SharedLease& l, std::function<void(Result<void>)> cb) {
  end_lease(l, true, std::move(cb));
}

void SharedWindows::hold(const std::string& tier, int64_t key_id, Hold kind, int64_t ms,
                         std::function<void(Result<void>)> cb) {
  client_.eval(scripts::set_hold(), {hold_key(tier, key_id)}, {hold_name(kind), std::to_string(ms)},
               [cb = std::move(cb)](Result<Reply> r) {
                 if (!cb) return;
                 if (!r.ok()) return cb(r.error());
                 if (r->type != ReplyType::Integer) return cb(unexpected("hold", r.value()));
                 cb(Ok{});
               });
}

void SharedWindows::admit_token(const std::string& token_id, int64_t rpm,
                                std::function<void(Result<TokenAdmission>)> cb) {
  client_.eval(scripts::token_window(), {token_window_key(token_id), token_total_key(token_id)},
               {std::to_string(rpm), std::to_string(opts_.window_ms)}, [cb = std::move(cb)](Result<Reply> r) {
                 if (!r.ok()) return cb(r.error());
                 if (!int_array(r.value(), 2)) return cb(unexpected("token window", r.value()));
                 TokenAdmission t;
                 t.granted = r->elements[0].integer == 1;
                 (t.granted ? t.granted_at_ms : t.retry_after_ms) = r->elements[1].integer;
                 cb(t);
               });
}

}  // namespace keypool::redis
