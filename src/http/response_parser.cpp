#include "http/response_parser.h"

#include <llhttp.h>

#include "base/strings.h"
#include "http/fold.h"

#if !LLHTTP_STRICT_MODE
#error "llhttp must be built with LLHTTP_STRICT_MODE=1 (see CMakeLists.txt)"
#endif

namespace keypool::http {

// All llhttp state and the head under construction. The llhttp callbacks below are thin
// trampolines into these members; parser.data points here.
struct ResponseParser::Impl {
  Impl(Sink* s, ResponseLimits l) : sink(s), limits(l) {
    llhttp_settings_init(&settings);
    settings.on_message_begin = [](llhttp_t* p) { return self(p)->on_message_begin(); };
    settings.on_status = [](llhttp_t* p, const char* at, size_t n) {
      return self(p)->on_span(self(p)->head.reason, at, n);
    };
    settings.on_header_field = [](llhttp_t* p, const char* at, size_t n) {
      self(p)->folds.value_done();
      return self(p)->on_span(self(p)->building_header().name, at, n);
    };
    settings.on_header_value = [](llhttp_t* p, const char* at, size_t n) { return self(p)->on_value(at, n); };
    settings.on_header_value_complete = [](llhttp_t* p) { return self(p)->on_header_complete(); };
    settings.on_headers_complete = [](llhttp_t* p) { return self(p)->on_headers_complete(); };
    settings.on_body = [](llhttp_t* p, const char* at, size_t n) { return self(p)->on_body(at, n); };
    settings.on_message_complete = [](llhttp_t* p) { return self(p)->on_message_complete(); };
  }

  static Impl* self(llhttp_t* p) { return static_cast<Impl*>(p->data); }

  void reset(bool head) {
    llhttp_init(&parser, HTTP_RESPONSE, &settings);
    parser.data = this;
    head_request = head;
    started = false;
    complete = false;
    stopped = false;
    clear_head();
  }

  void clear_head() {
    // The header slots survive: the next response on this keep-alive connection is parsed
    // into the same strings, whose storage then needs no allocation. Only `filled` of them
    // belong to the response being parsed; on_headers_complete drops the rest.
    Headers slots = std::move(head.headers);
    head = ResponseHead{};
    head.headers = std::move(slots);
    filled = 0;
    building = false;
    folds.value_done();
    header_bytes = 0;
    interim = false;
    error.clear();
  }

  int on_message_begin() {
    // A new message starts after every interim 1xx too; the limits apply to each head.
    clear_head();
    head.headers.reserve(16);  // one allocation rather than a regrowth every few headers
    started = true;
    return HPE_OK;
  }

  // Status text, header names and values can arrive split across reads; llhttp hands them over
  // in pieces, so the size limit is checked as they grow rather than once at the end.
  int on_span(std::string& dst, const char* at, size_t n) {
    header_bytes += n;
    if (header_bytes > limits.max_header_bytes) return head_too_large();
    dst.append(at, n);
    return HPE_OK;
  }

  // RFC 9112 §5.2 lets a recipient replace obs-fold with SP; keypool answers 502 instead,
  // as it refuses folds from clients: an upstream that folds is broken or old enough that
  // its other headers are not to be trusted either, and relaying the fold is never allowed.
  int on_value(const char* at, size_t n) {
    if (n > 0 && folds.folds(at, n)) return folded();
    return on_span(building_header().value, at, n);
  }
  [[gnu::noinline, gnu::cold]] int folded() {
    error = "obs-fold in a response header (a line starting with whitespace)";
    return HPE_USER;
  }

  // Out of line: building the message inline made every call of on_span (a dozen per
  // response) save and restore registers for a path that almost never runs.
  [[gnu::noinline, gnu::cold]] int head_too_large() {
    error = "response head larger than " + std::to_string(limits.max_header_bytes) + " bytes";
    return HPE_USER;
  }

