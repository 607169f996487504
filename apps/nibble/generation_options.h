// defines: the options `generate` and `chat` share (model, device, context, sampling, stop strings,
// chat template) and the loading steps both run before generating.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/engine.h"
#include "runtime/sampler.h"

namespace nibble {
class Tokenizer;
class ChatTemplate;
}  // namespace nibble

namespace nibble::app {

struct GenerationOptions {
  std::string model;
  std::string device;            // "cpu" | "cuda"; empty: cuda when a GPU is present, else cpu
  double gpu_mem_budget_gb = 0;  // --gpu-mem-budget; 0: no budget
  std::string kv_cache = "bf16";  // --kv-cache bf16 | fp8 (cuda)
  int64_t context = 0;
  int threads = 0;
  int64_t max_tokens = 0;  // set by add_generation_options (per-command default)

  // Sampling: a flag left unset takes generation_config.json's value (CLI11 2.1 has no
  // std::optional options, so each keeps its Option* to ask whether it was given).
  float temperature = 0, top_p = 1, min_p = 0, repeat_penalty = 1;
  int64_t top_k = 0;
  uint64_t seed = 0;
  CLI::Option *temperature_opt = nullptr, *top_p_opt = nullptr, *min_p_opt = nullptr;
  CLI::Option *repeat_penalty_opt = nullptr, *top_k_opt = nullptr, *seed_opt = nullptr;

  std::vector<std::string> stop;
  std::string system;
  std::string thinking;  // "", "on", "off"
  std::string chat_template;
  bool timing = false;

  EngineOptions engine_options() const;
  SamplerOverrides sampler_overrides() const;
  std::optional<bool> enable_thinking() const;
};

void add_generation_options(CLI::App& cmd, GenerationOptions& o, int64_t default_max_tokens);

// Fails unless `dir` is a directory with a config.json (a clear message before anything loads).
void check_model_dir(const std::filesystem::path& dir);

// The model dir's tokenizer, or null when it has none.
std::unique_ptr<Tokenizer> load_tokenizer_if_any(const std::filesystem::path& dir);

// Fails with the files a tokenizer needs; `what` says what needed it ("a text prompt", "chat").
[[noreturn]] void fail_no_tokenizer(const std::filesystem::path& dir, const std::string& what,
                                    const std::string& suggestion);

// The chat template's end-of-turn tokens that exist in the vocabulary (tokenizer_config.json's
// eos_token and <|im_end|>): a templated reply ends there even where generation_config.json
// does not list them.
std::vector<int32_t> end_of_turn_ids(const Tokenizer& tok, const ChatTemplate& tmpl);

}  // namespace nibble::app
