// UsageTap is fed the body as the network splits it; these tests split it every way.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/usage.h"

namespace {

using keypool::proxy::Usage;
using keypool::proxy::UsageTap;

Usage run(std::string_view content_type, const std::vector<std::string_view>& parts) {
  UsageTap tap(content_type);
  for (auto p : parts) tap.feed(p);
  return tap.finish();
}

Usage run_bytewise(std::string_view content_type, std::string_view body) {
  UsageTap tap(content_type);
  for (size_t i = 0; i < body.size(); ++i) tap.feed(body.substr(i, 1));
  return tap.finish();
}

void check_usage(const Usage& u, int64_t in, int64_t out) {
  CHECK(u.found);
  CHECK(u.input_tokens == in);
  CHECK(u.output_tokens == out);
}

constexpr std::string_view kChatBody =
    R"({"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":)"
    R"({"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":12,"completion_tokens":34,)"
    R"("total_tokens":46}})";

// OpenAI chat streaming with stream_options.include_usage: every chunk has "usage": null
// except the last, which has no choices.
constexpr std::string_view kOpenAiStream =
    "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"role\":\"assistant\"}}],\"usage\":null}\n\n"
    "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n"
    ": keep-alive comment\n\n"
    "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"lo\"}}],\"usage\":null}\n\n"
    "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2}}\n\n"
    "data: [DONE]\n\n";

constexpr std::string_view kAnthropicStream =
    "event: message_start\r\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"role\":\"assistant\","
    "\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\r\n\r\n"
    "event: content_block_start\r\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\r\n\r\n"
    "event: ping\r\n"
    "data: {\"type\":\"ping\"}\r\n\r\n"
    "event: content_block_delta\r\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\r\n\r\n"
    "event: content_block_delta\r\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" usage\"}}\r\n\r\n"
    "event: content_block_delta\r\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"!\"}}\r\n\r\n"
    "event: content_block_stop\r\n"
    "data: {\"type\":\"content_block_stop\",\"index\":0}\r\n\r\n"
    "event: message_delta\r\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9}}\r\n\r\n"
    "event: message_delta\r\n"
    "data: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":15}}\r\n\r\n"
    "event: message_stop\r\n"
    "data: {\"type\":\"message_stop\"}\r\n\r\n";

}  // namespace

TEST_CASE("usage: OpenAI chat JSON body, whole and byte by byte") {
  check_usage(run("application/json", {kChatBody}), 12, 34);
  check_usage(run_bytewise("application/json", kChatBody), 12, 34);
}

TEST_CASE("usage: content type parameters and case are ignored") {
  check_usage(run("Application/JSON; charset=utf-8", {kChatBody}), 12, 34);
  check_usage(run(" text/event-stream;charset=UTF-8", {kOpenAiStream}), 7, 2);
}

TEST_CASE("usage: OpenAI responses and Anthropic JSON bodies use input/output_tokens") {
  check_usage(run("application/json",
                  {R"({"object":"response","status":"completed",)"
                   R"("usage":{"input_tokens":5,"output_tokens":6,"total_tokens":11}})"}),
              5, 6);
  check_usage(run("application/json",
                  {R"({"type":"message","content":[{"type":"text","text":"x"}],)"
                   R"("usage":{"input_tokens":3,"output_tokens":4}})"}),
              3, 4);
}

TEST_CASE("usage: OpenAI SSE split at every position") {
  for (size_t split = 0; split <= kOpenAiStream.size(); ++split) {
    CAPTURE(split);
    auto u = run("text/event-stream", {kOpenAiStream.substr(0, split), kOpenAiStream.substr(split)});
    check_usage(u, 7, 2);
  }
  check_usage(run_bytewise("text/event-stream", kOpenAiStream), 7, 2);
}

TEST_CASE("usage: OpenAI SSE repeating usage keeps the last") {
  auto u = run("text/event-stream",
               {"data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n"
                "data: {\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":9}}\n\n"});
  check_usage(u, 7, 9);
}

TEST_CASE("usage: OpenAI responses SSE reads response.usage from response.completed") {
  constexpr std::string_view stream =
      "event: response.created\n"
      "data: {\"type\":\"response.created\",\"response\":{\"id\":\"r\",\"usage\":null}}\n\n"
      "event: response.output_text.delta\n"
      "data: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n"
      "event: response.completed\n"
      "data: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\","
      "\"usage\":{\"input_tokens\":40,\"output_tokens\":8,\"total_tokens\":48}}}\n\n";
  check_usage(run("text/event-stream", {stream}), 40, 8);
}

TEST_CASE("usage: Anthropic SSE with CRLF, message_delta is cumulative") {
  check_usage(run("text/event-stream", {kAnthropicStream}), 25, 15);
  check_usage(run_bytewise("text/event-stream", kAnthropicStream), 25, 15);
  // Every split, which covers a \r\n cut between its two bytes.
  for (size_t split = 0; split <= kAnthropicStream.size(); ++split) {
    CAPTURE(split);
    check_usage(run("text/event-stream",
                    {kAnthropicStream.substr(0, split), kAnthropicStream.substr(split)}),
                25, 15);
  }
}

TEST_CASE("usage: bare \\r line endings") {
  std::string s(kAnthropicStream);
  std::string cr;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
    cr.push_back(s[i] == '\n' ? '\r' : s[i]);
  }
  check_usage(run("text/event-stream", {cr}), 25, 15);
  check_usage(run_bytewise("text/event-stream", cr), 25, 15);
}

TEST_CASE("usage: a \\r then \\n in the next feed is one line end, not a blank line") {
  // Were the \n taken as a blank line, the event would dispatch with only its first line
  // and the JSON, spread over two data lines, would not parse.
  auto u = run("text/event-stream",
               {"data: {\"usage\":\r", "\ndata: {\"prompt_tokens\":3,\"completion_tokens\":4}}\r", "\n\r\n"});
  check_usage(u, 3, 4);
}

