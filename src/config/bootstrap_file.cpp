#include "config/bootstrap_file.h"

#include <algorithm>
#include <cstdio>
#include <set>

#include "base/strings.h"
#include "config/parse_util.h"

// SHA-256 of a token given by value: OpenSSL directly, as auth does, so the config room
// needs neither auth nor crypto.
#include <openssl/evp.h>

namespace keypool::config {
namespace {

constexpr size_t kMaxSecret = 8192;

// Where the parse is: the file, and the object being read.
struct Ctx {
  const std::string& file;
  const GetEnv& getenv;
  const ReadFile& read;
};

Error bad(const Ctx& c, const std::string& object, std::string_view field, std::string_view problem) {
  return field_error(c.file, field.empty() ? object : object + ": " + std::string(field), problem);
}

bool valid_name(std::string_view s) {  // tiers and features: 1-64 of [A-Za-z0-9_.-]
  return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
           ch == '.' || ch == '-';
  });
}

bool valid_service(std::string_view s) {  // [a-z0-9][a-z0-9_-]{0,63}
  if (s.empty() || s.size() > 64) return false;
  if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9'))) return false;
  return std::all_of(s.begin(), s.end(), [](char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-';
  });
}

std::optional<std::string> read_whole_file(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return std::nullopt;
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0 && text.size() <= 1 << 20) text.append(buf, n);
  bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return std::nullopt;
  return text;
}

std::string sha256_hex(std::string_view data) {
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), d, &len, EVP_sha256(), nullptr) != 1 || len != 32) return {};
  std::string out(64, '0');
  hex_encode_to(std::string_view(reinterpret_cast<const char*>(d), len), out.data());
  return out;
}

// One mapping's fields, checked against the allowed names (the first unknown one is an error).
using Fields = std::map<std::string, YAML::Node>;
Result<Fields> fields_of(const Ctx& c, const YAML::Node& node, const std::string& object,
                         std::initializer_list<std::string_view> allowed) {
  if (!node.IsMap()) return bad(c, object, "", "must be a mapping");
  auto entries = yaml_map_entries(node, c.file, object);
  if (!entries) return entries.error();
  Fields out;
  for (auto& [k, v] : *entries) {
    if (std::find(allowed.begin(), allowed.end(), k) == allowed.end()) {
      if (k == "value" || k == "key" || k == "token")
        return bad(c, object, k, "secrets are never written in this file; use value_env or value_file");
      return bad(c, object, k, "unknown field (expected " + join_names(std::vector<std::string_view>(allowed)) + ")");
    }
    out[k] = v;
  }
  return out;
}

Result<std::string> scalar(const Ctx& c, const Fields& f, const std::string& object, const std::string& key,
                           bool required) {
  auto it = f.find(key);
  if (it == f.end() || it->second.IsNull()) {
    if (required) return bad(c, object, key, "is required");
    return std::string();
  }
  if (!it->second.IsScalar()) return bad(c, object, key, "must be a string");
  return it->second.Scalar();
}

Result<int64_t> integer(const Ctx& c, const Fields& f, const std::string& object, const std::string& key,
                        int64_t lo, int64_t hi, int64_t def) {
  auto it = f.find(key);
  if (it == f.end() || it->second.IsNull()) return def;
  auto v = it->second.IsScalar() ? parse_uint(it->second.Scalar()) : std::nullopt;
  if (!v || static_cast<int64_t>(*v) < lo || static_cast<int64_t>(*v) > hi)
    return bad(c, object, key, "must be an integer from " + std::to_string(lo) + " to " + std::to_string(hi));
  return static_cast<int64_t>(*v);
}

Result<bool> boolean(const Ctx& c, const Fields& f, const std::string& object, const std::string& key) {
  auto it = f.find(key);
  if (it == f.end() || it->second.IsNull()) return false;
  if (!it->second.IsScalar() || (it->second.Scalar() != "true" && it->second.Scalar() != "false"))
    return bad(c, object, key, "must be true or false");
  return it->second.Scalar() == "true";
}

