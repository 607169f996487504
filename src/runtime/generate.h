// defines: generate() (prefill, then sample until a stop), GenerateOptions, GenerateResult, StopReason.
//
// Shared by `nibble generate` and the chat session. The token that ended generation (an eos id, or
// the last one at max_tokens) is sampled but never forwarded: a caller that continues the sequence
// (the next chat turn) forwards it together with what follows, which saves one decode step a turn.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tools/telemetry.h"

namespace nibble {

class Engine;
class Sampler;
class StopChecker;
class Tokenizer;

enum class StopReason { eos, stop_string, max_tokens, context_full };
const char* stop_reason_name(StopReason reason);  // "eos", "stop", "max_tokens", "context_full"

struct GenerateOptions {
  int64_t max_tokens = 256;  // new tokens at most (>= 1)
  int64_t top_logits = 0;    // > 0: record the K largest raw logits of every step
  // Called when a phase ends (Phase::prefill after the prompt's forward, Phase::decode at the end);
  // may throw (the memory telemetry's --stop-after does).
  std::function<void(Phase)> on_phase_end;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // sampled ids, the eos id that ended generation included
  std::string text;             // the text shown (stop string and what follows excluded)
  std::string raw;              // the bytes of the tokens before the end: pieces up to the stop string
  StopReason reason = StopReason::max_tokens;
  int64_t prefilled = 0;  // tokens forwarded for the prompt
  double prefill_ms = 0;
  double decode_ms = 0;  // the forwards after the prompt's (tokens.size() - 1 of them)
  std::vector<std::vector<std::pair<int32_t, float>>> top_logits;  // per step, when asked

  double decode_tokens_per_s() const {
    return decode_ms > 0 && tokens.size() > 1 ? (tokens.size() - 1) * 1000.0 / decode_ms : 0.0;
  }
};

// `sequence` is every token of the sequence: the first `cached` are already in the engine
// (cached == engine.position()), the rest are forwarded as the prompt (at least one). The whole
// sequence and the output feed the repetition penalty. Text goes to `on_text` as it becomes safe
// to show (needs `tok`; with no tokenizer nothing is decoded and stop strings are not allowed).
GenerateResult generate(Engine& engine, std::span<const int32_t> sequence, int64_t cached, Sampler& sampler,
                        StopChecker& stop, const Tokenizer* tok, const GenerateOptions& opts,
                        const std::function<void(std::string_view)>& on_text = {});

// "1,2,3" (spaces allowed around ids) -> ids. Throws Error naming `label` and the bad entry.
std::vector<int32_t> parse_token_ids(std::string_view text, std::string_view label);

// Throws Error unless the prompt is non-empty, every id is in [0, vocab) and it fits the context.
void check_prompt(std::span<const int32_t> ids, int64_t vocab, int64_t context_length);

}  // namespace nibble
