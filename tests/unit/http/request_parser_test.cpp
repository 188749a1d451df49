// RequestParser: llhttp plus the framing rules and limits keypool enforces itself.
#include <doctest/doctest.h>

#include <optional>
#include <string>
#include <vector>

#include "http/request_parser.h"

using keypool::http::RequestHead;
using keypool::http::RequestParser;
using Status = RequestParser::Status;

namespace {

struct Events : RequestParser::Events {
  std::vector<RequestHead> heads;
  std::string body;
  int complete = 0;
  void on_request_head(RequestHead&& h) override { heads.push_back(std::move(h)); }
  void on_request_body(std::string_view d) override { body.append(d); }
  void on_request_complete() override { ++complete; }
};

// Feeds `bytes` in pieces of `step`; returns the last status and the parse error status.
struct Run {
  Status status = Status::NeedMore;
  int error_status = 0;
};
Run feed(RequestParser& p, const std::string& bytes, size_t step) {
  Run r;
  for (size_t i = 0; i < bytes.size(); i += step) {
    std::string_view piece(bytes.data() + i, std::min(step, bytes.size() - i));
    size_t used = 0;
    r.status = p.feed(piece, &used);
    if (r.status == Status::Error) {
      r.error_status = p.error().status;
      return r;
    }
    if (r.status == Status::Paused) return r;
  }
  return r;
}

}  // namespace

TEST_CASE("request parser: pauses after each message so pipelined requests wait their turn") {
  Events ev;
  RequestParser p({}, &ev);
  std::string two = "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
  size_t used = 0;
  CHECK(p.feed(two, &used) == Status::Paused);
  CHECK(used == two.size() / 2);
  REQUIRE(ev.heads.size() == 1);
  CHECK(ev.heads[0].target == "/a");
  p.resume();
  CHECK(p.feed(std::string_view(two).substr(used), &used) == Status::Paused);
  REQUIRE(ev.heads.size() == 2);
  CHECK(ev.heads[1].target == "/b");
}

TEST_CASE("request parser: ambiguous framing is refused with 400") {
  const char* cases[] = {
      "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
      "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
      "GET / HTTP/1.1\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
      "GET / HTTP/2.0\r\nHost: x\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
      // The same rules whatever the case or place of the fields.
      "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\nHOST: a\r\n\r\n",
      "POST / HTTP/1.1\r\ncontent-length: 1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx",
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\nx",
  };
  for (const char* c : cases) {
    Events ev;
    RequestParser p({}, &ev);
    auto r = feed(p, c, 1 << 20);
    INFO(c);
    CHECK(r.status == Status::Error);
    CHECK(r.error_status == 400);
    CHECK(ev.heads.empty());
  }
}

TEST_CASE("request parser: framing fields are found whatever their case and place") {
  struct Case {
    const char* bytes;
    bool chunked;
    std::optional<uint64_t> content_length;
    const char* body;
  };
  const Case cases[] = {
      {"POST / HTTP/1.1\r\nX-A: 1\r\ncontent-LENGTH:  5 \r\nhOST: x\r\n\r\nhello", false, 5, "hello"},
      {"POST / HTTP/1.1\r\nHost: x\r\nTRANSFER-encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", true,
       std::nullopt, "abc"},
  };
  for (const auto& c : cases) {
    INFO(c.bytes);
    Events ev;
    RequestParser p({}, &ev);
    CHECK(feed(p, c.bytes, 1 << 20).status == Status::Paused);
    REQUIRE(ev.heads.size() == 1);
    CHECK(ev.heads[0].chunked == c.chunked);
    CHECK(ev.heads[0].content_length == c.content_length);
    CHECK(ev.body == c.body);
  }
}

TEST_CASE("request parser: the header limit counts the same however the bytes arrive") {
  RequestParser::Limits limits;
  limits.max_header_bytes = 600;
  std::string req = "GET / HTTP/1.1\r\nHost: x\r\n" + std::string(200, 'n') + ": v\r\n\r\n";
  for (size_t step : {size_t(1), size_t(7), req.size()}) {
    Events ev;
    RequestParser p(limits, &ev);
    auto r = feed(p, req, step);
    INFO("step " << step);
    CHECK(r.status == Status::Paused);
    CHECK(ev.heads.size() == 1);
  }
  std::string big = "GET / HTTP/1.1\r\nHost: x\r\nX: " + std::string(700, 'v') + "\r\n\r\n";
  Events ev;
  RequestParser p(limits, &ev);
  CHECK(feed(p, big, 13).error_status == 431);
}

