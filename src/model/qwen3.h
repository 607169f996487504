// defines: ModelWeights / LayerWeights (a dense decoder's weights, every field with its shape),
// load_model_weights (host views into a WeightStore, checked against the config),
// LayerActivations, and Qwen3Model: the forward of Qwen3, Qwen2 and Llama written once over the
// Backend interface.
//
// The three architectures differ only in config-driven details (DESIGN.md): Qwen3 norms q and k
// per head (q_norm, k_norm), Qwen2 adds q/k/v biases, attention_bias adds biases to all four
// projections. head_dim is independent of hidden / heads. lm_head is the embedding when tied.
//
// Training (a later issue) runs the same layer_forward: each layer's LayerActivations are either
// kept (one set per layer) or recomputed from the layer input during the backward. Inference uses
// one set for all layers. Nothing here is inference-only except choosing that one set.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "backend/backend.h"
#include "format/hf_config.h"
#include "format/safetensors.h"
#include "model/weight.h"
#include "quant/nvfp4_checkpoint.h"

namespace nibble {

struct LayerWeights {
  Tensor input_norm;           // (dim)            input_layernorm
  Weight q_proj;               // (hq*hd, dim)
  Weight k_proj;               // (hkv*hd, dim)
  Weight v_proj;               // (hkv*hd, dim)
  Tensor q_bias;               // (hq*hd)          Qwen2 / attention_bias, else empty
  Tensor k_bias;               // (hkv*hd)         "
  Tensor v_bias;               // (hkv*hd)         "
  Tensor q_norm;               // (hd)             Qwen3, else empty
  Tensor k_norm;               // (hd)             "
  Weight o_proj;               // (dim, hq*hd)
  Tensor o_bias;               // (dim)            attention_bias, else empty
  Tensor post_attention_norm;  // (dim)            post_attention_layernorm
  Weight gate_proj;            // (ffn, dim)
  Weight up_proj;              // (ffn, dim)
  Weight down_proj;            // (dim, ffn)
};

struct ModelWeights {
  Weight embed_tokens;  // (V, dim) dense
  std::vector<LayerWeights> layers;
  Tensor final_norm;  // (dim)            model.norm
  Weight lm_head;     // (V, dim)         == embed_tokens when tie_word_embeddings
};

// Host views into `store` (its mmap; valid while the store lives). Linear layers may be dense or
// NVFP4 (`quant`, quant/nvfp4_checkpoint.h). Missing or mis-shaped tensors and unsupported dtypes
// are an Error naming the tensor.
ModelWeights load_model_weights(const WeightStore& store, const ModelConfig& config,
                                const QuantConfig& quant);
// The same views made backend views (CPU: unchanged; CUDA: device copies the backend owns).
ModelWeights upload_model_weights(Backend& backend, const ModelWeights& host);

// Activations of one decoder layer for n <= max_tokens tokens (views sized for max_tokens;
// slice_rows(0, n) before use). All (n, ...) row-major, backend activation dtype.
struct LayerActivations {
  Tensor x_norm;     // (n, dim)        input_norm(x)
  Tensor q;          // (n, hq*hd)      q_proj(x_norm) + q_bias
  Tensor k;          // (n, hkv*hd)
  Tensor v;          // (n, hkv*hd)
  Tensor q_rot;      // (n, hq*hd)      q_norm(q) per head (Qwen3) or q itself, then RoPE in place
  Tensor k_rot;      // (n, hkv*hd)     likewise for k
  Tensor attn;       // (n, hq*hd)      attention output (heads concatenated)
  Tensor attn_proj;  // (n, dim)        o_proj(attn) + o_bias
  Tensor h;          // (n, dim)        x + attn_proj (residual)
  Tensor h_norm;     // (n, dim)        post_attention_norm(h)
  Tensor gate;       // (n, ffn)        gate_proj(h_norm)
  Tensor up;         // (n, ffn)        up_proj(h_norm)
  Tensor act;        // (n, ffn)        silu(gate) * up
  Tensor mlp_out;    // (n, dim)        down_proj(act); the layer output is h + mlp_out
};

class Qwen3Model {
 public:
  // `weights` are backend views (upload_model_weights). Activations are allocated for up to
  // `max_tokens` tokens per forward call.
  Qwen3Model(Backend& backend, const ModelConfig& config, ModelWeights weights, int64_t max_tokens);

  const ModelConfig& config() const { return config_; }
  int64_t max_tokens() const { return max_tokens_; }
  KvCache make_kv_cache(int64_t capacity);

  // Runs tokens[0, n) (n <= max_tokens, ids already validated) at positions [pos0, pos0 + n),
  // appending their keys and values to `cache`. Writes the logits of the last `logit_rows` tokens,
  // (logit_rows, V) row-major fp32, to `logits`.
  // With an empty `logits` (and logit_rows <= 16) the logits stay on the backend: device_logits().
  // A backend that records (CUDA graphs) records a one-token, one-logit-row step the first time
  // for `cache` and replays it after. Nothing waits for the backend unless logits are copied.
  void forward(std::span<const int32_t> tokens, int64_t pos0, KvCache& cache, int64_t logit_rows,
               std::span<float> logits);
  // The recorded one-token step at pos0 whose token the backend's last sample fed to it
  // (Backend::sample_begin with feed_step): no host round trip between steps. The step for `cache`
  // must have been recorded (a forward of one token and one logit row); its logits stay on the
  // backend (device_logits(1)).
  void forward_fed(int64_t pos0, KvCache& cache);
  // The last forward's logits, its final `rows` rows (rows <= 16), (rows, V) F32 backend memory,
  // valid until the next forward: what on-device sampling reads.
  Tensor device_logits(int64_t rows) const { return logits_.slice_rows(0, rows); }

  // One decoder layer: x_out (n, dim) = layer(x_in (n, dim)); `a` receives its activations.
  void layer_forward(int64_t layer, const Tensor& x_in, const LayerActivations& a, KvCache& cache,
                     int64_t pos0, const Tensor& x_out);

 private:
  // The forward without recording; logits as in forward().
  void run(std::span<const int32_t> tokens, int64_t pos0, KvCache& cache, int64_t logit_rows,
           std::span<float> logits);
  LayerActivations slice(const LayerActivations& a, int64_t n) const;

  Backend& backend_;
  ModelConfig config_;
  ModelWeights weights_;
  int64_t max_tokens_;
  RopeTable rope_;
  Buffer rope_storage_;
  std::vector<Buffer> storage_;  // activation buffers
  LayerActivations acts_;        // one set, reused by every layer (inference)
  Tensor x_[2];                  // (max_tokens, dim) residual stream, ping-pong between layers
  Tensor final_norm_;            // (logit_chunk, dim)
  Tensor logits_;                // (logit_chunk, V)
  int64_t logit_chunk_;
};

}  // namespace nibble
