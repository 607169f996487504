// HF config.json / generation_config.json parsing for Qwen3, Qwen2 and Llama, rope variants, the
// tensors a config needs, and check_weights against real and damaged checkpoints.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <set>

#include "core/error.h"
#include "core/file.h"
#include "format/hf_config.h"
#include "format/safetensors.h"
#include "support/test_support.h"

namespace nibble {
namespace {

using test::error_of;
using test::expect_contains;

namespace fs = std::filesystem;
using json = nlohmann::json;

// A small Qwen3 config; tests edit it.
json tiny_qwen3() {
  return json::parse(R"({
    "architectures": ["Qwen3ForCausalLM"], "vocab_size": 32, "hidden_size": 16, "intermediate_size": 24,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
    "rms_norm_eps": 1e-6, "rope_theta": 1000000, "tie_word_embeddings": false, "eos_token_id": 5})");
}

std::set<std::string> expected_names(const ModelConfig& c) {
  std::set<std::string> s;
  for (const auto& e : expected_tensors(c)) s.insert(e.name);
  return s;
}

const ExpectedTensor* find_expected(const std::vector<ExpectedTensor>& v, const std::string& name) {
  for (const auto& e : v) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

TEST(HfConfig, RealQwen3_4B) {
  const auto dir = test::data_dir() / "qwen3_4b_instruct_2507";
  const auto c = ModelConfig::load(dir);
  EXPECT_EQ(c.arch, Arch::Qwen3);
  EXPECT_EQ(c.architecture, "Qwen3ForCausalLM");
  EXPECT_EQ(c.num_layers, 36);
  EXPECT_EQ(c.hidden_size, 2560);
  EXPECT_EQ(c.intermediate_size, 9728);
  EXPECT_EQ(c.num_heads, 32);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.vocab_size, 151936);
  EXPECT_EQ(c.max_position_embeddings, 262144);
  EXPECT_DOUBLE_EQ(c.rope_theta, 5e6);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::None);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{151645}));
  EXPECT_EQ(c.bos_token_id, 151643);
  EXPECT_TRUE(c.quantization_config.is_null());
  EXPECT_NE(c.summary().find("36 layers"), std::string::npos);

  const auto g = GenerationConfig::load(dir, c);
  EXPECT_EQ(g.eos_token_ids, (std::vector<int64_t>{151645, 151643}));
  EXPECT_TRUE(g.do_sample);
  EXPECT_DOUBLE_EQ(*g.temperature, 0.7);
  EXPECT_DOUBLE_EQ(*g.top_p, 0.8);
  EXPECT_EQ(*g.top_k, 20);
  EXPECT_FALSE(g.min_p.has_value());

  // The tensors the config asks for are exactly those of the real checkpoint's index.
  const json index = json::parse(read_text_file(dir / "model.safetensors.index.json"));
  std::set<std::string> real;
  for (const auto& [name, shard] : index["weight_map"].items()) real.insert(name);
  EXPECT_EQ(expected_names(c), real);
  const auto exp = expected_tensors(c);
  EXPECT_EQ(find_expected(exp, "model.layers.35.self_attn.k_proj.weight")->shape,
            (std::vector<int64_t>{1024, 2560}));
  EXPECT_EQ(find_expected(exp, "model.layers.0.self_attn.o_proj.weight")->shape,
            (std::vector<int64_t>{2560, 4096}));
  EXPECT_EQ(find_expected(exp, "model.layers.0.self_attn.q_norm.weight")->shape, (std::vector<int64_t>{128}));
  EXPECT_EQ(find_expected(exp, "model.layers.0.mlp.down_proj.weight")->shape,
            (std::vector<int64_t>{2560, 9728}));
  EXPECT_TRUE(find_expected(exp, "model.layers.0.mlp.down_proj.weight")->linear);
  EXPECT_FALSE(find_expected(exp, "model.embed_tokens.weight")->linear);
}

TEST(HfConfig, LlamaFixtureAndItsWeights) {
  const auto dir = test::data_dir() / "llama2c_aidreams260K/hf";
  const auto c = ModelConfig::load(dir);
  EXPECT_EQ(c.arch, Arch::Llama);
  EXPECT_EQ(c.num_layers, 4);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.intermediate_size, 172);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{2}));
  EXPECT_EQ(GenerationConfig::load(dir, c).eos_token_ids, (std::vector<int64_t>{2}));

  const auto ws = WeightStore::open_dir(dir);
  EXPECT_NO_THROW(check_weights(c, ws));
  EXPECT_TRUE(weight_problems(c, ws).empty());
  EXPECT_EQ(expected_tensors(c).size(), ws.names().size());
}

