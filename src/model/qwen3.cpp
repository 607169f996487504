#include "model/qwen3.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "model/rope.h"
#include "quant/nvfp4_checkpoint.h"

namespace nibble {

namespace {

bool is_dense_float(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F16; }

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += fmt::format("{}{}", i ? ", " : "", s[i]);
  return r + "]";
}

const TensorInfo& tensor(const WeightStore& store, const std::string& name,
                         const std::vector<int64_t>& shape) {
  const TensorInfo* t = store.find(name);
  if (t == nullptr)
    fail("{}: missing tensor \"{}\" (expected shape {})", store.dir().string(), name, shape_str(shape));
  if (t->shape != shape) {
    fail("{}: tensor \"{}\" has shape {}, expected {} (in {})", store.dir().string(), name,
         shape_str(t->shape), shape_str(shape), t->file);
  }
  if (!is_dense_float(t->dtype)) {
    fail("{}: tensor \"{}\" has dtype {}, expected F32, BF16 or F16 (in {})", store.dir().string(), name,
         dtype_name(t->dtype), t->file);
  }
  return *t;
}

Tensor vector_view(const WeightStore& store, const std::string& name, int64_t n) {
  const TensorInfo& t = tensor(store, name, {n});
  return Tensor(const_cast<uint8_t*>(t.data), t.dtype, {n});
}

// A dense (out, in) matrix used as a Weight (the embedding table).
Weight dense_view(const WeightStore& store, const std::string& name, int64_t out, int64_t in) {
  const TensorInfo& d = tensor(store, name, {out, in});
  Weight w;
  w.format = WeightFormat::Dense;
  w.dtype = d.dtype;
  w.out = out;
  w.in = in;
  w.data = d.data;
  return w;
}

// A recorded decode step is kept per KV cache (the tensors its ops read and write).
uint64_t step_key(const KvCache& cache) {
  return static_cast<uint64_t>(reinterpret_cast<uintptr_t>(cache.k.data()));
}

}  // namespace

ModelWeights load_model_weights(const WeightStore& store, const ModelConfig& c, const QuantConfig& quant) {
  // A linear layer, dense or NVFP4 (quant/nvfp4_checkpoint.h reads either layout).
  auto linear_view = [&](const std::string& prefix, int64_t out, int64_t in) {
    return load_linear_weight(store, prefix, out, in, quant);
  };
  const int64_t dim = c.hidden_size, hd = c.head_dim, ffn = c.intermediate_size;
  const int64_t q_dim = c.num_heads * hd, kv_dim = c.num_kv_heads * hd;
  if (dim <= 0 || hd <= 0 || ffn <= 0 || c.num_heads <= 0 || c.num_kv_heads <= 0 || c.vocab_size <= 0 ||
      c.num_layers <= 0) {
    fail(
        "{}: config has a non-positive size (hidden {}, head_dim {}, intermediate {}, heads {}, kv heads {}, "
        "vocab {}, layers {})",
        store.dir().string(), dim, hd, ffn, c.num_heads, c.num_kv_heads, c.vocab_size, c.num_layers);
  }
  if (c.num_heads % c.num_kv_heads != 0) {
    fail("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", store.dir().string(),
         c.num_heads, c.num_kv_heads);
  }
  if (hd % 2 != 0) fail("{}: head_dim {} must be even for RoPE", store.dir().string(), hd);

  ModelWeights w;
  w.embed_tokens = dense_view(store, "model.embed_tokens.weight", c.vocab_size, dim);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    LayerWeights L;
    L.input_norm = vector_view(store, p + "input_layernorm.weight", dim);
    L.q_proj = linear_view(p + "self_attn.q_proj", q_dim, dim);
    L.k_proj = linear_view(p + "self_attn.k_proj", kv_dim, dim);
    L.v_proj = linear_view(p + "self_attn.v_proj", kv_dim, dim);
    if (c.qkv_bias) {
      L.q_bias = vector_view(store, p + "self_attn.q_proj.bias", q_dim);
      L.k_bias = vector_view(store, p + "self_attn.k_proj.bias", kv_dim);
      L.v_bias = vector_view(store, p + "self_attn.v_proj.bias", kv_dim);
    }
    if (c.qk_norm) {
      L.q_norm = vector_view(store, p + "self_attn.q_norm.weight", hd);
      L.k_norm = vector_view(store, p + "self_attn.k_norm.weight", hd);
    }
    L.o_proj = linear_view(p + "self_attn.o_proj", dim, q_dim);
    if (c.o_bias) L.o_bias = vector_view(store, p + "self_attn.o_proj.bias", dim);
    L.post_attention_norm = vector_view(store, p + "post_attention_layernorm.weight", dim);
    L.gate_proj = linear_view(p + "mlp.gate_proj", ffn, dim);
    L.up_proj = linear_view(p + "mlp.up_proj", ffn, dim);
    L.down_proj = linear_view(p + "mlp.down_proj", dim, ffn);
    w.layers.push_back(L);
  }
  w.final_norm = vector_view(store, "model.norm.weight", dim);
  w.lm_head = c.tie_word_embeddings ? w.embed_tokens : linear_view("lm_head", c.vocab_size, dim);
  return w;
}

