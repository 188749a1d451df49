#pragma once
// UsageTap: reads token usage out of a response as it streams past, without holding it
// and without delaying it. Pure: fed the body bytes, asked for the result at the end (or
// when the client abandons the stream: what passed is still counted).
//
// Understands: OpenAI-compatible JSON bodies (`usage.prompt_tokens/completion_tokens`, or
// `input_tokens/output_tokens`), OpenAI-compatible SSE (`data: {...}` chunks; the usage
// is in the final chunk when the client asked for it), and Anthropic SSE (`message_start`
// carries `message.usage.input_tokens`, `message_delta` carries `usage.output_tokens`;
// merged). Memory is bounded and does not grow with the body: a JSON body is scanned as it
// passes, keeping only its nesting (at most kMaxJsonDepth levels) and the usage object
// being read (at most max_usage_bytes); an SSE event over max_event_bytes is skipped.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace keypool::proxy {

struct Usage {
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  bool found = false;
};

// A JSON body whose brackets nest deeper than this counts nothing. It bounds the state a
// body cut in pieces needs (a bit per level); the body read whole meets the same bound,
// so how the network splits a body never changes what it counts.
inline constexpr size_t kMaxJsonDepth = 1024;

// The counts in one usage object, as sent.
struct UsageCounts {
  std::optional<int64_t> prompt, input, completion, output;
};

// Where each API keeps its usage object: top level (OpenAI chat/completions and responses
// bodies, OpenAI chat chunks, Anthropic message bodies and message_delta), `message.usage`
// (Anthropic message_start) and `response.usage` (OpenAI responses events such as
// response.completed). Keying on where the object sits rather than on the event type
// keeps one path for bodies and streams. A repeated member: the last wins.
struct UsagePlaces {
  std::optional<UsageCounts> top, message, response;
};

// UsageTap's JSON mode. A body that arrives whole is walked where it lies (take_whole);
// one that comes in pieces, cut anywhere, is scanned as they pass (feed), and the scan
// finds what the walk finds in the whole text: the same usage, and the same verdict on
// whether the text is one well-formed object. Between pieces it keeps the nesting (a bit
// per level), the state of the token it stopped in and, while inside a usage object, that
// object's bytes, which the walk's own code reads when the object closes. In this header
// because UsageTap holds one; the tests and the fuzzer hold the scan to the walk with it.
class JsonUsageScan {
 public:
  explicit JsonUsageScan(size_t max_usage_bytes) : max_usage_bytes_(max_usage_bytes) {}
  // Nothing but whitespace has been fed: a piece can still be read in place as the body.
  bool at_start() const { return state_ == State::Start; }
  // Reads a piece that may be the whole body where it lies, without copying a byte. True
  // when it was one well-formed object (only whitespace may follow); false, with nothing
  // taken, when it was not: the piece is then to be fed.
  bool take_whole(std::string_view body);
  void feed(std::string_view data);
  // Merges the usage of a well-formed body into usage, and makes ready for a new body.
  void finish(Usage& usage);
  size_t retained_bytes() const { return kept_.capacity(); }

  // Where a number is in JSON's -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, as far as
  // it has come (public for usage.cpp's helpers). Zero, Int, Frac and ExpDigits may end it.
  enum class NumberPart : uint8_t { Minus, Zero, Int, Point, Frac, Exp, ExpSign, ExpDigits };

 private:
  // Where the scan is. A "walked" object is the top-level one, or a `message` or
  // `response` object in it: their keys are read and their syntax is checked. Any other
  // container is skipped by its strings and brackets only, as the walk skips it; so is a
  // usage object, whose bytes are kept as they pass and read (syntax and all) at its end.
  enum class State : uint8_t {
    Start,         // whitespace before the top-level '{'
    KeyOrClose,    // just inside a walked object: a key or '}'
    Key,           // after a ',' in a walked object: a key
    InKey,         // inside a key
    Colon,         // after a key
    Value,         // after the ':'
    InString,      // inside a string value of a walked object
    InNumber,      // inside a number value of a walked object; number_ says where
    InLiteral,     // inside true, false or null; literal_ holds the bytes still due
    CommaOrClose,  // after a value of a walked object
    Skip,          // inside a skipped container, outside its strings
    InSkipString,  // inside a string in a skipped container
    Done,          // the top-level object closed: only whitespace may follow
    Broken,        // not one well-formed object (or too deep): counts nothing
  };
  // What the member whose key was just read means for its value.
  enum class Member : uint8_t { Plain, Usage, Holder };
  // One of places_. Named rather than pointed at, so that a scan copied or moved with its
  // tap stays whole.
  enum class Place : uint8_t { Top, Message, Response };

