#include "http/request_parser.h"

#include <llhttp.h>
#include <string.h>

#include "base/strings.h"
#include "http/fold.h"
#include "http/grammar.h"

// Loose llhttp lets a space into header names, tabs into the target and anything after chunk
// data; the checks below rely on it refusing those (see CMakeLists.txt).
#if !LLHTTP_STRICT_MODE
#error "llhttp must be built with LLHTTP_STRICT_MODE=1"
#endif

namespace keypool::http {

struct RequestParser::Impl {
  llhttp_t parser;
  llhttp_settings_t settings;
  Limits limits;
  Events* events;
  ParseError error;
  // Parsed into in place, then moved to the handler. Its storage is reused from request to
  // request (see clear_head and recycle); head.headers[0, filled) are the current request's
  // headers, any later slots only storage.
  RequestHead head;
  size_t filled = 0;
  std::string field, value;
  bool in_value = false;
  size_t head_bytes = 0;
  bool failed = false;  // a check of ours set `error`
  // The current field name has a '_': the header is dropped (see commit_header).
  bool field_underscore = false;
  size_t dropped = 0;  // headers of this message dropped so far; they count against the limit
  // Where the request line's parts start, as offsets in the whole stream of bytes fed
  // (fed_before is the offset of feed_begin): llhttp takes any run of spaces between method,
  // target and version, RFC 9112 §3 exactly one.
  uint64_t fed_before = 0;
  uint64_t method_at = 0, target_at = 0;
  bool version_seen = false;
  FoldDetector folds;
  const char* feed_begin = nullptr;  // the bytes being fed
  bool in_message = false;
  bool head_done = false;

  static Impl* self(llhttp_t* p) { return static_cast<Impl*>(p->data); }

  int fail(int status, std::string code, std::string message) {
    error = ParseError{status, std::move(code), std::move(message)};
    failed = true;
    return HPE_USER;
  }

  // Counts request-line and header bytes against the limit; 431 past it.
  int count(size_t n) {
    head_bytes += n;
    if (head_bytes > limits.max_header_bytes) return head_too_large();
    return 0;
  }
  // The refusals that build a message are kept out of line: inline, their string building
  // made every call of the callbacks around them (several per header) save and restore
  // registers for a path that almost never runs.
  [[gnu::cold, gnu::noinline]] int head_too_large() {
    return fail(431, "headers_too_large",
                "request header section exceeds " + std::to_string(limits.max_header_bytes) + " bytes");
  }
  [[gnu::cold, gnu::noinline]] int too_many_headers() {
    return fail(431, "too_many_headers", "more than " + std::to_string(limits.max_header_count) + " header fields");
  }
  [[gnu::cold, gnu::noinline]] int target_too_long() {
    return fail(414, "uri_too_long", "request target exceeds " + std::to_string(limits.max_url_bytes) + " bytes");
  }

  int commit_header() {
    if (!in_value) return 0;
    // ": " and CRLF, once per header: llhttp may call on_header_field several times for
    // one name split across reads, which must not change what counts.
    if (int rc = count(4)) return rc;
    if (filled + dropped >= limits.max_header_count) return too_many_headers();
    if (field_underscore) return drop_header();
    // Built in place: a temporary Header moved into the vector copies both strings again.
    auto& h = next_slot();
    h.name = std::move(field);
    h.id = classify_field(h.name);  // once here, not at every lookup downstream
    h.value.assign(trim(value));
    field.clear();
    value.clear();
    in_value = false;
    return 0;
  }

  // A name with '_' never reaches a handler (nginx's underscores_in_headers off): CGI, WSGI
  // and some PHP and Go stacks map '_' and '-' to the same variable, so "X_Api_Key" or
  // "Transfer_Encoding" would reach the upstream's application as the real header. Dropped,
  // not refused, as nginx does: the rest of the request is still served.
  [[gnu::cold, gnu::noinline]] int drop_header() {
    ++dropped;
    recycle(field);
    recycle(value);
    in_value = false;
    field_underscore = false;
    return 0;
  }

  // The stream offset of a byte of the current feed.
  uint64_t offset_of(const char* at) const { return fed_before + static_cast<uint64_t>(at - feed_begin); }
  [[gnu::cold, gnu::noinline]] int bad_request_line() {
    return fail(400, "bad_request_line", "method, target and version must be separated by exactly one space");
  }

  int check_framing();
  bool wants_tunnel();

