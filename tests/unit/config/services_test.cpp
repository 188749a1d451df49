#include "config/services.h"

#include <doctest/doctest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace cfg = keypool::config;
using keypool::config::AuthScheme;

namespace {

std::string source_dir() {
  const char* d = std::getenv("KEYPOOL_SOURCE_DIR");
  return d && *d ? d : ".";
}

// A directory under /tmp that removes itself.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/keypool_services_XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  void put(const std::string& name, const std::string& text) const {
    std::ofstream(path + "/" + name) << text;
  }
};

const std::string kGood = "name: demo\nbase_url: https://api.example.com\nauth_scheme: bearer\n";

std::string yaml_error(const std::string& yaml) {
  auto r = cfg::service_from_yaml(yaml, "services.d/bad.yaml");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == keypool::ErrorCode::Invalid);
  CHECK(r.error().message.find('\n') == std::string::npos);
  return r.error().message;
}

}  // namespace

TEST_CASE("services: auth scheme names round trip") {
  for (auto s :
       {AuthScheme::Bearer, AuthScheme::XApiKey, AuthScheme::XiApiKey, AuthScheme::AuthorizationRaw,
        AuthScheme::AuthorizationToken, AuthScheme::QueryParam}) {
    auto parsed = cfg::parse_auth_scheme(cfg::to_string(s));
    REQUIRE(parsed.ok());
    CHECK(*parsed == s);
  }
  CHECK(cfg::auth_header_name(AuthScheme::AuthorizationToken) == "Authorization");
  CHECK(cfg::auth_header_name(AuthScheme::QueryParam) == "");
  CHECK_FALSE(cfg::parse_auth_scheme("Bearer").ok());
}

TEST_CASE("services: defaults and URL split") {
  auto r = cfg::service_from_yaml(kGood, "x.yaml");
  REQUIRE(r.ok());
  CHECK(r->name == "demo");
  CHECK(r->display_name == "demo");
  CHECK(r->feature == "demo");
  CHECK(r->auth_param == "api_key");
  CHECK(r->rate_limit_rpm == 0);
  CHECK(r->headers.empty());
  CHECK(r->source == "x.yaml");
  CHECK(r->tls);
  CHECK(r->host == "api.example.com");
  CHECK(r->port == 443);
  CHECK(r->base_path == "");
}

TEST_CASE("services: base_url forms") {
  struct Case {
    const char* url;
    bool tls;
    const char* host;
    int port;
    const char* path;
    const char* stored;
  };
  const Case cases[] = {
      {"https://api.groq.com/openai/", true, "api.groq.com", 443, "/openai",
       "https://api.groq.com/openai"},
      {"http://LOCALHOST:8081", false, "localhost", 8081, "", "http://LOCALHOST:8081"},
      {"HTTP://127.0.0.1/", false, "127.0.0.1", 80, "", "HTTP://127.0.0.1"},
      {"http://[::1]:9000/v1", false, "::1", 9000, "/v1", "http://[::1]:9000/v1"},
      {"https://[2001:db8::1]", true, "2001:db8::1", 443, "", "https://[2001:db8::1]"},
      {"https://h.example/a%20b/c", true, "h.example", 443, "/a%20b/c",
       "https://h.example/a%20b/c"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.url);
    auto r = cfg::service_from_yaml(
        std::string("name: s\nauth_scheme: bearer\nbase_url: \"") + c.url + "\"\n", "s.yaml");
    REQUIRE_MESSAGE(r.ok(), r.error().message);
    CHECK(r->tls == c.tls);
    CHECK(r->host == c.host);
    CHECK(r->port == c.port);
    CHECK(r->base_path == c.path);
    CHECK(r->base_url == c.stored);
  }
}

