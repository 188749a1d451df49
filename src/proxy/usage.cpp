#include "proxy/usage.h"

#include <array>
#include <bit>
#include <charconv>
#include <cstring>
#include <limits>
#include <optional>
#include <vector>

#include "base/strings.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace keypool::proxy {
namespace {

// The media type without parameters: "Text/Event-Stream; charset=utf-8" -> "Text/Event-Stream".
std::string_view media_type(std::string_view content_type) {
  return trim(content_type.substr(0, content_type.find(';')));
}

// A token count, when the (well-formed) value holds one. Providers send small non-negative
// integers; anything else (null, negative, a fraction, a string) is not a count we can use.
// Past int64 the count is capped; past uint64 it is not an integer any more.
std::optional<int64_t> token_count(std::string_view v) {
  if (v == "-0") return 0;
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || end != v.data() + v.size()) return std::nullopt;
  constexpr auto kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  return static_cast<int64_t>(n > kMax ? kMax : n);
}

// The first byte in [p, end) that is a or b, or end. Most bytes of an answer are inside
// JSON strings, and an event stream is mostly long lines, so this is the inner loop of
// both: with SSE2 (every x86-64) it tests 16 bytes at a time. That beats a byte loop, whose
// exit at the end of each short string the branch predictor cannot guess, and a memchr
// call per string, which costs more than a short key takes to scan. The tail, and targets
// without SSE2, go byte by byte.
const char* find_either(const char* p, const char* end, char a, char b) {
#if defined(__SSE2__)
  const __m128i va = _mm_set1_epi8(a);
  const __m128i vb = _mm_set1_epi8(b);
  for (; end - p >= 16; p += 16) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i hits = _mm_or_si128(_mm_cmpeq_epi8(bytes, va), _mm_cmpeq_epi8(bytes, vb));
    if (const int mask = _mm_movemask_epi8(hits)) return p + std::countr_zero(static_cast<unsigned>(mask));
  }
#endif
  while (p < end && *p != a && *p != b) ++p;
  return p;
}

// Whether the text holds `"usage"` anywhere, a key or not: a cheap way to rule a JSON text
// out before walking it. std::string_view::find stops at every quote (a memchr call and a
// compare each), which in JSON is every few bytes: on a 260-byte chat chunk it took about
// 230 ns, more than walking the chunk; glibc's memmem about 65 ns; this about 30. With
// SSE2 the candidates are the places where a quote has another quote 6 bytes on, found 16
// at a time; few JSON keys are 5 letters long, so few candidates need the full compare.
bool mentions_usage(std::string_view text) {
  constexpr std::string_view kKey = "\"usage\"";
  size_t at = 0;
#if defined(__SSE2__)
  const __m128i quote = _mm_set1_epi8('"');
  for (; at + 16 + kKey.size() - 1 <= text.size(); at += 16) {
    const char* p = text.data() + at;
    const __m128i opening = _mm_cmpeq_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), quote);
    const __m128i closing =
        _mm_cmpeq_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + kKey.size() - 1)), quote);
    for (auto mask = static_cast<unsigned>(_mm_movemask_epi8(_mm_and_si128(opening, closing))); mask;
         mask &= mask - 1) {
      if (std::memcmp(p + std::countr_zero(mask) + 1, "usage", 5) == 0) return true;
    }
  }
#endif
  return text.find(kKey, at) != std::string_view::npos;
}

// A walk over JSON text without building a document, to find the usage objects and read
// their counts. Parsing into nlohmann::json cost more than everything else keypool does for
// a small proxied chat answer, even when only the usage object went through it. The walk
// checks what it passes through (strings closed, brackets matched, scalars well formed,
// one top-level object and nothing after it), so malformed text counts nothing; the
// inside of containers it skips is not checked, as nothing is read from there.
//
// Each step takes a cursor and the end of the text and returns where what it moved past
// ends, or nullptr when the text there is malformed or cut off. Cursors are plain
// pointers held in locals, so the hot loops keep them in registers.

// The first test settles the usual case, a byte that is not whitespace, in one compare.
constexpr bool is_json_ws(char c) {
  return static_cast<unsigned char>(c) <= ' ' && (c == ' ' || c == '\n' || c == '\r' || c == '\t');
}

const char* skip_ws(const char* p, const char* end) {
  while (p < end && is_json_ws(*p)) ++p;
  return p;
}

