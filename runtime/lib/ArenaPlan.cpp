//===- ArenaPlan.cpp - Placing buffers of known lifetimes in one arena ----===//
#include "ArenaPlan.h"

#include <algorithm>
#include <numeric>

namespace qn::rt {

std::vector<size_t> planArena(const std::vector<BufferLife> &buffers, size_t &arenaBytes) {
  size_t n = buffers.size();
  std::vector<size_t> offsets(n, 0), order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return buffers[a].size > buffers[b].size; });
  arenaBytes = 0;
  std::vector<size_t> placed;
  std::vector<std::pair<size_t, size_t>> busy; // [begin, end) of live-at-once buffers
  for (size_t k : order) {
    const BufferLife &me = buffers[k];
    busy.clear();
    for (size_t j : placed)
      if (me.born < buffers[j].died && buffers[j].born < me.died)
        busy.push_back({offsets[j], offsets[j] + buffers[j].size});
    std::sort(busy.begin(), busy.end());
    size_t off = 0;
    for (auto [b, e] : busy) {
      if (off + me.size <= b)
        break;
      off = std::max(off, e);
    }
    offsets[k] = off;
    arenaBytes = std::max(arenaBytes, off + me.size);
    placed.push_back(k);
  }
  return offsets;
}

} // namespace qn::rt