TEST_CASE("services: refusals name file and field") {
  const std::string head = "name: demo\nauth_scheme: bearer\n";
  struct Case {
    std::string yaml;
    const char* message;
  };
  const Case cases[] = {
      {"name: demo\nbase_url: https://a.b\nauth_scheme: foo\n",
       "services.d/bad.yaml: auth_scheme: unknown scheme 'foo' (expected bearer, x-api-key, "
       "xi-api-key, "
       "authorization-raw, authorization-token, query-param)"},
      {"name: demo\nbase_url: https://a.b\n",
       "services.d/bad.yaml: auth_scheme: required (expected bearer, x-api-key, xi-api-key, "
       "authorization-raw, authorization-token, query-param)"},
      {head + "base_url: ftp://files.example.com\n",
       "services.d/bad.yaml: base_url: scheme must be http or https, not 'ftp'"},
      {head + "base_url: api.example.com\n",
       "services.d/bad.yaml: base_url: must be an absolute URL like https://api.example.com"},
      {head + "base_url: https://api.example.com/v1?x=1\n",
       "services.d/bad.yaml: base_url: must not contain a query or fragment"},
      {head + "base_url: https://api.example.com/#frag\n",
       "services.d/bad.yaml: base_url: must not contain a query or fragment"},
      {head + "base_url: https://user:pw@api.example.com\n",
       "services.d/bad.yaml: base_url: must not contain user info (put credentials in keys, not "
       "URLs)"},
      {head + "base_url: https://\n", "services.d/bad.yaml: base_url: host is required"},
      {head + "base_url: https://:443\n", "services.d/bad.yaml: base_url: host is required"},
      {head + "base_url: https://a.b:99999\n",
       "services.d/bad.yaml: base_url: port '99999' must be between 1 and 65535"},
      {head + "base_url: \"https://a.b:\"\n", "services.d/bad.yaml: base_url: port is empty"},
      {head + "base_url: http://::1:80\n",
       "services.d/bad.yaml: base_url: an IPv6 host must be written in brackets, e.g. "
       "http://[::1]:8080"},
      {head + "base_url: http://[zz]\n",
       "services.d/bad.yaml: base_url: host 'zz' is not a valid IPv6 literal"},
      {head + "base_url: http://a..b\n",
       "services.d/bad.yaml: base_url: host 'a..b' is not a valid host name"},
      {head + "base_url: https://a.b/x/../y\n",
       "services.d/bad.yaml: base_url: path must not contain . or .. segments"},
      {head + "base_url: \"https://a.b/x y\"\n",
       "services.d/bad.yaml: base_url: must not contain spaces or control characters"},
      {"auth_scheme: bearer\nbase_url: https://a.b\n", "services.d/bad.yaml: name: required"},
      {"name: Demo\nauth_scheme: bearer\nbase_url: https://a.b\n",
       "services.d/bad.yaml: name: 'Demo' must match [a-z0-9][a-z0-9_-]{0,63}"},
      {"name: _demo\nauth_scheme: bearer\nbase_url: https://a.b\n",
       "services.d/bad.yaml: name: '_demo' must match [a-z0-9][a-z0-9_-]{0,63}"},
      {"name: " + std::string(65, 'a') + "\nauth_scheme: bearer\nbase_url: https://a.b\n",
       "services.d/bad.yaml: name: "
       "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' must match "
       "[a-z0-9][a-z0-9_-]{0,63}"},
      {kGood + "base_path: /x\n",
       "services.d/bad.yaml: base_path: unknown field (expected name, display_name, base_url, "
       "auth_scheme, "
       "auth_param, headers, rate_limit_rpm, feature, accept_query_token, key_errors, health_check)"},
      {kGood + "name: again\n", "services.d/bad.yaml: name: duplicate key"},
      {kGood + "headers:\n  X-Thing: \"a\\rb\"\n",
       "services.d/bad.yaml: headers.X-Thing: value must not contain CR, LF or NUL"},
      {kGood + "headers:\n  X-Thing: \"a\\nb\"\n",
       "services.d/bad.yaml: headers.X-Thing: value must not contain CR, LF or NUL"},
      {kGood + "headers:\n  X-Thing: \"a\\0b\"\n",
       "services.d/bad.yaml: headers.X-Thing: value must not contain CR, LF or NUL"},
      {kGood + "headers:\n  \"Bad Name\": x\n",
       "services.d/bad.yaml: headers: 'Bad Name' is not a valid header name"},
      {kGood + "headers:\n  host: evil\n",
       "services.d/bad.yaml: headers.host: must not be set: keypool manages this header"},
      {kGood + "headers:\n  Content-Length: 5\n",
       "services.d/bad.yaml: headers.Content-Length: must not be set: keypool manages this header"},
      {kGood + "headers:\n  Transfer-Encoding: chunked\n",
       "services.d/bad.yaml: headers.Transfer-Encoding: must not be set: keypool manages this "
       "header"},
      {kGood + "headers:\n  Connection: close\n",
       "services.d/bad.yaml: headers.Connection: must not be set: keypool manages this header"},
      {kGood + "headers:\n  authorization: Bearer x\n",
       "services.d/bad.yaml: headers.authorization: must not be set: auth_scheme bearer puts the "
       "key there"},
      {"name: e\nbase_url: https://a.b\nauth_scheme: xi-api-key\nheaders: {XI-API-KEY: k}\n",
       "services.d/bad.yaml: headers.XI-API-KEY: must not be set: auth_scheme xi-api-key puts the "
       "key there"},
      {kGood + "headers:\n  X-A: 1\n  x-a: 2\n",
       "services.d/bad.yaml: headers.x-a: duplicate header"},
      {kGood + "headers: [a, b]\n",
       "services.d/bad.yaml: headers: must be a mapping of header name to value"},
      {kGood + "headers:\n  X-A: [1]\n", "services.d/bad.yaml: headers.X-A: must be a string"},
      {kGood + "rate_limit_rpm: -1\n",
       "services.d/bad.yaml: rate_limit_rpm: must be an integer between 0 and 1000000"},
      {kGood + "rate_limit_rpm: lots\n",
       "services.d/bad.yaml: rate_limit_rpm: must be an integer between 0 and 1000000"},
      {kGood + "rate_limit_rpm: 1000001\n",
       "services.d/bad.yaml: rate_limit_rpm: must be an integer between 0 and 1000000"},
      {kGood + "auth_param: key\n",
       "services.d/bad.yaml: auth_param: only used with auth_scheme query-param"},
      {"name: q\nbase_url: https://a.b\nauth_scheme: query-param\nauth_param: \"a&b\"\n",
       "services.d/bad.yaml: auth_param: must be 1-64 characters from A-Z a-z 0-9 - _ . ~"},
      {kGood + "feature: Image Gen\n",
       "services.d/bad.yaml: feature: 'Image Gen' must match [a-z0-9][a-z0-9_-]{0,63}"},
      {kGood + "display_name: \"\"\n",
       "services.d/bad.yaml: display_name: must be 1-200 characters without control characters"},
      {kGood + "display_name: [x]\n", "services.d/bad.yaml: display_name: must be a string"},
      {"- a\n", "services.d/bad.yaml: must be a mapping of service fields"},
      {"", "services.d/bad.yaml: must be a mapping of service fields"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.yaml);
    CHECK(yaml_error(c.yaml) == c.message);
  }
}