// A secret from value_env or value_file (exactly one). A file's trailing newline (editors,
// `echo >`) is not part of the value.
Result<Secret> secret_from(const Ctx& c, const Fields& f, const std::string& object, bool required) {
  auto env = scalar(c, f, object, "value_env", false);
  if (!env) return env.error();
  auto file = scalar(c, f, object, "value_file", false);
  if (!file) return file.error();
  if (!env->empty() && !file->empty()) return bad(c, object, "value_env", "give value_env or value_file, not both");
  Secret value;
  if (!env->empty()) {
    const char* v = c.getenv(env->c_str());
    if (!v || !*v) return bad(c, object, "value_env", "environment variable " + quote(*env) + " is not set or empty");
    value = Secret(std::string(v));
  } else if (!file->empty()) {
    auto text = c.read(*file);
    if (!text) return bad(c, object, "value_file", "cannot read " + quote(*file));
    Secret whole(std::move(*text));
    auto v = whole.view();
    while (!v.empty() && (v.back() == '\n' || v.back() == '\r')) v.remove_suffix(1);
    value = Secret(std::string(v));
    if (value.view().empty()) return bad(c, object, "value_file", quote(*file) + " is empty");
  } else {
    if (required) return bad(c, object, "value_env", "is required (or value_file)");
    return Secret();
  }
  const char* field = env->empty() ? "value_file" : "value_env";
  if (value.size() > kMaxSecret) return bad(c, object, field, "the value is longer than 8192 characters");
  for (char ch : value.view())
    if (ch < 0x21 || ch > 0x7e) return bad(c, object, field, "the value must be visible ASCII without spaces");
  return value;
}

std::string label_of(const char* list, size_t i, const std::string& name) {
  std::string q = quote(name);  // 'name', escaped and cut: the label stays one line
  return std::string(list) + "[" + std::to_string(i) + "]" + (name.empty() ? "" : " (" + q.substr(1, q.size() - 2) + ")");
}

// A list of mappings; each gets its label "<list>[i] (<name>)".
Result<std::vector<std::pair<std::string, YAML::Node>>> items(const Ctx& c, const Fields& top, const char* list) {
  std::vector<std::pair<std::string, YAML::Node>> out;
  auto it = top.find(list);
  if (it == top.end() || it->second.IsNull()) return out;
  if (!it->second.IsSequence()) return bad(c, list, "", "must be a list");
  for (size_t i = 0; i < it->second.size(); ++i) {
    YAML::Node n = it->second[i];
    std::string name = n.IsMap() && n["name"] && n["name"].IsScalar() ? n["name"].Scalar() : "";
    out.emplace_back(label_of(list, i, name), n);
  }
  return out;
}

