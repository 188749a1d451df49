// The Redis client against a real redis-server (started per test on a free loopback port):
// commands, pipelining, AUTH, ACL users, SELECT, TLS, timeouts on a paused server,
// reconnects after a restart, and the NOSCRIPT fallback. Each test ends by destroying the
// client and checking that the loop closes with no live handle.
#include <doctest/doctest.h>
#include <uv.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "redis/redis.h"
#include "support/redis_server.h"
#include "test_loop.h"

using namespace keypool::redis;
using keypool::ErrorCode;
using keypool::Result;
using keypool::redis_test::TestLoop;
using keypool::testing::RedisServer;
using keypool::testing::RedisServerOptions;

namespace {

using SteadyClock = std::chrono::steady_clock;

std::unique_ptr<Client> make_client(TestLoop& loop, const std::string& url, ClientOptions opts = {}) {
  auto u = parse_url(url);
  REQUIRE(u.ok());
  auto c = Client::create(loop.get(), std::move(u.value()), std::move(opts));
  REQUIRE(c.ok());
  return std::move(c.value());
}

// Runs one command to its callback.
Result<Reply> run(TestLoop& loop, Client& c, std::vector<std::string> args, int timeout_ms = 10000) {
  std::optional<Result<Reply>> out;
  c.command(std::move(args), [&](Result<Reply> r) { out.emplace(std::move(r)); });
  REQUIRE(loop.run_until([&] { return out.has_value(); }, timeout_ms));
  return std::move(*out);
}

// Sends PING until one succeeds (the client may still be connecting, or reconnecting).
bool wait_ready(TestLoop& loop, Client& c, int timeout_ms = 10000) {
  auto until = SteadyClock::now() + std::chrono::milliseconds(timeout_ms);
  while (SteadyClock::now() < until) {
    auto r = run(loop, c, {"PING"});
    if (r.ok() && r->type == ReplyType::Status && r->str == "PONG") return true;
    loop.run_for(20);
  }
  return false;
}

// The first failure of a client that cannot get ready.
keypool::Error first_failure(TestLoop& loop, Client& c) {
  for (int i = 0; i < 200; ++i) {
    auto r = run(loop, c, {"PING"});
    if (!r.ok()) return r.error();
    loop.run_for(5);
  }
  FAIL("the client never failed");
  return {};
}

ClientOptions patient() {
  ClientOptions o;
  o.timeout_ms = 5000;
  return o;
}

}  // namespace

TEST_CASE("redis client: commands, error values and a pipeline answered in order") {
  RedisServer server;
  TestLoop loop;
  {
    auto c = make_client(loop, server.url(), patient());
    REQUIRE(wait_ready(loop, *c));
    CHECK(c->state() == ConnState::Ready);
    auto set = run(loop, *c, {"SET", "greeting", std::string("hi\r\n\0there", 11)});
    REQUIRE(set.ok());
    CHECK(set->str == "OK");
    auto get = run(loop, *c, {"GET", "greeting"});
    REQUIRE(get.ok());
    CHECK(get->type == ReplyType::Bulk);
    CHECK(get->str == std::string("hi\r\n\0there", 11));
    CHECK(run(loop, *c, {"GET", "missing"})->type == ReplyType::Nil);

    // A Redis error is a value; the connection stays usable.
    auto bad = run(loop, *c, {"NOSUCHCOMMAND", "x"});
    REQUIRE(bad.ok());
    CHECK(bad->is_error());
    CHECK(bad->error_is("ERR"));
    auto wrongtype = run(loop, *c, {"LPUSH", "greeting", "x"});
    REQUIRE(wrongtype.ok());
    CHECK(wrongtype->error_is("WRONGTYPE"));

    // 2,000 commands written before any reply is read: each callback gets its own reply.
    std::vector<int64_t> got;
    for (int i = 0; i < 2000; ++i)
      c->command({"INCR", "counter"}, [&](Result<Reply> r) {
        REQUIRE(r.ok());
        got.push_back(r->integer);
      });
    CHECK(got.empty());  // never called back inside command()
    REQUIRE(loop.run_until([&] { return got.size() == 2000; }));
    for (int i = 0; i < 2000; ++i) CHECK(got[static_cast<size_t>(i)] == i + 1);

    auto arr = run(loop, *c, {"MGET", "counter", "missing"});
    REQUIRE(arr.ok());
    REQUIRE(arr->type == ReplyType::Array);
    CHECK(arr->elements[0].str == "2000");
    CHECK(arr->elements[1].type == ReplyType::Nil);
    CHECK(c->connects() == 1);
  }
}