TEST_CASE("request parser: a head given back is reused for the next request, with nothing of the old one left") {
  Events ev;
  RequestParser p({}, &ev);
  const std::string token(40, 't');
  const std::string big(4000, 'b');
  std::string first = "POST /v1/openai/chat/completions?x=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token +
                      "\r\nX-Big: " + big + "\r\nX-Extra: 1\r\nContent-Length: 2\r\n\r\nhi";
  size_t used = 0;
  REQUIRE(p.feed(first, &used) == Status::Paused);
  REQUIRE(ev.heads.size() == 1);
  REQUIRE(ev.heads[0].headers.size() == 5);
  const char* auth_storage = ev.heads[0].headers[1].value.data();
  const char* target_storage = ev.heads[0].target.data();
  p.recycle(ev.heads[0]);
  p.resume();

  // Fewer headers, a shorter target, the huge header's slot taken by a short one.
  std::string second = "GET /v1/openai/models/gpt-4o-mini HTTP/1.1\r\nHost: y\r\nAuthorization: Bearer " +
                       std::string(40, 'u') + "\r\nX-Small: s\r\n\r\n";
  REQUIRE(p.feed(second, &used) == Status::Paused);
  REQUIRE(ev.heads.size() == 2);
  const RequestHead& h = ev.heads[1];
  CHECK(h.method == "GET");
  CHECK(h.target == "/v1/openai/models/gpt-4o-mini");
  CHECK(!h.content_length);
  CHECK(!h.has_body());
  REQUIRE(h.headers.size() == 3);
  CHECK(h.headers[0].name == "Host");
  CHECK(h.headers[0].value == "y");
  CHECK(h.headers[1].value == "Bearer " + std::string(40, 'u'));
  CHECK(h.headers[2].name == "X-Small");
  CHECK(h.headers[2].value == "s");
  // The storage came back: the same strings hold the new values.
  CHECK(h.headers[1].value.data() == auth_storage);
  CHECK(h.target.data() == target_storage);
  // The huge value's storage was not kept for a short one.
  CHECK(h.headers[2].value.capacity() < big.size());
}

TEST_CASE("request parser: a head given back mid-request or smaller than its own is ignored") {
  Events ev;
  RequestParser p({}, &ev);
  size_t used = 0;
  std::string one = "GET /a HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\n\r\n";
  REQUIRE(p.feed(one, &used) == Status::Paused);
  p.resume();
  // Half a request: the parser is building a head, which a recycled one must not replace.
  REQUIRE(p.feed("GET /b HTTP/1.1\r\nHost: y\r\n", &used) == Status::NeedMore);
  p.recycle(ev.heads[0]);
  REQUIRE(p.feed("C: 3\r\n\r\n", &used) == Status::Paused);
  REQUIRE(ev.heads.size() == 2);
  CHECK(ev.heads[1].target == "/b");
  REQUIRE(ev.heads[1].headers.size() == 2);
  CHECK(ev.heads[1].headers[0].value == "y");
  CHECK(ev.heads[1].headers[1].name == "C");
}

TEST_CASE("request parser: trailers after the head was taken go nowhere, and the next request is clean") {
  Events ev;
  RequestParser p({}, &ev);
  size_t used = 0;
  std::string chunked = "POST /a HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "5\r\nhello\r\n0\r\nX-Trailer: evil\r\nY-Trailer: evil\r\n\r\n";
  REQUIRE(p.feed(chunked, &used) == Status::Paused);
  CHECK(used == chunked.size());
  REQUIRE(ev.heads.size() == 1);
  CHECK(ev.heads[0].headers.size() == 4);
  CHECK(ev.body == "hello");
  p.recycle(ev.heads[0]);
  p.resume();
  REQUIRE(p.feed("GET /b HTTP/1.1\r\nHost: y\r\n\r\n", &used) == Status::Paused);
  REQUIRE(ev.heads.size() == 2);
  REQUIRE(ev.heads[1].headers.size() == 1);
  CHECK(ev.heads[1].headers[0].value == "y");
  CHECK(!ev.heads[1].chunked);
}

