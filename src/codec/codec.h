#pragma once
// Codec: HTTP content codings (RFC 9110 §8.4) for bodies keypool must read. Pure: no loop,
// no I/O.
//
// keypool reads upstream answers (the usage it counts, the key fragments it masks in error
// bodies), so it asks the upstream for `identity` (rewrite does that). Some upstreams and
// edges compress anyway; this room tells which coding an answer uses and decodes gzip,
// deflate and br as the bytes pass, in bounded pieces, so the proxy reads and forwards text.
// It does not encode: keypool forwards a decoded answer decoded.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"

namespace keypool::codec {

enum class Coding : uint8_t {
  Identity,  // no Content-Encoding, or only "identity"
  Gzip,      // gzip, x-gzip (RFC 1952; concatenated members are read one after another)
  Deflate,   // deflate: zlib-wrapped (RFC 1950) as RFC 9110 says, or raw (RFC 1951) as
             // some servers send it; told apart by the first two bytes
  Brotli,    // br (RFC 7932)
  Other,     // anything else (zstd, compress, unknown names) or codings stacked on each other
};

// The coding a response's Content-Encoding value (several fields joined by ',') asks for.
Coding classify_content_encoding(std::string_view value);

// Whether a client's Accept-Encoding value (several fields joined by ',') accepts every
// coding named in content_encoding: each listed by name or by "*" with a q above 0, and
// not refused by name with q=0. An absent or empty Accept-Encoding accepts none of them.
bool accepts(std::string_view accept_encoding, std::string_view content_encoding);

// What the proxy does with an answer's body, given its Content-Encoding, what the client
// accepts and whether keypool must read the body (an error body it masks the key in):
// - AsIs: no coding.
// - Decode: gzip, deflate or br: decoded as it passes and forwarded decoded, whatever the
//   client accepts (so a client that sent no Accept-Encoding never gets a coded body).
// - Relay: a coding keypool cannot decode, on a body it need not read, that the client
//   accepts: forwarded untouched (its usage is not counted).
// - Refuse: a coding keypool cannot decode where it must read the body (it could quote the
//   key) or where the client does not accept it: never forwarded.
enum class Treatment : uint8_t { AsIs, Decode, Relay, Refuse };
Treatment treatment(std::string_view content_encoding, std::string_view accept_encoding,
                    bool must_read);

// What a decoder lets a body grow to. A real JSON or SSE answer inflates 2-60 times
// (bench/README.md); a model stuck repeating one token until max_tokens makes a stream that
// deflate shrinks about 1000:1 (its ceiling is 1032:1) and brotli far more, but that stream
// stays under a few MB.
// A "bomb" (a few KiB that brotli expands to gigabytes) is cut once the output passes
// max_ratio times the input read so far plus allowance. Output is handed over in pieces of
// at most piece_bytes, so the decoder holds one piece whatever the ratio, and its caller
// can stop pulling between pieces (hold()) when its reader falls behind.
struct Limits {
  uint64_t max_ratio = 1024;
  uint64_t allowance = 8 << 20;
  size_t piece_bytes = 16 * 1024;
};

// Decodes one body incrementally, whatever way it is cut. Feed the compressed bytes with
// push(), then call next() until it returns an empty piece (that input is used up), then
// push() again; at the end of the body, finish() says whether the coded stream was whole.
// A piece stays valid until the next call. An error is final: corrupt or truncated input,
// bytes after the end of the coded stream, or output past the Limits.
class Decoder {
 public:
  // Null for Identity and Other.
  static std::unique_ptr<Decoder> make(Coding coding, Limits limits = {});
  virtual ~Decoder() = default;

  void push(std::string_view in);
  Result<std::string_view> next();
  Result<void> finish();
  // For a caller that stops pulling before the input is used up (its reader is behind) and
  // will call next() again after the pushed bytes are gone: copies the input not yet decoded
  // out of the caller's buffer. Until that is used up, push() appends to the copy.
  void hold();

  uint64_t bytes_in() const { return bytes_in_; }
  uint64_t bytes_out() const { return bytes_out_; }

 protected:
  Decoder(Limits limits, const char* label);
  // What one step did: bytes written to the front of out_, and whether it moved at all
  // (read input, wrote output or advanced its own state); a step that did not move is not
  // repeated until more input comes.
  struct Step {
    size_t produced = 0;
    bool moved = false;
  };
  // Decodes from in_ (advancing it) into out_ (at most out_.size() bytes). Sets ended_ when
  // the coded stream is complete.
  virtual Result<Step> step() = 0;

  std::string_view in_;  // what push() gave and step() has not read yet (or a view of kept_)
  std::string out_;      // one piece
  bool ended_ = false;   // the coded stream is complete

 private:
  Error fail(Error error);

  Limits limits_;
  const char* label_;     // "gzip", "deflate", "br": for messages
  bool pending_ = false;  // the last step filled out_: the coder may hold more output
  std::string kept_;      // hold(): the input not yet decoded; in_ views its tail
  bool holding_ = false;
  uint64_t bytes_in_ = 0, bytes_out_ = 0;
  std::optional<Error> error_;
};

}  // namespace keypool::codec
