#include "backend/cuda/cuda_backend.h"

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "backend/cpu/convert.h"
#include "backend/cuda/activation.cuh"
#include "backend/cuda/attention.cuh"
#include "backend/cuda/attention_prefill.cuh"
#include "backend/cuda/check.cuh"
#include "backend/cuda/context.cuh"
#include "backend/cuda/embedding.cuh"
#include "backend/cuda/linear.cuh"
#include "backend/cuda/memory.cuh"
#include "backend/cuda/norm.cuh"
#include "backend/cuda/rope.cuh"
#include "backend/cuda/sampling.cuh"
#include "core/half.h"
#include "model/qwen3.h"
#include "runtime/sampler.h"

namespace nibble {

namespace {

using cuda::bf16;

constexpr size_t kBlasWorkspace = size_t{32} << 20;  // NVIDIA's suggestion for Hopper cuBLASLt
constexpr int64_t kMaxStepTokens = 8;                // tokens of a recorded step at most
constexpr size_t kStepSlots = 1 + kMaxStepTokens;    // [0] pos0, then the ids

void require(bool ok, const char* what, const Tensor& t) {
  if (!ok) fail("cuda backend: {} (tensor {})", what, t.shape_string());
}

const float* opt_f32(const Tensor& t) {
  if (t.empty()) return nullptr;
  require(t.dtype == DType::F32, "expected an F32 vector (uploaded norm / bias)", t);
  return t.as<const float>();
}

cuda::KvType kv_type_of(const KvCache& cache, const char* op) {
  if (cache.dtype != DType::BF16 && cache.dtype != DType::F8_E4M3)
    fail("cuda backend: {}: BF16 or F8_E4M3 KV cache expected, got {}", op, dtype_name(cache.dtype));
  return cache.dtype == DType::F8_E4M3 ? cuda::KvType::FP8_E4M3 : cuda::KvType::BF16;
}

// Bytes a host weight takes once uploaded: dense -> BF16, NVFP4 -> codes + scales.
size_t weight_bytes(const Weight& w) {
  if (w.is_nvfp4())
    return cuda::MemoryPlan::padded(w.out * w.in / 2) + cuda::MemoryPlan::padded(w.out * w.in / 16);
  return static_cast<size_t>(w.out * w.in) * 2;
}

}  // namespace

CudaBackend::CudaBackend(const CudaBackendOptions& opts)
    : ctx_(std::make_unique<cuda::Context>(opts.device)), opts_(opts) {
  if (opts.kv_dtype != DType::BF16 && opts.kv_dtype != DType::F8_E4M3)
    fail("cuda backend: KV cache type {} (BF16 or F8_E4M3 expected)", dtype_name(opts.kv_dtype));
  // The sampled ids: pinned and mapped, written by the sampling kernel itself (no copy after it).
  CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&host_id_), kSampleSlots * sizeof(int32_t),
                           cudaHostAllocMapped));
  CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&host_id_dev_), host_id_, 0));
  for (void*& ev : sampled_) {
    cudaEvent_t e;
    CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    ev = e;
  }
  CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&host_step_), kStepSlots * sizeof(int32_t)));
  cudaEvent_t e;
  CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  step_copied_ = e;
  set_l2_prefetch_bytes(opts.l2_prefetch_bytes);
}

void CudaBackend::set_l2_prefetch_bytes(size_t bytes) {
  drop_recordings();
  l2_lookahead_ = std::min(bytes, ctx_->info().l2_bytes / 2) / 16 * 16;
}

CudaBackend::~CudaBackend() {
  if (ctx_) cudaStreamSynchronize(ctx_->stream());
  drop_recordings();
  if (step_copied_) cudaEventDestroy(static_cast<cudaEvent_t>(step_copied_));
  for (void* ev : sampled_)
    if (ev) cudaEventDestroy(static_cast<cudaEvent_t>(ev));
  if (host_step_) cudaFreeHost(host_step_);
  uploads_.clear();  // Buffers free through raw_free while the arena still exists
  for (auto& [p, bytes] : own_allocs_) ctx_->device_free(p, bytes);
  own_allocs_.clear();
  arena_.reset();
  if (host_id_) cudaFreeHost(host_id_);
}

std::string CudaBackend::name() const {
  const auto& i = ctx_->info();
  return fmt::format("cuda:{} ({}, {} SMs, {:.0f} GB)", i.index, i.name, i.sm_count, i.total_bytes / 1e9);
}

int64_t CudaBackend::device_alloc_count() const { return ctx_->alloc_count(); }
size_t CudaBackend::arena_bytes() const { return arena_ ? arena_->bytes() : 0; }
size_t CudaBackend::arena_used() const { return arena_used_; }

// ---- memory -----------------------------------------------------------------------------------

void* CudaBackend::carve(size_t bytes, const char* what) {
  if (arena_) {
    const size_t padded = cuda::MemoryPlan::padded(bytes);
    if (arena_used_ + padded > arena_->bytes())
      fail(
          "internal error: the GPU memory plan is {} bytes short for {} ({} bytes; {} of {} used) — "
          "plan_model_memory no longer matches the model's allocations",
          arena_used_ + padded - arena_->bytes(), what, bytes, arena_used_, arena_->bytes());
    void* p = arena_->get<char>() + arena_used_;
    arena_used_ += padded;
    return p;
  }
  void* p = ctx_->device_alloc(bytes, what);
  own_allocs_.emplace_back(p, bytes);
  return p;
}

void* CudaBackend::raw_alloc(size_t bytes) {
  void* p = carve(bytes, "a model buffer");
  CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, ctx_->stream()));
  return p;
}

void CudaBackend::raw_free(void* p) {
  auto it = std::find_if(own_allocs_.begin(), own_allocs_.end(), [&](const auto& a) { return a.first == p; });
  if (it == own_allocs_.end()) return;  // arena memory lives as long as the backend
  drop_recordings();  // a recording points at the buffers it ran on; a later allocation may reuse this one
  ctx_->device_free(it->first, it->second);
  own_allocs_.erase(it);
}

void CudaBackend::ensure_workspace(size_t scratch_bytes) {
  if (!blas_ws_) {
    blas_ws_ = carve(kBlasWorkspace, "the cuBLASLt workspace");
    ctx_->set_blas_workspace(blas_ws_, kBlasWorkspace);
  }
  grow(scratch_, scratch_bytes_, scratch_bytes, "op scratch");
  if (!step_) step_ = static_cast<int32_t*>(carve(kStepSlots * 4, "step inputs"));
}

