#pragma once
// Status lines and the one JSON error shape every refusal uses:
//   {"error":{"code":"rate_limited","message":"...","retry_after":12}}
#include <string>
#include <string_view>

#include "base/result.h"

namespace keypool::server {

std::string_view reason_phrase(int status);
std::string error_body(std::string_view code, std::string_view message, long long retry_after_s = 0);
// The single place where an ErrorCode becomes an HTTP status and an error code string.
int status_for(ErrorCode code);
std::string_view code_name(ErrorCode code);

}  // namespace keypool::server
