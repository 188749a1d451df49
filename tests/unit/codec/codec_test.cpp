#include "codec/codec.h"

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "support/compress.h"

using keypool::codec::accepts;
using keypool::codec::classify_content_encoding;
using keypool::codec::Coding;
using keypool::codec::Decoder;
using keypool::codec::Limits;
using keypool::testing::compress;

namespace {

// A JSON answer the size of a typical chat completion, repetitive enough to compress well
// and varied enough that a misplaced byte shows.
std::string sample_text(size_t n) {
  std::string s;
  for (int i = 0; s.size() < n; ++i)
    s += R"({"index":)" + std::to_string(i) + R"(,"delta":{"content":"token )" +
         std::to_string(i * 7919 % 1000) + R"("}})";
  s.resize(n);
  return s;
}

struct Decoded {
  std::string text;
  bool ok = true;
  std::string error;
  size_t largest_piece = 0;
};

// Feeds `pieces` one after another, pulling every piece of output, then finishes.
Decoded decode(Coding coding, const std::vector<std::string_view>& pieces, Limits limits = {}) {
  Decoded d;
  auto dec = Decoder::make(coding, limits);
  REQUIRE(dec);
  auto failed = [&](const keypool::Error& e) {
    d.ok = false;
    d.error = e.message;
    return d;
  };
  for (auto piece : pieces) {
    dec->push(piece);
    for (;;) {
      auto out = dec->next();
      if (!out) return failed(out.error());
      if (out->empty()) break;
      d.largest_piece = std::max(d.largest_piece, out->size());
      d.text.append(*out);
    }
  }
  if (auto end = dec->finish(); !end) return failed(end.error());
  return d;
}

Coding coding_of(const std::string& name) {
  return name == "gzip" ? Coding::Gzip : name == "br" ? Coding::Brotli : Coding::Deflate;
}

const std::vector<std::string> kCodings = {"gzip", "deflate", "deflate-raw", "br"};

}  // namespace

TEST_CASE("codec: Content-Encoding names the coding to decode") {
  CHECK(classify_content_encoding("") == Coding::Identity);
  CHECK(classify_content_encoding("identity") == Coding::Identity);
  CHECK(classify_content_encoding("gzip") == Coding::Gzip);
  CHECK(classify_content_encoding(" GZip ") == Coding::Gzip);
  CHECK(classify_content_encoding("x-gzip") == Coding::Gzip);
  CHECK(classify_content_encoding("deflate") == Coding::Deflate);
  CHECK(classify_content_encoding("br") == Coding::Brotli);
  CHECK(classify_content_encoding("identity, br") == Coding::Brotli);
  CHECK(classify_content_encoding("zstd") == Coding::Other);
  CHECK(classify_content_encoding("compress") == Coding::Other);
  CHECK(classify_content_encoding("gzip, br") == Coding::Other);  // stacked: not decoded
  CHECK(classify_content_encoding("gzip,gzip") == Coding::Other);
}

TEST_CASE("codec: Accept-Encoding accepts a coding by name or by *, never at q=0") {
  CHECK(accepts("gzip, deflate, br, zstd", "zstd"));
  CHECK(accepts("gzip, deflate", "x-gzip"));
  CHECK(accepts("x-gzip", "gzip"));
  CHECK(accepts("*", "zstd"));
  CHECK(accepts("gzip;q=0.5, zstd;q=0.001", "zstd"));
  CHECK(accepts("gzip", "identity"));
  CHECK(accepts("", "identity"));
  CHECK_FALSE(accepts("", "gzip"));  // a client that sent none gets no coding
  CHECK_FALSE(accepts("gzip, deflate", "zstd"));
  CHECK_FALSE(accepts("zstd;q=0, *", "zstd"));
  CHECK_FALSE(accepts("zstd; q=0.000", "zstd"));
  CHECK_FALSE(accepts("*;q=0", "br"));
  CHECK_FALSE(accepts("gzip, br", "gzip, zstd"));  // every coding of a stack must be accepted
  CHECK(accepts("gzip, zstd", "gzip, zstd"));
}