TEST_CASE("redis client: AUTH with a password, with an ACL user, and refused credentials") {
  RedisServerOptions opts;
  opts.password = "server-pass-1";
  opts.acl_users = {"alice on >alice-pass-2 ~* &* +@all"};
  RedisServer server(opts);
  const std::string hostport = "127.0.0.1:" + std::to_string(server.port());
  TestLoop loop;
  {
    auto c = make_client(loop, "redis://:server-pass-1@" + hostport, patient());
    REQUIRE(wait_ready(loop, *c));
    CHECK(run(loop, *c, {"ACL", "WHOAMI"})->str == "default");

    auto alice = make_client(loop, "redis://alice:alice-pass-2@" + hostport, patient());
    REQUIRE(wait_ready(loop, *alice));
    CHECK(run(loop, *alice, {"ACL", "WHOAMI"})->str == "alice");

    // No password: the server answers NOAUTH, as a value.
    auto none = make_client(loop, "redis://" + hostport, patient());
    auto noauth = run(loop, *none, {"GET", "x"});
    REQUIRE(noauth.ok());
    CHECK(noauth->error_is("NOAUTH"));

    // Wrong password: the connection is refused, and the message names AUTH but never a password.
    auto wrong = make_client(loop, "redis://alice:not-the-pass-3@" + hostport, patient());
    auto err = first_failure(loop, *wrong);
    CHECK(err.code == ErrorCode::Unavailable);
    CHECK(err.message.find("AUTH failed") != std::string::npos);
    CHECK(err.message.find("WRONGPASS") != std::string::npos);
    CHECK(err.message.find("not-the-pass-3") == std::string::npos);
    CHECK(wrong->where().find("not-the-pass-3") == std::string::npos);
    CHECK(wrong->connects() == 0);
  }
}

TEST_CASE("redis client: SELECT the URL's db") {
  RedisServer server;
  TestLoop loop;
  {
    auto db3 = make_client(loop, server.url() + "/3", patient());
    REQUIRE(wait_ready(loop, *db3));
    REQUIRE(run(loop, *db3, {"SET", "where", "three"})->str == "OK");
    CHECK(run(loop, *db3, {"CLIENT", "INFO"})->str.find(" db=3 ") != std::string::npos);
    auto db0 = make_client(loop, server.url(), patient());
    CHECK(run(loop, *db0, {"GET", "where"})->type == ReplyType::Nil);
    CHECK(server.call({"GET", "where"}).type == ReplyType::Nil);
    auto again = make_client(loop, server.url() + "/3", patient());
    CHECK(run(loop, *again, {"GET", "where"})->str == "three");
    // A db the server does not have refuses the connection.
    auto bad = make_client(loop, server.url() + "/99", patient());
    auto err = first_failure(loop, *bad);
    CHECK(err.message.find("SELECT failed") != std::string::npos);
  }
}

TEST_CASE("redis client: rediss:// with SNI and certificate verification") {
  RedisServerOptions opts;
  opts.tls = true;
  opts.password = "tls-pass";
  RedisServer server(opts);
  const std::string port = std::to_string(server.tls_port());
  TestLoop loop;
  {
    ClientOptions trust = patient();
    trust.extra_ca_file = server.pki().ca_cert;
    // By name (SNI, DNS name check) and by address (IP check).
    for (const std::string host : {"localhost", "127.0.0.1"}) {
      CAPTURE(host);
      auto c = make_client(loop, "rediss://:tls-pass@" + host + ":" + port + "/2", trust);
      REQUIRE(wait_ready(loop, *c));
      auto info = run(loop, *c, {"CLIENT", "INFO"});
      CHECK(info->str.find(" db=2 ") != std::string::npos);
      std::vector<int64_t> got;
      for (int i = 0; i < 500; ++i) c->command({"INCR", "tls-counter"}, [&](Result<Reply> r) { got.push_back(r->integer); });
      REQUIRE(loop.run_until([&] { return got.size() == 500; }));
      CHECK(got.back() - got.front() == 499);
    }
    // The server speaks TLS only there: a plain client gets no answer it can use.
    // Without the test CA, verification fails and says why.
    auto untrusted = make_client(loop, "rediss://:tls-pass@localhost:" + port, patient());
    auto err = first_failure(loop, *untrusted);
    CHECK(err.message.find("certificate verify failed") != std::string::npos);
  }
  // A certificate for another name is refused.
  RedisServerOptions other_opts;
  other_opts.tls = true;
  other_opts.tls_san = "DNS:other.example";
  RedisServer other(other_opts);
  {
    ClientOptions trust = patient();
    trust.extra_ca_file = other.pki().ca_cert;
    auto c = make_client(loop, "rediss://localhost:" + std::to_string(other.tls_port()), trust);
    auto err = first_failure(loop, *c);
    CHECK(err.message.find("certificate verify failed") != std::string::npos);
    CHECK(c->connects() == 0);
  }
}

