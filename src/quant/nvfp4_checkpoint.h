// defines: QuantConfig (how a checkpoint is quantised), read_quant_config, load_linear_weight (the
// Weight view of one linear layer, dense or NVFP4, pointing into the store's mmap), and the names
// and config blocks a writer of ModelOpt-layout NVFP4 checkpoints needs.
//
// Checkpoint layouts (DESIGN.md "NVFP4"; ModelOpt qtensor/nvfp4_tensor.py, vLLM modelopt.py and
// compressed_tensors_w4a16_nvfp4.py):
//   ModelOpt:           X.weight U8 (out, in/2), X.weight_scale F8_E4M3 (out, in/16),
//                       X.weight_scale_2 F32 scalar, X.input_scale F32 scalar (W4A4 only, unused here)
//   compressed-tensors: X.weight_packed U8 (out, in/2), X.weight_scale F8_E4M3 (out, in/16),
//                       X.weight_global_scale F32 scalar = 1 / weight_scale_2
// Config: hf_quant_config.json {"producer": {"name": "modelopt"}, "quantization": {"quant_algo": "NVFP4",
// "group_size": 16, "exclude_modules": [...]}} or config.json "quantization_config" (quant_method
// "modelopt" with "ignore" / "exclude_modules", or "compressed-tensors" with "ignore").
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "format/hf_config.h"
#include "format/safetensors.h"
#include "model/weight.h"

namespace nibble {

struct QuantConfig {
  bool nvfp4 = false;
  std::string producer;              // "modelopt" | "compressed-tensors" ("" when not quantised)
  std::vector<std::string> exclude;  // fnmatch patterns over module names ("lm_head", "*.mlp.down_proj")
  int64_t group_size = 16;           // NVFP4 block size along K; only 16 is accepted

  // True when module `name` ("model.layers.0.self_attn.q_proj") matches an exclude pattern.
  bool is_excluded(const std::string& name) const;
};

// hf_quant_config.json when present, else config.json's quantization_config (already parsed into
// `config.quantization_config`). A quantisation other than NVFP4 (e.g. FP8, INT4 AWQ) is an Error
// naming the file and the algorithm found. No quantisation: QuantConfig{} (nvfp4 = false).
QuantConfig read_quant_config(const std::filesystem::path& model_dir, const ModelConfig& config);

// The stored tensors of one linear layer, found by name; the layout is told by which exist.
struct LinearTensors {
  enum class Layout { Missing, Dense, ModelOpt, CompressedTensors } layout = Layout::Missing;
  const TensorInfo* weight = nullptr;        // X.weight (dense or packed U8), or X.weight_packed
  const TensorInfo* scale = nullptr;         // X.weight_scale (NVFP4)
  const TensorInfo* global_scale = nullptr;  // X.weight_scale_2, or X.weight_global_scale (reciprocal)
  const TensorInfo* input_scale = nullptr;   // X.input_scale (W4A4 activation scale; not used)
};
// Throws Error for a combination that is no layout nibble reads (a float X.weight beside an
// X.weight_scale, e.g. FP8 per-tensor).
LinearTensors find_linear_tensors(const WeightStore& store, const std::string& prefix);

// The weight of linear `prefix` ("model.layers.0.self_attn.q_proj"), expected shape (out, in):
// dense (X.weight F32/BF16/F16) or NVFP4 (either layout above, detected from the tensors present).
// Pointers are into the store's mmap (valid while the store lives). Errors name the tensor, the
// expected and the found layout: a scale not (out, in/16), K not a multiple of 16, a missing
// weight_scale / weight_scale_2, wrong dtypes, a non-finite or non-positive global scale.
Weight load_linear_weight(const WeightStore& store, const std::string& prefix, int64_t out, int64_t in,
                          const QuantConfig& q);

// True when tensor `weight_name` ("...q_proj.weight") is the weight of a linear layer that
// `nibble quantize` converts: *.{q,k,v,o,gate,up,down}_proj.weight (never embeddings or lm_head).
bool is_quantizable_linear(const std::string& weight_name);

// Config blocks written by `nibble quantize` (ModelOpt NVFP4, weight-only).
nlohmann::json modelopt_hf_quant_config(const std::vector<std::string>& exclude);
nlohmann::json modelopt_quantization_config(const std::vector<std::string>& exclude);

}  // namespace nibble
