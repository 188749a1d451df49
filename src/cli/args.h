#pragma once
// Flags and positionals of one admin subcommand, checked against what it accepts:
// "--flag value", "--flag=value", repeatable flags, and "--" ending the flags. Anything
// else that starts with '-' is an unknown flag (a usage error, exit 2).
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"

namespace keypool::cli {

struct FlagSpec {
  const char* name;         // "--tier"
  bool repeatable = false;  // "--feature a=1 --feature b=2"
  bool takes_value = true;  // false: a switch ("--validate"), present or not
};

struct ParsedArgs {
  std::vector<std::string> positional;
  std::map<std::string, std::vector<std::string>> values;  // flag -> values in order

  bool has(const std::string& flag) const { return values.count(flag) > 0; }
  // The flag's value; nullopt when it was not given.
  std::optional<std::string> get(const std::string& flag) const;
  const std::vector<std::string>& all(const std::string& flag) const;
};

// Every flag but a switch takes a value. A flag given twice that is not repeatable is an error, so a
// typo cannot silently replace an earlier value.
Result<ParsedArgs> parse_args(const std::vector<std::string>& args,
                              std::initializer_list<FlagSpec> flags);

}  // namespace keypool::cli
