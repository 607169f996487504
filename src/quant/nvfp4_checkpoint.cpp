#include "quant/nvfp4_checkpoint.h"

#include <fnmatch.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstring>
#include <regex>

#include "core/error.h"
#include "core/file.h"
#include "quant/fp8.h"
#include "quant/nvfp4.h"

namespace nibble {
namespace {

using json = nlohmann::json;

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string describe(const TensorInfo& t) {
  return fmt::format("{} {} in {}", dtype_name(t.dtype), shape_str(t.shape), t.file);
}

std::vector<std::string> string_list(const json& j, const std::string& key, const std::string& where) {
  std::vector<std::string> out;
  if (!j.contains(key) || j.at(key).is_null()) return out;
  const json& v = j.at(key);
  if (!v.is_array())
    fail("{}: \"{}\" must be a list of module name patterns, found {}", where, key, v.dump());
  for (const json& e : v) {
    if (!e.is_string()) fail("{}: \"{}\" must hold strings, found {}", where, key, e.dump());
    out.push_back(e.get<std::string>());
  }
  return out;
}

void check_group_size(const json& j, const std::string& where) {
  if (!j.contains("group_size") || j.at("group_size").is_null()) return;
  const json& g = j.at("group_size");
  if (!g.is_number_integer() || g.get<int64_t>() != kNvfp4Block)
    fail("{}: NVFP4 group_size must be {}, found {}", where, kNvfp4Block, g.dump());
}

bool is_nvfp4_algo(const std::string& algo) {
  const std::string a = upper(algo);
  return a == "NVFP4" || a == "W4A16_NVFP4";
}

QuantConfig from_hf_quant_config(const json& j, const std::string& where) {
  if (!j.is_object() || !j.contains("quantization") || !j.at("quantization").is_object())
    fail("{}: expected an object with a \"quantization\" object", where);
  const json& q = j.at("quantization");
  const std::string algo =
      q.value("quant_algo", json()).is_string() ? q.at("quant_algo").get<std::string>() : "";
  if (!is_nvfp4_algo(algo))
    fail("{}: quant_algo is \"{}\"; nibble reads NVFP4 checkpoints only (or dense ones)", where, algo);
  check_group_size(q, where);
  QuantConfig c;
  c.nvfp4 = true;
  c.producer = "modelopt";
  c.exclude = string_list(q, "exclude_modules", where);
  return c;
}

QuantConfig from_quantization_config(const json& j, const std::string& where) {
  if (!j.is_object()) fail("{}: quantization_config must be an object, found {}", where, j.dump());
  const std::string method = j.value("quant_method", std::string());
  QuantConfig c;
  if (method.rfind("modelopt", 0) == 0) {
    const std::string algo = j.value("quant_algo", std::string());
    if (!is_nvfp4_algo(algo))
      fail("{}: modelopt quant_algo is \"{}\"; nibble reads NVFP4 checkpoints only (or dense ones)", where,
           algo);
    check_group_size(j, where);
    c.producer = "modelopt";
    c.exclude = string_list(j, j.contains("ignore") ? "ignore" : "exclude_modules", where);
  } else if (method == "compressed-tensors") {
    // NVFP4 in compressed-tensors: format "nvfp4-pack-quantized", top level or per config group.
    bool nvfp4 = j.value("format", std::string()) == "nvfp4-pack-quantized";
    if (j.contains("config_groups") && j.at("config_groups").is_object()) {
      for (const auto& [name, g] : j.at("config_groups").items()) {
        if (g.is_object() && g.value("format", std::string()) == "nvfp4-pack-quantized") nvfp4 = true;
      }
    }
    if (!nvfp4)
      fail(
          "{}: compressed-tensors checkpoint whose format is \"{}\", not nvfp4-pack-quantized; nibble reads "
          "NVFP4 checkpoints only (or dense ones)",
          where, j.value("format", std::string()));
    c.producer = "compressed-tensors";
    c.exclude = string_list(j, "ignore", where);
  } else {
    fail(
        "{}: quant_method \"{}\" is not supported; nibble reads NVFP4 checkpoints (ModelOpt or "
        "compressed-tensors) or dense ones",
        where, method);
  }
  c.nvfp4 = true;
  return c;
}

float read_scalar_f32(const TensorInfo& t, const std::string& what) {
  if (t.dtype != DType::F32 || t.numel() != 1)
    fail("{}: expected an F32 scalar ({}), found {}", t.name, what, describe(t));
  float v;
  std::memcpy(&v, t.data, sizeof v);
  return v;
}

void expect_tensor(const TensorInfo& t, DType dtype, const std::vector<int64_t>& shape,
                   const std::string& what) {
  if (t.dtype != dtype || t.shape != shape)
    fail("{}: expected {} {} ({}), found {}", t.name, dtype_name(dtype), shape_str(shape), what, describe(t));
}

}  // namespace

bool QuantConfig::is_excluded(const std::string& name) const {
  for (const std::string& p : exclude) {
    if (p == name) return true;
    if (p.rfind("re:", 0) == 0) {  // compressed-tensors: a regex matched at the start (re.match)
      if (std::regex_search(name, std::regex(p.substr(3)), std::regex_constants::match_continuous))
        return true;
      continue;
    }
    // Python's fnmatch: '*' also matches '.', no escapes.
    if (::fnmatch(p.c_str(), name.c_str(), FNM_NOESCAPE) == 0) return true;
  }
  return false;
}

QuantConfig read_quant_config(const std::filesystem::path& model_dir, const ModelConfig& config) {
  const std::filesystem::path hf_quant = model_dir / "hf_quant_config.json";
  if (std::filesystem::exists(hf_quant)) {
    json j;
    try {
      j = json::parse(read_text_file(hf_quant));
    } catch (const json::exception& e) {
      fail("{}: invalid JSON: {}", hf_quant.string(), e.what());
    }
    return from_hf_quant_config(j, hf_quant.string());
  }
  if (config.quantization_config.is_null()) return {};
  return from_quantization_config(config.quantization_config,
                                  (model_dir / "config.json").string() + " quantization_config");
}

LinearTensors find_linear_tensors(const WeightStore& store, const std::string& prefix) {
  LinearTensors t;
  t.input_scale = store.find(prefix + ".input_scale");
  t.scale = store.find(prefix + ".weight_scale");
  if (const TensorInfo* packed = store.find(prefix + ".weight_packed")) {
    t.layout = LinearTensors::Layout::CompressedTensors;
    t.weight = packed;
    t.global_scale = store.find(prefix + ".weight_global_scale");
    return t;
  }
  t.weight = store.find(prefix + ".weight");
  if (t.weight == nullptr) {
    if (t.scale != nullptr)
      fail("{}.weight is missing but {}.weight_scale exists ({})", prefix, prefix, describe(*t.scale));
    return t;
  }
  if (t.weight->dtype == DType::U8) {
    t.layout = LinearTensors::Layout::ModelOpt;
    t.global_scale = store.find(prefix + ".weight_scale_2");
    return t;
  }
  if (t.scale != nullptr)
    fail(
        "{}.weight is {} with a {}.weight_scale ({}): not an NVFP4 layout (NVFP4 packs the weight as U8); "
        "nibble reads NVFP4 or dense checkpoints",
        prefix, describe(*t.weight), prefix, describe(*t.scale));
  t.layout = LinearTensors::Layout::Dense;
  return t;
}

Weight load_linear_weight(const WeightStore& store, const std::string& prefix, int64_t out, int64_t in,
                          const QuantConfig& q) {
  (void)q;  // the layout is told by the tensors present; the config's exclude list is advisory
  const LinearTensors t = find_linear_tensors(store, prefix);
  Weight w;
  w.out = out;
  w.in = in;
  switch (t.layout) {
    case LinearTensors::Layout::Missing:
      fail("{}.weight: missing (expected a [{}, {}] linear weight, dense or NVFP4) in {}", prefix, out, in,
           store.dir().string());
    case LinearTensors::Layout::Dense: {
      const TensorInfo& d = *t.weight;
      if (d.dtype != DType::F32 && d.dtype != DType::BF16 && d.dtype != DType::F16)
        fail("{}: expected F32, BF16 or F16 [{}, {}] (dense linear weight), found {}", d.name, out, in,
             describe(d));
      if (d.shape != std::vector<int64_t>{out, in})
        fail("{}: expected shape [{}, {}] (dense linear weight), found {}", d.name, out, in, describe(d));
      w.format = WeightFormat::Dense;
      w.dtype = d.dtype;
      w.data = d.data;
      return w;
    }
    case LinearTensors::Layout::ModelOpt:
    case LinearTensors::Layout::CompressedTensors:
      break;
  }
  const bool ct = t.layout == LinearTensors::Layout::CompressedTensors;
  const std::string global_name = prefix + (ct ? ".weight_global_scale" : ".weight_scale_2");
  if (in % kNvfp4Block != 0)
    fail("{}: NVFP4 needs the input dimension K to be a multiple of {}, but this layer has K = {}",
         t.weight->name, kNvfp4Block, in);
  expect_tensor(*t.weight, DType::U8, {out, in / 2}, "NVFP4 codes, two per byte along K");
  if (t.scale == nullptr)
    fail("{}.weight_scale: missing (expected F8_E4M3 [{}, {}], the block scales of NVFP4 weight {})", prefix,
         out, in / kNvfp4Block, t.weight->name);
  expect_tensor(*t.scale, DType::F8_E4M3, {out, in / kNvfp4Block}, "NVFP4 block scales, one per 16 inputs");
  if (t.global_scale == nullptr)
    fail("{}: missing (expected an F32 scalar, the global scale of NVFP4 weight {})", global_name,
         t.weight->name);
  float g = read_scalar_f32(*t.global_scale, ct ? "NVFP4 global scale, reciprocal" : "NVFP4 global scale");
  if (!std::isfinite(g) || !(g > 0.0f))
    fail("{}: the NVFP4 global scale must be finite and positive, found {}", global_name, g);
  if (ct) g = 1.0f / g;  // compressed-tensors stores 1 / weight_scale_2
  // A NaN block scale (0x7f / 0xff) would turn every output it touches into NaN.
  for (size_t i = 0; i < t.scale->nbytes; ++i) {
    if ((t.scale->data[i] & 0x7f) == 0x7f)
      fail("{}: block scale [{}, {}] is NaN (byte 0x{:02x})", t.scale->name, i / (in / kNvfp4Block),
           i % (in / kNvfp4Block), t.scale->data[i]);
  }
  w.format = WeightFormat::NVFP4;
  w.dtype = DType::U8;
  w.data = t.weight->data;
  w.scales = t.scale->data;
  w.global_scale = g;
  return w;
}

bool is_quantizable_linear(const std::string& weight_name) {
  static constexpr std::array<const char*, 7> kProj = {
      ".q_proj.weight",    ".k_proj.weight",  ".v_proj.weight",   ".o_proj.weight",
      ".gate_proj.weight", ".up_proj.weight", ".down_proj.weight"};
  return std::any_of(kProj.begin(), kProj.end(), [&](const char* suffix) {
    const size_t n = std::strlen(suffix);
    return weight_name.size() > n && weight_name.compare(weight_name.size() - n, n, suffix) == 0;
  });
}

// hf_quant_config.json as ModelOpt's export writes it (export/quant_utils.py get_quant_config);
// vLLM requires group_size, kv_cache_quant_algo and exclude_modules to be present, and recognises
// the file by producer.name == "modelopt".
json modelopt_hf_quant_config(const std::vector<std::string>& exclude) {
  return {{"producer", {{"name", "modelopt"}, {"version", "nibble"}}},
          {"quantization",
           {{"quant_algo", "NVFP4"},
            {"kv_cache_quant_algo", nullptr},
            {"group_size", kNvfp4Block},
            {"exclude_modules", exclude}}}};
}

// config.json quantization_config in the flat form vLLM's ModelOpt loader reads (quant_method
// "modelopt", quant_algo, group_size, ignore).
json modelopt_quantization_config(const std::vector<std::string>& exclude) {
  return {{"quant_method", "modelopt"}, {"quant_algo", "NVFP4"},
          {"group_size", kNvfp4Block},  {"kv_cache_scheme", nullptr},
          {"ignore", exclude},          {"producer", {{"name", "modelopt"}, {"version", "nibble"}}}};
}

}  // namespace nibble
