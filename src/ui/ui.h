#pragma once
// The ui room: the admin console at /ui/. It serves the console's assets, which the build
// bundles from ui/ and embeds in the binary (ui/embed_assets.py writes the table that
// embedded() returns), and the three endpoints that open, show and end a browser session:
//   POST /ui/login {"token": "<admin token>"} -> Set-Cookie kp_session=..., {"csrf": ...}
//   GET  /ui/session                          -> {"csrf": ...} while the cookie is live
//   POST /ui/logout                           -> the session ends, the cookie is cleared
// Everything else the console does goes through /admin/*, which accepts the session cookie
// with its CSRF token (admin room, session room). This room never sees a key value.
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "http/headers.h"
#include "http/request.h"
#include "router/router.h"
#include "server/handler.h"
#include "state/app.h"

namespace keypool::ui {

// One embedded file. identity and gzip are the same bytes, plain and gzipped at build time;
// etag is a hash of identity (quoted, ready for the header).
struct Asset {
  std::string_view path;  // below /ui/, e.g. "index.html", "app.js"
  std::string_view content_type;
  std::string_view identity;
  std::string_view gzip;
  std::string_view etag;
};

struct AssetTable {
  std::span<const Asset> assets;    // empty when the UI was not built
  std::string_view missing_reason;  // why not, as the build found it
};

// The table the build generated (ui_assets.cpp in the build folder).
const AssetTable& embedded();

// An answer before it is written, so that serving can be tested without a loop.
struct Answer {
  int status = 200;
  http::Headers headers;
  std::string body;
};

// Headers every /ui/ answer carries: a CSP that allows only this origin's script and style
// (no inline script, no eval, no inline style), no framing, no sniffing, no referrer.
http::Headers security_headers();
// GET/HEAD of /ui/<path>: the asset (path "" is index.html), with ETag and, when the client
// accepts it, the gzipped copy; 304 when If-None-Match names the ETag; 404 for an unknown
// path; 503 JSON when the table is empty (a build without npm).
Answer serve_asset(const AssetTable& table, std::string_view path, const http::Headers& request);

std::shared_ptr<server::RequestHandler> make_handler(state::App& app, router::Route route,
                                                     http::RequestHead&& head,
                                                     server::ResponseSink& sink);

}  // namespace keypool::ui