TEST_CASE("services: hostile text in messages stays on one line") {
  std::string msg = yaml_error("name: \"a\\nb\"\nauth_scheme: bearer\nbase_url: https://a.b\n");
  CHECK(msg == "services.d/bad.yaml: name: 'a\\x0ab' must match [a-z0-9][a-z0-9_-]{0,63}");
  msg = yaml_error("name: a\nbase_url: https://a.b\nauth_scheme: \"x\\ry\"\n");
  CHECK(msg.find('\r') == std::string::npos);
}

TEST_CASE("services: query-param and fixed headers") {
  auto r = cfg::service_from_yaml(
      "name: maps\nbase_url: https://maps.example.com/api/\nauth_scheme: query-param\nauth_param: "
      "key\n"
      "headers:\n  X-Client: keypool\n  Accept: application/json\nrate_limit_rpm: 120\nfeature: "
      "geo\n",
      "maps.yaml");
  REQUIRE_MESSAGE(r.ok(), r.error().message);
  CHECK(r->auth_scheme == AuthScheme::QueryParam);
  CHECK(r->auth_param == "key");
  REQUIRE(r->headers.size() == 2);
  CHECK(r->headers[0].name == "X-Client");  // file order kept
  CHECK(r->headers[1].value == "application/json");
  CHECK(r->rate_limit_rpm == 120);
  CHECK(r->feature == "geo");
  CHECK(r->base_path == "/api");
}