void CudaBackend::grow(void*& buf, size_t& have, size_t bytes, const char* what) {
  if (bytes <= have) return;
  if (arena_) fail("internal error: {} of {} bytes needed, {} planned", what, bytes, have);
  buf = carve(bytes, what);  // the smaller one stays allocated until the end
  have = bytes;
}

void CudaBackend::ensure_ids(size_t count) {
  if (count <= ids_capacity_) return;
  if (arena_) fail("internal error: {} ids staged, {} planned", count, ids_capacity_);
  ids_ = static_cast<int32_t*>(carve(count * 4, "token ids"));
  ids_capacity_ = count;
}

cuda::MemoryPlan plan_model_memory(const ModelConfig& c, const ModelWeights& host, int64_t context,
                                   int64_t max_tokens, DType kv_dtype) {
  cuda::MemoryPlan plan;
  const int64_t dim = c.hidden_size, hd = c.head_dim, ffn = c.intermediate_size, V = c.vocab_size;
  const int64_t qd = c.num_heads * hd, kvd = c.num_kv_heads * hd, n = max_tokens;
  auto weight = [&](const std::string& name, const Weight& w) { plan.add("weights", name, weight_bytes(w)); };
  auto vec = [&](const std::string& name, const Tensor& t) {
    if (!t.empty()) plan.add("weights", name, static_cast<size_t>(t.numel()) * 4);  // uploaded as F32
  };
  weight("embed_tokens", host.embed_tokens);
  for (size_t l = 0; l < host.layers.size(); ++l) {
    const LayerWeights& L = host.layers[l];
    const std::string p = fmt::format("layers.{}.", l);
    vec(p + "input_norm", L.input_norm);
    weight(p + "q_proj", L.q_proj);
    weight(p + "k_proj", L.k_proj);
    weight(p + "v_proj", L.v_proj);
    vec(p + "q_bias", L.q_bias);
    vec(p + "k_bias", L.k_bias);
    vec(p + "v_bias", L.v_bias);
    vec(p + "q_norm", L.q_norm);
    vec(p + "k_norm", L.k_norm);
    weight(p + "o_proj", L.o_proj);
    vec(p + "o_bias", L.o_bias);
    vec(p + "post_attention_norm", L.post_attention_norm);
    weight(p + "gate_proj", L.gate_proj);
    weight(p + "up_proj", L.up_proj);
    weight(p + "down_proj", L.down_proj);
  }
  vec("final_norm", host.final_norm);
  if (host.lm_head.data != host.embed_tokens.data) weight("lm_head", host.lm_head);

  const size_t kv = static_cast<size_t>(c.num_layers * c.num_kv_heads * context * hd) * dtype_size(kv_dtype);
  plan.add("kv cache", "k", kv);
  plan.add("kv cache", "v", kv);

  // Mirrors Qwen3Model's buffers (model/qwen3.cpp); the memory test checks that they fit.
  auto act = [&](const std::string& name, int64_t rows, int64_t cols, size_t esize = 2) {
    plan.add("activations", name, static_cast<size_t>(rows * cols) * esize);
  };
  act("rope.inv_freq", 1, hd / 2, 4);
  for (const char* name : {"x_norm", "attn_proj", "h", "h_norm", "mlp_out", "x0", "x1"}) act(name, n, dim);
  for (const char* name : {"q", "attn"}) act(name, n, qd);
  for (const char* name : {"k", "v"}) act(name, n, kvd);
  if (c.qk_norm) act("q_rot", n, qd), act("k_rot", n, kvd);
  for (const char* name : {"gate", "up", "act"}) act(name, n, ffn);
  const int64_t logit_chunk = std::min<int64_t>(n, 16);
  act("final_norm", logit_chunk, dim);
  act("logits", logit_chunk, V, 4);  // F32 or BF16: plan the larger

  cuda::AttentionShape as{c.num_heads, c.num_kv_heads, hd, context};
  size_t scratch = std::max(cuda::attention_scratch_bytes(as, n), cuda::sampling_scratch_bytes(V));
  auto each_weight = [&](const Weight& w, const Tensor& bias) {
    scratch = std::max(scratch, cuda::linear_scratch_bytes(w, n, !bias.empty(), DType::BF16));
  };
  each_weight(host.lm_head, Tensor());
  for (const LayerWeights& L : host.layers) {
    each_weight(L.q_proj, L.q_bias), each_weight(L.k_proj, L.k_bias), each_weight(L.v_proj, L.v_bias);
    each_weight(L.o_proj, L.o_bias);
    for (const Weight* w : {&L.gate_proj, &L.up_proj, &L.down_proj}) each_weight(*w, Tensor());
  }
  plan.add("workspace", "cuBLASLt", kBlasWorkspace);
  plan.add("workspace", "op scratch", scratch);
  plan.add("workspace", "norm handoff", cuda::norm_handoff_bytes(std::min(n, cuda::kGemvMaxTokens), dim));
  plan.add("workspace", "paired x", static_cast<size_t>(c.intermediate_size) * 2);
  plan.add("workspace", "token ids", static_cast<size_t>(std::max(n, context)) * 4);
  plan.add("workspace", "step inputs", kStepSlots * 4);
  return plan;
}

std::string CudaBackend::prepare_model(const ModelConfig& config, const ModelWeights& host, int64_t context,
                                       int64_t max_tokens) {
  if (arena_) fail("cuda backend: prepare_model called twice");
  if (blas_ws_ || scratch_ || ids_ || handoff_buf_ || paired_buf_)
    fail("cuda backend: prepare_model must come before the first op");
  const cuda::MemoryPlan plan = plan_model_memory(config, host, context, max_tokens, opts_.kv_dtype);
  std::optional<size_t> budget;
  if (opts_.mem_budget_gb) budget = static_cast<size_t>(*opts_.mem_budget_gb * 1e9);
  std::string text = plan.describe(budget);
  const auto [free_b, total_b] = ctx_->mem_info();
  text += fmt::format("  {:<12} {:>10.3f} GB  of {:.3f} GB on {}\n", "free now", free_b / 1e9, total_b / 1e9,
                      ctx_->info().name);
  if (budget && plan.total_bytes() > *budget)
    fail(
        "the model does not fit the GPU memory budget of {:.3f} GB (--gpu-mem-budget); a smaller --context "
        "shrinks the KV cache\n{}",
        *budget / 1e9, text);
  if (plan.total_bytes() > free_b)
    fail(
        "the model does not fit the free GPU memory ({:.3f} GB free); a smaller --context shrinks the KV "
        "cache\n{}",
        free_b / 1e9, text);
  arena_ = std::make_unique<cuda::DeviceBuffer>(*ctx_, plan.total_bytes(), "the memory plan");
  arena_used_ = 0;
  // The backend's own workspace entries, carved now (the same sizes as in the plan).
  for (const auto& e : plan.entries()) {
    if (e.group != "workspace") continue;
    if (e.name == "cuBLASLt") {
      blas_ws_ = carve(e.bytes, "the cuBLASLt workspace");
      ctx_->set_blas_workspace(blas_ws_, e.bytes);
    } else if (e.name == "op scratch") {
      scratch_ = carve(e.bytes, "op scratch");
      scratch_bytes_ = e.bytes;
    } else if (e.name == "norm handoff") {
      handoff_buf_ = carve(e.bytes, "norm handoff");
      handoff_bytes_ = e.bytes;
    } else if (e.name == "paired x") {
      paired_buf_ = carve(e.bytes, "paired x");
      paired_bytes_ = e.bytes;
    } else if (e.name == "token ids") {
      ids_ = static_cast<int32_t*>(carve(e.bytes, "token ids"));
      ids_capacity_ = e.bytes / 4;
    } else if (e.name == "step inputs") {
      step_ = static_cast<int32_t*>(carve(e.bytes, "step inputs"));
    }
  }
  return text;
}

