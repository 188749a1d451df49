#include "proxy/usage.h"

#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <cstring>
#include <limits>
#include <optional>

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
  // The usual count, a few digits, is read here: a from_chars call costs more than that.
  // 18 digits cannot overflow.
  if (!v.empty() && v.size() <= 18) {
    int64_t n = 0;
    size_t i = 0;
    for (; i < v.size() && v[i] >= '0' && v[i] <= '9'; ++i) n = n * 10 + (v[i] - '0');
    if (i == v.size()) return n;
  }
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
// inside of containers it skips is not checked, as nothing is read from there, beyond
// their strings and brackets, which must match and nest at most kMaxJsonDepth deep.
//
// Each step takes a cursor and the end of the text and returns where what it moved past
// ends, or nullptr when the text there is malformed or cut off. Cursors are plain
// pointers held in locals, so the hot loops keep them in registers.

// The first test settles the usual case, a byte that is not whitespace, in one compare.
constexpr bool is_json_ws(char c) {
  return static_cast<unsigned char>(c) <= ' ' && (c == ' ' || c == '\n' || c == '\r' || c == '\t');
}

// Inlined, as is every step met once per member or value: a call per step cost more than
// the step.
[[gnu::always_inline]] inline const char* skip_ws(const char* p, const char* end) {
  while (p < end && is_json_ws(*p)) ++p;
  return p;
}

// Moves p past whitespace and then c, when c is there. Compact JSON, the usual kind, has
// c right at p: that is tested first.
[[gnu::always_inline]] inline bool take(char c, const char*& p, const char* end) {
  if (p != end && *p == c) {
    ++p;
    return true;
  }
  p = skip_ws(p, end);
  if (p == end || *p != c) return false;
  ++p;
  return true;
}

// Whether the quote at q ends the string it is in: it does unless an odd run of
// backslashes comes just before it. The run cannot reach back past the string's opening
// quote, so any bound at or before that quote gives the same answer.
bool closes_string(const char* q, const char* bound) {
  const char* run = q;
  while (run > bound && run[-1] == '\\') --run;
  return (q - run) % 2 == 0;
}

// p is inside a string that opened at or after bound: returns just past its closing
// quote. Looking back from each quote for backslashes, rather than stopping at each
// backslash, keeps an answer full of \n escapes on the fast scan. The escapes themselves
// are not checked.
const char* finish_string(const char* p, const char* end, const char* bound) {
  for (;;) {
    const char* const quote = find_either(p, end, '"', '"');  // the next quote
    if (quote == end) return nullptr;
    if (closes_string(quote, bound)) return quote + 1;
    p = quote + 1;
  }
}

// finish_string, with the usual case first: a string (a key, an id, a role) that ends
// within 16 bytes without a backslash before its quote. This part is small enough to be
// inlined where strings are met, which measured a fifth faster than a call per string;
// `inline` is what tips GCC into doing so.
inline const char* finish_string_fast(const char* p, const char* end, const char* bound) {
#if defined(__SSE2__)
  if (end - p >= 16) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    if (const int hits = _mm_movemask_epi8(_mm_cmpeq_epi8(bytes, _mm_set1_epi8('"')))) {
      const char* const quote = p + std::countr_zero(static_cast<unsigned>(hits));
      // quote[-1] is in the text: p is past the string's opening quote.
      if (quote[-1] != '\\') return quote + 1;
    }
  }
#endif
  return finish_string(p, end, bound);
}

// p is just past an opening quote: returns just past the closing one.
inline const char* skip_string(const char* p, const char* end) { return finish_string_fast(p, end, p); }

// The open brackets of a container being skipped, innermost last, one bit each (set for
// '['). The first levels live in one word, so the usual shallow container costs no
// memory; deeper levels spill a word at a time to an array (kMaxJsonDepth bounds it), so
// deep nesting costs a bit per level, never recursion. The array is the caller's and is
// moved by calls kept out of line, so the stack itself never has its address taken and
// the compiler can keep it in registers. (With the storage inside, the spill calls took
// the stack's address and every bracket went through memory: about 20 more instructions
// on a chat answer's `choices`.)
struct SpilledWords {
  std::array<uint64_t, kMaxJsonDepth / 64> words;  // written before read: left uninitialized
  size_t size = 0;
};

