#include "runtime/stop.h"

#include <algorithm>

#include "core/error.h"
#include "format/hf_config.h"

namespace nibble {

StopChecker::StopChecker(std::vector<int32_t> eos_ids, std::vector<std::string> stop_strings)
    : eos_ids_(std::move(eos_ids)), stops_(std::move(stop_strings)) {
  for (const auto& s : stops_)
    if (s.empty()) fail("a stop string must not be empty");
}

bool StopChecker::is_eos(int32_t id) const {
  return std::find(eos_ids_.begin(), eos_ids_.end(), id) != eos_ids_.end();
}

std::string StopChecker::push(std::string_view text) {
  if (stopped_) return "";
  pending_.append(text);

  // The earliest occurrence of any stop string (the longest one when two start at the same byte).
  size_t best = std::string::npos;
  for (const auto& s : stops_) {
    const size_t at = pending_.find(s);
    if (at == std::string::npos) continue;
    if (best == std::string::npos || at < best || (at == best && s.size() > matched_.size())) {
      best = at;
      matched_ = s;
    }
  }
  if (best != std::string::npos) {
    std::string out = pending_.substr(0, best);
    pending_.clear();
    stopped_ = true;
    emitted_ += out;
    return out;
  }

  // Hold back the longest tail of pending_ that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const auto& s : stops_) {
    const size_t max_len = std::min(pending_.size(), s.size() - 1);
    for (size_t len = max_len; len > hold; --len) {
      if (std::string_view(pending_).substr(pending_.size() - len) == std::string_view(s).substr(0, len)) {
        hold = len;
        break;
      }
    }
  }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  emitted_ += out;
  return out;
}

std::string StopChecker::flush() {
  if (stopped_) return "";
  std::string out = std::move(pending_);
  pending_.clear();
  emitted_ += out;
  return out;
}

std::vector<int32_t> collect_eos_ids(const ModelConfig& config, const GenerationConfig& gen) {
  std::vector<int32_t> ids;
  auto add = [&](int64_t id) {
    if (id < 0 || id >= config.vocab_size) return;  // an id the model cannot produce never stops it
    const auto v = static_cast<int32_t>(id);
    if (std::find(ids.begin(), ids.end(), v) == ids.end()) ids.push_back(v);
  };
  for (int64_t id : gen.eos_token_ids) add(id);
  for (int64_t id : config.eos_token_ids) add(id);
  return ids;
}

}  // namespace nibble