// The storage of a recycled head lives on with the connection: the caller's credential in it
// (a header, or api_key in the query) is wiped at once, not left until a later request
// happens to overwrite it.
TEST_CASE("request parser: a recycled head's credentials are wiped") {
  Events ev;
  RequestParser p({}, &ev);
  size_t used = 0;
  REQUIRE(p.feed("GET /v1/x?api_key=kp_query_secret_0123456789 HTTP/1.1\r\nHost: x\r\n"
                 "Authorization: Bearer kp_header_secret_0123456789\r\nX-Api-Key: kp_other_secret_0123456789\r\n"
                 "User-Agent: sdk-user-agent/1.2.3\r\n\r\n",
                 &used) == Status::Paused);
  REQUIRE(ev.heads.size() == 1);
  RequestHead& head = ev.heads[0];
  REQUIRE(head.headers.size() == 4);
  struct Span {
    const char* at;
    size_t n;
    bool zero() const { return std::string_view(at, n) == std::string(n, '\0'); }
  };
  const Span target{head.target.data(), head.target.size()};
  const Span auth{head.headers[1].value.data(), head.headers[1].value.size()};
  const Span api_key{head.headers[2].value.data(), head.headers[2].value.size()};
  const Span agent{head.headers[3].value.data(), head.headers[3].value.size()};
  p.recycle(head);  // the parser now owns that storage, untouched until the next request
  CHECK(target.zero());
  CHECK(auth.zero());
  CHECK(api_key.zero());
  CHECK(std::string_view(agent.at, agent.n) == "sdk-user-agent/1.2.3");  // not a credential: left
}

TEST_CASE("request parser: classifies each header name once, in any case and split") {
  using keypool::http::classify_field;
  using keypool::http::FieldId;
  const std::string a =
      "POST /a HTTP/1.1\r\nhOST: x\r\nContent-LENGTH: 0\r\nX-Api-Key: k\r\nUser-Agent: u\r\n"
      "CONNECTION: keep-alive\r\n\r\n";
  // The same positions under other names: nothing of the first request's ids may remain.
  const std::string b =
      "GET /b HTTP/1.1\r\nUser-Agent: u\r\nHost: x\r\nx-keypool-session: s\r\nAuthorization: t\r\n"
      "Accept: */*\r\n\r\n";
  for (size_t step : {a.size() + b.size(), size_t{1}, size_t{3}}) {
    CAPTURE(step);
    Events ev;
    RequestParser p({}, &ev);
    CHECK(feed(p, a, step).status == Status::Paused);
    p.resume();
    CHECK(feed(p, b, step).status == Status::Paused);
    REQUIRE(ev.heads.size() == 2);
    const std::vector<FieldId> want_a = {FieldId::Host, FieldId::ContentLength, FieldId::XApiKey,
                                         FieldId::Other, FieldId::Connection};
    const std::vector<FieldId> want_b = {FieldId::Other, FieldId::Host, FieldId::XKeypoolSession,
                                         FieldId::Authorization, FieldId::Other};
    REQUIRE(ev.heads[0].headers.size() == want_a.size());
    REQUIRE(ev.heads[1].headers.size() == want_b.size());
    for (size_t i = 0; i < want_a.size(); ++i) CHECK(ev.heads[0].headers[i].id == want_a[i]);
    for (size_t i = 0; i < want_b.size(); ++i) CHECK(ev.heads[1].headers[i].id == want_b[i]);
    for (const auto& head : ev.heads)
      for (const auto& h : head.headers) CHECK(h.id == classify_field(h.name));
  }
}

TEST_CASE("request parser: only a WebSocket offer (or CONNECT) is an upgrade; other offers are plain requests") {
  struct Case {
    const char* head;
    Status status;
    bool upgrade;
  };
  const Case cases[] = {
      {"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", Status::Upgrade, true},
      {"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n\r\n", Status::Upgrade, true},
      {"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMA\r\n\r\n",
       Status::Paused, false},
      {"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: IRC/6.9\r\n\r\n", Status::Paused, false},
      {"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n", Status::Paused, false},  // no Connection token
  };
  for (const auto& c : cases) {
    CAPTURE(c.head);
    Events ev;
    RequestParser p({}, &ev);
    std::string two = std::string(c.head) + "GET /next HTTP/1.1\r\nHost: x\r\n\r\n";
    size_t used = 0;
    CHECK(p.feed(two, &used) == c.status);
    REQUIRE(ev.heads.size() == 1);
    CHECK(ev.heads[0].upgrade == c.upgrade);
    if (c.upgrade) continue;
    // An ignored offer leaves the connection HTTP/1.1: the next request parses.
    CHECK(ev.heads[0].keep_alive);
    p.resume();
    CHECK(p.feed(std::string_view(two).substr(used), &used) == Status::Paused);
    REQUIRE(ev.heads.size() == 2);
    CHECK(ev.heads[1].target == "/next");
  }
}