// ---- transfers --------------------------------------------------------------------------------

Weight CudaBackend::upload_weight(const Weight& host) {
  Weight w = host;
  cudaStream_t s = ctx_->stream();
  if (host.is_nvfp4()) {
    if (host.in % 16 != 0) fail("cuda backend: NVFP4 weight with K={} (a multiple of 16 expected)", host.in);
    const size_t codes = static_cast<size_t>(host.out * host.in / 2),
                 scales = static_cast<size_t>(host.out * host.in / 16);
    uploads_.push_back(alloc(codes));
    void* d = uploads_.back().data();
    uploads_.push_back(alloc(scales));
    void* sc = uploads_.back().data();
    CUDA_CHECK(cudaMemcpyAsync(d, host.data, codes, cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaMemcpyAsync(sc, host.scales, scales, cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    w.data = d;
    w.scales = static_cast<const uint8_t*>(sc);
    if (codes + scales <= ctx_->info().l2_bytes / 2) {  // the L2 prefetch stream (see l2_prefetch)
      stream_index_[d] = stream_.size();
      for (const auto& [p, bytes] : {std::pair<const void*, size_t>{d, codes}, {sc, scales}}) {
        const size_t span = (bytes + 15) / 16 * 16;  // stream offsets stay 16-byte aligned
        stream_.push_back({p, bytes, span, stream_bytes_});
        stream_bytes_ += span;
      }
    }
    return w;
  }
  // Dense: BF16 on the device, converted a row block at a time (RNE, core/half.h).
  const size_t count = static_cast<size_t>(host.out * host.in);
  uploads_.push_back(alloc(count * 2));
  auto* d = static_cast<uint16_t*>(uploads_.back().data());
  if (host.dtype == DType::BF16) {
    CUDA_CHECK(cudaMemcpyAsync(d, host.data, count * 2, cudaMemcpyHostToDevice, s));
  } else {
    constexpr size_t kChunk = size_t{1} << 22;
    std::vector<float> f(std::min(count, kChunk));
    std::vector<uint16_t> b(f.size());
    for (size_t off = 0; off < count; off += kChunk) {
      const size_t m = std::min(kChunk, count - off);
      const char* src = static_cast<const char*>(host.data) + off * dtype_size(host.dtype);
      cpu::load_row_f32(src, host.dtype, static_cast<int64_t>(m), f.data());
      for (size_t i = 0; i < m; ++i) b[i] = f32_to_bf16(f[i]);
      CUDA_CHECK(cudaMemcpyAsync(d + off, b.data(), m * 2, cudaMemcpyHostToDevice, s));
      CUDA_CHECK(cudaStreamSynchronize(s));  // b is reused by the next chunk
    }
  }
  CUDA_CHECK(cudaStreamSynchronize(s));
  w.format = WeightFormat::Dense;
  w.dtype = DType::BF16;
  w.data = d;
  w.scales = nullptr;
  return w;
}

Tensor CudaBackend::upload_tensor(const Tensor& host) {
  std::vector<float> f(static_cast<size_t>(host.numel()));
  cpu::load_row_f32(host.data, host.dtype, host.numel(), f.data());
  uploads_.push_back(alloc(f.size() * 4));
  Tensor t = host;
  t.data = uploads_.back().data();
  t.dtype = DType::F32;
  CUDA_CHECK(cudaMemcpyAsync(t.data, f.data(), f.size() * 4, cudaMemcpyHostToDevice, ctx_->stream()));
  CUDA_CHECK(cudaStreamSynchronize(ctx_->stream()));
  return t;
}

void CudaBackend::copy_to_host(const Tensor& src, std::span<float> dst) {
  NIBBLE_ASSERT(static_cast<int64_t>(dst.size()) == src.numel());
  cudaStream_t s = ctx_->stream();
  if (src.dtype == DType::F32) {
    CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data, dst.size() * 4, cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    return;
  }
  require(src.dtype == DType::BF16, "copy_to_host: F32 or BF16 expected", src);
  std::vector<uint16_t> b(dst.size());
  CUDA_CHECK(cudaMemcpyAsync(b.data(), src.data, b.size() * 2, cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  for (size_t i = 0; i < b.size(); ++i) dst[i] = bf16_to_f32(b[i]);
}

void CudaBackend::copy_from_host(std::span<const float> src, const Tensor& dst) {
  NIBBLE_ASSERT(static_cast<int64_t>(src.size()) == dst.numel());
  cudaStream_t s = ctx_->stream();
  if (dst.dtype == DType::F32) {
    CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data(), src.size() * 4, cudaMemcpyHostToDevice, s));
  } else {
    require(dst.dtype == DType::BF16, "copy_from_host: F32 or BF16 expected", dst);
    std::vector<uint16_t> b(src.size());
    for (size_t i = 0; i < b.size(); ++i) b[i] = f32_to_bf16(src[i]);
    CUDA_CHECK(cudaMemcpyAsync(dst.data, b.data(), b.size() * 2, cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaStreamSynchronize(s));  // before b goes
    return;
  }
  CUDA_CHECK(cudaStreamSynchronize(s));
}

void CudaBackend::synchronize() { ctx_->synchronize(); }

// ---- ops --------------------------------------------------------------------------------------

void CudaBackend::embedding_forward(const Weight& table, std::span<const int32_t> tokens, const Tensor& out) {
  if (table.is_nvfp4() || table.dtype != DType::BF16)
    fail("cuda backend: the embedding table must be dense BF16");
  require(
      out.dtype == DType::BF16 && out.rows() == static_cast<int64_t>(tokens.size()) && out.cols() == table.in,
      "embedding_forward: out must be (n, dim) BF16", out);
  if (recording_) {  // the ids of every replay are at step_ + 1 (set_step_inputs)
    cuda::embedding_forward(*ctx_, step_ + 1, static_cast<int64_t>(tokens.size()),
                            static_cast<const bf16*>(table.data), table.out, table.in, out.as<bf16>());
    return;
  }
  ensure_ids(std::max<size_t>(tokens.size(), 1));
  CUDA_CHECK(cudaMemcpyAsync(ids_, tokens.data(), tokens.size() * 4, cudaMemcpyHostToDevice, ctx_->stream()));
  cuda::embedding_forward(*ctx_, ids_, static_cast<int64_t>(tokens.size()),
                          static_cast<const bf16*>(table.data), table.out, table.in, out.as<bf16>());
}

void CudaBackend::rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, const Tensor& out,
                                  const Tensor& rstd) {
  const int64_t rows = x.rows(), dim = x.cols();
  require(x.dtype == DType::BF16 && out.dtype == DType::BF16 && out.rows() == rows && out.cols() == dim,
          "rmsnorm_forward: x and out must be (rows, dim) BF16", x);
  require(w.numel() == dim, "rmsnorm_forward: weight size", w);
  require(rstd.empty() || (rstd.dtype == DType::F32 && rstd.numel() == rows), "rmsnorm_forward: rstd", rstd);
  cuda::rmsnorm_forward(*ctx_, x.as<const bf16>(), dim, rows, 1, dim, opt_f32(w), eps, out.as<bf16>(), dim,
                        rstd.empty() ? nullptr : rstd.as<float>());
}

void CudaBackend::linear_forward(const Tensor& x, const Weight& w, const Tensor& bias, const Tensor& out) {
  const int64_t n = x.rows();
  require(x.dtype == DType::BF16 && x.cols() == w.in, "linear_forward: x must be (n, in) BF16", x);
  require((out.dtype == DType::BF16 || out.dtype == DType::F32) && out.rows() == n && out.cols() == w.out,
          "linear_forward: out must be (n, out) BF16 or F32", out);
  require(bias.empty() || bias.numel() == w.out, "linear_forward: bias size", bias);
  const size_t need = cuda::linear_scratch_bytes(w, n, !bias.empty(), out.dtype);
  ensure_workspace(need);
  cuda::linear_forward(*ctx_, x.as<const bf16>(), w.in, n, w, opt_f32(bias), out.data, out.dtype, w.out,
                       {scratch_, scratch_bytes_}, l2_prefetch(w, w));
}

void CudaBackend::rope_forward(const Tensor& x, int64_t pos0, const RopeTable& rope) {
  require(x.dtype == DType::BF16 && x.rank == 3, "rope_forward: x must be (n, heads, hd) BF16", x);
  const int64_t n = x.dim(0), heads = x.dim(1), hd = x.dim(2);
  require(rope.inv_freq.numel() == hd / 2, "rope_forward: inv_freq size", rope.inv_freq);
  cuda::rope_forward(*ctx_, x.as<bf16>(), heads * hd, n, heads, hd, pos0, step_pos(), opt_f32(rope.inv_freq),
                     rope.attention_scaling);
}

// While recording, positions come from step_ and the host pos0 only sizes the launch: every later
// replay may sit anywhere up to the end of the cache (the kernels skip positions past it).
void CudaBackend::kv_cache_write(const Tensor& k, const Tensor& v, KvCache& cache, int64_t layer,
                                 int64_t pos0) {
  require(k.rank == 3 && v.rank == 3 && k.dtype == DType::BF16 && v.dtype == DType::BF16 &&
              v.dim(0) == k.dim(0) && v.dim(1) == k.dim(1) && v.dim(2) == k.dim(2),
          "kv_cache_write: k and v must be (n, hkv, hd) BF16", k);
  const int64_t n = k.dim(0), hkv = k.dim(1), hd = k.dim(2);
  require(cache.kv_heads == hkv && cache.head_dim == hd, "kv_cache_write: shapes disagree with the cache", k);
  const cuda::KvType kv = kv_type_of(cache, "kv_cache_write");
  const int32_t* d_pos0 = step_pos();
  cuda::kv_cache_write(*ctx_, k.as<const bf16>(), hkv * hd, v.as<const bf16>(), hkv * hd, n,
                       d_pos0 ? cache.capacity - n : pos0, d_pos0, cache.k_layer(layer).data,
                       cache.v_layer(layer).data, kv,
                       cuda::AttentionShape{hkv, hkv, hd, cache.capacity});  // no query heads here
}

void CudaBackend::attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, KvCache& cache,
                                    int64_t layer, int64_t pos0, float scale, const Tensor& out) {
  require(q.rank == 3 && out.rank == 3 && q.dtype == DType::BF16 && out.dtype == DType::BF16,
          "attention_forward: q, out must be rank-3 BF16", q);
  require(k.empty() == v.empty(), "attention_forward: k and v are given together or not at all", q);
  const cuda::KvType kv = kv_type_of(cache, "attention_forward");
  const int64_t n = q.dim(0), hq = q.dim(1), hd = q.dim(2), hkv = cache.kv_heads;
  const cuda::AttentionShape s{hq, hkv, hd, cache.capacity};
  cuda::check_attention_shape(s);
  require(cache.head_dim == hd && out.dim(0) == n && out.dim(1) == hq && out.dim(2) == hd &&
              (k.empty() || k.dim(0) == n),
          "attention_forward: shapes disagree with the cache", q);
  if (!k.empty()) kv_cache_write(k, v, cache, layer, pos0);
  void* kc = cache.k_layer(layer).data;
  void* vc = cache.v_layer(layer).data;
  const int32_t* d_pos0 = step_pos();
  const int64_t pos_bound = d_pos0 ? cache.capacity - n : pos0;
  // Prompts: the tensor-core flash-attention kernel; decode-sized n: split-KV flash-decoding.
  if (n > cuda::kGemvMaxTokens && !d_pos0 && cuda::attention_prefill_supported(hq, hkv, hd)) {
    cuda::attention_prefill(*ctx_, q.as<const bf16>(), hq * hd, n, pos0, kc, vc, kv, hq, hkv, hd,
                            cache.capacity, scale, out.as<bf16>(), hq * hd);
    return;
  }
  ensure_workspace(cuda::attention_scratch_bytes(s, n));
  cuda::attention_forward(*ctx_, q.as<const bf16>(), hq * hd, n, pos_bound, d_pos0, kc, vc, kv, s, scale,
                          out.as<bf16>(), hq * hd, {scratch_, scratch_bytes_});
}

void CudaBackend::swiglu_forward(const Tensor& gate, const Tensor& up, const Tensor& out) {
  require(gate.dtype == DType::BF16 && up.dtype == DType::BF16 && out.dtype == DType::BF16 &&
              gate.numel() == up.numel() && gate.numel() == out.numel(),
          "swiglu_forward: gate, up, out must be BF16 of one shape", gate);
  const int64_t d = gate.cols();
  cuda::swiglu_forward(*ctx_, gate.as<const bf16>(), d, up.as<const bf16>(), d, gate.rows(), d,
                       out.as<bf16>(), d);
}

void CudaBackend::add_forward(const Tensor& a, const Tensor& b, const Tensor& out) {
  require(a.dtype == DType::BF16 && b.dtype == DType::BF16 && out.dtype == DType::BF16 &&
              a.numel() == b.numel() && a.numel() == out.numel(),
          "add_forward: a, b, out must be BF16 of one shape", a);
  cuda::add_forward(*ctx_, a.as<const bf16>(), b.as<const bf16>(), a.numel(), out.as<bf16>());
}

void CudaBackend::qk_norm_rope_forward(const Tensor& q, const Tensor& k, const Tensor& q_norm,
                                       const Tensor& k_norm, float eps, int64_t pos0, const RopeTable& rope,
                                       const Tensor& q_out, const Tensor& k_out) {
  require(q.rank == 3 && k.rank == 3 && q.dtype == DType::BF16 && k.dtype == DType::BF16 &&
              q_out.dtype == DType::BF16 && k_out.dtype == DType::BF16 && q_out.numel() == q.numel() &&
              k_out.numel() == k.numel() && k.dim(0) == q.dim(0) && k.dim(2) == q.dim(2),
          "qk_norm_rope_forward: q (n, hq, hd), k (n, hkv, hd) and outputs of their shapes, BF16", q);
  const int64_t n = q.dim(0), hq = q.dim(1), hkv = k.dim(1), hd = q.dim(2);
  require(rope.inv_freq.numel() == hd / 2, "qk_norm_rope_forward: inv_freq size", rope.inv_freq);
  require(q_norm.empty() || (q_norm.numel() == hd && k_norm.numel() == hd), "qk_norm_rope_forward: norm size",
          q_norm);
  cuda::qk_norm_rope_forward(*ctx_, q.as<const bf16>(), hq * hd, k.as<const bf16>(), hkv * hd, n, hq, hkv, hd,
                             q_norm.empty() ? nullptr : opt_f32(q_norm),
                             k_norm.empty() ? nullptr : opt_f32(k_norm), eps, pos0, step_pos(),
                             opt_f32(rope.inv_freq), rope.attention_scaling, q_out.as<bf16>(), hq * hd,
                             k_out.as<bf16>(), hkv * hd);
}

void CudaBackend::qk_norm_rope_kv_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                          const Tensor& q_norm, const Tensor& k_norm, float eps, int64_t pos0,
                                          const RopeTable& rope, const Tensor& q_out, const Tensor& k_out,
                                          KvCache& cache, int64_t layer) {
  require(q.rank == 3 && k.rank == 3 && v.rank == 3 && q.dtype == DType::BF16 && k.dtype == DType::BF16 &&
              v.dtype == DType::BF16 && q_out.dtype == DType::BF16 && k_out.dtype == DType::BF16 &&
              q_out.numel() == q.numel() && k_out.numel() == k.numel() && k.dim(0) == q.dim(0) &&
              k.dim(2) == q.dim(2) && v.dim(0) == k.dim(0) && v.dim(1) == k.dim(1) && v.dim(2) == k.dim(2),
          "qk_norm_rope_kv_forward: q (n, hq, hd), k and v (n, hkv, hd) and outputs of their shapes, BF16",
          q);
  const int64_t n = q.dim(0), hq = q.dim(1), hkv = k.dim(1), hd = q.dim(2);
  require(rope.inv_freq.numel() == hd / 2, "qk_norm_rope_kv_forward: inv_freq size", rope.inv_freq);
  require(q_norm.empty() || (q_norm.numel() == hd && k_norm.numel() == hd),
          "qk_norm_rope_kv_forward: norm size", q_norm);
  require(cache.kv_heads == hkv && cache.head_dim == hd,
          "qk_norm_rope_kv_forward: shapes disagree with the cache", k);
  const cuda::KvType kv = kv_type_of(cache, "qk_norm_rope_kv_forward");
  cuda::check_attention_shape(cuda::AttentionShape{hq, hkv, hd, cache.capacity});
  const int32_t* d_pos0 = step_pos();  // as in kv_cache_write
  cuda::qk_norm_rope_kv_forward(
      *ctx_, q.as<const bf16>(), hq * hd, k.as<const bf16>(), hkv * hd, v.as<const bf16>(), hkv * hd, n, hq,
      hkv, hd, q_norm.empty() ? nullptr : opt_f32(q_norm), k_norm.empty() ? nullptr : opt_f32(k_norm), eps,
      d_pos0 ? cache.capacity - n : pos0, d_pos0, opt_f32(rope.inv_freq), rope.attention_scaling,
      q_out.as<bf16>(), hq * hd, k_out.as<bf16>(), hkv * hd, cache.k_layer(layer).data,
      cache.v_layer(layer).data, kv, cache.capacity);
}

// One decode token: the attention kernel normalises and rotates q and k itself and appends k, v to
// the cache (cuda::qk_norm_rope_attention_forward); q_out and k_out stay unwritten. Anything else
// takes the composition (qk_norm_rope_kv_forward, attention_forward).
void CudaBackend::qk_norm_rope_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                                 const Tensor& q_norm, const Tensor& k_norm, float eps,
                                                 int64_t pos0, const RopeTable& rope, const Tensor& q_out,
                                                 const Tensor& k_out, KvCache& cache, int64_t layer,
                                                 float scale, const Tensor& out) {
  const bool fused =
      q.rank == 3 && q.dim(0) == 1 && k.rank == 3 && v.rank == 3 && out.rank == 3 && q.dtype == DType::BF16 &&
      k.dtype == DType::BF16 && v.dtype == DType::BF16 && out.dtype == DType::BF16 && k.dim(0) == 1 &&
      v.dim(0) == 1 && k.dim(1) == cache.kv_heads && v.dim(1) == cache.kv_heads &&
      q.dim(2) == cache.head_dim && k.dim(2) == cache.head_dim && v.dim(2) == cache.head_dim &&
      out.dim(0) == 1 && out.dim(1) == q.dim(1) && out.dim(2) == q.dim(2) &&
      rope.inv_freq.numel() == q.dim(2) / 2 &&
      (q_norm.empty() ? k_norm.empty() : q_norm.numel() == q.dim(2) && k_norm.numel() == q.dim(2));
  if (!fused)
    return Backend::qk_norm_rope_attention_forward(q, k, v, q_norm, k_norm, eps, pos0, rope, q_out, k_out,
                                                   cache, layer, scale, out);
  const cuda::KvType kv = kv_type_of(cache, "qk_norm_rope_attention_forward");
  const int64_t hq = q.dim(1), hd = q.dim(2);
  const cuda::AttentionShape s{hq, cache.kv_heads, hd, cache.capacity};
  const int32_t* d_pos0 = step_pos();
  ensure_workspace(cuda::attention_scratch_bytes(s, 1));
  cuda::qk_norm_rope_attention_forward(
      *ctx_, q.as<const bf16>(), k.as<const bf16>(), v.as<const bf16>(),
      q_norm.empty() ? nullptr : opt_f32(q_norm), k_norm.empty() ? nullptr : opt_f32(k_norm), eps,
      d_pos0 ? cache.capacity - 1 : pos0, d_pos0, opt_f32(rope.inv_freq), rope.attention_scaling,
      cache.k_layer(layer).data, cache.v_layer(layer).data, kv, s, scale, out.as<bf16>(),
      {scratch_, scratch_bytes_});
}

