#pragma once
// redis: keypool's shared state for running many instances as one pool.
//
// - Client (client.h): an asynchronous RESP2 client on a libuv loop, with pipelining, a
//   deadline per command, reconnects, AUTH/SELECT from a redis:// or rediss:// URL (TLS
//   through the tls room) and EVALSHA with a NOSCRIPT fallback.
// - SharedWindows (shared_windows.h): admission, leases, holds and per-token windows as
//   Lua scripts (scripts.h), each one atomic round trip, timed by Redis TIME only.
// - resp.h and url.h: the pure parts (wire protocol, URL), tested without a server.
//
// What it does not do yet: it is not wired into the proxy or the config; the degraded
// modes (local_share, deny), instance heartbeats and replay after an empty restart are
// for the key-policy room that will use it.
#include "redis/client.h"
#include "redis/resp.h"
#include "redis/shared_windows.h"
#include "redis/url.h"
