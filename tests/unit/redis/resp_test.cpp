// RESP2 encoding and the incremental reply parser: pure, no server. Every reply is fed at
// every byte split (and one byte at a time), and malformed or oversized input must fail
// cleanly, never crash or hang.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "redis/resp.h"

using namespace keypool::redis;

namespace {

// Parses all of `wire`, fed in the pieces given by the cut points, into replies.
std::vector<Reply> parse_cut(const std::string& wire, const std::vector<size_t>& cuts, ReplyParser::Status* last,
                             ParserLimits limits = {}) {
  ReplyParser p(limits);
  std::vector<Reply> out;
  size_t from = 0;
  std::vector<size_t> points = cuts;
  points.push_back(wire.size());
  *last = ReplyParser::Status::NeedMore;
  for (size_t to : points) {
    p.feed(wire.data() + from, to - from);
    from = to;
    for (;;) {
      Reply r;
      *last = p.next(&r);
      if (*last != ReplyParser::Status::Reply) break;
      out.push_back(std::move(r));
    }
    if (*last == ReplyParser::Status::Failed) break;
  }
  return out;
}

std::string describe(const Reply& r) {
  switch (r.type) {
    case ReplyType::Status: return "+" + r.str;
    case ReplyType::Error: return "-" + r.str;
    case ReplyType::Integer: return ":" + std::to_string(r.integer);
    case ReplyType::Bulk: return "$" + r.str;
    case ReplyType::Nil: return "nil";
    case ReplyType::Array: {
      std::string s = "[";
      for (const auto& e : r.elements) s += describe(e) + ",";
      return s + "]";
    }
  }
  return "?";
}

}  // namespace

TEST_CASE("resp: commands are arrays of binary-safe bulk strings") {
  CHECK(encode_command({"SET", "k", "v"}) == "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n");
  CHECK(encode_command({"SET", std::string("a\r\n\0b", 5), ""}) ==
        std::string("*3\r\n$3\r\nSET\r\n$5\r\na\r\n\0b\r\n$0\r\n\r\n", 30));
  std::string two;
  encode_command(two, {"PING"});
  encode_command(two, {"PING"});
  CHECK(two == "*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n");
}

TEST_CASE("resp: every reply type parses identically at every byte split") {
  // A pipeline of replies of every kind, nested arrays, empty and nil values, binary bulk.
  const std::string wire = std::string(
                               "+OK\r\n"
                               "-ERR unknown command 'FOO'\r\n"
                               ":0\r\n:-42\r\n:9223372036854775807\r\n"
                               "$5\r\nhello\r\n$0\r\n\r\n$-1\r\n"
                               "$4\r\na\r\nb\r\n"
                               "*0\r\n*-1\r\n"
                               "*3\r\n:1\r\n*2\r\n$1\r\nx\r\n*1\r\n+deep\r\n$3\r\nend\r\n"
                               "*2\r\n*0\r\n$-1\r\n") +
                           std::string("$3\r\n\0\1\2\r\n", 9);
  const std::vector<std::string> expected = {
      "+OK", "-ERR unknown command 'FOO'", ":0", ":-42", ":9223372036854775807", "$hello", "$", "nil",
      "$a\r\nb", "[]", "nil", "[:1,[$x,[+deep,],],$end,]", "[[],nil,]", std::string("$\0\1\2", 4)};

  ReplyParser::Status last;
  auto whole = parse_cut(wire, {}, &last);
  REQUIRE(whole.size() == expected.size());
  for (size_t i = 0; i < whole.size(); ++i) CHECK(describe(whole[i]) == expected[i]);
  CHECK(whole[1].is_error());
  CHECK(whole[1].error_is("ERR"));
  CHECK_FALSE(whole[1].error_is("ER"));

  for (size_t cut = 1; cut < wire.size(); ++cut) {
    CAPTURE(cut);
    auto got = parse_cut(wire, {cut}, &last);
    REQUIRE(got.size() == expected.size());
    for (size_t i = 0; i < got.size(); ++i) CHECK(describe(got[i]) == expected[i]);
    CHECK(last == ReplyParser::Status::NeedMore);
  }
  // And one byte at a time.
  std::vector<size_t> every;
  for (size_t i = 1; i < wire.size(); ++i) every.push_back(i);
  auto bytes = parse_cut(wire, every, &last);
  REQUIRE(bytes.size() == expected.size());
  for (size_t i = 0; i < bytes.size(); ++i) CHECK(describe(bytes[i]) == expected[i]);
}

