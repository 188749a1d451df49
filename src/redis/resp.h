#pragma once
// RESP2, the Redis wire protocol: encoding a command and parsing replies incrementally.
//
// Pure: no sockets, no loop, no clock, so every byte split can be unit-tested. The parser
// keeps its partial state between feeds (a stack of half-built arrays), so a reply split at
// any byte costs no rescan of what came before. Its limits (nesting, bulk size, elements,
// line length) are what it accepts from a server; a server that breaks them, or sends
// bytes that are not RESP, makes the parser fail for good: the connection must be dropped,
// since nothing after a framing error can be trusted.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace keypool::redis {

enum class ReplyType { Status, Error, Integer, Bulk, Nil, Array };

// One reply. A Redis error reply ("-ERR ...") is a value of type Error, not a failure:
// the command ran and said no.
struct Reply {
  ReplyType type = ReplyType::Nil;
  int64_t integer = 0;         // Integer
  std::string str;             // Status, Error, Bulk
  std::vector<Reply> elements; // Array (a nil array "*-1" is Nil)

  bool is_error() const { return type == ReplyType::Error; }
  // Error replies start with a code word: "NOSCRIPT", "WRONGPASS", "ERR".
  bool error_is(std::string_view code) const;
};

// Appends one command as a RESP array of bulk strings. Arguments are binary-safe.
void encode_command(std::string& out, const std::vector<std::string>& args);
std::string encode_command(const std::vector<std::string>& args);

struct ParserLimits {
  size_t max_depth = 8;                 // arrays inside arrays
  size_t max_bulk = 64 * 1024 * 1024;   // bytes in one bulk string
  size_t max_elements = 1024 * 1024;    // elements in one array
  size_t max_line = 64 * 1024;          // a status, error or length line
};

class ReplyParser {
 public:
  enum class Status { Reply, NeedMore, Failed };

  explicit ReplyParser(ParserLimits limits = {}) : limits_(limits) {}

  // Bytes from the server, in order. Kept until parsed.
  void feed(const char* data, size_t len) { buf_.append(data, len); }
  void feed(std::string_view s) { feed(s.data(), s.size()); }
  // The next complete reply into *out, NeedMore until one is complete, Failed (for good,
  // with error()) on a protocol violation.
  Status next(Reply* out);
  const std::string& error() const { return error_; }
  // Bytes fed but not yet consumed by a complete element.
  size_t buffered() const { return buf_.size() - pos_; }

 private:
  // An array being filled: its reply and how many elements it still needs.
  struct Frame {
    Reply reply;
    size_t remaining;
  };
  enum class Step { Value, NeedMore, Failed };

  Step parse_value(Reply* out, bool* is_container);
  bool read_line(std::string_view* line);
  bool parse_length(std::string_view digits, int64_t* n);
  Step fail(std::string message);
  void compact();

  ParserLimits limits_;
  std::string buf_;
  size_t pos_ = 0;  // first unconsumed byte of buf_
  std::vector<Frame> stack_;
  bool failed_ = false;
  std::string error_;
};

}  // namespace keypool::redis