// The fused GEMVs (backend/cuda/linear.cuh) serve decode-sized n with NVFP4 weights; anything else
// takes the composition (Backend's defaults: cuBLASLt products, then the elementwise op).
namespace {
bool bf16_rows(const Tensor& t, int64_t n, int64_t cols) {
  return t.dtype == DType::BF16 && t.rows() == n && t.cols() == cols;
}

bool multi_fusable(const Tensor& x, std::span<const Backend::LinearOut> outs) {
  const int64_t n = x.rows();
  bool fused = x.dtype == DType::BF16 && !outs.empty() && outs.size() <= 3;
  for (const Backend::LinearOut& o : outs)
    fused = fused && cuda::nvfp4_gemv_fusable(*o.w, n) && o.w->in == x.cols() &&
            bf16_rows(*o.out, n, o.w->out) && (o.bias->empty() || o.bias->numel() == o.w->out);
  return fused;
}

bool swiglu_fusable(const Tensor& x, const Weight& gate, const Weight& up, const Tensor& out) {
  const int64_t n = x.rows();
  return x.dtype == DType::BF16 && x.cols() == gate.in && cuda::nvfp4_gemv_fusable(gate, n) &&
         cuda::nvfp4_gemv_fusable(up, n) && gate.out == up.out && gate.in == up.in &&
         bf16_rows(out, n, gate.out);
}

// The RMSNorm can go in front of a fused GEMV: x_norm (n, dim) BF16 apart from x, an F32 weight.
bool norm_fusable(const Tensor& x, const Tensor& norm_w, const Tensor& x_norm) {
  return bf16_rows(x_norm, x.rows(), x.cols()) && norm_w.dtype == DType::F32 && norm_w.numel() == x.cols() &&
         x_norm.data != x.data;
}

// The outputs of a multi_fusable call as the fused GEMV takes them; returns their count.
int gemv_targets(std::span<const Backend::LinearOut> outs, cuda::GemvTarget (&targets)[3]) {
  for (size_t i = 0; i < outs.size(); ++i)
    targets[i] = {outs[i].w, opt_f32(*outs[i].bias), outs[i].out->as<bf16>(), outs[i].w->out};
  return static_cast<int>(outs.size());
}
}  // namespace

