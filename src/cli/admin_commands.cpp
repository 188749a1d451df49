#include "cli/admin_commands.h"

#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/secret.h"
#include "base/strings.h"
#include "cli/admin_client.h"
#include "cli/args.h"
#include "cli/table.h"
#include "rewrite/rewrite.h"
#include "config/services.h"

namespace keypool::cli {

using nlohmann::json;

const char* const kAdminUsage =
    "admin commands (call a running keypool; ADMIN_TOKEN from the environment,\n"
    "--url URL or KEYPOOL_URL, default http://127.0.0.1:8080; --json prints the raw answer):\n"
    "  tiers add NAME --feature F=RPM [--feature F=RPM ...] [--max-wait-ms N]\n"
    "  tiers list | tiers rm NAME\n"
    "  tiers update NAME [--feature F=RPM ...] [--max-wait-ms N]   features replace the tier's\n"
    "  keys add --name N --tier T [--service S] [--expires-at T] [--max-concurrent N]\n"
    "           [--value-file FILE] [--validate]  value from FILE or stdin, never an argument\n"
    "  keys list | keys disable ID [--reason R] | keys enable ID | keys rm ID\n"
    "  keys test ID                      probe the key now (exit 1 if it does not pass)\n"
    "  keys rotate ID [--value-file FILE] the new value from FILE or stdin\n"
    "  tokens create --name N --tier T [--service S ...] [--expires-at T] [--rpm N]\n"
    "                [--allow-key-handout true|false]\n"
    "  tokens update ID [--name N] [--services S,S|''] [--rpm N] [--expires-at T|none]\n"
    "                [--allow-key-handout true|false]\n"
    "  tokens rotate ID [--grace-s N]    a new secret; the old one works N more seconds\n"
    "  tokens list | tokens revoke ID\n"
    "  services list | services rm NAME\n"
    "  services add [--file FILE]        a JSON or YAML definition from FILE or stdin\n"
    "  (T: Unix seconds or 2027-01-01T00:00:00Z)\n";

namespace {

const char* const kTiersUsage =
    "usage: keypool tiers add NAME --feature F=RPM [--feature F=RPM ...] [--max-wait-ms N]\n"
    "       keypool tiers list\n"
    "       keypool tiers update NAME [--feature F=RPM ...] [--max-wait-ms N]\n"
    "       keypool tiers rm NAME\n";
const char* const kKeysUsage =
    "usage: keypool keys add --name N --tier T [--service S] [--expires-at T] [--max-concurrent "
    "N]\n"
    "                        [--value-file FILE]   (otherwise the value is read from stdin)\n"
    "                        [--validate]          (probe the service first; refuse a bad key)\n"
    "       keypool keys list\n"
    "       keypool keys test ID\n"
    "       keypool keys disable ID [--reason R]\n"
    "       keypool keys enable ID\n"
    "       keypool keys rotate ID [--value-file FILE]   (otherwise from stdin)\n"
    "       keypool keys rm ID\n";
const char* const kTokensUsage =
    "usage: keypool tokens create --name N --tier T [--service S ...] [--expires-at T] [--rpm N]\n"
    "                             [--allow-key-handout true|false]\n"
    "       keypool tokens update ID [--name N] [--services S,S|''] [--rpm N] [--expires-at T|none]\n"
    "                             [--allow-key-handout true|false]\n"
    "       keypool tokens rotate ID [--grace-s N]\n"
    "       keypool tokens list\n"
    "       keypool tokens revoke ID\n";
const char* const kServicesUsage =
    "usage: keypool services list\n"
    "       keypool services add [--file FILE]   (JSON or YAML; otherwise from stdin)\n"
    "       keypool services rm NAME\n";

const char* group_usage(const std::string& group) {
  if (group == "tiers") return kTiersUsage;
  if (group == "keys") return kKeysUsage;
  if (group == "tokens") return kTokensUsage;
  return kServicesUsage;
}

// A usage error names what is wrong, then shows the group's usage; exit 2.
int usage_error(const std::string& group, const std::string& message) {
  std::fprintf(stderr, "keypool: %s\n%s", message.c_str(), group_usage(group));
  return kUsage;
}

// One subcommand being run: its options, its group (for usage text) and what it parsed.
struct Cmd {
  const Options& o;
  std::string group;
  std::string verb;
  std::vector<std::string> rest;  // arguments after the verb
};

// ---- the call --------------------------------------------------------------------------

// Sends one admin call. With --json the answer's body is printed as it came. On success
// fills out (when given) and returns kOk; otherwise prints why and returns the exit code.
int call(const Cmd& c, const std::string& method, const std::string& path, const std::string& body,
         json* out) {
  const char* token = std::getenv("ADMIN_TOKEN");
  if (!token || !*token) {
    std::fprintf(
        stderr,
        "keypool: env: ADMIN_TOKEN: required for admin commands (never passed as a flag)\n");
    return kUsage;
  }
  std::string url_text = c.o.url;
  if (url_text.empty()) {
    const char* env = std::getenv("KEYPOOL_URL");
    url_text = env && *env ? env : "http://127.0.0.1:8080";
  }
  auto url = parse_admin_url(url_text);
  if (!url) {
    std::fprintf(stderr, "keypool: %s\n", url.error().message.c_str());
    return kUsage;
  }
  AdminClient client(*url, token);
  auto reply = client.call(method, path, body);
  if (!reply) {
    std::fprintf(stderr, "keypool: %s: %s\n", url_text.c_str(), reply.error().message.c_str());
    return kServerError;
  }
  if (c.o.json) {
    std::fputs(reply->body.c_str(), stdout);
    if (reply->body.empty() || reply->body.back() != '\n') std::fputc('\n', stdout);
  }
  json parsed = json::parse(reply->body, nullptr, /*allow_exceptions=*/false);
  if (reply->status >= 300) {
    std::string message = "HTTP " + std::to_string(reply->status);
    if (parsed.is_object() && parsed.contains("error") && parsed["error"].is_object()) {
      const auto& e = parsed["error"];
      if (e.contains("message") && e["message"].is_string())
        message = e["message"].get<std::string>();
      if (e.contains("code") && e["code"].is_string())
        message +=
            " (" + e["code"].get<std::string>() + ", HTTP " + std::to_string(reply->status) + ")";
    }
    std::fprintf(stderr, "keypool: %s\n", message.c_str());
    return kServerError;
  }
  if (parsed.is_discarded()) {
    std::fprintf(stderr, "keypool: the server's answer is not JSON (HTTP %d)\n", reply->status);
    return kServerError;
  }
  if (out) *out = std::move(parsed);
  return kOk;
}

int call(const Cmd& c, const std::string& method, const std::string& path, const json& body,
         json* out) {
  return call(c, method, path, body.is_null() ? std::string() : body.dump(), out);
}

// ---- cells -------------------------------------------------------------------------------

// How a JSON value reads in a table cell: "-" for nothing, lists joined with commas.
std::string cell(const json& v) {
  if (v.is_null()) return "-";
  if (v.is_string()) return v.get<std::string>().empty() ? "-" : v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "yes" : "no";
  if (v.is_array()) {
    std::string s;
    for (const auto& e : v) s += (s.empty() ? "" : ",") + cell(e);
    return s.empty() ? "-" : s;
  }
  if (v.is_object()) {
    std::string s;
    for (auto it = v.begin(); it != v.end(); ++it)
      s += (s.empty() ? "" : ",") + it.key() + "=" + cell(*it);
    return s.empty() ? "-" : s;
  }
  return v.dump();
}

std::string field(const json& obj, const char* name) {
  auto it = obj.find(name);
  return it == obj.end() ? "-" : cell(*it);
}

const json& list_of(const json& answer, const char* name) {
  static const json kEmpty = json::array();
  auto it = answer.find(name);
  return it != answer.end() && it->is_array() ? *it : kEmpty;
}

void print(const Table& t) { std::fputs(t.render().c_str(), stdout); }

// ---- argument helpers --------------------------------------------------------------------

// base/strings.h trim() is HTTP's (spaces and tabs); files and stdin end lines with \n too.
std::string_view trim_space(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// Unix seconds go as a number, anything else as a string the server checks.
json time_arg(const std::string& s) {
  if (auto n = parse_uint(s)) return *n;
  return s;
}

// Reads the value of a key: --value-file, or stdin. From a terminal the echo is off.
Result<Secret> read_key_value(const ParsedArgs& a) {
  std::string raw;
  if (auto file = a.get("--value-file")) {
    std::ifstream in(*file, std::ios::binary);
    if (!in) return make_error(ErrorCode::BadRequest, "--value-file " + *file + ": cannot read it");
    raw.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  } else if (::isatty(STDIN_FILENO)) {
    std::fputs("key value (not echoed): ", stderr);
    termios old{};
    bool restore = ::tcgetattr(STDIN_FILENO, &old) == 0;
    if (restore) {
      termios quiet = old;
      quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
      ::tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
    }
    std::getline(std::cin, raw);
    if (restore) ::tcsetattr(STDIN_FILENO, TCSANOW, &old);
    std::fputc('\n', stderr);
  } else {
    raw.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  Secret holder(std::move(raw));  // wiped however this returns
  std::string_view v = trim_space(holder.view());
  if (v.empty())
    return make_error(ErrorCode::BadRequest,
                      "no key value: give --value-file FILE or pipe it on stdin");
  for (char ch : v)
    if (ch < 0x21 || ch > 0x7e)
      return make_error(ErrorCode::BadRequest,
                        "the key value must be one line of visible ASCII without spaces");
  return Secret(std::string(v));
}

// The JSON body holds the key value until it is sent; wipe it afterwards.
void wipe_string_field(json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || !it->is_string()) return;
  auto& s = it->get_ref<std::string&>();
  if (!s.empty()) explicit_bzero(s.data(), s.size());
}

int send_secret_body(const Cmd& c, const std::string& method, const std::string& path, json& body,
                     json* out) {
  std::string text = body.dump();
  wipe_string_field(body, "key");
  int rc = call(c, method, path, text, out);
  explicit_bzero(text.data(), text.size());
  return rc;
}

// Parses the subcommand's flags and checks how many positionals it has.
std::optional<ParsedArgs> args_or_usage(const Cmd& c, size_t positionals,
                                        std::initializer_list<FlagSpec> flags, int* rc) {
  auto a = parse_args(c.rest, flags);
  if (!a) {
    *rc = usage_error(c.group, c.group + " " + c.verb + ": " + a.error().message);
    return std::nullopt;
  }
  if (a->positional.size() != positionals) {
    *rc =
        usage_error(c.group, c.group + " " + c.verb + ": expected " + std::to_string(positionals) +
                                 " argument" + (positionals == 1 ? "" : "s") + ", got " +
                                 std::to_string(a->positional.size()));
    return std::nullopt;
  }
  return std::move(a.value());
}

// ---- tiers -------------------------------------------------------------------------------

Table tier_table(const json& tiers) {
  Table t({"NAME", "FEATURES", "MAX_WAIT_MS", "CREATED"});
  for (const auto& x : tiers)
    t.add_row(
        {field(x, "name"), field(x, "features"), field(x, "max_wait_ms"), field(x, "created_at")});
  return t;
}

int tiers(const Cmd& c) {
  int rc = kOk;
  json answer;
  if (c.verb == "list") {
    if (!args_or_usage(c, 0, {}, &rc)) return rc;
    if ((rc = call(c, "GET", "/admin/tiers", json(), &answer)) != kOk || c.o.json) return rc;
    print(tier_table(list_of(answer, "tiers")));
    return kOk;
  }
  if (c.verb == "add" || c.verb == "update") {
    const bool add = c.verb == "add";
    auto a = args_or_usage(c, 1, {{"--feature", true}, {"--max-wait-ms"}}, &rc);
    if (!a) return rc;
    const std::string what = "tiers " + c.verb;
    json body = add ? json{{"name", a->positional[0]}, {"features", json::object()}} : json::object();
    if (add && a->all("--feature").empty())
      return usage_error(c.group, what + ": give at least one --feature F=RPM");
    if (!add && !a->has("--feature") && !a->has("--max-wait-ms"))
      return usage_error(c.group, what + ": give --feature or --max-wait-ms");
    for (const auto& f : a->all("--feature")) {
      size_t eq = f.find('=');
      auto rpm = eq == std::string::npos ? std::nullopt : parse_uint(f.substr(eq + 1));
      if (eq == 0 || !rpm)
        return usage_error(c.group, what + ": --feature '" + f + "': expected FEATURE=RPM");
      body["features"][f.substr(0, eq)] = *rpm;
    }
    if (auto w = a->get("--max-wait-ms")) {
      auto n = parse_uint(*w);
      if (!n)
        return usage_error(c.group, what + ": --max-wait-ms must be a whole number of milliseconds");
      body["max_wait_ms"] = *n;
    }
    if (add) {
      if ((rc = call(c, "POST", "/admin/tiers", body, &answer)) != kOk || c.o.json) return rc;
    } else if ((rc = call(c, "PATCH", "/admin/tiers/" + rewrite::percent_encode(a->positional[0]), body,
                          &answer)) != kOk ||
               c.o.json) {
      return rc;
    }
    print(tier_table(json::array({answer})));
    return kOk;
  }
  if (c.verb == "rm") {
    auto a = args_or_usage(c, 1, {}, &rc);
    if (!a) return rc;
    if ((rc = call(c, "DELETE", "/admin/tiers/" + rewrite::percent_encode(a->positional[0]), json(),
                   &answer)) != kOk ||
        c.o.json)
      return rc;
    std::printf("deleted tier %s\n", a->positional[0].c_str());
    return kOk;
  }
  return usage_error(c.group, "unknown tiers command '" + c.verb + "'");
}

// ---- keys --------------------------------------------------------------------------------

Table key_table(const json& keys) {
  Table t({"ID", "NAME", "TIER", "SERVICE", "HINT", "STATE", "INFLIGHT", "REQUESTS", "EXPIRES",
           "NOTE"});
  for (const auto& k : keys) {
    std::string state = k.contains("state")        ? field(k, "state")
                        : k.value("enabled", true) ? "active"
                                                   : "disabled";
    std::string requests = k.contains("counters") ? field(k["counters"], "requests") : "-";
    std::string note = k.contains("disabled_reason")    ? field(k, "disabled_reason")
                       : k.contains("suspended_reason") ? "suspended: " + field(k, "suspended_reason")
                                                        : "";
    t.add_row({field(k, "id"), field(k, "name"), field(k, "tier"), field(k, "service"),
               field(k, "hint"), state, field(k, "inflight"), requests, field(k, "expires_at"),
               note});
  }
  return t;
}

// "3" -> the key or token id; anything else is a usage error.
std::optional<std::string> id_arg(const Cmd& c, const std::string& s, int* rc) {
  auto n = parse_uint(s);
  if (!n || *n == 0) {
    *rc = usage_error(c.group,
                      c.group + " " + c.verb + ": ID must be a positive number, got '" + s + "'");
    return std::nullopt;
  }
  return std::to_string(*n);
}

int keys_add(const Cmd& c) {
  int rc = kOk;
  auto a = args_or_usage(c, 0,
                         {{"--name"},
                          {"--tier"},
                          {"--service"},
                          {"--expires-at"},
                          {"--max-concurrent"},
                          {"--value-file"},
                          {"--validate", false, false}},
                         &rc);
  if (!a) return rc;
  if (!a->has("--name") || !a->has("--tier"))
    return usage_error(c.group, "keys add: --name and --tier are required");
  json body = {{"name", *a->get("--name")}, {"tier", *a->get("--tier")}};
  if (auto s = a->get("--service")) body["service"] = *s;
  if (a->has("--validate")) body["validate"] = true;
  if (auto e = a->get("--expires-at")) body["expires_at"] = time_arg(*e);
  if (auto m = a->get("--max-concurrent")) {
    auto n = parse_uint(*m);
    if (!n) return usage_error(c.group, "keys add: --max-concurrent must be a whole number");
    body["max_concurrent"] = *n;
  }
  auto value = read_key_value(*a);
  if (!value) return usage_error(c.group, "keys add: " + value.error().message);
  body["key"] = std::string(value->view());
  json answer;
  if ((rc = send_secret_body(c, "POST", "/admin/keys", body, &answer)) != kOk || c.o.json)
    return rc;
  print(key_table(json::array({answer})));
  return kOk;
}

// keys test ID: one probe now. Exits 0 when it passed, 1 when it did not (the line says why).
int keys_test(const Cmd& c) {
  int rc = kOk;
  auto a = args_or_usage(c, 1, {}, &rc);
  if (!a) return rc;
  auto id = id_arg(c, a->positional[0], &rc);
  if (!id) return rc;
  json answer;
  if ((rc = call(c, "POST", "/admin/keys/" + *id + "/test", json(), &answer)) != kOk) return rc;
  bool passed = answer.value("result", "") == "pass";
  if (!c.o.json) {
    std::printf("key %s: %s (upstream %s, %s)%s; state %s\n", id->c_str(), field(answer, "result").c_str(),
                field(answer, "upstream_status").c_str(), field(answer, "outcome").c_str(),
                answer.value("resumed", false) ? ", suspension lifted" : "", field(answer, "state").c_str());
    if (!passed) std::printf("%s\n", field(answer, "message").c_str());
  }
  return passed ? kOk : kServerError;
}

int keys(const Cmd& c) {
  int rc = kOk;
  json answer;
  if (c.verb == "add") return keys_add(c);
  if (c.verb == "list") {
    if (!args_or_usage(c, 0, {}, &rc)) return rc;
    if ((rc = call(c, "GET", "/admin/keys", json(), &answer)) != kOk || c.o.json) return rc;
    print(key_table(list_of(answer, "keys")));
    return kOk;
  }
  if (c.verb == "test") return keys_test(c);
  if (c.verb == "disable" || c.verb == "enable" || c.verb == "rotate" || c.verb == "rm") {
    std::initializer_list<FlagSpec> none = {};
    std::initializer_list<FlagSpec> disable = {{"--reason"}};
    std::initializer_list<FlagSpec> rotate = {{"--value-file"}};
    auto a = args_or_usage(c, 1,
                           c.verb == "disable"  ? disable
                           : c.verb == "rotate" ? rotate
                                                : none,
                           &rc);
    if (!a) return rc;
    auto id = id_arg(c, a->positional[0], &rc);
    if (!id) return rc;
    std::string path = "/admin/keys/" + *id;
    if (c.verb == "rm") {
      if ((rc = call(c, "DELETE", path, json(), &answer)) != kOk || c.o.json) return rc;
      std::printf("deleted key %s\n", id->c_str());
      return kOk;
    }
    json body;
    if (c.verb == "rotate") {
      auto value = read_key_value(*a);
      if (!value) return usage_error(c.group, "keys rotate: " + value.error().message);
      body = {{"key", std::string(value->view())}};
      rc = send_secret_body(c, "POST", path + "/rotate", body, &answer);
    } else {
      body = {{"enabled", c.verb == "enable"}};
      if (auto r = a->get("--reason")) body["reason"] = *r;
      rc = call(c, "PATCH", path, body, &answer);
    }
    if (rc != kOk || c.o.json) return rc;
    print(key_table(json::array({answer})));
    return kOk;
  }
  return usage_error(c.group, "unknown keys command '" + c.verb + "'");
}

// ---- tokens ------------------------------------------------------------------------------

Table token_table(const json& tokens) {
  Table t({"ID", "NAME", "TIER", "SERVICES", "RPM", "KEY_HANDOUT", "PREFIX", "EXPIRES", "STATUS", "REQUESTS"});
  for (const auto& x : tokens) {
    std::string status = x.value("revoked", false) ? "revoked" : "active";
    t.add_row({field(x, "id"), field(x, "name"), field(x, "tier"),
               x.contains("services") && !x["services"].empty() ? field(x, "services") : "all",
               field(x, "rpm"), field(x, "allow_key_handout"), field(x, "prefix"), field(x, "expires_at"), status,
               field(x, "requests")});
  }
  return t;
}

// tokens update ID: only the flags given change. --services takes a comma-separated list;
// '' (empty) lets the token use every service again. --expires-at none clears the expiry.
int tokens_update(const Cmd& c) {
  int rc = kOk;
  auto a = args_or_usage(
      c, 1, {{"--name"}, {"--services"}, {"--rpm"}, {"--expires-at"}, {"--allow-key-handout"}}, &rc);
  if (!a) return rc;
  auto id = id_arg(c, a->positional[0], &rc);
  if (!id) return rc;
  json body = json::object();
  if (auto n = a->get("--name")) body["name"] = *n;
  if (auto s = a->get("--services")) {
    body["services"] = json::array();
    for (auto part : split(*s, ','))
      if (!trim_space(part).empty()) body["services"].push_back(std::string(trim_space(part)));
  }
  if (auto r = a->get("--rpm")) {
    auto n = parse_uint(*r);
    if (!n) return usage_error(c.group, "tokens update: --rpm must be a whole number");
    body["rpm"] = *n;
  }
  if (auto e = a->get("--expires-at")) body["expires_at"] = *e == "none" ? json(nullptr) : time_arg(*e);
  if (auto h = a->get("--allow-key-handout")) {
    if (*h != "true" && *h != "false")
      return usage_error(c.group, "tokens update: --allow-key-handout must be true or false");
    body["allow_key_handout"] = *h == "true";
  }
  if (body.empty()) return usage_error(c.group, "tokens update: give at least one field to change");
  json answer;
  if ((rc = call(c, "PATCH", "/admin/tokens/" + *id, body, &answer)) != kOk || c.o.json) return rc;
  print(token_table(json::array({answer})));
  return kOk;
}

int tokens(const Cmd& c) {
  int rc = kOk;
  json answer;
  if (c.verb == "list") {
    if (!args_or_usage(c, 0, {}, &rc)) return rc;
    if ((rc = call(c, "GET", "/admin/tokens", json(), &answer)) != kOk || c.o.json) return rc;
    print(token_table(list_of(answer, "tokens")));
    return kOk;
  }
  if (c.verb == "create") {
    auto a = args_or_usage(
        c, 0, {{"--name"}, {"--tier"}, {"--service", true}, {"--expires-at"}, {"--rpm"}, {"--allow-key-handout"}},
        &rc);
    if (!a) return rc;
    if (!a->has("--name") || !a->has("--tier"))
      return usage_error(c.group, "tokens create: --name and --tier are required");
    json body = {{"name", *a->get("--name")}, {"tier", *a->get("--tier")}};
    if (a->has("--service")) body["services"] = a->all("--service");
    if (auto e = a->get("--expires-at")) body["expires_at"] = time_arg(*e);
    if (auto r = a->get("--rpm")) {
      auto n = parse_uint(*r);
      if (!n) return usage_error(c.group, "tokens create: --rpm must be a whole number");
      body["rpm"] = *n;
    }
    if (auto h = a->get("--allow-key-handout")) {
      if (*h != "true" && *h != "false")
        return usage_error(c.group, "tokens create: --allow-key-handout must be true or false");
      body["allow_key_handout"] = *h == "true";
    }
    if ((rc = call(c, "POST", "/admin/tokens", body, &answer)) != kOk || c.o.json) return rc;
    print(token_table(json::array({answer})));
    std::printf("\ntoken: %s\nThis is the only time the token is shown; store it now.\n",
                field(answer, "token").c_str());
    return kOk;
  }
  if (c.verb == "update") return tokens_update(c);
  if (c.verb == "rotate") {
    auto a = args_or_usage(c, 1, {{"--grace-s"}}, &rc);
    if (!a) return rc;
    auto id = id_arg(c, a->positional[0], &rc);
    if (!id) return rc;
    json body = json::object();
    if (auto g = a->get("--grace-s")) {
      auto n = parse_uint(*g);
      if (!n) return usage_error(c.group, "tokens rotate: --grace-s must be a whole number of seconds");
      body["grace_s"] = *n;
    }
    if ((rc = call(c, "POST", "/admin/tokens/" + *id + "/rotate", body, &answer)) != kOk || c.o.json) return rc;
    print(token_table(json::array({answer})));
    std::printf("\ntoken: %s\nThis is the only time the new token is shown; store it now.\n",
                field(answer, "token").c_str());
    if (!answer["previous_valid_until"].is_null())
      std::printf("The previous token keeps working until %s.\n", field(answer, "previous_valid_until").c_str());
    return kOk;
  }
  if (c.verb == "revoke") {
    auto a = args_or_usage(c, 1, {}, &rc);
    if (!a) return rc;
    auto id = id_arg(c, a->positional[0], &rc);
    if (!id) return rc;
    if ((rc = call(c, "DELETE", "/admin/tokens/" + *id, json(), &answer)) != kOk || c.o.json)
      return rc;
    std::printf("revoked token %s\n", id->c_str());
    return kOk;
  }
  return usage_error(c.group, "unknown tokens command '" + c.verb + "'");
}

// ---- services ----------------------------------------------------------------------------

Table service_table(const json& services) {
  Table t({"NAME", "BASE_URL", "AUTH", "FEATURE", "RPM", "SOURCE"});
  for (const auto& s : services)
    t.add_row({field(s, "name"), field(s, "base_url"), field(s, "auth_scheme"), field(s, "feature"),
               field(s, "rate_limit_rpm"), field(s, "source")});
  return t;
}

// A definition from --file or stdin: JSON goes as written (the server checks it); YAML,
// the services.d format, is checked here and sent as the JSON it means.
Result<std::string> service_body(const ParsedArgs& a) {
  std::string text, source = "stdin";
  if (auto file = a.get("--file")) {
    std::ifstream in(*file, std::ios::binary);
    if (!in) return make_error(ErrorCode::BadRequest, "--file " + *file + ": cannot read it");
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    source = *file;
  } else {
    if (::isatty(STDIN_FILENO))
      return make_error(ErrorCode::BadRequest, "give --file FILE or pipe the definition on stdin");
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  std::string_view body = trim_space(text);
  if (body.empty()) return make_error(ErrorCode::BadRequest, source + ": empty service definition");
  if (body[0] == '{') {
    json j = json::parse(body, nullptr, false);
    if (j.is_discarded()) return make_error(ErrorCode::BadRequest, source + ": not valid JSON");
    return j.dump();
  }
  auto def = config::service_from_yaml(text, source);
  if (!def) return def.error();
  return config::service_to_json(*def).dump();
}

int services(const Cmd& c) {
  int rc = kOk;
  json answer;
  if (c.verb == "list") {
    if (!args_or_usage(c, 0, {}, &rc)) return rc;
    if ((rc = call(c, "GET", "/admin/services", json(), &answer)) != kOk || c.o.json) return rc;
    print(service_table(list_of(answer, "services")));
    return kOk;
  }
  if (c.verb == "add") {
    auto a = args_or_usage(c, 0, {{"--file"}}, &rc);
    if (!a) return rc;
    auto body = service_body(*a);
    if (!body) return usage_error(c.group, "services add: " + body.error().message);
    if ((rc = call(c, "POST", "/admin/services", *body, &answer)) != kOk || c.o.json) return rc;
    print(service_table(json::array({answer})));
    return kOk;
  }
  if (c.verb == "rm") {
    auto a = args_or_usage(c, 1, {}, &rc);
    if (!a) return rc;
    if ((rc = call(c, "DELETE", "/admin/services/" + rewrite::percent_encode(a->positional[0]), json(),
                   &answer)) != kOk ||
        c.o.json)
      return rc;
    std::printf("deleted service %s\n", a->positional[0].c_str());
    return kOk;
  }
  return usage_error(c.group, "unknown services command '" + c.verb + "'");
}

}  // namespace

bool is_admin_command(const std::string& command) {
  return command == "tiers" || command == "keys" || command == "tokens" || command == "services";
}

int run_admin(const Options& o) {
  Cmd c{o, o.command, "", {}};
  if (o.args.empty()) return usage_error(c.group, c.group + ": missing subcommand");
  c.verb = o.args[0];
  c.rest.assign(o.args.begin() + 1, o.args.end());
  for (size_t i = 0; i < o.args.size(); ++i) {
    const auto& a = o.args[i];
    if (a == "--") break;
    if (a == "-h" || a == "--help" || (i == 0 && a == "help")) {
      std::fputs(group_usage(c.group), stdout);
      return kOk;
    }
  }
  if (c.group == "tiers") return tiers(c);
  if (c.group == "keys") return keys(c);
  if (c.group == "tokens") return tokens(c);
  return services(c);
}

}  // namespace keypool::cli
