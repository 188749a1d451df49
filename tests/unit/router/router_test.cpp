#include "router/router.h"

#include <doctest/doctest.h>

#include <string>

using keypool::ErrorCode;
using keypool::router::query_param;
using keypool::router::route;
using keypool::router::RouteKind;

TEST_CASE("router: fixed routes") {
  struct Case {
    const char* method;
    const char* target;
    RouteKind kind;
    const char* path;
    const char* query;
  };
  const Case cases[] = {
      {"GET", "/health", RouteKind::Health, "/health", ""},
      {"HEAD", "/health", RouteKind::Health, "/health", ""},
      {"GET", "/metrics", RouteKind::Metrics, "/metrics", ""},
      {"GET", "/key?feature=image-gen", RouteKind::GetKey, "/key", "feature=image-gen"},
      {"GET", "/key?", RouteKind::GetKey, "/key", ""},
      {"GET", "http://localhost:8080/health", RouteKind::Health, "/health", ""},
      {"GET", "HTTPS://example.com/key?x=1", RouteKind::GetKey, "/key", "x=1"},
      {"GET", "http://[::1]:8080/metrics", RouteKind::Metrics, "/metrics", ""},
      {"GET", "/ui", RouteKind::Ui, "/ui", ""},
      {"GET", "/ui/", RouteKind::Ui, "/ui/", ""},
      {"GET", "/ui/app.js?v=1", RouteKind::Ui, "/ui/app.js", "v=1"},
      {"POST", "/ui/login", RouteKind::Ui, "/ui/login", ""},
  };
  for (const auto& c : cases) {
    CAPTURE(c.target);
    auto r = route(c.method, c.target);
    REQUIRE(r.ok());
    CHECK(r->kind == c.kind);
    CHECK(r->path == c.path);
    CHECK(r->query == c.query);
  }
}

TEST_CASE("router: /ui only owns /ui and what is below it") {
  CHECK_FALSE(route("GET", "/uix").ok());
  CHECK_FALSE(route("GET", "/ui/../admin/keys").ok());  // a dot segment is refused before routing
}

TEST_CASE("router: proxy routes") {
  struct Case {
    const char* method;
    const char* target;
    const char* service;
    const char* rest;
    const char* query;
  };
  const Case cases[] = {
      {"POST", "/v1/openai/v1/chat/completions", "openai", "/v1/chat/completions", ""},
      {"GET", "/v1/openai", "openai", "/", ""},
      {"GET", "/v1/openai/", "openai", "/", ""},
      {"GET", "/v1/openai?x=1", "openai", "/", "x=1"},
      {"GET", "/v1/eleven-labs_2/voices?a=1&b=%20x+y", "eleven-labs_2", "/voices", "a=1&b=%20x+y"},
      {"POST", "/v1/x/a//b", "x", "/a//b", ""},
      {"DELETE", "/v1/x/files/%E2%9C%93", "x", "/files/%E2%9C%93", ""},
      {"GET", "/v1/x/.../a", "x", "/.../a", ""},
      {"GET", "/v1/x/.hidden/a..b", "x", "/.hidden/a..b", ""},
      {"POST", "http://127.0.0.1:8080/v1/groq/openai/v1/models?q", "groq", "/openai/v1/models",
       "q"},
      {"GET", "/v1/a/x?p=../../etc", "a", "/x", "p=../../etc"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.target);
    auto r = route(c.method, c.target);
    REQUIRE(r.ok());
    CHECK(r->kind == RouteKind::Proxy);
    CHECK(r->service == c.service);
    CHECK(r->rest == c.rest);
    CHECK(r->query == c.query);
    CHECK(r->path.empty());  // not copied for the proxy
  }
}