void CudaBackend::linear_multi_forward(const Tensor& x, std::span<const LinearOut> outs) {
  if (!multi_fusable(x, outs)) return Backend::linear_multi_forward(x, outs);
  cuda::GemvTarget targets[3];
  const int count = gemv_targets(outs, targets);
  cuda::nvfp4_gemv_multi(*ctx_, x.as<const bf16>(), x.cols(), x.rows(), targets, count,
                         l2_prefetch(*targets[0].w, *targets[count - 1].w));
}

void CudaBackend::linear_swiglu_forward(const Tensor& x, const Weight& gate, const Weight& up,
                                        const Tensor& gate_tmp, const Tensor& up_tmp, const Tensor& out) {
  pending_paired_ = {};
  if (!swiglu_fusable(x, gate, up, out))
    return Backend::linear_swiglu_forward(x, gate, up, gate_tmp, up_tmp, out);
  cuda::nvfp4_gemv_swiglu(*ctx_, x.as<const bf16>(), x.cols(), x.rows(), gate, up, out.as<bf16>(), out.cols(),
                          l2_prefetch(gate, up));
}

void CudaBackend::rmsnorm_linear_multi_forward(const Tensor& x, const Tensor& norm_w, float eps,
                                               const Tensor& x_norm, std::span<const LinearOut> outs) {
  cuda::NormHandoff h{};
  const bool prepared = take_handoff(x, norm_w, eps, h);
  if (!multi_fusable(x, outs) || !norm_fusable(x, norm_w, x_norm))
    return Backend::rmsnorm_linear_multi_forward(x, norm_w, eps, x_norm, outs);
  cuda::GemvTarget targets[3];
  const int count = gemv_targets(outs, targets);
  cuda::nvfp4_gemv_multi_rmsnorm(*ctx_, x.as<const bf16>(), x.cols(), x.rows(), norm_w.as<const float>(), eps,
                                 targets, count, x_norm.as<bf16>(),
                                 l2_prefetch(*targets[0].w, *targets[count - 1].w), prepared ? &h : nullptr);
}

