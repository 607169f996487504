#include "format/hf_config.h"

#include <fmt/format.h>

#include <cmath>

#include "core/error.h"
#include "core/file.h"
#include "format/safetensors.h"

namespace nibble {
namespace {

using json = nlohmann::json;

constexpr const char* kSupportedArchs = "Qwen3ForCausalLM, Qwen2ForCausalLM, LlamaForCausalLM";

// Typed access to one JSON object; every failure names the key and the file. A key whose value is
// null counts as absent, as transformers treats it.
class Reader {
 public:
  Reader(const json& j, std::string label, std::string prefix = "")
      : j_(j), label_(std::move(label)), prefix_(std::move(prefix)) {}

  const json* find(const char* key) const {
    const auto it = j_.find(key);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }
  bool has(const char* key) const { return find(key) != nullptr; }

  int64_t integer(const char* key) const {
    const json* v = find(key);
    if (!v) fail("{}: missing required key \"{}{}\"", label_, prefix_, key);
    return as_integer(key, *v);
  }
  std::optional<int64_t> opt_integer(const char* key) const {
    const json* v = find(key);
    return v ? std::optional<int64_t>(as_integer(key, *v)) : std::nullopt;
  }
  double number(const char* key) const {
    const json* v = find(key);
    if (!v) fail("{}: missing required key \"{}{}\"", label_, prefix_, key);
    return as_number(key, *v);
  }
  std::optional<double> opt_number(const char* key) const {
    const json* v = find(key);
    return v ? std::optional<double>(as_number(key, *v)) : std::nullopt;
  }
  std::optional<bool> opt_bool(const char* key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_boolean())
      fail("{}: \"{}{}\" must be true or false, found {}", label_, prefix_, key, v->dump());
    return v->get<bool>();
  }
  std::optional<std::string> opt_string(const char* key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_string()) fail("{}: \"{}{}\" must be a string, found {}", label_, prefix_, key, v->dump());
    return v->get<std::string>();
  }
  // An int, a list of ints, or absent (eos_token_id).
  std::vector<int64_t> integer_list(const char* key) const {
    const json* v = find(key);
    if (!v) return {};
    if (!v->is_array()) return {as_integer(key, *v)};
    std::vector<int64_t> out;
    for (const auto& x : *v) out.push_back(as_integer(key, x));
    return out;
  }

  const std::string& label() const { return label_; }

 private:
  int64_t as_integer(const char* key, const json& v) const {
    if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > INT64_MAX)) {
      fail("{}: \"{}{}\" must be an integer, found {}", label_, prefix_, key, v.dump());
    }
    return v.get<int64_t>();
  }
  double as_number(const char* key, const json& v) const {
    if (!v.is_number()) fail("{}: \"{}{}\" must be a number, found {}", label_, prefix_, key, v.dump());
    return v.get<double>();
  }

  const json& j_;
  std::string label_;
  std::string prefix_;
};

Arch parse_arch(const Reader& r, std::string* name) {
  const std::pair<const char*, Arch> known[] = {{"Qwen3ForCausalLM", Arch::Qwen3},
                                                {"Qwen2ForCausalLM", Arch::Qwen2},
                                                {"LlamaForCausalLM", Arch::Llama}};
  if (const json* archs = r.find("architectures")) {
    if (!archs->is_array() || archs->empty() || !(*archs)[0].is_string()) {
      fail("{}: \"architectures\" must be a list of names, found {}", r.label(), archs->dump());
    }
    *name = (*archs)[0].get<std::string>();  // transformers uses the first entry
    for (const auto& [n, a] : known) {
      if (*name == n) return a;
    }
    fail("{}: unsupported architecture \"{}\" (supported: {})", r.label(), *name, kSupportedArchs);
  }
  // Some configs name only the model type.
  const auto type = r.opt_string("model_type");
  if (!type) fail("{}: missing \"architectures\" (supported: {})", r.label(), kSupportedArchs);
  const std::pair<const char*, Arch> types[] = {
      {"qwen3", Arch::Qwen3}, {"qwen2", Arch::Qwen2}, {"llama", Arch::Llama}};
  for (const auto& [t, a] : types) {
    if (*type == t) {
      *name = arch_name(a);
      return a;
    }
  }
  fail("{}: unsupported model_type \"{}\" and no \"architectures\" (supported: {})", r.label(), *type,
       kSupportedArchs);
}