TEST_CASE("redis client: a paused server times commands out within timeout_ms, the loop keeps running") {
  RedisServer server;
  TestLoop loop;
  {
    ClientOptions opts;
    opts.timeout_ms = 50;
    opts.stall_ms = 60'000;  // this test wants the same connection back after the pause
    auto c = make_client(loop, server.url(), opts);
    REQUIRE(wait_ready(loop, *c));
    REQUIRE(run(loop, *c, {"SET", "a", "value-a"})->str == "OK");
    REQUIRE(run(loop, *c, {"SET", "b", "value-b"})->str == "OK");

    server.pause();
    // A 1 ms timer measures how long the loop ever went without turning.
    struct Ticker {
      uv_timer_t t;
      SteadyClock::time_point last = SteadyClock::now();
      int64_t max_gap_ms = 0;
    } ticker;
    uv_timer_init(loop.get(), &ticker.t);
    ticker.t.data = &ticker;
    uv_timer_start(&ticker.t, [](uv_timer_t* t) {
      auto* k = static_cast<Ticker*>(t->data);
      auto now = SteadyClock::now();
      k->max_gap_ms = std::max<int64_t>(k->max_gap_ms, std::chrono::duration_cast<std::chrono::milliseconds>(now - k->last).count());
      k->last = now;
    }, 1, 1);

    std::vector<std::pair<int64_t, keypool::ErrorCode>> fired;  // ms after the call, code
    const auto start = SteadyClock::now();
    for (int i = 0; i < 20; ++i)
      c->command({"GET", "a"}, [&, start](Result<Reply> r) {
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - start).count();
        fired.emplace_back(ms, r.ok() ? keypool::ErrorCode::Internal : r.error().code);
      });
    REQUIRE(loop.run_until([&] { return fired.size() == 20; }, 5000));
    for (auto& [ms, code] : fired) {
      CHECK(code == ErrorCode::Timeout);
      CHECK(ms >= 49);
      CHECK(ms < 50 + 250);  // generous: a loaded 2-core machine
    }
    CHECK(ticker.max_gap_ms < 250);
    uv_timer_stop(&ticker.t);
    uv_close(reinterpret_cast<uv_handle_t*>(&ticker.t), nullptr);

    // Back again: the 20 late replies are read and dropped, so the next reply is b's own.
    server.resume();
    auto b = run(loop, *c, {"GET", "b"}, 5000);
    REQUIRE(b.ok());
    CHECK(b->str == "value-b");
    CHECK(c->connects() == 1);
  }
}

TEST_CASE("redis client: a stalled connection is dropped and re-made") {
  RedisServer server;
  TestLoop loop;
  {
    ClientOptions opts;
    opts.timeout_ms = 50;
    opts.stall_ms = 300;
    opts.backoff_min_ms = 20;
    auto c = make_client(loop, server.url(), opts);
    REQUIRE(wait_ready(loop, *c));
    server.pause();
    // Commands keep timing out; once the oldest is 300 ms overdue the connection goes.
    loop.run_until([&] {
      c->command({"PING"}, [](Result<Reply>) {});
      loop.run_for(30);
      return c->state() != ConnState::Ready;
    }, 5000);
    CHECK(c->state() != ConnState::Ready);
    server.resume();
    REQUIRE(wait_ready(loop, *c));
    // At least once more: without AUTH a connection is ready as soon as TCP connects, which
    // a stopped server's kernel still does, so it may have stalled and been re-made again.
    CHECK(c->connects() >= 2);
  }
}

TEST_CASE("redis client: reconnects after the server restarts; fails fast while it is down") {
  RedisServer server;
  TestLoop loop;
  {
    ClientOptions opts = patient();
    opts.backoff_min_ms = 20;
    opts.backoff_max_ms = 200;
    auto c = make_client(loop, server.url(), opts);
    REQUIRE(wait_ready(loop, *c));
    REQUIRE(run(loop, *c, {"SET", "k", "before"})->str == "OK");
    server.stop();
    auto down = run(loop, *c, {"GET", "k"});
    REQUIRE_FALSE(down.ok());
    CHECK(down.error().code == ErrorCode::Unavailable);
    // While down, a command fails at once rather than waiting out its 5 s timeout.
    loop.run_for(50);
    auto t0 = SteadyClock::now();
    auto again = run(loop, *c, {"GET", "k"});
    CHECK_FALSE(again.ok());
    CHECK(std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t0).count() < 1000);

    server.restart();  // same port, empty
    REQUIRE(wait_ready(loop, *c));
    CHECK(c->connects() == 2);
    CHECK(run(loop, *c, {"GET", "k"})->type == ReplyType::Nil);
  }
}