// Moves p past whitespace and then c, when c is there. Compact JSON, the usual kind, has
// c right at p: that is tested first.
bool take(char c, const char*& p, const char* end) {
  if (p == end || *p != c) {
    p = skip_ws(p, end);
    if (p == end || *p != c) return false;
  }
  ++p;
  return true;
}

// p is just past an opening quote: returns just past the closing one. A quote preceded by
// an odd run of backslashes is escaped; one preceded by an even run ends the string.
// Looking back from each quote, rather than stopping at each backslash, keeps an answer
// full of \n escapes on the fast scan. The escapes themselves are not checked.
const char* skip_any_string(const char* p, const char* end) {
  const char* const start = p;
  for (;;) {
    const char* const quote = find_either(p, end, '"', '"');  // the next quote
    if (quote == end) return nullptr;
    const char* run = quote;
    while (run > start && run[-1] == '\\') --run;
    if ((quote - run) % 2 == 0) return quote + 1;
    p = quote + 1;
  }
}

// skip_any_string, with the usual case first: a string (a key, an id, a role) that ends
// within 16 bytes without an escaped quote. This part is small enough to be inlined where
// strings are met, which measured a fifth faster than a call per string; `inline` is what
// tips GCC into doing so.
inline const char* skip_string(const char* p, const char* end) {
#if defined(__SSE2__)
  if (end - p >= 16) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    if (const int hits = _mm_movemask_epi8(_mm_cmpeq_epi8(bytes, _mm_set1_epi8('"')))) {
      const char* const quote = p + std::countr_zero(static_cast<unsigned>(hits));
      if (quote == p || quote[-1] != '\\') return quote + 1;
    }
  }
#endif
  return skip_any_string(p, end);
}

// The open brackets of a container being skipped, innermost last, one bit each (set for
// '['). The first 64 levels live in one word, so the usual shallow container costs no
// allocation; deeper levels spill a word at a time to the heap, so deep nesting costs
// memory (a bit per level), never recursion.
class BracketStack {
 public:
  void push(bool is_array) {
    if (depth_ > 0 && depth_ % kBits == 0) {
      spilled_.push_back(bits_);
      bits_ = 0;
    }
    bits_ = (bits_ << 1) | static_cast<uint64_t>(is_array);
    ++depth_;
  }
  // False when the closer does not match the innermost open bracket, or none is open.
  bool pop(bool is_array) {
    if (depth_ == 0 || (bits_ & 1) != static_cast<uint64_t>(is_array)) return false;
    bits_ >>= 1;
    --depth_;
    if (depth_ > 0 && depth_ % kBits == 0) {
      bits_ = spilled_.back();
      spilled_.pop_back();
    }
    return true;
  }
  bool empty() const { return depth_ == 0; }

 private:
  static constexpr size_t kBits = 64;
  uint64_t bits_ = 0;  // the levels above the spilled ones; bit 0 is the innermost
  size_t depth_ = 0;
  std::vector<uint64_t> spilled_;
};

constexpr auto kStructural = [] {
  std::array<bool, 256> t{};
  for (unsigned char c : std::string_view("\"{}[]")) t[c] = true;
  return t;
}();

// p is at '{' or '['. Only quotes and brackets matter inside: nothing is read from there.
// (Outside strings the next of those is a byte or two away, so a plain loop finds it as
// fast as a 16-byte compare does; measured, the compare was slower.)
const char* skip_container(const char* p, const char* end) {
  BracketStack open;
  while (p < end) {
    const char c = *p++;
    if (!kStructural[static_cast<unsigned char>(c)]) continue;
    if (c == '"') {
      if (!(p = skip_string(p, end))) return nullptr;
    } else if (c == '{' || c == '[') {
      open.push(c == '[');
    } else if (!open.pop(c == ']')) {
      return nullptr;
    } else if (open.empty()) {
      return p;
    }
  }
  return nullptr;  // cut off with brackets still open
}

constexpr bool is_digit(char c) { return c >= '0' && c <= '9'; }

