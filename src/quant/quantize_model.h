// defines: quantize_model, which writes a whole HF model directory with NVFP4 linear weights in the
// ModelOpt layout (what `nibble quantize` runs).
//
// Output (loadable by vLLM's and TensorRT-LLM's ModelOpt NVFP4 loaders, and by nibble):
//   config.json            the source's, with "quantization_config" (quant_method "modelopt")
//   hf_quant_config.json   {"producer": {"name": "modelopt"}, "quantization": {"quant_algo": "NVFP4", ...}}
//   model.safetensors      or model-0000i-of-0000n.safetensors + model.safetensors.index.json
//   tokenizer, chat-template, generation and licence files of the source, copied byte for byte
// Each quantised linear X gets X.weight U8 [out, in/2], X.weight_scale F8_E4M3 [out, in/16] and
// X.weight_scale_2 F32 []; every other tensor is copied unchanged (same dtype and bytes).
//
// Choices, as ModelOpt makes them (modelopt/torch/export): lm_head and the embeddings stay in the
// source precision ("lm_head" is always in the exclude list); q/k/v of a layer share one global
// scale, as do gate/up (ModelOpt's preprocess_linear_fusion; vLLM fuses them and keeps one).
// A linear whose K is not a multiple of 16 cannot be NVFP4 (vLLM refuses it too): it is kept dense
// and added to the exclude list, with a warning. An exclude pattern that covers part of a fused
// group (e.g. only k_proj) is widened to the whole group, with a warning, for the same reason.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace nibble {

struct QuantizeOptions {
  std::filesystem::path model_dir;   // the source HF model directory
  std::filesystem::path out_dir;     // created; must not exist or be empty unless `force`
  std::vector<std::string> exclude;  // extra fnmatch patterns over module names
  bool force = false;                // replace a non-empty out_dir
  // The source is already NVFP4: write its tensors again unchanged in the ModelOpt layout
  // (compressed-tensors names are converted). Without it an NVFP4 source is an error.
  bool resave = false;
  uint64_t max_shard_bytes = 2'000'000'000;          // tensor bytes per safetensors file
  int threads = 0;                                   // 0: hardware concurrency
  std::function<void(const std::string&)> progress;  // one line per step; may be empty
};

struct QuantizeSummary {
  int64_t quantized_linears = 0;     // newly quantised (or, with resave, carried over as NVFP4)
  int64_t dense_tensors = 0;         // copied unchanged
  std::vector<std::string> exclude;  // the exclude list written to the configs
  std::vector<std::string> shards;   // file names, in order
  uint64_t source_bytes = 0;         // tensor bytes read
  uint64_t output_bytes = 0;         // tensor bytes written
  uint64_t quantized_params = 0;     // weights stored as NVFP4
};

// Throws Error (naming the file or tensor) for a missing source, a non-empty out_dir without force,
// an NVFP4 source without resave, a dense source with resave, non-finite weights, or I/O failures.
// The directory appears complete or not at all: it is written beside out_dir and renamed into place.
QuantizeSummary quantize_model(const QuantizeOptions& options);

// "2GB", "500MB", "64KB", "1234" (decimal units, as HF's max_shard_size) -> bytes; Error otherwise.
uint64_t parse_byte_size(const std::string& text);

}  // namespace nibble