TEST_CASE("usage: data lines join with \\n and the space after the colon is optional") {
  auto u = run("text/event-stream",
               {"data:{\"usage\":\ndata:  {\"prompt_tokens\":1,\ndata: \"completion_tokens\":2}}\n\n"});
  check_usage(u, 1, 2);
}

TEST_CASE("usage: abandoned stream still reports what passed") {
  // Cut inside the first content delta: message_start has been seen.
  auto cut = kAnthropicStream.find("Hello");
  REQUIRE(cut != std::string_view::npos);
  auto u = run("text/event-stream", {kAnthropicStream.substr(0, cut)});
  check_usage(u, 25, 1);
  // Cut inside the last message_delta's JSON: the earlier one counts, the torn one not.
  cut = kAnthropicStream.find("\"output_tokens\":15");
  REQUIRE(cut != std::string_view::npos);
  check_usage(run("text/event-stream", {kAnthropicStream.substr(0, cut + 17)}), 25, 9);
}

TEST_CASE("usage: a final event missing its blank line still counts") {
  check_usage(run("text/event-stream", {"data: {\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3}}"}),
              2, 3);
}

TEST_CASE("usage: a leading byte order mark is skipped") {
  check_usage(run("text/event-stream",
                  {"\xEF\xBB\xBF" "data: {\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3}}\n\n"}),
              2, 3);
}

TEST_CASE("usage: a JSON body is not held, so its size is no bound; only its usage object's is") {
  // This body once counted nothing with a 64-byte bound: the bound was on the body.
  std::string body = R"({"pad":")" + std::string(200, 'x') + R"(","usage":{"prompt_tokens":1,"completion_tokens":1}})";
  UsageTap tap("application/json", /*max_usage_bytes=*/64);
  for (size_t i = 0; i < body.size(); i += 10) tap.feed(std::string_view(body).substr(i, 10));
  check_usage(tap.finish(), 1, 1);
}

TEST_CASE("usage: oversize SSE event is skipped, later events still count") {
  std::string big = "data: {\"pad\":\"" + std::string(300, 'x') +
                    "\",\"usage\":{\"prompt_tokens\":99,\"completion_tokens\":99}}\n\n";
  std::string many_lines;  // each line fits, the event does not
  for (int i = 0; i < 10; ++i) many_lines += "data: " + std::string(40, 'y') + "\n";
  many_lines += "data: {\"usage\":{\"prompt_tokens\":98,\"completion_tokens\":98}}\n\n";
  std::string good = "data: {\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":5}}\n\n";
  UsageTap tap("text/event-stream", 1 << 20, /*max_event_bytes=*/128);
  tap.feed(big);
  tap.feed(many_lines);
  tap.feed(good);
  check_usage(tap.finish(), 4, 5);

  UsageTap only_big("text/event-stream", 1 << 20, 128);
  for (char c : big) only_big.feed(std::string_view(&c, 1));
  CHECK_FALSE(only_big.finish().found);
}

TEST_CASE("usage: other content types are not parsed") {
  for (std::string_view ct : {"text/plain", "", "application/octet-stream", "application/jsonx"}) {
    CAPTURE(ct);
    CHECK_FALSE(run(ct, {kChatBody}).found);
    CHECK_FALSE(run(ct, {kOpenAiStream}).found);
  }
}

TEST_CASE("usage: malformed or unexpected JSON is ignored") {
  CHECK_FALSE(run("application/json", {R"({"usage":{"prompt_tokens":1,)"}).found);
  CHECK_FALSE(run("application/json", {"not json \"usage\""}).found);
  CHECK_FALSE(run("application/json", {R"(["usage"])"}).found);
  CHECK_FALSE(run("application/json", {R"({"usage":{"prompt_tokens":"12","completion_tokens":-1}})"}).found);
  CHECK_FALSE(run("application/json", {""}).found);
  // A broken event among good ones costs only itself.
  auto u = run("text/event-stream", {"data: {\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n"
                                     "data: {\"usage\":{\"prompt_tokens\":\n\n"
                                     "data: [DONE]\n\n"});
  check_usage(u, 3, 4);
}

TEST_CASE("usage: finish twice gives the same answer") {
  UsageTap tap("application/json");
  tap.feed(kChatBody);
  check_usage(tap.finish(), 12, 34);
  check_usage(tap.finish(), 12, 34);
}

