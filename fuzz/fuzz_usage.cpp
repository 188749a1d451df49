// fuzz_usage: a response body -> proxy::UsageTap, as the proxy feeds it: piece by piece as
// the upstream sends it, then finish().
//
// Input: byte 0 is a set of flags:
//   bits 0-4  piece size: 0 = one piece, else 1..31 bytes per feed
//   bits 5-6  content type: JSON, event stream, event stream with parameters, other
//   bit 7     small limits (64-byte JSON body, 48-byte event), to reach the overflow paths
// the rest is the body.
//
// Checks: the walker's pointer arithmetic and 16-byte scans stay inside the bytes they are
// given (ASan), counts are never negative, nothing is found in a body of another type, and
// the same body gives the same usage fed whole as in pieces.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_check.h"
#include "proxy/usage.h"

namespace {

using keypool::proxy::Usage;
using keypool::proxy::UsageTap;

Usage run(std::string_view type, bool small, std::string_view body, size_t piece) {
  UsageTap tap = small ? UsageTap(type, 64, 48) : UsageTap(type);
  if (piece == 0) {
    tap.feed(body);
  } else {
    for (size_t i = 0; i < body.size(); i += piece) tap.feed(body.substr(i, piece));
  }
  return tap.finish();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t flags = data[0];
  const size_t piece = flags & 0x1f;
  constexpr std::string_view kTypes[] = {"application/json", "text/event-stream",
                                         "Text/Event-Stream; charset=utf-8", "text/plain"};
  const std::string_view type = kTypes[(flags >> 5) & 3];
  const bool small = (flags & 0x80) != 0;
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);

  const Usage whole = run(type, small, body, 0);
  FUZZ_CHECK(whole.input_tokens >= 0 && whole.output_tokens >= 0, "negative count");
  if (type == "text/plain") FUZZ_CHECK(!whole.found, "usage found in a body of another type");
  if (piece != 0) {
    const Usage split = run(type, small, body, piece);
    FUZZ_CHECK(split.found == whole.found && split.input_tokens == whole.input_tokens &&
                   split.output_tokens == whole.output_tokens,
               "pieces and whole body disagree");
  }
  return 0;
}
