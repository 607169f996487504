// Planned GPU memory: prepare_model() allocates the plan (weights + KV cache + activations +
// workspaces) as one arena; the model's buffers fit it; a 50-turn chat (prefill of each user turn,
// then decoding with on-device sampling) allocates nothing and keeps device memory flat; a budget
// smaller than the plan is refused with the plan in the message. Skips without a GPU.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "cuda/cuda_test_util.h"
#include "format/safetensors.h"
#include "model/qwen3.h"
#include "quant/nvfp4_checkpoint.h"
#include "runtime/sampler.h"
#include "support/test_support.h"

namespace nibble {
namespace {

const std::filesystem::path kModel = test::data_dir() / "models" / "qwen3_hd32_gqa_bf16";

TEST(CudaMemory, PlanAllocatedOnceAndFlatOverFiftyTurns) {
  NIBBLE_REQUIRE_GPU();
  const ModelConfig config = ModelConfig::load(kModel);
  const WeightStore store = WeightStore::open_dir(kModel);
  const ModelWeights host = load_model_weights(store, config, read_quant_config(kModel, config));
  const int64_t context = 1200, max_tokens = 64;

  CudaBackend gpu(CudaBackendOptions{});
  // Qwen3Model keeps its logits to itself, so this test samples on the GPU from a copy: each step's
  // logits go to the host (as the Engine does today) and back into this row for gpu.sample().
  // Allocated before the plan, it is a separate allocation.
  Buffer logits_storage;
  const Tensor logits_dev = gpu.alloc_tensor(logits_storage, DType::F32, {config.vocab_size});
  ASSERT_EQ(gpu.device_alloc_count(), 1);

  const std::string plan = gpu.prepare_model(config, host, context, max_tokens);
  std::printf("%s", plan.c_str());
  EXPECT_NE(plan.find("kv cache"), std::string::npos);
  EXPECT_EQ(gpu.device_alloc_count(), 2) << "the plan is one allocation";

  Qwen3Model model(gpu, config, upload_model_weights(gpu, host), max_tokens);
  KvCache cache = model.make_kv_cache(context);
  const int64_t allocs_after_setup = gpu.device_alloc_count();
  EXPECT_EQ(allocs_after_setup, 2) << "weights, activations and the KV cache come from the arena";
  EXPECT_LE(gpu.arena_used(), gpu.arena_bytes());
  EXPECT_GE(gpu.arena_used(), gpu.arena_bytes() * 9 / 10) << "the plan overestimates by more than 10%";
  std::printf("  arena %zu bytes, used %zu after load\n", gpu.arena_bytes(), gpu.arena_used());

  std::mt19937 rng(5);
  SamplerParams sp;
  sp.temperature = 0.8f;
  sp.top_k = 20;
  sp.top_p = 0.9f;
  std::vector<int32_t> seen;
  std::vector<float> logits(static_cast<size_t>(config.vocab_size));
  int64_t pos = 0;
  size_t free_first = 0;
  for (int turn = 0; turn < 50; ++turn) {
    std::vector<int32_t> prompt(8 + turn % 5);
    for (auto& t : prompt) t = static_cast<int32_t>(rng() % config.vocab_size);
    seen.insert(seen.end(), prompt.begin(), prompt.end());
    model.forward(prompt, pos, cache, 1, logits);
    pos += static_cast<int64_t>(prompt.size());
    for (int step = 0; step < 12; ++step) {
      gpu.copy_from_host(logits, logits_dev);
      const int32_t id =
          gpu.sample(logits_dev, sp, seen, std::uniform_real_distribution<double>(0, 1)(rng)).value();
      ASSERT_GE(id, 0);
      ASSERT_LT(id, config.vocab_size);
      seen.push_back(id);
      model.forward(std::span<const int32_t>(&id, 1), pos++, cache, 1, logits);
    }
    gpu.synchronize();
    const size_t free_now = gpu.context().mem_info().first;
    ASSERT_EQ(gpu.device_alloc_count(), allocs_after_setup) << "turn " << turn << " allocated device memory";
    // The first turns load kernel modules lazily (CUDA_MODULE_LOADING=LAZY, the default: code
    // memory for each new kernel or cuBLASLt shape); every shape has run by turn 5.
    if (turn < 5) {
      std::printf("  warm-up turn %d: free %.6f GB\n", turn, free_now / 1e9);
      free_first = free_now;
      continue;
    }
    ASSERT_EQ(free_now, free_first) << "turn " << turn << ": free device memory moved";
  }
  std::printf("  50 turns, %lld tokens: %lld device allocations, free memory flat at %.3f GB\n",
              static_cast<long long>(pos), static_cast<long long>(gpu.device_alloc_count()),
              free_first / 1e9);
}

TEST(CudaMemory, BudgetTooSmallIsRefusedWithThePlan) {
  NIBBLE_REQUIRE_GPU();
  const ModelConfig config = ModelConfig::load(kModel);
  const WeightStore store = WeightStore::open_dir(kModel);
  const ModelWeights host = load_model_weights(store, config, read_quant_config(kModel, config));
  CudaBackendOptions opts;
  opts.mem_budget_gb = 0.001;  // 1 MB: the cuBLASLt workspace alone is 32 MB
  CudaBackend gpu(opts);
  try {
    gpu.prepare_model(config, host, 256, 64);
    FAIL() << "a plan over the budget was accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("does not fit"), std::string::npos) << msg;
    EXPECT_NE(msg.find("kv cache"), std::string::npos) << msg;
    EXPECT_NE(msg.find("budget"), std::string::npos) << msg;
  }
  EXPECT_EQ(gpu.device_alloc_count(), 0);
}

}  // namespace
}  // namespace nibble
