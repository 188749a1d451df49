#pragma once
// The admin subcommands: `keypool tiers|keys|tokens|services ...`. Each one checks its
// arguments, makes one call to a running keypool's admin API (cli/admin_client.h) and
// prints the answer as an aligned table, or the raw JSON with --json. They never open the
// database or the config: the server stays the only writer.
//
// Secrets: the admin token comes from ADMIN_TOKEN and a key value from --value-file or
// stdin, never from an argument (arguments show in `ps` and in shell history), and neither
// is ever printed.
#include <string>

#include "cli/cli.h"

namespace keypool::cli {

// The lines `keypool help` shows for the admin subcommands.
extern const char* const kAdminUsage;

bool is_admin_command(const std::string& command);
// Exit codes as in cli.h: kOk, kUsage for bad arguments or a missing ADMIN_TOKEN,
// kServerError when the server says no or cannot be reached.
int run_admin(const Options& o);

}  // namespace keypool::cli