TEST_CASE("usage: only usage objects where providers put them count, not look-alikes") {
  // "usage" as text, deeper in the document, or inside strings with escaped quotes.
  CHECK_FALSE(run("application/json", {R"({"content":"the \"usage\":{\"prompt_tokens\":5}"})"}).found);
  CHECK_FALSE(run("application/json", {R"({"choices":[{"usage":{"prompt_tokens":5}}]})"}).found);
  CHECK_FALSE(run("application/json", {R"({"meta":{"usage":{"prompt_tokens":5}}})"}).found);
  CHECK_FALSE(run("application/json", {R"({"message":{"x":{"usage":{"input_tokens":5}}}})"}).found);
  // Strings holding brackets, braces and escaped backslashes do not confuse the walk.
  auto u = run("application/json", {R"({"a":"}]\\","b":["{",{"c":"\"}"}],"usage":{"prompt_tokens":2,"completion_tokens":3}})"});
  check_usage(u, 2, 3);
  // Runs of backslashes before a quote: even runs end the string, odd runs escape the quote.
  check_usage(run("application/json", {R"({"a":"x\\","b":"\\\"usage\":{","c":"\\\\","usage":{"prompt_tokens":5,"completion_tokens":6}})"}), 5, 6);
  CHECK_FALSE(run("application/json", {R"({"a":"x\\\","usage":{"prompt_tokens":5}})"}).found);
  // Whitespace anywhere JSON allows it.
  check_usage(run("application/json", {" {\n \"usage\" :\t{ \"input_tokens\" : 4 , \"output_tokens\":5 } }\r\n"}), 4, 5);
  // Structure broken after the usage object, or trailing bytes: the body counts nothing.
  CHECK_FALSE(run("application/json", {R"({"usage":{"prompt_tokens":1,"completion_tokens":1},"x":[}})"}).found);
  CHECK_FALSE(run("application/json", {R"({"usage":{"prompt_tokens":1,"completion_tokens":1}} trailing)"}).found);
  CHECK_FALSE(run("application/json", {R"({"usage":{"prompt_tokens":1}}})"}).found);
  CHECK_FALSE(run("application/json", {R"({"usage" {"prompt_tokens":1}})"}).found);
  CHECK_FALSE(run("application/json", {R"({"x":"unterminated, "usage":{"prompt_tokens":1}})"}).found);
  // A repeated usage member: the last one wins, as a JSON parser keeps it.
  check_usage(run("application/json", {R"({"usage":{"prompt_tokens":1,"completion_tokens":1},"usage":{"prompt_tokens":8,"completion_tokens":9}})"}), 8, 9);
  // Deep nesting elsewhere is walked without recursion, up to kMaxJsonDepth levels (the
  // top-level object is one); deeper counts nothing ("usage: the nesting bound" has more).
  auto deep = [](size_t levels) {
    return "{\"x\":" + std::string(levels - 1, '[') + std::string(levels - 1, ']') +
           ",\"usage\":{\"prompt_tokens\":6,\"completion_tokens\":7}}";
  };
  check_usage(run("application/json", {deep(keypool::proxy::kMaxJsonDepth)}), 6, 7);
  CHECK_FALSE(run("application/json", {deep(100000)}).found);
}

TEST_CASE("usage: token counts are non-negative JSON integers, read without a JSON library") {
  auto body = [](std::string_view in, std::string_view out) {
    return "{\"usage\":{\"prompt_tokens\":" + std::string(in) + ",\"completion_tokens\":" + std::string(out) + "}}";
  };
  check_usage(run("application/json", {body("0", "7")}), 0, 7);
  check_usage(run("application/json", {body("-0", "7")}), 0, 7);
  // Past int64 the count is capped; past uint64 it is a float to JSON, not a count.
  check_usage(run("application/json", {body("18446744073709551615", "1")}), INT64_MAX, 1);
  auto big = run("application/json", {body("18446744073709551616", "1")});
  CHECK(big.found);
  CHECK(big.input_tokens == 0);
  CHECK(big.output_tokens == 1);
  // Fractions, exponents, negatives, strings, null: not counts, but the other field counts.
  for (std::string_view bad : {"12.0", "1e3", "-5", "\"12\"", "null", "true", "[1]", "{\"n\":1}"}) {
    CAPTURE(bad);
    auto u = run("application/json", {body(bad, "3")});
    CHECK(u.found);
    CHECK(u.input_tokens == 0);
    CHECK(u.output_tokens == 3);
  }
  // input_tokens stands in when prompt_tokens holds no count.
  check_usage(run("application/json", {R"({"usage":{"prompt_tokens":"x","input_tokens":4,"output_tokens":5}})"}), 4, 5);
  // Not JSON at all: the whole usage object (here, the whole body) counts nothing.
  for (std::string_view broken : {"012", "1.", ".5", "1e", "+1", "tru", "nul", "0x10", "--1"}) {
    CAPTURE(broken);
    CHECK_FALSE(run("application/json", {body(broken, "3")}).found);
  }
  // Nested details inside usage (OpenAI's prompt_tokens_details) are skipped over.
  check_usage(run("application/json", {R"({"usage":{"prompt_tokens_details":{"cached_tokens":9},"prompt_tokens":1,"completion_tokens":2}})"}), 1, 2);
}

// The paths below are the fast ones: a JSON body walked straight from the piece it arrived
// in, strings scanned 16 bytes at a time, brackets kept a bit per level, whole SSE lines
// read where they lie, and the scan for "usage" that rules stream events out. Each must
// give what the plain path gives, at every boundary those introduce.
namespace {

std::string usage_body(std::string_view before_usage) {
  return "{" + std::string(before_usage) + "\"usage\":{\"prompt_tokens\":6,\"completion_tokens\":7}}";
}

// Every way of cutting the body in two must count what the whole body counts.
void check_every_split(std::string_view body, bool found, int64_t in = 0, int64_t out = 0) {
  for (size_t split = 0; split <= body.size(); ++split) {
    CAPTURE(split);
    auto u = run("application/json", {body.substr(0, split), body.substr(split)});
    CHECK(u.found == found);
    CHECK(u.input_tokens == in);
    CHECK(u.output_tokens == out);
  }
}

}  // namespace

TEST_CASE("usage: a JSON body cut anywhere counts what the whole body counts") {
  check_every_split(kChatBody, true, 12, 34);
  // Pieces that end in a brace without being the whole body: it must wait for the rest.
  check_every_split(R"({"a":{"b":[{}]},"s":"}","usage":{"input_tokens":3,"output_tokens":4}} )", true, 3, 4);
  // Malformed bodies count nothing however they are cut, even where a piece alone parses.
  check_every_split(R"({"usage":{"prompt_tokens":1,"completion_tokens":1}}})", false);
  check_every_split(R"({"usage":{"prompt_tokens":1,"completion_tokens":1}}{"x":1})", false);
  // Three pieces, cut everywhere.
  constexpr std::string_view body = R"({"x":{},"usage":{"prompt_tokens":5,"completion_tokens":6}})";
  for (size_t i = 0; i <= body.size(); ++i) {
    for (size_t j = i; j <= body.size(); ++j) {
      CAPTURE(i);
      CAPTURE(j);
      check_usage(run("application/json", {body.substr(0, i), body.substr(i, j - i), body.substr(j)}), 5, 6);
    }
  }
}