class BracketStack {
 public:
  // open_levels: the brackets already open around the container in the text (the
  // top-level object's is one), so that the depth is the text's, as kMaxJsonDepth means.
  BracketStack(SpilledWords& spilled, size_t open_levels)
      : depth_(open_levels), base_(open_levels), spilled_(&spilled) {}
  // False when the bracket would nest deeper than kMaxJsonDepth. Words fill at depths
  // that are multiples of 64, as kMaxJsonDepth is: the bound is tested only then, so the
  // usual push pays nothing for it.
  bool push(bool is_array) {
    if (depth_ % kBits == 0) {
      if (depth_ == kMaxJsonDepth) return false;
      bits_ = spill(*spilled_, bits_);
    }
    bits_ = (bits_ << 1) | static_cast<uint64_t>(is_array);
    ++depth_;
    return true;
  }
  // False when the closer does not match the innermost open bracket, or none is open.
  bool pop(bool is_array) {
    if (depth_ == base_ || (bits_ & 1) != static_cast<uint64_t>(is_array)) return false;
    bits_ >>= 1;
    --depth_;
    if (depth_ % kBits == 0) bits_ = unspill(*spilled_);
    return true;
  }
  bool empty() const { return depth_ == base_; }

 private:
  // Both return the new innermost word.
  [[gnu::noinline]] static uint64_t spill(SpilledWords& spilled, uint64_t bits) {
    spilled.words[spilled.size++] = bits;
    return 0;
  }
  [[gnu::noinline]] static uint64_t unspill(SpilledWords& spilled) {
    return spilled.words[--spilled.size];
  }

  static constexpr size_t kBits = 64;
  static_assert(kMaxJsonDepth % kBits == 0);
  uint64_t bits_ = 0;  // the levels above the spilled ones; bit 0 is the innermost
  size_t depth_;       // counted from the text's start
  size_t base_;        // the depth outside the container
  SpilledWords* spilled_;
};

#if defined(__SSE2__)
// The quotes, backslashes and brackets among the 16 bytes at p, one bit per byte.
struct Block {
  unsigned quotes;
  unsigned backslashes;
  unsigned brackets;
};

inline Block classify(const char* p) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  // '[' and ']' differ from '{' and '}' only in bit 5: setting it folds each pair into one.
  const __m128i folded = _mm_or_si128(bytes, _mm_set1_epi8(0x20));
  const __m128i brackets =
      _mm_or_si128(_mm_cmpeq_epi8(folded, _mm_set1_epi8('{')), _mm_cmpeq_epi8(folded, _mm_set1_epi8('}')));
  auto bits = [](__m128i hits) { return static_cast<unsigned>(_mm_movemask_epi8(hits)); };
  return {bits(_mm_cmpeq_epi8(bytes, _mm_set1_epi8('"'))), bits(_mm_cmpeq_epi8(bytes, _mm_set1_epi8('\\'))),
          bits(brackets)};
}

// Bit i of the result is the parity of bits 0..i of x: for quote bits, which bytes are
// inside a string (the opening quote included, the closing one not).
constexpr unsigned prefix_xor(unsigned x) {
  x ^= x << 1;
  x ^= x << 2;
  x ^= x << 4;
  x ^= x << 8;
  return x & 0xFFFF;
}
#endif

enum class BracketStep { More, Malformed, Closed };

// An opening bracket is pushed, unless that nests too deep; a closing one must match the
// innermost open one, and closes the container when it was the outermost.
inline BracketStep take_bracket(BracketStack& open, char c) {
  if (c == '{' || c == '[') return open.push(c == '[') ? BracketStep::More : BracketStep::Malformed;
  if (!open.pop(c == ']')) return BracketStep::Malformed;
  return open.empty() ? BracketStep::Closed : BracketStep::More;
}

