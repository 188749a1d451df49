#pragma once
// Helpers shared by config.cpp and services.cpp: the one error-line format, message-safe
// quoting of user text, and YAML walking that refuses what yaml-cpp lets through silently
// (duplicate keys, several documents). Private to the config room: nothing outside
// src/config should include yaml-cpp.
#include <yaml-cpp/yaml.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/result.h"

namespace keypool::config {

// "<source>: <field>: <problem>", the only shape a config error takes.
Error field_error(std::string_view source, std::string_view field, std::string_view problem);

// 'text' for an error message: control characters escaped and long text cut, so a hostile
// or binary value cannot break the one-line promise or flood a log. Never pass a secret.
std::string quote(std::string_view text);

// Parses exactly one YAML document. Syntax errors carry yaml-cpp's line number. An empty
// text yields a Null node. yaml-cpp throws; nothing escapes from here.
Result<YAML::Node> load_yaml_document(std::string_view text, const std::string& source);

// The entries of a mapping in file order. `prefix` is the dotted path of the mapping
// ("" at the top) so errors name the full field. Duplicate keys are refused because
// yaml-cpp would keep one of them without a word.
using YamlEntries = std::vector<std::pair<std::string, YAML::Node>>;
Result<YamlEntries> yaml_map_entries(const YAML::Node& map, std::string_view source,
                                     std::string_view prefix);

// "a.b" or "b" when the prefix is empty.
std::string join_field(std::string_view prefix, std::string_view key);

// "a, b, c": for "expected ..." lists.
std::string join_names(const std::vector<std::string_view>& names);

}  // namespace keypool::config
