#include "config/parse_util.h"

#include <yaml-cpp/eventhandler.h>

#include <cstdio>
#include <set>
#include <sstream>

namespace keypool::config {

// Every config error is one line: control bytes from the input (a field name, a value,
// the byte yaml-cpp quotes in its own message) are escaped here, in the one place all
// errors pass through.
Error field_error(std::string_view source, std::string_view field, std::string_view problem) {
  std::string raw;
  raw.append(source).append(": ");
  if (!field.empty()) raw.append(field).append(": ");
  raw.append(problem);
  std::string msg;
  msg.reserve(raw.size());
  for (unsigned char c : raw) {
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      msg += buf;
    } else {
      msg.push_back(static_cast<char>(c));
    }
  }
  return make_error(ErrorCode::Invalid, std::move(msg));
}

std::string quote(std::string_view text) {
  // Long enough for any sane name or URL, short enough to keep the line readable.
  constexpr size_t kMaxShown = 80;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "'";
  for (size_t i = 0; i < text.size() && i < kMaxShown; ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c == '\\' || c == '\'') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  if (text.size() > kMaxShown) out += "...";
  out += "'";
  return out;
}

// Counts documents without building them (yaml-cpp's node builder is not public).
class IgnoreEvents final : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

Result<YAML::Node> load_yaml_document(std::string_view text, const std::string& source) {
  try {
    // Not YAML::LoadAll: on some inputs (a lone ",") yaml-cpp 0.7 yields empty documents
    // forever without consuming input. Two documents are enough to refuse the file.
    std::stringstream in{std::string(text)};
    YAML::Parser parser(in);
    IgnoreEvents ignore;
    int docs = 0;
    while (docs < 2 && parser.HandleNextDocument(ignore)) ++docs;
    if (docs == 0) return YAML::Node();
    if (docs > 1) return field_error(source, "", "expected one YAML document, found more");
    return YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    // yaml-cpp's lines are 0-based; editors count from 1.
    std::string where = "line " + std::to_string(e.mark.line + 1);
    return field_error(source, where, "invalid YAML: " + e.msg);
  } catch (const std::exception& e) {
    return field_error(source, "", std::string("invalid YAML: ") + e.what());
  }
}

Result<YamlEntries> yaml_map_entries(const YAML::Node& map, std::string_view source,
                                     std::string_view prefix) {
  YamlEntries out;
  std::set<std::string> seen;
  try {
    for (const auto& kv : map) {
      if (!kv.first.IsScalar()) {
        return field_error(source, prefix.empty() ? "(top level)" : prefix,
                           "keys must be plain names");
      }
      std::string key = kv.first.Scalar();
      if (!seen.insert(key).second) {
        return field_error(source, join_field(prefix, key), "duplicate key");
      }
      out.emplace_back(std::move(key), kv.second);
    }
  } catch (const YAML::Exception& e) {
    return field_error(source, prefix, "invalid YAML: " + e.msg);
  }
  return out;
}

std::string join_field(std::string_view prefix, std::string_view key) {
  if (prefix.empty()) return std::string(key);
  std::string out(prefix);
  out.push_back('.');
  out.append(key);
  return out;
}

std::string join_names(const std::vector<std::string_view>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    if (i) out += ", ";
    out.append(names[i]);
  }
  return out;
}

}  // namespace keypool::config