Result<BootstrapTier> read_tier(const Ctx& c, const std::string& object, const YAML::Node& n) {
  auto f = fields_of(c, n, object, {"name", "features", "max_wait_ms"});
  if (!f) return f.error();
  BootstrapTier t;
  t.label = object;
  auto name = scalar(c, *f, object, "name", true);
  if (!name) return name.error();
  if (!valid_name(*name)) return bad(c, object, "name", "use 1-64 of A-Z a-z 0-9 _ . -");
  t.name = *name;
  auto feats = f->find("features");
  if (feats == f->end() || !feats->second.IsMap() || feats->second.size() == 0)
    return bad(c, object, "features", "must be a non-empty mapping of feature -> requests per minute");
  auto entries = yaml_map_entries(feats->second, c.file, object + ": features");
  if (!entries) return entries.error();
  for (auto& [feature, rpm] : *entries) {
    if (!valid_name(feature)) return bad(c, object, "features", "invalid feature name " + quote(feature));
    auto v = rpm.IsScalar() ? parse_uint(rpm.Scalar()) : std::nullopt;
    if (!v || *v < 1 || *v > 1'000'000) return bad(c, object, "features." + feature, "must be an integer from 1 to 1000000");
    t.features[feature] = static_cast<int64_t>(*v);
  }
  auto wait = integer(c, *f, object, "max_wait_ms", 0, 60'000, 0);
  if (!wait) return wait.error();
  t.max_wait_ms = *wait;
  return t;
}

Result<BootstrapKey> read_key(const Ctx& c, const std::string& object, const YAML::Node& n) {
  auto f = fields_of(c, n, object, {"name", "tier", "service", "value_env", "value_file", "max_concurrent"});
  if (!f) return f.error();
  BootstrapKey k;
  k.label = object;
  auto name = scalar(c, *f, object, "name", true);
  if (!name) return name.error();
  if (name->size() > 128) return bad(c, object, "name", "longer than 128 characters");
  k.name = *name;
  auto tier = scalar(c, *f, object, "tier", true);
  if (!tier) return tier.error();
  k.tier = *tier;
  auto service = scalar(c, *f, object, "service", false);
  if (!service) return service.error();
  if (!service->empty() && !valid_service(*service)) return bad(c, object, "service", "not a valid service name");
  k.service = *service;
  auto maxc = integer(c, *f, object, "max_concurrent", 0, 100'000, 0);
  if (!maxc) return maxc.error();
  k.max_concurrent = *maxc;
  auto value = secret_from(c, *f, object, true);
  if (!value) return value.error();
  k.value = std::move(value.value());
  return k;
}

Result<BootstrapToken> read_token(const Ctx& c, const std::string& object, const YAML::Node& n) {
  auto f = fields_of(c, n, object,
                     {"name", "tier", "services", "rpm", "allow_key_handout", "value_env", "value_file", "sha256"});
  if (!f) return f.error();
  BootstrapToken t;
  t.label = object;
  auto name = scalar(c, *f, object, "name", true);
  if (!name) return name.error();
  if (name->size() > 128) return bad(c, object, "name", "longer than 128 characters");
  t.name = *name;
  auto tier = scalar(c, *f, object, "tier", true);
  if (!tier) return tier.error();
  t.tier = *tier;
  if (auto s = f->find("services"); s != f->end() && !s->second.IsNull()) {
    if (!s->second.IsSequence()) return bad(c, object, "services", "must be a list of service names");
    for (const auto& e : s->second) {
      if (!e.IsScalar() || !valid_service(e.Scalar()))
        return bad(c, object, "services", "must be a list of service names");
      t.services.push_back(e.Scalar());
    }
  }
  auto rpm = integer(c, *f, object, "rpm", 0, 1'000'000, 0);
  if (!rpm) return rpm.error();
  t.rpm = *rpm;
  auto handout = boolean(c, *f, object, "allow_key_handout");
  if (!handout) return handout.error();
  t.allow_key_handout = *handout;
  auto sha = scalar(c, *f, object, "sha256", false);
  if (!sha) return sha.error();
  auto value = secret_from(c, *f, object, sha->empty());
  if (!value) return value.error();
  if (!sha->empty()) {
    if (!value->empty()) return bad(c, object, "sha256", "give sha256 or value_env/value_file, not both");
    auto raw = hex_decode(*sha);
    if (sha->size() != 64 || !raw) return bad(c, object, "sha256", "must be 64 hex characters");
    t.hash_hex = *sha;
    std::transform(t.hash_hex.begin(), t.hash_hex.end(), t.hash_hex.begin(),
                   [](char ch) { return static_cast<char>(std::tolower(static_cast<unsigned char>(ch))); });
  } else {
    if (value->size() < 16) return bad(c, object, "value_env", "a team token must be at least 16 characters");
    t.hash_hex = sha256_hex(value->view());
    if (t.hash_hex.empty()) return bad(c, object, "value_env", "cannot hash the token");
    t.prefix = std::string(value->view().substr(0, 8));
  }
  return t;
}

template <class T>
Result<void> unique_names(const Ctx& c, const std::vector<T>& objects) {
  std::set<std::string> seen;
  for (const auto& o : objects)
    if (!seen.insert(o.name).second) return bad(c, o.label, "name", quote(o.name) + " is listed twice");
  return Ok{};
}

}  // namespace

Result<Bootstrap> parse_bootstrap(std::string_view text, const std::string& file, const GetEnv& getenv,
                                  const ReadFile& read) {
  Ctx c{file, getenv, read};
  auto doc = load_yaml_document(text, file);
  if (!doc) return doc.error();
  Bootstrap b;
  b.file = file;
  if (doc->IsNull()) return b;
  if (!doc->IsMap()) return field_error(file, "", "must be a mapping with tiers, keys, tokens and prune");
  auto entries = yaml_map_entries(*doc, file, "");
  if (!entries) return entries.error();
  Fields top;
  for (auto& [k, v] : *entries) {
    if (k != "tiers" && k != "keys" && k != "tokens" && k != "prune")
      return field_error(file, k, "unknown field (expected tiers, keys, tokens, prune)");
    top[k] = v;
  }
  if (auto it = top.find("prune"); it != top.end() && !it->second.IsNull()) {
    if (!it->second.IsScalar() || (it->second.Scalar() != "true" && it->second.Scalar() != "false"))
      return field_error(file, "prune", "must be true or false");
    b.prune = it->second.Scalar() == "true";
  }
  auto tiers = items(c, top, "tiers");
  if (!tiers) return tiers.error();
  for (auto& [label, n] : *tiers) {
    auto t = read_tier(c, label, n);
    if (!t) return t.error();
    b.tiers.push_back(std::move(*t));
  }
  auto keys = items(c, top, "keys");
  if (!keys) return keys.error();
  for (auto& [label, n] : *keys) {
    auto k = read_key(c, label, n);
    if (!k) return k.error();
    b.keys.push_back(std::move(*k));
  }
  auto tokens = items(c, top, "tokens");
  if (!tokens) return tokens.error();
  for (auto& [label, n] : *tokens) {
    auto t = read_token(c, label, n);
    if (!t) return t.error();
    b.tokens.push_back(std::move(*t));
  }
  if (auto r = unique_names(c, b.tiers); !r) return r.error();
  if (auto r = unique_names(c, b.keys); !r) return r.error();
  if (auto r = unique_names(c, b.tokens); !r) return r.error();
  return b;
}

Result<Bootstrap> load_bootstrap(const std::string& file, const GetEnv& getenv) {
  auto text = read_whole_file(file);
  if (!text) return field_error(file, "", "cannot read the bootstrap file");
  return parse_bootstrap(*text, file, getenv, read_whole_file);
}

}  // namespace keypool::config
