// Loading NVFP4 checkpoints: quantisation configs (hf_quant_config.json, modelopt and
// compressed-tensors quantization_config), exclude patterns, the ModelOpt and compressed-tensors
// tensor layouts, and every layout error (wrong scale shape or dtype, K % 16 != 0, missing scales,
// NaN scales). Layouts per DESIGN.md "NVFP4" (ModelOpt export, vLLM modelopt.py).
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/file.h"
#include "format/hf_config.h"
#include "format/safetensors.h"
#include "quant/nvfp4.h"
#include "quant/nvfp4_checkpoint.h"
#include "support/test_support.h"

namespace nibble {
namespace {

std::vector<uint8_t> f32_bytes(float v) {
  std::vector<uint8_t> b(4);
  std::memcpy(b.data(), &v, 4);
  return b;
}

// Expects `f` to throw an Error whose message contains every one of `parts`.
template <typename F>
void expect_error(F f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << "message: " << msg << "\nmissing: " << p;
  }
}

struct Layer {
  int64_t out = 4, in = 32;
  Nvfp4Tensor q;
  Layer() {
    std::vector<float> w(static_cast<size_t>(out * in));
    for (size_t i = 0; i < w.size(); ++i) w[i] = std::sin(0.37f * static_cast<float>(i)) * 0.1f;
    q = quantize_nvfp4(w.data(), out, in);
  }
};

// Writes one linear "m.p" in a chosen (possibly broken) layout and returns the opened store.
class CheckpointTest : public ::testing::Test {
 protected:
  test::ScratchDir dir{"nvfp4ckpt"};
  Layer l;
  SafetensorsWriter w;
  WeightStore open() {
    w.write(dir / "model.safetensors");
    return WeightStore::open_dir(dir.path());
  }
  void add_modelopt(bool scale = true, bool global = true) {
    w.add_owned("m.p.weight", DType::U8, {l.out, l.in / 2}, l.q.packed);
    if (scale) w.add_owned("m.p.weight_scale", DType::F8_E4M3, {l.out, l.in / 16}, l.q.scales);
    if (global) w.add_owned("m.p.weight_scale_2", DType::F32, {}, f32_bytes(l.q.global_scale));
  }
};

TEST_F(CheckpointTest, ModelOptLayoutLoads) {
  add_modelopt();
  w.add_owned("m.p.input_scale", DType::F32, {}, f32_bytes(0.5f));
  const WeightStore s = open();
  const Weight wt = load_linear_weight(s, "m.p", l.out, l.in, {});
  EXPECT_TRUE(wt.is_nvfp4());
  EXPECT_EQ(wt.global_scale, l.q.global_scale);
  EXPECT_EQ(std::memcmp(wt.data, l.q.packed.data(), l.q.packed.size()), 0);
  EXPECT_EQ(std::memcmp(wt.scales, l.q.scales.data(), l.q.scales.size()), 0);
  EXPECT_EQ(wt.data, s.get("m.p.weight").data);  // a view into the mmap, no copy
}

TEST_F(CheckpointTest, CompressedTensorsLayoutLoadsWithReciprocalGlobal) {
  w.add_owned("m.p.weight_packed", DType::U8, {l.out, l.in / 2}, l.q.packed);
  w.add_owned("m.p.weight_scale", DType::F8_E4M3, {l.out, l.in / 16}, l.q.scales);
  w.add_owned("m.p.weight_global_scale", DType::F32, {1}, f32_bytes(4.0f));
  const WeightStore s = open();
  const Weight wt = load_linear_weight(s, "m.p", l.out, l.in, {});
  EXPECT_TRUE(wt.is_nvfp4());
  EXPECT_EQ(wt.global_scale, 0.25f);
}

TEST_F(CheckpointTest, DenseLayoutLoads) {
  std::vector<uint8_t> bf(static_cast<size_t>(l.out * l.in * 2), 0);
  w.add_owned("m.p.weight", DType::BF16, {l.out, l.in}, bf);
  const WeightStore s = open();
  const Weight wt = load_linear_weight(s, "m.p", l.out, l.in, {});
  EXPECT_FALSE(wt.is_nvfp4());
  EXPECT_EQ(wt.dtype, DType::BF16);
  expect_error([&] { load_linear_weight(s, "m.p", l.out, l.in + 1, {}); },
               {"m.p.weight", "[4, 33]", "BF16 [4, 32]"});
  expect_error([&] { load_linear_weight(s, "m.q", 2, 2, {}); }, {"m.q.weight", "missing", "[2, 2]"});
}

TEST_F(CheckpointTest, ScaleOfWrongShape) {
  w.add_owned("m.p.weight", DType::U8, {l.out, l.in / 2}, l.q.packed);
  w.add_owned("m.p.weight_scale", DType::F8_E4M3, {l.out * 2, l.in / 32}, l.q.scales);
  w.add_owned("m.p.weight_scale_2", DType::F32, {}, f32_bytes(1.0f));
  const WeightStore s = open();
  expect_error([&] { load_linear_weight(s, "m.p", l.out, l.in, {}); },
               {"m.p.weight_scale", "expected F8_E4M3 [4, 2]", "found F8_E4M3 [8, 1]", "model.safetensors"});
}

TEST_F(CheckpointTest, WidenedScaleIsRejected) {
  w.add_owned("m.p.weight", DType::U8, {l.out, l.in / 2}, l.q.packed);
  w.add_owned("m.p.weight_scale", DType::F32, {l.out, l.in / 16},
              std::vector<uint8_t>(l.out * l.in / 16 * 4));
  w.add_owned("m.p.weight_scale_2", DType::F32, {}, f32_bytes(1.0f));
  const WeightStore s = open();
  expect_error([&] { load_linear_weight(s, "m.p", l.out, l.in, {}); },
               {"m.p.weight_scale", "F8_E4M3", "found F32"});
}

TEST_F(CheckpointTest, MissingScale) {
  add_modelopt(/*scale=*/false);
  const WeightStore s = open();
  expect_error([&] { load_linear_weight(s, "m.p", l.out, l.in, {}); },
               {"m.p.weight_scale", "missing", "F8_E4M3 [4, 2]"});
}

TEST_F(CheckpointTest, MissingGlobalScale) {
  add_modelopt(true, /*global=*/false);
  const WeightStore s = open();
  expect_error([&] { load_linear_weight(s, "m.p", l.out, l.in, {}); }, {"m.p.weight_scale_2", "missing"});
}

TEST_F(CheckpointTest, BadGlobalScale) {
  add_modelopt(true, false);
  w.add_owned("m.p.weight_scale_2", DType::F32, {}, f32_bytes(0.0f));
  const WeightStore s = open();
  expect_error([&] { load_linear_weight(s, "m.p", l.out, l.in, {}); }, {"m.p.weight_scale_2", "positive"});
}

TEST_F(CheckpointTest, KNotMultipleOf16) {
  w.add_owned("m.p.weight", DType::U8, {4, 12}, std::vector<uint8_t>(48));
  w.add_owned("m.p.weight_scale", DType::F8_E4M3, {4, 1}, std::vector<uint8_t>(4, 0x38));
  w.add_owned("m.p.weight_scale_2", DType::F32, {}, f32_bytes(1.0f));
  const WeightStore s = open();
  expect_error([&] { load_linear_weight(s, "m.p", 4, 24, {}); }, {"m.p.weight", "multiple of 16", "K = 24"});
}

TEST_F(CheckpointTest, PackedShapeMismatch) {
  add_modelopt();
  const WeightStore s = open();
  expect_error([&] { load_linear_weight(s, "m.p", l.out, 64, {}); },
               {"m.p.weight", "expected U8 [4, 32]", "found U8 [4, 16]"});
}

TEST_F(CheckpointTest, NaNBlockScale) {
  std::vector<uint8_t> sc = l.q.scales;
  sc[3] = 0xff;
  w.add_owned("m.p.weight", DType::U8, {l.out, l.in / 2}, l.q.packed);
  w.add_owned("m.p.weight_scale", DType::F8_E4M3, {l.out, l.in / 16}, sc);
  w.add_owned("m.p.weight_scale_2", DType::F32, {}, f32_bytes(1.0f));
  const WeightStore s = open();
  expect_error([&] { load_linear_weight(s, "m.p", l.out, l.in, {}); }, {"m.p.weight_scale", "[1, 1]", "NaN"});
}

TEST_F(CheckpointTest, FloatWeightWithScaleIsNotNvfp4) {
  w.add_owned("m.p.weight", DType::F8_E4M3, {l.out, l.in}, std::vector<uint8_t>(l.out * l.in));
  w.add_owned("m.p.weight_scale", DType::F32, {}, f32_bytes(1.0f));
  const WeightStore s = open();
  expect_error([&] { load_linear_weight(s, "m.p", l.out, l.in, {}); }, {"m.p.weight", "not an NVFP4 layout"});
}

// --- quantisation configs ---------------------------------------------------------------------

ModelConfig with_qc(const std::string& json_text) {
  ModelConfig c;
  c.quantization_config = nlohmann::json::parse(json_text);
  return c;
}

TEST(QuantConfig, HfQuantConfigJson) {
  test::ScratchDir d("qc");
  write_file_atomic(d / "hf_quant_config.json",
                    R"({"producer": {"name": "modelopt", "version": "0.29"},
                        "quantization": {"quant_algo": "NVFP4", "kv_cache_quant_algo": null, "group_size": 16,
                                         "exclude_modules": ["lm_head", "model.layers.3*"]}})");
  const QuantConfig q = read_quant_config(d.path(), ModelConfig{});
  EXPECT_TRUE(q.nvfp4);
  EXPECT_EQ(q.producer, "modelopt");
  EXPECT_EQ(q.exclude, (std::vector<std::string>{"lm_head", "model.layers.3*"}));
  EXPECT_TRUE(q.is_excluded("lm_head"));
  EXPECT_TRUE(q.is_excluded("model.layers.3.mlp.down_proj"));
  EXPECT_TRUE(q.is_excluded("model.layers.30.mlp.down_proj"));  // fnmatch: '*' spans dots and digits
  EXPECT_FALSE(q.is_excluded("model.layers.2.mlp.down_proj"));