  // The slot the current header is assembled in, taken (and emptied) by its first piece.
  // llhttp may deliver a name or value in several pieces, one per read it spans, so the
  // pieces are copied into the slot's strings rather than pointing into a read buffer.
  Header& building_header() {
    if (!building) {
      building = true;
      if (filled == head.headers.size()) {
        head.headers.emplace_back();
      } else {
        recycle(head.headers[filled].name);
        recycle(head.headers[filled].value);
        // The previous response's id must not outlive its name (on_header_complete sets
        // the new one): a stale id would steer the filters by a name no longer there.
        head.headers[filled].id = FieldId::Unclassified;
      }
    }
    return head.headers[filled];
  }

  // Empties a reused string. One that grew large for a rare long header gives its storage
  // back, so a connection does not keep the largest head it ever saw.
  static void recycle(std::string& s) {
    if (s.capacity() > kMaxReusedCapacity) std::string().swap(s);
    else s.clear();
  }

  int on_header_complete() {
    folds.value_done();
    // Each line costs its separators too, so many empty headers still hit the byte limit.
    header_bytes += 4;
    if (filled >= limits.max_headers) return too_many_headers();
    Header& h = building_header();
    trim_in_place(h.value);
    h.id = classify_field(h.name);  // once here, not at every lookup downstream
    building = false;
    ++filled;
    return HPE_OK;
  }

  [[gnu::noinline, gnu::cold]] int too_many_headers() {
    error = "response has more than " + std::to_string(limits.max_headers) + " headers";
    return HPE_USER;
  }

  // Values usually arrive without surrounding blanks; only an untrimmed one is rewritten.
  static void trim_in_place(std::string& s) {
    std::string_view t = trim(s);
    if (t.size() == s.size()) return;
    size_t lead = static_cast<size_t>(t.data() - s.data());
    s.erase(lead + t.size());
    s.erase(0, lead);
  }

  // Return values (llhttp): 0 continue, 1 no body, 2 no body and stop as an upgrade.
  int on_headers_complete() {
    // Slots left over from a longer earlier head are not this response's headers.
    head.headers.erase(head.headers.begin() + static_cast<std::ptrdiff_t>(filled), head.headers.end());
    head.status = llhttp_get_status_code(&parser);
    // llhttp takes any 1-3 digit code and any version; relaying "HTTP/1.1 2" or an
    // HTTP/0.9 answer would hand the client something no HTTP/1.1 peer sends.
    if (head.status < 100 || head.status > 599) {
      error = "invalid status code " + std::to_string(head.status);
      return HPE_USER;
    }
    if (llhttp_get_http_major(&parser) != 1 || llhttp_get_http_minor(&parser) > 1) {
      error = "unsupported HTTP version in response";
      return HPE_USER;
    }
    if (head.status >= 100 && head.status < 200 && head.status != 101) {
      // 100 Continue, 102, 103 Early Hints: not the answer; the real head follows.
      interim = true;
      return 1;
    }
    head.http_minor = llhttp_get_http_minor(&parser);
    head.chunked = (parser.flags & F_CHUNKED) != 0;
    if ((parser.flags & F_CONTENT_LENGTH) && !head.chunked) head.content_length = parser.content_length;
    head.upgrade = head.status == 101;
    if (head_request) {
      // llhttp only learns that the body is absent from our return value, so keep_alive must
      // not consult llhttp_should_keep_alive (it would think the body runs until EOF).
      bool close = header_has_token(head.headers, "connection", "close");
      bool ka10 = header_has_token(head.headers, "connection", "keep-alive");
      head.keep_alive = head.http_minor >= 1 ? !close : ka10;
    } else {
      head.keep_alive = !head.upgrade && llhttp_should_keep_alive(&parser);
    }
    if (!sink->on_head(head)) {
      stopped = true;
      return -1;
    }
    if (head.upgrade) return 2;
    return head_request ? 1 : 0;
  }

  int on_body(const char* at, size_t n) {
    if (!sink->on_body(std::string_view(at, n))) {
      stopped = true;
      return HPE_USER;
    }
    return HPE_OK;
  }