TEST_CASE("services: every shipped services.d file loads") {
  struct Expect {
    const char* name;
    AuthScheme scheme;
    const char* host;
  };
  const Expect expected[] = {
      {"anthropic", AuthScheme::XApiKey, "api.anthropic.com"},
      {"assemblyai", AuthScheme::AuthorizationRaw, "api.assemblyai.com"},
      {"cartesia", AuthScheme::XApiKey, "api.cartesia.ai"},
      {"deepgram", AuthScheme::AuthorizationToken, "api.deepgram.com"},
      {"elevenlabs", AuthScheme::XiApiKey, "api.elevenlabs.io"},
      {"exa", AuthScheme::XApiKey, "api.exa.ai"},
      {"firecrawl", AuthScheme::Bearer, "api.firecrawl.dev"},
      {"gemini", AuthScheme::QueryParam, "generativelanguage.googleapis.com"},
      {"groq", AuthScheme::Bearer, "api.groq.com"},
      {"openai", AuthScheme::Bearer, "api.openai.com"},
      {"serper", AuthScheme::XApiKey, "google.serper.dev"},
      {"tavily", AuthScheme::Bearer, "api.tavily.com"},
  };
  auto loaded = cfg::load_services_dir(source_dir() + "/services.d");
  for (const auto& e : loaded.errors) FAIL_CHECK(e);
  REQUIRE(loaded.services.size() == std::size(expected));
  for (size_t i = 0; i < loaded.services.size(); ++i) {
    const auto& s = loaded.services[i];
    CAPTURE(s.name);
    CHECK(s.name == expected[i].name);
    CHECK(s.auth_scheme == expected[i].scheme);
    CHECK(s.host == expected[i].host);
    CHECK(s.tls);
    CHECK(s.port == 443);
    CHECK(s.base_path == "");
    CHECK(s.feature == s.name);
    CHECK(s.rate_limit_rpm > 0);
    CHECK(s.source == source_dir() + "/services.d/" + s.name + ".yaml");
    if (s.name == "cartesia") {
      REQUIRE(s.headers.size() == 1);
      CHECK(s.headers[0].name == "Cartesia-Version");
      CHECK(s.headers[0].value == "2024-06-10");
    } else {
      CHECK(s.headers.empty());
    }
  }
}

TEST_CASE("services: a directory with bad files still loads the good ones") {
  TempDir dir;
  dir.put("b.yaml", "name: bravo\nbase_url: https://b.example\nauth_scheme: bearer\n");
  dir.put("a.yml", "name: alpha\nbase_url: http://a.example:8080/p\nauth_scheme: x-api-key\n");
  dir.put("c.yaml", "name: charlie\nbase_url: ftp://c.example\nauth_scheme: bearer\n");
  dir.put("d.yaml",
          "name: bravo\nbase_url: https://d.example\nauth_scheme: bearer\n");  // duplicate
  dir.put("e.yaml", "name: [unclosed\n");
  dir.put("notes.txt", "not yaml at all: [");
  dir.put(".hidden.yaml", "garbage: [");
  auto loaded = cfg::load_services_dir(dir.path);
  REQUIRE(loaded.services.size() == 2);
  CHECK(loaded.services[0].name == "alpha");
  CHECK(loaded.services[1].name == "bravo");
  CHECK(loaded.services[1].host == "b.example");  // the first file wins
  REQUIRE(loaded.errors.size() == 3);
  CHECK(loaded.errors[0] ==
        dir.path + "/c.yaml: base_url: scheme must be http or https, not 'ftp'");
  CHECK(loaded.errors[1] ==
        dir.path + "/d.yaml: name: 'bravo' is already defined in " + dir.path + "/b.yaml");
  CHECK(loaded.errors[2].rfind(dir.path + "/e.yaml: line ", 0) == 0);
}

TEST_CASE("services: a missing directory is an error line") {
  auto loaded = cfg::load_services_dir("/tmp/keypool-no-such-dir");
  CHECK(loaded.services.empty());
  REQUIRE(loaded.errors.size() == 1);
  CHECK(loaded.errors[0].rfind("/tmp/keypool-no-such-dir: cannot read services directory: ", 0) ==
        0);
}

