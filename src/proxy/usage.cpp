#include "proxy/usage.h"

#include <array>
#include <cstring>
#include <charconv>
#include <limits>
#include <optional>
#include <type_traits>

#include "base/strings.h"

namespace keypool::proxy {
namespace {

// The media type without parameters: "Text/Event-Stream; charset=utf-8" -> "Text/Event-Stream".
std::string_view media_type(std::string_view content_type) {
  return trim(content_type.substr(0, content_type.find(';')));
}

// JSON's number grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
bool is_json_number(std::string_view s) {
  size_t i = 0;
  auto digits = [&] {
    size_t from = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    return i > from;
  };
  if (i < s.size() && s[i] == '-') ++i;
  if (i < s.size() && s[i] == '0') ++i;
  else if (!digits()) return false;
  if (i < s.size() && s[i] == '.' && (++i, !digits())) return false;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    if (!digits()) return false;
  }
  return i == s.size();
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

constexpr auto kStructural = [] {
  std::array<bool, 256> t{};
  for (unsigned char c : std::string_view("\"{}[]")) t[c] = true;
  return t;
}();

// What a number or literal is made of (checked properly once its extent is known).
constexpr bool is_scalar_char(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '+' ||
         c == '.';
}

// Walks JSON text without building a document, to find the usage objects and read their
// counts. Parsing into nlohmann::json cost more than everything else keypool does for a
// small proxied chat answer, even when only the usage object went through it. The walk
// checks what it passes through (strings closed, brackets matched, scalars well formed,
// one top-level object and nothing after it), so malformed text counts nothing; the
// inside of containers it skips is not checked, as nothing is read from there.
class UsageFinder {
 public:
  explicit UsageFinder(std::string_view text) : t_(text) {}

  // Calls fn(key, value) for each member of the object that is the whole text; false
  // when the text is anything else. fn may return false to reject the object.
  template <class Fn>
  bool whole_object(Fn&& fn) {
    bool ok = members(fn);
    skip_ws();
    return ok && pos_ == t_.size();
  }

  // Where each API keeps its usage object: top level (OpenAI chat/completions and
  // responses bodies, OpenAI chat chunks, Anthropic message bodies and message_delta),
  // `message.usage` (Anthropic message_start) and `response.usage` (OpenAI responses
  // events such as response.completed). Keying on where the object sits rather than on
  // the event type keeps one path for bodies and streams. A repeated member: the last wins.
  struct Found {
    std::optional<std::string_view> top, message, response;
  };

  std::optional<Found> find() {
    Found f;
    bool ok = whole_object([&](std::string_view key, std::string_view value) {
      if (key == "usage") {
        f.top = value;
      } else if ((key == "message" || key == "response") && value.front() == '{') {
        UsageFinder inner(value);
        bool inner_ok = inner.members([&](std::string_view k, std::string_view v) {
          if (k == "usage") (key == "message" ? f.message : f.response) = v;
        });
        if (!inner_ok) return false;
      }
      return true;
    });
    if (!ok) return std::nullopt;
    return f;
  }

 private:
  // Calls fn(key, value) for each member of the object at the cursor; false when the text
  // is not an object or fn says stop. Keys are compared raw: providers never escape them.
  template <class Fn>
  bool members(Fn&& fn) {
    skip_ws();
    if (!take('{')) return false;
    skip_ws();
    if (take('}')) return true;
    for (;;) {
      std::string_view key, value;
      skip_ws();
      if (!string(&key)) return false;
      skip_ws();
      if (!take(':')) return false;
      skip_ws();
      if (!skip_value(&value)) return false;
      if constexpr (std::is_same_v<decltype(fn(key, value)), bool>) {
        if (!fn(key, value)) return false;
      } else {
        fn(key, value);
      }
      skip_ws();
      if (take('}')) return true;
      if (!take(',')) return false;
    }
  }