  int on_message_complete() {
    if (interim) {
      // Keep parsing: the final response is usually in the same read.
      started = false;
      return HPE_OK;
    }
    complete = true;
    // Pause so feed() reports exactly where this response ended; anything after it is not ours.
    return HPE_PAUSED;
  }

  ParseResult result_from(llhttp_errno_t err, const char* data, size_t len) {
    ParseResult r;
    if (stopped) {
      r.status = ParseStatus::Stopped;
      return r;
    }
    if (err == HPE_OK) {
      r.consumed = len;
      r.status = complete ? ParseStatus::Complete : ParseStatus::NeedMore;
      return r;
    }
    const char* pos = llhttp_get_error_pos(&parser);
    r.consumed = pos && pos >= data && pos <= data + len ? static_cast<size_t>(pos - data) : len;
    if (err == HPE_PAUSED_UPGRADE || (err == HPE_PAUSED && head.upgrade)) {
      r.status = ParseStatus::Upgrade;
    } else if (err == HPE_PAUSED && complete) {
      r.status = ParseStatus::Complete;
    } else {
      r.status = ParseStatus::Error;
      r.error = !error.empty() ? error
                               : std::string("malformed response (") + llhttp_errno_name(err) + ": " +
                                     llhttp_get_error_reason(&parser) + ")";
    }
    return r;
  }

  Sink* sink;
  ResponseLimits limits;
  llhttp_settings_t settings;
  llhttp_t parser;
  // A reused header string keeps storage up to this size (most names and values fit).
  static constexpr size_t kMaxReusedCapacity = 512;

  ResponseHead head;
  FoldDetector folds;
  size_t filled = 0;      // head.headers[0, filled) are complete headers of this response
  bool building = false;  // head.headers[filled] holds a header still being assembled
  size_t header_bytes = 0;
  bool head_request = false;
  bool interim = false;   // the message being parsed is a 1xx we skip
  bool started = false;
  bool complete = false;  // llhttp is paused at the end of the response
  bool stopped = false;   // the sink asked to stop
  std::string error;      // why we failed a callback (limits), else empty
};

ResponseParser::ResponseParser(Sink* sink, ResponseLimits limits)
    : impl_(std::make_unique<Impl>(sink, limits)) {
  impl_->reset(false);
}

ResponseParser::~ResponseParser() = default;

void ResponseParser::reset(bool head_request) { impl_->reset(head_request); }

bool ResponseParser::started() const { return impl_->started; }

ParseResult ResponseParser::feed(const char* data, size_t len) {
  Impl& m = *impl_;
  if (m.complete || m.stopped || m.head.upgrade) {
    // llhttp_execute does nothing useful once paused or failed; the caller must reset().
    ParseResult r;
    r.status = ParseStatus::Error;
    r.error = "data after the end of the response";
    return r;
  }
  if (len == 0) return ParseResult{};
  m.folds.begin_feed(data, data + len);
  const llhttp_errno_t err = llhttp_execute(&m.parser, data, len);
  m.folds.end_feed(err == HPE_OK ? data + len : llhttp_get_error_pos(&m.parser));
  return m.result_from(err, data, len);
}

ParseResult ResponseParser::finish() {
  Impl& m = *impl_;
  ParseResult r;
  if (m.complete) {
    r.status = ParseStatus::Complete;
    return r;
  }
  if (!m.started) return r;  // NeedMore: nothing under way, nothing lost
  // llhttp_finish runs on_message_complete for a body that ends at EOF; our callback returns
  // HPE_PAUSED, so judge by `complete`, not by the returned errno.
  llhttp_finish(&m.parser);
  if (m.complete) {
    r.status = ParseStatus::Complete;
  } else {
    r.status = ParseStatus::Error;
    r.error = "response truncated: the upstream closed the connection mid-response";
  }
  return r;
}

}  // namespace keypool::http
