#include "runtime/chat_session.h"

#include <algorithm>

#include "core/error.h"
#include "runtime/engine.h"
#include "runtime/stop.h"
#include "tokenizer/tokenizer.h"

namespace nibble {

ContextOverflow parse_context_overflow(const std::string& name) {
  if (name == "drop") return ContextOverflow::drop_oldest;
  if (name == "end") return ContextOverflow::end;
  fail("--context-overflow: expected `drop` (drop the oldest turns) or `end` (end the chat), got `{}`", name);
}

ChatSession::ChatSession(Engine& engine, const Tokenizer& tok, const ChatTemplate& tmpl,
                         ChatSessionOptions opts)
    : engine_(&engine), tok_(&tok), tmpl_(&tmpl), opts_(std::move(opts)), sampler_(opts_.sampling) {
  if (opts_.max_tokens < 1) fail("--max-tokens must be >= 1, got {}", opts_.max_tokens);
  engine_->truncate(0);
  if (!opts_.system.empty()) messages_.push_back({"system", opts_.system});
}

std::string ChatSession::render(const std::vector<ChatMessage>& messages) const {
  ChatTemplateOptions t;
  t.add_generation_prompt = true;
  t.enable_thinking = opts_.enable_thinking;
  return tmpl_->render(messages, t);
}

ChatSession::Plan ChatSession::plan(const std::string& rendered) const {
  // Longest common byte prefix of the held history and the new rendering, cut back to a token
  // boundary of the history: those tokens stay; the rest of the rendering is tokenized afresh.
  const size_t n = std::min(text_.size(), rendered.size());
  size_t common = 0;
  while (common < n && text_[common] == rendered[common]) ++common;
  Plan p;
  p.keep = std::upper_bound(ends_.begin(), ends_.end(), common) - ends_.begin();
  const size_t from = p.keep == 0 ? 0 : ends_[p.keep - 1];
  // Special tokens in the rendered text are parsed, as HF tokenizes apply_chat_template output.
  p.fresh = tok_->encode(std::string_view(rendered).substr(from), /*parse_special=*/true);
  return p;
}

void ChatSession::append_token(int32_t id) {
  tokens_.push_back(id);
  text_ += tok_->piece(id);
  ends_.push_back(text_.size());
}

TurnResult ChatSession::send(const std::string& user_text,
                             const std::function<void(std::string_view)>& on_text,
                             const std::function<void(std::string_view)>& on_notice) {
  TurnResult result;
  const int64_t ctx = engine_->context_length();
  const int64_t reserve = std::max<int64_t>(1, std::min(opts_.max_tokens, ctx / 4));

  std::vector<ChatMessage> msgs = messages_;
  msgs.push_back({"user", user_text});
  const size_t first_turn = (!msgs.empty() && msgs[0].role == "system") ? 1 : 0;
  Plan p;
  while (true) {
    p = plan(render(msgs));
    if (p.total() + reserve <= ctx) break;
    if (opts_.overflow == ContextOverflow::end) {
      result.status = TurnResult::Status::ended;
      result.session_over = true;
      result.message = fmt::format(
          "context full: the conversation needs {} tokens plus {} for the reply, the context holds {} "
          "(--context); ending the chat (--context-overflow drop would drop the oldest turns instead)",
          p.total(), reserve, ctx);
      return result;
    }
    // Drop the oldest turn: its user message and everything up to the next user message.
    const size_t last = msgs.size() - 1;  // the new user message
    if (first_turn >= last) {
      result.status = TurnResult::Status::rejected;
      result.message = fmt::format(
          "this message does not fit: with the template{} it needs {} tokens plus {} for the reply, the "
          "context holds {} (--context); not sent",
          first_turn ? " and the system prompt" : "", p.total(), reserve, ctx);
      return result;
    }
    size_t end = first_turn + 1;
    while (end < last && msgs[end].role != "user") ++end;
    msgs.erase(msgs.begin() + first_turn, msgs.begin() + end);
    ++result.stats.dropped_turns;
  }
  if (result.stats.dropped_turns > 0 && on_notice) {
    on_notice(fmt::format("[context full: dropped the oldest {} turn(s) to fit {} tokens; re-prefilling]",
                          result.stats.dropped_turns, ctx));
  }

  // Commit: the history becomes the kept tokens + the fresh ones.
  messages_ = std::move(msgs);
  result.stats.history_rewritten = p.keep < static_cast<int64_t>(tokens_.size());
  tokens_.resize(p.keep);
  ends_.resize(p.keep);
  text_.resize(p.keep == 0 ? 0 : ends_.back());
  for (int32_t id : p.fresh) append_token(id);

  const int64_t cached = opts_.replay ? 0 : std::min(p.keep, engine_->position());
  engine_->truncate(cached);

  Sampler& sampler = sampler_;
  StopChecker stop(opts_.eos_ids, opts_.stop_strings);
  GenerateOptions g;
  g.max_tokens = opts_.max_tokens;
  g.on_phase_end = opts_.on_phase_end;
  GenerateResult r = generate(*engine_, tokens_, cached, sampler, stop, tok_, g, on_text);
  for (int32_t id : r.tokens) append_token(id);
  messages_.push_back({"assistant", r.raw});

  result.reply = r.text;
  result.stop_reason = r.reason;
  result.stats.prefilled = r.prefilled;
  result.stats.reused = cached;
  result.stats.generated = static_cast<int64_t>(r.tokens.size());
  result.stats.prefill_ms = r.prefill_ms;
  result.stats.decode_ms = r.decode_ms;
  result.stats.decode_tokens_per_s = r.decode_tokens_per_s();
  if (r.reason == StopReason::context_full) {
    if (opts_.overflow == ContextOverflow::end) {
      result.session_over = true;
      result.message =
          fmt::format("context full ({} tokens, --context): the reply was cut; ending the chat", ctx);
    } else {
      result.message = fmt::format(
          "context full ({} tokens, --context): the reply was cut; the next turn drops the oldest turns",
          ctx);
    }
  }
  return result;
}

}  // namespace nibble
