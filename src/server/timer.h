#pragma once
// run_after: a one-shot callback on a loop. The timer handle owns itself and is freed in
// its close callback, so the caller keeps nothing; callers capture a weak_ptr when the
// object they call back may be gone by then.
#include <uv.h>

#include <cstdint>
#include <functional>

namespace keypool::server {

void run_after(uv_loop_t* loop, int64_t ms, std::function<void()> fn);

}  // namespace keypool::server
