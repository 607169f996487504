// defines: Backend (the context object every op runs in: memory, weight upload and the forward
// ops of a dense decoder), KvCache (backend-owned keys and values of one sequence), RopeTable,
// make_backend.
//
// The model (model/qwen3.cpp) is written once over this interface. A backend is a context object
// passed explicitly, never a global: the CPU backend owns its thread pool; the CUDA backend will
// own its stream, cuBLASLt handle and workspace. Two backends (two models, two GPUs) can live in
// one process.
//
// Conventions
// - Tensors are contiguous row-major views (backend/tensor.h). Activations have the backend's
//   activation_dtype(): F32 on the CPU, BF16 on CUDA. Weights keep their checkpoint dtype
//   (F32 / BF16 / F16, or NVFP4 for linear layers); ops convert on the fly and accumulate in fp32.
// - "n" is the number of tokens in this call, "dim" the hidden size, "hd" head_dim (independent
//   of dim / heads), "hq" query heads, "hkv" key/value heads (hq % hkv == 0, GQA), "ffn" the
//   SwiGLU width, "V" the vocabulary.
// - Outputs never alias inputs unless an op says so: a kept activation is never overwritten, so
//   a backward can read what the forward read. rope_forward alone works in place (its backward is
//   the inverse rotation and needs no saved input).
// - Each op is named <op>_forward; the backward issue adds <op>_backward beside it with the same
//   tensors plus gradients. Ops that a backward needs extra state from take an optional output
//   for it (rmsnorm_forward's rstd); pass an empty Tensor when not training.
//
// Op list (shapes):
//   embedding_forward  table Weight (V, dim) dense, tokens[n] (host)         -> out (n, dim)
//   rmsnorm_forward    x (rows, dim), w (dim)                                -> out (rows, dim),
//                      [rstd (rows) F32]; also the per-head q/k norm with rows = n*heads, dim = hd
//   linear_forward     x (n, in), W (out, in) dense or NVFP4, [bias (out)]   -> out (n, out) = x W^T + b
//   rope_forward       x (n, heads, hd) in place, positions pos0 .. pos0+n-1, RopeTable
//   kv_cache_write     k, v (n, hkv, hd), KvCache layer l, pos0 -> positions [pos0, pos0+n) of layer l
//   attention_forward  q (n, hq, hd), [k, v (n, hkv, hd)], KvCache layer l, pos0
//                      -> appends k, v (when given) as kv_cache_write does, then
//                      out (n, hq, hd) = softmax(scale q K^T + causal mask) V over [0, pos0+n)
//   swiglu_forward     gate (n, ffn), up (n, ffn)                            -> out = silu(gate) * up
//   add_forward        a, b (same shape)                                     -> out = a + b (residual)
//   fused: qk_norm_rope, qk_norm_rope_kv (+ kv_cache_write), qk_norm_rope_attention (+ attention),
//          linear_multi (q/k/v), linear_swiglu,
//          rmsnorm_linear_multi, rmsnorm_linear_swiglu, rmsnorm_linear, linear_residual, linear_residual_norm
//          (the residual with a hint of the RMSNorm that follows) (defaults compose the ops above)
//   copy_to_host / copy_from_host: any activation <-> host fp32
//
// How CUDA plugs in: backend/cuda/cuda_backend.{h,cu} derives from Backend (raw_alloc =
// cudaMalloc, upload_* copy into device memory it owns, ops = kernels in backend/cuda/<family>.cu
// on its stream), and make_backend() returns it for device "cuda". The model and the Engine do not
// change.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "backend/tensor.h"
#include "model/weight.h"

namespace nibble {

// Keys and values of one sequence, owned by the backend. Layout of k and v alike:
// (layers, hkv, capacity, hd), positions contiguous per head, so that attention streams one
// head's keys as a single (positions, hd) block — the reads of every decode step dominate the
// writes of an append (n*hd contiguous elements per head). truncate needs no data movement.
struct KvCache {
  Buffer k, v;
  DType dtype = DType::F32;
  int64_t layers = 0, kv_heads = 0, capacity = 0, head_dim = 0;

