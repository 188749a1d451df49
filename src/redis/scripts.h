#pragma once
// The Lua scripts that keep keypool's shared state in Redis. Each runs atomically on the
// server in one round trip and reads no clock but Redis TIME. Their contracts (KEYS, ARGV,
// replies) are written above each script in scripts.cpp; SharedWindows is their only caller.
#include "redis/client.h"

namespace keypool::redis::scripts {

const Script& admit();         // pick a key, check it, record the grant
const Script& release();       // end a lease; optionally return its window grant
const Script& set_hold();      // cooling / suspended / disabled, with a TTL; never shortens
const Script& token_window();  // per-token rpm: the same exact window, one per token

}  // namespace keypool::redis::scripts
