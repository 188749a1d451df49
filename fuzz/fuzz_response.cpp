// fuzz_response: upstream bytes -> ResponseParser, driven like upstream/connection.cpp:
// feed each read, stop at Complete / Upgrade / Error / Stopped, finish() at EOF. After a
// Complete the parser is reset() and the leftover bytes parsed as the next response (a
// keep-alive connection), so 1xx, HEAD, chunked and EOF-delimited bodies chain.
//
// Input: byte 0 is a set of flags:
//   bits 0-4  read size: 0 = one read, else 1..31 bytes per read
//   bit 5     the first response answers a HEAD (later ones alternate)
//   bit 6     the sink stops parsing from on_head
//   bit 7     the sink stops parsing from the first on_body
// the rest is what the upstream sends.
//
// Checks: consumed <= fed; NeedMore consumes everything; one on_head per response and before
// any body; no body for HEAD; a Content-Length body is exactly that long at Complete; the
// final status is never 1xx other than 101; 101 <=> upgrade; header names and values carry
// no CR, LF or NUL (they are forwarded downstream); and the same bytes give the same events
// in one read as in pieces.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "http/response_parser.h"

namespace {

using namespace keypool;

bool has_ctl(std::string_view s) {
  for (char c : s)
    if (c == '\r' || c == '\n' || c == '\0') return true;
  return false;
}

struct Recorder final : http::ResponseParser::Sink {
  bool stop_on_head = false, stop_on_body = false;
  bool head_request = false;
  bool have_head = false;
  std::optional<uint64_t> content_length;
  bool chunked = false;
  uint64_t body_bytes = 0;
  std::string log;
  bool in_body = false;  // body bytes are logged as one run, however they were split

  // Starts a non-body log line.
  std::string& line() {
    if (in_body) log.push_back('\n');
    in_body = false;
    return log;
  }

  void next_response(bool head) {
    head_request = head;
    have_head = false;
    content_length.reset();
    chunked = false;
    body_bytes = 0;
  }

  bool on_head(http::ResponseHead& h) override {
    FUZZ_CHECK(!have_head, "one head per response");
    have_head = true;
    // llhttp 8.1 takes any 1-3 digit status; ResponseParser refuses what is not 100-599.
    FUZZ_CHECK(h.status >= 0 && h.status <= 999, "status code range");
    FUZZ_CHECK(h.status >= 100, "status code has three digits");
    FUZZ_CHECK(h.status < 100 || h.status >= 200 || h.status == 101, "interim 1xx are skipped");
    FUZZ_CHECK(h.upgrade == (h.status == 101), "upgrade exactly for 101");
    FUZZ_CHECK(!(h.chunked && h.content_length), "never both framings");
    // (A 101 to a HEAD cannot happen: upgrades are GETs; that path does not look at it.)
    if (!head_request) FUZZ_CHECK(!h.upgrade || !h.keep_alive, "no keep-alive after an upgrade");
    // llhttp 8.1 takes any one-digit version; ResponseParser refuses all but 1.0 and 1.1.
    FUZZ_CHECK(h.http_minor >= 0 && h.http_minor <= 9, "one-digit minor version");
    FUZZ_CHECK(h.http_minor == 0 || h.http_minor == 1, "HTTP/1.0 or 1.1");
    // llhttp lets NUL through in the reason; keypool never forwards it (the server writes its
    // own reason phrase), so only CR and LF matter here.
    FUZZ_CHECK(h.reason.find_first_of("\r\n") == std::string::npos, "no CR/LF in the reason");
    for (const auto& hd : h.headers)
      FUZZ_CHECK(!has_ctl(hd.name) && !has_ctl(hd.value), "no CR/LF/NUL in a header");
    content_length = h.content_length;
    chunked = h.chunked;
    line().append("head ").append(std::to_string(h.status)).append(" 1.").append(std::to_string(h.http_minor));
    log.append(h.keep_alive ? " ka" : " close").append(h.chunked ? " chunked" : "");
    if (h.content_length) log.append(" cl=").append(std::to_string(*h.content_length));
    log.append(" [").append(h.reason).append("]\n");
    for (const auto& hd : h.headers) log.append(hd.name).append(": ").append(hd.value).push_back('\n');
    return !stop_on_head;
  }