// Weights go up in the order a forward step reads them (embedding; per layer q, k, v, o, gate, up,
// down; head): the CUDA backend takes the upload order as the order of its L2 prefetch stream.
ModelWeights upload_model_weights(Backend& b, const ModelWeights& host) {
  auto t = [&](const Tensor& x) { return x.empty() ? x : b.upload_tensor(x); };
  ModelWeights w;
  w.embed_tokens = b.upload_weight(host.embed_tokens);
  for (const LayerWeights& h : host.layers) {
    LayerWeights L;
    L.input_norm = t(h.input_norm);
    L.q_proj = b.upload_weight(h.q_proj);
    L.k_proj = b.upload_weight(h.k_proj);
    L.v_proj = b.upload_weight(h.v_proj);
    L.q_bias = t(h.q_bias);
    L.k_bias = t(h.k_bias);
    L.v_bias = t(h.v_bias);
    L.q_norm = t(h.q_norm);
    L.k_norm = t(h.k_norm);
    L.o_proj = b.upload_weight(h.o_proj);
    L.o_bias = t(h.o_bias);
    L.post_attention_norm = t(h.post_attention_norm);
    L.gate_proj = b.upload_weight(h.gate_proj);
    L.up_proj = b.upload_weight(h.up_proj);
    L.down_proj = b.upload_weight(h.down_proj);
    w.layers.push_back(L);
  }
  w.final_norm = t(host.final_norm);
  // A tied head stays the very same backend memory as the embedding.
  w.lm_head = host.lm_head.data == host.embed_tokens.data ? w.embed_tokens : b.upload_weight(host.lm_head);
  return w;
}

Qwen3Model::Qwen3Model(Backend& backend, const ModelConfig& config, ModelWeights weights, int64_t max_tokens)
    : backend_(backend), config_(config), weights_(std::move(weights)), max_tokens_(max_tokens) {
  NIBBLE_ASSERT(max_tokens_ > 0);
  const RopeParams rp = rope_params(config_);
  rope_.inv_freq =
      backend_.alloc_tensor(rope_storage_, DType::F32, {static_cast<int64_t>(rp.inv_freq.size())});
  backend_.copy_from_host(rp.inv_freq, rope_.inv_freq);
  rope_.attention_scaling = rp.attention_scaling;

  const DType t = backend_.activation_dtype();
  const int64_t n = max_tokens_, dim = config_.hidden_size, ffn = config_.intermediate_size;
  const int64_t q_dim = config_.num_heads * config_.head_dim,
                kv_dim = config_.num_kv_heads * config_.head_dim;
  auto make = [&](std::initializer_list<int64_t> dims) {
    storage_.emplace_back();
    return backend_.alloc_tensor(storage_.back(), t, dims);
  };
  acts_.x_norm = make({n, dim});
  acts_.q = make({n, q_dim});
  acts_.k = make({n, kv_dim});
  acts_.v = make({n, kv_dim});
  acts_.q_rot = config_.qk_norm ? make({n, q_dim}) : acts_.q;  // without q/k norm RoPE rotates q itself
  acts_.k_rot = config_.qk_norm ? make({n, kv_dim}) : acts_.k;
  acts_.attn = make({n, q_dim});
  acts_.attn_proj = make({n, dim});
  acts_.h = make({n, dim});
  acts_.h_norm = make({n, dim});
  acts_.gate = make({n, ffn});
  acts_.up = make({n, ffn});
  acts_.act = make({n, ffn});
  acts_.mlp_out = make({n, dim});
  x_[0] = make({n, dim});
  x_[1] = make({n, dim});
  // The head runs over a few rows at a time: (rows, V) logits for a 151936 vocabulary are large.
  logit_chunk_ = std::min<int64_t>(n, 16);
  final_norm_ = make({logit_chunk_, dim});
  // Logits are F32 on every backend (CUDA activations are BF16): rounding them to bf16 (2^-9
  // relative, ~0.08 at |40|) would turn near-ties of greedy decoding into coin flips.
  storage_.emplace_back();
  logits_ = backend_.alloc_tensor(storage_.back(), DType::F32, {logit_chunk_, config_.vocab_size});
}