// begin is at '{' or '[', inside open_levels brackets. Only quotes and brackets matter
// inside: nothing is read from there. With SSE2 the text goes 16 bytes at a time, each
// block starting outside any string: when no quote in the block follows a backslash, every
// quote opens or closes a string, so which bytes are inside strings follows from the quote
// bits alone (prefix_xor), and only the brackets outside strings are visited. A string
// still open at the block's end is finished at string speed (a long answer's content is
// one string), and the next block starts after it. A block with a quote after a backslash
// (maybe escaped), and the last bytes, go the plain way: byte by byte outside strings,
// string by string. (That plain way alone took about a fifth more instructions on a chat
// answer's `choices`, where most bytes are in short strings, each scanned on its own.)
const char* skip_container(const char* const begin, const char* const end, size_t open_levels) {
  SpilledWords spilled;
  BracketStack open(spilled, open_levels);
  const char* p = begin;
  while (p < end) {
#if defined(__SSE2__)
    if (end - p >= 16) {
      const Block b = classify(p);
      // A quote just after a backslash may be an escaped one, which the bits cannot tell.
      // (The byte before the block does not matter: a block starts outside strings, so a
      // quote at its first byte opens one.)
      if ((b.quotes & (b.backslashes << 1)) == 0) {
        const unsigned inside = prefix_xor(b.quotes);
        for (unsigned brackets = b.brackets & ~inside; brackets; brackets &= brackets - 1) {
          const int i = std::countr_zero(brackets);
          const BracketStep step = take_bracket(open, p[i]);
          if (step == BracketStep::Malformed) return nullptr;
          if (step == BracketStep::Closed) return p + i + 1;
        }
        p += 16;
        // A string opened in the block and not closed in it; begin bounds its backslash run.
        if ((inside >> 15) != 0 && !(p = finish_string_fast(p, end, begin))) return nullptr;
        continue;
      }
    }
#endif
    const char* const to = end - p >= 16 ? p + 16 : end;
    while (p < to) {
      const char c = *p++;
      if (c == '"') {
        if (!(p = skip_string(p, end))) return nullptr;
      } else if (c == '{' || c == '[' || c == '}' || c == ']') {
        const BracketStep step = take_bracket(open, c);
        if (step == BracketStep::Malformed) return nullptr;
        if (step == BracketStep::Closed) return p;
      }
    }
  }
  return nullptr;  // cut off with brackets still open
}

constexpr bool is_digit(char c) { return c >= '0' && c <= '9'; }

const char* skip_digits(const char* p, const char* end) {
  while (p < end && is_digit(*p)) ++p;
  return p;
}

// What may follow a number's integer part: a fraction, an exponent, or both. Rare in
// what we read (counts and timestamps are integers), so it is kept out of the usual path.
const char* skip_fraction_and_exponent(const char* p, const char* end) {
  if (p < end && *p == '.') {
    const char* const digits = ++p;
    if ((p = skip_digits(p, end)) == digits) return nullptr;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    ++p;
    if (p < end && (*p == '+' || *p == '-')) ++p;
    const char* const digits = p;
    if ((p = skip_digits(p, end)) == digits) return nullptr;
  }
  return p;
}

// JSON's number grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, matched from p as
// far as it goes; nullptr when not even that matches.
[[gnu::always_inline]] inline const char* skip_number(const char* p, const char* end) {
  if (p < end && *p == '-') ++p;
  if (p < end && *p == '0') {
    ++p;
  } else {
    const char* const digits = p;
    if ((p = skip_digits(p, end)) == digits) return nullptr;
  }
  if (p < end && (*p == '.' || *p == 'e' || *p == 'E')) return skip_fraction_and_exponent(p, end);
  return p;
}

// true, false or null.
const char* skip_literal(const char* p, const char* end) {
  for (std::string_view literal : {"true", "false", "null"}) {
    if (static_cast<size_t>(end - p) >= literal.size() && std::memcmp(p, literal.data(), literal.size()) == 0)
      return p + literal.size();
  }
  return nullptr;
}

// A number or a literal. What follows it is left to the caller, which only accepts what
// JSON allows after a value (whitespace, ',', '}'), so "12abc", "01" and "truex" fail
// there, in the one pass.
[[gnu::always_inline]] inline const char* skip_scalar(const char* p, const char* end) {
  if (*p == '-' || is_digit(*p)) return skip_number(p, end);
  return skip_literal(p, end);
}

// Moves past one value of any kind, inside open_levels brackets.
[[gnu::always_inline]] inline const char* skip_value(const char* p, const char* end,
                                                     size_t open_levels) {
  if (p == end) return nullptr;
  if (*p == '"') return skip_string(p + 1, end);
  if (*p == '{' || *p == '[') return skip_container(p, end, open_levels);
  return skip_scalar(p, end);
}

