// ChatSession over a FakeEngine with the real Qwen3 tokenizer and chat templates: later turns
// prefill only their new tokens, --replay gives identical replies, a template that rewrites
// history falls back to the common prefix, and the context-overflow policies.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "runtime/chat_session.h"
#include "support/fake_engine.h"
#include "support/test_support.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace nibble {
namespace {

using test::FakeEngine;

constexpr int64_t kVocab = 151936;  // Qwen3's lm_head rows

struct Qwen3 {
  // The 2507 Instruct template (no thinking) with the HF tokenizer.
  Tokenizer tok = Tokenizer::load_dir(test::data_dir() / "qwen3_tokenizer");
  ChatTemplate instruct = ChatTemplate::from_model_dir(test::data_dir() / "qwen3_4b_instruct_2507");
  ChatTemplate hybrid = ChatTemplate::from_model_dir(test::data_dir() / "qwen3_tokenizer");
  int32_t im_end = *tok.token_id("<|im_end|>");

  // Ordinary word tokens for the fake model to say.
  std::vector<int32_t> words() const { return tok.encode(" the cat sat on a warm mat and then it slept"); }
};

Qwen3& qwen3() {
  static Qwen3 q;
  return q;
}

ChatSessionOptions options(bool replay) {
  ChatSessionOptions o;
  o.system = "You are a test.";
  o.replay = replay;
  o.max_tokens = 12;
  o.eos_ids = {qwen3().im_end};
  return o;
}

std::string text_of(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += qwen3().tok.piece(id);
  return s;
}

// The conversation as the next turn renders it (Qwen3 templates render the last reply differently
// while it is the last message: with an empty <think> block).
std::string render_history(std::vector<ChatMessage> msgs, const ChatTemplate& tmpl,
                           std::optional<bool> thinking = std::nullopt) {
  msgs.push_back({"user", "next"});
  ChatTemplateOptions t;
  t.enable_thinking = thinking;
  return tmpl.render(msgs, t);
}

const std::vector<std::string> kTurns = {"Hello!", "Who are you?", "Tell me a story about a cat, please."};

TEST(ChatSession, LaterTurnsPrefillOnlyTheirNewTokens) {
  auto& q = qwen3();
  FakeEngine engine(kVocab, 4096, q.words(), q.im_end);
  ChatSessionOptions o = options(false);
  o.max_tokens = 6;  // about half the replies end at <|im_end|>, the others at max_tokens
  ChatSession s(engine, q.tok, q.instruct, o);
  auto turn = [](size_t i) { return i < kTurns.size() ? kTurns[i] : "And turn " + std::to_string(i) + "?"; };
  int64_t held = 0;  // tokens of the conversation before the turn
  StopReason last_stop = StopReason::eos;
  std::set<StopReason> stops;
  for (size_t i = 0; i < 12; ++i) {
    const TurnResult r = s.send(turn(i));
    ASSERT_EQ(r.status, TurnResult::Status::replied);
    EXPECT_FALSE(r.stats.history_rewritten) << "turn " << i;
    if (i == 0) {
      const std::vector<ChatMessage> first = {{"system", "You are a test."}, {"user", turn(0)}};
      ChatTemplateOptions t;
      EXPECT_EQ(r.stats.prefilled,
                static_cast<int64_t>(q.tok.encode(q.instruct.render(first, t), true).size()));
      EXPECT_EQ(r.stats.reused, 0);
    } else {
      // The last reply's final token (sampled, never forwarded), then the glue + user message +
      // generation prompt. That token is <|im_end|> when the reply ended there; at max_tokens it is
      // a reply token and <|im_end|> is part of the glue.
      const std::string glue = "\n<|im_start|>user\n" + turn(i) + "<|im_end|>\n<|im_start|>assistant\n";
      const int64_t im_end = last_stop == StopReason::eos ? 0 : 1;
      EXPECT_EQ(r.stats.prefilled, 1 + im_end + static_cast<int64_t>(q.tok.encode(glue, true).size()))
          << "turn " << i;
      // Everything held stays cached but the last reply's final token, which was never forwarded.
      EXPECT_EQ(r.stats.reused, held - 1) << "turn " << i;
    }
    EXPECT_EQ(
        engine.forward_sizes[engine.forward_sizes.size() - std::max<int64_t>(r.stats.generated - 1, 0) - 1],
        r.stats.prefilled);
    held = static_cast<int64_t>(s.tokens().size());
    EXPECT_EQ(held, r.stats.reused + r.stats.prefilled + r.stats.generated);
    last_stop = r.stop_reason;
    stops.insert(r.stop_reason);

    // The cache holds the conversation's tokens (all but the last, not yet forwarded), and their
    // text is the template's rendering of the conversation.
    const std::vector<int32_t>& all = s.tokens();
    ASSERT_EQ(engine.position(), static_cast<int64_t>(all.size()) - 1);
    EXPECT_TRUE(std::equal(engine.kv().begin(), engine.kv().end(), all.begin()));
    const std::string rendered = render_history(s.messages(), q.instruct);
    const std::string held_text = text_of(all);
    EXPECT_EQ(rendered.compare(0, held_text.size(), held_text), 0) << held_text << "\n---\n" << rendered;
  }
  ASSERT_EQ(s.messages().size(), 1 + 2 * 12u);
  EXPECT_EQ(s.messages()[0].role, "system");
  EXPECT_EQ(stops, (std::set<StopReason>{StopReason::eos, StopReason::max_tokens}));  // both cases seen
}

// Runs kTurns in one mode; returns the replies and the final token history.
std::pair<std::vector<std::string>, std::vector<int32_t>> converse(
    bool replay, ChatSessionOptions o, const ChatTemplate& tmpl, std::vector<int64_t>* prefilled = nullptr) {
  auto& q = qwen3();
  FakeEngine engine(kVocab, 4096, q.words(), q.im_end);
  o.replay = replay;
  ChatSession s(engine, q.tok, tmpl, o);
  std::vector<std::string> replies;
  for (const auto& t : kTurns) {
    std::string streamed;
    const TurnResult r = s.send(t, [&](std::string_view piece) { streamed += piece; });
    EXPECT_EQ(streamed, r.reply);
    replies.push_back(r.reply);
    if (prefilled) prefilled->push_back(r.stats.prefilled);
    if (replay) {
      EXPECT_EQ(r.stats.reused, 0);
    }
  }
  return {replies, s.tokens()};
}

TEST(ChatSession, ReplayGivesIdenticalGreedyReplies) {
  std::vector<int64_t> inc_prefill, rep_prefill;
  const auto inc = converse(false, options(false), qwen3().instruct, &inc_prefill);
  const auto rep = converse(true, options(false), qwen3().instruct, &rep_prefill);
  EXPECT_EQ(inc.first, rep.first);
  EXPECT_EQ(inc.second, rep.second);
  // Replay re-prefills everything: from turn 2 on it forwards strictly more.
  for (size_t i = 1; i < kTurns.size(); ++i) EXPECT_GT(rep_prefill[i], inc_prefill[i]);
  EXPECT_EQ(inc_prefill[0], rep_prefill[0]);
}

TEST(ChatSession, ReplayGivesIdenticalSampledReplies) {
  ChatSessionOptions o = options(false);
  o.sampling.temperature = 1.0f;
  o.sampling.seed = 42;
  const auto inc = converse(false, o, qwen3().instruct);
  const auto rep = converse(true, o, qwen3().instruct);
  EXPECT_EQ(inc.first, rep.first);
  EXPECT_EQ(inc.second, rep.second);
}

TEST(ChatSession, TemplateThatRewritesHistoryFallsBackToTheCommonPrefix) {
  // The hybrid template with enable_thinking=false puts an empty <think></think> block in the
  // generation prompt, and drops it from earlier replies: turn 2 must re-prefill from there.
  auto& q = qwen3();
  ChatSessionOptions o = options(false);
  o.enable_thinking = false;
  FakeEngine engine(kVocab, 4096, q.words(), q.im_end);
  ChatSession s(engine, q.tok, q.hybrid, o);
  const TurnResult first = s.send(kTurns[0]);
  const int64_t held = static_cast<int64_t>(s.tokens().size());
  const TurnResult second = s.send(kTurns[1]);
  EXPECT_FALSE(first.stats.history_rewritten);
  EXPECT_TRUE(second.stats.history_rewritten);
  EXPECT_LT(second.stats.reused, held - 1);
  EXPECT_GT(second.stats.reused, 0);  // the system message and the first user message stay
  EXPECT_TRUE(std::equal(engine.kv().begin(), engine.kv().end(), s.tokens().begin()));
  // The held tokens are this turn's prompt, rendered with its <think></think> block, then the reply.
  std::vector<ChatMessage> before_reply = s.messages();
  before_reply.pop_back();
  ChatTemplateOptions t;
  t.enable_thinking = false;
  std::string expected = q.hybrid.render(before_reply, t) + s.messages().back().content;
  if (second.stop_reason == StopReason::eos) expected += "<|im_end|>";
  EXPECT_EQ(text_of(s.tokens()), expected);

  const auto inc = converse(false, o, q.hybrid);
  const auto rep = converse(true, o, q.hybrid);
  EXPECT_EQ(inc.first, rep.first);
  EXPECT_EQ(inc.second, rep.second);
}

TEST(ChatSession, StopStringCutsTheReplyAndTheHistoryFollows) {
  auto& q = qwen3();
  ChatSessionOptions o = options(false);
  o.max_tokens = 40;
  o.stop_strings = {" mat"};
  FakeEngine engine(kVocab, 4096, q.words(), /*eos=*/-1);
  ChatSession s(engine, q.tok, q.instruct, o);
  const TurnResult r = s.send(kTurns[0]);
  if (r.stop_reason == StopReason::stop_string) {
    EXPECT_EQ(r.reply.find(" mat"), std::string::npos);
    EXPECT_EQ(s.messages().back().content, r.reply);
  }
  const TurnResult r2 = s.send(kTurns[1]);
  EXPECT_EQ(r2.status, TurnResult::Status::replied);
  EXPECT_TRUE(std::equal(engine.kv().begin(), engine.kv().end(), s.tokens().begin()));
  const std::string held_text = text_of(std::vector<int32_t>(s.tokens().begin(), s.tokens().end() - 1));
  EXPECT_EQ(render_history(s.messages(), q.instruct).compare(0, held_text.size(), held_text), 0);
}

TEST(ChatSession, ContextOverflowDropsTheOldestTurns) {
  auto& q = qwen3();
  ChatSessionOptions o = options(false);
  o.max_tokens = 8;
  FakeEngine engine(kVocab, 96, q.words(), q.im_end);
  ChatSession s(engine, q.tok, q.instruct, o);
  std::vector<std::string> notices;
  int64_t dropped = 0;
  for (int i = 0; i < 8; ++i) {
    const TurnResult r = s.send("Message number " + std::to_string(i) + ", tell me more.", {},
                                [&](std::string_view n) { notices.emplace_back(n); });
    ASSERT_EQ(r.status, TurnResult::Status::replied) << r.message;
    dropped += r.stats.dropped_turns;
    EXPECT_LE(engine.position(), 96);
    EXPECT_TRUE(std::equal(engine.kv().begin(), engine.kv().end(), s.tokens().begin()));
  }
  EXPECT_GT(dropped, 0);
  ASSERT_FALSE(notices.empty());
  EXPECT_NE(notices[0].find("dropped the oldest"), std::string::npos) << notices[0];
  EXPECT_EQ(s.messages()[0].role, "system");  // kept
  EXPECT_EQ(s.messages()[1].role, "user");
  EXPECT_NE(s.messages()[1].content, "Message number 0, tell me more.");
  EXPECT_EQ(s.messages()[s.messages().size() - 2].content, "Message number 7, tell me more.");
}

TEST(ChatSession, ContextOverflowEndPolicyEndsTheSession) {
  auto& q = qwen3();
  ChatSessionOptions o = options(false);
  o.max_tokens = 8;
  o.overflow = ContextOverflow::end;
  FakeEngine engine(kVocab, 96, q.words(), q.im_end);
  ChatSession s(engine, q.tok, q.instruct, o);
  bool ended = false;
  for (int i = 0; i < 8 && !ended; ++i) {
    const size_t before = s.messages().size();
    const TurnResult r = s.send("Message number " + std::to_string(i) + ", tell me more.");
    if (r.session_over) {
      ended = true;
      EXPECT_NE(r.message.find("context"), std::string::npos) << r.message;
      if (r.status == TurnResult::Status::ended) EXPECT_EQ(s.messages().size(), before);
    }
  }
  EXPECT_TRUE(ended);
}

TEST(ChatSession, AMessageThatCannotFitIsRejectedAndTheChatGoesOn) {
  auto& q = qwen3();
  FakeEngine engine(kVocab, 128, q.words(), q.im_end);
  ChatSession s(engine, q.tok, q.instruct, options(false));
  ASSERT_EQ(s.send(kTurns[0]).status, TurnResult::Status::replied);
  const std::vector<int32_t> tokens = s.tokens();
  const auto messages = s.messages().size();
  std::string huge;
  for (int i = 0; i < 200; ++i) huge += "word ";
  const TurnResult r = s.send(huge);
  EXPECT_EQ(r.status, TurnResult::Status::rejected);
  EXPECT_NE(r.message.find("holds 128"), std::string::npos) << r.message;
  EXPECT_EQ(s.tokens(), tokens);  // nothing changed
  EXPECT_EQ(s.messages().size(), messages);
  const TurnResult next = s.send(kTurns[1]);
  EXPECT_EQ(next.status, TurnResult::Status::replied);
  EXPECT_FALSE(next.stats.history_rewritten);
}

}  // namespace
}  // namespace nibble
