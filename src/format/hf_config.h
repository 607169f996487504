// defines: ModelConfig (an HF config.json for Qwen3 / Qwen2 / Llama dense models),
// GenerationConfig (generation_config.json), and the check of a weight set against a config.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace nibble {

class WeightStore;

enum class Arch { Qwen3, Qwen2, Llama };

struct RopeScaling {
  enum class Type { None, Linear, Yarn, Llama3 } type = Type::None;
  double factor = 1.0;
  // yarn
  double original_max_position_embeddings = 0;
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
  bool qkv_bias = false;  // Qwen2 (and attention_bias: true)
  std::string torch_dtype;
  std::vector<int64_t> eos_token_ids;  // from config.json
  std::optional<int64_t> bos_token_id;
  nlohmann::json quantization_config;  // null when absent

  static ModelConfig from_json(const nlohmann::json& j, const std::string& label);  // throws Error
  static ModelConfig load(const std::filesystem::path& model_dir);                  // config.json
};

struct GenerationConfig {
  std::vector<int64_t> eos_token_ids;
  std::optional<int64_t> bos_token_id;
  std::optional<double> temperature, top_p, min_p, repetition_penalty;
  std::optional<int64_t> top_k;
  bool do_sample = false;

  // generation_config.json when present, else the eos ids from config.json.
  static GenerationConfig load(const std::filesystem::path& model_dir, const ModelConfig& config);
};

// The tensor names and shapes a dense model of this config needs, HF naming
// ("model.layers.0.self_attn.q_proj.weight", ...). lm_head is absent when tied.
struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
};
std::vector<ExpectedTensor> expected_tensors(const ModelConfig& config);

}  // namespace nibble
