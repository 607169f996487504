// nibble generate: one prompt in, one continuation out (streamed text, or one JSON object).
#include <fmt/ranges.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/error.h"
#include "generation_options.h"
#include "memory_options.h"
#include "runtime/engine.h"
#include "runtime/generate.h"
#include "runtime/sampler.h"
#include "runtime/stop.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace nibble::app {

namespace {

struct GenerateCmd {
  GenerationOptions gen;
  MemoryTelemetryOptions mem;
  std::string prompt;
  std::string prompt_ids;
  bool raw = false;
  bool json = false;
  int64_t top_logits = 0;
  CLI::Option *prompt_opt = nullptr, *prompt_ids_opt = nullptr;
};

void run_generate(const GenerateCmd& c) {
  if (!c.prompt_opt->count() && !c.prompt_ids_opt->count())
    fail("no prompt: give --prompt TEXT or --prompt-ids 1,2,3");
  if (c.top_logits > 0 && !c.json)
    fail("--top-logits {} needs --json (the logits are part of the JSON output)", c.top_logits);
  const std::filesystem::path dir = c.gen.model;
  check_model_dir(dir);
  std::vector<int32_t> ids;
  if (c.prompt_ids_opt->count()) ids = parse_token_ids(c.prompt_ids, "--prompt-ids");

  // Cheap checks first: a missing tokenizer fails before the weights load.
  std::unique_ptr<Tokenizer> tok = load_tokenizer_if_any(dir);
  if (!tok && c.prompt_opt->count())
    fail_no_tokenizer(dir, "a text prompt (--prompt)", "; give --prompt-ids instead");
  if (!tok && !c.gen.stop.empty()) fail_no_tokenizer(dir, "--stop", "");
  std::optional<ChatTemplate> tmpl;
  if (c.prompt_opt->count() && !c.raw) tmpl = ChatTemplate::from_model_dir(dir, c.gen.chat_template);

  MemoryTelemetry mem(c.mem);
  std::unique_ptr<Engine> engine = Engine::load(dir, c.gen.engine_options());
  mem.phase(Phase::load, engine->planner_memory());
  const ModelConfig& config = engine->config();
  const GenerationConfig gen_config = GenerationConfig::load(dir, config);
  const SamplerParams params = resolve_sampler_params(gen_config, c.gen.sampler_overrides());
  std::vector<int32_t> eos = collect_eos_ids(config, gen_config);

  if (c.prompt_opt->count()) {
    std::string text = c.prompt;
    if (tmpl) {
      std::vector<ChatMessage> msgs;
      if (!c.gen.system.empty()) msgs.push_back({"system", c.gen.system});
      msgs.push_back({"user", c.prompt});
      ChatTemplateOptions t;
      t.add_generation_prompt = true;
      t.enable_thinking = c.gen.enable_thinking();
      text = tmpl->render(msgs, t);
      for (int32_t id : end_of_turn_ids(*tok, *tmpl))
        if (std::find(eos.begin(), eos.end(), id) == eos.end()) eos.push_back(id);
    }
    // Special tokens in the text are parsed, as HF's tokenizer(text) does.
    ids = tok->encode(text, /*parse_special=*/true);
  }
  check_prompt(ids, config.vocab_size, engine->context_length());

  Sampler sampler(params);
  StopChecker stop(eos, c.gen.stop);
  GenerateOptions g;
  g.max_tokens = c.gen.max_tokens;
  g.top_logits = c.top_logits;
  g.on_phase_end = [&mem, &engine](Phase p) { mem.phase(p, engine->planner_memory()); };
  const bool stream = tok && !c.json;
  GenerateResult r = generate(*engine, ids, 0, sampler, stop, tok.get(), g, [&](std::string_view s) {
    if (!stream) return;
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
  });

  if (c.json) {
    nlohmann::json j;
    j["prompt_ids"] = ids;
    j["output_ids"] = r.tokens;
    if (tok) j["text"] = r.text;
    j["stop_reason"] = stop_reason_name(r.reason);
    j["seed"] = params.seed;
    if (c.top_logits > 0) {
      nlohmann::json steps = nlohmann::json::array();
      for (const auto& step : r.top_logits) {
        nlohmann::json row = nlohmann::json::array();
        for (const auto& [id, logit] : step) row.push_back({{"id", id}, {"logit", logit}});
        steps.push_back(std::move(row));
      }
      j["top_logits"] = std::move(steps);
    }
    if (c.gen.timing) {
      j["timing"] = {{"prefill_tokens", r.prefilled},
                     {"prefill_ms", r.prefill_ms},
                     {"decode_tokens", r.tokens.size()},
                     {"decode_ms", r.decode_ms},
                     {"decode_tokens_per_s", r.decode_tokens_per_s()}};
    }
    // Invalid UTF-8 (a reply cut inside a character) becomes U+FFFD rather than an exception.
    fmt::print("{}\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  } else if (tok) {
    fmt::print("\n");
  } else {
    // No tokenizer: the ids, in --prompt-ids form.
    fmt::print("{}\n", fmt::join(r.tokens, ","));
  }
  std::fflush(stdout);
  if (c.gen.timing) {
    const std::string sampling =
        params.greedy() ? std::string("greedy")
                        : fmt::format("temperature {}, seed {}", params.temperature, params.seed);
    fmt::print(stderr,
               "[timing] prefill {} tokens in {:.1f} ms; decode {} tokens in {:.1f} ms ({:.1f} tok/s); stop: "
               "{}; {}\n",
               r.prefilled, r.prefill_ms, r.tokens.size(), r.decode_ms, r.decode_tokens_per_s(),
               stop_reason_name(r.reason), sampling);
  }
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto c = std::make_shared<GenerateCmd>();
  CLI::App* cmd =
      app.add_subcommand("generate", "Continue one prompt (text through the chat template, or ids)");
  add_generation_options(*cmd, c->gen, 256);
  c->prompt_opt =
      cmd->add_option("--prompt", c->prompt, "Prompt text (through the chat template unless --raw)");
  c->prompt_ids_opt = cmd->add_option("--prompt-ids", c->prompt_ids, "Prompt as token ids: 1,2,3");
  c->prompt_opt->excludes(c->prompt_ids_opt);
  cmd->add_flag("--raw", c->raw, "Tokenize --prompt as is, without the chat template");
  cmd->add_flag("--json", c->json, "Print one JSON object: prompt_ids, output_ids, text, stop_reason, seed");
  cmd->add_option("--top-logits", c->top_logits, "With --json: the K largest raw logits of every step")
      ->check(CLI::NonNegativeNumber);
  add_memory_options(*cmd, c->mem);
  cmd->callback(ending_cleanly_after_phase([c] { run_generate(*c); }));
}

}  // namespace nibble::app