KvCache Qwen3Model::make_kv_cache(int64_t capacity) {
  return backend_.alloc_kv_cache(config_.num_layers, config_.num_kv_heads, capacity, config_.head_dim);
}

LayerActivations Qwen3Model::slice(const LayerActivations& a, int64_t n) const {
  LayerActivations s;
  s.x_norm = a.x_norm.slice_rows(0, n);
  s.q = a.q.slice_rows(0, n);
  s.k = a.k.slice_rows(0, n);
  s.v = a.v.slice_rows(0, n);
  s.q_rot = a.q_rot.slice_rows(0, n);
  s.k_rot = a.k_rot.slice_rows(0, n);
  s.attn = a.attn.slice_rows(0, n);
  s.attn_proj = a.attn_proj.slice_rows(0, n);
  s.h = a.h.slice_rows(0, n);
  s.h_norm = a.h_norm.slice_rows(0, n);
  s.gate = a.gate.slice_rows(0, n);
  s.up = a.up.slice_rows(0, n);
  s.act = a.act.slice_rows(0, n);
  s.mlp_out = a.mlp_out.slice_rows(0, n);
  return s;
}

void Qwen3Model::layer_forward(int64_t layer, const Tensor& x, const LayerActivations& a, KvCache& cache,
                               int64_t pos0, const Tensor& x_out) {
  const LayerWeights& L = weights_.layers[static_cast<size_t>(layer)];
  const float eps = static_cast<float>(config_.rms_norm_eps);
  const int64_t n = x.dim(0), hq = config_.num_heads, hkv = config_.num_kv_heads, hd = config_.head_dim;
  Backend& b = backend_;
  const Tensor none;

  // Attention block.
  const Backend::LinearOut qkv[] = {
      {&L.q_proj, &L.q_bias, &a.q}, {&L.k_proj, &L.k_bias, &a.k}, {&L.v_proj, &L.v_bias, &a.v}};
  b.rmsnorm_linear_multi_forward(x, L.input_norm, eps, a.x_norm, qkv);
  const Tensor q3 = a.q_rot.reshape({n, hq, hd});
  const Tensor k3 = a.k_rot.reshape({n, hkv, hd});
  // Qwen3: RMSNorm over each head's hd values, then RoPE (without q/k norm: RoPE on q, k in place);
  // the rotated k and v go to the cache, and attention reads them from there (one op: a backend may
  // do all of it in the attention kernel).
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  b.qk_norm_rope_attention_forward(a.q.reshape({n, hq, hd}), a.k.reshape({n, hkv, hd}),
                                   a.v.reshape({n, hkv, hd}), L.q_norm, L.k_norm, eps, pos0, rope_, q3, k3,
                                   cache, layer, scale, a.attn.reshape({n, hq, hd}));
  // The residual sums go next into an RMSNorm + GEMV: the backend may start that norm as it writes them.
  b.linear_residual_norm_forward(a.attn, L.o_proj, L.o_bias, x, a.attn_proj, a.h, L.post_attention_norm, eps);

  // MLP block (SwiGLU).
  b.rmsnorm_linear_swiglu_forward(a.h, L.post_attention_norm, eps, a.h_norm, L.gate_proj, L.up_proj, a.gate,
                                  a.up, a.act);
  const bool last = layer + 1 == config_.num_layers;  // then the final norm and the head follow (run)
  b.linear_residual_norm_forward(
      a.act, L.down_proj, none, a.h, a.mlp_out, x_out,
      last ? weights_.final_norm : weights_.layers[static_cast<size_t>(layer + 1)].input_norm, eps);
}