// JSON's number grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, matched from p as
// far as it goes; nullptr when not even that matches.
const char* skip_number(const char* p, const char* end) {
  auto digits = [&] {
    const char* const from = p;
    while (p < end && is_digit(*p)) ++p;
    return p > from;
  };
  if (p < end && *p == '-') ++p;
  if (p < end && *p == '0') ++p;
  else if (!digits()) return nullptr;
  if (p < end && *p == '.' && (++p, !digits())) return nullptr;
  if (p < end && (*p == 'e' || *p == 'E')) {
    ++p;
    if (p < end && (*p == '+' || *p == '-')) ++p;
    if (!digits()) return nullptr;
  }
  return p;
}

// A number or a literal. What follows it is left to the caller, which only accepts what
// JSON allows after a value (whitespace, ',', '}'), so "12abc", "01" and "truex" fail
// there, in the one pass.
const char* skip_scalar(const char* p, const char* end) {
  if (*p == '-' || is_digit(*p)) return skip_number(p, end);
  for (std::string_view literal : {"true", "false", "null"}) {
    if (static_cast<size_t>(end - p) >= literal.size() && std::memcmp(p, literal.data(), literal.size()) == 0)
      return p + literal.size();
  }
  return nullptr;
}

// Moves past one value of any kind.
const char* skip_value(const char* p, const char* end) {
  if (p == end) return nullptr;
  if (*p == '"') return skip_string(p + 1, end);
  if (*p == '{' || *p == '[') return skip_container(p, end);
  return skip_scalar(p, end);
}

// Walks the object at p and returns where it ends, or nullptr when the text there is not
// an object. For each member, read_value(key, p, end) is called with p at the member's
// value and returns where the value ends (nullptr rejects the object). Keys are compared
// raw: providers never escape them.
template <class ReadValue>
const char* walk_object(const char* p, const char* end, ReadValue&& read_value) {
  if (!take('{', p, end)) return nullptr;
  if (take('}', p, end)) return p;
  for (;;) {
    if (!take('"', p, end)) return nullptr;
    const char* const key_begin = p;
    if (!(p = skip_string(p, end))) return nullptr;
    const std::string_view key(key_begin, static_cast<size_t>(p - 1 - key_begin));
    if (!take(':', p, end)) return nullptr;
    p = skip_ws(p, end);
    if (!(p = read_value(key, p, end))) return nullptr;
    if (take('}', p, end)) return p;
    if (!take(',', p, end)) return nullptr;
  }
}

// The counts in one usage object, as sent.
struct UsageCounts {
  std::optional<int64_t> prompt, input, completion, output;
};

// p is at a usage member's value: returns where the value ends, and sets *counts to what a
// well-formed usage object holds or to nothing for anything else (OpenAI chunks carry
// "usage": null until the last one; a usage object malformed inside counts nothing). The
// object is read where it lies, in the one walk; only a malformed one is gone over again,
// skipped by its brackets like any other value, so the text around it is judged as before.
const char* read_usage(const char* p, const char* end, std::optional<UsageCounts>& counts) {
  counts.reset();
  if (p == end || *p != '{') return skip_value(p, end);
  UsageCounts c;
  const char* after = walk_object(p, end, [&](std::string_view key, const char* v, const char* v_end) {
    const char* v_after = skip_value(v, v_end);
    if (!v_after) return v_after;
    const std::string_view value(v, static_cast<size_t>(v_after - v));
    if (key == "prompt_tokens") c.prompt = token_count(value);
    else if (key == "input_tokens") c.input = token_count(value);
    else if (key == "completion_tokens") c.completion = token_count(value);
    else if (key == "output_tokens") c.output = token_count(value);
    return v_after;
  });
  if (!after) return skip_value(p, end);
  counts = c;
  return after;
}

// Where each API keeps its usage object: top level (OpenAI chat/completions and responses
// bodies, OpenAI chat chunks, Anthropic message bodies and message_delta), `message.usage`
// (Anthropic message_start) and `response.usage` (OpenAI responses events such as
// response.completed). Keying on where the object sits rather than on the event type
// keeps one path for bodies and streams. A repeated member: the last wins.
struct UsagePlaces {
  std::optional<UsageCounts> top, message, response;
};

// The object at p, which the usage of its `usage` member (if any) goes in.
const char* walk_usage_holder(const char* p, const char* end, std::optional<UsageCounts>& place) {
  return walk_object(p, end, [&](std::string_view key, const char* v, const char* v_end) {
    return key == "usage" ? read_usage(v, v_end, place) : skip_value(v, v_end);
  });
}

