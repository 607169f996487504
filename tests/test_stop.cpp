// StopChecker: eos ids, stop strings across token boundaries, and the hold-back of text that could
// still become a stop string (never a part of one shown).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "format/hf_config.h"
#include "runtime/stop.h"

namespace nibble {
namespace {

// Feeds `pieces` one by one; returns what was shown after each push.
std::vector<std::string> feed(StopChecker& s, const std::vector<std::string>& pieces) {
  std::vector<std::string> out;
  for (const auto& p : pieces) out.push_back(s.push(p));
  return out;
}

TEST(Stop, EosIds) {
  StopChecker s({151645, 151643}, {});
  EXPECT_TRUE(s.is_eos(151643));
  EXPECT_TRUE(s.is_eos(151645));
  EXPECT_FALSE(s.is_eos(0));
  EXPECT_FALSE(s.has_stop_strings());
}

TEST(Stop, NoStopStringsShowsEverythingAtOnce) {
  StopChecker s({}, {});
  EXPECT_EQ(feed(s, {"Hel", "lo", " world"}), (std::vector<std::string>{"Hel", "lo", " world"}));
  EXPECT_EQ(s.flush(), "");
  EXPECT_FALSE(s.stopped());
}

TEST(Stop, StopStringAcrossTokens) {
  StopChecker s({}, {"\nUser:"});
  // "\nUs" could start the stop string: held back; "er:" completes it: nothing of it is shown.
  const auto out = feed(s, {"Hi there", "\nUs", "er:", " more"});
  EXPECT_EQ(out, (std::vector<std::string>{"Hi there", "", "", ""}));
  EXPECT_TRUE(s.stopped());
  EXPECT_EQ(s.matched(), "\nUser:");
  EXPECT_EQ(s.emitted(), "Hi there");
}

TEST(Stop, HeldBackTextIsReleasedWhenItCannotMatch) {
  StopChecker s({}, {"STOP"});
  EXPECT_EQ(s.push("abcST"), "abc");
  EXPECT_EQ(s.push("x"), "STx");  // "STx" is no prefix of "STOP" any more
  EXPECT_EQ(s.push("S"), "");
  EXPECT_EQ(s.flush(), "S");  // end of generation: the held tail is shown
  EXPECT_FALSE(s.stopped());
  EXPECT_EQ(s.emitted(), "abcSTxS");
}

TEST(Stop, StopInsideOneToken) {
  StopChecker s({}, {"###"});
  EXPECT_EQ(s.push("answer: 42### junk"), "answer: 42");
  EXPECT_TRUE(s.stopped());
  EXPECT_EQ(s.push("more"), "");
  EXPECT_EQ(s.flush(), "");
}

TEST(Stop, EarliestOfSeveralStopStrings) {
  StopChecker s({}, {"world", "o w", "lo"});
  // "lo" starts at 3, "o w" at 4, "world" at 6: the earliest wins.
  EXPECT_EQ(s.push("hello world"), "hel");
  EXPECT_EQ(s.matched(), "lo");
}

TEST(Stop, HoldsBackTheLongestPossiblePrefix) {
  StopChecker s({}, {"aab"});
  EXPECT_EQ(s.push("xa"), "x");
  EXPECT_EQ(s.push("a"), "");   // "aa" held
  EXPECT_EQ(s.push("a"), "a");  // "aaa": only the last "aa" can still match
  EXPECT_EQ(s.push("b"), "");   // "aab": stop
  EXPECT_TRUE(s.stopped());
  EXPECT_EQ(s.emitted(), "xa");
}

TEST(Stop, UnicodeStopString) {
  StopChecker s({}, {"終わり"});
  EXPECT_EQ(s.push("これで終"), "これで");
  EXPECT_EQ(s.push("わり。"), "");
  EXPECT_EQ(s.emitted(), "これで");
}

TEST(Stop, EmptyStopStringIsAnError) { EXPECT_THROW(StopChecker({}, {""}), Error); }

TEST(Stop, CollectEosIds) {
  ModelConfig config;
  config.vocab_size = 151936;
  config.eos_token_ids = {151645, 7};
  GenerationConfig gen;
  gen.eos_token_ids = {151645, 151643, 999999};  // out of the vocabulary: dropped
  EXPECT_EQ(collect_eos_ids(config, gen), (std::vector<int32_t>{151645, 151643, 7}));
}

}  // namespace
}  // namespace nibble
