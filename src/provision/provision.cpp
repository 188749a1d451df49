#include "provision/provision.h"

#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include <nlohmann/json.hpp>

#include "admin/endpoints.h"
#include "telemetry/log.h"

namespace keypool::provision {
namespace {

using nlohmann::json;

// One application of the file: the store writes happen as it goes (inside the caller's
// transaction); the memory changes and audit rows wait in `after` and `audit` until it
// has all succeeded.
class Applier {
 public:
  Applier(const config::Bootstrap& b, store::Store& s, state::App& app)
      : b_(b), s_(s), app_(app), now_(app.clock.now_ms()) {}

  Result<void> run() {
    if (auto r = tiers(); !r) return r;
    if (auto r = keys(); !r) return r;
    if (auto r = tokens(); !r) return r;
    if (b_.prune) {
      if (auto r = prune(); !r) return r;
    }
    if (!audit_.empty()) {
      if (auto r = s_.append_audit(audit_); !r) return fail("audit", r.error());
    }
    return Ok{};
  }
  // After the commit only.
  void publish() {
    for (auto& f : after_) f();
  }
  const Outcome& outcome() const { return out_; }

 private:
  Error fail(const std::string& object, const Error& e) const {
    return make_error(ErrorCode::Invalid, b_.file + ": " + object + ": " + e.message);
  }
  void note(const char* action, std::string target, json details, int64_t* counter) {
    audit_.push_back(store::AuditRow{0, now_, "bootstrap", action, std::move(target), details.dump()});
    ++*counter;
  }

  Result<void> tiers() {
    auto existing = s_.list_tiers();
    if (!existing) return fail("tiers", existing.error());
    std::map<std::string, const store::TierRow*> by_name;
    for (const auto& t : *existing) by_name[t.name] = &t;
    for (const auto& t : b_.tiers) {
      auto found = by_name.find(t.name);
      Result<store::TierRow> row = make_error(ErrorCode::Internal, "");
      if (found == by_name.end()) {
        row = s_.create_tier(store::TierRow{t.name, t.features, t.max_wait_ms, 0, store::kSourceBootstrap}, now_);
        if (!row) return fail(t.label, row.error());
        note("tier.create", t.name, {{"features", t.features}}, &out_.created);
      } else if (found->second->features != t.features || found->second->max_wait_ms != t.max_wait_ms) {
        row = s_.update_tier(t.name, store::TierPatch{t.features, t.max_wait_ms});
        if (!row) return fail(t.label, row.error());
        note("tier.update", t.name, {{"features", t.features}, {"max_wait_ms", t.max_wait_ms}}, &out_.updated);
      } else {
        continue;
      }
      after_.push_back([this, policy = admin::tier_policy(*row)] { app_.pool.upsert_tier(policy); });
    }
    return Ok{};
  }

  // Keys the file created earlier, by name.
  Result<std::map<std::string, store::KeyRow>> own_keys() {
    auto all = s_.list_keys();
    if (!all) return fail("keys", all.error());
    std::map<std::string, store::KeyRow> out;
    for (auto& k : *all)
      if (k.source == store::kSourceBootstrap) out.emplace(k.name, std::move(k));
    return out;
  }

  Result<void> keys() {
    auto own = own_keys();
    if (!own) return own.error();
    for (const auto& k : b_.keys) {
      auto value = std::make_shared<Secret>(k.value.clone());
      auto found = own->find(k.name);
      if (found == own->end()) {
        store::NewKey nk;
        nk.name = k.name;
        nk.tier = k.tier;
        nk.service = k.service;
        nk.value = value->clone();
        nk.max_concurrent = k.max_concurrent;
        nk.source = store::kSourceBootstrap;
        auto row = s_.create_key(nk, now_);
        if (!row) return fail(k.label, row.error());
        note("key.create", std::to_string(row->id), {{"name", k.name}, {"tier", k.tier}, {"service", k.service}},
             &out_.created);
        after_.push_back([this, info = admin::key_info(*row), value] { app_.pool.upsert_key(info, value->clone()); });
        continue;
      }
      const store::KeyRow& have = found->second;
      if (have.service != k.service)
        return make_error(ErrorCode::Invalid, b_.file + ": " + k.label + ": service: cannot change from '" +
                                                  have.service + "' to '" + k.service +
                                                  "' (give the key another name to replace it)");
      if (have.tier != k.tier || have.max_concurrent != k.max_concurrent) {
        store::KeyPatch p;
        p.tier = k.tier;
        p.max_concurrent = k.max_concurrent;
        auto row = s_.update_key(have.id, p, now_);
        if (!row) return fail(k.label, row.error());
        note("key.update", std::to_string(have.id), {{"tier", k.tier}, {"max_concurrent", k.max_concurrent}},
             &out_.updated);
        after_.push_back([this, info = admin::key_info(*row)] { app_.pool.update_key(info); });
      }
      auto same = s_.key_value_is(have.id, *value);
      if (!same) return fail(k.label, same.error());
      if (!*same) {
        auto row = s_.rotate_key(have.id, *value, now_);
        if (!row) return fail(k.label, row.error());
        note("key.rotate", std::to_string(have.id), {{"name", k.name}}, &out_.rotated);
        after_.push_back([this, id = have.id, value] { app_.pool.set_value(id, value->clone()); });
      }
    }
    return Ok{};
  }

  Result<std::map<std::string, store::TokenRow>> own_tokens() {
    auto all = s_.list_tokens();
    if (!all) return fail("tokens", all.error());
    std::map<std::string, store::TokenRow> out;
    for (auto& t : *all)
      if (t.source == store::kSourceBootstrap && !t.revoked_at) out.emplace(t.name, std::move(t));
    return out;
  }

