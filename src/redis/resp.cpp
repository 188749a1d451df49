#include "redis/resp.h"

#include <charconv>

namespace keypool::redis {

bool Reply::error_is(std::string_view code) const {
  if (type != ReplyType::Error || str.size() < code.size()) return false;
  if (str.compare(0, code.size(), code) != 0) return false;
  return str.size() == code.size() || str[code.size()] == ' ';
}

// The exact size is reserved first: besides saving reallocations, a reallocation after an
// argument was appended would free a copy of it unwiped, and AUTH carries the password.
void encode_command(std::string& out, const std::vector<std::string>& args) {
  size_t size = 1 + 20 + 2;
  for (const auto& a : args) size += 1 + 20 + 2 + a.size() + 2;
  out.reserve(out.size() + size);
  out += '*';
  out += std::to_string(args.size());
  out += "\r\n";
  for (const auto& a : args) {
    out += '$';
    out += std::to_string(a.size());
    out += "\r\n";
    out += a;
    out += "\r\n";
  }
}

std::string encode_command(const std::vector<std::string>& args) {
  std::string out;
  encode_command(out, args);
  return out;
}

// Drops consumed bytes once they are most of the buffer, so a long pipeline does not keep
// every reply it ever read, and a large reply is not moved on every feed.
void ReplyParser::compact() {
  if (pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  } else if (pos_ > 4096 && pos_ * 2 > buf_.size()) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
}

ReplyParser::Step ReplyParser::fail(std::string message) {
  failed_ = true;
  error_ = std::move(message);
  return Step::Failed;
}

// A line ending in CRLF at pos_, without the CRLF; pos_ moves past it. False when the line
// is not complete yet (or is over the limit, which sets failed_).
bool ReplyParser::read_line(std::string_view* line) {
  size_t end = buf_.find("\r\n", pos_);
  if (end == std::string::npos) {
    if (buf_.size() - pos_ > limits_.max_line) fail("reply line longer than " + std::to_string(limits_.max_line) + " bytes");
    return false;
  }
  if (end - pos_ > limits_.max_line) {
    fail("reply line longer than " + std::to_string(limits_.max_line) + " bytes");
    return false;
  }
  *line = std::string_view(buf_).substr(pos_, end - pos_);
  pos_ = end + 2;
  return true;
}

// Decimal, with an optional '-', nothing else (no '+', no spaces, no empty string).
bool ReplyParser::parse_length(std::string_view digits, int64_t* n) {
  if (digits.empty()) return false;
  const char* first = digits.data();
  const char* last = first + digits.size();
  auto [p, ec] = std::from_chars(first, last, *n);
  return ec == std::errc() && p == last && !(digits[0] == '-' && digits.size() == 1);
}

// One value at pos_: a scalar into *out, or an array header (an empty Array in *out with
// *is_container set and its count in out->integer). pos_ only moves when the whole value
// (or header) is there, so NeedMore leaves the parser where it was.
ReplyParser::Step ReplyParser::parse_value(Reply* out, bool* is_container) {
  *is_container = false;
  if (pos_ >= buf_.size()) return Step::NeedMore;
  const size_t start = pos_;
  const char kind = buf_[pos_];
  if (kind != '+' && kind != '-' && kind != ':' && kind != '$' && kind != '*')
    return fail(std::string("unexpected reply type byte 0x") + "0123456789abcdef"[(kind >> 4) & 0xf] +
                "0123456789abcdef"[kind & 0xf]);
  ++pos_;
  std::string_view line;
  if (!read_line(&line)) {
    pos_ = start;
    return failed_ ? Step::Failed : Step::NeedMore;
  }
  if (line.find('\r') != std::string_view::npos || line.find('\n') != std::string_view::npos)
    return fail("bare CR or LF in a reply line");
  switch (kind) {
    case '+':
    case '-':
      out->type = kind == '+' ? ReplyType::Status : ReplyType::Error;
      out->str.assign(line);
      return Step::Value;
    case ':':
      out->type = ReplyType::Integer;
      if (!parse_length(line, &out->integer)) return fail("malformed integer reply");
      return Step::Value;
    case '$': {
      int64_t n = 0;
      if (!parse_length(line, &n) || n < -1) return fail("malformed bulk length");
      if (n == -1) {
        out->type = ReplyType::Nil;
        return Step::Value;
      }
      if (static_cast<uint64_t>(n) > limits_.max_bulk)
        return fail("bulk reply of " + std::to_string(n) + " bytes is over the limit");
      const size_t len = static_cast<size_t>(n);
      if (buf_.size() - pos_ < len + 2) {
        pos_ = start;
        return Step::NeedMore;
      }
      if (buf_[pos_ + len] != '\r' || buf_[pos_ + len + 1] != '\n') return fail("bulk reply not ended by CRLF");
      out->type = ReplyType::Bulk;
      out->str.assign(buf_, pos_, len);
      pos_ += len + 2;
      return Step::Value;
    }
    default: {  // '*'
      int64_t n = 0;
      if (!parse_length(line, &n) || n < -1) return fail("malformed array length");
      if (n == -1) {
        out->type = ReplyType::Nil;
        return Step::Value;
      }
      if (static_cast<uint64_t>(n) > limits_.max_elements)
        return fail("array of " + std::to_string(n) + " elements is over the limit");
      out->type = ReplyType::Array;
      out->integer = n;
      *is_container = true;
      return Step::Value;
    }
  }
}

ReplyParser::Status ReplyParser::next(Reply* out) {
  if (failed_) return Status::Failed;
  for (;;) {
    Reply value;
    bool container = false;
    Step step = parse_value(&value, &container);
    if (step == Step::Failed) return Status::Failed;
    if (step == Step::NeedMore) {
      compact();
      return Status::NeedMore;
    }
    if (container && value.integer > 0) {
      if (stack_.size() >= limits_.max_depth) {
        fail("replies nested deeper than " + std::to_string(limits_.max_depth));
        return Status::Failed;
      }
      const size_t n = static_cast<size_t>(value.integer);
      value.integer = 0;
      // Reserve only a little up front: the count is the server's word, not yet its bytes.
      value.elements.reserve(n < 64 ? n : 64);
      stack_.push_back(Frame{std::move(value), n});
      continue;
    }
    value.integer = container ? 0 : value.integer;
    // A complete value: hand it to the array it belongs to, closing arrays it completes.
    while (!stack_.empty()) {
      Frame& top = stack_.back();
      top.reply.elements.push_back(std::move(value));
      if (--top.remaining > 0) break;
      value = std::move(top.reply);
      stack_.pop_back();
    }
    if (stack_.empty()) {
      *out = std::move(value);
      compact();
      return Status::Reply;
    }
  }
}

}  // namespace keypool::redis
