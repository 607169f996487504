// nibble inspect: tensor classification, row ordering, totals, and the command run as a user would
// on the llama fixture, a single file, a broken config and a missing directory.
#include <gtest/gtest.h>

#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "core/file.h"
#include "format/inspect.h"
#include "format/safetensors.h"
#include "support/test_support.h"

namespace nibble {
namespace {

using test::expect_contains;

namespace fs = std::filesystem;

const fs::path kLlama = test::data_dir() / "llama2c_aidreams260K/hf";

TEST(Inspect, ClassifiesHfNames) {
  EXPECT_EQ(classify_tensor("model.embed_tokens.weight"), TensorKind::Embedding);
  EXPECT_EQ(classify_tensor("lm_head.weight"), TensorKind::LmHead);
  EXPECT_EQ(classify_tensor("model.layers.0.self_attn.q_proj.weight"), TensorKind::Attention);
  EXPECT_EQ(classify_tensor("model.layers.0.self_attn.k_proj.bias"), TensorKind::Attention);
  EXPECT_EQ(classify_tensor("model.layers.0.self_attn.q_norm.weight"), TensorKind::Norm);
  EXPECT_EQ(classify_tensor("model.layers.7.input_layernorm.weight"), TensorKind::Norm);
  EXPECT_EQ(classify_tensor("model.layers.7.post_attention_layernorm.weight"), TensorKind::Norm);
  EXPECT_EQ(classify_tensor("model.norm.weight"), TensorKind::Norm);
  EXPECT_EQ(classify_tensor("model.layers.1.mlp.down_proj.weight"), TensorKind::Mlp);
  EXPECT_EQ(classify_tensor("model.layers.1.mlp.down_proj.weight_scale"), TensorKind::Mlp);
  EXPECT_EQ(classify_tensor("rotary_emb.inv_freq"), TensorKind::Other);
  EXPECT_EQ(tensor_kind_name(TensorKind::LmHead), "lm_head");
}

TEST(Inspect, NaturalOrderAndBytes) {
  EXPECT_TRUE(natural_less("model.layers.2.x", "model.layers.10.x"));
  EXPECT_FALSE(natural_less("model.layers.10.x", "model.layers.2.x"));
  EXPECT_TRUE(natural_less("a.weight", "a.weight_scale"));
  EXPECT_TRUE(natural_less("a1", "b0"));
  EXPECT_FALSE(natural_less("a7", "a7"));
  EXPECT_EQ(format_bytes(1000), "1000 B");
  EXPECT_EQ(format_bytes(1536), "1.5 KiB");
  EXPECT_EQ(format_bytes(923904), "902.2 KiB");
  EXPECT_EQ(format_bytes(8045591552ull), "7.5 GiB");
}

TEST(Inspect, LlamaFixtureTotals) {
  const auto ws = WeightStore::open_dir(kLlama);
  const auto r = inspect_weights(ws);
  ASSERT_EQ(r.rows.size(), 38u);
  EXPECT_EQ(r.rows.front().name, "model.embed_tokens.weight");
  EXPECT_EQ(r.rows[1].name, "model.layers.0.input_layernorm.weight");
  EXPECT_EQ(r.rows.back().name, "model.norm.weight");
  EXPECT_EQ(r.total.tensors, 38);
  EXPECT_EQ(r.total.params, 230976);
  EXPECT_EQ(r.total.bytes, 923904u);
  ASSERT_EQ(r.by_dtype.size(), 1u);
  EXPECT_EQ(r.by_dtype[0].group, "F32");
  EXPECT_EQ(r.by_dtype[0].bytes, 923904u);
  // 512*64 embedding; per layer 4 attention projections of 64*64, 3 MLP of 64*172, 2 norms of 64.
  ASSERT_EQ(r.by_kind.size(), 4u);
  EXPECT_EQ(r.by_kind[0].group, "embedding");
  EXPECT_EQ(r.by_kind[0].params, 512 * 64);
  EXPECT_EQ(r.by_kind[1].group, "attention");
  EXPECT_EQ(r.by_kind[1].params, 4 * 4 * 64 * 64);
  EXPECT_EQ(r.by_kind[2].group, "mlp");
  EXPECT_EQ(r.by_kind[2].params, 4 * 3 * 64 * 172);
  EXPECT_EQ(r.by_kind[3].group, "norm");
  EXPECT_EQ(r.by_kind[3].tensors, 9);
}

TEST(Inspect, TotalsByDTypeAndNumericLayerOrder) {
  test::ScratchDir dir("inspect");
  SafetensorsWriter w;
  w.add_owned("model.layers.10.mlp.up_proj.weight", DType::BF16, {4, 2}, std::vector<uint8_t>(16));
  w.add_owned("model.layers.2.mlp.up_proj.weight", DType::U8, {4, 1}, std::vector<uint8_t>(4));
  w.add_owned("lm_head.weight", DType::BF16, {3, 2}, std::vector<uint8_t>(12));
  w.add_owned("model.layers.2.mlp.up_proj.weight_scale_2", DType::F32, {}, std::vector<uint8_t>(4));
  w.write(dir / "w.safetensors");
  const auto r = inspect_weights(WeightStore::open(dir / "w.safetensors"));
  ASSERT_EQ(r.rows.size(), 4u);
  EXPECT_EQ(r.rows[0].name, "lm_head.weight");
  EXPECT_EQ(r.rows[1].name, "model.layers.2.mlp.up_proj.weight");
  EXPECT_EQ(r.rows[2].name, "model.layers.2.mlp.up_proj.weight_scale_2");
  EXPECT_EQ(r.rows[3].name, "model.layers.10.mlp.up_proj.weight");
  ASSERT_EQ(r.by_dtype.size(), 3u);  // DType order: F32, BF16, U8
  EXPECT_EQ(r.by_dtype[0].group, "F32");
  EXPECT_EQ(r.by_dtype[1].group, "BF16");
  EXPECT_EQ(r.by_dtype[1].tensors, 2);
  EXPECT_EQ(r.by_dtype[1].bytes, 28u);
  EXPECT_EQ(r.by_dtype[2].group, "U8");
  ASSERT_EQ(r.by_kind.size(), 2u);
  EXPECT_EQ(r.by_kind[0].group, "mlp");
  EXPECT_EQ(r.by_kind[0].params, 8 + 4 + 1);
  EXPECT_EQ(r.by_kind[1].group, "lm_head");
}

TEST(InspectCommand, LlamaFixture) {
  const auto r = test::run_nibble({"inspect", "--model", kLlama.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_contains(
      r.out, {"model.embed_tokens.weight", "model.layers.3.mlp.down_proj.weight", "[64, 172]", "44032",
              "config: LlamaForCausalLM: 4 layers", "config check: ok", "by dtype:", "by kind:", "embedding",
              "attention", "mlp", "norm", "total: 38 tensors, 230976 parameters, 923904 bytes (902.2 KiB)"});
  // One row per tensor in the table (between its header line and the totals), each with its dtype,
  // shape and bytes. Later sections may list the names again.
  const size_t begin = r.out.find("\nname "), end = r.out.find("\nby dtype:");
  ASSERT_LT(begin, end) << r.out;
  const std::string table = r.out.substr(begin, end - begin);
  size_t rows = 0;
  for (size_t p = table.find("\nmodel."); p != std::string::npos; p = table.find("\nmodel.", p + 1)) ++rows;
  EXPECT_EQ(rows, 38u);
  const size_t line = table.find("\nmodel.norm.weight ");
  ASSERT_NE(line, std::string::npos) << r.out;
  std::istringstream row(table.substr(line + 1, table.find('\n', line + 1) - line - 1));
  std::vector<std::string> cols{std::istream_iterator<std::string>(row), {}};
  EXPECT_EQ(cols, (std::vector<std::string>{"model.norm.weight", "F32", "[64]", "64", "256", "norm"}));
}

TEST(InspectCommand, SingleFileAndMismatchedConfig) {
  auto r = test::run_nibble({"inspect", "--model", (kLlama / "model.safetensors").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_contains(r.out, {"total: 38 tensors"});

  // A config the weights do not fit: inspect still lists them and names the problems.
  test::ScratchDir dir("inspect");
  fs::copy_file(kLlama / "model.safetensors", dir / "model.safetensors");
  write_file_atomic(dir / "config.json", R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 512,
      "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 5, "num_attention_heads": 4})");
  r = test::run_nibble({"inspect", "--model", dir.path().string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_contains(r.out, {"config check: 10 problems", "missing model.layers.4.mlp.up_proj.weight",
                          "missing lm_head.weight", "total: 38 tensors"});
  write_file_atomic(dir / "config.json", "{");
  r = test::run_nibble({"inspect", "--model", dir.path().string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  expect_contains(r.out, {"config: error:", "not valid JSON", "total: 38 tensors"});
}

TEST(InspectCommand, MissingOrEmptyDirectory) {
  test::ScratchDir dir("inspect");
  auto r = test::run_nibble({"inspect", "--model", (dir / "no_such_model").string()});
  EXPECT_NE(r.exit_code, 0);
  expect_contains(r.err, {"nibble: error:", "no_such_model", "does not exist"});
  EXPECT_EQ(r.out, "");
  r = test::run_nibble({"inspect", "--model", dir.path().string()});
  EXPECT_NE(r.exit_code, 0);
  expect_contains(r.err, {"no weights found", "model.safetensors"});
  r = test::run_nibble({"inspect"});
  EXPECT_NE(r.exit_code, 0);
  expect_contains(r.err, {"--model"});
}

}  // namespace
}  // namespace nibble