TEST_CASE("services: JSON round trip") {
  auto from_yaml = cfg::service_from_yaml(
      "name: cartesia\ndisplay_name: Cartesia TTS\nbase_url: https://api.cartesia.ai/\n"
      "auth_scheme: x-api-key\nheaders: {Cartesia-Version: \"2024-06-10\"}\nrate_limit_rpm: 60\n",
      "c.yaml");
  REQUIRE(from_yaml.ok());
  nlohmann::json j = cfg::service_to_json(*from_yaml);
  CHECK(j["base_url"] == "https://api.cartesia.ai");
  CHECK(j["auth_scheme"] == "x-api-key");
  CHECK(j["headers"]["Cartesia-Version"] == "2024-06-10");
  CHECK_FALSE(j.contains("auth_param"));
  auto back = cfg::service_from_json(j, "admin");
  REQUIRE_MESSAGE(back.ok(), back.error().message);
  CHECK(back->source == "admin");
  CHECK(cfg::service_to_json(*back) == j);
  CHECK(back->display_name == "Cartesia TTS");
  CHECK(back->host == "api.cartesia.ai");

  nlohmann::json q = {{"name", "maps"},
                      {"base_url", "https://m.example"},
                      {"auth_scheme", "query-param"},
                      {"auth_param", "key"}};
  auto qs = cfg::service_from_json(q, "admin");
  REQUIRE(qs.ok());
  CHECK(cfg::service_to_json(*qs)["auth_param"] == "key");
  CHECK(cfg::service_to_json(*cfg::service_from_json(cfg::service_to_json(*qs), "admin")) ==
        cfg::service_to_json(*qs));
}

TEST_CASE("services: JSON refusals name the field") {
  auto err = [](const nlohmann::json& j) {
    auto r = cfg::service_from_json(j, "admin");
    REQUIRE_FALSE(r.ok());
    return r.error().message;
  };
  nlohmann::json ok = {{"name", "demo"}, {"base_url", "https://a.b"}, {"auth_scheme", "bearer"}};
  CHECK(err(nlohmann::json::array()) == "admin: must be a JSON object of service fields");
  auto j = ok;
  j["name"] = 5;
  CHECK(err(j) == "admin: name: must be a string");
  j = ok;
  j["rate_limit_rpm"] = 1.5;
  CHECK(err(j) == "admin: rate_limit_rpm: must be an integer between 0 and 1000000");
  j = ok;
  j["rate_limit_rpm"] = -3;
  CHECK(err(j) == "admin: rate_limit_rpm: must be an integer between 0 and 1000000");
  j = ok;
  j["rate_limit_rpm"] = 18446744073709551615ull;
  CHECK(err(j) == "admin: rate_limit_rpm: must be an integer between 0 and 1000000");
  j = ok;
  j["headers"] = {{"X-A", std::string("a\0b", 3)}};
  CHECK(err(j) == "admin: headers.X-A: value must not contain CR, LF or NUL");
  j = ok;
  j["headers"] = {{"X-A", 1}};
  CHECK(err(j) == "admin: headers.X-A: must be a string");
  j = ok;
  j["headers"] = nlohmann::json::array();
  CHECK(err(j) == "admin: headers: must be an object of header name to value");
  j = ok;
  j["colour"] = "blue";
  CHECK(err(j) ==
        "admin: colour: unknown field (expected name, display_name, base_url, auth_scheme, "
        "auth_param, headers, "
        "rate_limit_rpm, feature, accept_query_token, key_errors, health_check)");
  j = ok;
  j["auth_scheme"] = "basic";
  CHECK(err(j).rfind("admin: auth_scheme: unknown scheme 'basic' (expected ", 0) == 0);
  j = ok;
  j["base_url"] = "ftp://x.y";
  CHECK(err(j) == "admin: base_url: scheme must be http or https, not 'ftp'");
}

TEST_CASE("services: an error quoting input with control bytes stays on one line") {
  // Found by fuzz_service_yaml: a field name holding a raw control byte was echoed as is.
  auto r = keypool::config::service_from_yaml(std::string(":\x01\x00name: n\n", 11), "services.d/x.yaml");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message.find('\n') == std::string::npos);
  INFO(r.error().message);
  CHECK(r.error().message.find("\\x01") != std::string::npos);
}

