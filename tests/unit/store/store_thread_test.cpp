#include "store/store_thread.h"

#include <doctest/doctest.h>
#include <stdlib.h>

#include <filesystem>
#include <thread>
#include <vector>

using namespace keypool;
using namespace keypool::store;

namespace {

// Removed even when a REQUIRE fails half-way.
struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/keypool-storethread-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string path;
};

}  // namespace

TEST_CASE("StoreThread runs jobs in order on its own thread, and stop drains the queue") {
  TempDir dir;
  {
    auto key = crypto::MasterKey::generate();
    auto s = Store::open(dir.path + "/k.db", key);
    REQUIRE(s.ok());
    StoreThread st(std::move(s).value());

    std::thread::id store_tid;
    CHECK(st.post_and_wait([&](Store&) { store_tid = std::this_thread::get_id(); }));
    CHECK(store_tid != std::this_thread::get_id());

    // Only the store thread touches `order` until post_and_wait returns.
    std::vector<int> order;
    for (int i = 0; i < 200; ++i) {
      st.post([&order, i](Store& store) {
        order.push_back(i);
        if (i % 50 == 0)
          (void)store.append_audit({AuditRow{0, i, "system", "test", "", "{}"}});
      });
    }
    // A throwing job is logged and skipped; the thread and the waiter carry on.
    CHECK(st.post_and_wait([](Store&) { throw std::runtime_error("boom"); }));
    int64_t audits = 0;
    CHECK(st.post_and_wait([&](Store& store) { audits = store.query_audit(0, "", 0)->size(); }));
    CHECK(audits == 4);
    REQUIRE(order.size() == 200);
    for (int i = 0; i < 200; ++i) CHECK(order[i] == i);

    // Jobs queued before stop() still run.
    int late = 0;
    for (int i = 0; i < 10; ++i) st.post([&late](Store&) { ++late; });
    st.stop();
    CHECK(late == 10);
    st.stop();  // idempotent
    CHECK(!st.post_and_wait([](Store&) {}));
    st.post([&late](Store&) { ++late; });  // dropped
    CHECK(late == 10);
  }
}
