// `nibble generate` end to end: greedy ids against HF transformers on the real llama2.c model
// (no tokenizer: --prompt-ids), JSON output, seeds, stop strings and text prompts on
// models/tiny-qwen3 (random weights, real tokenizer), and every bad input a clear error.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "support/test_support.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace nibble {
namespace {

using test::run_nibble;

std::string llama() { return (test::data_dir() / "llama2c_aidreams260K" / "hf").string(); }
std::string tiny_qwen3() { return (test::repo_root() / "models" / "tiny-qwen3").string(); }

std::vector<int32_t> hf_greedy_ids() {
  std::ifstream f(test::data_dir() / "llama2c_aidreams260K" / "hf" / "hf_greedy_ids.txt");
  std::vector<int32_t> ids;
  std::string item;
  while (std::getline(f, item, ',')) ids.push_back(std::stoi(item));
  return ids;
}

nlohmann::json run_json(const std::vector<std::string>& args) {
  const auto r = run_nibble(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return nlohmann::json::parse(r.out);
}

// Runs and expects a clean failure whose message contains every one of `needles`.
void expect_error(const std::vector<std::string>& args, const std::vector<std::string>& needles) {
  const auto r = run_nibble(args);
  EXPECT_NE(r.exit_code, 0) << "out: " << r.out;
  EXPECT_LT(r.exit_code, 128) << "crashed: " << r.err;
  for (const auto& n : needles)
    EXPECT_NE(r.err.find(n), std::string::npos) << "missing `" << n << "` in: " << r.err;
}

TEST(CliGenerate, GreedyIdsMatchHfTransformers) {
  const std::vector<int32_t> ref = hf_greedy_ids();  // BOS then HF's greedy continuation
  ASSERT_GT(ref.size(), 40u);
  const auto j = run_json({"generate", "--model", llama(), "--prompt-ids", "1", "--max-tokens", "40",
                           "--temperature", "0", "--json"});
  EXPECT_EQ(j["prompt_ids"].get<std::vector<int32_t>>(), std::vector<int32_t>{1});
  EXPECT_EQ(j["output_ids"].get<std::vector<int32_t>>(),
            std::vector<int32_t>(ref.begin() + 1, ref.begin() + 41));
  EXPECT_EQ(j["stop_reason"], "max_tokens");
  EXPECT_FALSE(j.contains("text"));  // no tokenizer in that directory
}

TEST(CliGenerate, DefaultsNeedOnlyModelAndPrompt) {
  // generation_config.json there has no do_sample: greedy, so the plain run equals HF too.
  const auto r = run_nibble({"generate", "--model", llama(), "--prompt-ids", "1", "--max-tokens", "8"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<int32_t> ref = hf_greedy_ids();
  std::string want;
  for (int i = 1; i <= 8; ++i) want += (i > 1 ? "," : "") + std::to_string(ref[i]);
  EXPECT_EQ(r.out, want + "\n");
}

TEST(CliGenerate, TopLogitsPerStep) {
  const auto j = run_json({"generate", "--model", llama(), "--prompt-ids", "1,319", "--max-tokens", "5",
                           "--temperature", "0", "--json", "--top-logits", "3"});
  const auto out = j["output_ids"].get<std::vector<int32_t>>();
  ASSERT_EQ(j["top_logits"].size(), out.size());
  for (size_t i = 0; i < out.size(); ++i) {
    const auto& step = j["top_logits"][i];
    ASSERT_EQ(step.size(), 3u);
    EXPECT_EQ(step[0]["id"].get<int32_t>(), out[i]);  // greedy takes the largest logit
    EXPECT_GE(step[0]["logit"].get<double>(), step[1]["logit"].get<double>());
    EXPECT_GE(step[1]["logit"].get<double>(), step[2]["logit"].get<double>());
  }
}

TEST(CliGenerate, SeedMakesSamplingReproducible) {
  auto sample = [](const std::string& seed) {
    return run_json({"generate", "--model", llama(), "--prompt-ids", "1", "--max-tokens", "24",
                     "--temperature", "1.0", "--top-k", "0", "--seed", seed, "--json"})["output_ids"]
        .get<std::vector<int32_t>>();
  };
  EXPECT_EQ(sample("7"), sample("7"));
  EXPECT_NE(sample("7"), sample("8"));
  const auto j = run_json({"generate", "--model", llama(), "--prompt-ids", "1", "--max-tokens", "2",
                           "--temperature", "1.0", "--seed", "99", "--json"});
  EXPECT_EQ(j["seed"].get<uint64_t>(), 99u);
}

TEST(CliGenerate, TextPromptGoesThroughTheChatTemplate) {
  const Tokenizer tok = Tokenizer::load_dir(tiny_qwen3());
  const ChatTemplate tmpl = ChatTemplate::from_model_dir(tiny_qwen3());
  const std::string rendered =
      tmpl.render({{"system", "Be brief."}, {"user", "Hello!"}}, ChatTemplateOptions{});
  const auto j = run_json({"generate", "--model", tiny_qwen3(), "--prompt", "Hello!", "--system", "Be brief.",
                           "--max-tokens", "6", "--temperature", "0", "--json"});
  EXPECT_EQ(j["prompt_ids"].get<std::vector<int32_t>>(), tok.encode(rendered, true));
  ASSERT_TRUE(j.contains("text"));
  const auto out = j["output_ids"].get<std::vector<int32_t>>();
  EXPECT_FALSE(out.empty());

  // --raw: the text as is.
  const auto raw = run_json({"generate", "--model", tiny_qwen3(), "--prompt", "Hello!", "--raw",
                             "--max-tokens", "2", "--temperature", "0", "--json"});
  EXPECT_EQ(raw["prompt_ids"].get<std::vector<int32_t>>(), tok.encode("Hello!", true));

  // The streamed text equals the JSON text.
  const auto plain = run_nibble({"generate", "--model", tiny_qwen3(), "--prompt", "Hello!", "--system",
                                 "Be brief.", "--max-tokens", "6", "--temperature", "0"});
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_EQ(plain.out, j["text"].get<std::string>() + "\n");
}

TEST(CliGenerate, StopStringEndsTheOutputBeforeIt) {
  const auto full = run_json({"generate", "--model", tiny_qwen3(), "--prompt", "Hi", "--max-tokens", "24",
                              "--temperature", "0", "--json"});
  const std::string text = full["text"];
  ASSERT_GT(text.size(), 8u) << text;
  // A stop string from the middle of the greedy output (whole characters: cut at an ASCII byte
  // or a UTF-8 lead byte).
  size_t at = text.size() / 2;
  while (at > 0 && (static_cast<unsigned char>(text[at]) & 0xC0) == 0x80) --at;
  const std::string stop = text.substr(at, std::min<size_t>(3, text.size() - at));
  const size_t first = text.find(stop);
  const auto cut = run_json({"generate", "--model", tiny_qwen3(), "--prompt", "Hi", "--max-tokens", "24",
                             "--temperature", "0", "--json", "--stop", stop});
  EXPECT_EQ(cut["stop_reason"], "stop");
  EXPECT_EQ(cut["text"].get<std::string>(), text.substr(0, first));
}

TEST(CliGenerate, BadInputIsAClearError) {
  expect_error({"generate", "--model", llama()}, {"--prompt"});
  expect_error({"generate", "--model", llama(), "--prompt", "x", "--prompt-ids", "1"}, {"--prompt"});
  expect_error({"generate", "--model", llama(), "--prompt-ids", "1,x"}, {"entry 2", "`x`"});
  expect_error({"generate", "--model", llama(), "--prompt-ids", "1,600"}, {"600", "512"});
  expect_error({"generate", "--model", llama(), "--prompt-ids", "1,2,3,4,5", "--context", "4"},
               {"5 tokens", "holds 4"});
  expect_error({"generate", "--model", llama(), "--prompt", "Once upon a time"},
               {"tokenizer.json", "--prompt-ids"});
  expect_error({"generate", "--model", llama(), "--prompt-ids", "1", "--stop", "x"}, {"tokenizer"});
  expect_error({"generate", "--model", llama(), "--prompt-ids", "1", "--top-p", "1.5"}, {"top-p"});
  expect_error({"generate", "--model", "/nonexistent/model", "--prompt-ids", "1"}, {"/nonexistent/model"});
  expect_error({"generate", "--model", llama(), "--prompt-ids", "1", "--top-logits", "3"}, {"--json"});
  expect_error({"generate", "--model", llama(), "--prompt-ids", "1", "--kv-cache", "fp4"}, {"--kv-cache", "fp4"});
  expect_error({"generate", "--model", llama(), "--prompt-ids", "1", "--device", "cpu", "--kv-cache", "fp8"},
               {"FP8 KV cache", "--device cuda"});
}

TEST(CliGenerate, BrokenModelDirectoriesAreClearErrors) {
  test::ScratchDir dir("cli-generate");
  // config.json only: the weights are missing.
  std::filesystem::copy_file(test::data_dir() / "llama2c_aidreams260K" / "hf" / "config.json",
                             dir / "config.json");
  expect_error({"generate", "--model", dir.path().string(), "--prompt-ids", "1"}, {"safetensors"});
  // An architecture nibble does not know.
  test::ScratchDir other("cli-generate-arch");
  for (const auto& e : std::filesystem::directory_iterator(test::data_dir() / "llama2c_aidreams260K" / "hf"))
    std::filesystem::copy_file(e.path(), other / e.path().filename().string());
  std::ifstream in(other / "config.json");
  std::stringstream ss;
  ss << in.rdbuf();
  in.close();
  auto config = nlohmann::json::parse(ss.str());
  config["architectures"] = {"MambaForCausalLM"};
  config["model_type"] = "mamba";
  std::ofstream(other / "config.json") << config.dump();
  expect_error({"generate", "--model", other.path().string(), "--prompt-ids", "1"}, {"MambaForCausalLM"});
}

}  // namespace
}  // namespace nibble