// False when the text is not one well-formed object.
bool find_usage(std::string_view text, UsagePlaces& found) {
  const char* const end = text.data() + text.size();
  const char* after = walk_object(text.data(), end, [&](std::string_view key, const char* v, const char* v_end) {
    if (key == "usage") return read_usage(v, v_end, found.top);
    if ((key == "message" || key == "response") && v != v_end && *v == '{')
      return walk_usage_holder(v, v_end, key == "message" ? found.message : found.response);
    return skip_value(v, v_end);
  });
  return after && skip_ws(after, end) == end;
}

// Merges one usage object into the totals. Fields present replace what was seen before
// rather than add to it: OpenAI sends usage once (the last wins if it repeats) and
// Anthropic's message_delta counts are cumulative.
void merge(const UsageCounts& counts, Usage& usage) {
  auto in = counts.prompt ? counts.prompt : counts.input;
  auto out = counts.completion ? counts.completion : counts.output;
  if (in) usage.input_tokens = *in;
  if (out) usage.output_tokens = *out;
  if (in || out) usage.found = true;
}

// Merges the usage objects of a JSON text into the totals; false when the text is not
// well formed, which is not ours to judge, just not counted.
bool take_usage_from_json(std::string_view text, Usage& usage) {
  UsagePlaces found;
  if (!find_usage(text, found)) return false;
  for (const auto* place : {&found.top, &found.message, &found.response})
    if (*place) merge(**place, usage);
  return true;
}

bool is_all_json_ws(std::string_view s) {
  return skip_ws(s.data(), s.data() + s.size()) == s.data() + s.size();
}

// Whether s, trailing whitespace aside, ends as a JSON object does: a body that does might
// be all there.
bool ends_with_brace(std::string_view s) {
  size_t n = s.size();
  while (n > 0 && is_json_ws(s[n - 1])) --n;
  return n > 0 && s[n - 1] == '}';
}

}  // namespace

UsageTap::UsageTap(std::string_view content_type, size_t max_json_bytes, size_t max_event_bytes)
    : max_json_bytes_(max_json_bytes), max_event_bytes_(max_event_bytes) {
  // The usual spelling is compared first: one compare, where taking parameters off and
  // ignoring case are loops.
  auto is_type = [content_type](std::string_view want) {
    return content_type == want || iequals(media_type(content_type), want);
  };
  if (is_type("application/json")) mode_ = Mode::Json;
  else if (is_type("text/event-stream")) mode_ = Mode::Sse;
}

void UsageTap::feed(std::string_view data) {
  switch (mode_) {
    case Mode::None:
      return;
    case Mode::Json:
      feed_json(data);
      return;
    case Mode::Sse:
      feed_sse(data);
      return;
  }
}

// A body that arrives in one piece, as a small answer does, is walked straight from the
// caller's bytes when it looks complete, rather than copied to be walked at the end. If
// the walk says it is one well-formed object, nothing that follows can add to it, and
// anything but whitespace breaks it. Otherwise (cut short, or malformed) the bytes are
// gathered in buf_ as for a body that comes in pieces, and walked whole by finish().
void UsageTap::feed_json(std::string_view data) {
  if (overflow_ || json_ == JsonState::Broken) return;
  json_bytes_ += data.size();
  if (json_bytes_ > max_json_bytes_) {
    // Too big to parse within our memory bound: give up on this body for good.
    overflow_ = true;
    std::string().swap(buf_);
    return;
  }
  if (json_ == JsonState::Walked) {
    if (!is_all_json_ws(data)) json_ = JsonState::Broken;  // more than one JSON value
    return;
  }
  if (buf_.empty() && ends_with_brace(data)) {
    walked_ = usage_;
    if (take_usage_from_json(data, walked_)) {
      json_ = JsonState::Walked;
      return;
    }
  }
  buf_.append(data);
}