TEST_CASE("codec: what the proxy does with each coding") {
  using keypool::codec::Treatment;
  using keypool::codec::treatment;
  CHECK(treatment("", "", true) == Treatment::AsIs);
  CHECK(treatment("identity", "gzip", false) == Treatment::AsIs);
  for (const char* c : {"gzip", "x-gzip", "deflate", "br"}) {
    CAPTURE(c);
    // Decoded whatever the client accepts, also for bodies keypool must read.
    CHECK(treatment(c, "", true) == Treatment::Decode);
    CHECK(treatment(c, "gzip, deflate, br", false) == Treatment::Decode);
  }
  CHECK(treatment("zstd", "gzip, deflate, br, zstd", false) == Treatment::Relay);
  CHECK(treatment("zstd", "gzip, deflate, br, zstd", true) ==
        Treatment::Refuse);  // may quote the key
  CHECK(treatment("zstd", "gzip, deflate, br", false) ==
        Treatment::Refuse);  // the client cannot read it
  CHECK(treatment("zstd", "", false) == Treatment::Refuse);
  CHECK(treatment("gzip, br", "gzip, br", false) ==
        Treatment::Relay);  // stacked: not decoded, but readable
  CHECK(treatment("gzip, br", "gzip, br", true) == Treatment::Refuse);
}

TEST_CASE("codec: each coding decodes whole, and split at every byte") {
  const std::string text = sample_text(3000);
  for (const auto& name : kCodings) {
    CAPTURE(name);
    const std::string coded = compress(name, text);
    CHECK(coded.size() < text.size());
    auto whole = decode(coding_of(name), {coded});
    REQUIRE(whole.ok);
    CHECK(whole.text == text);
    // Two pieces, cut at every offset (the deflate sniff and every header field get split).
    for (size_t cut = 0; cut <= coded.size(); ++cut) {
      auto d = decode(coding_of(name), {std::string_view(coded).substr(0, cut),
                                        std::string_view(coded).substr(cut)});
      if (!d.ok || d.text != text) {
        FAIL_CHECK("cut at " << cut << ": " << d.error);
        break;
      }
    }
    // One byte at a time.
    std::vector<std::string_view> bytes;
    for (size_t i = 0; i < coded.size(); ++i) bytes.push_back(std::string_view(coded).substr(i, 1));
    auto d = decode(coding_of(name), bytes);
    CHECK(d.ok);
    CHECK(d.text == text);
  }
}

TEST_CASE("codec: output comes in bounded pieces, however well the body compresses") {
  const std::string text(4 << 20, 'a');  // 4 MiB of one letter: about 1000:1 under deflate
  for (const auto& name : kCodings) {
    CAPTURE(name);
    auto d = decode(coding_of(name), {compress(name, text)},
                    Limits{.max_ratio = 1 << 20, .piece_bytes = 4096});
    REQUIRE(d.ok);
    CHECK(d.text.size() == text.size());
    CHECK(d.largest_piece == 4096);
  }
}

// What the proxy does when the client falls behind: stop pulling, keep the rest of the
// input (the upstream's read buffer is reused at once), take more input, go on later.
TEST_CASE("codec: a decoder that is held keeps its input and goes on later") {
  const std::string text = sample_text(200000);
  for (const auto& name : kCodings) {
    CAPTURE(name);
    const std::string coded = compress(name, text);
    auto dec = Decoder::make(coding_of(name), Limits{.piece_bytes = 1000});
    std::string out;
    for (size_t off = 0; off < coded.size(); off += 7000) {
      std::string buffer = coded.substr(off, 7000);  // the caller's buffer, reused below
      dec->push(buffer);
      auto piece = dec->next();
      REQUIRE(piece);
      out.append(*piece);
      dec->hold();  // one piece only: the reader is behind
      std::fill(buffer.begin(), buffer.end(), '\xee');
    }
    // The reader catches up: everything held comes out, in order.
    for (;;) {
      auto piece = dec->next();
      REQUIRE(piece);
      if (piece->empty()) break;
      out.append(*piece);
    }
    CHECK(dec->finish());
    CHECK(out == text);
  }
}

TEST_CASE("codec: an empty body, gzip members one after another") {
  for (const auto& name : kCodings) {
    CAPTURE(name);
    auto d = decode(coding_of(name), {compress(name, "")});
    CHECK(d.ok);
    CHECK(d.text.empty());
  }
  const std::string two = compress("gzip", "first,") + compress("gzip", "second");
  for (size_t cut = 0; cut <= two.size(); ++cut) {
    auto d = decode(Coding::Gzip,
                    {std::string_view(two).substr(0, cut), std::string_view(two).substr(cut)});
    REQUIRE_MESSAGE(d.ok, "cut at " << cut << ": " << d.error);
    CHECK(d.text == "first,second");
  }
}

