// Sampler: each HF logits processor against hand-computed distributions, the empirical frequencies
// of sample() against them, reproducibility from the seed, and the generation_config defaults.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "core/error.h"
#include "format/hf_config.h"
#include "runtime/sampler.h"

namespace nibble {
namespace {

std::vector<float> logits_of_probs(const std::vector<double>& p) {
  std::vector<float> l;
  for (double v : p) l.push_back(static_cast<float>(std::log(v)));
  return l;
}

SamplerParams sampling(float temperature) {
  SamplerParams p;
  p.temperature = temperature;
  p.seed = 1234;
  return p;
}

void expect_probs(const std::vector<double>& got, const std::vector<double>& want, double tol = 1e-6) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "token " << i;
}

TEST(Sampler, GreedyIsFirstArgmax) {
  Sampler s(SamplerParams{});
  const std::vector<float> l = {0.5f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(s.sample(l, {}), 1);  // tie between 1 and 3: the first, as torch.argmax
}

TEST(Sampler, RepetitionPenaltyHfSemantics) {
  // HF: positive logits are divided by the penalty, negative ones multiplied, each seen id once.
  SamplerParams p;
  p.repetition_penalty = 2.0f;
  Sampler s(p);
  const std::vector<float> l = {3.0f, 2.0f, -1.0f, 1.0f};
  const std::vector<int32_t> seen = {0, 0, 2};
  // After the penalty: {1.5, 2.0, -2.0, 1.0} -> argmax 1 (without it: 0).
  EXPECT_EQ(s.sample(l, seen), 1);
  EXPECT_EQ(Sampler(SamplerParams{}).sample(l, seen), 0);

  p.temperature = 1.0f;
  const std::vector<double> got = Sampler(p).probabilities(l, seen);
  const std::vector<double> x = {1.5, 2.0, -2.0, 1.0};
  double z = 0;
  for (double v : x) z += std::exp(v);
  expect_probs(got, {std::exp(1.5) / z, std::exp(2.0) / z, std::exp(-2.0) / z, std::exp(1.0) / z});
}

TEST(Sampler, TemperatureScalesLogits) {
  const std::vector<float> l = {1.0f, 0.0f};
  const std::vector<double> got = Sampler(sampling(0.5f)).probabilities(l, {});
  const double a = std::exp(2.0), b = 1.0;
  expect_probs(got, {a / (a + b), b / (a + b)});
}

TEST(Sampler, TopKKeepsTiesAtTheBoundary) {
  SamplerParams p = sampling(1.0f);
  p.top_k = 2;
  // Sorted: 3, 2, 2, 1: the 2nd largest is 2, and HF removes only scores < it: three tokens stay.
  const std::vector<float> l = {2.0f, 1.0f, 3.0f, 2.0f};
  const std::vector<double> got = Sampler(p).probabilities(l, {});
  const double z = 2 * std::exp(2.0) + std::exp(3.0);
  expect_probs(got, {std::exp(2.0) / z, 0.0, std::exp(3.0) / z, std::exp(2.0) / z});
}

TEST(Sampler, TopPKeepsTheTokenThatCrossesP) {
  SamplerParams p = sampling(1.0f);
  const std::vector<float> l = logits_of_probs({0.1, 0.6, 0.3});
  // top_p 0.7: 0.6 alone is below 0.7, 0.6 + 0.3 crosses it: {0.6, 0.3} stay, renormalized.
  p.top_p = 0.7f;
  expect_probs(Sampler(p).probabilities(l, {}), {0.0, 0.6 / 0.9, 0.3 / 0.9});
  // top_p 0.5: the first token already crosses it.
  p.top_p = 0.5f;
  expect_probs(Sampler(p).probabilities(l, {}), {0.0, 1.0, 0.0});
  // top_p 0.95: all three are needed.
  p.top_p = 0.95f;
  expect_probs(Sampler(p).probabilities(l, {}), {0.1, 0.6, 0.3});
}

TEST(Sampler, TopPOverALargeVocabulary) {
  // 1000 tokens, one at 0.5 and 999 sharing the other 0.5 (ties ordered by id). Enough of the
  // order must be sorted to find the boundary, more than the first partial sort covers.
  std::vector<double> probs(1000, 0.5 / 999);
  probs[500] = 0.5;
  SamplerParams p = sampling(1.0f);
  p.top_p = 0.7505f;
  const std::vector<double> got = Sampler(p).probabilities(logits_of_probs(probs), {});
  int kept = 0;
  for (double v : got) kept += v > 0;
  EXPECT_EQ(kept, 1 + 501);  // 0.5 + 500 * (0.5/999) = 0.75025 < 0.7505: the 501st small one crosses
  EXPECT_GT(got[500], 0.6);
}

TEST(Sampler, MinPIsRelativeToTheTopProbability) {
  SamplerParams p = sampling(1.0f);
  p.min_p = 0.25f;
  // Top 0.5: the threshold is 0.125; 0.1 goes, 0.13 stays.
  const std::vector<float> l = logits_of_probs({0.5, 0.27, 0.13, 0.1});
  const std::vector<double> got = Sampler(p).probabilities(l, {});
  EXPECT_NEAR(got[3], 0.0, 1e-12);
  EXPECT_NEAR(got[0], 0.5 / 0.9, 1e-5);
  EXPECT_NEAR(got[1], 0.27 / 0.9, 1e-5);
  EXPECT_GT(got[2], 0.0);
}

TEST(Sampler, ProcessorOrderPenaltyTemperatureTopKTopPMinP) {
  SamplerParams p = sampling(2.0f);
  p.repetition_penalty = 2.0f;
  p.top_k = 3;
  p.top_p = 0.9f;
  p.min_p = 0.5f;
  const std::vector<float> l = {4.0f, 3.0f, 2.0f, 1.0f, 0.0f};
  const std::vector<int32_t> seen = {0};
  // Penalty: {2,3,2,1,0}; temperature 2: {1,1.5,1,0.5,0}; top-k 3 keeps ids 1,0,2 (value >= 1).
  // Softmax: e^1.5, e^1, e^1 / z. top_p 0.9 keeps all three (the first two sum to ~0.72).
  // min_p 0.5 of the top: e^1/e^1.5 = 0.61 >= 0.5, all stay.
  const double z = std::exp(1.5) + 2 * std::exp(1.0);
  expect_probs(Sampler(p).probabilities(l, seen),
               {std::exp(1.0) / z, std::exp(1.5) / z, std::exp(1.0) / z, 0.0, 0.0});
  // min_p 0.7 now drops the two e^1 tokens: only id 1 stays.
  p.min_p = 0.7f;
  expect_probs(Sampler(p).probabilities(l, seen), {0.0, 1.0, 0.0, 0.0, 0.0});
}

TEST(Sampler, FrequenciesMatchTheDistribution) {
  SamplerParams p = sampling(0.8f);
  p.top_k = 4;
  p.top_p = 0.9f;
  const std::vector<float> l = {1.0f, 0.2f, 2.0f, -0.5f, 0.7f, -3.0f};
  Sampler s(p);
  const std::vector<double> want = s.probabilities(l, {});
  const int n = 100000;
  std::vector<int> count(l.size(), 0);
  for (int i = 0; i < n; ++i) ++count[s.sample(l, {})];
  for (size_t i = 0; i < l.size(); ++i) {
    // 5 standard deviations of a binomial proportion (plus a floor for p near 0).
    const double sd = std::sqrt(want[i] * (1 - want[i]) / n);
    EXPECT_NEAR(static_cast<double>(count[i]) / n, want[i], 5 * sd + 1e-9) << "token " << i;
    if (want[i] == 0) EXPECT_EQ(count[i], 0) << "filtered token " << i << " was drawn";
  }
}

TEST(Sampler, SeedMakesRunsReproducible) {
  const std::vector<float> l = {0.0f, 0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f};
  auto run = [&](uint64_t seed) {
    SamplerParams p = sampling(1.0f);
    p.seed = seed;
    Sampler s(p);
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) out.push_back(s.sample(l, {}));
    return out;
  };
  EXPECT_EQ(run(7), run(7));
  EXPECT_NE(run(7), run(8));
}

TEST(Sampler, ValidatesParameters) {
  SamplerParams p;
  p.top_p = 0.0f;
  EXPECT_THROW(Sampler{p}, Error);
  p = {};
  p.temperature = -1.0f;
  EXPECT_THROW(Sampler{p}, Error);
  p = {};
  p.repetition_penalty = 0.0f;
  EXPECT_THROW(Sampler{p}, Error);
  p = {};
  p.min_p = 1.5f;
  EXPECT_THROW(Sampler{p}, Error);
}

TEST(Sampler, ResolveFromGenerationConfig) {
  GenerationConfig gen;  // no generation_config.json: greedy
  SamplerOverrides flags;
  flags.seed = 5;
  SamplerParams p = resolve_sampler_params(gen, flags);
  EXPECT_TRUE(p.greedy());
  EXPECT_EQ(p.seed, 5u);

  // Qwen3-4B-Instruct-2507's generation_config.json.
  gen.do_sample = true;
  gen.temperature = 0.7;
  gen.top_k = 20;
  gen.top_p = 0.8;
  p = resolve_sampler_params(gen, flags);
  EXPECT_FLOAT_EQ(p.temperature, 0.7f);
  EXPECT_EQ(p.top_k, 20);
  EXPECT_FLOAT_EQ(p.top_p, 0.8f);
  EXPECT_FLOAT_EQ(p.min_p, 0.0f);

  flags.temperature = 0.0f;  // --temperature 0 wins: greedy
  EXPECT_TRUE(resolve_sampler_params(gen, flags).greedy());
  flags.temperature = 1.2f;
  flags.top_k = 0;
  p = resolve_sampler_params(gen, flags);
  EXPECT_FLOAT_EQ(p.temperature, 1.2f);
  EXPECT_EQ(p.top_k, 0);

  // do_sample on, top_k absent: HF's default 50.
  GenerationConfig plain;
  plain.do_sample = true;
  EXPECT_EQ(resolve_sampler_params(plain, {}).top_k, 50);
  // A sampling flag on a greedy config asks for sampling.
  SamplerOverrides only_top_p;
  only_top_p.top_p = 0.9f;
  EXPECT_FALSE(resolve_sampler_params(GenerationConfig{}, only_top_p).greedy());

  SamplerOverrides bad;
  bad.top_p = 1.5f;
  EXPECT_THROW(resolve_sampler_params(gen, bad), Error);
}

TEST(Sampler, TopLogits) {
  const std::vector<float> l = {0.5f, 3.0f, NAN, 3.0f, -1.0f};
  const auto top = top_logits(l, 3);
  ASSERT_EQ(top.size(), 3u);
  EXPECT_EQ(top[0].first, 1);
  EXPECT_EQ(top[1].first, 3);
  EXPECT_EQ(top[2].first, 0);
  EXPECT_FLOAT_EQ(top[2].second, 0.5f);
}

}  // namespace
}  // namespace nibble
