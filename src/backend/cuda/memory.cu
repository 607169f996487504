#include <fmt/format.h>

#include <map>

#include "backend/cuda/memory.cuh"

namespace nibble::cuda {

size_t MemoryPlan::add(const std::string& group, const std::string& name, size_t bytes) {
  const size_t offset = total_;
  entries_.push_back({group, name, bytes, offset});
  total_ += padded(bytes);
  return offset;
}

size_t MemoryPlan::group_bytes(const std::string& group) const {
  size_t s = 0;
  for (const auto& e : entries_)
    if (e.group == group) s += e.bytes;
  return s;
}

std::string MemoryPlan::describe(std::optional<size_t> budget) const {
  std::vector<std::string> order;
  std::map<std::string, std::pair<size_t, int>> groups;
  for (const auto& e : entries_) {
    if (!groups.count(e.group)) order.push_back(e.group);
    groups[e.group].first += e.bytes;
    groups[e.group].second += 1;
  }
  std::string out = "GPU memory plan:\n";
  for (const auto& g : order)
    out += fmt::format("  {:<12} {:>10.3f} GB  ({} buffers)\n", g, groups[g].first / 1e9, groups[g].second);
  out += fmt::format("  {:<12} {:>10.3f} GB\n", "total", total_ / 1e9);
  if (budget)
    out += fmt::format("  {:<12} {:>10.3f} GB  ({})\n", "budget", *budget / 1e9,
                       total_ <= *budget ? "fits" : "does NOT fit");
  return out;
}

}  // namespace nibble::cuda
