// `nibble inspect` for NVFP4 models: bytes and bits per logical weight, the quantisation error
// against the source (NMSE per weight, worst first), and the NVFP4 check_weights hook.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "format/hf_config.h"
#include "format/safetensors.h"
#include "quant/inspect_quant.h"
#include "quant/nvfp4.h"
#include "quant/quantize_model.h"
#include "support/test_support.h"

namespace nibble {
namespace {

namespace fs = std::filesystem;

fs::path llama() { return test::data_dir() / "llama2c_aidreams260K" / "hf"; }

void quantize_llama(const fs::path& out) {
  QuantizeOptions o;
  o.model_dir = llama();
  o.out_dir = out;
  quantize_model(o);
}

std::vector<uint8_t> f32_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

TEST(InspectQuant, BitsPerWeight) {
  test::ScratchDir d("iq");
  quantize_llama(d / "q");
  const WeightStore s = WeightStore::open_dir(d / "q");
  const WeightBitsReport r = inspect_weight_bits(s);
  ASSERT_EQ(r.rows.size(), 38u);  // 24 NVFP4 linears + 14 dense tensors, one row each
  const WeightBitsRow* q = nullptr;
  for (const auto& row : r.rows)
    if (row.name == "model.layers.0.self_attn.q_proj.weight") q = &row;
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->format, "NVFP4");
  EXPECT_EQ(q->shape, (std::vector<int64_t>{64, 64}));
  // 64 x 64 codes at 4 bits = 2048 bytes, 64 x 4 block scales = 256 bytes, 4 bytes global.
  EXPECT_EQ(q->bytes, 2048u + 256u + 4u);
  EXPECT_DOUBLE_EQ(q->bits_per_weight(), 8.0 * 2308 / 4096);
  ASSERT_GE(r.by_format.size(), 2u);
  EXPECT_EQ(r.by_format[0].format, "NVFP4");
  EXPECT_EQ(r.by_format[0].weights, 24);
  // 12 attention linears of 64x64 and 8 gate/up of 172x64 (the down_projs stay F32).
  EXPECT_EQ(r.by_format[0].params, 16 * 4096 + 8 * 11008);
  uint64_t stored = 0;
  for (const auto& n : s.names()) stored += s.get(n).nbytes;
  EXPECT_EQ(r.total.bytes, stored);
  const std::string text = format_weight_bits(r);
  EXPECT_NE(text.find("4.508"), std::string::npos) << text;
}

// One 16-element row whose rounding is known by hand: at global 2^-12 and block scale 2, values
// v * 2^-11 with v on the E2M1 bounds round to the table in DESIGN.md.
TEST(InspectQuant, NmseByHand) {
  test::ScratchDir d("nmse");
  const float g = 1.0f / 4096;
  const std::vector<float> v = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5, 6, 0, 0, 0, 0, 0, 0, 0, 0};
  const std::vector<float> rounded = {0, 1, 1, 2, 2, 4, 4, 6, 0, 0, 0, 0, 0, 0, 0, 0};
  std::vector<float> ref(16);
  for (int i = 0; i < 16; ++i) ref[i] = v[i] * 2 * g;
  double err = 0, mag = 0;
  for (int i = 0; i < 16; ++i) {
    err += (rounded[i] - v[i]) * (rounded[i] - v[i]);
    mag += v[i] * v[i];
  }
  const Nvfp4Tensor q = quantize_nvfp4(ref.data(), 1, 16, g);
  fs::create_directories(d / "q");
  fs::create_directories(d / "r");
  {
    SafetensorsWriter w;
    w.add_owned("a.p.weight", DType::U8, {1, 8}, q.packed);
    w.add_owned("a.p.weight_scale", DType::F8_E4M3, {1, 1}, q.scales);
    w.add_owned("a.p.weight_scale_2", DType::F32, {}, f32_bytes({g}));
    w.add_owned("a.norm.weight", DType::F32, {2}, f32_bytes({1.0f, 2.0f}));
    w.write(d / "q" / "model.safetensors");
    SafetensorsWriter r;
    r.add_owned("a.p.weight", DType::F32, {1, 16}, f32_bytes(ref));
    r.add_owned("a.norm.weight", DType::F32, {2}, f32_bytes({1.0f, 2.5f}));
    r.write(d / "r" / "model.safetensors");
  }
  const auto rows = quantization_error(WeightStore::open_dir(d / "q"), WeightStore::open_dir(d / "r"));
  ASSERT_EQ(rows.size(), 2u);
  // The norm: (2.5 - 2)^2 / (1 + 6.25) = 0.0345; the NVFP4 row: 1.75 / 84.75 = 0.0207. Worst first.
  EXPECT_EQ(rows[0].name, "a.norm.weight");
  EXPECT_NEAR(rows[0].nmse, 0.25 / 7.25, 1e-12);
  EXPECT_EQ(rows[1].name, "a.p.weight");
  EXPECT_EQ(rows[1].format, "NVFP4");
  EXPECT_NEAR(rows[1].nmse, 1.75 / 84.75, 1e-12);
  EXPECT_NEAR(rows[1].nmse, err / mag, 1e-12);
  EXPECT_NEAR(rows[1].max_abs, 1.0 * 2 * g, 1e-12);  // 5 -> 4 is the largest miss

  // Named errors: a weight missing in the quantised model, or of another shape.
  {
    SafetensorsWriter r;
    r.add_owned("a.p.weight", DType::F32, {2, 8}, f32_bytes(ref));
    r.add_owned("a.other.weight", DType::F32, {1}, f32_bytes({1.0f}));
    r.write(d / "r" / "model.safetensors");
  }
  try {
    quantization_error(WeightStore::open_dir(d / "q"), WeightStore::open_dir(d / "r"));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_TRUE(m.find("a.other.weight") != std::string::npos || m.find("[2, 8]") != std::string::npos) << m;
  }
}

TEST(InspectQuant, CheckWeightsHookAndBinary) {
  test::ScratchDir d("iqbin");
  quantize_llama(d / "q");
  const ModelConfig cfg = ModelConfig::load(d / "q");
  const WeightStore s = WeightStore::open_dir(d / "q");
  EXPECT_TRUE(weight_problems(cfg, s, check_nvfp4_linear).empty());
  EXPECT_FALSE(weight_problems(cfg, s).empty());  // without the hook, packed weights look wrong
  ExpectedTensor e{"model.layers.0.self_attn.q_proj.weight", {64, 64}, true};
  EXPECT_EQ(check_nvfp4_linear(e, s), std::optional<std::string>(""));
  e.shape = {64, 32};
  ASSERT_TRUE(check_nvfp4_linear(e, s).has_value());
  EXPECT_NE(check_nvfp4_linear(e, s)->find("q_proj.weight"), std::string::npos);
  EXPECT_FALSE(check_nvfp4_linear({"model.layers.0.mlp.down_proj.weight", {64, 172}, true}, s).has_value());

  const auto r = test::run_nibble({"inspect", "-m", (d / "q").string(), "--error", llama().string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("config check: ok"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("bits/weight"), std::string::npos);
  const size_t at = r.out.find("quantisation error against");
  ASSERT_NE(at, std::string::npos);
  // The first row after the header is an NVFP4 weight (dense copies have NMSE 0 and come last).
  const size_t first = r.out.find('\n', r.out.find('\n', at) + 1) + 1;
  EXPECT_NE(r.out.substr(first, 200).find("NVFP4"), std::string::npos) << r.out.substr(at, 400);
}

}  // namespace
}  // namespace nibble
