// defines: CudaBackend (the Backend on one NVIDIA GPU: BF16 activations and KV cache, weights
// uploaded as BF16 or kept NVFP4, every op a kernel of backend/cuda/<family>.cu on the context's
// stream), make_cuda_backend, plan_model_memory, and on-device sampling.
//
// Memory (issue 5, "planned memory"): prepare_model() computes weights + KV cache + activations +
// workspaces for a model and context, refuses a plan over the budget or the free memory, and
// allocates it as one arena. Uploads and the model's buffers are then carved from the arena and
// nothing is allocated while generating. Without prepare_model() each buffer is its own cudaMalloc.
//
// Plain C++ header: CUDA types stay behind forward declarations.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "format/hf_config.h"

namespace nibble {

struct ModelWeights;
struct SamplerParams;

namespace cuda {
struct L2Prefetch;
struct NormHandoff;
class Context;
class MemoryPlan;
class DeviceBuffer;
}  // namespace cuda

struct CudaBackendOptions {
  int device = 0;
  std::optional<double> mem_budget_gb;  // --gpu-mem-budget: refuse a plan larger than this
  bool graphs = true;                   // record decode steps as CUDA graphs and replay them
  DType kv_dtype = DType::BF16;         // KV cache: BF16 or F8_E4M3 (scale 1, saturating)
  // Decode GEMVs prefetch the NVFP4 weights this many bytes ahead of their own into L2 (capped at
  // half the device's L2; 0: off). See cuda::L2Prefetch. Off by default: on an H200 (2026-11-26) a
  // 24 MiB lookahead made the decode step 5% slower (the GEMVs are bound by their own instruction
  // stream, not by DRAM latency: from L2 they run at the speed they reach from DRAM).
  size_t l2_prefetch_bytes = 0;
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const CudaBackendOptions& opts);
  ~CudaBackend() override;

  std::string name() const override;
  DType activation_dtype() const override { return DType::BF16; }
  DType kv_dtype() const override { return opts_.kv_dtype; }

  Weight upload_weight(const Weight& host) override;
  Tensor upload_tensor(const Tensor& host) override;
  void copy_to_host(const Tensor& src, std::span<float> dst) override;
  void copy_from_host(std::span<const float> src, const Tensor& dst) override;
  void synchronize() override;