TEST_CASE("usage: only whitespace may follow a JSON body that arrived whole") {
  check_usage(run("application/json", {kChatBody, " \r\n", "\t", ""}), 12, 34);
  for (std::string_view after : {"x", "}", "{}", " 1", "\n\"usage\""}) {
    CAPTURE(after);
    CHECK_FALSE(run("application/json", {kChatBody, after}).found);
    CHECK_FALSE(run("application/json", {kChatBody, " ", after, " "}).found);
  }
  // Whitespace after it is not held or bounded: a body is no longer gathered.
  UsageTap tap("application/json");
  tap.feed(kChatBody);
  for (int i = 0; i < 1000; ++i) tap.feed(std::string(1000, i % 2 ? ' ' : '\n'));
  CHECK(tap.retained_bytes() < 1024);
  check_usage(tap.finish(), 12, 34);
}

TEST_CASE("usage: strings of every length around the 16-byte scan") {
  for (size_t n = 0; n <= 40; ++n) {
    CAPTURE(n);
    const std::string pad(n, 'x');
    check_usage(run("application/json", {usage_body("\"a\":\"" + pad + "\",")}), 6, 7);  // a value
    check_usage(run("application/json", {usage_body("\"" + pad + "\":1,")}), 6, 7);       // a key
    check_usage(run("application/json", {usage_body("\"a\":[\"" + pad + "\"],")}), 6, 7);  // in a skipped array
    // An escaped quote at every place, and backslash runs ending the string: even runs end it.
    check_usage(run("application/json", {usage_body("\"a\":\"" + pad + "\\\"" + pad + "\",")}), 6, 7);
    check_usage(run("application/json", {usage_body("\"a\":\"" + pad + "\\\\\",")}), 6, 7);
    check_usage(run("application/json", {usage_body("\"a\":[\"" + pad + "\\\\\\\\\"],")}), 6, 7);
    // An odd run escapes the quote, so the string runs on and swallows the rest.
    CHECK_FALSE(run("application/json", {usage_body("\"a\":\"" + pad + "\\\\\\\",")}).found);
    CHECK_FALSE(run("application/json", {usage_body("\"a\":[\"" + pad + "\\\"],")}).found);
    // A string near the end of the text, where fewer than 16 bytes are left to scan.
    check_usage(run("application/json", {R"({"usage":{"input_tokens":1},"z":")" + pad + "\"}"}), 1, 0);
    CHECK_FALSE(run("application/json", {R"({"usage":{"input_tokens":1},"z":")" + pad + "\\\"}"}).found);
  }
}

TEST_CASE("usage: a skipped container is judged the same whatever falls at a 16-byte block edge") {
  // A skipped container goes 16 bytes at a time from its opening bracket; the padding moves
  // its strings, brackets and backslash runs across the block edges.
  for (size_t n = 0; n <= 40; ++n) {
    CAPTURE(n);
    const std::string pad(n, ' ');
    // Brackets inside strings do not count; an even run of backslashes ends a string, an
    // escaped quote does not.
    check_usage(run("application/json", {usage_body("\"c\":[" + pad + R"("]}[\\\\",{"d":"\"]"},"x"],)")}), 6, 7);
    // A string that runs on over several blocks, with escaped quotes in it.
    check_usage(run("application/json",
                    {usage_body("\"c\":[" + pad + "\"" + std::string(40, 'y') + R"(\"}\")" + "\"],")}),
                6, 7);
    // An odd run escapes the quote: the string runs on and swallows the closing bracket.
    CHECK_FALSE(run("application/json", {usage_body("\"c\":[" + pad + R"("]\\\"],)")}).found);
    // A closer of the wrong kind, outside strings.
    CHECK_FALSE(run("application/json", {usage_body("\"c\":[" + pad + R"("]",{"d":[1}}],)")}).found);
  }
}

TEST_CASE("usage: brackets are matched by kind at any depth, past the 64 kept in a word") {
  for (size_t depth : {1, 2, 63, 64, 65, 127, 128, 129, 200, 1000}) {
    CAPTURE(depth);
    std::string open, close;  // alternating arrays and objects
    for (size_t d = 0; d < depth; ++d) {
      open += d % 2 ? "{\"k\":" : "[";
      close.insert(close.begin(), d % 2 ? '}' : ']');
    }
    check_usage(run("application/json", {usage_body("\"deep\":" + open + "1" + close + ",")}), 6, 7);
    // One closer of the wrong kind, innermost, outermost, and at and around each word edge.
    for (size_t at : {size_t{0}, depth / 2, depth - 1, size_t{62}, size_t{63}, size_t{64}, size_t{65}, size_t{128}}) {
      if (at >= depth) continue;
      CAPTURE(at);
      std::string wrong = close;
      wrong[at] = wrong[at] == ']' ? '}' : ']';
      CHECK_FALSE(run("application/json", {usage_body("\"deep\":" + open + "1" + wrong + ",")}).found);
    }
    CHECK_FALSE(run("application/json", {usage_body("\"deep\":" + open + "1" + close.substr(1) + ",")}).found);
    CHECK_FALSE(run("application/json", {usage_body("\"deep\":" + open + "1" + close + "],")}).found);
  }
}