void Qwen3Model::forward(std::span<const int32_t> tokens, int64_t pos0, KvCache& cache, int64_t logit_rows,
                         std::span<float> logits) {
  const int64_t n = static_cast<int64_t>(tokens.size()), vocab = config_.vocab_size;
  NIBBLE_ASSERT(n > 0 && n <= max_tokens_ && pos0 >= 0 && pos0 + n <= cache.capacity);
  NIBBLE_ASSERT(logit_rows >= 0 && logit_rows <= n &&
                (static_cast<int64_t>(logits.size()) == logit_rows * vocab ||
                 (logits.empty() && logit_rows <= logit_chunk_)));

  // A decode step (one token, its logits) is recorded once per cache and replayed after: its ops
  // read the token id and position from backend memory (Backend::set_step_inputs).
  if (n == 1 && logit_rows == 1 && backend_.can_record()) {
    backend_.set_step_inputs(tokens, pos0);
    const uint64_t key = step_key(cache);
    if (!backend_.replay(key)) {
      backend_.begin_recording();
      try {
        run(tokens, pos0, cache, logit_rows, {});
      } catch (...) {
        backend_.abort_recording();
        throw;
      }
      backend_.end_recording(key);
    }
    if (!logits.empty()) backend_.copy_to_host(logits_.slice_rows(0, 1), logits);
    return;
  }
  run(tokens, pos0, cache, logit_rows, logits);
}

void Qwen3Model::forward_fed(int64_t pos0, KvCache& cache) {
  NIBBLE_ASSERT(pos0 >= 0 && pos0 + 1 <= cache.capacity);
  backend_.set_fed_step_inputs(pos0);
  const uint64_t key = step_key(cache);
  if (!backend_.replay(key))
    fail("internal error: a decode step fed on the device before any step was recorded for its cache");
}

void Qwen3Model::run(std::span<const int32_t> tokens, int64_t pos0, KvCache& cache, int64_t logit_rows,
                     std::span<float> logits) {
  const int64_t n = static_cast<int64_t>(tokens.size()), vocab = config_.vocab_size;
  const LayerActivations a = slice(acts_, n);
  Tensor x = x_[0].slice_rows(0, n), y = x_[1].slice_rows(0, n);
  backend_.embedding_forward(weights_.embed_tokens, tokens, x);
  for (int64_t l = 0; l < config_.num_layers; ++l) {
    layer_forward(l, x, a, cache, pos0, y);
    std::swap(x, y);
  }

  // Final norm and head over the requested rows, logit_chunk_ rows at a time; with an empty
  // `logits` (logit_rows <= logit_chunk_) they stay on the backend (device_logits).
  const float eps = static_cast<float>(config_.rms_norm_eps);
  for (int64_t r = n - logit_rows; r < n; r += logit_chunk_) {
    const int64_t rows = std::min(logit_chunk_, n - r);
    const Tensor xn = final_norm_.slice_rows(0, rows);
    const Tensor lg = logits_.slice_rows(0, rows);
    backend_.rmsnorm_linear_forward(x.slice_rows(r, rows), weights_.final_norm, eps, xn, weights_.lm_head,
                                    lg);
    if (logits.empty()) continue;
    backend_.copy_to_host(lg, logits.subspan(static_cast<size_t>((r - (n - logit_rows)) * vocab),
                                             static_cast<size_t>(rows * vocab)));
  }
}

}  // namespace nibble
