#include "redis/scripts.h"

#include <string>

namespace keypool::redis::scripts {
namespace {

// The exact sliding window, as ratelimit::SlidingLog keeps it on one node: a list of runs
// "ms:count", oldest first (grants in the same millisecond share one run), and the total in
// a second key. A grant at t counts in every span (now - window, now] that holds t, so it
// leaves at exactly t + window. Memory is bounded by the distinct milliseconds in one
// window whatever the rpm; both keys expire when the newest grant leaves.
constexpr const char* kWindowLib = R"lua(
local function run_parse(s)
  local sep = string.find(s, ':', 1, true)
  return tonumber(string.sub(s, 1, sep - 1)), tonumber(string.sub(s, sep + 1))
end

local function redis_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Drops the runs that left the window, and their grants from the total; returns the grants
-- still in the window.
local function trim(wkey, nkey, now, window)
  local total = tonumber(redis.call('GET', nkey) or '0')
  local left = 0
  while total - left > 0 do
    local head = redis.call('LINDEX', wkey, 0)
    if not head then
      left = total
      break
    end
    local t, c = run_parse(head)
    if t + window > now then break end
    redis.call('LPOP', wkey)
    left = left + c
  end
  if total - left <= 0 then
    redis.call('DEL', wkey, nkey)
    return 0
  end
  if left > 0 then redis.call('DECRBY', nkey, left) end
  return total - left
end

-- ms until a grant fits: the oldest (total - limit + 1) grants must leave first. Usually
-- total == limit and that is the oldest run; after a lowered limit it may lie further in.
local function wait_for(wkey, total, limit, now, window)
  local need = total - limit
  local seen, from = 0, 0
  while true do
    local chunk = redis.call('LRANGE', wkey, from, from + 63)
    if #chunk == 0 then return 1 end
    for _, s in ipairs(chunk) do
      local t, c = run_parse(s)
      seen = seen + c
      if seen > need then return math.max(1, t + window - now) end
    end
    from = from + 64
  end
end

-- Records one grant at now; if the clock went back (a failover), at the newest run's time,
-- which errs on the strict side. Returns the time recorded.
local function record(wkey, nkey, now, window)
  local at = now
  local last = redis.call('LINDEX', wkey, -1)
  if last then
    local t, c = run_parse(last)
    if t >= now then
      at = t
      redis.call('LSET', wkey, -1, string.format('%d:%d', t, c + 1))
    else
      redis.call('RPUSH', wkey, string.format('%d:1', now))
    end
  else
    redis.call('RPUSH', wkey, string.format('%d:1', now))
  end
  redis.call('INCR', nkey)
  local ttl = at + window - now
  redis.call('PEXPIRE', wkey, ttl)
  redis.call('PEXPIRE', nkey, ttl)
  return at
end
)lua";

// Admission. KEYS[1]: the group's round-robin cursor; then per candidate i (0-based):
// KEYS[2+4i] window runs, KEYS[3+4i] window total, KEYS[4+4i] leases (a sorted set of lease
// ids scored by expiry ms), KEYS[5+4i] hold (cooling/suspended/disabled, with a TTL).
// ARGV: lease id, lease ttl ms, window ms, cursor ttl ms, then per candidate rpm and
// max_concurrent (0 = unlimited).
// Reply: {1, candidate (1-based), granted at ms, now ms} or {0, wait ms, now ms}, wait -1 when no
// candidate can become usable by waiting (rpm 0, or a hold without TTL).
// A candidate's wait is the longest of its blockers: hold TTL, earliest lease expiry (an
// upper bound: a release may come sooner) and the window's exact wait.
constexpr const char* kAdmitBody = R"lua(
local now = redis_now()
local lease_id = ARGV[1]
local lease_ttl = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local cursor_ttl = tonumber(ARGV[4])
local n = (#KEYS - 1) / 4
if n < 1 then return {0, -1, now} end
local start = tonumber(redis.call('GET', KEYS[1]) or '0') % n
local best = -1
for j = 0, n - 1 do
  local i = (start + j) % n
  local k = 2 + 4 * i
  local wkey, nkey, lkey, hkey = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local rpm = tonumber(ARGV[5 + 2 * i])
  local maxc = tonumber(ARGV[6 + 2 * i])
  local wait = 0
  if rpm <= 0 then wait = -1 end
  if wait >= 0 then
    local held = redis.call('PTTL', hkey)
    if held == -1 then wait = -1 elseif held > 0 then wait = held end
  end
  if wait >= 0 and maxc > 0 then
    redis.call('ZREMRANGEBYSCORE', lkey, '-inf', now)
    if redis.call('ZCARD', lkey) >= maxc then
      local first = redis.call('ZRANGE', lkey, 0, 0, 'WITHSCORES')
      wait = math.max(wait, 1, tonumber(first[2]) - now)
    end
  end
  if wait >= 0 then
    local total = trim(wkey, nkey, now, window)
    if total >= rpm then wait = math.max(wait, wait_for(wkey, total, rpm, now, window)) end
  end
  if wait == 0 then
    local at = record(wkey, nkey, now, window)
    if maxc > 0 then
      redis.call('ZADD', lkey, now + lease_ttl, lease_id)
      if redis.call('PTTL', lkey) < lease_ttl then redis.call('PEXPIRE', lkey, lease_ttl) end
    end
    redis.call('SET', KEYS[1], i + 1, 'PX', cursor_ttl)
    return {1, i + 1, at, now}
  end
  if wait > 0 and (best < 0 or wait < best) then best = wait end
end
return {0, best, now}
)lua";

// End of a lease. KEYS: leases, window runs, window total. ARGV: lease id, and the grant's
// time to give back (0: keep it; a used key's grant stays counted). Only a run at exactly
// that time among the newest 256 is refunded, so a refund never costs a long walk.
// Reply: {leases removed, grants refunded}.
constexpr const char* kReleaseBody = R"lua(
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
local at = tonumber(ARGV[2])
local refunded = 0
if at > 0 then
  local len = redis.call('LLEN', KEYS[2])
  local idx = -1
  while idx >= -len and idx >= -256 do
    local t, c = run_parse(redis.call('LINDEX', KEYS[2], idx))
    if t == at then
      if c > 1 then
        redis.call('LSET', KEYS[2], idx, string.format('%d:%d', t, c - 1))
      else
        redis.call('LSET', KEYS[2], idx, '-')
        redis.call('LREM', KEYS[2], -1, '-')
      end
      if redis.call('DECR', KEYS[3]) <= 0 then redis.call('DEL', KEYS[2], KEYS[3]) end
      refunded = 1
      break
    end
    if t < at then break end
    idx = idx - 1
  end
end
return {removed, refunded}
)lua";