TEST_CASE("usage: numbers and literals end where JSON allows a value to end") {
  auto body = [](std::string_view in) {
    return "{\"usage\":{\"prompt_tokens\":" + std::string(in) + ",\"completion_tokens\":3}}";
  };
  // Well formed but not counts: the other field still counts.
  for (std::string_view odd : {"0.5e+3", "1E2", "-0.0", "1e-2", "false"}) {
    CAPTURE(odd);
    auto u = run("application/json", {body(odd)});
    CHECK(u.found);
    CHECK(u.input_tokens == 0);
    CHECK(u.output_tokens == 3);
  }
  // Not JSON: the usage object counts nothing.
  for (std::string_view broken : {"12abc", "1e5x", "-", "-01", "1.5.5", "1e+", "nulll", "truex", "Null", "1-2"}) {
    CAPTURE(broken);
    CHECK_FALSE(run("application/json", {body(broken)}).found);
  }
  // The same at the end of the text, where the number meets no closing brace.
  CHECK_FALSE(run("application/json", {R"({"usage":{"prompt_tokens":1},"n":12)"}).found);
  CHECK_FALSE(run("application/json", {R"({"usage":{"prompt_tokens":1},"n":tru)"}).found);
}

TEST_CASE("usage: a usage object malformed inside counts nothing, and the rest still counts") {
  // It is read where it lies; when that fails it is skipped by its brackets, as before.
  check_usage(run("application/json", {R"({"usage":{"prompt_tokens":012},"message":{"usage":{"input_tokens":4}}})"}),
              4, 0);
  check_usage(run("application/json", {R"({"usage":{"a" 1},"usage":{"prompt_tokens":2,"completion_tokens":3}})"}), 2,
              3);
  // The last usage member wins even when it counts nothing.
  CHECK_FALSE(run("application/json", {R"({"usage":{"prompt_tokens":2},"usage":{"prompt_tokens":2,}})"}).found);
  CHECK_FALSE(run("application/json", {R"({"usage":{"prompt_tokens":2},"usage":null})"}).found);
  // Brackets that do not match are the body's problem, not just the usage object's.
  CHECK_FALSE(
      run("application/json", {R"({"usage":{"prompt_tokens":[}},"message":{"usage":{"input_tokens":4}}})"}).found);
}

TEST_CASE("usage: SSE events with the usage key at every offset, fed whole and in pieces") {
  for (size_t n = 0; n <= 40; ++n) {
    CAPTURE(n);
    const std::string event = "data: " + usage_body("\"p\":\"" + std::string(n, 'x') + "\",") + "\n\n";
    check_usage(run("text/event-stream", {event}), 6, 7);
    check_usage(run_bytewise("text/event-stream", event), 6, 7);
    // Under the message and response keys too.
    const std::string nested =
        "data: {\"p\":\"" + std::string(n, 'x') + "\",\"message\":{\"usage\":{\"input_tokens\":8}}}\n\n";
    check_usage(run("text/event-stream", {nested}), 8, 0);
  }
  // Near misses are ruled out before the walk, or by it.
  for (std::string_view miss : {R"({"usagE":{"input_tokens":1}})", R"({"usage ":{"input_tokens":1}})",
                                R"({"x":"\"usage\":{\"input_tokens\":1}"})", R"({"usage":{"input_tokens":1})"}) {
    CAPTURE(miss);
    CHECK_FALSE(run("text/event-stream", {"data: " + std::string(miss) + "\n\n"}).found);
  }
}

TEST_CASE("usage: an SSE line that arrives whole meets the same bound as a gathered one") {
  // A line longer than an event may be drops its event, even a comment line.
  const std::string usage_line = "data: {\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3}}\n";
  for (size_t comment : {size_t{63}, size_t{64}, size_t{65}}) {
    CAPTURE(comment);
    const std::string stream = ":" + std::string(comment - 1, 'c') + "\n" + usage_line + "\n";
    const bool fits = comment <= 64;
    UsageTap whole("text/event-stream", 1 << 20, /*max_event_bytes=*/64);
    whole.feed(stream);
    CHECK(whole.finish().found == fits);
    UsageTap pieces("text/event-stream", 1 << 20, 64);
    for (char c : stream) pieces.feed(std::string_view(&c, 1));
    CHECK(pieces.finish().found == fits);
  }
}