  bool take(char c) {
    if (pos_ < t_.size() && t_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  void skip_ws() {
    while (pos_ < t_.size() && (t_[pos_] == ' ' || t_[pos_] == '\n' || t_[pos_] == '\r' || t_[pos_] == '\t'))
      ++pos_;
  }

  // At an opening quote: moves past the closing one; *out is the raw text between them.
  // memchr finds each candidate quote; one preceded by an odd run of backslashes is escaped.
  bool string(std::string_view* out) {
    if (!take('"')) return false;
    const size_t start = pos_;
    for (;;) {
      const void* q = std::memchr(t_.data() + pos_, '"', t_.size() - pos_);
      if (!q) return false;
      const size_t at = static_cast<size_t>(static_cast<const char*>(q) - t_.data());
      size_t backslashes = 0;
      while (at - backslashes > start && t_[at - 1 - backslashes] == '\\') ++backslashes;
      pos_ = at + 1;
      if (backslashes % 2 == 0) {
        *out = t_.substr(start, at - start);
        return true;
      }
    }
  }

  // Moves past one value of any kind. Containers are matched bracket for bracket with an
  // explicit stack, so deep nesting costs memory in proportion, never recursion.
  bool skip_value(std::string_view* out) {
    size_t start = pos_;
    if (pos_ >= t_.size()) return false;
    char c = t_[pos_];
    if (c == '"') {
      std::string_view ignored;
      if (!string(&ignored)) return false;
    } else if (c == '{' || c == '[') {
      std::string closers;
      while (pos_ < t_.size()) {
        // Only quotes and brackets matter inside a skipped container.
        while (pos_ < t_.size() && !kStructural[static_cast<unsigned char>(t_[pos_])]) ++pos_;
        if (pos_ == t_.size()) break;
        char d = t_[pos_];
        if (d == '"') {
          std::string_view ignored;
          if (!string(&ignored)) return false;
          continue;
        }
        ++pos_;
        if (d == '{') closers.push_back('}');
        else if (d == '[') closers.push_back(']');
        else if (d == '}' || d == ']') {
          if (closers.empty() || closers.back() != d) return false;
          closers.pop_back();
          if (closers.empty()) break;
        }
      }
      if (!closers.empty()) return false;
    } else {
      while (pos_ < t_.size() && is_scalar_char(t_[pos_])) ++pos_;
      auto scalar = t_.substr(start, pos_ - start);
      if (scalar != "true" && scalar != "false" && scalar != "null" && !is_json_number(scalar)) return false;
    }
    *out = t_.substr(start, pos_ - start);
    return true;
  }

  std::string_view t_;
  size_t pos_ = 0;
};

// Merges one usage object into the totals. Fields present replace what was seen before
// rather than add to it: OpenAI sends usage once (the last wins if it repeats) and
// Anthropic's message_delta counts are cumulative. A usage object that is not well formed
// counts nothing.
void take_usage_value(std::string_view text, Usage& usage) {
  if (text.front() != '{') return;  // OpenAI chunks carry "usage": null until the last one
  std::optional<int64_t> prompt, input, completion, output;
  bool ok = UsageFinder(text).whole_object([&](std::string_view key, std::string_view value) {
    if (key == "prompt_tokens") prompt = token_count(value);
    else if (key == "input_tokens") input = token_count(value);
    else if (key == "completion_tokens") completion = token_count(value);
    else if (key == "output_tokens") output = token_count(value);
  });
  if (!ok) return;
  auto in = prompt ? prompt : input;
  auto out = completion ? completion : output;
  if (in) usage.input_tokens = *in;
  if (out) usage.output_tokens = *out;
  if (in || out) usage.found = true;
}

void take_usage_from_text(std::string_view text, Usage& usage, bool prefilter) {
  // Most stream events (every content delta) carry no usage; skipping them before any
  // walking keeps a long stream cheap. Providers never escape this key. A whole JSON body
  // is walked at once instead: the search would be a second pass over it.
  if (prefilter && text.find("\"usage\"") == std::string_view::npos) return;
  auto found = UsageFinder(text).find();
  if (!found) return;  // malformed: not ours to judge, just not counted
  for (const auto& place : {found->top, found->message, found->response})
    if (place) take_usage_value(*place, usage);
}

}  // namespace

UsageTap::UsageTap(std::string_view content_type, size_t max_json_bytes, size_t max_event_bytes)
    : max_json_bytes_(max_json_bytes), max_event_bytes_(max_event_bytes) {
  auto type = media_type(content_type);
  if (iequals(type, "application/json")) mode_ = Mode::Json;
  else if (iequals(type, "text/event-stream")) mode_ = Mode::Sse;
}

void UsageTap::feed(std::string_view data) {
  switch (mode_) {
    case Mode::None:
      return;
    case Mode::Json:
      if (overflow_) return;
      if (buf_.size() + data.size() > max_json_bytes_) {
        // Too big to parse within our memory bound: give up on this body for good.
        overflow_ = true;
        std::string().swap(buf_);
        return;
      }
      buf_.append(data);
      return;
    case Mode::Sse:
      feed_sse(data);
      return;
  }
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
  while (i < data.size()) {
    size_t end = data.find_first_of("\r\n", i);
    if (end == std::string_view::npos) {
      append_to_line(data.substr(i));
      return;
    }
    append_to_line(data.substr(i, end - i));
    if (data[end] == '\r') {
      if (end + 1 == data.size()) skip_lf_ = true;
      else if (data[end + 1] == '\n') ++end;
    }
    end_line();
    i = end + 1;
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
    overflow_ = true;
    event_data_.clear();
  } else {
    on_sse_line(buf_);
  }
  buf_.clear();
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
    overflow_ = true;
    event_data_.clear();
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
  take_usage_from_text(data, usage_, true);
}

Usage UsageTap::finish() {
  if (mode_ == Mode::Json) {
    if (!overflow_ && !buf_.empty()) take_usage_from_text(buf_, usage_, false);
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
