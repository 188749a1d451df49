// redis:// and rediss:// URLs: every part, and errors that never quote the password.
#include <doctest/doctest.h>

#include <string>

#include "redis/url.h"

using namespace keypool::redis;

TEST_CASE("redis url: the parts") {
  struct Case {
    const char* url;
    bool tls;
    const char* host;
    uint16_t port;
    const char* user;
    const char* password;
    int64_t db;
    const char* described;
  };
  const Case cases[] = {
      {"redis://localhost", false, "localhost", 6379, "", "", 0, "redis://localhost:6379/0"},
      {"redis://127.0.0.1:7000/3", false, "127.0.0.1", 7000, "", "", 3, "redis://127.0.0.1:7000/3"},
      {"rediss://cache.example:6380/0", true, "cache.example", 6380, "", "", 0, "rediss://cache.example:6380/0"},
      {"redis://:s3cret@h:1/2", false, "h", 1, "", "s3cret", 2, "redis://h:1/2"},
      {"redis://s3cret@h", false, "h", 6379, "", "s3cret", 0, "redis://h:6379/0"},
      {"redis://alice:pw@h:6379/1", false, "h", 6379, "alice", "pw", 1, "redis://alice@h:6379/1"},
      {"redis://al%40ce:p%3Aw%40d@h", false, "h", 6379, "al@ce", "p:w@d", 0, "redis://al@ce@h:6379/0"},
      {"redis://u:p@ss@h:9/", false, "h", 9, "u", "p@ss", 0, "redis://u@h:9/0"},
      {"redis://[::1]:6390/5", false, "::1", 6390, "", "", 5, "redis://[::1]:6390/5"},
      {"rediss://[::1]", true, "::1", 6379, "", "", 0, "rediss://[::1]:6379/0"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.url);
    auto r = parse_url(c.url);
    REQUIRE(r.ok());
    CHECK(r->tls == c.tls);
    CHECK(r->host == c.host);
    CHECK(r->port == c.port);
    CHECK(r->user == c.user);
    CHECK(r->password.view() == c.password);
    CHECK(r->db == c.db);
    CHECK(r->describe() == c.described);
    if (*c.password) CHECK(r->describe().find(c.password) == std::string::npos);
  }
}

TEST_CASE("redis url: errors name the part and never the password") {
  const char* bad[] = {
      "http://h",           "redis:/h",         "redis://",           "redis://:pw@",      "redis://h:0",
      "redis://h:65536",    "redis://h:x",      "redis://h:",         "redis://h/x",       "redis://h/-1",
      "redis://h/1?ssl=1",  "redis://h?a=b",    "redis://[::1",       "redis://[::1]x",    "redis://u:p%zz@h",
      "redis://u:p%4@h",
  };
  for (const char* url : bad) {
    CAPTURE(url);
    auto r = parse_url(url);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == keypool::ErrorCode::Invalid);
    CHECK(r.error().message.rfind("redis url: ", 0) == 0);
  }
  auto r = parse_url("redis://user:hunter2-secret@h:notaport");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message.find("hunter2") == std::string::npos);
  CHECK(r.error().message.find("port") != std::string::npos);
}