  bool on_body(std::string_view data) override {
    FUZZ_CHECK(have_head, "body after head");
    FUZZ_CHECK(!head_request, "no body for HEAD");
    FUZZ_CHECK(!data.empty(), "no empty body pieces");
    body_bytes += data.size();
    if (content_length) FUZZ_CHECK(body_bytes <= *content_length, "body within Content-Length");
    if (stop_on_body) {
      line().append("stop in body\n");  // where it stops depends on the read size
      return false;
    }
    if (!in_body) log.append("body ");
    in_body = true;
    log.append(data);
    return true;
  }
};

std::string run(std::string_view data, size_t step, uint8_t flags) {
  Recorder rec;
  rec.stop_on_head = flags & 0x40;
  rec.stop_on_body = flags & 0x80;
  bool head_request = flags & 0x20;
  http::ResponseParser parser(&rec, http::ResponseLimits{/*max_header_bytes=*/2048, /*max_headers=*/16});
  parser.reset(head_request);
  rec.next_response(head_request);
  size_t pos = 0;
  int responses = 0;
  while (pos < data.size()) {
    size_t n = step == 0 ? data.size() - pos : std::min(step, data.size() - pos);
    std::string_view d = data.substr(pos, n);
    pos += n;
    while (!d.empty()) {
      auto r = parser.feed(d);
      FUZZ_CHECK(r.consumed <= d.size(), "consumed within what was fed");
      switch (r.status) {
        case http::ParseStatus::NeedMore:
          FUZZ_CHECK(r.consumed == d.size(), "NeedMore consumes everything");
          d = {};
          break;
        case http::ParseStatus::Complete:
          FUZZ_CHECK(rec.have_head, "Complete after a head");
          if (rec.head_request) FUZZ_CHECK(rec.body_bytes == 0, "HEAD has no body");
          else if (rec.content_length) FUZZ_CHECK(rec.body_bytes == *rec.content_length, "body exactly Content-Length");
          FUZZ_CHECK(parser.feed("x").status == http::ParseStatus::Error, "a completed parser refuses more");
          rec.line().append("complete\n");
          d.remove_prefix(r.consumed);
          if (++responses == 8) return rec.log;
          head_request = !head_request;
          parser.reset(head_request);
          rec.next_response(head_request);
          FUZZ_CHECK(!parser.started(), "reset clears started");
          break;
        case http::ParseStatus::Upgrade:
          FUZZ_CHECK(rec.have_head, "Upgrade after a head");
          rec.line().append("upgrade, tunnel: ").append(d.substr(r.consumed)).append(data.substr(pos)).push_back('\n');
          return rec.log;
        case http::ParseStatus::Stopped:
          rec.line().append("stopped\n");
          return rec.log;
        case http::ParseStatus::Error:
          FUZZ_CHECK(!r.error.empty(), "an error says why");
          FUZZ_CHECK(!has_ctl(r.error), "error is one line");
          rec.line().append("error\n");
          return rec.log;
      }
    }
  }
  auto fin = parser.finish();
  switch (fin.status) {
    case http::ParseStatus::Complete:
      FUZZ_CHECK(rec.have_head, "EOF completes only a started response with a head");
      if (rec.content_length && !rec.head_request)
        FUZZ_CHECK(rec.body_bytes == *rec.content_length, "EOF-complete body exactly Content-Length");
      rec.line().append("eof complete\n");
      break;
    case http::ParseStatus::NeedMore:
      FUZZ_CHECK(!parser.started(), "NeedMore at EOF only when nothing started");
      rec.line().append("eof idle\n");
      break;
    case http::ParseStatus::Error:
      FUZZ_CHECK(!fin.error.empty(), "truncation says why");
      rec.line().append("eof truncated\n");
      break;
    default:
      FUZZ_CHECK(false, "finish() returns Complete, NeedMore or Error");
  }
  return rec.log;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  uint8_t flags = data[0];
  size_t step = flags & 0x1f;
  std::string_view stream(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::string whole = run(stream, 0, flags);
  if (step != 0) {
    std::string split = run(stream, step, flags);
    if (split != whole) {
      std::fprintf(stderr, "---- one read:\n%s---- reads of %zu bytes:\n%s", whole.c_str(), step,
                   split.c_str());
      FUZZ_CHECK(false, "the same bytes parse differently when split into reads");
    }
  }
  return 0;
}
