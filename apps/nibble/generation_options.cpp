#include "generation_options.h"

#include "core/error.h"
#ifdef NIBBLE_HAVE_CUDA
#include "backend/cuda/context.cuh"
#endif
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace nibble::app {

EngineOptions GenerationOptions::engine_options() const {
  EngineOptions e;
  e.device = device;
  if (e.device.empty()) {  // the GPU when there is one
#ifdef NIBBLE_HAVE_CUDA
    e.device = cuda::cuda_device_count() > 0 ? "cuda" : "cpu";
#else
    e.device = "cpu";
#endif
  }
  if (gpu_mem_budget_gb > 0) e.gpu_mem_budget_gb = gpu_mem_budget_gb;
  e.kv_fp8 = kv_cache == "fp8";
  e.context_length = context;
  e.threads = threads;
  return e;
}

SamplerOverrides GenerationOptions::sampler_overrides() const {
  SamplerOverrides s;
  if (temperature_opt->count()) s.temperature = temperature;
  if (top_p_opt->count()) s.top_p = top_p;
  if (min_p_opt->count()) s.min_p = min_p;
  if (repeat_penalty_opt->count()) s.repetition_penalty = repeat_penalty;
  if (top_k_opt->count()) s.top_k = top_k;
  if (seed_opt->count()) s.seed = seed;
  return s;
}

std::optional<bool> GenerationOptions::enable_thinking() const {
  if (thinking.empty()) return std::nullopt;
  return thinking == "on";
}

void add_generation_options(CLI::App& cmd, GenerationOptions& o, int64_t default_max_tokens) {
  o.max_tokens = default_max_tokens;
  cmd.add_option("--model", o.model, "HF model directory (config.json, *.safetensors, tokenizer files)")
      ->required();
  cmd.add_option("--device", o.device, "cpu | cuda (default: cuda when a GPU is present)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  cmd.add_option("--gpu-mem-budget", o.gpu_mem_budget_gb,
                 "GB of GPU memory the model may plan (weights + KV cache + activations + workspaces); "
                 "refuse to start, showing the plan, when it does not fit")
      ->check(CLI::PositiveNumber);
  cmd.add_option("--kv-cache", o.kv_cache,
                 "KV cache element type on the GPU: bf16, or fp8 (E4M3, half the bytes; the CPU keeps fp32)")
      ->check(CLI::IsMember({"bf16", "fp8"}));
  cmd.add_option("--context", o.context,
                 "KV cache capacity in tokens (default: min(max_position_embeddings, 4096))")
      ->check(CLI::NonNegativeNumber);
  cmd.add_option("--threads", o.threads, "CPU threads (default: all cores)")->check(CLI::NonNegativeNumber);
  cmd.add_option("--max-tokens", o.max_tokens, "New tokens at most")
      ->default_val(default_max_tokens)
      ->check(CLI::PositiveNumber);
  o.temperature_opt =
      cmd.add_option("--temperature", o.temperature,
                     "Sampling temperature, 0 = greedy (default: generation_config.json; greedy "
                     "where it has no do_sample)");
  o.top_k_opt = cmd.add_option("--top-k", o.top_k,
                               "Keep the K most likely tokens, 0 = off (HF default 50 when sampling)");
  o.top_p_opt = cmd.add_option("--top-p", o.top_p, "Nucleus sampling mass, 1 = off");
  o.min_p_opt =
      cmd.add_option("--min-p", o.min_p, "Drop tokens below MIN_P times the top probability, 0 = off");
  o.repeat_penalty_opt = cmd.add_option("--repeat-penalty", o.repeat_penalty,
                                        "HF repetition penalty over prompt+output ids, 1 = off");
  o.seed_opt =
      cmd.add_option("--seed", o.seed, "Sampling seed (default: random, reported with --json / --timing)");
  cmd.add_option("--stop", o.stop, "Stop when the output contains this text (repeatable; not shown)");
  cmd.add_option("--system", o.system, "System message");
  cmd.add_option("--thinking", o.thinking, "on | off: the template's enable_thinking (Qwen3 hybrid models)")
      ->check(CLI::IsMember({"on", "off"}));
  cmd.add_option("--chat-template", o.chat_template,
                 "Template to use instead of the model's: a built-in name "
                 "(chatml) or a .jinja file");
  cmd.add_flag("--timing", o.timing, "Print prefill and decode timings to stderr");
}

void check_model_dir(const std::filesystem::path& dir) {
  if (!std::filesystem::is_directory(dir))
    fail("--model {}: not a directory (expected an HF model directory with config.json and *.safetensors)",
         dir.string());
  if (!std::filesystem::exists(dir / "config.json"))
    fail(
        "--model {}: no config.json there (expected an HF model directory with config.json and "
        "*.safetensors)",
        dir.string());
}

std::unique_ptr<Tokenizer> load_tokenizer_if_any(const std::filesystem::path& dir) {
  if (!Tokenizer::dir_has_tokenizer(dir)) return nullptr;
  return std::make_unique<Tokenizer>(Tokenizer::load_dir(dir));
}

void fail_no_tokenizer(const std::filesystem::path& dir, const std::string& what,
                       const std::string& suggestion) {
  fail("{} needs a tokenizer, and {} has none (expected tokenizer.json, or vocab.json + merges.txt){}", what,
       dir.string(), suggestion);
}

std::vector<int32_t> end_of_turn_ids(const Tokenizer& tok, const ChatTemplate& tmpl) {
  std::vector<int32_t> ids;
  for (const std::string& name : {tmpl.eos_token, std::string("<|im_end|>")}) {
    if (name.empty()) continue;
    if (auto id = tok.token_id(name); id && std::find(ids.begin(), ids.end(), *id) == ids.end())
      ids.push_back(*id);
  }
  return ids;
}

}  // namespace nibble::app