  // (hkv, capacity, hd) views of one layer.
  Tensor k_layer(int64_t layer) const;
  Tensor v_layer(int64_t layer) const;
};

// Rotary embedding parameters as HF's rope init functions compute them (model/rope.h).
struct RopeTable {
  Tensor inv_freq;                // (hd / 2) F32, backend memory: angle(p, i) = p * inv_freq[i]
  float attention_scaling = 1.0;  // multiplies cos and sin (yarn: 0.1 ln(factor) + 1), else 1
};

struct ModelConfig;
struct ModelWeights;
struct SamplerParams;

struct BackendOptions {
  int threads = 0;                          // CPU: worker threads, 0 = hardware concurrency
  std::optional<double> gpu_mem_budget_gb;  // CUDA: refuse a memory plan larger than this
  bool kv_fp8 = false;                      // CUDA: FP8 E4M3 KV cache
};

class Backend {
 public:
  virtual ~Backend() = default;
  Backend() = default;
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  virtual std::string name() const = 0;  // for messages: "cpu (16 threads)"
  virtual DType activation_dtype() const = 0;
  virtual DType kv_dtype() const = 0;

  // ---- memory
  // Called once by the Engine before any upload or allocation, with what the model will hold. A
  // backend that plans its memory (CUDA: weights + KV cache + activations + workspaces as one
  // allocation, nothing allocated while generating) allocates here and returns the plan as text,
  // or throws Error showing the plan when it does not fit. The CPU backend plans nothing.
  virtual std::string prepare_model(const ModelConfig& /*config*/, const ModelWeights& /*host*/,
                                    int64_t /*context*/, int64_t /*max_tokens*/) {
    return {};
  }
  Buffer alloc(size_t bytes);  // zero-filled
  Tensor alloc_tensor(Buffer& storage, DType dtype, std::initializer_list<int64_t> dims);
  KvCache alloc_kv_cache(int64_t layers, int64_t kv_heads, int64_t capacity, int64_t head_dim);
  // Host views (into a mapped checkpoint) -> backend views. CPU: the same pointers (zero copy).
  // CUDA: device copies owned by the backend, freed with it. The host memory must outlive the
  // returned view on the CPU.
  virtual Weight upload_weight(const Weight& host) = 0;
  virtual Tensor upload_tensor(const Tensor& host) = 0;
  virtual void copy_to_host(const Tensor& src, std::span<float> dst) = 0;  // dst.size() == numel
  virtual void copy_from_host(std::span<const float> src, const Tensor& dst) = 0;
  virtual void synchronize() {}