void CudaBackend::rmsnorm_linear_swiglu_forward(const Tensor& x, const Tensor& norm_w, float eps,
                                                const Tensor& x_norm, const Weight& gate, const Weight& up,
                                                const Tensor& gate_tmp, const Tensor& up_tmp,
                                                const Tensor& out) {
  cuda::NormHandoff h{};
  const bool prepared = take_handoff(x, norm_w, eps, h);
  pending_paired_ = {};
  if (!swiglu_fusable(x, gate, up, out) || !norm_fusable(x, norm_w, x_norm))
    return Backend::rmsnorm_linear_swiglu_forward(x, norm_w, eps, x_norm, gate, up, gate_tmp, up_tmp, out);
  bf16* paired = nullptr;  // one token: out in pair order as well, for the down_proj after it
  if (x.rows() == 1 && gate.out % 8 == 0) {
    grow(paired_buf_, paired_bytes_, static_cast<size_t>(gate.out) * 2, "paired x");
    paired = static_cast<bf16*>(paired_buf_);
  }
  cuda::nvfp4_gemv_swiglu_rmsnorm(*ctx_, x.as<const bf16>(), x.cols(), x.rows(), norm_w.as<const float>(),
                                  eps, gate, up, out.as<bf16>(), out.cols(), x_norm.as<bf16>(),
                                  l2_prefetch(gate, up), prepared ? &h : nullptr, paired);
  if (paired != nullptr) pending_paired_ = {out.data, gate.out};
}

