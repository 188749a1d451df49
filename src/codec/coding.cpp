#include <optional>

#include "base/strings.h"
#include "codec/codec.h"

namespace keypool::codec {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Calls f(item) for each non-empty item of a comma-separated list, trimmed; stops when f
// returns false. Returns whether it went through the whole list.
template <class F>
bool each_item(std::string_view list, F&& f) {
  for (;;) {
    size_t comma = list.find(',');
    std::string_view item = trim(list.substr(0, comma));
    if (!item.empty() && !f(item)) return false;
    if (comma == std::string_view::npos) return true;
    list.remove_prefix(comma + 1);
  }
}

// RFC 9110 §8.4.1.3: x-gzip is gzip.
std::string_view canonical(std::string_view coding) {
  return iequals(coding, "x-gzip") ? "gzip" : coding;
}

// The q of one Accept-Encoding item's parameters (";q=0.5"): anything but a zero weight
// accepts. "0", "0.", "0.0", "0.000" are zero; "1", "0.001" are not.
bool positive_weight(std::string_view params) {
  bool positive = true;
  while (!params.empty()) {
    size_t semi = params.find(';');
    std::string_view p = trim(params.substr(0, semi));
    params = semi == std::string_view::npos ? std::string_view() : params.substr(semi + 1);
    size_t eq = p.find('=');
    if (eq == std::string_view::npos || !iequals(trim(p.substr(0, eq)), "q")) continue;
    std::string_view q = trim(p.substr(eq + 1));
    positive = q.empty() || q[0] != '0' || q.find_first_not_of("0.") != std::string_view::npos;
  }
  return positive;
}

// Whether accept_encoding accepts one coding.
bool accepts_one(std::string_view accept_encoding, std::string_view coding) {
  std::optional<bool> named, star;
  each_item(accept_encoding, [&](std::string_view item) {
    size_t semi = item.find(';');
    std::string_view name = trim(item.substr(0, semi));
    bool ok = positive_weight(semi == std::string_view::npos ? std::string_view()
                                                             : item.substr(semi + 1));
    if (iequals(canonical(name), coding))
      named = ok;
    else if (name == "*")
      star = ok;
    return true;
  });
  if (named) return *named;
  return star.value_or(false);
}

}  // namespace

Coding classify_content_encoding(std::string_view value) {
  Coding found = Coding::Identity;
  each_item(value, [&](std::string_view item) {
    if (iequals(item, "identity")) return true;
    if (found != Coding::Identity) {
      found = Coding::Other;  // stacked codings: not decoded
      return false;
    }
    std::string_view c = canonical(item);
    found = iequals(c, "gzip")      ? Coding::Gzip
            : iequals(c, "deflate") ? Coding::Deflate
            : iequals(c, "br")      ? Coding::Brotli
                                    : Coding::Other;
    return true;
  });
  return found;
}

Treatment treatment(std::string_view content_encoding, std::string_view accept_encoding,
                    bool must_read) {
  switch (classify_content_encoding(content_encoding)) {
    case Coding::Identity:
      return Treatment::AsIs;
    case Coding::Gzip:
    case Coding::Deflate:
    case Coding::Brotli:
      return Treatment::Decode;
    case Coding::Other:
      break;
  }
  return !must_read && accepts(accept_encoding, content_encoding) ? Treatment::Relay
                                                                  : Treatment::Refuse;
}

bool accepts(std::string_view accept_encoding, std::string_view content_encoding) {
  return each_item(content_encoding, [&](std::string_view coding) {
    return iequals(coding, "identity") || accepts_one(accept_encoding, canonical(coding));
  });
}

}  // namespace keypool::codec
