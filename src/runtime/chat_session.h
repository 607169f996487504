// defines: ChatSession (a multi-turn conversation over one Engine whose KV cache persists across
// turns), ChatSessionOptions, ContextOverflow, TurnResult, TurnStats.
//
// Each turn renders the whole conversation with the model's chat template (add_generation_prompt)
// and compares it with the text of the tokens the session already holds (the rendered prompts and
// the replies exactly as generated, never re-tokenized). Where the new rendering starts with that
// text, only the new suffix (end-of-turn glue + user message + generation prompt) is tokenized and
// prefilled. Where the template rewrites history (Qwen3's hybrid template drops <think> blocks of
// earlier replies), the cache is cut at the last token boundary inside the longest common prefix
// and the rest is re-prefilled; TurnStats::history_rewritten says so.
//
// The end-of-turn token that stopped a reply (<|im_end|>) is part of the history but is not
// forwarded at once: it goes into the next turn's prefill with the glue, so a reply costs no
// decode step for a token whose logits nobody reads.
//
// Replay mode (--replay) prefills the whole token history every turn from an empty cache. It
// builds the same token sequence as the incremental mode, so greedy replies are identical.
//
// Context full: before a turn, the prompt plus room for the reply (min(max_tokens, context/4))
// must fit. ContextOverflow::drop_oldest drops the oldest user/assistant turns (the system
// message stays) and re-prefills; ContextOverflow::end ends the session. A user message that
// cannot fit even alone is rejected and the session goes on unchanged. A reply cut by a full
// context ends the session under `end`; under `drop_oldest` the next turn drops turns.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/generate.h"
#include "runtime/sampler.h"
#include "tokenizer/chat_template.h"

namespace nibble {

class Engine;
class Tokenizer;

enum class ContextOverflow { drop_oldest, end };
ContextOverflow parse_context_overflow(const std::string& name);  // "drop" | "end"; throws Error

struct ChatSessionOptions {
  std::string system;                   // empty: no system message
  std::optional<bool> enable_thinking;  // passed to the template (unset: undefined there)
  bool replay = false;                  // re-prefill the whole history every turn
  ContextOverflow overflow = ContextOverflow::drop_oldest;
  int64_t max_tokens = 512;  // reply length limit
  SamplerParams sampling;
  std::vector<int32_t> eos_ids;             // end a reply (generation_config ∪ config ∪ end-of-turn)
  std::vector<std::string> stop_strings;    // end a reply on these texts (not shown)
  std::function<void(Phase)> on_phase_end;  // memory telemetry hook (see GenerateOptions)
};

struct TurnStats {
  int64_t prefilled = 0;           // tokens forwarded before the reply
  int64_t reused = 0;              // tokens kept in the KV cache from earlier turns
  int64_t generated = 0;           // reply tokens (the end-of-turn token included)
  int64_t dropped_turns = 0;       // oldest turns dropped to fit the context
  bool history_rewritten = false;  // the template changed earlier text; re-prefilled from there
  double prefill_ms = 0;
  double decode_ms = 0;
  double decode_tokens_per_s = 0;
};

struct TurnResult {
  enum class Status {
    replied,   // a reply was generated
    rejected,  // the user message cannot fit the context; nothing changed
    ended,     // the context is full and the policy is `end`: the session is over
  };
  Status status = Status::replied;
  std::string reply;  // the text shown
  StopReason stop_reason = StopReason::eos;
  TurnStats stats;
  std::string message;        // why, for rejected / ended (and a reply cut by a full context)
  bool session_over = false;  // no further turn is possible (ended, or a cut reply under `end`)
};

class ChatSession {
 public:
  // `engine` must be empty (position 0); the session owns its sequence from here on.
  ChatSession(Engine& engine, const Tokenizer& tok, const ChatTemplate& tmpl, ChatSessionOptions opts);

  // One turn: prefill what is new, stream the reply to `on_text`. `on_notice` gets one-line
  // notices (turns dropped to fit the context). Throws Error only for engine/template failures.
  TurnResult send(const std::string& user_text, const std::function<void(std::string_view)>& on_text = {},
                  const std::function<void(std::string_view)>& on_notice = {});

  const std::vector<ChatMessage>& messages() const { return messages_; }
  // The conversation's tokens; the last one may not be in the KV cache yet (see above).
  const std::vector<int32_t>& tokens() const { return tokens_; }
  const ChatSessionOptions& options() const { return opts_; }

 private:
  // How a rendering continues the history: keep the first `keep` tokens, then `fresh`.
  struct Plan {
    int64_t keep = 0;
    std::vector<int32_t> fresh;
    int64_t total() const { return keep + static_cast<int64_t>(fresh.size()); }
  };
  Plan plan(const std::string& rendered) const;
  std::string render(const std::vector<ChatMessage>& messages) const;
  void append_token(int32_t id);

  Engine* engine_;
  const Tokenizer* tok_;
  const ChatTemplate* tmpl_;
  ChatSessionOptions opts_;
  Sampler sampler_;
  std::vector<ChatMessage> messages_;
  std::vector<int32_t> tokens_;  // the conversation so far (prompts + replies as generated)
  std::string text_;             // the bytes of tokens_ (concatenated pieces)
  std::vector<size_t> ends_;     // ends_[i]: end offset of token i in text_
};

}  // namespace nibble
