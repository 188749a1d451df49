#pragma once
// AffinityMap: session value (X-Keypool-Session) -> the key last leased for it, so a
// conversation keeps hitting the same upstream key while that key has budget. Bounded by
// least-recently-used eviction because session values come from callers. Not thread-safe:
// Pool holds it under its mutex.
#include <cstdint>
#include <list>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace keypool::pool {

class AffinityMap {
 public:
  explicit AffinityMap(size_t capacity = 10'000) : capacity_(capacity) {}

  // The key remembered for session, marking the entry as recently used.
  std::optional<int64_t> get(std::string_view session);
  // Remembers session -> key_id, evicting the least recently used entry when full.
  void put(std::string_view session, int64_t key_id);
  size_t size() const { return index_.size(); }

 private:
  using Entry = std::pair<std::string, int64_t>;
  // Transparent, so a borrowed session value is looked up without copying it.
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  size_t capacity_;
  std::list<Entry> order_;  // most recently used first
  std::unordered_map<std::string, std::list<Entry>::iterator, Hash, std::equal_to<>> index_;  // into order_
};

}  // namespace keypool::pool