  void embedding_forward(const Weight& table, std::span<const int32_t> tokens, const Tensor& out) override;
  void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, const Tensor& out,
                       const Tensor& rstd) override;
  void linear_forward(const Tensor& x, const Weight& w, const Tensor& bias, const Tensor& out) override;
  void rope_forward(const Tensor& x, int64_t pos0, const RopeTable& rope) override;
  void kv_cache_write(const Tensor& k, const Tensor& v, KvCache& cache, int64_t layer, int64_t pos0) override;
  void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, KvCache& cache, int64_t layer,
                         int64_t pos0, float scale, const Tensor& out) override;
  void swiglu_forward(const Tensor& gate, const Tensor& up, const Tensor& out) override;
  void add_forward(const Tensor& a, const Tensor& b, const Tensor& out) override;
  void qk_norm_rope_forward(const Tensor& q, const Tensor& k, const Tensor& q_norm, const Tensor& k_norm,
                            float eps, int64_t pos0, const RopeTable& rope, const Tensor& q_out,
                            const Tensor& k_out) override;
  void qk_norm_rope_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& q_norm,
                                      const Tensor& k_norm, float eps, int64_t pos0, const RopeTable& rope,
                                      const Tensor& q_out, const Tensor& k_out, KvCache& cache, int64_t layer,
                                      float scale, const Tensor& out) override;
  void qk_norm_rope_kv_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& q_norm,
                               const Tensor& k_norm, float eps, int64_t pos0, const RopeTable& rope,
                               const Tensor& q_out, const Tensor& k_out, KvCache& cache,
                               int64_t layer) override;
  void linear_multi_forward(const Tensor& x, std::span<const LinearOut> outs) override;
  void linear_swiglu_forward(const Tensor& x, const Weight& gate, const Weight& up, const Tensor& gate_tmp,
                             const Tensor& up_tmp, const Tensor& out) override;
  void linear_residual_forward(const Tensor& x, const Weight& w, const Tensor& bias, const Tensor& residual,
                               const Tensor& tmp, const Tensor& out) override;
  // Decode (fused residual GEMV): also writes the next RMSNorm's start (cuda::NormHandoff) to the
  // "norm handoff" workspace and remembers for which x, norm weight and eps; the next
  // rmsnorm_linear_* call on that x with that norm takes it (no RMSNorm prologue in its GEMV).
  void linear_residual_norm_forward(const Tensor& x, const Weight& w, const Tensor& bias,
                                    const Tensor& residual, const Tensor& tmp, const Tensor& out,
                                    const Tensor& next_norm_w, float eps) override;
  void rmsnorm_linear_multi_forward(const Tensor& x, const Tensor& norm_w, float eps, const Tensor& x_norm,
                                    std::span<const LinearOut> outs) override;
  // One token: also writes out in pair order (cuda::nvfp4_gemv_swiglu's paired_out) to the "paired
  // x" workspace; the next linear_residual_* call on that x reads it (the block-diagonal GEMV).
  void rmsnorm_linear_swiglu_forward(const Tensor& x, const Tensor& norm_w, float eps, const Tensor& x_norm,
                                     const Weight& gate, const Weight& up, const Tensor& gate_tmp,
                                     const Tensor& up_tmp, const Tensor& out) override;
  void rmsnorm_linear_forward(const Tensor& x, const Tensor& norm_w, float eps, const Tensor& x_norm,
                              const Weight& w, const Tensor& out) override;

  // Decode steps as CUDA graphs: while recording, the ops read the token ids and the first
  // position from step_ (device), written by set_step_inputs before each replay.
  bool can_record() const override;
  void set_step_inputs(std::span<const int32_t> tokens, int64_t pos0) override;
  bool replay(uint64_t key) override;
  void begin_recording() override;
  void end_recording(uint64_t key) override;
  void abort_recording() override;
  int64_t recorded_steps() const { return static_cast<int64_t>(graphs_.size()); }

  // ---- CUDA only
  // Plans the memory of `config` with these host weights, a KV cache of `context` tokens and
  // forwards of up to `max_tokens` tokens; throws Error showing the plan when it exceeds the
  // budget or the free device memory; else allocates it at once. Returns the plan as text.
  // Call it before the first op; buffers allocated before it stay separate allocations.
  std::string prepare_model(const ModelConfig& config, const ModelWeights& host, int64_t context,
                            int64_t max_tokens) override;

  // Picks the next token from logits (V) on the device (F32 or BF16): only the id is copied back.
  // `seen`: prompt and output ids (the repetition penalty's input); `uniform` in [0, 1) drives the
  // draw (ignored when greedy).
  bool samples_on_device() const override { return true; }
  std::optional<int32_t> sample(const Tensor& logits, const SamplerParams& params,
                                std::span<const int32_t> seen, double uniform) override;
  // Pipelined decoding (Backend): with recorded steps (graphs on).
  bool can_feed_steps() const override { return opts_.graphs; }
  void sample_begin(const Tensor& logits, const SamplerParams& params, double uniform,
                    bool feed_step) override;
  int32_t sample_end() override;
  void set_fed_step_inputs(int64_t pos0) override;

  cuda::Context& context() { return *ctx_; }
  // Changes CudaBackendOptions::l2_prefetch_bytes (capped as there) and drops the recorded steps,
  // which hold the old prefetch windows.
  void set_l2_prefetch_bytes(size_t bytes);
  size_t l2_prefetch_bytes() const { return l2_lookahead_; }
  int64_t device_alloc_count() const;  // cudaMalloc calls so far (constant while generating)
  std::optional<PlannedMemory> planned_memory() const override {
    if (arena_bytes() == 0) return std::nullopt;
    return PlannedMemory{arena_bytes(), arena_used()};
  }
  size_t arena_bytes() const;  // planned arena size (0 without prepare_model)
  size_t arena_used() const;   // bytes carved from it so far

 protected:
  void* raw_alloc(size_t bytes) override;
  void raw_free(void* p) override;

 private:
  void* carve(size_t bytes, const char* what);  // arena or a cudaMalloc of its own
  void ensure_workspace(size_t scratch_bytes);  // without a plan: grow the op scratch on demand
  // A workspace buffer `buf` of `have` bytes made to hold `bytes`: without a plan a new carve (the
  // smaller one stays allocated), with one an internal error (the plan sized it).
  void grow(void*& buf, size_t& have, size_t bytes, const char* what);
  void ensure_ids(size_t count);
  // Enqueues a sample into the next id slot (see sample_begin) and records its event.
  void enqueue_sample(const Tensor& logits, const SamplerParams& params, std::span<const int32_t> seen,
                      double uniform, bool feed_step);
  // The norm handoff buffer as xw (rows, dim) and sumsq for the norm weight norm_w.
  cuda::NormHandoff handoff_view(const float* norm_w, int64_t rows, int64_t dim) const;
  // True (and h set) when the handoff linear_residual_norm_forward left is for x (same data,
  // rows and columns), norm_w and eps. Either way the handoff is used up.
  bool take_handoff(const Tensor& x, const Tensor& norm_w, float eps, cuda::NormHandoff& h);
  // The paired x buffer when rmsnorm_linear_swiglu_forward left it for x (one token, same data and
  // columns), else null. Either way it is used up.
  const void* take_paired(const Tensor& x);
  const int32_t* step_pos() const { return recording_ ? step_ : nullptr; }  // device pos0 while recording
  void drop_recordings();                                                   // destroys every recorded step
  // The L2 prefetch of a decode GEMV over the NVFP4 weights first..last (consecutive in upload
  // order): the stream of weights (codes and scales in upload order, which upload_model_weights
  // makes the order a step reads them, cyclic: the last layer's GEMVs prefetch the first layer's
  // weights for the next step) in the window [begin(first), end(last)) shifted by the lookahead.
  // Consecutive GEMVs' windows tile the stream, so each byte is prefetched once a step. Empty when
  // off or for a weight the stream does not hold (not uploaded here, or over half the L2: the head
  // streams itself).
  cuda::L2Prefetch l2_prefetch(const Weight& first, const Weight& last) const;

  std::unique_ptr<cuda::Context> ctx_;
  CudaBackendOptions opts_;
  std::unique_ptr<cuda::DeviceBuffer> arena_;
  size_t arena_used_ = 0;
  std::vector<std::pair<void*, size_t>> own_allocs_;  // cudaMalloc'd when there is no arena
  std::vector<Buffer> uploads_;                       // weights and tensors uploaded
  void* scratch_ = nullptr;  // op scratch (NVFP4 tiles, split-KV partials, sampling), one stream
  size_t scratch_bytes_ = 0;
  void* blas_ws_ = nullptr;
  int32_t* ids_ = nullptr;  // device staging for token ids / seen ids
  size_t ids_capacity_ = 0;
  void* handoff_buf_ = nullptr;  // cuda::NormHandoff's xw and sumsq ("norm handoff" workspace)
  size_t handoff_bytes_ = 0;
  struct PendingNorm {  // what handoff_buf_ holds: the RMSNorm of x with norm_w, eps (x null: nothing)
    const void* x = nullptr;
    int64_t rows = 0, dim = 0;
    const void* norm_w = nullptr;
    float eps = 0.0f;
  };
  PendingNorm pending_norm_;
  // A one-token SwiGLU output in pair order * 2^64 (cuda::nvfp4_gemv_swiglu's paired_out) for the
  // residual GEMV that reads it next ("paired x" workspace); x null: nothing.
  void* paired_buf_ = nullptr;
  size_t paired_bytes_ = 0;
  struct PendingPaired {
    const void* x = nullptr;
    int64_t dim = 0;
  };
  PendingPaired pending_paired_;
  // The sampled ids: pinned and mapped, one slot per outstanding sample (kSampleSlots), each with
  // an event recorded after its kernel; samples begun and ended so far (slot = count % slots).
  static constexpr int kSampleSlots = 2;
  int32_t* host_id_ = nullptr;        // kSampleSlots ids
  int32_t* host_id_dev_ = nullptr;    // host_id_ as the device sees it
  void* sampled_[kSampleSlots] = {};  // cudaEvent_t
  uint64_t samples_begun_ = 0, samples_ended_ = 0;
  // The step inputs hold what the last sample fed (position fed_pos_, its id): set_fed_step_inputs
  // may stand for an upload. Any set_step_inputs clears it.
  bool fed_ = false;
  int64_t fed_pos_ = -1;
  int64_t step_pos0_ = -1;  // the position of the last recorded step's inputs (set_*step_inputs)
  // Step inputs of recorded forwards: [0] = pos0, [1, 1 + n) = token ids; device and pinned host.
  int32_t* step_ = nullptr;
  int32_t* host_step_ = nullptr;
  void* step_copied_ = nullptr;  // cudaEvent_t: the last host_step_ upload has been read
  bool recording_ = false;
  std::map<uint64_t, void*> graphs_;  // key -> cudaGraphExec_t
  struct StreamRange {
    const void* ptr;
    size_t bytes, span, offset;  // span: bytes rounded up to 16; offset: spans of the ranges before
  };
  std::vector<StreamRange> stream_;             // see l2_prefetch
  std::map<const void*, size_t> stream_index_;  // codes pointer -> index of its range in stream_
  size_t stream_bytes_ = 0;
  size_t l2_lookahead_ = 0;  // opts_.l2_prefetch_bytes, capped
};

// The plan prepare_model() allocates (exposed for `nibble bench` and the tests).
// kv_dtype: BF16 or F8_E4M3.
cuda::MemoryPlan plan_model_memory(const ModelConfig& config, const ModelWeights& host, int64_t context,
                                   int64_t max_tokens, DType kv_dtype = DType::BF16);

std::unique_ptr<Backend> make_cuda_backend(const CudaBackendOptions& opts);

}  // namespace nibble