// rope_scaling (transformers 4) or rope_parameters (transformers 5) of any supported type.
RopeScaling parse_rope_scaling(const json& obj, const std::string& label, const std::string& key,
                               int64_t max_position_embeddings) {
  if (!obj.is_object()) fail("{}: \"{}\" must be an object or null, found {}", label, key, obj.dump());
  const Reader r(obj, label, key + ".");
  auto type = r.opt_string("rope_type");
  if (!type) type = r.opt_string("type");  // the older spelling
  if (!type) fail("{}: \"{}\" needs \"rope_type\" (default, linear, yarn or llama3)", label, key);
  RopeScaling s;
  if (*type == "default") return s;
  if (*type == "linear") {
    s.type = RopeScaling::Type::Linear;
    s.factor = r.number("factor");
  } else if (*type == "yarn") {
    s.type = RopeScaling::Type::Yarn;
    s.factor = r.number("factor");
    s.original_max_position_embeddings = r.opt_number("original_max_position_embeddings")
                                             .value_or(static_cast<double>(max_position_embeddings));
    s.beta_fast = r.opt_number("beta_fast").value_or(s.beta_fast);
    s.beta_slow = r.opt_number("beta_slow").value_or(s.beta_slow);
    s.attention_factor = r.opt_number("attention_factor").value_or(0.0);
    // DeepSeek's mscale variants change the attention factor in ways this engine does not model.
    for (const char* k : {"mscale", "mscale_all_dim"}) {
      if (r.has(k)) fail("{}: \"{}.{}\" is not supported", label, key, k);
    }
  } else if (*type == "llama3") {
    s.type = RopeScaling::Type::Llama3;
    s.factor = r.number("factor");
    s.low_freq_factor = r.number("low_freq_factor");
    s.high_freq_factor = r.number("high_freq_factor");
    s.original_max_position_embeddings = r.number("original_max_position_embeddings");
    if (s.low_freq_factor >= s.high_freq_factor) {
      fail("{}: \"{}\": low_freq_factor {} must be below high_freq_factor {}", label, key, s.low_freq_factor,
           s.high_freq_factor);
    }
  } else {
    fail("{}: \"{}\" has rope_type \"{}\" (supported: default, linear, yarn, llama3)", label, key, *type);
  }
  if (!(s.factor > 0) || !std::isfinite(s.factor))
    fail("{}: \"{}.factor\" must be positive, found {}", label, key, s.factor);
  if (s.type != RopeScaling::Type::Linear && !(s.original_max_position_embeddings > 0)) {
    fail("{}: \"{}.original_max_position_embeddings\" must be positive", label, key);
  }
  return s;
}

void parse_rope(const Reader& r, ModelConfig& c) {
  c.rope_theta = r.opt_number("rope_theta").value_or(10000.0);
  if (const json* rp = r.find("rope_parameters")) {
    // transformers 5: {"rope_theta": .., "rope_type": .., params}. Models with several attention
    // kinds nest one such object per kind; the dense models here have one.
    if (!rp->is_object() ||
        !(rp->contains("rope_type") || rp->contains("type") || rp->contains("rope_theta"))) {
      fail("{}: \"rope_parameters\" must be an object with \"rope_type\" and \"rope_theta\", found {}",
           r.label(), rp->dump());
    }
    const Reader p(*rp, r.label(), "rope_parameters.");
    c.rope_theta = p.opt_number("rope_theta").value_or(c.rope_theta);
    if (p.has("rope_type") || p.has("type")) {
      c.rope_scaling = parse_rope_scaling(*rp, r.label(), "rope_parameters", c.max_position_embeddings);
    }
  } else if (const json* rs = r.find("rope_scaling")) {
    c.rope_scaling = parse_rope_scaling(*rs, r.label(), "rope_scaling", c.max_position_embeddings);
  }
  if (!(c.rope_theta > 0) || !std::isfinite(c.rope_theta)) {
    fail("{}: rope_theta must be positive, found {}", r.label(), c.rope_theta);
  }
}

void require_positive(const std::string& label, const char* key, int64_t v) {
  if (v <= 0) fail("{}: \"{}\" must be positive, found {}", label, key, v);
}

json parse_json_file(const std::filesystem::path& path) {
  try {
    return json::parse(read_text_file(path));
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", path.string(), e.what());
  }
}

}  // namespace

std::string_view arch_name(Arch arch) {
  switch (arch) {
    case Arch::Qwen3:
      return "Qwen3ForCausalLM";
    case Arch::Qwen2:
      return "Qwen2ForCausalLM";
    case Arch::Llama:
      return "LlamaForCausalLM";
  }
  NIBBLE_ASSERT(false);
  return {};
}

