// The FP8 and NVFP4 codecs against PyTorch: tests/fixtures/quant/*.safetensors, written on the GPU
// machine by scripts/gen_quant_fixtures.py (torch float8_e4m3fn casts on CPU and CUDA; ModelOpt's
// NVFP4 quantisation written out in torch ops). These tests fail, saying so, when the fixture
// files are missing: run the script on the GPU machine and copy OUTDIR/quant to tests/fixtures/.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/half.h"
#include "format/safetensors.h"
#include "quant/fp8.h"
#include "quant/nvfp4.h"
#include "support/test_support.h"

namespace nibble {
namespace {

std::filesystem::path fixture(const std::string& name) { return test::data_dir() / "quant" / name; }

bool have_fixture(const std::string& name) {
  if (std::filesystem::exists(fixture(name))) return true;
  ADD_FAILURE() << "missing fixture " << fixture(name)
                << ": run `python3 scripts/gen_quant_fixtures.py OUTDIR` on the GPU machine and copy "
                   "OUTDIR/quant/ to tests/fixtures/quant/";
  return false;
}

std::vector<float> as_f32(const TensorInfo& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  if (t.dtype == DType::F32) {
    std::memcpy(v.data(), t.data, t.nbytes);
  } else if (t.dtype == DType::BF16) {
    for (size_t i = 0; i < v.size(); ++i) {
      uint16_t h;
      std::memcpy(&h, t.data + 2 * i, 2);
      v[i] = bf16_to_f32(h);
    }
  } else {
    ADD_FAILURE() << t.name << ": unexpected dtype " << dtype_name(t.dtype);
  }
  return v;
}

std::vector<uint8_t> as_bytes(const TensorInfo& t) { return {t.data, t.data + t.nbytes}; }

const TensorInfo& get(const SafetensorsFile& f, const std::string& name) {
  const TensorInfo* t = f.find(name);
  if (t == nullptr) throw std::runtime_error("fixture tensor " + name + " is missing");
  return *t;
}

float scalar_f32(const TensorInfo& t) {
  EXPECT_EQ(t.dtype, DType::F32) << t.name;
  EXPECT_EQ(t.numel(), 1) << t.name;
  float v = 0.0f;
  if (t.nbytes == 4) std::memcpy(&v, t.data, 4);
  return v;
}

TEST(QuantFixtures, Fp8DecodeAll256Codes) {
  if (!have_fixture("fp8_e4m3.safetensors")) return;
  const auto f = SafetensorsFile::open(fixture("fp8_e4m3.safetensors"));
  const std::vector<float> ref = as_f32(get(f, "decode_f32"));
  ASSERT_EQ(ref.size(), 256u);
  for (int c = 0; c < 256; ++c) {
    const float mine = fp8_e4m3_to_f32(static_cast<uint8_t>(c));
    if (std::isnan(ref[c])) {
      EXPECT_TRUE(std::isnan(mine)) << c;
    } else {
      EXPECT_EQ(std::bit_cast<uint32_t>(mine), std::bit_cast<uint32_t>(ref[c])) << "code " << c;
    }
  }
}

TEST(QuantFixtures, Fp8EncodeMatchesTorchCast) {
  if (!have_fixture("fp8_e4m3.safetensors")) return;
  const auto f = SafetensorsFile::open(fixture("fp8_e4m3.safetensors"));
  const std::vector<float> x = as_f32(get(f, "encode_in"));
  for (const char* dev : {"encode_cpu", "encode_cuda"}) {
    const TensorInfo* t = f.find(dev);
    if (t == nullptr) {
      EXPECT_STRNE(dev, "encode_cpu") << "fixture lacks encode_cpu";
      continue;
    }
    ASSERT_EQ(t->numel(), static_cast<int64_t>(x.size()));
    int bad = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const uint8_t mine = f32_to_fp8_e4m3(x[i]);
      if (mine != t->data[i] && ++bad <= 20)
        ADD_FAILURE() << dev << ": x = " << x[i] << " (bits 0x" << std::hex << std::bit_cast<uint32_t>(x[i])
                      << ") torch 0x" << int(t->data[i]) << " ours 0x" << int(mine) << std::dec;
    }
    EXPECT_EQ(bad, 0) << dev << ": mismatches out of " << x.size();
  }
}

// Every case: packed codes, scale bytes and the global scale bit for bit, and the dequantised values.
// The randn_32x64 case is one where torch's CPU and CUDA global scales differ (meta.json).
TEST(QuantFixtures, Nvfp4MatchesModelOptAlgorithm) {
  if (!have_fixture("nvfp4.safetensors")) return;
  const auto f = SafetensorsFile::open(fixture("nvfp4.safetensors"));
  int cases = 0, differing_globals = 0;
  for (const TensorInfo& t : f.tensors()) {
    const std::string suffix = ".input";
    if (t.name.size() < suffix.size() ||
        t.name.compare(t.name.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    const std::string c = t.name.substr(0, t.name.size() - suffix.size());
    SCOPED_TRACE(c);
    ++cases;
    ASSERT_EQ(t.shape.size(), 2u);
    const std::vector<float> w = as_f32(t);
    // Our global scale is ModelOpt-on-CUDA's (amax * fp32(1/2688)); the CPU run of the same torch
    // code divides and can differ in the last bit. Quantised with either global, the codes and
    // scales must match that run's bit for bit.
    const float g_cuda = scalar_f32(get(f, c + ".cuda.weight_scale_2"));
    const float g_cpu = scalar_f32(get(f, c + ".weight_scale_2"));
    const Nvfp4Tensor q = quantize_nvfp4(w.data(), t.shape[0], t.shape[1]);
    EXPECT_EQ(std::bit_cast<uint32_t>(q.global_scale), std::bit_cast<uint32_t>(g_cuda))
        << "ours " << q.global_scale << " torch (cuda) " << g_cuda;
    EXPECT_EQ(q.scales, as_bytes(get(f, c + ".cuda.weight_scale")));
    EXPECT_EQ(q.packed, as_bytes(get(f, c + ".cuda.weight")));
    const Nvfp4Tensor qc = quantize_nvfp4(w.data(), t.shape[0], t.shape[1], g_cpu);
    const TensorInfo& s = get(f, c + ".weight_scale");
    EXPECT_EQ(s.dtype, DType::F8_E4M3);
    EXPECT_EQ(qc.scales, as_bytes(s));
    EXPECT_EQ(qc.packed, as_bytes(get(f, c + ".weight")));
    const float gref = g_cpu;
    differing_globals += g_cpu != g_cuda;
    // Dequantise the fixture's own bytes: ModelOpt's e2m1 * (scale * global).
    Nvfp4Tensor ref;
    ref.out = t.shape[0];
    ref.in = t.shape[1];
    ref.packed = as_bytes(get(f, c + ".weight"));
    ref.scales = as_bytes(s);
    ref.global_scale = gref;
    const std::vector<float> d = dequantize_nvfp4(ref.view());
    const std::vector<float> dref = as_f32(get(f, c + ".dequant"));
    ASSERT_EQ(d.size(), dref.size());
    for (size_t i = 0; i < d.size(); ++i) EXPECT_EQ(d[i], dref[i]) << i;
  }
  EXPECT_GE(cases, 5);
  EXPECT_GE(differing_globals, 1) << "the fixture should hold a case where CPU and CUDA torch differ";
}

// ModelOpt on an all-zero tensor computes weight_scale_2 = 0 and NaN block scales (0 / 0 is not
// caught by its "== 0 -> 1.0" rule). nibble deliberately differs: global 1.0, scales 1.0, codes 0.
TEST(QuantFixtures, AllZeroTensorIsWhereWeDifferFromModelOpt) {
  if (!have_fixture("meta.json")) return;
  std::ifstream in(fixture("meta.json"));
  const auto meta = nlohmann::json::parse(in);
  const auto& z = meta.at("all_zero_tensor");
  EXPECT_EQ(z.at("weight_scale_2").get<double>(), 0.0);
  for (const auto& b : z.at("weight_scale_bytes")) EXPECT_EQ(b.get<int>() & 0x7f, 0x7f);  // NaN
  const std::vector<float> zeros(64, 0.0f);
  const Nvfp4Tensor q = quantize_nvfp4(zeros.data(), 2, 32);
  EXPECT_EQ(q.global_scale, 1.0f);
  for (uint8_t s : q.scales) EXPECT_EQ(s, 0x38);
}

}  // namespace
}  // namespace nibble