  // A reused string keeps storage up to this size, and the head up to kMaxReusedSlots
  // header slots: one request with a huge header does not pin that memory to the connection.
  static constexpr size_t kMaxReusedCapacity = 512;
  static constexpr size_t kMaxReusedSlots = 32;

  static void recycle(std::string& s) {
    if (s.capacity() > kMaxReusedCapacity) std::string().swap(s);
    else s.clear();
  }

  // Empties the head for the next request but keeps its storage (left by the last request
  // parsed here or handed back through RequestParser::recycle), so that a keep-alive
  // connection parses a typical head without allocating. Field by field, as a fresh head
  // moved in would cost more than the allocation it saves: a field added to RequestHead
  // must be reset here too. Header slots are emptied as they are reused (next_slot).
  void clear_head() {
    recycle(head.method);
    recycle(head.target);
    head.http_minor = 1;
    if (head.headers.capacity() > kMaxReusedSlots) Headers().swap(head.headers);
    if (head.headers.capacity() == 0) head.headers.reserve(16);  // one allocation, not a regrowth every few headers
    head.keep_alive = true;
    head.chunked = false;
    head.content_length.reset();
    head.upgrade = false;
    filled = 0;
  }

  // The slot the next header is written into: an emptied one left by an earlier request, or a
  // new one.
  Header& next_slot() {
    if (filled == head.headers.size()) {
      ++filled;
      return head.headers.emplace_back();
    }
    Header& h = head.headers[filled++];
    recycle(h.name);
    recycle(h.value);
    return h;
  }