TEST_CASE("codec: a truncated body is an error at its end, never a clean end") {
  const std::string text = sample_text(2000);
  for (const auto& name : kCodings) {
    CAPTURE(name);
    const std::string coded = compress(name, text);
    // The last case lacks only the checksum or the final byte: the text may all be there,
    // but the stream did not end, so it is still not a clean end.
    for (size_t keep : {size_t{0}, size_t{1}, size_t{2}, coded.size() / 2, coded.size() - 1}) {
      CAPTURE(keep);
      auto d = decode(coding_of(name), {std::string_view(coded).substr(0, keep)});
      CHECK_FALSE(d.ok);
      CHECK(d.error.find("truncated") != std::string::npos);
      if (keep <= coded.size() / 2) CHECK(d.text.size() < text.size());
    }
  }
}

TEST_CASE("codec: corrupt input gives a clear error, also for every later call") {
  const std::string text = sample_text(2000);
  for (const auto& name : kCodings) {
    CAPTURE(name);
    std::string coded = compress(name, text);
    // Garbage from the start.
    auto garbage = decode(coding_of(name), {std::string(64, '\xff')});
    CHECK_FALSE(garbage.ok);
    CHECK(garbage.error.find("corrupt") != std::string::npos);
    // Bytes flipped in the middle of the stream.
    for (size_t i = coded.size() / 3; i < coded.size() / 3 + 8; ++i)
      coded[i] = static_cast<char>(coded[i] ^ 0x5a);
    auto d = decode(coding_of(name), {coded});
    CHECK_FALSE(d.ok);
    CHECK_FALSE(d.text == text);
  }
  // Once failed, the decoder stays failed.
  auto dec = Decoder::make(Coding::Gzip);
  dec->push("not gzip at all");
  CHECK_FALSE(dec->next());
  dec->push(compress("gzip", "x"));
  auto again = dec->next();
  REQUIRE_FALSE(again);
  CHECK(again.error().message.find("gzip") != std::string::npos);
  CHECK_FALSE(dec->finish());
}

TEST_CASE("codec: bytes after the end of a deflate or br stream are refused") {
  for (const auto& name : {"deflate", "deflate-raw", "br"}) {
    CAPTURE(name);
    auto d = decode(coding_of(name), {compress(name, "hello") + "trailing"});
    CHECK_FALSE(d.ok);
    CHECK(d.error.find("after the end") != std::string::npos);
  }
  // gzip reads what follows as the next member: garbage there is corrupt.
  auto d = decode(Coding::Gzip, {compress("gzip", "hello") + "trailing"});
  CHECK_FALSE(d.ok);
}

TEST_CASE("codec: a decompression bomb is cut at the ratio limit") {
  // 64 MiB of zeros: brotli makes a few dozen bytes of it, gzip about 64 KiB.
  const std::string zeros(64 << 20, '\0');
  for (const std::string name : {"br", "gzip"}) {
    CAPTURE(name);
    const std::string coded = compress(name, zeros);
    const Limits limits{.max_ratio = 100, .allowance = 1 << 20, .piece_bytes = 16 * 1024};
    auto dec = Decoder::make(coding_of(name), limits);
    dec->push(coded);
    uint64_t out = 0;
    keypool::Error error;
    for (;;) {
      auto piece = dec->next();
      if (!piece) {
        error = piece.error();
        break;
      }
      REQUIRE_FALSE(piece->empty());  // the whole input must not decode
      out += piece->size();
    }
    CHECK(error.message.find("decompression bomb") != std::string::npos);
    // Cut within one piece of the limit, far short of the 64 MiB.
    CHECK(out <= coded.size() * 100 + (1 << 20));
    CHECK(out + 16 * 1024 > dec->bytes_in() * 100 + (1 << 20) - 16 * 1024);
  }
  // The default limit passes a stream that repeats one event until it is 4 MiB long, more
  // than a model stuck in a loop writes before its max_tokens (16k tokens, about 2.5 MB of
  // SSE): deflate makes about 1000:1 of it, brotli far more.
  const std::string text = [] {
    std::string t;
    while (t.size() < (4u << 20))
      t += "data: {\"choices\":[{\"delta\":{\"content\":\"\\n\"}}]}\n\n";
    return t;
  }();
  for (const auto& name : kCodings) {
    CAPTURE(name);
    auto d = decode(coding_of(name), {compress(name, text)});
    CHECK(d.ok);
    CHECK(d.text.size() == text.size());
  }
}