  const char* step(const char* p, const char* end);
  const char* on_start(const char* p, const char* end);
  const char* on_key_or_close(const char* p, const char* end);
  const char* on_key(const char* p, const char* end);
  const char* on_key_text(const char* p, const char* end);
  const char* on_colon(const char* p, const char* end);
  const char* on_value(const char* p, const char* end);
  const char* on_string_value(const char* p, const char* end);
  const char* on_number(const char* p, const char* end);
  const char* on_literal(const char* p, const char* end);
  const char* on_comma_or_close(const char* p, const char* end);
  const char* on_skip(const char* p, const char* end);
  const char* on_done(const char* p, const char* end);

  const char* begin_scalar(const char* p, const char* end);
  const char* skip_in_container(const char* p, const char* end);
  bool take_skipped_bracket(char c);
  const char* string_end(const char* p, const char* end);
  void classify_key();
  const char* close_walked(const char* p);
  bool open_level(bool is_array);
  bool close_level(bool is_array);
  std::optional<UsageCounts>& place(Place p);
  size_t walked_depth() const { return walked_place_ == Place::Top ? 1 : 2; }
  void keep(const char* from, const char* to);
  void read_kept_usage();
  const char* broken(const char* end);

  State state_ = State::Start;
  NumberPart number_ = NumberPart::Int;
  Member member_ = Member::Plain;
  // In a string: the last piece ended in a backslash, which escapes the next one's first byte.
  bool escaped_ = false;
  std::string_view literal_;  // InLiteral: the rest of "true", "false" or "null"
  // The open brackets, outermost first: a bit per level, set for '['. depth_ of them are
  // open (the top-level object is level 1). Left uninitialized (open_level writes before
  // it reads): a tap is made per response, and zeroing these 128 bytes cost 25
  // instructions each time.
  std::array<uint64_t, kMaxJsonDepth / 64> arrays_;
  size_t depth_ = 0;
  // InKey: the key's length so far, and its first bytes (enough to tell the keys we read).
  size_t key_size_ = 0;
  char key_[8] = {};
  // Where a usage member of the walked object the scan is in goes: Top in the top-level
  // object, Message or Response in a `message` or `response` object.
  Place walked_place_ = Place::Top;
  Place holder_place_ = Place::Top;  // Holder: the place of the object its value opens
  // A usage object being skipped is kept, to be read when it closes; one over
  // max_usage_bytes_ is not (kept_too_big_) and counts nothing.
  bool keeping_ = false;
  bool kept_too_big_ = false;
  std::string kept_;
  size_t max_usage_bytes_;
  UsagePlaces places_;
};

// The default bound on one usage object in a JSON body: real ones are a few hundred bytes.
inline constexpr size_t kDefaultMaxUsageBytes = 4 * 1024;

class UsageTap {
 public:
  // content_type: the response's Content-Type ("application/json", "text/event-stream").
  // max_usage_bytes: the largest usage object a JSON body may carry; a bigger one counts
  // nothing, as a malformed one does (the rest of the body still counts). The body itself
  // has no bound. max_event_bytes: the largest SSE event read.
  explicit UsageTap(std::string_view content_type, size_t max_usage_bytes = kDefaultMaxUsageBytes,
                    size_t max_event_bytes = 1024 * 1024);
  void feed(std::string_view data);
  // Parses what is pending (a JSON body) and returns the totals seen so far.
  Usage finish();
  // The bytes the tap holds on to between feeds (its buffers' capacity): what an exchange
  // costs in memory, whatever the body's size.
  size_t retained_bytes() const {
    return buf_.capacity() + event_data_.capacity() + json_.retained_bytes();
  }

 private:
  enum class Mode { None, Json, Sse };
  void feed_json(std::string_view data);
  void feed_sse(std::string_view data);
  void append_to_line(std::string_view part);
  void end_line();
  void on_whole_line(std::string_view line);
  void drop_event();
  void on_sse_line(std::string_view line);
  void dispatch_event();
  void on_sse_event(std::string_view data);

  Mode mode_ = Mode::None;
  size_t max_event_bytes_;
  JsonUsageScan json_;  // Json: the body scanned so far
  // Sse: the current line, up to but excluding its terminator, so each byte is scanned
  // once however the stream is split; a line that arrives whole is read where it lies
  // instead.
  std::string buf_;
  std::string event_data_;      // `data:` values of the current event, each followed by \n
  bool overflow_ = false;       // Sse: current event skipped
  bool line_overflow_ = false;  // Sse: current line too big, dropped until its end
  bool skip_lf_ = false;        // Sse: the last feed ended in \r; a leading \n pairs with it
  bool first_line_ = true;      // Sse: a byte order mark may open the stream
  Usage usage_;
};

}  // namespace keypool::proxy