// A JSON body that comes in pieces is scanned as it passes (JsonUsageScan::feed) instead
// of being gathered; a body that comes whole is walked where it lies (take_whole). The
// scan must find what the walk finds, for every body and every way of cutting it.
namespace {

using keypool::proxy::JsonUsageScan;
using keypool::proxy::kMaxJsonDepth;

constexpr size_t kDefaultUsageBytes = keypool::proxy::kDefaultMaxUsageBytes;

bool same(const Usage& a, const Usage& b) {
  return a.found == b.found && a.input_tokens == b.input_tokens &&
         a.output_tokens == b.output_tokens;
}

// The reference: the walk of the whole text, which counts nothing when the text is not one
// well-formed object.
Usage walked(std::string_view body, size_t max_usage_bytes) {
  JsonUsageScan scan(max_usage_bytes);
  Usage u;
  if (scan.take_whole(body)) scan.finish(u);
  return u;
}

// The scan alone, fed the body cut at the given points (in order).
Usage scanned(std::string_view body, size_t max_usage_bytes, std::initializer_list<size_t> cuts) {
  JsonUsageScan scan(max_usage_bytes);
  size_t from = 0;
  for (size_t cut : cuts) {
    scan.feed(body.substr(from, cut - from));
    from = cut;
  }
  scan.feed(body.substr(from));
  Usage u;
  scan.finish(u);
  return u;
}

Usage scanned_bytewise(std::string_view body, size_t max_usage_bytes) {
  JsonUsageScan scan(max_usage_bytes);
  for (size_t i = 0; i < body.size(); ++i) scan.feed(body.substr(i, 1));
  Usage u;
  scan.finish(u);
  return u;
}

Usage tapped(std::string_view body, size_t max_usage_bytes, std::initializer_list<size_t> cuts) {
  UsageTap tap("application/json", max_usage_bytes);
  size_t from = 0;
  for (size_t cut : cuts) {
    tap.feed(body.substr(from, cut - from));
    from = cut;
  }
  tap.feed(body.substr(from));
  return tap.finish();
}

// The scan against the walk: whole, a byte at a time, and cut in two at split points
// (every one, or every step-th); the tap too, which takes the walk's fast path only when
// a piece looks whole.
void check_scan_matches_walk(std::string_view body, size_t max_usage_bytes, size_t step = 1) {
  CAPTURE(body);
  CAPTURE(max_usage_bytes);
  const Usage want = walked(body, max_usage_bytes);
  CHECK(same(scanned(body, max_usage_bytes, {}), want));
  CHECK(same(scanned_bytewise(body, max_usage_bytes), want));
  CHECK(same(tapped(body, max_usage_bytes, {}), want));
  for (size_t split = 0; split <= body.size(); split += step) {
    CAPTURE(split);
    CHECK(same(scanned(body, max_usage_bytes, {split}), want));
    CHECK(same(tapped(body, max_usage_bytes, {split}), want));
  }
}

struct Known {
  std::string_view body;
  bool found;
  int64_t in, out;
};

// Bodies whose counts are known, so that the reference itself is checked: usage in each
// place, nesting, escapes, "usage" inside strings, numbers of every shape, whitespace,
// repeats, and bodies that are not one well-formed object.
constexpr Known kKnownBodies[] = {
    {kChatBody, true, 12, 34},
    {R"({"object":"response","usage":{"input_tokens":5,"output_tokens":6,"total_tokens":11}})",
     true, 5, 6},
    {R"({"type":"message_start","message":{"id":"m","usage":{"input_tokens":25,"output_tokens":1}}})",
     true, 25, 1},
    {R"({"type":"response.completed","response":{"id":"r","usage":{"input_tokens":40,"output_tokens":8}}})",
     true, 40, 8},
    {R"({"usage":{"output_tokens":4},"message":{"usage":{"input_tokens":3}},"response":{"usage":{"output_tokens":9}}})",
     true, 3, 9},
    {R"({"a":[1,[2,{"b":[]}],{}],"b":{"c":{"d":[[[]]]}},"usage":{"prompt_tokens":1,"completion_tokens":2}})",
     true, 1, 2},
    {R"({"s":"a\"b\\c\u00e9\n\/\t","k\"ey":"x","usage":{"prompt_tokens":3,"completion_tokens":4}})",
     true, 3, 4},
    {R"({"content":"the \"usage\":{\"prompt_tokens\":5}","usage":{"input_tokens":1,"output_tokens":2}})",
     true, 1, 2},
    {R"({"content":"the \"usage\":{\"prompt_tokens\":5}"})", false, 0, 0},
    {R"({"n":[0,-0,1.5,-2.25e10,3E-2,4e+5],"a":0,"b":-0.0,"c":12345678901234567890,"d":1e5,"e":-1.5E+3,"g":2.5e-3,"t":true,)"
     R"("f":false,"z":null,"usage":{"prompt_tokens":7,"completion_tokens":0}})",
     true, 7, 0},
    {"\n {\n \"usage\" :\t{ \"input_tokens\" : 4 , \"output_tokens\":5 } , \"x\" : [ 1 , 2 ] "
     ",\"y\": -1.5e3 }\r\n",
     true, 4, 5},
    {R"({"usage":{"prompt_tokens":1,"completion_tokens":1},"usage":{"prompt_tokens":8,"completion_tokens":9}})",
     true, 8, 9},
    {R"({"usage":{"prompt_tokens":1,"completion_tokens":1},"usage":null})", false, 0, 0},
    {R"({"usage":{"prompt_tokens_details":{"cached_tokens":9},"x":"}{][","prompt_tokens":2,"d":[{}]}})",
     true, 2, 0},
    {R"({"usage":{"prompt_tokens":012},"message":{"usage":{"input_tokens":4}}})", true, 4, 0},
    {R"({"usage":{"a" 1},"usage":{"prompt_tokens":2,"completion_tokens":3}})", true, 2, 3},
    {R"({"usage":{"prompt_tokens":"1","input_tokens":1.5,"completion_tokens":true,"output_tokens":[3]}})",
     false, 0, 0},
    {R"({"message":"hi","response":[1],"usage":{"prompt_tokens":1}})", true, 1, 0},
    {R"({"message":{"usage":{"input_tokens":4}},"message":{}})", true, 4, 0},
    {R"({"message":{"usage":{"input_tokens":4}},"message":{"usage":null}})", false, 0, 0},
    {R"({"message":{"message":{"usage":{"input_tokens":9}}}})", false, 0, 0},
    {R"({"usag\u0065":{"prompt_tokens":1},"usage\\":{"prompt_tokens":1},"meta":{"usage":{"prompt_tokens":1}}})",
     false, 0, 0},
    {R"({"a_key_longer_than_eight":{"usage":{"input_tokens":1}},"usage":{"input_tokens":2}})", true,
     2, 0},
    {R"({"x":"0123456789abcdef\\\\\"0123456789abcdef\\","usage":{"input_tokens":6}})", true, 6, 0},
    {"{}", false, 0, 0},
    {R"({"usage":{}})", false, 0, 0},
    // Not one well-formed object: nothing counts.
    {R"({"usage":{"prompt_tokens":1}} x)", false, 0, 0},
    {R"({"usage":{"prompt_tokens":1}}{})", false, 0, 0},
    {R"({"usage":{"prompt_tokens":1}} )"
     "\n",
     true, 1, 0},
    {R"({"usage":{"prompt_tokens":1},})", false, 0, 0},
    {R"({"usage":{"prompt_tokens":1} "x":1})", false, 0, 0},
    {R"({"usage" {"prompt_tokens":1}})", false, 0, 0},
    {R"({"usage":{"prompt_tokens":1},"n":01})", false, 0, 0},
    {R"({"usage":{"prompt_tokens":1},"n":1.})", false, 0, 0},
    {R"({"usage":{"prompt_tokens":1},"n":-})", false, 0, 0},
    {R"({"usage":{"prompt_tokens":1},"n":1e+})", false, 0, 0},
    {R"({"usage":{"prompt_tokens":1},"n":tru})", false, 0, 0},
    {R"({"usage":{"prompt_tokens":1},"n":nul})", false, 0, 0},
    {R"({"usage":{"prompt_tokens":1},"n":"open})", false, 0, 0},
    {R"({"usage":{"prompt_tokens":1},"n":[1,{]}]})", false, 0, 0},
    {R"({"usage":{"prompt_tokens":[}},"message":{"usage":{"input_tokens":4}}})", false, 0, 0},
    {R"({"message":{"usage":{"input_tokens":4},}})", false, 0, 0},
    {R"(["usage",{"usage":{"prompt_tokens":1}}])", false, 0, 0},
    {R"("usage")", false, 0, 0},
    {"", false, 0, 0},
    {" \n\t", false, 0, 0},
};

}  // namespace