TEST_CASE("resp: a reply is not returned before its last byte") {
  const std::string wire = "*2\r\n$3\r\nabc\r\n:7\r\n";
  ReplyParser p;
  Reply r;
  for (size_t i = 0; i + 1 < wire.size(); ++i) {
    p.feed(wire.data() + i, 1);
    CHECK(p.next(&r) == ReplyParser::Status::NeedMore);
  }
  p.feed(wire.data() + wire.size() - 1, 1);
  REQUIRE(p.next(&r) == ReplyParser::Status::Reply);
  CHECK(describe(r) == "[$abc,:7,]");
  CHECK(p.buffered() == 0);
}

TEST_CASE("resp: malformed input fails for good, with a reason") {
  struct Case {
    const char* name;
    std::string wire;
  };
  const Case cases[] = {
      {"unknown type byte", "?OK\r\n"},
      {"RESP3 map", "%1\r\n+a\r\n+b\r\n"},
      {"integer with letters", ":12a\r\n"},
      {"empty integer", ":\r\n"},
      {"lone minus", ":-\r\n"},
      {"integer overflow", ":99999999999999999999\r\n"},
      {"bulk length not a number", "$x\r\nab\r\n"},
      {"bulk length below -1", "$-2\r\n"},
      {"bulk not ended by CRLF", "$2\r\nabcd\r\n"},
      {"array length below -1", "*-5\r\n"},
      {"bare CR in a status line", "+O\rK\r\n"},
      {"bare LF in an error line", "-E\nR\r\n"},
      {"plus sign in a length", "$+3\r\nabc\r\n"},
      {"garbage after a good reply", "+OK\r\nhello\r\n"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    ReplyParser::Status last;
    parse_cut(c.wire, {}, &last);
    CHECK(last == ReplyParser::Status::Failed);
    // Split anywhere, the verdict is the same.
    for (size_t cut = 1; cut < c.wire.size(); ++cut) {
      parse_cut(c.wire, {cut}, &last);
      CHECK(last == ReplyParser::Status::Failed);
    }
  }
  ReplyParser p;
  p.feed("?\r\n", 3);
  Reply r;
  CHECK(p.next(&r) == ReplyParser::Status::Failed);
  CHECK(p.error().find("type byte") != std::string::npos);
  p.feed("+OK\r\n", 5);  // nothing after a framing error is trusted
  CHECK(p.next(&r) == ReplyParser::Status::Failed);
}

TEST_CASE("resp: limits on nesting, sizes and line length") {
  ParserLimits limits;
  limits.max_depth = 3;
  limits.max_bulk = 10;
  limits.max_elements = 4;
  limits.max_line = 16;
  ReplyParser::Status last;

  auto ok = parse_cut("*1\r\n*1\r\n*1\r\n:1\r\n", {}, &last, limits);
  CHECK(ok.size() == 1);
  parse_cut("*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", {}, &last, limits);
  CHECK(last == ReplyParser::Status::Failed);

  CHECK(parse_cut("$10\r\n0123456789\r\n", {}, &last, limits).size() == 1);
  parse_cut("$11\r\n", {}, &last, limits);  // refused from the header, before any body
  CHECK(last == ReplyParser::Status::Failed);
  parse_cut("$9999999999999\r\n", {}, &last, limits);
  CHECK(last == ReplyParser::Status::Failed);

  CHECK(parse_cut("*4\r\n:1\r\n:2\r\n:3\r\n:4\r\n", {}, &last, limits).size() == 1);
  parse_cut("*5\r\n", {}, &last, limits);
  CHECK(last == ReplyParser::Status::Failed);
  parse_cut("*2147483647\r\n", {}, &last, limits);
  CHECK(last == ReplyParser::Status::Failed);

  CHECK(parse_cut("+0123456789abcdef\r\n", {}, &last, limits).size() == 1);
  // A line that never ends fails once it is longer than the limit, not at the end of input.
  parse_cut("+0123456789abcdefg", {}, &last, limits);
  CHECK(last == ReplyParser::Status::Failed);
  parse_cut("+0123456789abcdefg\r\n", {}, &last, limits);
  CHECK(last == ReplyParser::Status::Failed);
}

TEST_CASE("resp: a long pipeline does not keep consumed bytes") {
  ReplyParser p;
  Reply r;
  std::string chunk;
  for (int i = 0; i < 1000; ++i) chunk += "$10\r\n0123456789\r\n";
  for (int round = 0; round < 20; ++round) {
    p.feed(chunk);
    int n = 0;
    while (p.next(&r) == ReplyParser::Status::Reply) ++n;
    CHECK(n == 1000);
    CHECK(p.buffered() == 0);
  }
}