TEST_CASE("redis client: a closed port, and commands pending when the client goes") {
  TestLoop loop;
  uint16_t dead_port;
  {
    RedisServer s;
    dead_port = s.port();
  }
  {
    auto c = make_client(loop, "redis://127.0.0.1:" + std::to_string(dead_port), patient());
    auto err = first_failure(loop, *c);
    CHECK(err.code == ErrorCode::Unavailable);
    CHECK(err.message.find("cannot connect") != std::string::npos);
  }
  RedisServer server;
  int answered = 0;
  {
    auto c = make_client(loop, server.url(), patient());
    REQUIRE(wait_ready(loop, *c));
    server.pause();
    for (int i = 0; i < 5; ++i)
      c->command({"PING"}, [&](Result<Reply> r) {
        CHECK_FALSE(r.ok());
        CHECK(r.error().code == ErrorCode::Unavailable);
        ++answered;
      });
    loop.run_for(20);
  }  // destroyed with five commands in flight
  CHECK(answered == 5);
  server.resume();
}

TEST_CASE("redis client: EVALSHA loads the script again after SCRIPT FLUSH") {
  RedisServer server;
  TestLoop loop;
  {
    auto c = make_client(loop, server.url(), patient());
    REQUIRE(wait_ready(loop, *c));
    Script script("return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}");
    auto eval = [&] {
      std::optional<Result<Reply>> out;
      c->eval(script, {"evals"}, {"arg"}, [&](Result<Reply> r) { out.emplace(std::move(r)); });
      REQUIRE(loop.run_until([&] { return out.has_value(); }));
      return std::move(*out);
    };
    CHECK(server.call({"SCRIPT", "EXISTS", script.sha1}).elements.at(0).integer == 0);
    auto first = eval();
    REQUIRE(first.ok());
    REQUIRE(first->type == ReplyType::Array);
    CHECK(first->elements[0].str == "evals");
    CHECK(first->elements[1].str == "arg");
    CHECK(first->elements[2].integer == 1);
    CHECK(server.call({"SCRIPT", "EXISTS", script.sha1}).elements.at(0).integer == 1);

    REQUIRE(server.call({"SCRIPT", "FLUSH"}).str == "OK");
    auto second = eval();
    REQUIRE(second.ok());
    CHECK(second->elements[2].integer == 2);  // ran exactly once more
    CHECK(server.call({"SCRIPT", "EXISTS", script.sha1}).elements.at(0).integer == 1);

    // A script Redis cannot compile comes back as an error value, after one load attempt.
    Script broken("this is not lua");
    std::optional<Result<Reply>> out;
    c->eval(broken, {}, {}, [&](Result<Reply> r) { out.emplace(std::move(r)); });
    REQUIRE(loop.run_until([&] { return out.has_value(); }));
    REQUIRE(out->ok());
    CHECK(out->value().error_is("NOSCRIPT"));
  }
}

TEST_CASE("redis client: destroyed while looking up, connecting or handshaking, the loop still closes clean") {
  RedisServerOptions opts;
  opts.tls = true;
  RedisServer server(opts);
  TestLoop loop;
  ClientOptions trust = patient();
  trust.extra_ca_file = server.pki().ca_cert;
  const std::string tls = "rediss://localhost:" + std::to_string(server.tls_port());
  const std::string plain = "redis://127.0.0.1:" + std::to_string(server.port());
  // Destroyed at once (a lookup on the thread pool in flight), and after a few loop turns
  // (connect, handshake or AUTH under way): each time, pending commands are answered.
  for (int turns = 0; turns < 12; ++turns) {
    for (const std::string& url : {tls, plain, std::string("redis://localhost:") + std::to_string(server.port())}) {
      CAPTURE(url);
      CAPTURE(turns);
      int answered = 0;
      {
        auto c = make_client(loop, url, trust);
        c->command({"PING"}, [&](Result<Reply>) { ++answered; });
        for (int i = 0; i < turns; ++i) uv_run(loop.get(), UV_RUN_NOWAIT);
      }
      CHECK(answered == 1);
    }
  }
}
