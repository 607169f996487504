// defines: SamplerParams (greedy / temperature / top-k / top-p / min-p / repetition penalty / seed),
// SamplerOverrides + resolve_sampler_params (generation_config.json defaults, then flags), Sampler.
//
// The logits processing follows HF transformers' logits processors, in their order:
// repetition penalty -> temperature -> top-k -> top-p -> min-p -> softmax -> draw.
// Greedy (temperature 0, or do_sample false in generation_config.json) is the argmax after the
// repetition penalty, as HF applies that processor in greedy search too.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <utility>
#include <vector>

namespace nibble {

struct GenerationConfig;

struct SamplerParams {
  float temperature = 0.0f;         // 0: greedy (argmax)
  int64_t top_k = 0;                // 0: off
  float top_p = 1.0f;               // 1: off
  float min_p = 0.0f;               // 0: off
  float repetition_penalty = 1.0f;  // 1: off; HF: positive logits / p, negative * p, over seen ids
  uint64_t seed = 0;

  bool greedy() const { return temperature <= 0.0f; }
  void validate() const;  // throws Error naming the bad value
};

// What the user set on the command line; unset fields come from generation_config.json.
struct SamplerOverrides {
  std::optional<float> temperature, top_p, min_p, repetition_penalty;
  std::optional<int64_t> top_k;
  std::optional<uint64_t> seed;
};

// HF semantics: do_sample false (or absent) means greedy unless the user asks for a temperature;
// when sampling, an absent top_k is HF's default 50 (--top-k 0 turns it off). With no seed set
// a random one is drawn, so the caller should report params.seed for reproduction.
SamplerParams resolve_sampler_params(const GenerationConfig& gen, const SamplerOverrides& flags);

class Sampler {
 public:
  explicit Sampler(const SamplerParams& params);

  // Draws the next token from `logits` (vocab). `seen` are the ids of the prompt and the output so
  // far (the repetition penalty's input_ids, duplicates allowed).
  int32_t sample(std::span<const float> logits, std::span<const int32_t> seen);

  // The distribution sample() draws from (vocab entries, zero where filtered). For greedy it is
  // one-hot on the argmax. Exposed for tests.
  std::vector<double> probabilities(std::span<const float> logits, std::span<const int32_t> seen) const;

  const SamplerParams& params() const { return params_; }

  // The next uniform in [0, 1) of this sampler's stream, for a backend that draws on the device
  // (Engine::forward_sample): the host keeps the RNG, so a seed reproduces a run on one backend.
  double next_uniform();
  // next_uniform() for a draw that may be taken back (pipelined decoding draws for a step it may
  // discard), and taking back the last one: the stream continues as if it had not been drawn.
  double next_uniform_tentative();
  void take_back_uniform();

 private:
  // x = logits after the repetition penalty.
  void process(std::span<const float> logits, std::span<const int32_t> seen, std::vector<float>& x) const;

  SamplerParams params_;
  std::mt19937_64 rng_;               // per sampler: no global state, reproducible from params_.seed
  std::mt19937_64 before_tentative_;  // rng_ before the last next_uniform_tentative()
  // Buffers reused across steps: a vocab-sized allocation per token costs page faults.
  std::vector<float> x_;
  std::vector<std::pair<double, int32_t>> cands_;
};

// The k largest logits of one step as (id, logit), highest first (ties: lower id first).
std::vector<std::pair<int32_t, float>> top_logits(std::span<const float> logits, int64_t k);

}  // namespace nibble