  write_file_atomic(d / "hf_quant_config.json", R"({"producer": {"name": "modelopt"},
                        "quantization": {"quant_algo": "FP8", "exclude_modules": []}})");
  expect_error([&] { read_quant_config(d.path(), ModelConfig{}); }, {"hf_quant_config.json", "FP8", "NVFP4"});
  write_file_atomic(d / "hf_quant_config.json",
                    R"({"quantization": {"quant_algo": "NVFP4", "group_size": 32}})");
  expect_error([&] { read_quant_config(d.path(), ModelConfig{}); }, {"group_size", "16", "32"});
  write_file_atomic(d / "hf_quant_config.json",
                    R"({"quantization": {"quant_algo": "NVFP4", "exclude_modules": "x"}})");
  expect_error([&] { read_quant_config(d.path(), ModelConfig{}); }, {"exclude_modules", "list"});
}

TEST(QuantConfig, ConfigJsonQuantizationConfig) {
  test::ScratchDir d("qc2");
  EXPECT_FALSE(read_quant_config(d.path(), ModelConfig{}).nvfp4);
  QuantConfig q = read_quant_config(
      d.path(),
      with_qc(R"({"quant_method": "modelopt", "quant_algo": "NVFP4", "ignore": ["lm_head", "*.mlp.*"]})"));
  EXPECT_TRUE(q.nvfp4);
  EXPECT_TRUE(q.is_excluded("model.layers.0.mlp.up_proj"));
  EXPECT_FALSE(q.is_excluded("model.layers.0.self_attn.q_proj"));
  q = read_quant_config(d.path(),
                        with_qc(R"({"quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized",
                                             "ignore": ["lm_head", "re:.*layers\\.1\\..*"]})"));
  EXPECT_EQ(q.producer, "compressed-tensors");
  EXPECT_TRUE(q.is_excluded("model.layers.1.self_attn.q_proj"));
  EXPECT_FALSE(q.is_excluded("model.layers.11.self_attn.q_proj"));
  q = read_quant_config(d.path(), with_qc(R"({"quant_method": "compressed-tensors",
      "config_groups": {"group_0": {"format": "nvfp4-pack-quantized", "targets": ["Linear"]}}})"));
  EXPECT_TRUE(q.nvfp4);
  expect_error([&] { read_quant_config(d.path(), with_qc(R"({"quant_method": "awq", "bits": 4})")); },
               {"config.json", "awq", "not supported"});
  expect_error(
      [&] {
        read_quant_config(d.path(),
                          with_qc(R"({"quant_method": "compressed-tensors", "format": "pack-quantized"})"));
      },
      {"pack-quantized", "nvfp4-pack-quantized"});
  expect_error(
      [&] { read_quant_config(d.path(), with_qc(R"({"quant_method": "modelopt", "quant_algo": "FP8"})")); },
      {"FP8"});
}

TEST(QuantConfig, QuantizableLinears) {
  EXPECT_TRUE(is_quantizable_linear("model.layers.0.self_attn.q_proj.weight"));
  EXPECT_TRUE(is_quantizable_linear("model.layers.9.mlp.down_proj.weight"));
  EXPECT_FALSE(is_quantizable_linear("model.layers.0.self_attn.q_proj.bias"));
  EXPECT_FALSE(is_quantizable_linear("model.layers.0.self_attn.q_norm.weight"));
  EXPECT_FALSE(is_quantizable_linear("lm_head.weight"));
  EXPECT_FALSE(is_quantizable_linear("model.embed_tokens.weight"));
}

}  // namespace
}  // namespace nibble