  Result<void> tokens() {
    auto own = own_tokens();
    if (!own) return own.error();
    for (const auto& t : b_.tokens) {
      auto found = own->find(t.name);
      if (found == own->end()) {
        store::TokenRow row;
        row.name = t.name;
        row.tier = t.tier;
        row.services = t.services;
        row.rpm = t.rpm;
        row.allow_key_handout = t.allow_key_handout;
        row.hash_hex = t.hash_hex;
        row.prefix = t.prefix;
        row.source = store::kSourceBootstrap;
        auto created = s_.create_token(row, now_);
        if (!created) return fail(t.label, created.error());
        note("token.create", std::to_string(created->id), {{"name", t.name}, {"tier", t.tier}}, &out_.created);
        after_.push_back([this, r = *created] { admin::register_token(app_.tokens, r); });
        continue;
      }
      store::TokenRow row = found->second;
      bool touched = false;
      if (row.hash_hex != t.hash_hex) {
        auto r = s_.rotate_token(row.id, t.hash_hex, t.prefix, 0);
        if (!r) return fail(t.label, r.error());
        row = std::move(*r);
        note("token.rotate", std::to_string(row.id), {{"name", t.name}}, &out_.rotated);
        touched = true;
      }
      if (row.tier != t.tier || row.services != t.services || row.rpm != t.rpm ||
          row.allow_key_handout != t.allow_key_handout) {
        store::TokenPatch p;
        p.tier = t.tier;
        p.services = t.services;
        p.rpm = t.rpm;
        p.allow_key_handout = t.allow_key_handout;
        auto r = s_.update_token(row.id, p);
        if (!r) return fail(t.label, r.error());
        row = std::move(*r);
        note("token.update", std::to_string(row.id),
             {{"tier", t.tier}, {"services", t.services}, {"rpm", t.rpm}, {"allow_key_handout", t.allow_key_handout}},
             &out_.updated);
        touched = true;
      }
      if (touched) after_.push_back([this, row] { admin::register_token(app_.tokens, row); });
    }
    return Ok{};
  }

  // Only rows the file created (source 'bootstrap'); tokens first, then keys, then tiers,
  // so a tier is free by the time it goes.
  Result<void> prune() {
    std::set<std::string> tiers, keys, tokens;
    for (const auto& t : b_.tiers) tiers.insert(t.name);
    for (const auto& k : b_.keys) keys.insert(k.name);
    for (const auto& t : b_.tokens) tokens.insert(t.name);
    auto own_t = own_tokens();
    if (!own_t) return own_t.error();
    for (const auto& [name, row] : *own_t) {
      if (tokens.count(name)) continue;
      if (auto r = s_.revoke_token(row.id, now_); !r) return fail("tokens (prune)", r.error());
      note("token.revoke", std::to_string(row.id), {{"name", name}, {"pruned", true}}, &out_.removed);
      after_.push_back([this, id = row.id] { app_.tokens.remove(id); });
    }
    auto own_k = own_keys();
    if (!own_k) return own_k.error();
    for (const auto& [name, row] : *own_k) {
      if (keys.count(name)) continue;
      if (auto r = s_.delete_key(row.id); !r) return fail("keys (prune)", r.error());
      note("key.delete", std::to_string(row.id), {{"name", name}, {"pruned", true}}, &out_.removed);
      after_.push_back([this, id = row.id] { app_.pool.remove_key(id); });
    }
    auto all_tiers = s_.list_tiers();
    if (!all_tiers) return fail("tiers (prune)", all_tiers.error());
    for (const auto& t : *all_tiers) {
      if (t.source != store::kSourceBootstrap || tiers.count(t.name)) continue;
      auto r = s_.delete_tier(t.name);
      if (!r && r.error().code == ErrorCode::Conflict) {
        // Keys or tokens added through the admin API still use it: they are not the file's
        // to take away, so neither is their tier.
        log::warn("bootstrap: tier kept", {{"tier", t.name}, {"reason", r.error().message}});
        continue;
      }
      if (!r) return fail("tiers (prune)", r.error());
      note("tier.delete", t.name, {{"pruned", true}}, &out_.removed);
      after_.push_back([this, name = t.name] { app_.pool.remove_tier(name); });
    }
    return Ok{};
  }

  const config::Bootstrap& b_;
  store::Store& s_;
  state::App& app_;
  const int64_t now_;
  Outcome out_;
  std::vector<store::AuditRow> audit_;
  std::vector<std::function<void()>> after_;
};

}  // namespace

Result<Outcome> apply(const config::Bootstrap& file, store::Store& s, state::App& app) {
  Applier a(file, s, app);
  if (auto r = s.transaction([&] { return a.run(); }); !r) {
    if (r.error().code == ErrorCode::Invalid) return r.error();
    return make_error(ErrorCode::Invalid, file.file + ": " + r.error().message);
  }
  a.publish();
  const Outcome& o = a.outcome();
  log::info("bootstrap file applied", {{"file", file.file}, {"created", o.created}, {"updated", o.updated},
                                       {"rotated", o.rotated}, {"removed", o.removed}});
  return o;
}

void reload(state::App& app, const std::string& path) {
  app.store.post([&app, path](store::Store& s) {
    auto file = config::load_bootstrap(path, [](const char* n) { return std::getenv(n); });
    if (!file) {
      log::error("bootstrap file refused, running state kept", {{"error", file.error().message}});
      return;
    }
    if (auto r = apply(*file, s, app); !r)
      log::error("bootstrap file refused, running state kept", {{"error", r.error().message}});
  });
}

}  // namespace keypool::provision
