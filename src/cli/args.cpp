#include "cli/args.h"

namespace keypool::cli {

std::optional<std::string> ParsedArgs::get(const std::string& flag) const {
  auto it = values.find(flag);
  if (it == values.end() || it->second.empty()) return std::nullopt;
  return it->second.back();
}

const std::vector<std::string>& ParsedArgs::all(const std::string& flag) const {
  static const std::vector<std::string> kNone;
  auto it = values.find(flag);
  return it == values.end() ? kNone : it->second;
}

Result<ParsedArgs> parse_args(const std::vector<std::string>& args,
                              std::initializer_list<FlagSpec> flags) {
  ParsedArgs out;
  bool flags_done = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (flags_done || a.size() < 2 || a[0] != '-') {
      out.positional.push_back(a);
      continue;
    }
    if (a == "--") {
      flags_done = true;
      continue;
    }
    std::string name = a;
    std::optional<std::string> value;
    if (size_t eq = a.find('='); eq != std::string::npos && a.rfind("--", 0) == 0) {
      name = a.substr(0, eq);
      value = a.substr(eq + 1);
    }
    const FlagSpec* spec = nullptr;
    for (const auto& f : flags)
      if (name == f.name) spec = &f;
    if (!spec) return make_error(ErrorCode::BadRequest, "unknown flag '" + name + "'");
    if (!spec->takes_value) {
      if (value) return make_error(ErrorCode::BadRequest, name + " takes no value");
      value = "";
    } else if (!value) {
      if (i + 1 >= args.size()) return make_error(ErrorCode::BadRequest, name + " needs a value");
      value = args[++i];
    }
    auto& slot = out.values[name];
    if (!slot.empty() && !spec->repeatable)
      return make_error(ErrorCode::BadRequest, name + " given twice");
    slot.push_back(*value);
  }
  return out;
}

}  // namespace keypool::cli