  // ---- forward ops (shapes in the file comment)
  virtual void embedding_forward(const Weight& table, std::span<const int32_t> tokens, const Tensor& out) = 0;
  virtual void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, const Tensor& out,
                               const Tensor& rstd) = 0;
  virtual void linear_forward(const Tensor& x, const Weight& w, const Tensor& bias, const Tensor& out) = 0;
  virtual void rope_forward(const Tensor& x, int64_t pos0, const RopeTable& rope) = 0;
  virtual void kv_cache_write(const Tensor& k, const Tensor& v, KvCache& cache, int64_t layer,
                              int64_t pos0) = 0;
  // k and v both empty: the cache already holds positions [pos0, pos0+n) (qk_norm_rope_kv_forward
  // wrote them) and attention only reads it.
  virtual void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, KvCache& cache,
                                 int64_t layer, int64_t pos0, float scale, const Tensor& out) = 0;
  virtual void swiglu_forward(const Tensor& gate, const Tensor& up, const Tensor& out) = 0;
  virtual void add_forward(const Tensor& a, const Tensor& b, const Tensor& out) = 0;

  // ---- fused ops. Each has a default made of the ops above (what the CPU backend runs); a backend
  // may do the same work in fewer passes over memory (CUDA, for decode-sized n). Results equal the
  // composition up to the order of fp32 sums. The `tmp` tensors hold the composition's
  // intermediates and may be left unwritten by a fused implementation.
  // Per-head RMSNorm of q and k (when q_norm and k_norm are given: Qwen3) then RoPE at positions
  // pos0.. : q_out (n, hq, hd), k_out (n, hkv, hd). Without norms q_out and k_out must be q and k
  // themselves (RoPE in place).
  virtual void qk_norm_rope_forward(const Tensor& q, const Tensor& k, const Tensor& q_norm,
                                    const Tensor& k_norm, float eps, int64_t pos0, const RopeTable& rope,
                                    const Tensor& q_out, const Tensor& k_out);
  // qk_norm_rope_forward, then k_out and v (n, hkv, hd) appended to layer `layer` of the cache at
  // positions [pos0, pos0+n) (kv_cache_write): a decode step's attention then runs over the cache
  // alone (attention_forward with k and v empty). The cache holds exactly what the composition
  // writes: k_out and v converted to the cache's dtype.
  virtual void qk_norm_rope_kv_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                       const Tensor& q_norm, const Tensor& k_norm, float eps, int64_t pos0,
                                       const RopeTable& rope, const Tensor& q_out, const Tensor& k_out,
                                       KvCache& cache, int64_t layer);
  // qk_norm_rope_kv_forward, then attention_forward of q_out over the cache (k and v empty): a
  // decode layer's attention from its q/k/v projections. q_out and k_out are temporaries a fused
  // implementation may leave unwritten (CUDA, one token: then q and k are only read); the cache and
  // out are the composition's.
  virtual void qk_norm_rope_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                              const Tensor& q_norm, const Tensor& k_norm, float eps,
                                              int64_t pos0, const RopeTable& rope, const Tensor& q_out,
                                              const Tensor& k_out, KvCache& cache, int64_t layer, float scale,
                                              const Tensor& out);
  // out_i = x W_i^T + bias_i for projections that share x (q, k and v). bias may be empty.
  struct LinearOut {
    const Weight* w;
    const Tensor* bias;
    const Tensor* out;
  };
  virtual void linear_multi_forward(const Tensor& x, std::span<const LinearOut> outs);
  // out = silu(x Wg^T) * (x Wu^T); gate_tmp and up_tmp (n, ffn) are the two products.
  virtual void linear_swiglu_forward(const Tensor& x, const Weight& gate, const Weight& up,
                                     const Tensor& gate_tmp, const Tensor& up_tmp, const Tensor& out);
  // The RMSNorm in front of the two above: x_norm (n, dim) = rmsnorm(x) with norm_w (dim), then
  // linear_multi_forward / linear_swiglu_forward of x_norm. x_norm is always written (a kept
  // activation). A fused implementation may apply 1/rms after the products (CUDA decode: y =
  // (1/rms) * (W . bf16(x * norm_w)), the sum of squares in its own order): its outputs then equal
  // the default's within bf16 rounding, and its x_norm the default's within one bf16 ulp.
  virtual void rmsnorm_linear_multi_forward(const Tensor& x, const Tensor& norm_w, float eps,
                                            const Tensor& x_norm, std::span<const LinearOut> outs);
  virtual void rmsnorm_linear_swiglu_forward(const Tensor& x, const Tensor& norm_w, float eps,
                                             const Tensor& x_norm, const Weight& gate, const Weight& up,
                                             const Tensor& gate_tmp, const Tensor& up_tmp, const Tensor& out);
  // The same for one projection (the head after the final norm): out = rmsnorm(x) W^T, out BF16 or
  // F32; x_norm as above.
  virtual void rmsnorm_linear_forward(const Tensor& x, const Tensor& norm_w, float eps, const Tensor& x_norm,
                                      const Weight& w, const Tensor& out);
  // out = residual + (x W^T + bias); tmp (n, W.out) is the product. out may not alias residual.
  virtual void linear_residual_forward(const Tensor& x, const Weight& w, const Tensor& bias,
                                       const Tensor& residual, const Tensor& tmp, const Tensor& out);
  // linear_residual_forward from a caller whose next op on `out` is one of the rmsnorm_linear_*
  // ops with next_norm_w and eps, `out` unchanged in between. A backend
  // may start that RMSNorm here, while it writes out (CUDA decode: bf16(out * next_norm_w) and the
  // sums of squares go to a handoff buffer, and the next fused GEMV reads them instead of
  // normalising x itself); the next op's results then equal the unprepared ones within rounding.
  // The default is linear_residual_forward.
  virtual void linear_residual_norm_forward(const Tensor& x, const Weight& w, const Tensor& bias,
                                            const Tensor& residual, const Tensor& tmp, const Tensor& out,
                                            const Tensor& next_norm_w, float eps);

  // ---- recorded steps (CUDA graphs). A backend that can record the ops of one forward and replay
  // them: set_step_inputs puts the token ids and the first position in backend memory, where the
  // ops of a recording read them (the host pos0 and tokens they are passed are then only checked),
  // so one recording serves every later step of the same shape on the same tensors. Between
  // begin_recording and end_recording ops are recorded, not run; end_recording stores the
  // recording under `key` and runs it once; abort_recording drops it (an op threw).
  virtual bool can_record() const { return false; }
  virtual void set_step_inputs(std::span<const int32_t> /*tokens*/, int64_t /*pos0*/) {}
  virtual bool replay(uint64_t /*key*/) { return false; }  // false: nothing recorded under key
  virtual void begin_recording() {}
  virtual void end_recording(uint64_t /*key*/) {}
  virtual void abort_recording() {}

  // ---- sampling on the backend (runtime/sampler.h semantics; CUDA: only the id reaches the host)
  // The planned device memory (bytes of the one arena, and the part handed out so far), for the
  // memory telemetry; nullopt where nothing is planned (the CPU backend).
  struct PlannedMemory {
    uint64_t arena_bytes = 0;
    uint64_t used_bytes = 0;
  };
  virtual std::optional<PlannedMemory> planned_memory() const { return std::nullopt; }

  virtual bool samples_on_device() const { return false; }
  // The next id from logits (V) F32 in backend memory; `seen` feeds the repetition penalty and
  // `uniform` in [0, 1) the draw. nullopt when the backend does not sample (the CPU: use Sampler).
  virtual std::optional<int32_t> sample(const Tensor& /*logits*/, const SamplerParams& /*params*/,
                                        std::span<const int32_t> /*seen*/, double /*uniform*/) {
    return std::nullopt;
  }

  // ---- pipelined decoding: the sampled id fed to the next recorded step on the backend, so that
  // step n + 1 can be enqueued before the host has read id n. A backend that can (CUDA with
  // recorded steps): sample_begin enqueues a sample like sample() without waiting for it (at most
  // two outstanding); with feed_step it also writes the id and the next position into the step
  // inputs, and set_fed_step_inputs(pos0) then stands for set_step_inputs({that id}, pos0) in the
  // next recorded forward. sample_end waits for the oldest outstanding sample and returns its id.
  virtual bool can_feed_steps() const { return false; }
  virtual void sample_begin(const Tensor& /*logits*/, const SamplerParams& /*params*/, double /*uniform*/,
                            bool /*feed_step*/) {
    fail("this backend does not sample on the device");
  }
  virtual int32_t sample_end() { fail("this backend does not sample on the device"); }
  virtual void set_fed_step_inputs(int64_t /*pos0*/) { fail("this backend does not feed steps"); }

 protected:
  friend class Buffer;
  virtual void* raw_alloc(size_t bytes) = 0;  // zero-filled; throws Error when out of memory
  virtual void raw_free(void* p) = 0;
};

// "cpu", or "cuda" in a build with the CUDA backend. Throws Error naming the device otherwise.
std::unique_ptr<Backend> make_backend(const std::string& device, const BackendOptions& opts);

}  // namespace nibble
