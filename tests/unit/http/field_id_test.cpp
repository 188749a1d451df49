// FieldId: header names classified once, so that filters and lookups compare ids.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "http/headers.h"

using keypool::http::classify_field;
using keypool::http::ConnectionTokens;
using keypool::http::field_id;
using keypool::http::FieldId;
using keypool::http::find_header;
using keypool::http::Header;
using keypool::http::Headers;

namespace {

struct Named {
  const char* name;
  FieldId id;
};

// Every listed id with its one name.
const std::vector<Named> kListed = {
    {"host", FieldId::Host},
    {"content-length", FieldId::ContentLength},
    {"transfer-encoding", FieldId::TransferEncoding},
    {"expect", FieldId::Expect},
    {"connection", FieldId::Connection},
    {"keep-alive", FieldId::KeepAlive},
    {"proxy-connection", FieldId::ProxyConnection},
    {"te", FieldId::Te},
    {"trailer", FieldId::Trailer},
    {"upgrade", FieldId::Upgrade},
    {"proxy-authenticate", FieldId::ProxyAuthenticate},
    {"proxy-authorization", FieldId::ProxyAuthorization},
    {"http2-settings", FieldId::Http2Settings},
    {"authorization", FieldId::Authorization},
    {"x-api-key", FieldId::XApiKey},
    {"xi-api-key", FieldId::XiApiKey},
    {"api-key", FieldId::ApiKey},
    {"content-type", FieldId::ContentType},
    {"accept-encoding", FieldId::AcceptEncoding},
    {"content-encoding", FieldId::ContentEncoding},
    {"retry-after", FieldId::RetryAfter},
    {"x-keypool-session", FieldId::XKeypoolSession},
    {"x-keypool-key-id", FieldId::XKeypoolKeyId},
};

std::string upper(std::string s) {
  for (auto& c : s)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  return s;
}

// "Content-Length", "X-Api-Key": the case most clients send.
std::string title(std::string s) {
  bool start = true;
  for (auto& c : s) {
    if (start && c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    start = c == '-';
  }
  return s;
}

// Every other letter upper-case, starting with the second.
std::string alternating(std::string s) {
  for (size_t i = 1; i < s.size(); i += 2)
    if (s[i] >= 'a' && s[i] <= 'z') s[i] = static_cast<char>(s[i] - 'a' + 'A');
  return s;
}

}  // namespace

TEST_CASE("field id: every listed name, in any case") {
  for (const auto& n : kListed) {
    CAPTURE(n.name);
    CHECK(classify_field(n.name) == n.id);
    CHECK(classify_field(upper(n.name)) == n.id);
    CHECK(classify_field(title(n.name)) == n.id);
    CHECK(classify_field(alternating(n.name)) == n.id);
  }
  // Each listed id has exactly one name (ConnectionTokens relies on it), and the table
  // above misses none of them.
  const int last = static_cast<int>(FieldId::XKeypoolKeyId);
  for (int i = static_cast<int>(FieldId::Other) + 1; i <= last; ++i) {
    CAPTURE(i);
    int names = 0;
    for (const auto& n : kListed) names += static_cast<int>(n.id) == i;
    CHECK(names == 1);
  }
}

TEST_CASE("field id: near misses are Other") {
  CHECK(classify_field("") == FieldId::Other);
  for (const auto& n : kListed) {
    const std::string name = n.name;
    CAPTURE(name);
    // Same length, one byte off, at every position (a letter, or '-' becoming '_').
    for (size_t i = 0; i < name.size(); ++i) {
      std::string off = name;
      off[i] = name[i] == '-' ? '_' : name[i] == 'q' ? 'z' : 'q';
      CHECK(classify_field(off) == FieldId::Other);
      // Bit 0x20 flipped on a non-letter: '-' (0x2d) becomes '\r' (0x0d), which case
      // folding must not mistake for the same byte.
      if (name[i] == '-') {
        off[i] = '\r';
        CHECK(classify_field(off) == FieldId::Other);
      }
      // A byte with the high bit set is not a letter in any case.
      off[i] = static_cast<char>(name[i] | 0x80);
      CHECK(classify_field(off) == FieldId::Other);
    }
    CHECK(classify_field(name.substr(0, name.size() - 1)) == FieldId::Other);
    CHECK(classify_field(name.substr(1)) == FieldId::Other);
    CHECK(classify_field(name + "s") == FieldId::Other);
    CHECK(classify_field("x" + name) == FieldId::Other);
    CHECK(classify_field(name + " ") == FieldId::Other);
  }
  CHECK(classify_field("x-keypool-other") == FieldId::Other);  // the prefix alone is no id
  CHECK(classify_field("user-agent") == FieldId::Other);       // keep-alive's length
}

TEST_CASE("field id: headers built in code are classified when asked") {
  // Aggregate initialisation leaves the id Unclassified; lookups must still see the name.
  Headers h = {{"X-Other", "1"}, {"CONTENT-TYPE", "text/plain"}, {"content-type", "second"}};
  CHECK(h[1].id == FieldId::Unclassified);
  CHECK(field_id(h[0]) == FieldId::Other);
  CHECK(field_id(h[1]) == FieldId::ContentType);
  CHECK(find_header(h, FieldId::ContentType) == "text/plain");  // the first one
  CHECK_FALSE(find_header(h, FieldId::Host));
  // A header the parser classified answers by its id.
  Header parsed{"Retry-After", "3", FieldId::RetryAfter};
  CHECK(field_id(parsed) == FieldId::RetryAfter);
  CHECK(find_header(Headers{parsed}, FieldId::RetryAfter) == "3");
}

TEST_CASE("field id: ConnectionTokens answers listed names by id, the rest by name") {
  Headers h = {{"Connection", "Keep-Alive, UPGRADE , x-trace"}, {"User-Agent", "u"}};
  const ConnectionTokens tokens(h);
  CHECK(tokens.names(Header{"keep-alive", ""}));
  CHECK(tokens.names(Header{"Keep-Alive", "", FieldId::KeepAlive}));
  CHECK(tokens.names("Upgrade"));
  CHECK(tokens.names("X-Trace"));
  CHECK_FALSE(tokens.names(Header{"User-Agent", "u", FieldId::Other}));  // keep-alive's length
  CHECK_FALSE(tokens.names("x-tracf"));
  CHECK_FALSE(tokens.names("connection"));
  CHECK_FALSE(tokens.names("te"));
  // A Connection header built in code (no id) still counts.
  CHECK(ConnectionTokens(Headers{{"CONNECTION", "te"}}).names("TE"));
}