  static int on_message_begin(llhttp_t* p) {
    Impl* s = self(p);
    s->in_message = true;
    s->head_done = false;
    s->clear_head();
    recycle(s->field);
    recycle(s->value);
    s->in_value = false;
    s->head_bytes = 0;
    s->failed = false;
    s->folds.value_done();
    s->field_underscore = false;
    s->dropped = 0;
    s->version_seen = false;
    return 0;
  }
  static int on_url(llhttp_t* p, const char* at, size_t len) {
    Impl* s = self(p);
    if (s->head.target.empty()) {
      s->target_at = s->offset_of(at);
      if (s->target_at != s->method_at + s->head.method.size() + 1) return s->bad_request_line();
    }
    s->head.target.append(at, len);
    if (s->head.target.size() > s->limits.max_url_bytes) return s->target_too_long();
    return s->count(len);
  }
  static int on_method(llhttp_t* p, const char* at, size_t len) {
    Impl* s = self(p);
    if (s->head.method.empty()) s->method_at = s->offset_of(at);
    s->head.method.append(at, len);
    return s->count(len);
  }
  // The version's span starts after "HTTP/".
  static int on_version(llhttp_t* p, const char* at, size_t) {
    Impl* s = self(p);
    if (s->version_seen) return 0;
    s->version_seen = true;
    constexpr size_t kSpaceAndProtocol = sizeof " HTTP/" - 1;
    if (s->offset_of(at) != s->target_at + s->head.target.size() + kSpaceAndProtocol) return s->bad_request_line();
    return 0;
  }
  static int on_header_field(llhttp_t* p, const char* at, size_t len) {
    Impl* s = self(p);
    s->folds.value_done();
    if (int rc = s->commit_header()) return rc;
    s->field.append(at, len);
    if (memchr(at, '_', len)) s->field_underscore = true;
    return s->count(len);
  }
  static int on_header_value(llhttp_t* p, const char* at, size_t len) {
    Impl* s = self(p);
    // RFC 9112 §5.2 lets a server refuse obs-fold; a proxy that unfolds differently from the
    // next hop is one more way to disagree about a header, so refuse it.
    if (len == 0) return 0;  // llhttp marks an empty value so, after its line break
    if (s->folds.folds(at, len)) return s->fail(400, "bad_header", "obs-fold (a header line starting with whitespace)");
    s->in_value = true;
    s->value.append(at, len);
    return s->count(len);
  }
  static int on_header_value_complete(llhttp_t* p) {
    Impl* s = self(p);
    s->folds.value_done();
    s->in_value = true;  // an empty value still makes a header
    return s->commit_header();
  }
  static int on_headers_complete(llhttp_t* p) {
    Impl* s = self(p);
    if (int rc = s->commit_header()) return rc;
    // Slots left over from a longer earlier head are not this request's headers.
    s->head.headers.erase(s->head.headers.begin() + static_cast<std::ptrdiff_t>(s->filled), s->head.headers.end());
    s->head.http_minor = llhttp_get_http_minor(p);
    if (int rc = s->check_framing()) return rc;
    s->head.keep_alive = llhttp_should_keep_alive(p);
    // An Upgrade offer other than a WebSocket one (h2c, say) is ignored, as RFC 9110 §7.8
    // allows: llhttp is told it is no upgrade, and the request is served over HTTP/1.1.
    if (llhttp_get_upgrade(p) && !s->wants_tunnel()) p->upgrade = 0;
    s->head.upgrade = llhttp_get_upgrade(p);
    s->head_done = true;
    s->events->on_request_head(std::move(s->head));
    // Trailer fields after a chunked body come through commit_header too and land in what
    // the handler left of the head (nothing, if it took it): no slot is filled there yet.
    s->filled = s->head.headers.size();
    return 0;
  }
  static int on_body(llhttp_t* p, const char* at, size_t len) {
    self(p)->events->on_request_body(std::string_view(at, len));
    return 0;
  }
  static int on_message_complete(llhttp_t* p) {
    Impl* s = self(p);
    s->in_message = false;
    s->events->on_request_complete();
    // An upgrade makes llhttp_execute return HPE_PAUSED_UPGRADE by itself.
    return llhttp_get_upgrade(p) ? 0 : HPE_PAUSED;
  }
};

// The framing rules RFC 9112 §6 leaves to the recipient, applied strictly: a proxy that
// guesses differently from the upstream is how request smuggling happens.
int RequestParser::Impl::check_framing() {
  if (llhttp_get_http_major(&parser) != 1 || head.http_minor > 1)
    return fail(400, "bad_version", "only HTTP/1.0 and HTTP/1.1 are supported");
  // One pass over the headers gathers what the framing rules need.
  size_t cl = 0, te = 0, hosts = 0;
  std::string_view cl_value, te_value, host_value;
  for (const auto& h : head.headers) {
    if (h.name.empty()) return fail(400, "bad_header", "empty header name");
    if (has_nul_cr_lf(h.value)) return fail(400, "bad_header", "control character in header value");
    switch (field_id(h)) {
      case FieldId::ContentLength:
        if (cl++ == 0) cl_value = h.value;
        break;
      case FieldId::TransferEncoding:
        if (te++ == 0) te_value = h.value;
        break;
      case FieldId::Host:
        if (hosts++ == 0) host_value = h.value;
        break;
      default:
        break;
    }
  }
  if (cl > 1) return fail(400, "bad_framing", "repeated Content-Length");
  if (cl && te) return fail(400, "bad_framing", "both Content-Length and Transfer-Encoding");
  if (te) {
    if (head.http_minor == 0)
      return fail(400, "bad_framing", "Transfer-Encoding is not allowed in HTTP/1.0");
    if (te > 1) return fail(400, "bad_framing", "repeated Transfer-Encoding");
    if (!iequals(trim(te_value), "chunked"))
      return fail(400, "bad_framing", "Transfer-Encoding must be exactly 'chunked'");
    head.chunked = true;
  }
  if (cl) {
    auto v = parse_uint(trim(cl_value));
    if (!v) return fail(400, "bad_framing", "invalid Content-Length");
    head.content_length = static_cast<uint64_t>(*v);
  }
  if (head.http_minor == 1 && hosts != 1)
    return fail(400, "bad_host", hosts ? "repeated Host header" : "missing Host header");
  if (head.http_minor == 0 && hosts > 1) return fail(400, "bad_host", "repeated Host header");
  if (hosts && !is_host_value(host_value))
    return fail(400, "bad_host", "Host must be uri-host [\":\" port] (RFC 9112 §3.2)");
  return 0;
}

// Only a WebSocket handshake opens a tunnel; CONNECT stays an upgrade so that its refusal
// closes the connection.
bool RequestParser::Impl::wants_tunnel() {
  if (llhttp_get_method(&parser) == HTTP_CONNECT) return true;
  for (const auto& h : head.headers)
    if (field_id(h) == FieldId::Upgrade && list_has_token(h.value, "websocket")) return true;
  return false;
}

RequestParser::RequestParser(Limits limits, Events* events) : impl_(std::make_unique<Impl>()) {
  impl_->limits = limits;
  impl_->events = events;
  llhttp_settings_init(&impl_->settings);
  impl_->settings.on_message_begin = Impl::on_message_begin;
  impl_->settings.on_url = Impl::on_url;
  impl_->settings.on_method = Impl::on_method;
  impl_->settings.on_version = Impl::on_version;
  impl_->settings.on_header_field = Impl::on_header_field;
  impl_->settings.on_header_value = Impl::on_header_value;
  impl_->settings.on_header_value_complete = Impl::on_header_value_complete;
  impl_->settings.on_headers_complete = Impl::on_headers_complete;
  impl_->settings.on_body = Impl::on_body;
  impl_->settings.on_message_complete = Impl::on_message_complete;
  llhttp_init(&impl_->parser, HTTP_REQUEST, &impl_->settings);
  impl_->parser.data = impl_.get();
}

RequestParser::~RequestParser() = default;

RequestParser::Status RequestParser::feed(std::string_view data, size_t* consumed) {
  *consumed = 0;
  if (data.empty()) return Status::NeedMore;
  impl_->feed_begin = data.data();
  impl_->folds.begin_feed(data.data(), data.data() + data.size());
  llhttp_errno_t rc = llhttp_execute(&impl_->parser, data.data(), data.size());
  // Where the parser stopped taking bytes (early only at a pause or an error).
  const char* stop = rc == HPE_OK ? data.data() + data.size() : llhttp_get_error_pos(&impl_->parser);
  impl_->folds.end_feed(stop);
  if (stop) impl_->fed_before += static_cast<uint64_t>(stop - impl_->feed_begin);
  // A check that fails in on_headers_complete surfaces as HPE_CB_HEADERS_COMPLETE, not
  // HPE_USER: keep the status, code and message the check chose (a 431, bad_framing...).
  if (impl_->failed && rc != HPE_OK && rc != HPE_PAUSED && rc != HPE_PAUSED_UPGRADE) return Status::Error;
  switch (rc) {
    case HPE_OK:
      *consumed = data.size();
      return Status::NeedMore;
    case HPE_PAUSED:
      *consumed = static_cast<size_t>(llhttp_get_error_pos(&impl_->parser) - data.data());
      return Status::Paused;
    case HPE_PAUSED_UPGRADE:
      *consumed = static_cast<size_t>(llhttp_get_error_pos(&impl_->parser) - data.data());
      return Status::Upgrade;
    case HPE_USER:
      return Status::Error;  // error already filled in by a check
    case HPE_INVALID_VERSION:
      impl_->error = ParseError{400, "bad_version", "only HTTP/1.0 and HTTP/1.1 are supported"};
      return Status::Error;
    case HPE_UNEXPECTED_CONTENT_LENGTH:  // Content-Length next to Transfer-Encoding
    case HPE_INVALID_CONTENT_LENGTH:     // repeated or malformed
    case HPE_INVALID_TRANSFER_ENCODING:
      impl_->error = ParseError{400, "bad_framing",
                                std::string("malformed request: ") + llhttp_get_error_reason(&impl_->parser)};
      return Status::Error;
    case HPE_INVALID_METHOD:
      impl_->error = ParseError{400, "bad_method", "invalid request method"};
      return Status::Error;
    default:
      // llhttp's reason is a fixed text about the syntax, never echoing input.
      impl_->error = ParseError{400, "bad_request",
                                std::string("malformed request: ") + llhttp_get_error_reason(&impl_->parser)};
      return Status::Error;
  }
}

void RequestParser::resume() { llhttp_resume(&impl_->parser); }

void RequestParser::recycle(RequestHead& spent) {
  // The head held the caller's credential (a header, or api_key in the query). Kept for reuse,
  // its storage lives on with the connection; those bytes are wiped now rather than left for
  // the next request to overwrite, or not.
  for (auto& h : spent.headers)
    if (is_credential_field(field_id(h))) explicit_bzero(h.value.data(), h.value.size());
  if (spent.target.find('?') != std::string::npos) explicit_bzero(spent.target.data(), spent.target.size());
  // Between requests the parser's own head is the one moved to the handler (empty) or a
  // refused request's, still here; the larger of the two is kept.
  if (impl_->in_message || spent.headers.capacity() <= impl_->head.headers.capacity()) return;
  // Only the storage is wanted (the method is short): clear_head resets the rest.
  impl_->head.headers.swap(spent.headers);
  impl_->head.target.swap(spent.target);
}
const ParseError& RequestParser::error() const { return impl_->error; }
bool RequestParser::in_message() const { return impl_->in_message; }
bool RequestParser::head_done() const { return impl_->head_done; }

}  // namespace keypool::http