// Rewrites the llama fixture with `edit` applied to each tensor (return false to drop it).
using Edit =
    std::function<bool(const TensorInfo& t, DType& dtype, std::vector<int64_t>& shape, size_t& nbytes)>;
void write_edited_llama(const fs::path& out_dir, const Edit& edit) {
  const auto src = test::data_dir() / "llama2c_aidreams260K/hf";
  fs::copy_file(src / "config.json", out_dir / "config.json");
  const auto ws = WeightStore::open_dir(src);
  SafetensorsWriter w;
  for (const auto& name : ws.names()) {
    const auto& t = ws.get(name);
    DType dtype = t.dtype;
    std::vector<int64_t> shape = t.shape;
    size_t nbytes = t.nbytes;
    if (!edit(t, dtype, shape, nbytes)) continue;
    w.add_owned(name, dtype, shape, std::vector<uint8_t>(t.data, t.data + std::min(nbytes, t.nbytes)));
  }
  w.write(out_dir / "model.safetensors");
}

TEST(HfConfig, CheckWeightsNamesMissingAndMisshapedTensors) {
  test::ScratchDir dir("cfg");
  write_edited_llama(dir.path(),
                     [](const TensorInfo& t, DType& dtype, std::vector<int64_t>& shape, size_t& n) {
                       if (t.name == "model.layers.2.mlp.up_proj.weight") return false;
                       if (t.name == "model.norm.weight") shape = {32, 2};
                       if (t.name == "model.layers.0.input_layernorm.weight") dtype = DType::I32;
                       if (t.name == "model.layers.1.self_attn.k_proj.weight")
                         shape = {64, 63}, n = 64 * 63 * 4;
                       return true;
                     });
  const auto c = ModelConfig::load(dir.path());
  const auto ws = WeightStore::open_dir(dir.path());
  const auto msg = error_of([&] { check_weights(c, ws); });
  expect_contains(msg, {dir.path().string(), "4 problems", "missing model.layers.2.mlp.up_proj.weight",
                        "expected shape [172, 64]", "model.norm.weight: expected shape [64], found [32, 2]",
                        "model.layers.1.self_attn.k_proj.weight: expected shape [64, 64], found [64, 63]",
                        "model.layers.0.input_layernorm.weight: expected dtype F32, BF16 or F16, found I32",
                        "model.safetensors"});
  EXPECT_EQ(weight_problems(c, ws).size(), 4u);
}

// The hook a quantized checkpoint check plugs into: it sees every linear weight first.
TEST(HfConfig, CheckWeightsQuantizedLinearHook) {
  test::ScratchDir dir("cfg");
  const std::string q = "model.layers.0.mlp.gate_proj.weight";
  write_edited_llama(dir.path(),
                     [&](const TensorInfo& t, DType& dtype, std::vector<int64_t>& shape, size_t& n) {
                       if (t.name == q)
                         dtype = DType::U8, shape = {172, 32}, n = 172 * 32;  // packed 4-bit, [out, in/2]
                       return true;
                     });
  const auto c = ModelConfig::load(dir.path());
  const auto ws = WeightStore::open_dir(dir.path());
  expect_contains(error_of([&] { check_weights(c, ws); }), {q, "found [172, 32]"});

  std::vector<std::string> seen;
  auto accept_packed = [&](const ExpectedTensor& e, const WeightStore& store) -> std::optional<std::string> {
    seen.push_back(e.name);
    const TensorInfo* t = store.find(e.name);
    if (!t || t->dtype != DType::U8) return std::nullopt;  // dense: the normal check applies
    if (t->shape == std::vector<int64_t>{e.shape[0], e.shape[1] / 2}) return "";
    return e.name + ": bad packed shape";
  };
  EXPECT_NO_THROW(check_weights(c, ws, accept_packed));
  EXPECT_EQ(seen.size(), 4u * 7);  // q, k, v, o, gate, up, down per layer; lm_head is tied
  auto reject = [&](const ExpectedTensor& e, const WeightStore&) -> std::optional<std::string> {
    if (e.name == q) return "scale missing for " + e.name;
    return std::nullopt;
  };
  expect_contains(error_of([&] { check_weights(c, ws, reject); }),
                  {"(1 problem):", "scale missing for " + q});
}