// Splits the new bytes into lines. Only the new bytes are scanned: an unfinished line
// waits in buf_ without its terminator, and a \r at the very end of a feed sets skip_lf_
// so that a \n opening the next feed completes the same \r\n rather than a blank line.
void UsageTap::feed_sse(std::string_view data) {
  size_t i = 0;
  if (skip_lf_ && !data.empty()) {
    if (data[0] == '\n') i = 1;
    skip_lf_ = false;
  }
  const char* const end = data.data() + data.size();
  while (i < data.size()) {
    const auto line_end = static_cast<size_t>(find_either(data.data() + i, end, '\r', '\n') - data.data());
    if (line_end == data.size()) {
      append_to_line(data.substr(i));
      return;
    }
    const auto line = data.substr(i, line_end - i);
    if (buf_.empty() && !line_overflow_) {
      on_whole_line(line);  // all of it is here: no need to gather it first
    } else {
      append_to_line(line);
      end_line();
    }
    i = line_end + 1;
    if (data[line_end] == '\r') {
      if (i == data.size()) skip_lf_ = true;
      else if (data[i] == '\n') ++i;
    }
  }
}

void UsageTap::append_to_line(std::string_view part) {
  if (line_overflow_ || part.empty()) return;
  if (buf_.size() + part.size() > max_event_bytes_) {
    // A line longer than an event may be is dropped, and with it the event it belongs to.
    line_overflow_ = true;
    buf_.clear();
    return;
  }
  buf_.append(part);
}

void UsageTap::end_line() {
  if (line_overflow_) {
    line_overflow_ = false;
    drop_event();
  } else {
    on_sse_line(buf_);
  }
  buf_.clear();
}

// A line that arrived whole, held to the same bound as one gathered in buf_.
void UsageTap::on_whole_line(std::string_view line) {
  if (line.size() > max_event_bytes_) drop_event();
  else on_sse_line(line);
}

void UsageTap::drop_event() {
  overflow_ = true;
  event_data_.clear();
}

// One complete line, per the WHATWG event-stream rules: blank dispatches, ':' opens a
// comment, otherwise "field:value" with one optional space after the colon.
void UsageTap::on_sse_line(std::string_view line) {
  if (first_line_) {
    first_line_ = false;
    if (starts_with(line, "\xEF\xBB\xBF")) line.remove_prefix(3);
  }
  if (line.empty()) {
    dispatch_event();
    return;
  }
  if (line.front() == ':') return;
  auto colon = line.find(':');
  auto field = line.substr(0, colon);
  std::string_view value;
  if (colon != std::string_view::npos) {
    value = line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  // `event:` names the event, but Anthropic and OpenAI repeat it as the JSON's "type" and
  // the usage object's place in the JSON says all we need; id and retry do not matter.
  if (field != "data" || overflow_) return;
  if (event_data_.size() + value.size() + 1 > max_event_bytes_) {
    drop_event();
    return;
  }
  event_data_.append(value);
  event_data_.push_back('\n');
}

void UsageTap::dispatch_event() {
  if (!overflow_ && !event_data_.empty()) {
    event_data_.pop_back();  // the \n after the last data line is not part of the data
    on_sse_event(event_data_);
  }
  event_data_.clear();
  overflow_ = false;
}

void UsageTap::on_sse_event(std::string_view data) {
  if (data == "[DONE]") return;  // OpenAI's end marker, not JSON
  // Most stream events (every content delta) carry no usage; ruling them out before any
  // walking keeps a long stream cheap. Providers never escape this key. A JSON body goes
  // without this check: measured on a chat answer, which nearly always has usage, it added
  // about a tenth to the walk. It would save the walk only for bodies without usage
  // (errors, listings), and those would still have to be gathered: only the walk tells a
  // whole body from its first piece.
  if (mentions_usage(data)) take_usage_from_json(data, usage_);
}

Usage UsageTap::finish() {
  if (mode_ == Mode::Json) {
    if (!overflow_) {
      if (json_ == JsonState::Walked) usage_ = walked_;
      else if (json_ == JsonState::Gathering && !buf_.empty()) take_usage_from_json(buf_, usage_);
    }
    // What was fed is accounted for: a later feed would start a new body, as it always has.
    json_ = JsonState::Gathering;
    json_bytes_ = 0;
    std::string().swap(buf_);
  } else if (mode_ == Mode::Sse) {
    // WHATWG drops an event cut off by the end of the stream. We dispatch it instead: a
    // cut-off JSON object cannot parse (its closing brace is missing), so only an event
    // that lacks just its blank line, as some servers send the last one, is counted.
    if (!buf_.empty() || line_overflow_) end_line();
    skip_lf_ = false;
    dispatch_event();
  }
  return usage_;
}

}  // namespace keypool::proxy
