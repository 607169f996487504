// generate(): the decode loop over a FakeEngine (no tokenizer): stop on eos / max_tokens / a full
// context, the last token never forwarded, top logits per step; prompt id parsing and checks.
#include <gtest/gtest.h>

#include "core/error.h"
#include "runtime/generate.h"
#include "runtime/sampler.h"
#include "runtime/stop.h"
#include "support/fake_engine.h"

namespace nibble {
namespace {

using test::FakeEngine;

TEST(Generate, StopsAtMaxTokensWithoutForwardingTheLastToken) {
  FakeEngine engine(100, 64, {10, 11, 12, 13});
  Sampler sampler(SamplerParams{});
  StopChecker stop({}, {});
  GenerateOptions opts;
  opts.max_tokens = 5;
  const std::vector<int32_t> prompt = {1, 2, 3};
  GenerateResult r = generate(engine, prompt, 0, sampler, stop, nullptr, opts);
  EXPECT_EQ(r.reason, StopReason::max_tokens);
  ASSERT_EQ(r.tokens.size(), 5u);
  EXPECT_EQ(r.prefilled, 3);
  // One prefill of 3, then 4 single-token decode steps: the 5th token is never forwarded.
  EXPECT_EQ(engine.forward_sizes, (std::vector<int64_t>{3, 1, 1, 1, 1}));
  EXPECT_EQ(engine.position(), 3 + 5 - 1);
  for (int32_t t : r.tokens) EXPECT_TRUE(t >= 10 && t <= 13);
  EXPECT_TRUE(r.text.empty());
}

TEST(Generate, StopsOnEosAndKeepsIt) {
  FakeEngine engine(100, 512, {10, 11, 12, 13}, /*eos=*/99, /*eos_every=*/3);
  Sampler sampler(SamplerParams{});
  StopChecker stop({99}, {});
  GenerateOptions opts;
  opts.max_tokens = 400;
  const std::vector<int32_t> prompt = {1, 2, 3};
  GenerateResult r = generate(engine, prompt, 0, sampler, stop, nullptr, opts);
  EXPECT_EQ(r.reason, StopReason::eos);
  ASSERT_FALSE(r.tokens.empty());
  EXPECT_EQ(r.tokens.back(), 99);
  EXPECT_EQ(std::count(r.tokens.begin(), r.tokens.end(), 99), 1);
  EXPECT_EQ(engine.position(), static_cast<int64_t>(3 + r.tokens.size() - 1));
}

TEST(Generate, StopsWhenTheContextIsFull) {
  FakeEngine engine(100, 8, {10, 11});
  Sampler sampler(SamplerParams{});
  StopChecker stop({}, {});
  GenerateOptions opts;
  opts.max_tokens = 100;
  const std::vector<int32_t> prompt = {1, 2, 3};
  GenerateResult r = generate(engine, prompt, 0, sampler, stop, nullptr, opts);
  EXPECT_EQ(r.reason, StopReason::context_full);
  EXPECT_EQ(engine.position(), 8);
  EXPECT_EQ(r.tokens.size(), 6u);  // 5 forwarded to fill the cache + the last, sampled from it
}

TEST(Generate, ContinuesACachedSequence) {
  FakeEngine engine(100, 64, {10, 11, 12});
  const std::vector<int32_t> seq = {1, 2, 3, 4, 5};
  engine.forward(std::span<const int32_t>(seq).first(3));
  engine.forward_sizes.clear();
  Sampler sampler(SamplerParams{});
  StopChecker stop({}, {});
  GenerateOptions opts;
  opts.max_tokens = 2;
  opts.top_logits = 3;
  GenerateResult r = generate(engine, seq, 3, sampler, stop, nullptr, opts);
  EXPECT_EQ(r.prefilled, 2);
  EXPECT_EQ(engine.forward_sizes.front(), 2);
  ASSERT_EQ(r.top_logits.size(), 2u);
  ASSERT_EQ(r.top_logits[0].size(), 3u);
  EXPECT_EQ(r.top_logits[0][0].first, r.tokens[0]);  // greedy takes the top logit
  EXPECT_FLOAT_EQ(r.top_logits[0][0].second, 5.0f);
}

TEST(Generate, PhaseHooksRunAfterPrefillAndDecode) {
  FakeEngine engine(100, 64, {10});
  Sampler sampler(SamplerParams{});
  StopChecker stop({}, {});
  std::vector<Phase> phases;
  GenerateOptions opts;
  opts.max_tokens = 3;
  opts.on_phase_end = [&](Phase p) { phases.push_back(p); };
  const std::vector<int32_t> prompt = {1};
  generate(engine, prompt, 0, sampler, stop, nullptr, opts);
  EXPECT_EQ(phases, (std::vector<Phase>{Phase::prefill, Phase::decode}));
}

TEST(Generate, StopStringsNeedATokenizer) {
  FakeEngine engine(100, 64, {10});
  Sampler sampler(SamplerParams{});
  StopChecker stop({}, {"x"});
  const std::vector<int32_t> prompt = {1};
  EXPECT_THROW(generate(engine, prompt, 0, sampler, stop, nullptr, GenerateOptions{}), Error);
}

TEST(Generate, SeededSamplingIsReproducible) {
  auto run = [](uint64_t seed) {
    FakeEngine engine(100, 256, {10, 11, 12, 13, 14});
    SamplerParams p;
    p.temperature = 1.5f;
    p.seed = seed;
    Sampler sampler(p);
    StopChecker stop({}, {});
    GenerateOptions opts;
    opts.max_tokens = 40;
    const std::vector<int32_t> prompt = {1, 2};
    return generate(engine, prompt, 0, sampler, stop, nullptr, opts).tokens;
  };
  EXPECT_EQ(run(3), run(3));
  EXPECT_NE(run(3), run(4));
}

TEST(PromptIds, Parse) {
  EXPECT_EQ(parse_token_ids("1,2,3", "--prompt-ids"), (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(parse_token_ids(" 7 , 8", "--prompt-ids"), (std::vector<int32_t>{7, 8}));
  EXPECT_THROW(parse_token_ids("", "--prompt-ids"), Error);
  EXPECT_THROW(parse_token_ids("1,,2", "--prompt-ids"), Error);
  EXPECT_THROW(parse_token_ids("1,x", "--prompt-ids"), Error);
  EXPECT_THROW(parse_token_ids("1,-2", "--prompt-ids"), Error);
  EXPECT_THROW(parse_token_ids("99999999999", "--prompt-ids"), Error);
  try {
    parse_token_ids("1,2,abc", "--prompt-ids");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("entry 3 is `abc`"), std::string::npos) << e.what();
  }
}

TEST(PromptIds, Check) {
  const std::vector<int32_t> ok = {1, 2, 3};
  EXPECT_NO_THROW(check_prompt(ok, 512, 3));
  EXPECT_THROW(check_prompt(std::vector<int32_t>{}, 512, 16), Error);
  try {
    check_prompt(std::vector<int32_t>{1, 600}, 512, 16);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("600"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("512"), std::string::npos);
  }
  try {
    check_prompt(ok, 512, 2);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("3 tokens"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("holds 2"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace nibble