TEST(HfConfig, Qwen2AndLlamaDifferByNormAndBias) {
  json j = tiny_qwen3();
  j["architectures"] = {"Qwen2ForCausalLM"};
  j.erase("head_dim");             // defaults to hidden / heads
  j.erase("num_key_value_heads");  // defaults to the query heads
  auto c = ModelConfig::from_json(j, "qwen2.json");
  EXPECT_EQ(c.arch, Arch::Qwen2);
  EXPECT_EQ(c.head_dim, 4);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_FALSE(c.qk_norm);
  auto names = expected_names(c);
  EXPECT_TRUE(names.count("model.layers.1.self_attn.v_proj.bias"));
  EXPECT_FALSE(names.count("model.layers.1.self_attn.o_proj.bias"));
  EXPECT_FALSE(names.count("model.layers.1.self_attn.q_norm.weight"));
  EXPECT_TRUE(names.count("lm_head.weight"));  // not tied
  EXPECT_EQ(find_expected(expected_tensors(c), "model.layers.0.self_attn.k_proj.bias")->shape,
            (std::vector<int64_t>{16}));

  j["architectures"] = {"LlamaForCausalLM"};
  c = ModelConfig::from_json(j, "llama.json");
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(expected_tensors(c).size(), 1u + 2 * 9 + 2);
  j["attention_bias"] = true;
  c = ModelConfig::from_json(j, "llama.json");
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_TRUE(c.o_bias);
  EXPECT_TRUE(expected_names(c).count("model.layers.0.self_attn.o_proj.bias"));

  json q3 = tiny_qwen3();
  c = ModelConfig::from_json(q3, "qwen3.json");
  EXPECT_EQ(expected_tensors(c).size(), 1u + 2 * 11 + 2);
  EXPECT_EQ(find_expected(expected_tensors(c), "model.layers.0.self_attn.q_proj.weight")->shape,
            (std::vector<int64_t>{32, 16}));  // 4 heads of 8: head_dim * heads != hidden
  q3.erase("architectures");
  q3["model_type"] = "qwen3";
  EXPECT_EQ(ModelConfig::from_json(q3, "x").arch, Arch::Qwen3);
}

TEST(HfConfig, RopeVariants) {
  json j = tiny_qwen3();
  j["max_position_embeddings"] = 40960;
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32768}};
  auto c = ModelConfig::from_json(j, "x");
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::Yarn);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 4.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.original_max_position_embeddings, 32768);
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_fast, 32.0);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);

  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 2}, {"beta_fast", 16}, {"attention_factor", 1.2}};
  c = ModelConfig::from_json(j, "x");
  EXPECT_DOUBLE_EQ(c.rope_scaling.original_max_position_embeddings, 40960);  // from max_position_embeddings
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_fast, 16);
  EXPECT_DOUBLE_EQ(c.rope_scaling.attention_factor, 1.2);

  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  EXPECT_EQ(ModelConfig::from_json(j, "x").rope_scaling.type, RopeScaling::Type::Linear);
  j["rope_scaling"] = {{"rope_type", "default"}};
  EXPECT_EQ(ModelConfig::from_json(j, "x").rope_scaling.type, RopeScaling::Type::None);
  j["rope_scaling"] = nullptr;
  EXPECT_EQ(ModelConfig::from_json(j, "x").rope_scaling.type, RopeScaling::Type::None);

  j["rope_scaling"] = json::parse(R"({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})");
  c = ModelConfig::from_json(j, "x");
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::Llama3);
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.original_max_position_embeddings, 8192);

  // transformers 5 moves theta and scaling into rope_parameters.
  json v5 = tiny_qwen3();
  v5.erase("rope_theta");
  v5["rope_parameters"] = {{"rope_theta", 5000000.0}, {"rope_type", "default"}};
  c = ModelConfig::from_json(v5, "x");
  EXPECT_DOUBLE_EQ(c.rope_theta, 5e6);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::None);
  v5["rope_parameters"] = {{"rope_theta", 1e6},
                           {"rope_type", "yarn"},
                           {"factor", 4.0},
                           {"original_max_position_embeddings", 32768}};
  c = ModelConfig::from_json(v5, "x");
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::Yarn);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  v5.erase("rope_parameters");
  EXPECT_DOUBLE_EQ(ModelConfig::from_json(v5, "x").rope_theta, 10000.0);  // transformers' default
}

