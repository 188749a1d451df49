#pragma once
// Shared by the harnesses: an invariant check that survives NDEBUG (RelWithDebInfo
// defines it, so assert() would vanish) and prints what broke before aborting, so
// libFuzzer records the input and the stack.
#include <cstdio>
#include <cstdlib>
#include <string_view>

#define FUZZ_CHECK(cond, what)                                                          \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::fprintf(stderr, "FUZZ_CHECK failed at %s:%d: %s (%s)\n", __FILE__, __LINE__, \
                   #cond, what);                                                        \
      std::abort();                                                                     \
    }                                                                                   \
  } while (0)

namespace fuzz {

inline size_t count_of(std::string_view hay, std::string_view needle) {
  if (needle.empty()) return 0;
  size_t n = 0;
  for (size_t pos = hay.find(needle); pos != std::string_view::npos;
       pos = hay.find(needle, pos + 1))
    ++n;
  return n;
}

}  // namespace fuzz