TEST_CASE("services: key_errors and health_check from YAML and JSON, and back") {
  auto y = cfg::service_from_yaml(
      "name: demo\nbase_url: https://api.example.com\nauth_scheme: x-api-key\n"
      "key_errors:\n"
      "  - {status: 403, body_contains: \"organization has been disabled\", action: suspend}\n"
      "  - {status: 429, body_contains: insufficient_quota, action: suspend, reason: quota}\n"
      "  - {status: 400, action: pass}\n"
      "health_check:\n"
      "  method: GET\n"
      "  path: /v1/models?limit=1\n"
      "  expect: [200, 204]\n"
      "  headers: {anthropic-version: \"2023-06-01\"}\n",
      "demo.yaml");
  REQUIRE_MESSAGE(y.ok(), y.error().message);
  REQUIRE(y->key_errors.size() == 3);
  CHECK(y->key_errors[0].status == 403);
  CHECK(y->key_errors[0].body_contains == "organization has been disabled");
  CHECK(y->key_errors[0].action == cfg::KeyAction::Suspend);
  CHECK(y->key_errors[0].reason == "");
  CHECK(y->key_errors[1].reason == "quota");
  CHECK(y->key_errors[2].action == cfg::KeyAction::Pass);
  REQUIRE(y->health_check);
  CHECK(y->health_check->method == "GET");
  CHECK(y->health_check->path == "/v1/models?limit=1");
  CHECK(y->health_check->expect == std::vector<int>{200, 204});
  REQUIRE(y->health_check->headers.size() == 1);
  CHECK(y->health_check->headers[0].name == "anthropic-version");
  // An admin-defined service goes through JSON and comes back the same.
  auto j = cfg::service_from_json(cfg::service_to_json(*y), "admin");
  REQUIRE_MESSAGE(j.ok(), j.error().message);
  CHECK(cfg::service_to_json(*j) == cfg::service_to_json(*y));
  // health_check defaults: GET, expect [200].
  auto d = cfg::service_from_json(
      nlohmann::json::parse(R"({"name":"d","base_url":"https://x.example","auth_scheme":"bearer",
                                "health_check":{"path":"/ping"}})"),
      "admin");
  REQUIRE(d.ok());
  CHECK(d->health_check->method == "GET");
  CHECK(d->health_check->expect == std::vector<int>{200});
}

TEST_CASE("services: bad key_errors and health_check name the field") {
  auto err = [](const std::string& extra) {
    auto r = cfg::service_from_yaml("name: demo\nbase_url: https://api.example.com\nauth_scheme: bearer\n" + extra,
                                    "f.yaml");
    return r ? std::string("ok") : r.error().message;
  };
  CHECK(err("key_errors: {status: 403}\n") == "f.yaml: key_errors: must be a list of rules");
  CHECK(err("key_errors: [{action: pass}]\n") ==
        "f.yaml: key_errors[0].status: required: an HTTP status 100..599");
  CHECK(err("key_errors: [{status: 700, action: pass}]\n") ==
        "f.yaml: key_errors[0].status: required: an HTTP status 100..599");
  CHECK(err("key_errors: [{status: 403, action: ban}]\n") ==
        "f.yaml: key_errors[0].action: unknown action 'ban' (expected suspend, cooldown, pass)");
  CHECK(err("key_errors: [{status: 403}]\n") ==
        "f.yaml: key_errors[0].action: required: one of suspend, cooldown, pass");
  CHECK(err("key_errors: [{status: 403, action: pass, reason: quota}]\n") ==
        "f.yaml: key_errors[0].reason: only used with action suspend");
  CHECK(err("key_errors: [{status: 403, action: pass, colour: red}]\n") ==
        "f.yaml: key_errors[0].colour: unknown field (expected status, body_contains, action, reason)");
  CHECK(err("key_errors: [{status: 403, body_contains: \"\", action: pass}]\n") ==
        "f.yaml: key_errors[0].body_contains: must be 1-256 printable characters");
  CHECK(err("health_check: {method: POST, path: /x}\n") == "f.yaml: health_check.method: must be GET or HEAD");
  CHECK(err("health_check: {method: GET}\n") ==
        "f.yaml: health_check.path: required: a path starting with '/', without spaces");
  CHECK(err("health_check: {path: /x, expect: []}\n") ==
        "f.yaml: health_check.expect: must be a list of 1-16 HTTP statuses");
  CHECK(err("health_check: {path: /x, headers: {Authorization: x}}\n").find(
            "must not be set: auth_scheme bearer puts the key there") != std::string::npos);
}