ModelConfig ModelConfig::from_json(const json& j, const std::string& label) {
  if (!j.is_object()) fail("{}: expected a JSON object, found {}", label, j.type_name());
  const Reader r(j, label);
  ModelConfig c;
  c.arch = parse_arch(r, &c.architecture);
  c.vocab_size = r.integer("vocab_size");
  c.hidden_size = r.integer("hidden_size");
  c.intermediate_size = r.integer("intermediate_size");
  c.num_layers = r.integer("num_hidden_layers");
  c.num_heads = r.integer("num_attention_heads");
  for (auto [key, v] : {std::pair{"vocab_size", c.vocab_size},
                        {"hidden_size", c.hidden_size},
                        {"intermediate_size", c.intermediate_size},
                        {"num_hidden_layers", c.num_layers},
                        {"num_attention_heads", c.num_heads}}) {
    require_positive(label, key, v);
  }
  c.num_kv_heads = r.opt_integer("num_key_value_heads").value_or(c.num_heads);
  require_positive(label, "num_key_value_heads", c.num_kv_heads);
  if (c.num_heads % c.num_kv_heads != 0) {
    fail("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", label, c.num_heads,
         c.num_kv_heads);
  }
  if (const auto hd = r.opt_integer("head_dim")) {
    c.head_dim = *hd;
    require_positive(label, "head_dim", c.head_dim);
  } else {
    if (c.hidden_size % c.num_heads != 0) {
      fail("{}: no \"head_dim\" and hidden_size {} is not a multiple of num_attention_heads {}", label,
           c.hidden_size, c.num_heads);
    }
    c.head_dim = c.hidden_size / c.num_heads;
  }
  // transformers' defaults per architecture when the key is absent.
  c.max_position_embeddings =
      r.opt_integer("max_position_embeddings").value_or(c.arch == Arch::Llama ? 2048 : 32768);
  c.rms_norm_eps = r.opt_number("rms_norm_eps").value_or(1e-6);
  if (!(c.rms_norm_eps >= 0)) fail("{}: rms_norm_eps must not be negative, found {}", label, c.rms_norm_eps);
  parse_rope(r, c);
  c.tie_word_embeddings = r.opt_bool("tie_word_embeddings").value_or(false);

  // What distinguishes the three: Qwen3 norms q and k per head, Qwen2 biases q, k and v, and
  // attention_bias (Llama, Qwen3) biases q, k, v and o.
  const bool attention_bias = r.opt_bool("attention_bias").value_or(false);
  c.qk_norm = c.arch == Arch::Qwen3;
  c.qkv_bias = c.arch == Arch::Qwen2 || attention_bias;
  c.o_bias = c.arch != Arch::Qwen2 && attention_bias;

  if (const auto act = r.opt_string("hidden_act"); act && *act != "silu") {
    fail("{}: hidden_act \"{}\" is not supported (expected \"silu\")", label, *act);
  }
  if (r.opt_bool("mlp_bias").value_or(false)) fail("{}: \"mlp_bias\": true is not supported", label);
  if (r.opt_bool("use_sliding_window").value_or(false)) {
    fail("{}: \"use_sliding_window\": true is not supported", label);
  }

  c.torch_dtype = r.opt_string("torch_dtype").value_or(r.opt_string("dtype").value_or(""));  // v5: "dtype"
  c.eos_token_ids = r.integer_list("eos_token_id");
  c.bos_token_id = r.opt_integer("bos_token_id");
  if (const json* q = r.find("quantization_config")) c.quantization_config = *q;
  return c;
}

ModelConfig ModelConfig::load(const std::filesystem::path& model_dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(model_dir, ec))
    fail("model directory {} does not exist", model_dir.string());
  const auto path = model_dir / "config.json";
  if (!std::filesystem::exists(path, ec))
    fail("{} has no config.json (a model directory needs one)", model_dir.string());
  return from_json(parse_json_file(path), path.string());
}

std::string ModelConfig::summary() const {
  std::string s = fmt::format(
      "{}: {} layers, hidden {}, intermediate {}, {} heads ({} kv) of {}, vocab {}, rope_theta {}{}{}{}",
      architecture, num_layers, hidden_size, intermediate_size, num_heads, num_kv_heads, head_dim, vocab_size,
      rope_theta, tie_word_embeddings ? ", tied embeddings" : "", qk_norm ? ", q/k norm" : "",
      qkv_bias ? ", q/k/v bias" : "");
  if (!torch_dtype.empty()) s += ", " + torch_dtype;
  return s;
}

