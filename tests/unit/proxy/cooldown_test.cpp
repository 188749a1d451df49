#include <doctest/doctest.h>

#include <optional>
#include <string>

#include "proxy/cooldown.h"

namespace {

using keypool::http::Headers;
using keypool::proxy::cooldown_ms;
using keypool::proxy::parse_go_duration_ms;

// 2024-05-01T12:00:00Z, a Wednesday.
constexpr int64_t kNow = 1'714'564'800'000;

}  // namespace

TEST_CASE("cooldown: Retry-After in seconds") {
  CHECK(cooldown_ms({{"Retry-After", "30"}}, kNow) == 30'000);
  CHECK(cooldown_ms({{"retry-after", " 0 "}}, kNow) == 0);
}

TEST_CASE("cooldown: Retry-After as an HTTP date") {
  CHECK(cooldown_ms({{"Retry-After", "Wed, 01 May 2024 12:01:30 GMT"}}, kNow) == 90'000);
  // A date already past means go now, not a negative wait.
  CHECK(cooldown_ms({{"Retry-After", "Wed, 01 May 2024 11:00:00 GMT"}}, kNow) == 0);
}

TEST_CASE("cooldown: retry-after-ms") {
  CHECK(cooldown_ms({{"retry-after-ms", "1500"}}, kNow) == 1500);
  CHECK(cooldown_ms({{"retry-after-ms", "20.25"}}, kNow) == 21);  // rounded up, never early
  // Retry-After comes first when both are present.
  CHECK(cooldown_ms({{"retry-after-ms", "1500"}, {"Retry-After", "2"}}, kNow) == 2000);
}

TEST_CASE("cooldown: OpenAI reset durations, the longest wins") {
  CHECK(cooldown_ms({{"x-ratelimit-reset-requests", "6m0s"}}, kNow) == 360'000);
  CHECK(cooldown_ms({{"x-ratelimit-reset-requests", "1.5s"}}, kNow) == 1500);
  CHECK(cooldown_ms({{"x-ratelimit-reset-tokens", "250ms"}}, kNow) == 250);
  CHECK(cooldown_ms({{"x-ratelimit-reset-requests", "1.5s"}, {"x-ratelimit-reset-tokens", "250ms"}},
                    kNow) == 1500);
  CHECK(cooldown_ms({{"x-ratelimit-reset-requests", "250ms"}, {"x-ratelimit-reset-tokens", "6m0s"}},
                    kNow) == 360'000);
  // A garbage one does not hide a good one.
  CHECK(cooldown_ms({{"x-ratelimit-reset-requests", "soon"}, {"x-ratelimit-reset-tokens", "2s"}},
                    kNow) == 2000);
}

TEST_CASE("cooldown: Anthropic RFC 3339 resets") {
  CHECK(cooldown_ms({{"anthropic-ratelimit-requests-reset", "2024-05-01T12:00:20Z"}}, kNow) == 20'000);
  CHECK(cooldown_ms({{"anthropic-ratelimit-requests-reset", "2024-05-01T12:00:20.250Z"}}, kNow) ==
        20'250);
  CHECK(cooldown_ms({{"anthropic-ratelimit-requests-reset", "2024-05-01T14:00:20+02:00"}}, kNow) ==
        20'000);
  CHECK(cooldown_ms({{"anthropic-ratelimit-requests-reset", "2024-05-01T07:00:20-05:00"}}, kNow) ==
        20'000);
  CHECK(cooldown_ms({{"anthropic-ratelimit-requests-reset", "2024-05-01T12:00:05Z"},
                     {"anthropic-ratelimit-tokens-reset", "2024-05-01T12:00:40Z"}},
                    kNow) == 40'000);
  CHECK(cooldown_ms({{"anthropic-ratelimit-requests-reset", "2024-05-01T11:59:00Z"}}, kNow) == 0);
}

TEST_CASE("cooldown: nothing usable is nullopt") {
  CHECK_FALSE(cooldown_ms({}, kNow));
  CHECK_FALSE(cooldown_ms({{"content-type", "application/json"}}, kNow));
}

TEST_CASE("cooldown: garbage values are nullopt") {
  for (const char* v : {"", "soon", "-5", "1.5.2", "Wed, 01 May 2024", "30s", "0x10"}) {
    CAPTURE(v);
    CHECK_FALSE(cooldown_ms({{"Retry-After", v}}, kNow));
    CHECK_FALSE(cooldown_ms({{"retry-after-ms", v}}, kNow));
  }
  for (const char* v : {"", ".", "..", "s", "5x", "-1s", "1.2.3s", "1e3s", "ms5",
                        "99999999999999999999h"}) {
    CAPTURE(v);
    CHECK_FALSE(cooldown_ms({{"x-ratelimit-reset-requests", v}}, kNow));
  }
  for (const char* v : {"", "tomorrow", "2024-05-01T12:00:20", "2024-05-01T12:00:20Zjunk",
                        "2024-05-01T12:00:20+2", "2024-05-01T12:00:20+25:00"}) {
    CAPTURE(v);
    CHECK_FALSE(cooldown_ms({{"anthropic-ratelimit-requests-reset", v}}, kNow));
  }
}

TEST_CASE("cooldown: absurd waits are capped at a day") {
  constexpr int64_t kDay = 24 * 3'600'000;
  CHECK(cooldown_ms({{"Retry-After", "9223372036854775807"}}, kNow) == kDay);
  CHECK(cooldown_ms({{"retry-after-ms", "9223372036854775807"}}, kNow) == kDay);
  CHECK(cooldown_ms({{"x-ratelimit-reset-requests", "1000h"}}, kNow) == kDay);
  CHECK(cooldown_ms({{"x-ratelimit-reset-requests", "999999999999h"}}, kNow) == kDay);
  CHECK(cooldown_ms({{"x-ratelimit-reset-requests", "9223372036854775807h9223372036854775807h"}},
                    kNow) == kDay);
  CHECK(cooldown_ms({{"anthropic-ratelimit-requests-reset", "2099-01-01T00:00:00Z"}}, kNow) == kDay);
}

TEST_CASE("parse_go_duration_ms") {
  struct Case {
    const char* in;
    std::optional<int64_t> ms;
  };
  for (const Case& c : std::initializer_list<Case>{
           {"6m0s", 360'000},
           {"1.5s", 1500},
           {"1.1s", 1100},  // exact, where doubles would round up to 1101
           {"250ms", 250},
           {"20ms", 20},
           {"2h", 7'200'000},
           {"1h2m3.5s", 3'723'500},
           {".5s", 500},
           {"0s", 0},
           {"3", 3000},  // a bare number is seconds
           {" 1s ", 1000},
           {"1500us", 2},  // rounded up
           {"1500\xC2\xB5s", 2},
           {"1ns", 1},
           {"0.0000000001s", 0},  // below a nanosecond
           {".", std::nullopt},
           {"", std::nullopt},
           {"s", std::nullopt},
           {"1.2.3s", std::nullopt},
           {"1d", std::nullopt},
           {"+1s", std::nullopt},
           {"1 s", std::nullopt},
       }) {
    CAPTURE(c.in);
    CHECK(parse_go_duration_ms(c.in) == c.ms);
  }
}
