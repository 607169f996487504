// Whole-model parity with HF transformers on the tiny random models of tests/fixtures/models/
// (scripts/gen_model_fixtures.py: Qwen3 tied/untied, MHA/GQA, head_dim != hidden/heads, BF16,
// yarn and linear RoPE, Llama, Qwen2 with q/k/v bias). For each model:
//   - RoPE inverse frequencies and attention scaling equal HF's;
//   - prompt logits match HF's float64 logits within atol + rtol * |ref|;
//   - 32 greedy tokens (prefill, then one token at a time) equal HF's ids, and each step's logits
//     match HF's;
//   - one-shot prefill of prompt + greedy tokens gives the incremental decode's logits;
//   - truncate() rewinds the sequence.
//
// Tolerance (the same for F32 and BF16 checkpoints, because the reference runs in float64 on
// exactly the stored weights, BF16 upcast, so storage rounding does not enter the comparison):
// we compute in fp32 with fp32 accumulation, ~1e-7 relative error per op over 2-3 layers of ~10
// ops; logits reach |53| by construction. Observed max |diff| is 1-3e-5 on every fixture (printed
// by the tests). atol 1e-4 + rtol 1e-5 (2e-4 at |logit| 10) leaves 5-10x margin and is far below
// what a real mistake produces (a wrong RoPE pair, a missing bias or norm moves logits by O(1)).
// Greedy margins are >= 1 logit by construction (scripts/gen_model_fixtures.py trains each random
// model to be sure of its greedy path), far above that error, so ids must match exactly.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "format/safetensors.h"
#include "model/rope.h"
#include "runtime/engine.h"
#include "support/test_support.h"

