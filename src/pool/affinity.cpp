#include "pool/affinity.h"

namespace keypool::pool {

std::optional<int64_t> AffinityMap::get(std::string_view session) {
  auto it = index_.find(session);
  if (it == index_.end()) return std::nullopt;
  order_.splice(order_.begin(), order_, it->second);
  return it->second->second;
}

void AffinityMap::put(std::string_view session, int64_t key_id) {
  if (capacity_ == 0) return;
  if (auto it = index_.find(session); it != index_.end()) {
    it->second->second = key_id;
    order_.splice(order_.begin(), order_, it->second);
    return;
  }
  if (index_.size() >= capacity_) {
    index_.erase(order_.back().first);
    order_.pop_back();
  }
  order_.emplace_front(session, key_id);
  index_.emplace(session, order_.begin());
}

}  // namespace keypool::pool
