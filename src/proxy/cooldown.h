#pragma once
// How long an upstream asked us to back off, from its 429 response headers. Pure.
#include <cstdint>
#include <optional>
#include <string_view>

#include "http/headers.h"

namespace keypool::proxy {

// Milliseconds to wait, from (in order): Retry-After (seconds or an HTTP date),
// retry-after-ms, x-ratelimit-reset-requests / x-ratelimit-reset-tokens (OpenAI, Groq:
// "1s", "6m0s", "250ms"), anthropic-ratelimit-*-reset (RFC 3339 time). The longest
// of the request/token resets wins. nullopt when nothing usable is present.
std::optional<int64_t> cooldown_ms(const http::Headers& headers, int64_t now_ms);

// "6m0s", "1.5s", "20ms", "2h" -> milliseconds.
std::optional<int64_t> parse_go_duration_ms(std::string_view s);

}  // namespace keypool::proxy