// Walks the object at p and returns where it ends, or nullptr when the text there is not
// an object. For each member, read_value(key, p, end) is called with p at the member's
// value and returns where the value ends (nullptr rejects the object). Keys are compared
// raw: providers never escape them.
template <class ReadValue>
const char* walk_object(const char* p, const char* end, ReadValue&& read_value) {
  if (!take('{', p, end)) return nullptr;
  p = skip_ws(p, end);
  if (p != end && *p == '}') return p + 1;
  for (;;) {
    if (!take('"', p, end)) return nullptr;
    const char* const key_begin = p;
    if (!(p = skip_string(p, end))) return nullptr;
    const std::string_view key(key_begin, static_cast<size_t>(p - 1 - key_begin));
    if (!take(':', p, end)) return nullptr;
    p = skip_ws(p, end);
    if (!(p = read_value(key, p, end))) return nullptr;
    // Then ',' goes on to the next member, '}' ends the object; nothing else may follow.
    if (take(',', p, end)) continue;
    return p != end && *p == '}' ? p + 1 : nullptr;  // take() went past any whitespace
  }
}

// Whether a key is the given one. The length is compared first, so most keys are told apart
// without looking at their bytes, and the byte compare has a fixed length, which the
// compiler turns into a load or two instead of a memcmp call.
template <size_t N>
[[gnu::always_inline]] inline bool key_is(std::string_view key, const char (&want)[N]) {
  return key.size() == N - 1 && std::memcmp(key.data(), want, N - 1) == 0;
}

// Where a usage member's count goes, or nullptr for a member that is not one we read.
std::optional<int64_t>* count_slot(std::string_view key, UsageCounts& c) {
  if (key_is(key, "prompt_tokens")) return &c.prompt;
  if (key_is(key, "completion_tokens")) return &c.completion;
  if (key_is(key, "input_tokens")) return &c.input;
  if (key_is(key, "output_tokens")) return &c.output;
  return nullptr;
}

// p is at a usage member's value, inside open_levels brackets: returns where the value
// ends, and sets *counts to what a well-formed usage object of at most max_bytes holds or
// to nothing for anything else (OpenAI chunks carry "usage": null until the last one; a
// usage object malformed inside counts nothing; so does one too big for the scan of a
// body in pieces to keep). The object is read where it lies, in the one walk; only a
// malformed one is gone over again, skipped by its brackets like any other value, so the
// text around it is judged as before.
const char* read_usage(const char* p, const char* end, std::optional<UsageCounts>& counts,
                       size_t max_bytes, size_t open_levels) {
  counts.reset();
  if (p == end || *p != '{') return skip_value(p, end, open_levels);
  UsageCounts c;
  const char* after =
      walk_object(p, end, [&](std::string_view key, const char* v, const char* v_end) {
        const char* v_after = skip_value(v, v_end, open_levels + 1);
        if (!v_after) return v_after;
        if (std::optional<int64_t>* slot = count_slot(key, c))
          *slot = token_count(std::string_view(v, static_cast<size_t>(v_after - v)));
        return v_after;
      });
  if (!after) return skip_value(p, end, open_levels);
  if (static_cast<size_t>(after - p) <= max_bytes) counts = c;
  return after;
}

// The object at p, a member of the top-level one, which the usage of its `usage` member
// (if any) goes in.
const char* walk_usage_holder(const char* p, const char* end, std::optional<UsageCounts>& place,
                              size_t max_usage_bytes) {
  return walk_object(p, end, [&](std::string_view key, const char* v, const char* v_end) {
    return key_is(key, "usage") ? read_usage(v, v_end, place, max_usage_bytes, 2)
                                : skip_value(v, v_end, 2);
  });
}