TEST_CASE("usage: the scan of a body in pieces finds what the walk of it whole finds") {
  for (const Known& k : kKnownBodies) {
    CAPTURE(k.body);
    const Usage want = walked(k.body, kDefaultUsageBytes);
    CHECK(want.found == k.found);
    CHECK(want.input_tokens == k.in);
    CHECK(want.output_tokens == k.out);
    // The usage objects here are 2 to 90 bytes: the small bounds cut some of them off.
    for (size_t max : {kDefaultUsageBytes, size_t{24}, size_t{40}})
      check_scan_matches_walk(k.body, max);
  }
}

TEST_CASE("usage: the scan matches the walk on every truncation and one-byte change of a body") {
  constexpr std::string_view kBytes = "\"\\{}[],: 0-.e+tnx";
  for (const Known& k : kKnownBodies) {
    // Cut off anywhere: a body that ends in a string, a number, an escape or a literal.
    for (size_t n = 0; n < k.body.size(); ++n)
      check_scan_matches_walk(k.body.substr(0, n), kDefaultUsageBytes, 5);
    // One byte changed: mostly malformed, sometimes still well formed another way.
    for (size_t at = 0; at < k.body.size(); ++at) {
      for (char c : kBytes) {
        std::string changed(k.body);
        changed[at] = c;
        CAPTURE(changed);
        for (size_t max : {kDefaultUsageBytes, size_t{40}}) {
          const Usage want = walked(changed, max);
          CHECK(same(scanned(changed, max, {}), want));
          CHECK(same(scanned_bytewise(changed, max), want));
          CHECK(same(scanned(changed, max, {at, at + 1}), want));
        }
      }
    }
  }
}

TEST_CASE("usage: a piece may end anywhere inside a token") {
  // An escape (\u00e9, \\, \"), a number, a literal and a key, each cut at every byte, in
  // a walked object and in a skipped one.
  for (std::string_view value : {R"("\u00e9\\\"x")", "-12.5e+3", "true", "false", "null", "0"}) {
    const std::string top = "{\"v\":" + std::string(value) + ",\"usage\":{\"input_tokens\":3}}";
    const std::string skipped =
        "{\"v\":[" + std::string(value) + "],\"usage\":{\"input_tokens\":3}}";
    const std::string in_usage =
        "{\"usage\":{\"v\":" + std::string(value) + ",\"input_tokens\":3}}";
    for (const std::string& body : {top, skipped, in_usage}) {
      check_usage(scanned_bytewise(body, kDefaultUsageBytes), 3, 0);
      for (size_t i = 0; i <= body.size(); ++i) {
        for (size_t j = i; j <= body.size(); ++j) {
          CAPTURE(body);
          CAPTURE(i);
          CAPTURE(j);
          check_usage(scanned(body, kDefaultUsageBytes, {i, j}), 3, 0);
        }
      }
    }
  }
}

TEST_CASE("usage: a 16 MiB embeddings body in 16 KiB pieces is counted without being held") {
  // As OpenAI's embeddings endpoint answers a batch: megabytes of numbers, usage at the end.
  std::string body = R"({"object":"list","data":[)";
  for (int i = 0; body.size() < (size_t{16} << 20); ++i) {
    if (i > 0) body += ',';
    body += R"({"object":"embedding","index":)" + std::to_string(i) + R"(,"embedding":[)";
    for (int j = 0; j < 1536; ++j) {
      if (j > 0) body += ',';
      body += j % 3 == 0 ? "0.0123" : j % 3 == 1 ? "-0.4567" : "1.25e-5";
    }
    body += "]}";
  }
  body += R"(],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}})";
  constexpr size_t kPiece = 16 * 1024;
  UsageTap tap("application/json");
  size_t most = 0;
  for (size_t i = 0; i < body.size(); i += kPiece) {
    tap.feed(std::string_view(body).substr(i, kPiece));
    most = std::max(most, tap.retained_bytes());
  }
  CHECK(most < 64 * 1024);
  check_usage(tap.finish(), 8, 0);
  CHECK(tap.retained_bytes() < 64 * 1024);
}

