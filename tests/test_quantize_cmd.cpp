// `nibble quantize` on the llama2c fixture (hidden 64, intermediate 172: down_proj's K = 172 is not
// a multiple of 16, so it stays dense): output layout and configs, shared global scales, sharding,
// the byte-identical round trips, exclusion patterns and error paths.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/file.h"
#include "format/safetensors.h"
#include "quant/nvfp4.h"
#include "quant/nvfp4_checkpoint.h"
#include "quant/quantize_model.h"
#include "support/test_support.h"

namespace nibble {
namespace {

using test::error_of;

namespace fs = std::filesystem;
using json = nlohmann::json;

fs::path llama() { return test::data_dir() / "llama2c_aidreams260K" / "hf"; }

std::string file_bytes(const fs::path& p) { return read_text_file(p); }

json read_json(const fs::path& p) { return json::parse(read_text_file(p)); }

std::vector<float> as_f32(const TensorInfo& t) {
  EXPECT_EQ(t.dtype, DType::F32) << t.name;  // the llama fixture is F32
  std::vector<float> v(static_cast<size_t>(t.numel()));
  std::memcpy(v.data(), t.data, t.nbytes);
  return v;
}

QuantizeSummary quantize(const fs::path& src, const fs::path& out, std::vector<std::string> exclude = {},
                         bool resave = false, uint64_t shard = 2'000'000'000) {
  QuantizeOptions o;
  o.model_dir = src;
  o.out_dir = out;
  o.exclude = std::move(exclude);
  o.resave = resave;
  o.max_shard_bytes = shard;
  o.threads = 3;
  return quantize_model(o);
}

const char* kProjs[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                        "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

TEST(QuantizeCmd, LlamaFixtureThroughTheBinary) {
  test::ScratchDir d("quantize");
  const auto r = test::run_nibble({"quantize", "--model", llama().string(), "--out", (d / "q").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("model.layers.0.mlp.down_proj has K = 172"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("[4/4] quantised model.layers.3"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("24 NVFP4 linears"), std::string::npos) << r.out;

  const fs::path q = d / "q";
  for (const char* f : {"config.json", "hf_quant_config.json", "model.safetensors", "generation_config.json"})
    EXPECT_TRUE(fs::exists(q / f)) << f;
  EXPECT_FALSE(fs::exists(q / "model.safetensors.index.json"));
  EXPECT_EQ(file_bytes(q / "generation_config.json"), file_bytes(llama() / "generation_config.json"));

  // Configs as vLLM's ModelOpt loader reads them (modelopt.py from_config / _from_config).
  const json hq = read_json(q / "hf_quant_config.json");
  EXPECT_EQ(hq["producer"]["name"], "modelopt");
  EXPECT_EQ(hq["quantization"]["quant_algo"], "NVFP4");
  EXPECT_EQ(hq["quantization"]["group_size"], 16);
  EXPECT_TRUE(hq["quantization"].contains("kv_cache_quant_algo"));
  std::vector<std::string> expect_excl = {"lm_head"};
  for (int l = 0; l < 4; ++l) expect_excl.push_back("model.layers." + std::to_string(l) + ".mlp.down_proj");
  EXPECT_EQ(hq["quantization"]["exclude_modules"].get<std::vector<std::string>>(), expect_excl);
  const json cfg = read_json(q / "config.json");
  const json src_cfg = read_json(llama() / "config.json");
  for (const auto& [k, v] : src_cfg.items()) EXPECT_EQ(cfg[k], v) << k;
  const json& qc = cfg["quantization_config"];
  EXPECT_EQ(qc["quant_method"], "modelopt");
  EXPECT_EQ(qc["quant_algo"], "NVFP4");
  EXPECT_EQ(qc["group_size"], 16);
  EXPECT_EQ(qc["ignore"].get<std::vector<std::string>>(), expect_excl);

  // Layouts, through the loader; q/k/v and gate/up share their global scale.
  const WeightStore src = WeightStore::open_dir(llama());
  const WeightStore out = WeightStore::open_dir(q);
  const QuantConfig qcfg = read_quant_config(q, ModelConfig::load(q));
  EXPECT_TRUE(qcfg.nvfp4);
  for (int l = 0; l < 4; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    std::map<std::string, Weight> w;
    for (const char* proj : kProjs) {
      const TensorInfo& s = src.get(p + proj + ".weight");
      w[proj] = load_linear_weight(out, p + proj, s.shape[0], s.shape[1], qcfg);
      const bool down = std::string(proj) == "mlp.down_proj";
      EXPECT_EQ(w[proj].is_nvfp4(), !down) << p << proj;
      EXPECT_EQ(qcfg.is_excluded(p + proj), down) << p << proj;
      if (down) {
        EXPECT_EQ(std::memcmp(w[proj].data, s.data, s.nbytes), 0);
        continue;
      }
      // Quantisation noise: NMSE of NVFP4 on these weights is ~1%; 3% is a generous ceiling.
      const std::vector<float> ref = as_f32(s), deq = dequantize_nvfp4(w[proj]);
      double err = 0, mag = 0;
      for (size_t i = 0; i < ref.size(); ++i) {
        err += (deq[i] - ref[i]) * (deq[i] - ref[i]);
        mag += ref[i] * ref[i];
      }
      EXPECT_LT(err / mag, 0.03) << p << proj;
      // weight_scale_2 = amax over the fusion group / 2688 (amax * fp32(1/2688), nvfp4.h).
      float amax = 0;
      const std::vector<std::string> group =
          proj[0] == 's' && std::string(proj) != "self_attn.o_proj"
              ? std::vector<std::string>{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}
              : (std::string(proj) == "self_attn.o_proj"
                     ? std::vector<std::string>{proj}
                     : std::vector<std::string>{"mlp.gate_proj", "mlp.up_proj"});
      for (const auto& g : group)
        for (float v : as_f32(src.get(p + g + ".weight"))) amax = std::max(amax, std::fabs(v));
      EXPECT_EQ(w[proj].global_scale, amax * (1.0f / 2688.0f)) << p << proj;
    }
    EXPECT_EQ(w["self_attn.q_proj"].global_scale, w["self_attn.k_proj"].global_scale);
    EXPECT_EQ(w["self_attn.q_proj"].global_scale, w["self_attn.v_proj"].global_scale);
    EXPECT_EQ(w["mlp.gate_proj"].global_scale, w["mlp.up_proj"].global_scale);
  }
  // Everything else (embeddings, norms) is copied unchanged.
  for (const std::string& n : src.names()) {
    if (is_quantizable_linear(n)) continue;
    const TensorInfo& a = src.get(n);
    const TensorInfo& b = out.get(n);
    EXPECT_EQ(a.dtype, b.dtype) << n;
    EXPECT_EQ(a.shape, b.shape) << n;
    EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes), 0) << n;
  }
  EXPECT_EQ(out.get("model.layers.0.self_attn.q_proj.weight_scale").dtype, DType::F8_E4M3);
  EXPECT_EQ(out.get("model.layers.0.self_attn.q_proj.weight_scale_2").shape, std::vector<int64_t>{});
}

// (a) quantise(dequantise(Q)) == Q for every NVFP4 linear of the quantised model, with Q's global
// scale (see test_nvfp4.cpp and nvfp4.h for why the global scale must be carried over).
// (b) load-then-save (`quantize --resave`) reproduces every file byte for byte, sharded or not.
TEST(QuantizeCmd, RoundTripsAreByteIdentical) {
  test::ScratchDir d("roundtrip");
  quantize(llama(), d / "q");
  const WeightStore out = WeightStore::open_dir(d / "q");
  int checked = 0;
  for (const std::string& n : out.names()) {
    if (!n.ends_with(".weight_scale_2")) continue;
    const std::string m = n.substr(0, n.size() - std::string(".weight_scale_2").size());
    const TensorInfo& packed = out.get(m + ".weight");
    const Weight w = load_linear_weight(out, m, packed.shape[0], packed.shape[1] * 2, {});
    const std::vector<float> deq = dequantize_nvfp4(w);
    const Nvfp4Tensor again = quantize_nvfp4(deq.data(), w.out, w.in, w.global_scale);
    EXPECT_EQ(std::memcmp(again.packed.data(), w.data, again.packed.size()), 0) << m;
    EXPECT_EQ(std::memcmp(again.scales.data(), w.scales, again.scales.size()), 0) << m;
    ++checked;
  }
  EXPECT_EQ(checked, 24);

  const auto r = test::run_nibble({"quantize", "--model", (d / "q").string(), "--out", (d / "q2").string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("already NVFP4"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--resave"), std::string::npos) << r.err;

  const auto r2 = test::run_nibble(
      {"quantize", "--model", (d / "q").string(), "--out", (d / "q2").string(), "--resave", "--quiet"});
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  for (const auto& e : fs::directory_iterator(d / "q")) {
    const std::string f = e.path().filename().string();
    EXPECT_EQ(file_bytes(e.path()), file_bytes(d / "q2" / f)) << f;
  }
  EXPECT_EQ(std::distance(fs::directory_iterator(d / "q"), {}),
            std::distance(fs::directory_iterator(d / "q2"), {}));

  // Sharded: 100 kB files, an index, the same tensors; the resave is identical too.
  const QuantizeSummary s = quantize(llama(), d / "s", {}, false, 100'000);
  EXPECT_GT(s.shards.size(), 2u);
  EXPECT_TRUE(fs::exists(d / "s" / "model.safetensors.index.json"));
  EXPECT_EQ(s.shards.front(), fmt::format("model-00001-of-{:05d}.safetensors", s.shards.size()));
  for (const auto& f : s.shards) EXPECT_TRUE(fs::exists(d / "s" / f)) << f;
  const WeightStore sh = WeightStore::open_dir(d / "s");
  EXPECT_EQ(sh.names(), out.names());
  for (const std::string& n : out.names()) {
    EXPECT_EQ(sh.get(n).nbytes, out.get(n).nbytes) << n;
    EXPECT_EQ(std::memcmp(sh.get(n).data, out.get(n).data, out.get(n).nbytes), 0) << n;
  }
  quantize(d / "s", d / "s2", {}, true, 100'000);
  for (const auto& e : fs::directory_iterator(d / "s"))
    EXPECT_EQ(file_bytes(e.path()), file_bytes(d / "s2" / e.path().filename())) << e.path().filename();
}

TEST(QuantizeCmd, ExcludePatterns) {
  test::ScratchDir d("exclude");
  std::vector<std::string> lines;
  QuantizeOptions o;
  o.model_dir = llama();
  o.out_dir = d / "q";
  o.exclude = {"model.layers.1.*", "*.layers.2.self_attn.k_proj"};
  o.progress = [&](const std::string& s) { lines.push_back(s); };
  const QuantizeSummary s = quantize_model(o);
  // layer 1: 6 quantisable linears excluded; layer 2: k excluded, q and v widened with it.
  EXPECT_EQ(s.quantized_linears, 24 - 6 - 3);
  const WeightStore out = WeightStore::open_dir(d / "q");
  const auto dense = [&](const std::string& m) { return out.get(m + ".weight").dtype == DType::F32; };
  for (const char* p : kProjs) EXPECT_TRUE(dense(std::string("model.layers.1.") + p)) << p;
  EXPECT_TRUE(dense("model.layers.2.self_attn.q_proj"));
  EXPECT_TRUE(dense("model.layers.2.self_attn.v_proj"));
  EXPECT_FALSE(dense("model.layers.2.self_attn.o_proj"));
  EXPECT_FALSE(dense("model.layers.0.self_attn.q_proj"));
  bool warned = false;
  for (const auto& l : lines)
    warned |= l.find("model.layers.2.self_attn.q_proj excluded too") != std::string::npos;
  EXPECT_TRUE(warned);
  const auto excl = read_json(d / "q" / "hf_quant_config.json")["quantization"]["exclude_modules"];
  EXPECT_NE(std::find(excl.begin(), excl.end(), "model.layers.1.*"), excl.end());
  EXPECT_NE(std::find(excl.begin(), excl.end(), "model.layers.2.self_attn.v_proj"), excl.end());
  // What nibble writes, nibble reads back with the same decisions.
  const QuantConfig q = read_quant_config(d / "q", ModelConfig::load(d / "q"));
  EXPECT_TRUE(q.is_excluded("model.layers.1.mlp.up_proj"));
  EXPECT_TRUE(q.is_excluded("model.layers.2.self_attn.q_proj"));
  EXPECT_FALSE(q.is_excluded("model.layers.2.self_attn.o_proj"));
}

TEST(QuantizeCmd, Errors) {
  test::ScratchDir d("qerr");
  // A non-empty --out needs --force; --force replaces it.
  fs::create_directories(d / "busy");
  write_file_atomic(d / "busy" / "x.txt", "x");
  EXPECT_NE(error_of([&] { quantize(llama(), d / "busy"); }).find("--force"), std::string::npos);
  {
    QuantizeOptions o;
    o.model_dir = llama();
    o.out_dir = d / "busy";
    o.force = true;
    quantize_model(o);
    EXPECT_FALSE(fs::exists(d / "busy" / "x.txt"));
    EXPECT_TRUE(fs::exists(d / "busy" / "model.safetensors"));
  }
  // The source itself, or a directory holding it, is never a valid --out.
  EXPECT_NE(error_of([&] { quantize(d / "busy", d / "busy", {}, true); }).find("replace the source"),
            std::string::npos);
  EXPECT_NE(error_of([&] { quantize(d / "busy", d.path(), {}, true); }).find("replace the source"),
            std::string::npos);
  // --resave on a dense source; --exclude on an NVFP4 one; a missing source.
  EXPECT_NE(error_of([&] { quantize(llama(), d / "r", {}, true); }).find("needs an NVFP4 source"),
            std::string::npos);
  EXPECT_NE(error_of([&] { quantize(d / "busy", d / "r", {"x"}, true); }).find("--exclude"),
            std::string::npos);
  EXPECT_NE(error_of([&] { quantize(d / "nope", d / "r"); }).find("nope"), std::string::npos);
  EXPECT_NE(error_of([] { parse_byte_size("2TB"); }).find("unit"), std::string::npos);
  EXPECT_EQ(parse_byte_size("2GB"), 2'000'000'000u);
  EXPECT_EQ(parse_byte_size("640kb"), 640'000u);

  // A non-finite weight: a named error, and no output directory (nor a partial one) is left.
  fs::create_directories(d / "nan");
  fs::copy_file(llama() / "config.json", d / "nan" / "config.json");
  SafetensorsWriter w;
  std::vector<float> v(64 * 64, 0.01f);
  v[77] = NAN;
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  w.add_owned("model.layers.0.self_attn.q_proj.weight", DType::F32, {64, 64}, b);
  w.write(d / "nan" / "model.safetensors");
  const std::string msg = error_of([&] { quantize(d / "nan", d / "nan_out"); });
  EXPECT_NE(msg.find("model.layers.0.self_attn.q_proj.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("non-finite"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(d / "nan_out"));
  for (const auto& e : fs::directory_iterator(d.path()))
    EXPECT_EQ(e.path().filename().string().find(".partial"), std::string::npos) << e.path();
}

// A compressed-tensors NVFP4 checkpoint re-saved in the ModelOpt layout: names converted, the
// reciprocal global scale inverted, codes and block scales copied.
TEST(QuantizeCmd, CompressedTensorsResavedAsModelOpt) {
  test::ScratchDir d("ct");
  fs::create_directories(d / "ct");
  json cfg = read_json(llama() / "config.json");
  cfg["quantization_config"] = {
      {"quant_method", "compressed-tensors"}, {"format", "nvfp4-pack-quantized"}, {"ignore", {"lm_head"}}};
  write_file_atomic(d / "ct" / "config.json", cfg.dump(2));
  std::vector<float> v(32 * 64);
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::cos(0.1f * static_cast<float>(i));
  const Nvfp4Tensor q = quantize_nvfp4(v.data(), 32, 64);
  SafetensorsWriter w;
  w.add_owned("m.p.weight_packed", DType::U8, {32, 32}, q.packed);
  w.add_owned("m.p.weight_scale", DType::F8_E4M3, {32, 4}, q.scales);
  const float inv = 0.5f;
  std::vector<uint8_t> gb(4);
  std::memcpy(gb.data(), &inv, 4);
  w.add_owned("m.p.weight_global_scale", DType::F32, {1}, gb);
  w.add_owned("model.norm.weight", DType::F32, {1}, gb);
  w.write(d / "ct" / "model.safetensors");
  quantize(d / "ct", d / "mo", {}, true);
  const WeightStore s = WeightStore::open_dir(d / "mo");
  EXPECT_EQ(s.names(), (std::vector<std::string>{"m.p.weight", "m.p.weight_scale", "m.p.weight_scale_2",
                                                 "model.norm.weight"}));
  const Weight wt = load_linear_weight(s, "m.p", 32, 64, {});
  EXPECT_EQ(wt.global_scale, 2.0f);
  EXPECT_EQ(std::memcmp(wt.data, q.packed.data(), q.packed.size()), 0);
  EXPECT_EQ(read_json(d / "mo" / "config.json")["quantization_config"]["quant_method"], "modelopt");
}

}  // namespace
}  // namespace nibble
