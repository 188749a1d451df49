// fuzz_usage: a response body -> proxy::UsageTap, as the proxy feeds it: piece by piece as
// the upstream sends it, then finish().
//
// Input: byte 0 is a set of flags:
//   bits 0-4  piece size: 0 = one piece, else 1..31 bytes per feed
//   bits 5-6  content type: JSON, event stream, event stream with parameters, other
//   bit 7     small limits (a 64-byte usage object in a JSON body, a 48-byte event), to
//             reach the paths where one is too big
// the rest is the body.
//
// Checks: the walker's pointer arithmetic and 16-byte scans stay inside the bytes they are
// given (ASan), counts are never negative, nothing is found in a body of another type, and
// the same body gives the same usage fed whole as in pieces. For JSON, that compares the
// in-place walk (a body that arrives whole) with the scan of a body in pieces; the scan
// is also held to the walk directly, without the tap, which scans a body the walk
// rejects: a body the walk rejects and the scan accepts would look the same both ways.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_check.h"
#include "proxy/usage.h"

namespace {

using keypool::proxy::JsonUsageScan;
using keypool::proxy::Usage;
using keypool::proxy::UsageTap;

constexpr size_t kSmallUsage = 64;
constexpr size_t kSmallEvent = 48;

bool same(const Usage& a, const Usage& b) {
  return a.found == b.found && a.input_tokens == b.input_tokens &&
         a.output_tokens == b.output_tokens;
}

Usage run(std::string_view type, bool small, std::string_view body, size_t piece) {
  UsageTap tap = small ? UsageTap(type, kSmallUsage, kSmallEvent) : UsageTap(type);
  if (piece == 0) {
    tap.feed(body);
  } else {
    for (size_t i = 0; i < body.size(); i += piece) tap.feed(body.substr(i, piece));
  }
  return tap.finish();
}

void check_scan_matches_walk(std::string_view body, size_t max_usage_bytes, size_t piece) {
  Usage walked;
  JsonUsageScan walk(max_usage_bytes);
  if (walk.take_whole(body)) walk.finish(walked);
  Usage scanned;
  JsonUsageScan scan(max_usage_bytes);
  if (piece == 0) {
    scan.feed(body);
  } else {
    for (size_t i = 0; i < body.size(); i += piece) scan.feed(body.substr(i, piece));
  }
  scan.finish(scanned);
  FUZZ_CHECK(same(walked, scanned), "the scan in pieces and the walk of the whole body disagree");
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
    FUZZ_CHECK(same(split, whole), "pieces and whole body disagree");
  }
  if (type == kTypes[0])
    check_scan_matches_walk(body, small ? kSmallUsage : keypool::proxy::kDefaultMaxUsageBytes,
                            piece);
  return 0;
}
