#pragma once
// The admin client: one blocking HTTP/1.1 request at a time to a running keypool's admin
// API, for the CLI's admin subcommands. Plain http only (the admin API is meant for
// loopback or a private network); no event loop, every wait bounded by a timeout.
// It does not interpret the JSON: callers get the status and the body.
#include <string>
#include <string_view>

#include "base/result.h"
#include "config/base_url.h"

namespace keypool::cli {

// The admin API's address: config's base URL (host, port, path prefix), plain http only.
using BaseUrl = config::UrlParts;
// --url (or KEYPOOL_URL) through config::parse_base_url, plus the CLI's own rule: no https.
// The message names the problem and echoes the URL only when it cannot hold credentials.
Result<BaseUrl> parse_admin_url(std::string_view url);

struct HttpReply {
  int status = 0;
  std::string body;
};

class AdminClient {
 public:
  // The token goes into every request's Authorization header and nowhere else.
  AdminClient(BaseUrl url, std::string token, int connect_timeout_ms = 5000,
              int io_timeout_ms = 30000)
      : url_(std::move(url)),
        token_(std::move(token)),
        connect_timeout_ms_(connect_timeout_ms),
        io_timeout_ms_(io_timeout_ms) {}

  // Sends method path (with a JSON body when body is non-empty) on a fresh connection and
  // reads the whole answer. An error means no HTTP answer came back (unreachable, timeout,
  // malformed response); any status the server sent is a reply.
  Result<HttpReply> call(const std::string& method, const std::string& path,
                         const std::string& body = "");

 private:
  BaseUrl url_;
  std::string token_;
  int connect_timeout_ms_;
  int io_timeout_ms_;  // time without a byte, either way
};

}  // namespace keypool::cli
