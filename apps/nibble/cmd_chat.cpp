// nibble chat: interactive multi-turn chat over stdin, replies streamed as they are generated.
// The conversation logic (KV reuse across turns, replay, context overflow) is runtime/chat_session.
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "commands.h"
#include "core/error.h"
#include "generation_options.h"
#include "memory_options.h"
#include "runtime/chat_session.h"
#include "runtime/engine.h"
#include "runtime/stop.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace nibble::app {

namespace {

struct ChatCmd {
  GenerationOptions gen;
  MemoryTelemetryOptions mem;
  bool replay = false;
  std::string overflow = "drop";
};

void print_out(std::string_view s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

void run_chat(const ChatCmd& c) {
  const std::filesystem::path dir = c.gen.model;
  check_model_dir(dir);
  std::unique_ptr<Tokenizer> tok = load_tokenizer_if_any(dir);
  if (!tok) fail_no_tokenizer(dir, "chat", "; `nibble generate --prompt-ids` runs such a model");
  const ChatTemplate tmpl = ChatTemplate::from_model_dir(dir, c.gen.chat_template);

  MemoryTelemetry mem(c.mem);
  std::unique_ptr<Engine> engine = Engine::load(dir, c.gen.engine_options());
  mem.phase(Phase::load, engine->planner_memory());
  const GenerationConfig gen_config = GenerationConfig::load(dir, engine->config());

  ChatSessionOptions so;
  so.system = c.gen.system;
  so.enable_thinking = c.gen.enable_thinking();
  so.replay = c.replay;
  so.overflow = parse_context_overflow(c.overflow);
  so.max_tokens = c.gen.max_tokens;
  so.sampling = resolve_sampler_params(gen_config, c.gen.sampler_overrides());
  so.eos_ids = collect_eos_ids(engine->config(), gen_config);
  for (int32_t id : end_of_turn_ids(*tok, tmpl))
    if (std::find(so.eos_ids.begin(), so.eos_ids.end(), id) == so.eos_ids.end()) so.eos_ids.push_back(id);
  so.stop_strings = c.gen.stop;
  so.on_phase_end = [&mem, &engine](Phase p) { mem.phase(p, engine->planner_memory()); };
  ChatSession session(*engine, *tok, tmpl, so);

  // The "> " marker is for a person at a terminal; piped input gets replies only.
  const bool interactive = ::isatty(STDIN_FILENO) == 1;
  if (c.gen.timing) {
    fmt::print(stderr, "[timing] context {} tokens, {}\n", engine->context_length(),
               so.sampling.greedy()
                   ? std::string("greedy")
                   : fmt::format("temperature {}, seed {}", so.sampling.temperature, so.sampling.seed));
  }
  std::string line;
  int turn = 0;
  while (true) {
    if (interactive) print_out("> ");
    if (!std::getline(std::cin, line)) {  // EOF (or a read error): the session ends cleanly
      if (interactive) print_out("\n");
      break;
    }
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (std::all_of(line.begin(), line.end(), [](unsigned char ch) { return std::isspace(ch); })) continue;
    if (line == "/exit" || line == "/quit") break;

    const TurnResult r = session.send(line, print_out, [](std::string_view notice) {
      std::fflush(stdout);
      fmt::print(stderr, "{}\n", notice);
    });
    if (r.status == TurnResult::Status::rejected) {
      fmt::print(stderr, "nibble: {}\n", r.message);
      continue;
    }
    if (r.status == TurnResult::Status::ended) {
      fmt::print(stderr, "nibble: {}\n", r.message);
      break;
    }
    ++turn;
    print_out("\n");
    if (!r.message.empty()) fmt::print(stderr, "nibble: {}\n", r.message);
    if (c.gen.timing) {
      const TurnStats& s = r.stats;
      fmt::print(stderr,
                 "[timing] turn {}: prefilled {} tokens ({} reused from the cache) in {:.1f} ms, "
                 "{:.0f} tok/s; decoded {} tokens in {:.1f} ms, {:.1f} tok/s; stop: {}{}\n",
                 turn, s.prefilled, s.reused, s.prefill_ms,
                 s.prefill_ms > 0 ? s.prefilled * 1000.0 / s.prefill_ms : 0.0, s.generated, s.decode_ms,
                 s.decode_tokens_per_s, stop_reason_name(r.stop_reason),
                 s.history_rewritten && s.dropped_turns == 0
                     ? "; the template rewrote earlier turns, re-prefilled from the first change"
                     : "");
    }
    if (r.session_over) break;
  }
}

}  // namespace

void add_chat_command(CLI::App& app) {
  auto c = std::make_shared<ChatCmd>();
  CLI::App* cmd = app.add_subcommand("chat", "Interactive multi-turn chat over stdin (EOF or /exit ends it)");
  add_generation_options(*cmd, c->gen, 512);
  cmd->add_flag("--replay", c->replay, "Re-prefill the whole history every turn (parity check; slower)");
  cmd->add_option(
         "--context-overflow", c->overflow,
         "When the context is full: drop (the oldest turns, keep the system message) | end (the chat)")
      ->check(CLI::IsMember({"drop", "end"}));
  add_memory_options(*cmd, c->mem);
  cmd->callback(ending_cleanly_after_phase([c] { run_chat(*c); }));
}

}  // namespace nibble::app
