// Differential test of the request line and field-name grammar: RequestParser (llhttp in
// strict mode plus keypool's own checks) against a plain reading of the RFC 9112 §3 and
// RFC 9110 §5.1 ABNF, over generated heads made of valid and subtly broken pieces, each fed
// whole and split at every few bytes. Both must agree on every head: accepted heads carry
// exactly the expected method, target and field names (names with '_' dropped).
#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "http/grammar.h"
#include "http/request_parser.h"

using keypool::http::RequestHead;
using keypool::http::RequestParser;
using Status = RequestParser::Status;

namespace {

// ---- the reference: the ABNF, read literally --------------------------------------------

// tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|" /
//         "~" / DIGIT / ALPHA
bool ref_tchar(unsigned char c) {
  return std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos ||
         (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool ref_token(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!ref_tchar(static_cast<unsigned char>(c))) return false;
  return true;
}
// origin-form = absolute-path [ "?" query ]; pchar = unreserved / pct-encoded / sub-delims /
// ":" / "@"; query = *( pchar / "/" / "?" ). Escapes are not decoded here (the router's
// business), so '%' is one more allowed byte. One deliberate leniency, the parser's as
// nginx's: the printable bytes RFC 3986 wants encoded but clients send raw in queries
// ("filter[a]=b", "fields=a|b") pass the parser; the router refuses '\\' in a path.
constexpr std::string_view kRawButTolerated = "\"<>[\\]^`{|}";
bool ref_target_char(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         std::string_view("-._~!$&'()*+,;=:@/?%").find(static_cast<char>(c)) != std::string_view::npos ||
         kRawButTolerated.find(static_cast<char>(c)) != std::string_view::npos;
}
bool ref_origin_form(std::string_view s) {
  if (s.empty() || s.front() != '/') return false;
  for (char c : s)
    if (!ref_target_char(static_cast<unsigned char>(c))) return false;
  return true;
}

// The methods llhttp knows: RFC 9110 lets a method be any token, and a proxy may refuse the
// ones it does not implement; the generator only mixes these with broken spellings.
const std::vector<std::string> kMethods = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"};

struct Head {
  std::string method, sp1, target, sp2, version;
  std::vector<std::pair<std::string, std::string>> fields;  // name, what stands between it and ':'

  std::string bytes() const {
    std::string out = method + sp1 + target + sp2 + version + "\r\nHost: x\r\n";
    for (const auto& [name, gap] : fields) out += name + gap + ": v\r\n";
    return out + "\r\n";
  }
  // request-line = method SP request-target SP HTTP-version; field-line = field-name ":" ...
  bool valid() const {
    if (std::find(kMethods.begin(), kMethods.end(), method) == kMethods.end()) return false;
    if (sp1 != " " || sp2 != " " || !ref_origin_form(target)) return false;
    if (version != "HTTP/1.1" && version != "HTTP/1.0") return false;
    for (const auto& [name, gap] : fields)
      if (!gap.empty() || !ref_token(name)) return false;
    return true;
  }
  // The names a handler sees: the '_' ones are dropped (README: strict HTTP).
  std::vector<std::string> kept_names() const {
    std::vector<std::string> out{"Host"};
    for (const auto& f : fields)
      if (f.first.find('_') == std::string::npos) out.push_back(f.first);
    return out;
  }
};

// ---- the generator ----------------------------------------------------------------------

struct Gen {
  std::mt19937 rng;
  explicit Gen(uint32_t seed) : rng(seed) {}
  size_t below(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); }
  bool one_in(size_t n) { return below(n) == 0; }

  // Mostly token bytes, sometimes one of the bytes that must end or break a name.
  char name_byte() {
    static const std::string token = "abcXYZ019-!#$%&'*+.^_`|~";
    static const std::string other = " \t()<>@,;\\\"/[]?={}\x7f\x80\xff";
    return one_in(12) ? other[below(other.size())] : token[below(token.size())];
  }
  std::string name() {
    std::string n;
    const size_t len = one_in(30) ? 0 : 1 + below(12);
    for (size_t i = 0; i < len; ++i) n += name_byte();
    return n;
  }
  std::string gap() {
    static const std::vector<std::string> gaps = {" ", "\t", "  "};
    return one_in(15) ? gaps[below(gaps.size())] : "";
  }
  std::string space() {
    static const std::vector<std::string> spaces = {"  ", "\t", "   ", " \t"};
    return one_in(10) ? spaces[below(spaces.size())] : " ";
  }
  std::string method() {
    static const std::vector<std::string> broken = {"get", "GE T", "G\x80T", "GETX", "", "POST/"};
    return one_in(10) ? broken[below(broken.size())] : kMethods[below(kMethods.size())];
  }
  std::string target() {
    static const std::string chars = "abc019-._~!$&'()*+,;=:@/?%[]|{}^";
    static const std::string bad("\x7f\x80\xff\x01\t \0", 7);
    std::string t = "/";
    const size_t len = below(16);
    for (size_t i = 0; i < len; ++i) t += one_in(25) ? bad[below(bad.size())] : chars[below(chars.size())];
    if (one_in(40)) t = "v1/x";  // no leading slash
    return t;
  }
  std::string version() {
    static const std::vector<std::string> broken = {"HTTP/1.2", "HTTP/2.0", "http/1.1", "HTTP/1.1 ", "HTTP/11"};
    if (one_in(12)) return broken[below(broken.size())];
    return one_in(5) ? "HTTP/1.0" : "HTTP/1.1";
  }
  Head head() {
    Head h{method(), space(), target(), space(), version(), {}};
    const size_t n = below(5);
    for (size_t i = 0; i < n; ++i) h.fields.emplace_back(name(), gap());
    return h;
  }
};

struct Events : RequestParser::Events {
  std::vector<RequestHead> heads;
  void on_request_head(RequestHead&& h) override { heads.push_back(std::move(h)); }
  void on_request_body(std::string_view) override {}
  void on_request_complete() override {}
};

// Feeds bytes in pieces of `step`; true when a head came out and nothing failed.
bool parses(const std::string& bytes, size_t step, RequestHead* out) {
  Events ev;
  RequestParser p({}, &ev);
  for (size_t i = 0; i < bytes.size(); i += step) {
    size_t used = 0;
    const Status s = p.feed(std::string_view(bytes).substr(i, step), &used);
    if (s == Status::Error) return false;
    if (s == Status::Paused) break;
  }
  if (ev.heads.size() != 1) return false;
  *out = std::move(ev.heads[0]);
  return true;
}

}  // namespace