void CudaBackend::rmsnorm_linear_forward(const Tensor& x, const Tensor& norm_w, float eps,
                                         const Tensor& x_norm, const Weight& w, const Tensor& out) {
  cuda::NormHandoff h{};
  const bool prepared = take_handoff(x, norm_w, eps, h);
  const int64_t n = x.rows();
  const bool fused = x.dtype == DType::BF16 && x.cols() == w.in && cuda::nvfp4_gemv_fusable(w, n) &&
                     (out.dtype == DType::BF16 || out.dtype == DType::F32) && out.rows() == n &&
                     out.cols() == w.out && norm_fusable(x, norm_w, x_norm);
  if (!fused) return Backend::rmsnorm_linear_forward(x, norm_w, eps, x_norm, w, out);
  cuda::nvfp4_gemv_rmsnorm(*ctx_, x.as<const bf16>(), x.cols(), n, norm_w.as<const float>(), eps, w, out.data,
                           out.dtype, out.cols(), x_norm.as<bf16>(), l2_prefetch(w, w),
                           prepared ? &h : nullptr);
}

namespace {
bool residual_fusable(const Tensor& x, const Weight& w, const Tensor& bias, const Tensor& residual,
                      const Tensor& out) {
  const int64_t n = x.rows();
  return x.dtype == DType::BF16 && x.cols() == w.in && cuda::nvfp4_gemv_fusable(w, n) &&
         bf16_rows(residual, n, w.out) && bf16_rows(out, n, w.out) &&
         (bias.empty() || bias.numel() == w.out) && out.data != x.data;
}
}  // namespace

void CudaBackend::linear_residual_forward(const Tensor& x, const Weight& w, const Tensor& bias,
                                          const Tensor& residual, const Tensor& tmp, const Tensor& out) {
  pending_norm_ = {};
  const auto* paired = static_cast<const bf16*>(take_paired(x));
  if (!residual_fusable(x, w, bias, residual, out))
    return Backend::linear_residual_forward(x, w, bias, residual, tmp, out);
  cuda::nvfp4_gemv_residual(*ctx_, x.as<const bf16>(), x.cols(), x.rows(), w, opt_f32(bias),
                            residual.as<const bf16>(), residual.cols(), out.as<bf16>(), out.cols(),
                            l2_prefetch(w, w), nullptr, paired);
}

void CudaBackend::linear_residual_norm_forward(const Tensor& x, const Weight& w, const Tensor& bias,
                                               const Tensor& residual, const Tensor& tmp, const Tensor& out,
                                               const Tensor& next_norm_w, float eps) {
  const int64_t n = x.rows();
  if (!residual_fusable(x, w, bias, residual, out) || next_norm_w.dtype != DType::F32 ||
      next_norm_w.numel() != w.out)
    return linear_residual_forward(x, w, bias, residual, tmp, out);
  grow(handoff_buf_, handoff_bytes_, cuda::norm_handoff_bytes(n, w.out), "norm handoff");
  const cuda::NormHandoff h = handoff_view(next_norm_w.as<const float>(), n, w.out);
  const auto* paired = static_cast<const bf16*>(take_paired(x));
  cuda::nvfp4_gemv_residual(*ctx_, x.as<const bf16>(), x.cols(), n, w, opt_f32(bias),
                            residual.as<const bf16>(), residual.cols(), out.as<bf16>(), out.cols(),
                            l2_prefetch(w, w), &h, paired);
  pending_norm_ = {out.data, n, w.out, next_norm_w.data, eps};
}

const void* CudaBackend::take_paired(const Tensor& x) {
  const PendingPaired p = pending_paired_;
  pending_paired_ = {};
  if (p.x == nullptr || p.x != x.data || x.rows() != 1 || x.cols() != p.dim) return nullptr;
  return paired_buf_;
}

cuda::NormHandoff CudaBackend::handoff_view(const float* norm_w, int64_t rows, int64_t dim) const {
  char* buf = static_cast<char*>(handoff_buf_);
  return {norm_w, reinterpret_cast<bf16*>(buf),
          reinterpret_cast<float*>(buf + cuda::norm_handoff_sumsq_offset(rows, dim))};
}

bool CudaBackend::take_handoff(const Tensor& x, const Tensor& norm_w, float eps, cuda::NormHandoff& h) {
  const PendingNorm p = pending_norm_;
  pending_norm_ = {};
  if (p.x == nullptr || p.x != x.data || p.rows != x.rows() || p.dim != x.cols() || p.norm_w != norm_w.data ||
      p.eps != eps)
    return false;
  h = handoff_view(norm_w.as<const float>(), p.rows, p.dim);
  return true;
}

// ---- L2 prefetch ------------------------------------------------------------------------------

cuda::L2Prefetch CudaBackend::l2_prefetch(const Weight& first, const Weight& last) const {
  cuda::L2Prefetch pf;
  const auto f = stream_index_.find(first.data), l = stream_index_.find(last.data);
  if (l2_lookahead_ == 0 || f == stream_index_.end() || l == stream_index_.end() || l->second < f->second)
    return pf;
  const StreamRange& tail = stream_[l->second + 1];  // last's scales
  const size_t total = stream_bytes_;
  size_t pos = stream_[f->second].offset + l2_lookahead_;  // a multiple of 16, as every offset
  const size_t end = std::min(tail.offset + tail.span + l2_lookahead_, pos + total);
  while (pos < end && pf.count < cuda::L2Prefetch::kMaxRanges) {
    const size_t p = pos % total;
    // The range holding stream offset p: the last one that starts at or before it.
    const auto it = std::upper_bound(stream_.begin(), stream_.end(), p,
                                     [](size_t v, const StreamRange& r) { return v < r.offset; }) -
                    1;
    const size_t into = p - it->offset, len = std::min(it->offset + it->span - p, end - pos);
    if (into < it->bytes) {                          // not in the alignment padding after the range
      constexpr size_t kMaxPiece = size_t{1} << 31;  // L2Prefetch::Range::bytes is 32-bit
      pf.range[pf.count++] = {static_cast<const char*>(it->ptr) + into,
                              static_cast<uint32_t>(std::min({len, it->bytes - into, kMaxPiece}))};
    }
    pos += len;
  }
  return pf;
}