TEST_CASE("router: admin routes") {
  struct Case {
    const char* method;
    const char* target;
    const char* resource;
    const char* id;
    const char* action;
  };
  const Case cases[] = {
      {"GET", "/admin/keys", "keys", "", ""},
      {"GET", "/admin/keys/", "keys", "", ""},
      {"POST", "/admin/keys/7/rotate", "keys", "7", "rotate"},
      {"DELETE", "/admin/tokens/12", "tokens", "12", ""},
      {"GET", "/admin/services/eleven%20labs", "services", "eleven labs", ""},
  };
  for (const auto& c : cases) {
    CAPTURE(c.target);
    auto r = route(c.method, c.target);
    REQUIRE(r.ok());
    CHECK(r->kind == RouteKind::Admin);
    CHECK(r->resource == c.resource);
    CHECK(r->id == c.id);
    CHECK(r->action == c.action);
  }
}

TEST_CASE("router: rejected targets") {
  struct Case {
    const char* method;
    std::string target;
    ErrorCode code;
  };
  const Case cases[] = {
      // unsafe: dot segments raw and encoded
      {"GET", "/v1/x/../admin", ErrorCode::BadRequest},
      {"GET", "/v1/x/./a", ErrorCode::BadRequest},
      {"GET", "/v1/x/..", ErrorCode::BadRequest},
      {"GET", "/v1/x/.", ErrorCode::BadRequest},
      {"GET", "/v1/x/%2e%2e/a", ErrorCode::BadRequest},
      {"GET", "/v1/x/%2E%2E/a", ErrorCode::BadRequest},
      {"GET", "/v1/x/.%2e/a", ErrorCode::BadRequest},
      {"GET", "/v1/x/%2E./a", ErrorCode::BadRequest},
      {"GET", "/v1/x/%2e", ErrorCode::BadRequest},
      {"GET", "/v1/x/..;/a", ErrorCode::BadRequest},
      {"GET", "/../health", ErrorCode::BadRequest},
      // encoded separators and backslashes
      {"GET", "/v1/x/a%2Fb", ErrorCode::BadRequest},
      {"GET", "/v1/x/a%2fb", ErrorCode::BadRequest},
      {"GET", "/v1/x/a%5Cb", ErrorCode::BadRequest},
      {"GET", "/v1/x/a%5cb", ErrorCode::BadRequest},
      {"GET", "/v1/x/a\\b", ErrorCode::BadRequest},
      // a '%' escaped in front of an escaped dot, slash or backslash: "%2e" after one decoding
      {"GET", "/v1/x/%252e%252e/a", ErrorCode::BadRequest},
      {"GET", "/v1/x/%252E%252E/a", ErrorCode::BadRequest},
      {"GET", "/v1/x/a%252fb", ErrorCode::BadRequest},
      {"GET", "/v1/x/a%252Fb", ErrorCode::BadRequest},
      {"GET", "/v1/x/a%255cb", ErrorCode::BadRequest},
      {"GET", "/v1/x/a%255Cb", ErrorCode::BadRequest},
      {"GET", "/v1/x/%25%32%65%25%32%65/a", ErrorCode::BadRequest},
      {"GET", "/v1/x/x%252e", ErrorCode::BadRequest},
      {"GET", "/v1/x\\..\\admin", ErrorCode::BadRequest},
      // control bytes, NUL, malformed escapes
      {"GET", std::string("/v1/x/a\0b", 9), ErrorCode::BadRequest},
      {"GET", "/v1/x/a%00b", ErrorCode::BadRequest},
      {"GET", "/v1/x/a%0d%0aHost:%20evil", ErrorCode::BadRequest},
      {"GET", "/v1/x/a\r\nb", ErrorCode::BadRequest},
      {"GET", "/v1/x/a b", ErrorCode::BadRequest},
      {"GET", "/v1/x/a\x7f", ErrorCode::BadRequest},
      {"GET", "/v1/x/caf\xc3\xa9", ErrorCode::BadRequest},
      {"GET", "/v1/x/a%", ErrorCode::BadRequest},
      {"GET", "/v1/x/a%2", ErrorCode::BadRequest},
      {"GET", "/v1/x/a%zz", ErrorCode::BadRequest},
      {"GET", "/v1/x/a%2g", ErrorCode::BadRequest},
      {"GET", "/v1/x/a?q=\r\n", ErrorCode::BadRequest},
      {"GET", "/v1/x/a?q=a b", ErrorCode::BadRequest},
      // fragments, forms, methods
      {"GET", "/v1/x/a#frag", ErrorCode::BadRequest},
      {"GET", "/v1/x/a?q=1#frag", ErrorCode::BadRequest},
      {"GET", "", ErrorCode::BadRequest},
      {"GET", "v1/x/a", ErrorCode::BadRequest},
      {"OPTIONS", "*", ErrorCode::BadRequest},
      {"CONNECT", "api.openai.com:443", ErrorCode::BadRequest},
      {"GET", "api.openai.com:443", ErrorCode::BadRequest},
      {"GET", "ftp://host/health", ErrorCode::BadRequest},
      {"GET", "http:///health", ErrorCode::BadRequest},
      {"GET", "http://host/../admin", ErrorCode::BadRequest},
      {"TRACE", "/health", ErrorCode::BadRequest},
      {"", "/health", ErrorCode::BadRequest},
      // not found
      {"GET", "/", ErrorCode::NotFound},
      {"GET", "http://host", ErrorCode::NotFound},
      {"GET", "http://host?x=1", ErrorCode::NotFound},
      {"GET", "http://host#f", ErrorCode::BadRequest},
      {"GET", "/nope", ErrorCode::NotFound},
      {"GET", "/health/", ErrorCode::NotFound},
      {"GET", "//health", ErrorCode::NotFound},
      {"GET", "/admin", ErrorCode::NotFound},
      {"GET", "/admin/", ErrorCode::NotFound},
      {"GET", "/admin/keys//rotate", ErrorCode::NotFound},
      {"GET", "/admin/keys/1/rotate/now", ErrorCode::NotFound},
      {"GET", "/v1", ErrorCode::NotFound},
      {"GET", "/v1/", ErrorCode::NotFound},
      {"GET", "/v1//chat", ErrorCode::NotFound},
      {"GET", "/v1/OpenAI/chat", ErrorCode::NotFound},
      {"GET", "/v1/-x/chat", ErrorCode::NotFound},
      {"GET", "/v1/_x/chat", ErrorCode::NotFound},
      {"GET", "/v1/a.b/chat", ErrorCode::NotFound},
      {"GET", "/v1/%6fpenai/chat", ErrorCode::NotFound},
      {"GET", "/v1/" + std::string(65, 'a') + "/chat", ErrorCode::NotFound},
      {"GET", "/v2/openai/chat", ErrorCode::NotFound},
  };
  for (const auto& c : cases) {
    CAPTURE(c.method);
    CAPTURE(c.target);
    auto r = route(c.method, c.target);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == c.code);
    if (c.code == ErrorCode::NotFound) CHECK(r.error().message.find("no route") == 0);
  }
}

TEST_CASE("router: unsafe path message and longest service name") {
  auto r = route("GET", "/v1/x/%2e%2e");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message == "unsafe path");
  auto ok = route("GET", "/v1/" + std::string(64, 'a') + "/x");
  REQUIRE(ok.ok());
  CHECK(ok->service.size() == 64);
}

TEST_CASE("router: query_param") {
  struct Case {
    const char* query;
    const char* name;
    std::optional<std::string> want;
  };
  const Case cases[] = {
      {"feature=image-gen", "feature", "image-gen"},
      {"a=1&feature=x&feature=y", "feature", "x"},
      {"a=hello+world%21", "a", "hello world!"},
      {"a=1%2B1", "a", "1+1"},
      {"api%5Fkey=k", "api_key", "k"},
      {"flag&x=1", "flag", ""},
      {"flag=&x=1", "flag", ""},
      {"x=a=b", "x", "a=b"},
      {"", "x", std::nullopt},
      {"xx=1", "x", std::nullopt},
      {"x=%zz", "x", std::nullopt},
      {"&&x=2", "x", "2"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.query);
    CHECK(query_param(c.query, c.name) == c.want);
  }
}
