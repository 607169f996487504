// defines: FakeEngine, an Engine whose logits are a deterministic function of the whole KV cache
// content, recording every forward call. A session that loses, duplicates or reorders a cached
// token changes every later logit, so replay-vs-incremental parity tests are meaningful with it.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/error.h"
#include "runtime/engine.h"

namespace nibble::test {

class FakeEngine final : public Engine {
 public:
  // `words`: the ids it "speaks"; `eos`: ends a reply about one step in `eos_every` (-1: never).
  FakeEngine(int64_t vocab, int64_t context, std::vector<int32_t> words, int32_t eos = -1, int eos_every = 6)
      : words_(std::move(words)), eos_(eos), eos_every_(eos_every), context_(context) {
    config_.vocab_size = vocab;
    config_.architecture = "FakeForCausalLM";
    logits_.assign(static_cast<size_t>(vocab), 0.0f);
  }

  const ModelConfig& config() const override { return config_; }
  int64_t context_length() const override { return context_; }
  int64_t position() const override { return static_cast<int64_t>(kv_.size()); }

  std::span<const float> forward(std::span<const int32_t> tokens) override {
    if (tokens.empty()) fail("fake engine: forward of no tokens");
    if (position() + static_cast<int64_t>(tokens.size()) > context_)
      fail("fake engine: {} + {} tokens overflow the context {}", position(), tokens.size(), context_);
    for (int32_t t : tokens)
      if (t < 0 || t >= config_.vocab_size) fail("fake engine: token {} outside the vocabulary", t);
    kv_.insert(kv_.end(), tokens.begin(), tokens.end());
    forward_sizes.push_back(static_cast<int64_t>(tokens.size()));
    fill_logits();
    return logits_;
  }

  std::vector<float> forward_all(std::span<const int32_t> tokens) override {
    std::vector<float> all;
    for (int32_t t : tokens) {
      auto l = forward(std::span<const int32_t>(&t, 1));
      all.insert(all.end(), l.begin(), l.end());
    }
    return all;
  }

  void truncate(int64_t n) override {
    NIBBLE_ASSERT(n >= 0 && n <= position());
    kv_.resize(static_cast<size_t>(n));
  }

  const std::vector<int32_t>& kv() const { return kv_; }
  std::vector<int64_t> forward_sizes;  // tokens per forward call, in call order

 private:
  void fill_logits() {
    uint64_t h = 1469598103934665603ull;  // FNV-1a over the whole cache
    for (int32_t t : kv_) {
      h ^= static_cast<uint32_t>(t);
      h *= 1099511628211ull;
    }
    std::fill(logits_.begin(), logits_.end(), 0.0f);
    const int32_t first = words_[h % words_.size()];
    const int32_t second = words_[(h >> 20) % words_.size()];
    logits_[second] = 4.0f;
    logits_[first] = 5.0f;  // wins greedy; sampling sometimes takes `second`
    if (eos_ >= 0 && eos_every_ > 0 && (h >> 40) % eos_every_ == 0) logits_[eos_] = 6.0f;
  }

  ModelConfig config_;
  std::vector<int32_t> words_;
  int32_t eos_;
  int eos_every_;
  int64_t context_;
  std::vector<int32_t> kv_;
  std::vector<float> logits_;
};

}  // namespace nibble::test
