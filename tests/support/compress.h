#pragma once
// Content codings for tests: what an upstream's edge does to an answer. gzip and deflate
// (zlib-wrapped, as RFC 9110 says) with zlib, "deflate-raw" (raw deflate, as some servers
// send under the name deflate), br with brotli's encoder.
#include <memory>
#include <string>
#include <string_view>

namespace keypool::testing {

// Throws std::invalid_argument for a coding it does not know.
std::string compress(std::string_view coding, std::string_view data);

// The first coding of an Accept-Encoding value the fake upstream can make, in the client's
// order, skipping q=0 items: "gzip", "deflate", "br" or "" (identity).
std::string pick_coding(std::string_view accept_encoding);

// A body compressed as it is written, as an edge compresses a stream: each push() returns
// the bytes that make its input decodable at once (a sync flush), finish() the end of the
// stream. gzip, deflate, deflate-raw or br.
class StreamEncoder {
 public:
  explicit StreamEncoder(std::string_view coding);
  ~StreamEncoder();
  StreamEncoder(const StreamEncoder&) = delete;
  StreamEncoder& operator=(const StreamEncoder&) = delete;
  std::string push(std::string_view data);
  std::string finish();

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace keypool::testing
