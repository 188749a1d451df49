#include "telemetry/log.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>

namespace keypool::log {
namespace {

std::atomic<int> g_level{static_cast<int>(Level::Info)};
std::atomic<int> g_format{static_cast<int>(Format::Json)};

const char* level_name(Level l) {
  switch (l) {
    case Level::Debug: return "debug";
    case Level::Info: return "info";
    case Level::Warn: return "warn";
    case Level::Error: return "error";
  }
  return "info";
}

void append_json_string(std::string& out, std::string_view s) {
  out.push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  out.push_back('"');
}

void append_value(std::string& out, const Field& f, bool json) {
  if (auto* s = std::get_if<std::string>(&f.value)) {
    if (json) append_json_string(out, *s);
    else if (s->find(' ') != std::string::npos) append_json_string(out, *s);
    else out += *s;
  } else if (auto* i = std::get_if<int64_t>(&f.value)) {
    out += std::to_string(*i);
  } else {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3f", std::get<double>(f.value));
    out += buf;
  }
}

std::string timestamp() {
  using namespace std::chrono;
  auto now = system_clock::now();
  auto ms = duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
  std::time_t t = system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[80];  // room for any int in each field, so the compiler can prove no truncation
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

}  // namespace

void configure(Level level, Format format) {
  g_level = static_cast<int>(level);
  g_format = static_cast<int>(format);
}

bool parse_level(std::string_view s, Level* out) {
  if (s == "debug") *out = Level::Debug;
  else if (s == "info") *out = Level::Info;
  else if (s == "warn") *out = Level::Warn;
  else if (s == "error") *out = Level::Error;
  else return false;
  return true;
}

bool parse_format(std::string_view s, Format* out) {
  if (s == "json") *out = Format::Json;
  else if (s == "pretty") *out = Format::Pretty;
  else return false;
  return true;
}

bool enabled(Level level) { return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed); }

void write(Level level, std::string_view msg, std::initializer_list<Field> fields) {
  if (!enabled(level)) return;
  bool json = g_format.load(std::memory_order_relaxed) == static_cast<int>(Format::Json);
  std::string line;
  line.reserve(128);
  if (json) {
    line += "{\"ts\":\"" + timestamp() + "\",\"level\":\"" + level_name(level) + "\",\"msg\":";
    append_json_string(line, msg);
    for (const auto& f : fields) {
      line.push_back(',');
      append_json_string(line, f.key);
      line.push_back(':');
      append_value(line, f, true);
    }
    line += "}\n";
  } else {
    line += timestamp() + " " + level_name(level) + " " + std::string(msg);
    for (const auto& f : fields) {
      line.push_back(' ');
      line += f.key;
      line.push_back('=');
      append_value(line, f, false);
    }
    line.push_back('\n');
  }
  // One write(2) per line keeps lines whole when several threads log at once.
  ssize_t ignored = ::write(STDOUT_FILENO, line.data(), line.size());
  (void)ignored;
}

}  // namespace keypool::log
