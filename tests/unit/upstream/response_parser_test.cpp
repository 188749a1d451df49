// ResponseParser lives in the http room but exists for the upstream client; its tests sit
// here with the client's.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "http/response_parser.h"

namespace {

using keypool::http::ParseStatus;
using keypool::http::ResponseHead;
using keypool::http::ResponseLimits;
using keypool::http::ResponseParser;

struct Recorder : ResponseParser::Sink {
  int heads = 0;
  ResponseHead head;
  std::string body;
  bool stop_on_head = false;
  bool on_head(ResponseHead& h) override {
    ++heads;
    head = h;
    return !stop_on_head;
  }
  bool on_body(std::string_view d) override {
    body.append(d);
    return true;
  }
};

// Feeds one byte at a time, the harshest split, and returns the final status.
ParseStatus feed_bytewise(ResponseParser& p, const std::string& s, size_t* consumed_total = nullptr) {
  ParseStatus st = ParseStatus::NeedMore;
  size_t total = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    auto r = p.feed(s.data() + i, 1);
    total += r.consumed;
    st = r.status;
    if (st != ParseStatus::NeedMore) break;
  }
  if (consumed_total) *consumed_total = total;
  return st;
}

}  // namespace

TEST_CASE("response parser: content-length body split byte by byte") {
  Recorder rec;
  ResponseParser p(&rec);
  std::string msg = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A:  b \r\n\r\nhello";
  CHECK(feed_bytewise(p, msg) == ParseStatus::Complete);
  CHECK(rec.heads == 1);
  CHECK(rec.head.status == 200);
  CHECK(rec.head.reason == "OK");
  CHECK(rec.head.content_length == 5u);
  CHECK(rec.head.keep_alive);
  CHECK(rec.head.headers.size() == 2);
  CHECK(rec.head.headers[1].name == "X-A");
  CHECK(rec.head.headers[1].value == "b");
  CHECK(rec.body == "hello");
}

TEST_CASE("response parser: chunked, reuse across keep-alive responses, leftover bytes") {
  Recorder rec;
  ResponseParser p(&rec);
  std::string msg = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\nEXTRA";
  auto r = p.feed(msg);
  CHECK(r.status == ParseStatus::Complete);
  CHECK(r.consumed == msg.size() - 5);
  CHECK(rec.head.chunked);
  CHECK(!rec.head.content_length);
  CHECK(rec.body == "abcde");
  p.reset(false);
  rec.body.clear();
  r = p.feed("HTTP/1.1 204 No Content\r\n\r\n");
  CHECK(r.status == ParseStatus::Complete);
  CHECK(rec.head.status == 204);
  CHECK(rec.heads == 2);
}

