// defines: ModelConfig (an HF config.json for Qwen3 / Qwen2 / Llama dense models),
// GenerationConfig (generation_config.json), and the check of a weight set against a config.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nibble {

class WeightStore;

enum class Arch { Qwen3, Qwen2, Llama };
std::string_view arch_name(Arch arch);  // "Qwen3ForCausalLM", ...

struct RopeScaling {
  enum class Type { None, Linear, Yarn, Llama3 } type = Type::None;
  double factor = 1.0;
  // yarn, llama3: the pretraining context (yarn: max_position_embeddings when the key is absent)
  double original_max_position_embeddings = 0;
  // yarn
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double attention_factor = 0;  // 0: derive as HF does (0.1 * ln(factor) + 1)
  // llama3
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
};

struct ModelConfig {
  Arch arch = Arch::Qwen3;
  std::string architecture;  // "Qwen3ForCausalLM", ...
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;        // dim
  int64_t intermediate_size = 0;  // SwiGLU hidden
  int64_t num_layers = 0;
  int64_t num_heads = 0;     // query heads
  int64_t num_kv_heads = 0;  // key/value heads (GQA)
  int64_t head_dim = 0;      // may differ from hidden/heads
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool qk_norm = false;   // Qwen3: per-head RMSNorm on q and k
  bool qkv_bias = false;  // Qwen2 (always), Llama / Qwen3 with attention_bias: true
  bool o_bias = false;    // Llama / Qwen3 with attention_bias: true (Qwen2's o_proj has none)
  std::string torch_dtype;
  std::vector<int64_t> eos_token_ids;  // from config.json
  std::optional<int64_t> bos_token_id;
  nlohmann::json quantization_config;  // null when absent

  // Throws Error naming the key and `label` (the file) for a missing or mistyped key, an
  // unsupported architecture (listing the supported ones) or an unsupported feature.
  static ModelConfig from_json(const nlohmann::json& j, const std::string& label);
  static ModelConfig load(const std::filesystem::path& model_dir);  // <model_dir>/config.json

  // One line for people: "Qwen3ForCausalLM: 36 layers, hidden 2560, ...".
  std::string summary() const;
};

struct GenerationConfig {
  std::vector<int64_t> eos_token_ids;
  std::optional<int64_t> bos_token_id;
  std::optional<double> temperature, top_p, min_p, repetition_penalty;
  std::optional<int64_t> top_k;
  bool do_sample = false;  // HF's default when the file does not say

  // generation_config.json when present, else the eos ids from config.json.
  static GenerationConfig load(const std::filesystem::path& model_dir, const ModelConfig& config);
};

// The tensor names and shapes a dense model of this config needs, HF naming
// ("model.layers.0.self_attn.q_proj.weight", ...). lm_head is absent when tied.
struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
  bool linear = false;  // an nn.Linear weight [out, in]: a checkpoint may store it quantized
};
std::vector<ExpectedTensor> expected_tensors(const ModelConfig& config);

// Checks a linear weight stored in a non-dense form (NVFP4: X.weight U8 [out, in/2] with
// X.weight_scale, X.weight_scale_2). Called for every expected linear weight before the dense
// check. Returns nullopt when the weight is not in that form (the dense check then runs), "" when
// it is and is valid, else a problem description naming the tensor.
using QuantizedLinearCheck =
    std::function<std::optional<std::string>(const ExpectedTensor& expected, const WeightStore& store)>;

// Every mismatch between what `config` needs and what `store` holds, one line each: missing
// tensors, wrong shapes (expected vs found, with the file), non-float dense tensors. Tensors the
// config does not need are ignored. Empty when the weights fit.
std::vector<std::string> weight_problems(const ModelConfig& config, const WeightStore& store,
                                         const QuantizedLinearCheck& quantized_linear = nullptr);
// Throws Error listing weight_problems() when there are any.
void check_weights(const ModelConfig& config, const WeightStore& store,
                   const QuantizedLinearCheck& quantized_linear = nullptr);

// <model_dir>/<name>, or Error saying that `what_for` needs it (tokenizer files are optional in a
// model directory; the commands that need them call this).
std::filesystem::path require_model_file(const std::filesystem::path& model_dir, const std::string& name,
                                         const std::string& what_for);

}  // namespace nibble