// ---- recorded steps ---------------------------------------------------------------------------

bool CudaBackend::can_record() const { return opts_.graphs; }

void CudaBackend::drop_recordings() {
  for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec));
  graphs_.clear();
}

void CudaBackend::set_step_inputs(std::span<const int32_t> tokens, int64_t pos0) {
  if (static_cast<int64_t>(tokens.size()) > kMaxStepTokens)
    fail("cuda backend: a recorded step takes at most {} tokens, got {}", kMaxStepTokens, tokens.size());
  ensure_workspace(0);
  auto* done = static_cast<cudaEvent_t>(step_copied_);
  CUDA_CHECK(cudaEventSynchronize(done));  // the previous step's upload has read host_step_
  host_step_[0] = static_cast<int32_t>(pos0);
  std::copy(tokens.begin(), tokens.end(), host_step_ + 1);
  CUDA_CHECK(
      cudaMemcpyAsync(step_, host_step_, (1 + tokens.size()) * 4, cudaMemcpyHostToDevice, ctx_->stream()));
  CUDA_CHECK(cudaEventRecord(done, ctx_->stream()));
  fed_ = false;
  step_pos0_ = pos0;
}

void CudaBackend::set_fed_step_inputs(int64_t pos0) {
  if (!fed_ || fed_pos_ != pos0)
    fail("internal error: a step fed on the device at position {}, but the last sample fed {}", pos0,
         fed_ ? fed_pos_ : -1);
  fed_ = false;  // the next sample feeds the step after this one
  step_pos0_ = pos0;
}

bool CudaBackend::replay(uint64_t key) {
  const auto it = graphs_.find(key);
  if (it == graphs_.end()) return false;
  CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(it->second), ctx_->stream()));
  return true;
}

void CudaBackend::begin_recording() {
  if (recording_) fail("cuda backend: begin_recording while recording");
  ensure_workspace(0);
  CUDA_CHECK(cudaStreamBeginCapture(ctx_->stream(), cudaStreamCaptureModeRelaxed));
  recording_ = true;
}

void CudaBackend::end_recording(uint64_t key) {
  if (!recording_) fail("cuda backend: end_recording without begin_recording");
  recording_ = false;
  cudaGraph_t graph = nullptr;
  CUDA_CHECK(cudaStreamEndCapture(ctx_->stream(), &graph));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  CUDA_CHECK(err);
  if (auto it = graphs_.find(key); it != graphs_.end()) {
    cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(it->second));
    graphs_.erase(it);
  }
  graphs_.emplace(key, exec);
  CUDA_CHECK(cudaGraphLaunch(exec, ctx_->stream()));
}

void CudaBackend::abort_recording() {
  if (!recording_) return;
  recording_ = false;
  cudaGraph_t graph = nullptr;
  if (cudaStreamEndCapture(ctx_->stream(), &graph) == cudaSuccess && graph) cudaGraphDestroy(graph);
  cudaGetLastError();  // the capture's error, if any, was reported by the op that threw
}

// ---- sampling ---------------------------------------------------------------------------------

void CudaBackend::enqueue_sample(const Tensor& logits, const SamplerParams& params,
                                 std::span<const int32_t> seen, double uniform, bool feed_step) {
  require(logits.dtype == DType::F32 || logits.dtype == DType::BF16, "sample: F32 or BF16 logits", logits);
  if (samples_begun_ - samples_ended_ >= kSampleSlots)
    fail("internal error: more than {} samples outstanding", kSampleSlots);
  if (feed_step && (step_ == nullptr || step_pos0_ < 0))
    fail("internal error: a sample feeds a step, but no recorded step ran before it");
  const int64_t V = logits.numel();
  ensure_workspace(cuda::sampling_scratch_bytes(V));
  cuda::SamplingConfig cfg;
  cfg.temperature = params.temperature;
  cfg.top_k = params.top_k;
  cfg.top_p = params.top_p;
  cfg.min_p = params.min_p;
  cfg.repetition_penalty = params.repetition_penalty;
  cudaStream_t s = ctx_->stream();
  const int32_t* seen_d = nullptr;
  if (cfg.repetition_penalty != 1.0f && !seen.empty()) {
    ensure_ids(seen.size());
    CUDA_CHECK(cudaMemcpyAsync(ids_, seen.data(), seen.size() * 4, cudaMemcpyHostToDevice, s));
    seen_d = ids_;
  }
  const float u = static_cast<float>(std::clamp(uniform, 0.0, 1.0 - 1e-7));
  const int slot = static_cast<int>(samples_begun_ % kSampleSlots);
  cuda::sample_enqueue(*ctx_, logits.data, logits.dtype == DType::BF16, V, cfg, seen_d,
                       static_cast<int64_t>(seen.size()), u, host_id_dev_ + slot, {scratch_, scratch_bytes_},
                       feed_step ? step_ : nullptr);
  CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(sampled_[slot]), s));
  ++samples_begun_;
  fed_ = feed_step;
  if (feed_step) fed_pos_ = step_pos0_ + 1;
}

int32_t CudaBackend::sample_end() {
  if (samples_ended_ == samples_begun_) fail("internal error: sample_end without an outstanding sample");
  const int slot = static_cast<int>(samples_ended_ % kSampleSlots);
  // The kernel's write to mapped host memory is visible once its event has completed.
  CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(sampled_[slot])));
  ++samples_ended_;
  return static_cast<volatile int32_t*>(host_id_)[slot];
}

std::optional<int32_t> CudaBackend::sample(const Tensor& logits, const SamplerParams& params,
                                           std::span<const int32_t> seen, double uniform) {
  if (samples_begun_ != samples_ended_)
    fail("internal error: sample() while pipelined samples are outstanding");
  enqueue_sample(logits, params, seen, uniform, false);
  return sample_end();
}

void CudaBackend::sample_begin(const Tensor& logits, const SamplerParams& params, double uniform,
                               bool feed_step) {
  if (feed_step && !can_feed_steps()) fail("cuda backend: feeding steps needs recorded steps (graphs)");
  enqueue_sample(logits, params, {}, uniform, feed_step);
}

std::unique_ptr<Backend> make_cuda_backend(const CudaBackendOptions& opts) {
  return std::make_unique<CudaBackend>(opts);
}

}  // namespace nibble
