#include "proxy/cooldown.h"

#include <algorithm>
#include <ctime>
#include <limits>
#include <string>

#include "base/strings.h"

namespace keypool::proxy {
namespace {

// The longest wait we honour. The longest window any provider documents is a day (OpenAI's
// per-day limits); a longer claim is more likely a bug than a plan, and the caller adds
// the result to the clock, which must not overflow.
constexpr int64_t kMaxCooldownMs = 24 * 3'600'000;

int64_t clamp_ms(int64_t ms) { return std::clamp<int64_t>(ms, 0, kMaxCooldownMs); }

// "12", "1.5", "0.25" times unit_ns nanoseconds, rounded up to whole milliseconds so we
// never retry early. Exact integer arithmetic: doubles would turn "1.1s" into 1101 ms.
// nullopt on anything but digits with at most one '.'. A value past int64 nanoseconds
// (292 years) saturates: it is a long wait, not garbage, and the caller caps it anyway.
std::optional<int64_t> scaled_ms(std::string_view num, int64_t unit_ns) {
  auto dot = num.find('.');
  auto whole = num.substr(0, dot);
  auto frac = dot == std::string_view::npos ? std::string_view() : num.substr(dot + 1);
  if (whole.empty() && frac.empty()) return std::nullopt;  // "" or "."
  int64_t whole_v = 0;
  if (!whole.empty()) {
    auto v = parse_uint(whole);
    if (!v) return std::nullopt;
    whole_v = *v;
  }
  // Digits past nanoseconds cannot change the rounded result; ignoring them keeps the
  // arithmetic below inside int64.
  int64_t frac_v = 0, scale = 1;
  for (size_t i = 0; i < frac.size(); ++i) {
    if (frac[i] < '0' || frac[i] > '9') return std::nullopt;  // also a second '.'
    if (i < 9) {
      frac_v = frac_v * 10 + (frac[i] - '0');
      scale *= 10;
    }
  }
  constexpr int64_t kSaturated = std::numeric_limits<int64_t>::max() / 1'000'000;
  int64_t ns = 0;
  if (__builtin_mul_overflow(whole_v, unit_ns, &ns)) return kSaturated;
  // frac_v / scale of a unit, split so neither product overflows: (unit / scale) * frac_v
  // is below unit_ns, and (unit % scale) * frac_v below scale squared (1e18).
  int64_t frac_ns = (unit_ns / scale) * frac_v + (unit_ns % scale) * frac_v / scale;
  if (__builtin_add_overflow(ns, frac_ns, &ns)) return kSaturated;
  return ns / 1'000'000 + (ns % 1'000'000 != 0 ? 1 : 0);
}

std::optional<int64_t> parse_http_date_ms(std::string_view s) {
  std::tm tm{};
  std::string str(s);
  const char* end = strptime(str.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (!end || *end) return std::nullopt;
  return static_cast<int64_t>(timegm(&tm)) * 1000;
}

// "2024-05-01T12:00:30Z", "2024-05-01T12:00:30.250Z", "2024-05-01T14:00:30+02:00".
std::optional<int64_t> parse_rfc3339_ms(std::string_view s) {
  std::tm tm{};
  std::string str(s);
  const char* end = strptime(str.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (!end) return std::nullopt;
  int64_t ms = static_cast<int64_t>(timegm(&tm)) * 1000;
  if (*end == '.') {  // fractional seconds: keep milliseconds
    ++end;
    int64_t frac = 0, scale = 100;
    while (*end >= '0' && *end <= '9') {
      frac += (*end - '0') * scale;
      scale /= 10;
      ++end;
    }
    ms += frac;
  }
  // The zone is required by RFC 3339. An offset was once accepted and ignored, which put
  // every non-UTC time off by its offset.
  if (*end == 'Z' || *end == 'z') {
    if (end[1] != '\0') return std::nullopt;
    return ms;
  }
  if (*end != '+' && *end != '-') return std::nullopt;
  int sign = *end == '+' ? 1 : -1;
  std::string_view off(end + 1);
  if (off.size() != 5 || off[2] != ':') return std::nullopt;
  auto hh = parse_uint(off.substr(0, 2)), mm = parse_uint(off.substr(3, 2));
  if (!hh || !mm || *hh > 23 || *mm > 59) return std::nullopt;
  // Local time minus its offset is UTC.
  return ms - sign * (*hh * 3'600'000 + *mm * 60'000);
}

// Go's unit names; "µs" comes in either of two Unicode spellings.
std::optional<int64_t> unit_ns(std::string_view unit) {
  if (unit == "ns") return 1;
  if (unit == "us" || unit == "\xC2\xB5s" || unit == "\xCE\xBCs") return 1'000;
  if (unit == "ms") return 1'000'000;
  if (unit == "s") return 1'000'000'000;
  if (unit == "m") return 60'000'000'000;
  if (unit == "h") return 3'600'000'000'000;
  return std::nullopt;
}

}  // namespace

std::optional<int64_t> parse_go_duration_ms(std::string_view s) {
  s = trim(s);
  if (s.empty()) return std::nullopt;
  int64_t total = 0;
  size_t i = 0;
  while (i < s.size()) {
    size_t start = i;
    while (i < s.size() && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.')) ++i;
    auto num = s.substr(start, i - start);
    if (num.empty()) return std::nullopt;
    size_t ustart = i;
    while (i < s.size() && !(s[i] >= '0' && s[i] <= '9') && s[i] != '.') ++i;
    auto unit = s.substr(ustart, i - ustart);
    // A bare number is read as seconds; Go would want a unit, but the meaning is plain.
    auto ns = unit.empty() ? std::optional<int64_t>(1'000'000'000) : unit_ns(unit);
    if (!ns) return std::nullopt;
    auto ms = scaled_ms(num, *ns);
    if (!ms) return std::nullopt;
    if (__builtin_add_overflow(total, *ms, &total)) total = std::numeric_limits<int64_t>::max();
  }
  return total;
}

std::optional<int64_t> cooldown_ms(const http::Headers& headers, int64_t now_ms) {
  if (auto ra = http::find_header(headers, http::FieldId::RetryAfter)) {
    if (auto secs = parse_uint(trim(*ra)))  // capped before scaling so it cannot overflow
      return clamp_ms(std::min<int64_t>(*secs, kMaxCooldownMs / 1000) * 1000);
    if (auto at = parse_http_date_ms(trim(*ra))) return clamp_ms(*at - now_ms);
  }
  if (auto ra = http::find_header(headers, "retry-after-ms"))
    if (auto ms = scaled_ms(trim(*ra), 1'000'000)) return clamp_ms(*ms);
  std::optional<int64_t> best;
  auto consider = [&](std::optional<int64_t> v) {
    if (v && (!best || *v > *best)) best = v;
  };
  for (const char* h : {"x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"})
    if (auto v = http::find_header(headers, h)) consider(parse_go_duration_ms(*v));
  for (const char* h : {"anthropic-ratelimit-requests-reset", "anthropic-ratelimit-tokens-reset",
                        "anthropic-ratelimit-input-tokens-reset", "anthropic-ratelimit-output-tokens-reset"})
    if (auto v = http::find_header(headers, h))
      if (auto at = parse_rfc3339_ms(trim(*v))) consider(*at - now_ms);
  if (best) return clamp_ms(*best);
  return best;
}

}  // namespace keypool::proxy
