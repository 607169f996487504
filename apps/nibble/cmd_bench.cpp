// nibble bench (--model DIR | --preset qwen3-4b --random-weights) [--json]: the card's copy
// bandwidth and bf16 tensor-core rate, then prefill tok/s at 512 and 2048 tokens with the share of
// the tensor-core rate reached on the model's FLOPs, decode tok/s at contexts 0, 4K and 32K with
// the bytes each decoded token reads, the achieved GB/s and its share of the measured copy
// bandwidth, and peak memory. A benchmark, not a test: warm-up, several runs, the median.
//
// Random weights are real NVFP4 data: each linear's codes and FP8 scales come from quantising
// N(0, 0.02) rows with the ModelOpt codec (quant/nvfp4.h); rows are cycled from a 64-row template
// with random sign flips, so no two neighbouring rows are equal and nothing is zero. The KV cache
// is filled with random bf16 before the decode runs (never timed on zeros).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "commands.h"
#include "core/error.h"
#include "format/hf_config.h"
#include "format/safetensors.h"
#include "model/qwen3.h"
#include "quant/nvfp4.h"
#include "quant/nvfp4_checkpoint.h"

#ifdef NIBBLE_HAVE_CUDA
#include <cuda_runtime_api.h>
#include <nvtx3/nvToolsExt.h>

#include "backend/cuda/check.cuh"
#include "backend/cuda/context.cuh"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/fill.cuh"
#include "backend/cuda/linear.cuh"
#include "backend/cuda/timing.h"
#include "runtime/sampler.h"
#endif

namespace nibble::app {
namespace {

struct BenchOptions {
  std::string model;
  std::string preset;
  bool random_weights = false;
  bool json = false;
  int device = 0;
  std::vector<int64_t> prefill = {512, 2048};
  std::vector<int64_t> contexts = {0, 4096, 32768};
  int64_t decode_steps = 32;
  int reps = 4;  // timed runs after one warm-up; the median is reported
  std::string kv_cache = "bf16";
  bool no_graphs = false;
  std::vector<double> l2_prefetch_mb;  // decode runs once per value; empty: the backend's default
};

#ifdef NIBBLE_HAVE_CUDA
// Qwen3-4B-Instruct-2507's config.json (tests/fixtures/qwen3_4b_instruct_2507/config.json).
ModelConfig preset_config(const std::string& name) {
  if (name != "qwen3-4b") fail("unknown preset '{}' (known: qwen3-4b)", name);
  const nlohmann::json j = {{"architectures", {"Qwen3ForCausalLM"}},
                            {"model_type", "qwen3"},
                            {"head_dim", 128},
                            {"hidden_size", 2560},
                            {"intermediate_size", 9728},
                            {"max_position_embeddings", 262144},
                            {"num_attention_heads", 32},
                            {"num_hidden_layers", 36},
                            {"num_key_value_heads", 8},
                            {"rms_norm_eps", 1e-6},
                            {"rope_theta", 5000000},
                            {"tie_word_embeddings", true},
                            {"torch_dtype", "bfloat16"},
                            {"vocab_size", 151936},
                            {"bos_token_id", 151643},
                            {"eos_token_id", 151645}};
  return ModelConfig::from_json(j, "preset qwen3-4b");
}

uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Approximately N(0, 1) from a counter hash (sum of four uniforms, variance-corrected).
float hash_normal(uint64_t seed, uint64_t i) {
  const uint64_t h = mix64(seed * 0x9e3779b97f4a7c15ull + i);
  float s = 0;
  for (int k = 0; k < 4; ++k) s += static_cast<float>((h >> (16 * k)) & 0xffff) / 65536.0f;
  return (s - 2.0f) * 1.7320508f;
}

template <typename F>
void parallel_rows(int64_t rows, F&& f) {
  const int64_t t = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> pool;
  for (int64_t w = 0; w < t; ++w)
    pool.emplace_back([&, w] {
      for (int64_t r = rows * w / t; r < rows * (w + 1) / t; ++r) f(r);
    });
  for (auto& th : pool) th.join();
}

// Host weights of a random Qwen3 model with NVFP4 linears and head, and a BF16 embedding.
struct RandomModel {
  std::vector<std::vector<uint8_t>> bytes;  // owns everything the views point to
  ModelWeights w;