// The places of UsagePlaces (usage.h) in the text; false when the text is not one
// well-formed object.
bool find_usage(std::string_view text, UsagePlaces& found, size_t max_usage_bytes) {
  const char* const end = text.data() + text.size();
  const char* after =
      walk_object(text.data(), end, [&](std::string_view key, const char* v, const char* v_end) {
        if (key_is(key, "usage")) return read_usage(v, v_end, found.top, max_usage_bytes, 1);
        if (v != v_end && *v == '{') {
          if (key_is(key, "message"))
            return walk_usage_holder(v, v_end, found.message, max_usage_bytes);
          if (key_is(key, "response"))
            return walk_usage_holder(v, v_end, found.response, max_usage_bytes);
        }
        return skip_value(v, v_end, 1);
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

void merge(const UsagePlaces& found, Usage& usage) {
  for (const auto* place : {&found.top, &found.message, &found.response})
    if (*place) merge(**place, usage);
}

// Merges the usage objects of an SSE event's JSON text into the totals; false when the
// text is not well formed, which is not ours to judge, just not counted. An event is
// already held whole, within max_event_bytes: its usage objects have no bound of their own.
bool take_usage_from_json(std::string_view text, Usage& usage) {
  UsagePlaces found;
  if (!find_usage(text, found, std::numeric_limits<size_t>::max())) return false;
  merge(found, usage);
  return true;
}

// Whether s, trailing whitespace aside, ends as a JSON object does: a body that does might
// be all there.
bool ends_with_brace(std::string_view s) {
  size_t n = s.size();
  while (n > 0 && is_json_ws(s[n - 1])) --n;
  return n > 0 && s[n - 1] == '}';
}

// The scan of a body that comes in pieces (JsonUsageScan) accepts what the walk above
// accepts, byte for byte, wherever the pieces are cut: the differential tests and the
// fuzzer hold it to that. Its helpers follow.

constexpr bool is_quote_or_bracket(char c) {
  return c == '"' || c == '{' || c == '}' || c == '[' || c == ']';
}

// The first quote or bracket in [p, end), or end: inside a skipped container, outside its
// strings, nothing else matters. An embeddings answer is megabytes of numbers in arrays,
// so most of such a body goes through this loop, 16 bytes a step with SSE2.
const char* find_quote_or_bracket(const char* p, const char* end) {
#if defined(__SSE2__)
  for (; end - p >= 16; p += 16) {
    const Block b = classify(p);
    if (const unsigned hits = b.quotes | b.brackets) return p + std::countr_zero(hits);
  }
#endif
  while (p < end && !is_quote_or_bracket(*p)) ++p;
  return p;
}

using NumberPart = JsonUsageScan::NumberPart;

// The part of a number that byte c takes it to, or nothing when c does not go on with
// the number (then the number has ended before c, if it may end where it is).
std::optional<NumberPart> next_number_part(NumberPart part, char c) {
  const bool digit = is_digit(c);
  const bool exp = c == 'e' || c == 'E';
  switch (part) {
    case NumberPart::Minus:
      if (c == '0') return NumberPart::Zero;
      if (digit) return NumberPart::Int;
      break;
    case NumberPart::Zero:
    case NumberPart::Int:
    case NumberPart::Frac:
      if (digit && part != NumberPart::Zero) return part;
      if (c == '.' && part != NumberPart::Frac) return NumberPart::Point;
      if (exp) return NumberPart::Exp;
      break;
    case NumberPart::Point:
      if (digit) return NumberPart::Frac;
      break;
    case NumberPart::Exp:
      if (c == '+' || c == '-') return NumberPart::ExpSign;
      [[fallthrough]];
    case NumberPart::ExpSign:
    case NumberPart::ExpDigits:
      if (digit) return NumberPart::ExpDigits;
      break;
  }
  return std::nullopt;
}

constexpr bool may_end_number(NumberPart part) {
  return part == NumberPart::Zero || part == NumberPart::Int || part == NumberPart::Frac ||
         part == NumberPart::ExpDigits;
}

constexpr bool is_digit_run(NumberPart part) {
  return part == NumberPart::Int || part == NumberPart::Frac || part == NumberPart::ExpDigits;
}

}  // namespace

// ---- JsonUsageScan ----
//
// Each on_* step reads from p in the state it is named for and returns how far it got:
// the end of the piece, or the point where the state changed (a step may change it
// without taking a byte, to hand that byte to the next state). feed() calls steps until
// the piece is used up. Structural bytes go one per step; what fills a body (string
// contents, digits, whitespace, skipped containers) goes in tight loops.

bool JsonUsageScan::take_whole(std::string_view body) {
  if (!find_usage(body, places_, max_usage_bytes_)) {
    places_ = {};
    return false;
  }
  state_ = State::Done;
  return true;
}

void JsonUsageScan::feed(std::string_view data) {
  const char* p = data.data();
  const char* const end = p + data.size();
  while (p != end) p = step(p, end);
}

void JsonUsageScan::finish(Usage& usage) {
  if (state_ == State::Done) merge(places_, usage);
  // Only what is read before it is set again is reset: a tap is made and finished per
  // response, and `places_ = {}` alone took 30 instructions, where these resets take 6.
  state_ = State::Start;
  depth_ = 0;
  escaped_ = false;
  walked_place_ = Place::Top;
  keeping_ = false;
  kept_.clear();
  kept_.shrink_to_fit();
  places_.top.reset();
  places_.message.reset();
  places_.response.reset();
}

const char* JsonUsageScan::step(const char* p, const char* end) {
  switch (state_) {
    case State::Start:
      return on_start(p, end);
    case State::KeyOrClose:
      return on_key_or_close(p, end);
    case State::Key:
      return on_key(p, end);
    case State::InKey:
      return on_key_text(p, end);
    case State::Colon:
      return on_colon(p, end);
    case State::Value:
      return on_value(p, end);
    case State::InString:
      return on_string_value(p, end);
    case State::InNumber:
      return on_number(p, end);
    case State::InLiteral:
      return on_literal(p, end);
    case State::CommaOrClose:
      return on_comma_or_close(p, end);
    case State::Skip:
    case State::InSkipString:
      return on_skip(p, end);
    case State::Done:
      return on_done(p, end);
    case State::Broken:
      break;
  }
  return end;
}

const char* JsonUsageScan::on_start(const char* p, const char* end) {
  p = skip_ws(p, end);
  if (p == end) return p;
  if (*p != '{') return broken(end);
  open_level(false);
  state_ = State::KeyOrClose;
  return p + 1;
}

const char* JsonUsageScan::on_key_or_close(const char* p, const char* end) {
  p = skip_ws(p, end);
  if (p == end) return p;
  if (*p == '}') return close_walked(p + 1);
  return on_key(p, end);
}

const char* JsonUsageScan::on_key(const char* p, const char* end) {
  p = skip_ws(p, end);
  if (p == end) return p;
  if (*p != '"') return broken(end);
  key_size_ = 0;
  state_ = State::InKey;
  return p + 1;
}

// The key's bytes are kept as sent, escapes and all: keys are compared raw, as the walk
// compares them.
const char* JsonUsageScan::on_key_text(const char* p, const char* end) {
  const char* const after = string_end(p, end);
  const auto n = static_cast<size_t>((after ? after - 1 : end) - p);
  if (key_size_ < sizeof key_)
    std::memcpy(key_ + key_size_, p, std::min(n, sizeof key_ - key_size_));
  key_size_ += n;
  if (!after) return end;
  classify_key();
  state_ = State::Colon;
  return after;
}

// What the key just read means for its value, where the walk looks for usage: `usage` in
// a walked object, `message` and `response` in the top-level one.
void JsonUsageScan::classify_key() {
  member_ = Member::Plain;
  if (key_size_ > sizeof key_) return;
  const std::string_view key(key_, key_size_);
  if (key == "usage") {
    member_ = Member::Usage;
  } else if (walked_place_ == Place::Top && (key == "message" || key == "response")) {
    member_ = Member::Holder;
    holder_place_ = key == "message" ? Place::Message : Place::Response;
  }
}

const char* JsonUsageScan::on_colon(const char* p, const char* end) {
  p = skip_ws(p, end);
  if (p == end) return p;
  if (*p != ':') return broken(end);
  state_ = State::Value;
  return p + 1;
}

// A container is skipped from its opening bracket, which is left for on_skip to take;
// a usage object is kept from there too, so that all of it is kept.
const char* JsonUsageScan::on_value(const char* p, const char* end) {
  p = skip_ws(p, end);
  if (p == end) return p;
  if (member_ == Member::Usage) {
    place(walked_place_).reset();  // the last usage member wins, even one that counts nothing
    if (*p == '{') {
      keeping_ = true;
      kept_too_big_ = false;
      state_ = State::Skip;
      return p;
    }
  }
  if (member_ == Member::Holder && *p == '{') {
    open_level(false);
    walked_place_ = holder_place_;
    state_ = State::KeyOrClose;
    return p + 1;
  }
  switch (*p) {
    case '"':
      state_ = State::InString;
      return p + 1;
    case '{':
    case '[':
      state_ = State::Skip;
      return p;
    default:
      return begin_scalar(p, end);
  }
}

// A number or a literal, left for on_number or on_literal to take from its first byte;
// anything else is no value.
const char* JsonUsageScan::begin_scalar(const char* p, const char* end) {
  const char c = *p;
  if (c == '-' || is_digit(c)) {
    number_ = c == '-' ? NumberPart::Minus : c == '0' ? NumberPart::Zero : NumberPart::Int;
    state_ = State::InNumber;
    return p + 1;
  }
  for (std::string_view literal : {"true", "false", "null"}) {
    if (c == literal.front()) {
      literal_ = literal;
      state_ = State::InLiteral;
      return p;
    }
  }
  return broken(end);
}

const char* JsonUsageScan::on_string_value(const char* p, const char* end) {
  const char* const after = string_end(p, end);
  if (!after) return end;
  state_ = State::CommaOrClose;
  return after;
}

// The byte that does not go on with the number is what follows the value, read by
// on_comma_or_close as the walk reads what follows skip_number's end.
const char* JsonUsageScan::on_number(const char* p, const char* end) {
  while (p != end) {
    const std::optional<NumberPart> next = next_number_part(number_, *p);
    if (!next) {
      if (!may_end_number(number_)) return broken(end);
      state_ = State::CommaOrClose;
      return p;
    }
    number_ = *next;
    ++p;
    if (is_digit_run(number_)) p = skip_digits(p, end);
  }
  return p;
}

const char* JsonUsageScan::on_literal(const char* p, const char* end) {
  const size_t n = std::min(literal_.size(), static_cast<size_t>(end - p));
  if (std::memcmp(p, literal_.data(), n) != 0) return broken(end);
  literal_.remove_prefix(n);
  if (literal_.empty()) state_ = State::CommaOrClose;
  return p + n;
}

const char* JsonUsageScan::on_comma_or_close(const char* p, const char* end) {
  p = skip_ws(p, end);
  if (p == end) return p;
  if (*p == ',') {
    state_ = State::Key;
    return p + 1;
  }
  if (*p == '}') return close_walked(p + 1);
  return broken(end);
}

// p is past the '}' of a walked object: the top-level one ends the body, a `message` or
// `response` one hands back to the top-level one, which has just had a value.
const char* JsonUsageScan::close_walked(const char* p) {
  close_level(false);
  walked_place_ = Place::Top;
  state_ = depth_ == 0 ? State::Done : State::CommaOrClose;
  return p;
}

// Skip and InSkipString. The bytes passed are kept while they belong to a usage object,
// which is read when its closing brace has passed.
const char* JsonUsageScan::on_skip(const char* p, const char* end) {
  const char* const after = skip_in_container(p, end);
  if (keeping_) {
    keep(p, after);
    if (state_ == State::CommaOrClose) read_kept_usage();
  }
  return after;
}

// Inside a skipped container only strings and brackets matter (strings, so that what is
// in them is not taken for brackets); the walk checks no more there. Returns past the
// bracket that closes the container (and the walked object has a value), or end. Most of
// a big body goes through here, so it goes as skip_container does: 16 bytes at a time,
// each block starting outside any string. Blocks without quotes or brackets (an
// embedding's numbers) are passed at once; in one whose quotes cannot be escaped, the
// quotes alone tell which bytes are in strings (prefix_xor), and only the brackets
// outside them are taken. A block where a quote follows a backslash or that ends in one
// (which may escape the next block's first byte), and the last bytes of a piece, go the
// plain way: one quote or bracket at a time, a string at a time.
const char* JsonUsageScan::skip_in_container(const char* p, const char* end) {
  if (state_ == State::InSkipString) {
    if (!(p = string_end(p, end))) return end;
    state_ = State::Skip;
  }
  while (p < end) {
#if defined(__SSE2__)
    if (end - p >= 16) {
      const Block b = classify(p);
      if ((b.quotes | b.brackets) == 0) {
        p = find_quote_or_bracket(p + 16, end);  // a tighter loop for a long run
        continue;
      }
      if ((b.quotes & (b.backslashes << 1)) == 0 && (b.backslashes >> 15) == 0) {
        const unsigned inside = prefix_xor(b.quotes);
        for (unsigned brackets = b.brackets & ~inside; brackets; brackets &= brackets - 1) {
          const int i = std::countr_zero(brackets);
          if (!take_skipped_bracket(p[i])) return broken(end);
          if (depth_ == walked_depth()) {
            state_ = State::CommaOrClose;
            return p + i + 1;
          }
        }
        p += 16;
        if ((inside >> 15) != 0 && !(p = string_end(p, end))) {
          state_ = State::InSkipString;
          return end;
        }
        continue;
      }
    }
#endif
    const char* const to = end - p >= 16 ? p + 16 : end;
    // A string may run on past `to`: p is then where it ended, and the loop ends.
    while ((p = find_quote_or_bracket(p, to)) < to) {
      const char c = *p++;
      if (c == '"') {
        if (!(p = string_end(p, end))) {
          state_ = State::InSkipString;
          return end;
        }
      } else {
        if (!take_skipped_bracket(c)) return broken(end);
        if (depth_ == walked_depth()) {
          state_ = State::CommaOrClose;
          return p;
        }
      }
    }
  }
  return end;
}

// A bracket in a skipped container: false when it nests too deep or closes the wrong kind.
bool JsonUsageScan::take_skipped_bracket(char c) {
  return c == '{' || c == '[' ? open_level(c == '[') : close_level(c == ']');
}

// p is inside a string: returns just past its closing quote, or nullptr when the piece
// ends first. A quote escaped by a backslash does not close it; the backslash may end one
// piece and the quote open the next, which escaped_ carries over. What the escapes say
// is not checked, as the walk does not check it.
const char* JsonUsageScan::string_end(const char* p, const char* end) {
  if (escaped_) {
    if (p == end) return nullptr;
    escaped_ = false;
    ++p;
  }
  for (;;) {
    const char* const stop = find_either(p, end, '"', '\\');
    if (stop == end) return nullptr;
    if (*stop == '"') return stop + 1;
    if (stop + 1 == end) {
      escaped_ = true;
      return nullptr;
    }
    p = stop + 2;
  }
}

const char* JsonUsageScan::on_done(const char* p, const char* end) {
  return skip_ws(p, end) == end ? end : broken(end);
}

std::optional<UsageCounts>& JsonUsageScan::place(Place p) {
  switch (p) {
    case Place::Message:
      return places_.message;
    case Place::Response:
      return places_.response;
    case Place::Top:
      break;
  }
  return places_.top;
}

// A level's word is written whole when its first level opens, so that no bit is read
// before it is written: arrays_ is left uninitialized.
bool JsonUsageScan::open_level(bool is_array) {
  if (depth_ == kMaxJsonDepth) return false;
  uint64_t& word = arrays_[depth_ / 64];
  const uint64_t bit = uint64_t{1} << (depth_ % 64);
  if (depth_ % 64 == 0) word = 0;
  word = is_array ? word | bit : word & ~bit;
  ++depth_;
  return true;
}

bool JsonUsageScan::close_level(bool is_array) {
  if (depth_ == 0) return false;
  const size_t level = depth_ - 1;
  if (((arrays_[level / 64] >> (level % 64)) & 1) != static_cast<uint64_t>(is_array)) return false;
  depth_ = level;
  return true;
}

// Keeps the bytes of the usage object being skipped, up to max_usage_bytes_; the buffer
// grows no bigger than that either.
void JsonUsageScan::keep(const char* from, const char* to) {
  if (kept_too_big_) return;
  const auto n = static_cast<size_t>(to - from);
  if (n > max_usage_bytes_ - kept_.size()) {
    kept_too_big_ = true;
    std::string().swap(kept_);
    return;
  }
  if (kept_.size() + n > kept_.capacity()) {
    // std::string would double its capacity, past the bound (reserve() doubles too); a new
    // string reserves what it is asked for.
    std::string bigger;
    bigger.reserve(std::min(max_usage_bytes_, std::max(kept_.size() + n, 2 * kept_.capacity())));
    bigger.append(kept_);
    kept_.swap(bigger);
  }
  kept_.append(from, n);
}

// The kept usage object has closed: it is read where it lies in kept_, by the code that
// reads one in place, so that it counts what it would count in a body read whole. One
// too big to keep counts nothing (its place was reset when it began).
void JsonUsageScan::read_kept_usage() {
  keeping_ = false;
  if (!kept_too_big_) {
    read_usage(kept_.data(), kept_.data() + kept_.size(), place(walked_place_), max_usage_bytes_,
               walked_depth());
  }
  kept_.clear();
}

// Once broken, a body stays broken: nothing after can make it one object.
const char* JsonUsageScan::broken(const char* end) {
  state_ = State::Broken;
  keeping_ = false;
  std::string().swap(kept_);
  return end;
}

UsageTap::UsageTap(std::string_view content_type, size_t max_usage_bytes, size_t max_event_bytes)
    : max_event_bytes_(max_event_bytes), json_(max_usage_bytes) {
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
// caller's bytes when it looks complete: the walk is quicker than the scan, which must be
// ready to stop anywhere. If the walk says it is one well-formed object, nothing that
// follows can add to it, and anything but whitespace breaks it. Otherwise (cut short, or
// malformed) the piece is scanned as the first of several.
void UsageTap::feed_json(std::string_view data) {
  if (json_.at_start() && ends_with_brace(data) && json_.take_whole(data)) return;
  json_.feed(data);
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
    // What was fed is accounted for: a later feed would start a new body, as it always has.
    json_.finish(usage_);
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