GenerationConfig GenerationConfig::load(const std::filesystem::path& model_dir, const ModelConfig& config) {
  GenerationConfig g;
  g.eos_token_ids = config.eos_token_ids;
  g.bos_token_id = config.bos_token_id;
  const auto path = model_dir / "generation_config.json";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return g;  // optional
  const json j = parse_json_file(path);
  if (!j.is_object()) fail("{}: expected a JSON object, found {}", path.string(), j.type_name());
  const Reader r(j, path.string());
  if (r.has("eos_token_id")) g.eos_token_ids = r.integer_list("eos_token_id");
  if (const auto bos = r.opt_integer("bos_token_id")) g.bos_token_id = bos;
  g.temperature = r.opt_number("temperature");
  g.top_p = r.opt_number("top_p");
  g.min_p = r.opt_number("min_p");
  g.repetition_penalty = r.opt_number("repetition_penalty");
  g.top_k = r.opt_integer("top_k");
  g.do_sample = r.opt_bool("do_sample").value_or(false);
  return g;
}

// ---- the weights a config needs ----

std::vector<ExpectedTensor> expected_tensors(const ModelConfig& c) {
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  const int64_t q_dim = c.num_heads * c.head_dim, kv_dim = c.num_kv_heads * c.head_dim;
  std::vector<ExpectedTensor> out;
  auto add = [&](std::string name, std::vector<int64_t> shape, bool linear = false) {
    out.push_back({std::move(name), std::move(shape), linear});
  };
  add("model.embed_tokens.weight", {c.vocab_size, H});
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    add(p + "input_layernorm.weight", {H});
    add(p + "self_attn.q_proj.weight", {q_dim, H}, true);
    add(p + "self_attn.k_proj.weight", {kv_dim, H}, true);
    add(p + "self_attn.v_proj.weight", {kv_dim, H}, true);
    if (c.qkv_bias) {
      add(p + "self_attn.q_proj.bias", {q_dim});
      add(p + "self_attn.k_proj.bias", {kv_dim});
      add(p + "self_attn.v_proj.bias", {kv_dim});
    }
    add(p + "self_attn.o_proj.weight", {H, q_dim}, true);
    if (c.o_bias) add(p + "self_attn.o_proj.bias", {H});
    if (c.qk_norm) {
      add(p + "self_attn.q_norm.weight", {c.head_dim});
      add(p + "self_attn.k_norm.weight", {c.head_dim});
    }
    add(p + "post_attention_layernorm.weight", {H});
    add(p + "mlp.gate_proj.weight", {I, H}, true);
    add(p + "mlp.up_proj.weight", {I, H}, true);
    add(p + "mlp.down_proj.weight", {H, I}, true);
  }
  add("model.norm.weight", {H});
  if (!c.tie_word_embeddings) add("lm_head.weight", {c.vocab_size, H}, true);
  return out;
}

std::vector<std::string> weight_problems(const ModelConfig& config, const WeightStore& store,
                                         const QuantizedLinearCheck& quantized_linear) {
  std::vector<std::string> problems;
  for (const auto& e : expected_tensors(config)) {
    if (e.linear && quantized_linear) {
      if (auto verdict = quantized_linear(e, store)) {
        if (!verdict->empty()) problems.push_back(std::move(*verdict));
        continue;
      }
    }
    const TensorInfo* t = store.find(e.name);
    if (!t) {
      problems.push_back(fmt::format("missing {} (expected shape [{}])", e.name, fmt::join(e.shape, ", ")));
    } else if (t->shape != e.shape) {
      problems.push_back(fmt::format("{}: expected shape [{}], found [{}] (in {})", e.name,
                                     fmt::join(e.shape, ", "), fmt::join(t->shape, ", "), t->file));
    } else if (t->dtype != DType::F32 && t->dtype != DType::BF16 && t->dtype != DType::F16) {
      problems.push_back(fmt::format("{}: expected dtype F32, BF16 or F16, found {} (in {})", e.name,
                                     dtype_name(t->dtype), t->file));
    }
  }
  return problems;
}

void check_weights(const ModelConfig& config, const WeightStore& store,
                   const QuantizedLinearCheck& quantized_linear) {
  const auto problems = weight_problems(config, store, quantized_linear);
  if (problems.empty()) return;
  // A wholly wrong checkpoint would list hundreds of tensors; the first few say enough.
  constexpr size_t kShown = 20;
  std::string list;
  for (size_t i = 0; i < problems.size() && i < kShown; ++i) list += "\n  " + problems[i];
  if (problems.size() > kShown) list += fmt::format("\n  ... and {} more", problems.size() - kShown);
  fail("weights in {} do not match the {} config ({} problem{}):{}", store.dir().string(),
       config.architecture, problems.size(), problems.size() == 1 ? "" : "s", list);
}

std::filesystem::path require_model_file(const std::filesystem::path& model_dir, const std::string& name,
                                         const std::string& what_for) {
  const auto path = model_dir / name;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    fail("{} has no {}, which {} needs", model_dir.string(), name, what_for);
  }
  return path;
}

}  // namespace nibble