TEST(HfConfig, Errors) {
  json j = tiny_qwen3();
  j["architectures"] = {"MistralForCausalLM"};
  expect_contains(error_of([&] { ModelConfig::from_json(j, "cfg.json"); }),
                  {"cfg.json", "MistralForCausalLM", "Qwen3ForCausalLM, Qwen2ForCausalLM, LlamaForCausalLM"});
  j = tiny_qwen3();
  j.erase("hidden_size");
  expect_contains(error_of([&] { ModelConfig::from_json(j, "cfg.json"); }),
                  {"cfg.json", "\"hidden_size\"", "missing"});
  j = tiny_qwen3();
  j["num_hidden_layers"] = "2";
  expect_contains(error_of([&] { ModelConfig::from_json(j, "cfg.json"); }),
                  {"num_hidden_layers", "integer", "\"2\""});
  j = tiny_qwen3();
  j["vocab_size"] = 32.5;
  expect_contains(error_of([&] { ModelConfig::from_json(j, "cfg.json"); }), {"vocab_size", "integer"});
  j = tiny_qwen3();
  j["num_key_value_heads"] = 3;
  expect_contains(error_of([&] { ModelConfig::from_json(j, "cfg.json"); }),
                  {"multiple", "num_key_value_heads 3"});
  j = tiny_qwen3();
  j["intermediate_size"] = 0;
  expect_contains(error_of([&] { ModelConfig::from_json(j, "cfg.json"); }),
                  {"intermediate_size", "positive"});
  j = tiny_qwen3();
  j["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
  expect_contains(error_of([&] { ModelConfig::from_json(j, "cfg.json"); }), {"dynamic", "yarn", "llama3"});
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"original_max_position_embeddings", 8192}};
  expect_contains(error_of([&] { ModelConfig::from_json(j, "cfg.json"); }), {"rope_scaling.low_freq_factor"});
  j["rope_scaling"] = {{"factor", 8.0}};
  expect_contains(error_of([&] { ModelConfig::from_json(j, "cfg.json"); }), {"rope_type"});
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", -1}};
  expect_contains(error_of([&] { ModelConfig::from_json(j, "cfg.json"); }), {"factor", "positive"});
  j = tiny_qwen3();
  j["hidden_act"] = "gelu";
  expect_contains(error_of([&] { ModelConfig::from_json(j, "cfg.json"); }), {"gelu", "silu"});
  j = tiny_qwen3();
  j["eos_token_id"] = {1, "x"};
  expect_contains(error_of([&] { ModelConfig::from_json(j, "cfg.json"); }), {"eos_token_id"});
  j = tiny_qwen3();
  j["eos_token_id"] = {3, 4};
  EXPECT_EQ(ModelConfig::from_json(j, "x").eos_token_ids, (std::vector<int64_t>{3, 4}));
  expect_contains(error_of([] { ModelConfig::from_json(json::array(), "cfg.json"); }),
                  {"cfg.json", "object"});
}

TEST(HfConfig, FileErrorsNameTheFile) {
  test::ScratchDir dir("cfg");
  expect_contains(error_of([&] { ModelConfig::load(dir / "nope"); }), {"nope", "does not exist"});
  expect_contains(error_of([&] { ModelConfig::load(dir.path()); }), {dir.path().string(), "config.json"});
  write_file_atomic(dir / "config.json", "{\"vocab_size\": ");
  expect_contains(error_of([&] { ModelConfig::load(dir.path()); }), {(dir / "config.json").string(), "JSON"});
  json j = tiny_qwen3();
  j.erase("num_attention_heads");
  write_file_atomic(dir / "config.json", j.dump());
  expect_contains(error_of([&] { ModelConfig::load(dir.path()); }),
                  {(dir / "config.json").string(), "\"num_attention_heads\""});

  write_file_atomic(dir / "config.json", tiny_qwen3().dump());
  const auto c = ModelConfig::load(dir.path());
  auto g = GenerationConfig::load(dir.path(), c);  // optional file: eos ids from config.json
  EXPECT_EQ(g.eos_token_ids, (std::vector<int64_t>{5}));
  EXPECT_FALSE(g.do_sample);
  EXPECT_FALSE(g.temperature.has_value());
  write_file_atomic(dir / "generation_config.json", R"({"temperature": "hot"})");
  expect_contains(error_of([&] { GenerationConfig::load(dir.path(), c); }),
                  {"generation_config.json", "temperature", "number"});
  write_file_atomic(dir / "generation_config.json",
                    R"({"top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1})");
  g = GenerationConfig::load(dir.path(), c);
  EXPECT_EQ(g.eos_token_ids, (std::vector<int64_t>{5}));
  EXPECT_EQ(*g.top_k, 40);
  EXPECT_DOUBLE_EQ(*g.min_p, 0.05);

  expect_contains(error_of([&] { require_model_file(dir.path(), "tokenizer.json", "nibble chat"); }),
                  {dir.path().string(), "tokenizer.json", "nibble chat"});
  EXPECT_EQ(require_model_file(dir.path(), "config.json", "x"), dir / "config.json");
}

}  // namespace
}  // namespace nibble