  const uint8_t* keep(std::vector<uint8_t> v) {
    bytes.push_back(std::move(v));
    return bytes.back().data();
  }
  Tensor norm(int64_t n, uint64_t seed) {
    std::vector<uint8_t> b(static_cast<size_t>(n) * 4);
    for (int64_t i = 0; i < n; ++i) {
      const float v = 1.0f + 0.1f * hash_normal(seed, static_cast<uint64_t>(i));
      std::memcpy(b.data() + 4 * i, &v, 4);
    }
    return Tensor(const_cast<uint8_t*>(keep(std::move(b))), DType::F32, {n});
  }
  Weight nvfp4(int64_t out, int64_t in, uint64_t seed) {
    constexpr int64_t kTemplateRows = 64;
    std::vector<float> t(static_cast<size_t>(kTemplateRows * in));
    for (size_t i = 0; i < t.size(); ++i) t[i] = 0.02f * hash_normal(seed, i);
    const Nvfp4Tensor q = quantize_nvfp4(t.data(), kTemplateRows, in);
    std::vector<uint8_t> codes(static_cast<size_t>(out * in / 2)), scales(static_cast<size_t>(out * in / 16));
    parallel_rows(out, [&](int64_t r) {
      const int64_t src = r % kTemplateRows;
      uint8_t* dst = codes.data() + r * in / 2;
      std::memcpy(dst, q.packed.data() + src * in / 2, static_cast<size_t>(in / 2));
      for (int64_t i = 0; i < in / 2; i += 8) {  // random sign flips (bit 3 of each nibble)
        uint64_t m = mix64(seed ^ static_cast<uint64_t>(r * in + i)) & 0x8888888888888888ull;
        for (int64_t j = 0; j < 8 && i + j < in / 2; ++j) dst[i + j] ^= static_cast<uint8_t>(m >> (8 * j));
      }
      std::memcpy(scales.data() + r * in / 16, q.scales.data() + src * in / 16, static_cast<size_t>(in / 16));
    });
    Weight w;
    w.format = WeightFormat::NVFP4;
    w.dtype = DType::U8;
    w.out = out;
    w.in = in;
    w.data = keep(std::move(codes));
    w.scales = keep(std::move(scales));
    w.global_scale = q.global_scale;
    return w;
  }