TEST_CASE("request grammar: the parser and the RFC's ABNF agree on generated request lines and field names") {
  Gen gen(20261208);
  size_t accepted = 0, refused = 0;
  for (int i = 0; i < 20000; ++i) {
    const Head h = gen.head();
    const std::string bytes = h.bytes();
    const bool want = h.valid();
    for (size_t step : {bytes.size(), size_t{1} + static_cast<size_t>(i % 7)}) {
      RequestHead got;
      const bool ok = parses(bytes, step, &got);
      INFO("head: " << bytes << "(fed " << step << " bytes at a time)");
      REQUIRE(ok == want);
      if (!ok) continue;
      CHECK(got.method == h.method);
      CHECK(got.target == h.target);
      std::vector<std::string> names;
      for (const auto& f : got.headers) names.push_back(f.name);
      CHECK(names == h.kept_names());
    }
    ++(want ? accepted : refused);
  }
  // The generator must exercise both sides, or the agreement means nothing.
  CHECK(accepted > 3000);
  CHECK(refused > 5000);
}

TEST_CASE("request grammar: Host values against uri-host [\":\" port]") {
  struct Case {
    const char* value;
    bool ok;
  };
  for (const auto& c : std::vector<Case>{
           {"example.com", true},         {"example.com:443", true},   {"127.0.0.1", true},
           {"[::1]", true},               {"[::1]:8080", true},        {"[v1.fe80::a+en1]", true},
           {"a_b-c~d.e", true},           {"%41bc", true},             {"host:", true},
           {"", false},                   {":80", false},              {"a b", false},
           {"user@host", false},          {"host/path", false},        {"host?q", false},
           {"host#f", false},             {"host:8o", false},          {"host:123456", false},
           {"[::1", false},               {"::1", false},              {"[g::1]", false},
           {"[]", false},                 {"%4", false},               {"a\tb", false},
           {"host:80:80", false},         {"[::1]x", false},           {"\x80host", false},
       }) {
    CAPTURE(c.value);
    CHECK(keypool::http::is_host_value(c.value) == c.ok);
  }
}