TEST_CASE("usage: the nesting bound, kMaxJsonDepth levels, whole and in pieces") {
  // levels: the depth of the deepest bracket, the top-level object's being 1.
  auto arrays = [](size_t levels_inside) {
    return std::string(levels_inside, '[') + std::string(levels_inside, ']');
  };
  auto objects = [](size_t levels_inside) {
    std::string s;
    for (size_t i = 0; i < levels_inside; ++i) s += "{\"k\":";
    return s + "1" + std::string(levels_inside, '}');
  };
  for (size_t levels : {kMaxJsonDepth - 1, kMaxJsonDepth, kMaxJsonDepth + 1}) {
    CAPTURE(levels);
    const bool fits = levels <= kMaxJsonDepth;
    const std::string usage = R"("usage":{"prompt_tokens":6,"completion_tokens":7})";
    // In a member of the top-level object, of a message object, and of the usage object.
    const std::string bodies[] = {
        "{\"x\":" + arrays(levels - 1) + "," + usage + "}",
        "{\"x\":" + objects(levels - 1) + "," + usage + "}",
        "{\"message\":{\"x\":" + arrays(levels - 2) + "}," + usage + "}",
        R"({"usage":{"prompt_tokens":6,"completion_tokens":7,"x":)" + arrays(levels - 2) + "}}",
        R"({"message":{"usage":{"input_tokens":6,"output_tokens":7,"x":)" + arrays(levels - 3) +
            "}}}",
    };
    for (const std::string& body : bodies) {
      CAPTURE(body.substr(0, 40));
      const size_t max = body.size();  // the usage objects here are that big
      const Usage u = walked(body, max);
      CHECK(u.found == fits);
      if (fits) CHECK((u.input_tokens == 6 && u.output_tokens == 7));
      check_scan_matches_walk(body, max, 37);
    }
  }
  // Far deeper: the state kept does not grow with it.
  const std::string deep = "{\"x\":" + arrays(100000) + "}";
  UsageTap tap("application/json");
  for (size_t i = 0; i < deep.size(); i += 1000) tap.feed(std::string_view(deep).substr(i, 1000));
  CHECK(tap.retained_bytes() < 1024);
  CHECK_FALSE(tap.finish().found);
}

TEST_CASE("usage: a usage object over max_usage_bytes counts nothing, the rest still counts") {
  constexpr std::string_view kUsage = R"({"prompt_tokens":5,"completion_tokens":6})";
  const std::string body = "{\"usage\":" + std::string(kUsage) + "}";
  for (size_t max : {kUsage.size() - 1, kUsage.size(), kUsage.size() + 1}) {
    CAPTURE(max);
    const bool fits = kUsage.size() <= max;
    CHECK(walked(body, max).found == fits);
    CHECK(tapped(body, max, {}).found == fits);
    check_scan_matches_walk(body, max);
  }
  // Too big at the top, a message's usage still counts; too big last, it still wins.
  const std::string padded = R"({"usage":{"pad":")" + std::string(200, 'p') +
                             R"(","prompt_tokens":1},)" +
                             R"("message":{"usage":{"input_tokens":4}}})";
  check_usage(walked(padded, 64), 4, 0);
  check_scan_matches_walk(padded, 64);
  const std::string last = R"({"usage":{"prompt_tokens":1},"usage":{"pad":")" +
                           std::string(200, 'p') + R"(","prompt_tokens":2}})";
  CHECK_FALSE(walked(last, 64).found);
  check_scan_matches_walk(last, 64);
  // The default bound is 4 KiB; what is kept never grows past it.
  auto sized = [](size_t usage_bytes) {
    const std::string head = R"({"prompt_tokens":3,"pad":")";
    return "{\"usage\":" + head + std::string(usage_bytes - head.size() - 2, 'p') + "\"}}";
  };
  for (size_t usage_bytes : {kDefaultUsageBytes, kDefaultUsageBytes + 1, size_t{1} << 20}) {
    CAPTURE(usage_bytes);
    const std::string b = sized(usage_bytes);
    UsageTap tap("application/json");
    size_t most = 0;
    for (size_t i = 0; i < b.size(); i += 100) {
      tap.feed(std::string_view(b).substr(i, 100));
      most = std::max(most, tap.retained_bytes());
    }
    CHECK(most <= kDefaultUsageBytes + 64);  // the SSE buffers' inline capacity aside
    const Usage u = tap.finish();
    CHECK(u.found == (usage_bytes <= kDefaultUsageBytes));
    CHECK(same(u, walked(b, kDefaultUsageBytes)));
  }
}

TEST_CASE("usage: the scan of a skipped container, whatever falls at a 16-byte block edge") {
  // The scan goes 16 bytes at a time from wherever a quote or bracket is; the padding moves
  // strings, escapes and backslash runs across the block edges, and the piece edges too.
  for (size_t n = 0; n <= 40; ++n) {
    CAPTURE(n);
    const std::string pad(n, ' ');
    for (const std::string& inside :
         {pad + R"("]}[\\\\",{"d":"\"]"},"x")",
          pad + "\"" + std::string(40, 'y') + R"(\"}\")" + "\"", pad + R"("]\\\"]")",
          pad + R"("a\\" , "\\\\\\" , ["\"", "\\"] , "x\\\"y")", pad + R"("]",{"d":[1}})",
          pad + R"(1,"a\"\\\"\\\\\"",2)" + pad + R"(,"\\")",
          pad + "\"" + std::string(n, '\\') + "\"]"}) {
      check_scan_matches_walk(usage_body("\"c\":[" + inside + "],"), kDefaultUsageBytes, 3);
      check_scan_matches_walk("{\"usage\":{\"c\":[" + inside + "],\"input_tokens\":2}}",
                              kDefaultUsageBytes, 3);
    }
  }
}