namespace nibble {
namespace {

constexpr double kAtol = 1e-4;
constexpr double kRtol = 1e-5;
constexpr int kMinModels = 7;  // the configs gen_model_fixtures.py writes

struct Reference {
  std::vector<int32_t> prompt;
  std::vector<double> prompt_logits;  // (P, V)
  std::vector<int32_t> greedy_ids;    // (G)
  std::vector<double> greedy_logits;  // (G, V): the row each greedy id is the argmax of
  std::vector<double> inv_freq;
  double attention_scaling = 1.0;
};

std::vector<double> as_doubles(const TensorInfo& t) {
  std::vector<double> v(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t.dtype == DType::F64) {
      v[i] = reinterpret_cast<const double*>(t.data)[i];
    } else if (t.dtype == DType::F32) {
      v[i] = reinterpret_cast<const float*>(t.data)[i];
    } else if (t.dtype == DType::I64) {
      v[i] = static_cast<double>(reinterpret_cast<const int64_t*>(t.data)[i]);
    } else {
      ADD_FAILURE() << t.name << ": unexpected dtype " << dtype_name(t.dtype);
    }
  }
  return v;
}

std::vector<int32_t> as_ids(const TensorInfo& t) {
  std::vector<int32_t> ids;
  for (double d : as_doubles(t)) ids.push_back(static_cast<int32_t>(d));
  return ids;
}

Reference load_reference(const std::filesystem::path& dir) {
  const SafetensorsFile f = SafetensorsFile::open(dir / "reference.safetensors");
  auto get = [&](const char* name) -> const TensorInfo& {
    const TensorInfo* t = f.find(name);
    if (t == nullptr) throw std::runtime_error(std::string("reference.safetensors lacks ") + name);
    return *t;
  };
  Reference r;
  r.prompt = as_ids(get("input_ids"));
  r.prompt_logits = as_doubles(get("prompt_logits"));
  r.greedy_ids = as_ids(get("greedy_ids"));
  r.greedy_logits = as_doubles(get("greedy_logits"));
  r.inv_freq = as_doubles(get("rope_inv_freq"));
  r.attention_scaling = as_doubles(get("rope_attention_scaling")).at(0);
  return r;
}

std::vector<std::filesystem::path> model_dirs() {
  std::vector<std::filesystem::path> dirs;
  const auto root = test::data_dir() / "models";
  if (!std::filesystem::is_directory(root)) return dirs;
  for (const auto& e : std::filesystem::directory_iterator(root)) {
    if (std::filesystem::exists(e.path() / "reference.safetensors")) dirs.push_back(e.path());
  }
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

// Checks got (rows, V) against ref within atol + rtol |ref|; returns the largest |got - ref|.
double expect_close(std::span<const float> got, std::span<const double> ref, const std::string& what) {
  EXPECT_EQ(got.size(), ref.size()) << what;
  double worst = 0;
  int reported = 0;
  for (size_t i = 0; i < std::min(got.size(), ref.size()); ++i) {
    const double d = std::abs(got[i] - ref[i]);
    worst = std::max(worst, d);
    if (!(d <= kAtol + kRtol * std::abs(ref[i])) && reported++ < 5) {
      ADD_FAILURE() << what << ": element " << i << " is " << got[i] << ", HF " << ref[i] << " (|diff| " << d
                    << ")";
    }
  }
  return worst;
}

int32_t argmax(std::span<const float> v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

TEST(ModelParity, FixturesPresent) {
  ASSERT_TRUE(std::filesystem::is_directory(test::data_dir() / "models"))
      << "tests/fixtures/models is missing: run scripts/gen_model_fixtures.py on the GPU machine (see "
         "tests/fixtures/GENERATED.md)";
  EXPECT_GE(static_cast<int>(model_dirs().size()), kMinModels);
}

TEST(ModelParity, RopeParamsMatchHf) {
  for (const auto& dir : model_dirs()) {
    SCOPED_TRACE(dir.filename().string());
    const Reference ref = load_reference(dir);
    const RopeParams p = rope_params(ModelConfig::load(dir));
    ASSERT_EQ(p.inv_freq.size(), ref.inv_freq.size());
    for (size_t j = 0; j < p.inv_freq.size(); ++j) {
      EXPECT_NEAR(p.inv_freq[j], ref.inv_freq[j], 1e-6 * ref.inv_freq[j]) << "pair " << j;
    }
    EXPECT_NEAR(p.attention_scaling, ref.attention_scaling, 1e-6);
  }
}

TEST(ModelParity, PromptLogitsMatchHf) {
  for (const auto& dir : model_dirs()) {
    SCOPED_TRACE(dir.filename().string());
    const Reference ref = load_reference(dir);
    auto engine = Engine::load(dir, EngineOptions{});
    const std::vector<float> logits = engine->forward_all(ref.prompt);
    const double worst = expect_close(logits, ref.prompt_logits, "prompt logits");
    EXPECT_EQ(engine->position(), static_cast<int64_t>(ref.prompt.size()));
    std::printf("  %-24s prompt logits: max |diff| %.2e\n", dir.filename().c_str(), worst);
  }
}

TEST(ModelParity, GreedyIdsMatchHfAndDecodeMatchesPrefill) {
  for (const auto& dir : model_dirs()) {
    SCOPED_TRACE(dir.filename().string());
    const Reference ref = load_reference(dir);
    const int64_t vocab = static_cast<int64_t>(ref.prompt_logits.size() / ref.prompt.size());
    auto engine = Engine::load(dir, EngineOptions{});
    ASSERT_EQ(engine->config().vocab_size, vocab);

    // Prefill, then one token at a time: the decode path.
    std::vector<float> incremental;  // (G, V) rows each greedy id came from
    std::vector<int32_t> ids;
    std::span<const float> logits = engine->forward(ref.prompt);
    for (size_t step = 0; step < ref.greedy_ids.size(); ++step) {
      incremental.insert(incremental.end(), logits.begin(), logits.end());
      ids.push_back(argmax(logits));
      if (step + 1 < ref.greedy_ids.size())
        logits = engine->forward(std::span<const int32_t>(&ids.back(), 1));
    }
    EXPECT_EQ(ids, ref.greedy_ids);
    const double worst = expect_close(incremental, ref.greedy_logits, "greedy step logits");
    std::printf("  %-24s greedy logits: max |diff| %.2e\n", dir.filename().c_str(), worst);

    // One-shot prefill of prompt + greedy[:-1] gives the same rows as the incremental decode.
    std::vector<int32_t> seq = ref.prompt;
    seq.insert(seq.end(), ids.begin(), ids.end() - 1);
    auto fresh = Engine::load(dir, EngineOptions{});
    const std::vector<float> all = fresh->forward_all(seq);
    const size_t p = ref.prompt.size();
    const std::span<const float> tail(all.data() + (p - 1) * vocab, incremental.size());
    double gap = 0;
    for (size_t i = 0; i < incremental.size(); ++i)
      gap = std::max(gap, double(std::abs(tail[i] - incremental[i])));
    EXPECT_LE(gap, 1e-4) << "one-shot prefill vs incremental decode";

    // truncate() rewinds: the first greedy step again gives the same logits.
    engine->truncate(static_cast<int64_t>(p));
    EXPECT_EQ(engine->position(), static_cast<int64_t>(p));
    engine->truncate(static_cast<int64_t>(p - 1));
    const std::span<const float> again = engine->forward(std::span<const int32_t>(&ref.prompt.back(), 1));
    for (int64_t j = 0; j < vocab; ++j)
      ASSERT_NEAR(again[j], incremental[j], 1e-4) << "after truncate, logit " << j;
  }
}

}  // namespace
}  // namespace nibble