TEST_CASE("response parser: HEAD response has no body despite Content-Length") {
  Recorder rec;
  ResponseParser p(&rec);
  p.reset(true);
  auto r = p.feed("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
  CHECK(r.status == ParseStatus::Complete);
  CHECK(rec.head.content_length == 100u);
  CHECK(rec.head.keep_alive);
}

TEST_CASE("response parser: interim 1xx are skipped, 101 stops with the tunnel bytes left") {
  Recorder rec;
  ResponseParser p(&rec);
  auto r = p.feed("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz");
  CHECK(r.status == ParseStatus::Complete);
  CHECK(rec.heads == 1);
  CHECK(rec.head.status == 200);
  CHECK(rec.head.headers.size() == 1);

  Recorder up;
  ResponseParser q(&up);
  std::string msg = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nRAW";
  r = q.feed(msg);
  CHECK(r.status == ParseStatus::Upgrade);
  CHECK(r.consumed == msg.size() - 3);
  CHECK(up.head.upgrade);
  CHECK(!up.head.keep_alive);
  CHECK(up.body.empty());

  // A 101 without Upgrade headers is still the end of HTTP on this connection.
  Recorder bare;
  ResponseParser b(&bare);
  std::string m2 = "HTTP/1.1 101 Switching Protocols\r\n\r\nRAW";
  r = b.feed(m2);
  CHECK(r.status == ParseStatus::Upgrade);
  CHECK(r.consumed == m2.size() - 3);
}

TEST_CASE("response parser: body delimited by EOF, and truncation") {
  Recorder rec;
  ResponseParser p(&rec);
  auto r = p.feed("HTTP/1.1 200 OK\r\n\r\nsome");
  CHECK(r.status == ParseStatus::NeedMore);
  r = p.feed(" more");
  CHECK(p.finish().status == ParseStatus::Complete);
  CHECK(rec.body == "some more");
  CHECK(!rec.head.keep_alive);

  p.reset(false);
  r = p.feed("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
  CHECK(r.status == ParseStatus::NeedMore);
  CHECK(p.finish().status == ParseStatus::Error);

  p.reset(false);
  r = p.feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab");
  CHECK(p.finish().status == ParseStatus::Error);

  p.reset(false);
  CHECK(p.finish().status == ParseStatus::NeedMore);
  CHECK(!p.started());
}

TEST_CASE("response parser: malformed input and limits are errors") {
  Recorder rec;
  ResponseParser p(&rec);
  auto r = p.feed("HTTP/1.1 2x0 OK\r\n\r\n");
  CHECK(r.status == ParseStatus::Error);
  CHECK(!r.error.empty());
  p.reset(false);
  r = p.feed("garbage\r\n\r\n");
  CHECK(r.status == ParseStatus::Error);
  p.reset(false);
  r = p.feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
  CHECK(r.status == ParseStatus::Error);
  // Found by fuzz_response: llhttp accepts these; keypool must not relay them.
  p.reset(false);
  r = p.feed("HTTP/1.1 2\r\nContent-Length: 0\r\n\r\n");
  CHECK(r.status == ParseStatus::Error);
  CHECK(r.error.find("invalid status code") != std::string::npos);
  p.reset(false);
  r = p.feed("HTTP/0.9 200 OK\r\nContent-Length: 0\r\n\r\n");
  CHECK(r.status == ParseStatus::Error);
  p.reset(false);
  r = p.feed("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
  CHECK(r.status == ParseStatus::Complete);

  ResponseParser small(&rec, ResponseLimits{100, 3});
  r = small.feed("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n");
  CHECK(r.status == ParseStatus::Error);
  CHECK(r.error.find("headers") != std::string::npos);
  small.reset(false);
  r = small.feed("HTTP/1.1 200 OK\r\nA: " + std::string(200, 'x') + "\r\n\r\n");
  CHECK(r.status == ParseStatus::Error);
  CHECK(r.error.find("100 bytes") != std::string::npos);
}

TEST_CASE("response parser: a sink can stop parsing") {
  Recorder rec;
  rec.stop_on_head = true;
  ResponseParser p(&rec);
  auto r = p.feed("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx");
  CHECK(r.status == ParseStatus::Stopped);
  CHECK(rec.body.empty());
}

// ---- header slots reused across the responses of one connection ----------------------------

namespace {

// A typical nginx answer: what the proxy mostly sees.
const std::string kNginxHead =
    "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 28 Nov 2026 22:00:00 GMT\r\n"
    "Content-Type: application/json\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n";

keypool::http::Headers nginx_headers() {
  return {{"Server", "nginx/1.22.1"},
          {"Date", "Sat, 28 Nov 2026 22:00:00 GMT"},
          {"Content-Type", "application/json"},
          {"Content-Length", "5"},
          {"Connection", "keep-alive"}};
}

bool same_headers(const keypool::http::Headers& a, const keypool::http::Headers& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].name != b[i].name || a[i].value != b[i].value) return false;
  return true;
}

// Does to the head what the proxy does: drops some headers in place, adds one of its own.
struct Rewriter : ResponseParser::Sink {
  std::vector<keypool::http::Headers> seen;
  bool on_head(ResponseHead& h) override {
    seen.push_back(h.headers);
    h.headers.erase(h.headers.begin());
    h.headers.push_back({"X-Keypool-Key-Id", "a value longer than the strings had"});
    return true;
  }
  bool on_body(std::string_view) override { return true; }
};

}  // namespace

TEST_CASE("response parser: a head split into two reads at any byte parses as in one") {
  const std::string msg = kNginxHead + "hello";
  for (size_t cut = 1; cut < msg.size(); ++cut) {
    CAPTURE(cut);
    Recorder rec;
    ResponseParser p(&rec);
    // The second response on the connection reuses the first one's header strings.
    for (int round = 0; round < 2; ++round) {
      p.reset(false);
      rec.body.clear();
      auto r = p.feed(msg.data(), cut);
      REQUIRE(r.status == ParseStatus::NeedMore);
      r = p.feed(msg.data() + cut, msg.size() - cut);
      REQUIRE(r.status == ParseStatus::Complete);
      CHECK(rec.head.reason == "OK");
      CHECK(same_headers(rec.head.headers, nginx_headers()));
      CHECK(rec.body == "hello");
    }
  }
}

TEST_CASE("response parser: a reused connection shows only the current response's headers") {
  Rewriter rw;
  ResponseParser p(&rw);
  auto parse = [&](const std::string& msg) {
    p.reset(false);
    CHECK(p.feed(msg).status == ParseStatus::Complete);
  };
  parse(kNginxHead + "hello");
  // Fewer headers than the slots left by the first response (and by the sink's edits).
  parse("HTTP/1.1 204 No Content\r\nX-Only:  one \r\n\r\n");
  // More headers than before, one of them empty, one padded, one long.
  std::string long_value(2000, 'v');
  parse("HTTP/1.1 200 OK\r\nA: 1\r\nB:\r\nC: \t padded \t\r\nD: " + long_value +
        "\r\nE: 5\r\nF: 6\r\nG: 7\r\nContent-Length: 0\r\n\r\n");
  // Back to short values in slots that held long ones.
  parse(kNginxHead + "hello");
  // An interim 1xx with its own headers, then the final head.
  parse("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\nLink: </b>\r\nLink: </c>\r\n\r\n" + kNginxHead + "hello");

  REQUIRE(rw.seen.size() == 5);
  CHECK(same_headers(rw.seen[0], nginx_headers()));
  CHECK(same_headers(rw.seen[1], {{"X-Only", "one"}}));
  CHECK(same_headers(rw.seen[2], {{"A", "1"},
                                  {"B", ""},
                                  {"C", "padded"},
                                  {"D", long_value},
                                  {"E", "5"},
                                  {"F", "6"},
                                  {"G", "7"},
                                  {"Content-Length", "0"}}));
  CHECK(same_headers(rw.seen[3], nginx_headers()));
  CHECK(same_headers(rw.seen[4], nginx_headers()));
}

TEST_CASE("response parser: names in reused slots get fresh ids") {
  using keypool::http::classify_field;
  using keypool::http::FieldId;
  // Each slot holds a listed name in one response and another (or none) in the next: a
  // stale id would make the proxy drop or keep a header by a name no longer there.
  const std::string first =
      "HTTP/1.1 200 OK\r\nCONNECTION: keep-alive\r\ncontent-type: text/plain\r\nRetry-After: 1\r\n"
      "Content-Length: 0\r\n\r\n";
  const std::string second =
      "HTTP/1.1 200 OK\r\nX-Other: 1\r\nContent-Typo: x\r\nTRANSFER-ENCODING: chunked\r\n"
      "Keep-Alive: timeout=5\r\n\r\n0\r\n\r\n";
  const std::string third = "HTTP/1.1 200 OK\r\nx-keypool-key-id: 7\r\nContent-Length: 0\r\n\r\n";
  for (bool bytewise : {false, true}) {
    CAPTURE(bytewise);
    Rewriter rw;  // also moves slots around and adds an unclassified header, as the proxy does
    ResponseParser p(&rw);
    for (const auto* msg : {&first, &second, &third, &first}) {
      p.reset(false);
      CHECK((bytewise ? feed_bytewise(p, *msg) : p.feed(*msg).status) == ParseStatus::Complete);
    }
    REQUIRE(rw.seen.size() == 4);
    auto ids = [](const keypool::http::Headers& h) {
      std::vector<FieldId> out;
      for (const auto& f : h) out.push_back(f.id);
      return out;
    };
    const std::vector<FieldId> want_first = {FieldId::Connection, FieldId::ContentType,
                                             FieldId::RetryAfter, FieldId::ContentLength};
    CHECK(ids(rw.seen[0]) == want_first);
    const std::vector<FieldId> want_second = {FieldId::Other, FieldId::Other,
                                              FieldId::TransferEncoding, FieldId::KeepAlive};
    CHECK(ids(rw.seen[1]) == want_second);
    CHECK(ids(rw.seen[2]) == std::vector<FieldId>{FieldId::XKeypoolKeyId, FieldId::ContentLength});
    CHECK(ids(rw.seen[3]) == want_first);
    for (const auto& head : rw.seen)
      for (const auto& h : head) CHECK(h.id == classify_field(h.name));
  }
}

TEST_CASE("response parser: a sink may take the headers away") {
  struct Taker : ResponseParser::Sink {
    keypool::http::Headers taken;
    bool on_head(ResponseHead& h) override {
      taken = std::move(h.headers);
      return true;
    }
    bool on_body(std::string_view) override { return true; }
  } taker;
  ResponseParser p(&taker);
  CHECK(p.feed(kNginxHead + "hello").status == ParseStatus::Complete);
  CHECK(same_headers(taker.taken, nginx_headers()));
  p.reset(false);
  CHECK(p.feed("HTTP/1.1 200 OK\r\nX-Next: 2\r\nContent-Length: 0\r\n\r\n").status == ParseStatus::Complete);
  CHECK(same_headers(taker.taken, {{"X-Next", "2"}, {"Content-Length", "0"}}));
}

TEST_CASE("response parser: limits still hold when the header slots are reused") {
  Recorder rec;
  ResponseParser p(&rec, ResponseLimits{200, 3});
  CHECK(p.feed("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nContent-Length: 0\r\n\r\n").status ==
        ParseStatus::Error);
  p.reset(false);
  CHECK(p.feed("HTTP/1.1 200 OK\r\nA: 1\r\nContent-Length: 0\r\n\r\n").status == ParseStatus::Complete);
  CHECK(same_headers(rec.head.headers, {{"A", "1"}, {"Content-Length", "0"}}));
  p.reset(false);
  auto r = p.feed("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n");
  CHECK(r.status == ParseStatus::Error);
  CHECK(r.error.find("more than 3 headers") != std::string::npos);
  p.reset(false);
  r = p.feed("HTTP/1.1 200 OK\r\nA: " + std::string(300, 'x') + "\r\n\r\n");
  CHECK(r.status == ParseStatus::Error);
  CHECK(r.error.find("200 bytes") != std::string::npos);
}

TEST_CASE("response parser: obs-fold is an error, fed whole or split at any byte") {
  for (const std::string fold : {"X-Folded: first\r\n second\r\n", "X-Folded: first\r\n\t second\r\n",
                                 "X-Folded:\r\n second\r\n", "X-Folded: first\r\n  \r\n"}) {
    const std::string msg = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" + fold + "Content-Length: 2\r\n\r\nok";
    for (size_t cut = 0; cut < msg.size(); ++cut) {
      CAPTURE(fold);
      CAPTURE(cut);
      Recorder rec;
      ResponseParser p(&rec);
      auto r = cut == 0 ? p.feed(msg) : p.feed(msg.data(), cut);
      if (cut != 0 && r.status == ParseStatus::NeedMore) r = p.feed(msg.data() + cut, msg.size() - cut);
      CHECK(r.status == ParseStatus::Error);
      CHECK(r.error.find("obs-fold") != std::string::npos);
      CHECK(rec.heads == 0);  // nothing of the folded head is handed over
    }
  }
}