// A hold on a key (cooling, suspended, disabled) for ARGV[2] ms, kind in ARGV[1]. A shorter
// hold never replaces a longer one (two instances may report the same key); 0 ms or less
// lifts the hold. Reply: 1 when set or lifted, 0 when a longer hold stays.
constexpr const char* kSetHoldBody = R"lua(
local ms = tonumber(ARGV[2])
if ms <= 0 then
  redis.call('DEL', KEYS[1])
  return 1
end
local cur = redis.call('PTTL', KEYS[1])
if cur == -1 or cur >= ms then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ms)
return 1
)lua";

// Per-token rpm. KEYS: window runs, window total. ARGV: rpm, window ms.
// Reply: {1, granted at ms} or {0, wait ms}.
constexpr const char* kTokenWindowBody = R"lua(
local now = redis_now()
local rpm = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
if rpm <= 0 then return {0, -1} end
local total = trim(KEYS[1], KEYS[2], now, window)
if total >= rpm then return {0, wait_for(KEYS[1], total, rpm, now, window)} end
return {1, record(KEYS[1], KEYS[2], now, window)}
)lua";

}  // namespace

const Script& admit() {
  static const Script s(std::string(kWindowLib) + kAdmitBody);
  return s;
}
const Script& release() {
  static const Script s(std::string(kWindowLib) + kReleaseBody);
  return s;
}
const Script& set_hold() {
  static const Script s(kSetHoldBody);
  return s;
}
const Script& token_window() {
  static const Script s(std::string(kWindowLib) + kTokenWindowBody);
  return s;
}

}  // namespace keypool::redis::scripts
