#include <string>

#include "base/strings.h"
#include "server/status.h"
#include "ui/ui.h"

namespace keypool::ui {
namespace {

// connect-src 'self': the console talks only to this keypool. img-src data: lets the SVG
// charts and icons be data URLs; nothing else is loaded from anywhere.
constexpr std::string_view kCsp =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src "
    "'self'; "
    "font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors "
    "'none'";

// True when Accept-Encoding lists gzip without q=0.
bool accepts_gzip(const http::Headers& request) {
  auto ae = http::find_header(request, "accept-encoding");
  if (!ae) return false;
  for (auto item : split(*ae, ',')) {
    auto parts = split(item, ';');
    if (parts.empty() || !iequals(trim(parts[0]), "gzip")) continue;
    for (size_t i = 1; i < parts.size(); ++i) {
      auto p = trim(parts[i]);
      if (p.size() >= 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=') {
        auto q = p.substr(2);
        if (q.find_first_not_of("0.") == std::string_view::npos) return false;  // q=0, q=0.0
      }
    }
    return true;
  }
  return false;
}

// If-None-Match: a list of entity tags or "*"; W/ weak tags compare by their opaque part.
bool etag_matches(const http::Headers& request, std::string_view etag) {
  auto inm = http::find_header(request, "if-none-match");
  if (!inm) return false;
  for (auto tag : split(*inm, ',')) {
    tag = trim(tag);
    if (tag == "*") return true;
    if (tag.size() > 2 && tag.substr(0, 2) == "W/") tag.remove_prefix(2);
    if (tag == etag) return true;
  }
  return false;
}

// The gzipped copy is another representation, so it gets its own strong tag.
std::string gzip_etag(std::string_view etag) {
  if (etag.size() < 2) return std::string(etag);
  return std::string(etag.substr(0, etag.size() - 1)) + "-gz\"";
}

Answer json_error(int status, std::string_view code, std::string_view message) {
  Answer a{status, security_headers(), server::error_body(code, message)};
  a.headers.push_back({"Content-Type", "application/json"});
  a.headers.push_back({"Cache-Control", "no-store"});
  return a;
}

}  // namespace

http::Headers security_headers() {
  return {{"Content-Security-Policy", std::string(kCsp)},
          {"X-Content-Type-Options", "nosniff"},
          {"Referrer-Policy", "no-referrer"},
          {"X-Frame-Options", "DENY"},
          {"Cross-Origin-Opener-Policy", "same-origin"}};
}

Answer serve_asset(const AssetTable& table, std::string_view path, const http::Headers& request) {
  if (table.assets.empty())
    return json_error(503, "ui_not_built",
                      "the admin console was not built into this keypool binary (" +
                          std::string(table.missing_reason) +
                          "); install Node.js and npm and rebuild, or use the /admin API");
  if (path.empty()) path = "index.html";
  const Asset* found = nullptr;
  for (const Asset& a : table.assets)
    if (a.path == path) found = &a;
  if (!found) return json_error(404, "not_found", "no such file in the admin console");

  const bool gzip = !found->gzip.empty() && accepts_gzip(request);
  Answer a{200, security_headers(), {}};
  a.headers.push_back({"ETag", gzip ? gzip_etag(found->etag) : std::string(found->etag)});
  // no-cache: the names are not content-hashed, so every use revalidates (a 304 is cheap).
  a.headers.push_back({"Cache-Control", "no-cache"});
  a.headers.push_back({"Vary", "Accept-Encoding"});
  if (etag_matches(request, found->etag) || etag_matches(request, gzip_etag(found->etag))) {
    a.status = 304;
    return a;
  }
  a.headers.push_back({"Content-Type", std::string(found->content_type)});
  if (gzip) a.headers.push_back({"Content-Encoding", "gzip"});
  a.body.assign(gzip ? found->gzip : found->identity);
  return a;
}

}  // namespace keypool::ui
