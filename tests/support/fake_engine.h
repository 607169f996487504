// defines: FakeEngine, an Engine whose logits are a deterministic function of the whole KV cache
// content, recording every forward call. A session that loses, duplicates or reorders a cached
// token changes every later logit, so replay-vs-incremental parity tests are meaningful with it.
// With `Device` options it also "samples on the device" (forward_sample: greedy takes the top id,
// otherwise the uniform picks between the top two) and, if asked, decodes pipelined
// (decode_begin / decode_end, the id of each step fed to the next as CUDA does).
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <vector>

#include "core/error.h"
#include "runtime/engine.h"
#include "runtime/sampler.h"

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

  struct Device {
    bool samples = false;   // forward_sample() picks ids
    bool pipeline = false;  // can_pipeline() (without a repetition penalty)
  };
  void set_device(Device d) { device_ = d; }

  bool samples_on_device() const override { return device_.samples; }
  std::optional<int32_t> forward_sample(std::span<const int32_t> tokens, const SamplerParams& params,
                                        std::span<const int32_t> /*seen*/, double uniform) override {
    if (!device_.samples) return std::nullopt;
    forward(tokens);
    return pick(params, uniform);
  }
  bool can_pipeline(const SamplerParams& params) const override {
    return device_.samples && device_.pipeline && params.repetition_penalty == 1.0f;
  }
  void decode_begin(std::optional<int32_t> token, const SamplerParams& params, double uniform) override {
    if (!can_pipeline(params)) fail("fake engine: not pipelined");
    if (drawn_.size() >= 2) fail("fake engine: more than two steps outstanding");
    if (!token && !fed_) fail("fake engine: a fed step without a draw before it");
    const int32_t t = token ? *token : *fed_;
    forward(std::span<const int32_t>(&t, 1));
    fed_ = pick(params, uniform);
    drawn_.push_back(*fed_);
    ++pipelined_steps;
  }
  int32_t decode_end() override {
    if (drawn_.empty()) fail("fake engine: decode_end without a step");
    const int32_t id = drawn_.front();
    drawn_.pop_front();
    return id;
  }
  int64_t outstanding() const { return static_cast<int64_t>(drawn_.size()); }

  const std::vector<int32_t>& kv() const { return kv_; }
  std::vector<int64_t> forward_sizes;  // tokens per forward call, in call order
  int64_t pipelined_steps = 0;         // decode_begin calls

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

  // The device's draw from the current logits: the top id when greedy, else the top two split at
  // uniform 0.5 (the largest logit below the top).
  int32_t pick(const SamplerParams& params, double uniform) const {
    int32_t top = 0, next = -1;
    for (int32_t i = 1; i < static_cast<int32_t>(logits_.size()); ++i)
      if (logits_[static_cast<size_t>(i)] > logits_[static_cast<size_t>(top)]) top = i;
    for (int32_t i = 0; i < static_cast<int32_t>(logits_.size()); ++i)
      if (i != top && (next < 0 || logits_[static_cast<size_t>(i)] > logits_[static_cast<size_t>(next)]))
        next = i;
    return params.temperature <= 0.0f || uniform < 0.5 ? top : next;
  }

  Device device_;
  std::optional<int32_t> fed_;  // the id the last decode_begin drew
  std::deque<int32_t> drawn_;   // ids drawn and not yet taken by decode_end
  ModelConfig config_;
  std::vector<int32_t> words_;
  int32_t eos_;
  int eos_every_;
  int64_t context_;
  std::vector<int32_t> kv_;
  std::vector<float> logits_;
};

}  // namespace nibble::test
