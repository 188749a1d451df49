// fuzz_admin_json: an admin request body -> nlohmann::json::parse(body, nullptr, false), as
// admin/call.cpp does, -> config::service_from_json (POST /admin/services) and the field
// readers of admin/fields.h with the field names and bounds the endpoints use.
//
// Checks: nothing throws (the admin path has no try/catch around the readers); an accepted
// service satisfies fuzz::check_service, including the JSON round trip and a plain dump();
// the readers' results are consistent with the JSON they read.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "admin/fields.h"
#include "config/services.h"
#include "fuzz_check.h"
#include "service_check.h"

namespace {

using namespace keypool;
using nlohmann::json;

void check_error(const Error& e, const char* field) {
  FUZZ_CHECK(e.code == ErrorCode::BadRequest, "field errors are 400s");
  FUZZ_CHECK(e.message.find(field) != std::string::npos || e.message.find("unknown field") == 0,
             "error names the field");
}

// Every reader on one field, as the key, token and tier endpoints call them.
void read_fields(const json& j, const char* f) {
  if (auto r = admin::req_string(j, f, 128); r) {
    FUZZ_CHECK(!r->empty() && r->size() <= 128 && j.at(f).get<std::string>() == *r, "req_string");
  } else {
    check_error(r.error(), f);
  }
  if (auto r = admin::opt_string(j, f, 64); r) {
    if (r->has_value()) FUZZ_CHECK((*r)->size() <= 64, "opt_string length");
  } else {
    check_error(r.error(), f);
  }
  if (auto r = admin::opt_int(j, f, 0, 100000); r) {
    if (r->has_value()) FUZZ_CHECK(**r >= 0 && **r <= 100000, "opt_int bounds");
  } else {
    check_error(r.error(), f);
  }
  if (auto r = admin::opt_int(j, f, INT64_MIN, INT64_MAX); !r) check_error(r.error(), f);
  if (auto r = admin::opt_number(j, f); r) {
    if (r->has_value()) FUZZ_CHECK(**r >= 0, "opt_number is zero or more");
  } else {
    check_error(r.error(), f);
  }
  if (auto r = admin::opt_bool(j, f); !r) check_error(r.error(), f);
  if (auto r = admin::opt_string_list(j, f); r) {
    if (r->has_value())
      for (const auto& s : **r) FUZZ_CHECK(!s.empty(), "list items non-empty");
  } else {
    check_error(r.error(), f);
  }
  if (auto r = admin::opt_time_ms(j, f); r) {
    if (r->has_value() && **r > 0) {
      std::string iso = admin::iso_time(**r);
      FUZZ_CHECK(!iso.empty(), "a positive time formats");
      // The formatted time reads back as the same instant (to the second).
      json again = {{"t", iso}};
      auto back = admin::opt_time_ms(again, "t");
      FUZZ_CHECK(back && back->has_value() && **back == **r / 1000 * 1000, "iso_time round trip");
    }
  } else {
    check_error(r.error(), f);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view body(reinterpret_cast<const char*>(data), size);
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) return 0;
  try {
    auto svc = config::service_from_json(j, "admin");
    if (svc) {
      FUZZ_CHECK(j.is_object(), "only an object is a service");
      fuzz::check_service(*svc, /*from_json=*/true);
    } else {
      FUZZ_CHECK(svc.error().message.rfind("admin: ", 0) == 0, "error names the source");
    }
    if (!j.is_object()) return 0;  // admin::Call::json_object refuses anything else first
    for (const char* f : {"name", "key", "tier", "service", "expires_at", "max_concurrent", "balance_total",
                          "balance_unit", "enabled", "reason", "services", "rpm", "max_wait_ms"})
      read_fields(j, f);
    if (auto r = admin::only_fields(j, {"name", "key", "tier", "service", "expires_at", "max_concurrent",
                                        "balance_total", "balance_unit"});
        !r) {
      FUZZ_CHECK(r.error().message.rfind("unknown field '", 0) == 0, "only_fields error");
    }
    for (auto it = j.begin(); it != j.end(); ++it) (void)admin::valid_name(it.key());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "exception: %s\n", e.what());
    FUZZ_CHECK(false, "the admin JSON path threw");
  }
  return 0;
}
