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

// Pipelined decoding (Engine::decode_begin: step n + 1 runs on the id the device drew for it
// while the host reads id n): the same ids, stop reasons, KV cache and sampler stream as one step
// at a time, however a generation ends -- the speculative step past the end is truncated and its
// uniform taken back -- over two turns of one cached sequence.
TEST(Generate, PipelinedEqualsOneStepAtATime) {
  struct Case {
    const char* what;
    float temperature;
    int64_t context;
    int64_t max_tokens;
    int eos_every;  // FakeEngine: eos about one step in this many (0: never)
  };
  const Case cases[] = {
      {"greedy, max tokens", 0.0f, 256, 9, 0},    {"greedy, eos", 0.0f, 512, 200, 5},
      {"greedy, context full", 0.0f, 24, 200, 0}, {"sampled, eos", 0.9f, 512, 200, 4},
      {"sampled, max tokens", 0.9f, 256, 7, 0},   {"sampled, context full", 0.9f, 21, 200, 0}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    SamplerParams params;
    params.temperature = c.temperature;
    params.seed = 7;
    std::vector<int32_t> tokens[2], kv[2];
    std::vector<StopReason> reasons[2];
    double next_u[2] = {0, 0};
    int64_t pipelined_steps[2] = {0, 0};
    for (int pipelined = 0; pipelined < 2; ++pipelined) {
      FakeEngine engine(100, c.context, {10, 11, 12, 13, 14}, c.eos_every > 0 ? 99 : -1,
                        c.eos_every > 0 ? c.eos_every : 6);
      engine.set_device({.samples = true, .pipeline = pipelined == 1});
      Sampler sampler(params);
      StopChecker stop({99}, {});
      GenerateOptions opts;
      opts.max_tokens = c.max_tokens;
      std::vector<int32_t> seq = {1, 2, 3};
      for (int turn = 0; turn < 2 && engine.position() + 2 < c.context; ++turn) {
        const GenerateResult r = generate(engine, seq, engine.position(), sampler, stop, nullptr, opts);
        tokens[pipelined].insert(tokens[pipelined].end(), r.tokens.begin(), r.tokens.end());
        reasons[pipelined].push_back(r.reason);
        EXPECT_EQ(engine.outstanding(), 0);
        seq.insert(seq.end(), r.tokens.begin(), r.tokens.end());
        seq.push_back(5);  // the next turn's "user" token
      }
      kv[pipelined] = engine.kv();
      next_u[pipelined] = sampler.next_uniform();
      pipelined_steps[pipelined] = engine.pipelined_steps;
    }
    EXPECT_EQ(tokens[1], tokens[0]);
    EXPECT_EQ(reasons[1], reasons[0]);
    EXPECT_EQ(kv[1], kv[0]) << "the cache after both turns";
    EXPECT_EQ(next_u[1], next_u[0]) << "the sampler's stream after both turns";
    EXPECT_EQ(pipelined_steps[0], 0);
    EXPECT_GT(pipelined_steps[1], 0);
  }
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