  explicit RandomModel(const ModelConfig& c) {
    bytes.reserve(16 + c.num_layers * 20);
    const int64_t dim = c.hidden_size, hd = c.head_dim, ffn = c.intermediate_size;
    std::vector<uint8_t> emb(static_cast<size_t>(c.vocab_size * dim) * 2);
    parallel_rows(c.vocab_size, [&](int64_t r) {
      for (int64_t j = 0; j < dim; ++j) {
        const float v = 0.02f * hash_normal(7, static_cast<uint64_t>(r * dim + j));
        uint32_t u;
        std::memcpy(&u, &v, 4);
        const uint16_t h = static_cast<uint16_t>((u + 0x7fff + ((u >> 16) & 1)) >> 16);
        std::memcpy(emb.data() + 2 * (r * dim + j), &h, 2);
      }
    });
    w.embed_tokens = Weight{WeightFormat::Dense, DType::BF16, c.vocab_size, dim, keep(std::move(emb))};
    uint64_t seed = 100;
    for (int64_t l = 0; l < c.num_layers; ++l) {
      LayerWeights L;
      L.input_norm = norm(dim, ++seed);
      L.q_proj = nvfp4(c.num_heads * hd, dim, ++seed);
      L.k_proj = nvfp4(c.num_kv_heads * hd, dim, ++seed);
      L.v_proj = nvfp4(c.num_kv_heads * hd, dim, ++seed);
      L.q_norm = norm(hd, ++seed);
      L.k_norm = norm(hd, ++seed);
      L.o_proj = nvfp4(dim, c.num_heads * hd, ++seed);
      L.post_attention_norm = norm(dim, ++seed);
      L.gate_proj = nvfp4(ffn, dim, ++seed);
      L.up_proj = nvfp4(ffn, dim, ++seed);
      L.down_proj = nvfp4(dim, ffn, ++seed);
      w.layers.push_back(L);
    }
    w.final_norm = norm(dim, ++seed);
    // The head is NVFP4 too (the speed-of-light budget counts a 4-bit head); the BF16
    // embedding stays for the lookup, which reads one row per token.
    w.lm_head = nvfp4(c.vocab_size, dim, ++seed);
  }
};

size_t weight_bytes(const Weight& w) {
  return w.is_nvfp4() ? static_cast<size_t>(w.out * w.in / 2 + w.out * w.in / 16)
                      : static_cast<size_t>(w.out * w.in) * 2;  // BF16 on the GPU
}

// Bytes one decoded token reads from weights (every linear and the head once; norms are noise).
size_t decode_weight_bytes(const ModelWeights& w) {
  size_t s = weight_bytes(w.lm_head);
  for (const LayerWeights& L : w.layers)
    for (const Weight* p :
         {&L.q_proj, &L.k_proj, &L.v_proj, &L.o_proj, &L.gate_proj, &L.up_proj, &L.down_proj})
      s += weight_bytes(*p);
  return s;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// bf16 GEMM 8192 x 8192 x 8192 through cuBLASLt (fp32 accumulation) on random data: the card's
// tensor-core rate as this program reaches it, TFLOP/s, median of 10 after 2 warm-ups.
double bf16_tensor_tflops(cuda::Context& ctx) {
  const int64_t m = 8192;
  const size_t bytes = static_cast<size_t>(m * m) * 2;
  cuda::DeviceBuffer a(ctx, bytes, "GEMM A"), b(ctx, bytes, "GEMM B"), c(ctx, bytes, "GEMM C");
  cuda::fill_random_bf16(ctx, a.get<__nv_bfloat16>(), m * m, 3, 1.0f);
  cuda::fill_random_bf16(ctx, b.get<__nv_bfloat16>(), m * m, 4, 1.0f);
  const double ms = cuda::median_ms(
      ctx,
      [&] {
        cuda::gemm_bf16_nt(ctx, a.get<__nv_bfloat16>(), m, b.get<__nv_bfloat16>(), m, c.get(), DType::BF16, m,
                           m, m, m, 1.0f);
      },
      10, 2);
  return 2.0 * m * m * m / (ms * 1e-3) / 1e12;
}

// FLOPs of a prefill of n tokens from position 0 with the head on the last token only: 2 per
// weight per token for the linears, and causal attention (q k^T and p V: 2 * hd * H per visible
// (query, key) pair, n (n + 1) / 2 pairs per layer).
double prefill_flops(const ModelConfig& c, const ModelWeights& w, int64_t n) {
  double linear = 0;
  for (const LayerWeights& L : w.layers)
    for (const Weight* p :
         {&L.q_proj, &L.k_proj, &L.v_proj, &L.o_proj, &L.gate_proj, &L.up_proj, &L.down_proj})
      linear += static_cast<double>(p->out) * static_cast<double>(p->in);
  const double pairs = 0.5 * static_cast<double>(n) * static_cast<double>(n + 1);
  const double attention = 4.0 * pairs * static_cast<double>(c.head_dim * c.num_heads * c.num_layers);
  return 2.0 * linear * static_cast<double>(n) + attention +
         2.0 * static_cast<double>(w.lm_head.out) * static_cast<double>(w.lm_head.in);
}

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

void run_bench(const BenchOptions& o) {
  CudaBackendOptions bo;
  bo.device = o.device;
  bo.graphs = !o.no_graphs;
  if (o.kv_cache == "fp8")
    bo.kv_dtype = DType::F8_E4M3;
  else if (o.kv_cache != "bf16")
    fail("--kv-cache {}: expected bf16 or fp8", o.kv_cache);
  CudaBackend gpu(bo);  // first: no GPU fails before minutes of weight generation
  cuda::Context& ctx = gpu.context();
  const double copy_gbps = cuda::copy_bandwidth_gbps(ctx);

  ModelConfig config;
  WeightStore store;
  std::unique_ptr<RandomModel> random;
  ModelWeights host;
  std::string source;
  if (!o.model.empty()) {
    config = ModelConfig::load(o.model);
    store = WeightStore::open_dir(o.model);
    host = load_model_weights(store, config, read_quant_config(o.model, config));
    source = o.model;
  } else {
    if (o.preset.empty()) fail("bench needs --model DIR or --preset qwen3-4b --random-weights");
    if (!o.random_weights) fail("--preset needs --random-weights (a preset has no checkpoint)");
    config = preset_config(o.preset);
    random = std::make_unique<RandomModel>(config);
    host = random->w;
    source = fmt::format("preset {} (random NVFP4 weights)", o.preset);
  }
  if (o.reps < 1 || o.decode_steps < 1) fail("--reps and --decode-steps must be at least 1");
  const int64_t max_prefill = o.prefill.empty() ? 1 : *std::max_element(o.prefill.begin(), o.prefill.end());
  const int64_t max_context =
      o.contexts.empty() ? 0 : *std::max_element(o.contexts.begin(), o.contexts.end());
  for (int64_t n : o.prefill)
    if (n < 1) fail("--prefill {}: token counts must be positive", n);
  const int64_t context = std::max(max_context + o.decode_steps, max_prefill), max_tokens = max_prefill;

  const std::string plan = gpu.prepare_model(config, host, context, max_tokens);
  if (!o.json) fmt::print(stderr, "{}", plan);
  Qwen3Model model(gpu, config, upload_model_weights(gpu, host), max_tokens);
  KvCache cache = model.make_kv_cache(context);
  const int64_t kv_elems = cache.layers * cache.kv_heads * cache.capacity * cache.head_dim;
  if (cache.dtype == DType::F8_E4M3) {
    cuda::fill_random_fp8(ctx, static_cast<uint8_t*>(cache.k.data()), kv_elems, 11, 1.0f);
    cuda::fill_random_fp8(ctx, static_cast<uint8_t*>(cache.v.data()), kv_elems, 12, 1.0f);
  } else {
    cuda::fill_random_bf16(ctx, static_cast<__nv_bfloat16*>(cache.k.data()), kv_elems, 11, 1.0f);
    cuda::fill_random_bf16(ctx, static_cast<__nv_bfloat16*>(cache.v.data()), kv_elems, 12, 1.0f);
  }
  gpu.synchronize();
  const double tc_tflops = bf16_tensor_tflops(ctx);

  std::vector<int32_t> tokens(static_cast<size_t>(std::max(max_tokens, o.decode_steps)));
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>(mix64(i) % config.vocab_size);
  std::vector<float> logits(static_cast<size_t>(config.vocab_size));
  SamplerParams greedy;
  greedy.temperature = 0.0f;

  nlohmann::json out;
  out["device"] = gpu.name();
  out["model"] = source;
  out["copy_gbps"] = copy_gbps;
  out["bf16_tensor_tflops"] = tc_tflops;
  out["kv_cache"] = o.kv_cache;
  out["graphs"] = !o.no_graphs;
  for (int64_t n : o.prefill) {
    std::vector<double> t;
    for (int rep = 0; rep <= o.reps; ++rep) {
      const auto t0 = Clock::now();
      model.forward(std::span<const int32_t>(tokens.data(), static_cast<size_t>(n)), 0, cache, 1, logits);
      if (rep > 0) t.push_back(seconds_since(t0));
    }
    const double s = median(t), flops = prefill_flops(config, host, n);
    out["prefill"].push_back({{"tokens", n},
                              {"seconds", s},
                              {"tok_s", n / s},
                              {"tflops", flops / s / 1e12},
                              {"pct_of_tensor", 100.0 * flops / s / 1e12 / tc_tflops}});
  }
  // Decode as generation runs it (runtime/generate.cpp): one token per forward, the next id picked
  // on the device (greedy) and copied back; with recorded steps pipelined -- each step decodes the
  // id the device drew for it and is enqueued before the host waits for the id before it -- else
  // (--no-graphs) one step at a time, waiting for each id.
  const size_t wbytes = decode_weight_bytes(host);
  const size_t kv_per_token =
      static_cast<size_t>(2 * config.num_layers * config.num_kv_heads * config.head_dim) *
      dtype_size(cache.dtype);
  std::vector<double> prefetch_mb = o.l2_prefetch_mb;
  if (prefetch_mb.empty()) prefetch_mb.push_back(static_cast<double>(gpu.l2_prefetch_bytes()) / (1 << 20));
  for (double mb : prefetch_mb) {
    if (mb < 0) fail("--l2-prefetch-mb {}: a size in MiB (0: off) expected", mb);
    gpu.set_l2_prefetch_bytes(static_cast<size_t>(mb * (1 << 20)));
    for (int64_t c : o.contexts) {
      std::vector<double> t;
      for (int rep = 0; rep <= o.reps; ++rep) {
        const auto t0 = Clock::now();
        if (gpu.can_feed_steps()) {
          model.forward(std::span<const int32_t>(tokens.data(), 1), c, cache, 1, {});
          gpu.sample_begin(model.device_logits(1), greedy, 0.0, /*feed_step=*/true);
          for (int64_t s = 1; s < o.decode_steps; ++s) {
            model.forward_fed(c + s, cache);
            gpu.sample_begin(model.device_logits(1), greedy, 0.0, /*feed_step=*/true);
            gpu.sample_end();
          }
          gpu.sample_end();
        } else {
          for (int64_t s = 0; s < o.decode_steps; ++s) {
            model.forward(std::span<const int32_t>(&tokens[static_cast<size_t>(s)], 1), c + s, cache, 1, {});
            gpu.sample(model.device_logits(1), greedy, {}, 0.0);
          }
        }
        if (rep > 0) t.push_back(seconds_since(t0) / static_cast<double>(o.decode_steps));
      }
      const double s = median(t);
      const double bytes =
          static_cast<double>(wbytes) + static_cast<double>(kv_per_token) * (c + o.decode_steps / 2);
      out["decode"].push_back({{"context", c},
                               {"l2_prefetch_mb", static_cast<double>(gpu.l2_prefetch_bytes()) / (1 << 20)},
                               {"ms_per_token", s * 1e3},
                               {"tok_s", 1.0 / s},
                               {"bytes_per_token", bytes},
                               {"gbps", bytes / s / 1e9},
                               {"pct_of_copy", 100.0 * bytes / s / 1e9 / copy_gbps}});
    }
  }
  // One more step of each kind, outside the timing, inside NVTX ranges ("prefill_<n>",
  // "decode_<context>") that a profiler can select: `ncu --nvtx --nvtx-include "decode_4096/"`.
  for (int64_t n : o.prefill) {
    nvtxRangePushA(fmt::format("prefill_{}", n).c_str());
    model.forward(std::span<const int32_t>(tokens.data(), static_cast<size_t>(n)), 0, cache, 1, logits);
    nvtxRangePop();
  }
  for (int64_t c : o.contexts) {
    nvtxRangePushA(fmt::format("decode_{}", c).c_str());
    model.forward(std::span<const int32_t>(tokens.data(), 1), c, cache, 1, {});
    gpu.sample(model.device_logits(1), greedy, {}, 0.0);
    nvtxRangePop();
  }

  const auto [free_b, total_b] = ctx.mem_info();
  out["peak_bytes_model"] = gpu.arena_bytes();  // the plan: one arena, nothing allocated after load
  out["device_used_bytes"] = total_b - free_b;
  out["plan_bytes"] = gpu.arena_bytes();
  out["weight_bytes_per_token"] = wbytes;
  out["device_allocations_after_load"] = gpu.device_alloc_count();

  if (o.json) {
    fmt::print("{}\n", out.dump(2));
    return;
  }
  fmt::print("nibble bench on {}\nmodel: {}, KV cache {}, CUDA graphs {}\n", gpu.name(), source, o.kv_cache,
             o.no_graphs ? "off" : "on");
  fmt::print("copy bandwidth (device-to-device, read+write): {:.0f} GB/s\n", copy_gbps);
  fmt::print("bf16 tensor-core rate (cuBLASLt 8192^3): {:.0f} TFLOP/s\n", tc_tflops);
  for (const auto& p : out["prefill"])
    fmt::print(
        "prefill {:>5} tokens: {:>9.0f} tok/s ({:.1f} ms), {:.0f} TFLOP/s = {:.1f}% of the bf16 rate\n",
        p["tokens"].get<int64_t>(), p["tok_s"].get<double>(), p["seconds"].get<double>() * 1e3,
        p["tflops"].get<double>(), p["pct_of_tensor"].get<double>());
  for (const auto& d : out["decode"])
    fmt::print(
        "decode at context {:>5} (L2 prefetch {:>4.0f} MiB): {:>7.1f} tok/s ({:.3f} ms/token), {:.2f} "
        "GB/token, "
        "{:.0f} GB/s = {:.1f}% of copy\n",
        d["context"].get<int64_t>(), d["l2_prefetch_mb"].get<double>(), d["tok_s"].get<double>(),
        d["ms_per_token"].get<double>(), d["bytes_per_token"].get<double>() / 1e9, d["gbps"].get<double>(),
        d["pct_of_copy"].get<double>());
  fmt::print(
      "peak memory: {:.3f} GB planned and allocated once for the model, {:.3f} GB used on the device\n",
      gpu.arena_bytes() / 1e9, (total_b - free_b) / 1e9);
}
#endif

}  // namespace

void add_bench_command(CLI::App& app) {
  auto opts = std::make_shared<BenchOptions>();
  CLI::App* cmd = app.add_subcommand("bench", "Measure copy bandwidth, prefill and decode speed on the GPU");
  cmd->add_option("--model", opts->model, "HF model directory (BF16 or NVFP4)");
  cmd->add_option("--preset", opts->preset, "A model shape without a checkpoint: qwen3-4b");
  cmd->add_flag("--random-weights", opts->random_weights, "With --preset: random NVFP4 weights");
  cmd->add_flag("--json", opts->json, "Print the results as JSON");
  cmd->add_option("--device-index", opts->device, "CUDA device index (default 0)");
  cmd->add_option("--prefill", opts->prefill, "Prefill sizes in tokens (default 512 2048)")->delimiter(',');
  cmd->add_option("--decode-contexts", opts->contexts, "Decode contexts in tokens (default 0 4096 32768)")
      ->delimiter(',');
  cmd->add_option("--decode-steps", opts->decode_steps, "Tokens decoded per timed run (default 32)");
  cmd->add_option("--reps", opts->reps, "Timed runs after one warm-up; the median is reported (default 4)");
  cmd->add_option("--kv-cache", opts->kv_cache, "KV cache element type: bf16 or fp8 (E4M3)");
  cmd->add_flag("--no-graphs", opts->no_graphs, "Launch every op of a decode step instead of a CUDA graph");
  cmd->add_option(
         "--l2-prefetch-mb", opts->l2_prefetch_mb,
         "How far ahead (MiB) decode GEMVs pull weights into L2, 0 = off; a list runs decode once per "
         "value (default: the backend's, off)")
      ->delimiter(',');
  cmd->callback([opts] {
#ifdef NIBBLE_HAVE_CUDA
    run_bench(*opts);
#else
    fail(
        "nibble bench measures the GPU; this build has no CUDA backend (nvcc was not found at configure "
        "time)");
#endif
  });
}

}  // namespace nibble::app
