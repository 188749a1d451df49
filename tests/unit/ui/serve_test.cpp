#include <doctest/doctest.h>

#include <string>

#include "ui/ui.h"

using keypool::http::Headers;
namespace ui = keypool::ui;

namespace {

const ui::Asset kAssets[] = {
    {"index.html", "text/html; charset=utf-8", "<!doctype html>", "GZ-INDEX", "\"abc123\""},
    {"app.js", "text/javascript; charset=utf-8", "console.log(1)", "GZ-JS", "\"def456\""},
};
const ui::AssetTable kTable{kAssets, ""};

std::string h(const ui::Answer& a, std::string_view name) {
  return std::string(keypool::http::find_header(a.headers, name).value_or(""));
}

}  // namespace

TEST_CASE("ui: every asset answer carries the CSP and the other security headers") {
  for (const char* path : {"", "app.js", "missing.js"}) {
    auto a = ui::serve_asset(kTable, path, {});
    INFO(path);
    auto csp = h(a, "Content-Security-Policy");
    CHECK(csp.find("default-src 'none'") != std::string::npos);
    CHECK(csp.find("script-src 'self'") != std::string::npos);
    CHECK(csp.find("style-src 'self'") != std::string::npos);
    CHECK(csp.find("frame-ancestors 'none'") != std::string::npos);
    CHECK(csp.find("unsafe-inline") == std::string::npos);
    CHECK(csp.find("unsafe-eval") == std::string::npos);
    CHECK(h(a, "X-Content-Type-Options") == "nosniff");
    CHECK(h(a, "Referrer-Policy") == "no-referrer");
  }
}

TEST_CASE("ui: / is index.html; gzip when accepted, identity otherwise; Vary and ETag set") {
  auto plain = ui::serve_asset(kTable, "", {});
  CHECK(plain.status == 200);
  CHECK(plain.body == "<!doctype html>");
  CHECK(h(plain, "Content-Type") == "text/html; charset=utf-8");
  CHECK(h(plain, "Content-Encoding").empty());
  CHECK(h(plain, "ETag") == "\"abc123\"");
  CHECK(h(plain, "Vary") == "Accept-Encoding");

  auto gz = ui::serve_asset(kTable, "app.js", {{"Accept-Encoding", "br, gzip;q=0.8"}});
  CHECK(gz.body == "GZ-JS");
  CHECK(h(gz, "Content-Encoding") == "gzip");
  CHECK(h(gz, "ETag") == "\"def456-gz\"");  // another representation, another tag

  auto refused = ui::serve_asset(kTable, "app.js", {{"Accept-Encoding", "gzip;q=0"}});
  CHECK(refused.body == "console.log(1)");
  CHECK(h(refused, "Content-Encoding").empty());
}

TEST_CASE("ui: If-None-Match with the ETag answers 304 with no body") {
  for (const char* inm :
       {"\"abc123\"", "W/\"abc123\"", "\"x\", \"abc123\"", "*", "\"abc123-gz\""}) {
    INFO(inm);
    auto a = ui::serve_asset(kTable, "index.html", {{"If-None-Match", inm}});
    CHECK(a.status == 304);
    CHECK(a.body.empty());
    CHECK_FALSE(h(a, "ETag").empty());
    CHECK(h(a, "Content-Security-Policy").size() > 10);
  }
  CHECK(ui::serve_asset(kTable, "index.html", {{"If-None-Match", "\"abc12\""}}).status == 200);
}

TEST_CASE(
    "ui: an unknown file is 404 JSON; an empty table (no npm at build time) is 503 ui_not_built") {
  auto missing = ui::serve_asset(kTable, "nope.js", {});
  CHECK(missing.status == 404);
  CHECK(h(missing, "Content-Type") == "application/json");
  ui::AssetTable empty{{}, "node or npm was not found"};
  auto a = ui::serve_asset(empty, "", {});
  CHECK(a.status == 503);
  CHECK(a.body.find("\"ui_not_built\"") != std::string::npos);
  CHECK(a.body.find("node or npm was not found") != std::string::npos);
}

TEST_CASE(
    "ui: the embedded table, when built, holds index.html, app.js and app.css with gzip copies") {
  const auto& t = ui::embedded();
  if (t.assets.empty()) {
    CHECK_FALSE(t.missing_reason.empty());  // a build without npm says why
    return;
  }
  for (const char* name : {"index.html", "app.js", "app.css"}) {
    INFO(name);
    auto a = ui::serve_asset(t, name, {{"Accept-Encoding", "gzip"}});
    REQUIRE(a.status == 200);
    CHECK(a.body.size() > 2);
    CHECK(static_cast<unsigned char>(a.body[0]) == 0x1f);  // gzip magic
    CHECK(static_cast<unsigned char>(a.body[1]) == 0x8b);
  }
  auto index = ui::serve_asset(t, "", {});
  CHECK(index.body.find("<script defer src=\"app.js\"></script>") != std::string::npos);
  CHECK(index.body.find("<script>") == std::string::npos);  // no inline script for the CSP to block
}
