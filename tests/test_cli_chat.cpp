// `nibble chat` end to end on models/tiny-qwen3 (random weights, real Qwen3 tokenizer and
// template): a scripted three-turn chat over stdin whose --timing shows each later turn prefilled
// only its new tokens, --replay with identical greedy replies, EOF / /exit, context overflow.
#include <gtest/gtest.h>

#include <regex>
#include <string>
#include <vector>

#include "support/test_support.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace nibble {
namespace {

using test::run_nibble;

std::string tiny_qwen3() { return (test::repo_root() / "models" / "tiny-qwen3").string(); }

struct TurnTiming {
  int64_t prefilled = 0, reused = 0, decoded = 0;
  std::string stop;
};

// "[timing] turn N: prefilled P tokens (R reused from the cache) ... decoded D tokens ..."
std::vector<TurnTiming> timings(const std::string& err) {
  static const std::regex re(
      R"(\[timing\] turn \d+: prefilled (\d+) tokens \((\d+) reused[^;]*; decoded (\d+) tokens[^;]*; stop: (\w+))");
  std::vector<TurnTiming> out;
  for (auto it = std::sregex_iterator(err.begin(), err.end(), re); it != std::sregex_iterator(); ++it)
    out.push_back({std::stoll((*it)[1]), std::stoll((*it)[2]), std::stoll((*it)[3]), (*it)[4]});
  return out;
}

const std::vector<std::string> kTurns = {"Hello!", "Who are you?", "Tell me a story about a cat."};
const std::string kScript = "Hello!\nWho are you?\n\nTell me a story about a cat.\n";  // an empty line too

std::vector<std::string> chat_args(std::vector<std::string> extra) {
  std::vector<std::string> a = {"chat", "--model",       tiny_qwen3(), "--max-tokens",
                                "12",   "--temperature", "0",          "--timing"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

TEST(CliChat, ThreeTurnsOverStdinPrefillOnlyTheNewTokens) {
  const auto r = run_nibble(chat_args({}), kScript);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto t = timings(r.err);
  ASSERT_EQ(t.size(), 3u) << r.err;

  const Tokenizer tok = Tokenizer::load_dir(tiny_qwen3());
  const ChatTemplate tmpl = ChatTemplate::from_model_dir(tiny_qwen3());
  EXPECT_EQ(t[0].prefilled,
            static_cast<int64_t>(tok.encode(tmpl.render({{"user", kTurns[0]}}, {}), true).size()));
  EXPECT_EQ(t[0].reused, 0);
  int64_t held = t[0].prefilled + t[0].decoded;
  for (size_t i = 1; i < 3; ++i) {
    // Only the end-of-turn glue, the user message and the generation prompt are prefilled, with the
    // last reply's final token (sampled, never forwarded): <|im_end|> itself when the reply ended
    // there; at max_tokens a reply token, and <|im_end|> is then part of the glue.
    const std::string glue = "\n<|im_start|>user\n" + kTurns[i] + "<|im_end|>\n<|im_start|>assistant\n";
    const int64_t im_end = t[i - 1].stop == "eos" ? 0 : 1;
    EXPECT_EQ(t[i].prefilled, 1 + im_end + static_cast<int64_t>(tok.encode(glue, true).size()))
        << "turn " << i + 1;
    EXPECT_EQ(t[i].reused, held - 1) << "turn " << i + 1;
    held = t[i].reused + t[i].prefilled + t[i].decoded;
  }
  // Three replies, one line each; no "> " prompt when stdin is not a terminal.
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 3) << r.out;
  EXPECT_NE(r.out.rfind("> ", 0), 0u);
}

TEST(CliChat, ReplayGivesIdenticalGreedyReplies) {
  const auto inc = run_nibble(chat_args({}), kScript);
  const auto rep = run_nibble(chat_args({"--replay"}), kScript);
  ASSERT_EQ(inc.exit_code, 0) << inc.err;
  ASSERT_EQ(rep.exit_code, 0) << rep.err;
  EXPECT_EQ(inc.out, rep.out);
  const auto ti = timings(inc.err), tr = timings(rep.err);
  ASSERT_EQ(tr.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(tr[i].reused, 0);
    EXPECT_EQ(tr[i].prefilled, ti[i].reused + ti[i].prefilled) << "turn " << i + 1;  // the same sequence
  }
}

TEST(CliChat, EofAndExitEndTheSessionCleanly) {
  const auto empty = run_nibble(chat_args({}), "");
  EXPECT_EQ(empty.exit_code, 0) << empty.err;
  EXPECT_EQ(empty.out, "");

  const auto exit_cmd = run_nibble(chat_args({}), "Hello!\n/exit\nWho are you?\n");
  EXPECT_EQ(exit_cmd.exit_code, 0) << exit_cmd.err;
  EXPECT_EQ(timings(exit_cmd.err).size(), 1u);

  // No trailing newline on the last line: still one turn.
  const auto no_newline = run_nibble(chat_args({}), "Hello!");
  EXPECT_EQ(no_newline.exit_code, 0) << no_newline.err;
  EXPECT_EQ(timings(no_newline.err).size(), 1u);
}

TEST(CliChat, ContextOverflowDropsOldTurnsOrEnds) {
  std::string script;
  for (int i = 0; i < 6; ++i) script += "This is message number " + std::to_string(i) + " of the test.\n";
  const auto drop = run_nibble(chat_args({"--context", "96", "--system", "Be brief."}), script);
  EXPECT_EQ(drop.exit_code, 0) << drop.err;
  EXPECT_NE(drop.err.find("dropped the oldest"), std::string::npos) << drop.err;
  EXPECT_EQ(timings(drop.err).size(), 6u);

  const auto end = run_nibble(chat_args({"--context", "96", "--context-overflow", "end"}), script);
  EXPECT_EQ(end.exit_code, 0) << end.err;
  EXPECT_NE(end.err.find("ending the chat"), std::string::npos) << end.err;
  EXPECT_LT(timings(end.err).size(), 6u);
}

TEST(CliChat, AMessageTooLongForTheContextIsRefusedAndTheChatGoesOn) {
  std::string huge;
  for (int i = 0; i < 200; ++i) huge += "word ";
  const auto r = run_nibble(chat_args({"--context", "128"}), huge + "\nHello!\n");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("does not fit"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("holds 128"), std::string::npos) << r.err;
  EXPECT_EQ(timings(r.err).size(), 1u);
}

TEST(CliChat, ModelWithoutTokenizerIsAClearError) {
  const auto r =
      run_nibble({"chat", "--model", (test::data_dir() / "llama2c_aidreams260K" / "hf").string()}, "Hi\n");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("tokenizer.json"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace nibble
