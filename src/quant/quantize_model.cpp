#include "quant/quantize_model.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <thread>

#include "core/error.h"
#include "core/file.h"
#include "core/half.h"
#include "format/safetensors.h"
#include "quant/nvfp4.h"
#include "quant/nvfp4_checkpoint.h"

namespace nibble {
namespace {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

std::string module_of(const std::string& weight_name) {  // "a.b.q_proj.weight" -> "a.b.q_proj"
  return weight_name.substr(0, weight_name.rfind('.'));
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Modules that vLLM fuses into one linear share one global scale (and one quantisation decision):
// q/k/v -> "<parent>/qkv", gate/up -> "<parent>/gate_up"; others are their own group.
std::string fusion_group(const std::string& module) {
  const size_t dot = module.rfind('.');
  const std::string parent = module.substr(0, dot), leaf = module.substr(dot + 1);
  if (leaf == "q_proj" || leaf == "k_proj" || leaf == "v_proj") return parent + "/qkv";
  if (leaf == "gate_proj" || leaf == "up_proj") return parent + "/gate_up";
  return module;
}

// "model.layers.12.mlp.up_proj" -> "model.layers.12"; other modules are their own progress group.
std::string progress_group(const std::string& module) {
  const std::string key = "layers.";
  const size_t p = module.find(key);
  if (p == std::string::npos) return module;
  const size_t end = module.find('.', p + key.size());
  return end == std::string::npos ? module : module.substr(0, end);
}

std::vector<float> to_f32(const TensorInfo& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  switch (t.dtype) {
    case DType::F32:
      std::memcpy(v.data(), t.data, t.nbytes);
      break;
    case DType::BF16:
    case DType::F16:
      for (size_t i = 0; i < v.size(); ++i) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        v[i] = t.dtype == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
      }
      break;
    default:
      fail("{}: a linear weight to quantise must be F32, BF16 or F16, found {} in {}", t.name,
           dtype_name(t.dtype), t.file);
  }
  return v;
}

float tensor_amax(const TensorInfo& t) {
  const std::vector<float> v = to_f32(t);
  try {
    return abs_max(v.data(), static_cast<int64_t>(v.size()));
  } catch (const Error& e) {
    fail("{} ({}): {}", t.name, t.file, e.what());
  }
}

// Rows split across threads; RTN is row-local, so the bytes do not depend on the thread count.
Nvfp4Tensor quantize_rows_parallel(const TensorInfo& t, float global, int threads) {
  const int64_t out = t.shape[0], in = t.shape[1];
  const std::vector<float> w = to_f32(t);
  Nvfp4Tensor q;
  q.out = out;
  q.in = in;
  q.global_scale = global;
  q.packed.resize(static_cast<size_t>(out * in / 2));
  q.scales.resize(static_cast<size_t>(out * in / kNvfp4Block));
  const int64_t n = std::max<int64_t>(1, std::min<int64_t>(threads, out));
  std::vector<std::thread> pool;
  std::vector<std::string> errors(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    pool.emplace_back([&, i] {
      const int64_t r0 = out * i / n, r1 = out * (i + 1) / n;
      try {
        const Nvfp4Tensor part = quantize_nvfp4(w.data() + r0 * in, r1 - r0, in, global);
        std::copy(part.packed.begin(), part.packed.end(), q.packed.begin() + r0 * in / 2);
        std::copy(part.scales.begin(), part.scales.end(), q.scales.begin() + r0 * in / kNvfp4Block);
      } catch (const Error& e) {
        errors[static_cast<size_t>(i)] = e.what();
      }
    });
  }
  for (auto& th : pool) th.join();
  for (const auto& e : errors) {
    if (!e.empty()) fail("{} ({}): {}", t.name, t.file, e);
  }
  return q;
}

// One tensor of the output, in name order.
struct OutTensor {
  enum class Kind { Copy, Packed, Scales, Global, ReciprocalGlobal } kind = Kind::Copy;
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t nbytes = 0;
  const TensorInfo* src = nullptr;  // Copy / ReciprocalGlobal: the tensor; Packed...: the dense weight
  std::string module;               // Packed / Scales / Global: the module being quantised
};

struct Plan {
  std::map<std::string, OutTensor> tensors;                // by output name
  std::map<std::string, std::vector<std::string>> groups;  // fusion group -> quantised modules
  std::vector<std::string> exclude;
  int64_t quantized = 0;
};

void add_out(Plan& plan, OutTensor t) {
  const std::string name = t.name;
  if (!plan.tensors.emplace(name, std::move(t)).second)
    fail("two source tensors would both be written as {}", name);
}

void add_unique(std::vector<std::string>& list, const std::string& s) {
  if (std::find(list.begin(), list.end(), s) == list.end()) list.push_back(s);
}

Plan plan_dense(const WeightStore& store, const QuantizeOptions& opt,
                const std::function<void(std::string)>& say) {
  Plan plan;
  QuantConfig q;
  q.exclude = {"lm_head"};  // ModelOpt's default: lm_head stays in the source precision
  for (const auto& p : opt.exclude) add_unique(q.exclude, p);
  plan.exclude = q.exclude;

  // Decide per module, then widen exclusions to whole fusion groups.
  std::map<std::string, std::vector<std::string>> members;  // group -> quantisable modules
  std::set<std::string> excluded;
  for (const std::string& name : store.names()) {
    if (!is_quantizable_linear(name)) continue;
    const TensorInfo& t = store.get(name);
    const std::string module = module_of(name);
    members[fusion_group(module)].push_back(module);
    if (t.shape.size() != 2)
      fail("{}: a linear weight must be 2-D, found {} dims in {}", name, t.shape.size(), t.file);
    if (q.is_excluded(module)) {
      excluded.insert(module);
    } else if (t.shape[1] % kNvfp4Block != 0) {
      say(fmt::format("warning: {} has K = {}, not a multiple of {}: kept in {} and excluded", module,
                      t.shape[1], kNvfp4Block, dtype_name(t.dtype)));
      excluded.insert(module);
      add_unique(plan.exclude, module);
    }
  }
  for (const auto& [group, mods] : members) {
    const bool any =
        std::any_of(mods.begin(), mods.end(), [&](const auto& m) { return excluded.count(m) > 0; });
    if (!any) continue;
    for (const auto& m : mods) {
      if (excluded.insert(m).second) {
        say(
            fmt::format("warning: {} excluded too: it is fused with an excluded module (vLLM needs q/k/v and "
                        "gate/up quantised alike)",
                        m));
        add_unique(plan.exclude, m);
      }
    }
  }

  for (const std::string& name : store.names()) {
    const TensorInfo& t = store.get(name);
    const std::string module = module_of(name);
    if (!is_quantizable_linear(name) || excluded.count(module)) {
      add_out(plan, {OutTensor::Kind::Copy, name, t.dtype, t.shape, t.nbytes, &t, ""});
      continue;
    }
    const int64_t out = t.shape[0], in = t.shape[1];
    add_out(plan, {OutTensor::Kind::Packed,
                   name,
                   DType::U8,
                   {out, in / 2},
                   static_cast<uint64_t>(out * in / 2),
                   &t,
                   module});
    add_out(plan, {OutTensor::Kind::Scales,
                   module + ".weight_scale",
                   DType::F8_E4M3,
                   {out, in / kNvfp4Block},
                   static_cast<uint64_t>(out * in / kNvfp4Block),
                   &t,
                   module});
    add_out(plan, {OutTensor::Kind::Global, module + ".weight_scale_2", DType::F32, {}, 4, &t, module});
    plan.groups[fusion_group(module)].push_back(module);
    ++plan.quantized;
  }
  return plan;
}

Plan plan_resave(const WeightStore& store, const QuantConfig& q) {
  Plan plan;
  plan.exclude = q.exclude;
  std::set<std::string> done;
  for (const std::string& name : store.names()) {
    std::string module;
    if (ends_with(name, ".weight_packed") || ends_with(name, ".weight")) module = module_of(name);
    if (!module.empty() && !done.count(module)) {
      const LinearTensors lt = find_linear_tensors(store, module);
      if (lt.layout == LinearTensors::Layout::ModelOpt ||
          lt.layout == LinearTensors::Layout::CompressedTensors) {
        done.insert(module);
        if (lt.weight->shape.size() != 2)
          fail("{}: NVFP4 codes must be 2-D, found {}", lt.weight->name, lt.weight->shape.size());
        const int64_t out = lt.weight->shape[0], in = lt.weight->shape[1] * 2;
        (void)load_linear_weight(store, module, out, in, q);  // validates every layout rule
        const TensorInfo& w = *lt.weight;
        add_out(plan, {OutTensor::Kind::Copy, module + ".weight", w.dtype, w.shape, w.nbytes, &w, ""});
        add_out(plan, {OutTensor::Kind::Copy, module + ".weight_scale", lt.scale->dtype, lt.scale->shape,
                       lt.scale->nbytes, lt.scale, ""});
        const TensorInfo& g = *lt.global_scale;
        if (lt.layout == LinearTensors::Layout::ModelOpt) {
          add_out(plan,
                  {OutTensor::Kind::Copy, module + ".weight_scale_2", g.dtype, g.shape, g.nbytes, &g, ""});
        } else {
          add_out(plan,
                  {OutTensor::Kind::ReciprocalGlobal, module + ".weight_scale_2", DType::F32, {}, 4, &g, ""});
        }
        if (lt.input_scale) {
          const TensorInfo& s = *lt.input_scale;
          add_out(plan, {OutTensor::Kind::Copy, s.name, s.dtype, s.shape, s.nbytes, &s, ""});
        }
        ++plan.quantized;
        continue;
      }
    }
  }
  for (const std::string& name : store.names()) {
    if (done.count(module_of(name))) continue;  // written above (possibly renamed)
    const TensorInfo& t = store.get(name);
    add_out(plan, {OutTensor::Kind::Copy, name, t.dtype, t.shape, t.nbytes, &t, ""});
  }
  return plan;
}

bool is_side_file(const std::string& f) {
  static const std::vector<std::string> kExact = {"merges.txt", "special_tokens_map.json",
                                                  "added_tokens.json", "generation_config.json",
                                                  "preprocessor_config.json"};
  if (std::find(kExact.begin(), kExact.end(), f) != kExact.end()) return true;
  for (const char* prefix : {"tokenizer", "vocab.", "chat_template", "LICENSE", "NOTICE"}) {
    if (f.rfind(prefix, 0) == 0) return true;
  }
  return false;
}

void copy_file_atomic(const fs::path& from, const fs::path& to) {
  const MappedFile m(from);
  AtomicFileWriter w(to);
  w.write(m.data(), m.size());
  w.commit();
}

// <out>.partial-<pid> beside the output; checks that nothing of the source would be replaced.
fs::path prepare_staging(const fs::path& src, const fs::path& out, bool force) {
  const fs::path s = fs::weakly_canonical(src), o = fs::weakly_canonical(out);
  const auto inside = [](const fs::path& a, const fs::path& b) {  // a is b or below b
    auto [ia, ib] = std::mismatch(a.begin(), a.end(), b.begin(), b.end());
    return ib == b.end();
  };
  if (inside(s, o)) fail("--out {} would replace the source model directory {}", out.string(), src.string());
  if (inside(o, s)) fail("--out {} lies inside the source model directory {}", out.string(), src.string());
  if (fs::exists(o)) {
    if (!fs::is_directory(o)) fail("--out {} exists and is not a directory", out.string());
    if (!fs::is_empty(o) && !force)
      fail("--out {} exists and is not empty (pass --force to replace it)", out.string());
  }
  if (!o.has_parent_path() || !fs::is_directory(o.parent_path()))
    fail("--out {}: the parent directory {} does not exist", out.string(), o.parent_path().string());
  fs::path staging = o;
  staging += ".partial-" + std::to_string(::getpid());
  fs::remove_all(staging);
  fs::create_directory(staging);
  return staging;
}

std::string human_bytes(uint64_t b) {
  if (b >= 1'000'000'000) return fmt::format("{:.2f} GB", b / 1e9);
  if (b >= 1'000'000) return fmt::format("{:.2f} MB", b / 1e6);
  if (b >= 1'000) return fmt::format("{:.1f} kB", b / 1e3);
  return fmt::format("{} B", b);
}

}  // namespace

uint64_t parse_byte_size(const std::string& text) {
  size_t pos = 0;
  unsigned long long v = 0;
  try {
    v = std::stoull(text, &pos);
  } catch (const std::exception&) {
    fail("invalid size \"{}\": expected a number with an optional unit KB, MB or GB", text);
  }
  std::string unit = text.substr(pos);
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  uint64_t mult = 1;
  if (unit == "KB")
    mult = 1000;
  else if (unit == "MB")
    mult = 1000'000;
  else if (unit == "GB")
    mult = 1000'000'000;
  else if (!unit.empty() && unit != "B")
    fail("invalid size \"{}\": unknown unit \"{}\" (KB, MB or GB)", text, unit);
  if (v == 0) fail("invalid size \"{}\": must be positive", text);
  return v * mult;
}

QuantizeSummary quantize_model(const QuantizeOptions& opt) {
  const auto say = [&](const std::string& s) {
    if (opt.progress) opt.progress(s);
  };
  const auto t0 = std::chrono::steady_clock::now();
  const fs::path config_path = opt.model_dir / "config.json";
  if (!fs::is_directory(opt.model_dir)) fail("--model {}: not a directory", opt.model_dir.string());
  ojson config;
  try {
    config = ojson::parse(read_text_file(config_path));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: invalid JSON: {}", config_path.string(), e.what());
  }
  if (!config.is_object()) fail("{}: expected a JSON object", config_path.string());
  ModelConfig mc;  // only quantization_config is needed to tell the source's quantisation
  if (config.contains("quantization_config"))
    mc.quantization_config = nlohmann::json::parse(config["quantization_config"].dump());
  const QuantConfig src_q = read_quant_config(opt.model_dir, mc);
  if (src_q.nvfp4 && !opt.resave)
    fail("{} is already NVFP4 ({} layout); pass --resave to write it again unchanged in the ModelOpt layout",
         opt.model_dir.string(), src_q.producer);
  if (!src_q.nvfp4 && opt.resave)
    fail("--resave needs an NVFP4 source, but {} is not quantised", opt.model_dir.string());
  if (src_q.nvfp4 && !opt.exclude.empty())
    fail("--exclude cannot change an NVFP4 source ({}): quantise its dense original instead",
         opt.model_dir.string());

  const WeightStore store = WeightStore::open_dir(opt.model_dir);
  const int threads = opt.threads > 0 ? opt.threads : std::max(1u, std::thread::hardware_concurrency());
  Plan plan = src_q.nvfp4 ? plan_resave(store, src_q) : plan_dense(store, opt, say);

  // Shared global scales: amax over each fusion group's quantised members.
  std::map<std::string, float> global_of;  // module -> weight_scale_2
  for (const auto& [group, mods] : plan.groups) {
    float amax = 0.0f;
    for (const auto& m : mods) amax = std::max(amax, tensor_amax(store.get(m + ".weight")));
    for (const auto& m : mods) global_of[m] = nvfp4_global_scale(amax);
  }

  // Shards: tensors in name order, a new file when the next tensor would pass the limit.
  std::vector<std::vector<const OutTensor*>> shards(1);
  uint64_t in_shard = 0, total = 0;
  for (const auto& [name, t] : plan.tensors) {
    if (in_shard > 0 && in_shard + t.nbytes > opt.max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(&t);
    in_shard += t.nbytes;
    total += t.nbytes;
  }

  QuantizeSummary sum;
  sum.exclude = plan.exclude;
  sum.quantized_linears = plan.quantized;
  for (const std::string& n : store.names()) sum.source_bytes += store.get(n).nbytes;
  sum.output_bytes = total;
  say(fmt::format("{}: {} tensors, {}; {} {} linears, exclude [{}]", opt.model_dir.string(),
                  store.names().size(), human_bytes(sum.source_bytes),
                  src_q.nvfp4 ? "re-saving" : "quantising", plan.quantized, fmt::join(plan.exclude, ", ")));

  const fs::path staging = prepare_staging(opt.model_dir, opt.out_dir, opt.force);
  try {
    std::map<std::string, std::shared_ptr<Nvfp4Tensor>>
        cache;                           // module -> result, until its 3 tensors are out
    std::map<std::string, int> uses;     // module -> output tensors not yet written
    std::map<std::string, int> pending;  // progress group -> modules left
    for (const auto& [g, mods] : plan.groups) {
      for (const auto& m : mods) {
        ++pending[progress_group(m)];
        uses[m] = 3;
      }
    }
    const size_t n_progress = pending.size();
    size_t done_progress = 0;
    std::map<std::string, std::string> weight_map;
    for (size_t si = 0; si < shards.size(); ++si) {
      const std::string file = shards.size() == 1
                                   ? "model.safetensors"
                                   : fmt::format("model-{:05d}-of-{:05d}.safetensors", si + 1, shards.size());
      SafetensorsWriter w;
      w.set_metadata("format", "pt");
      for (const OutTensor* t : shards[si]) {
        weight_map[t->name] = file;
        switch (t->kind) {
          case OutTensor::Kind::Copy:
            w.add(t->name, t->dtype, t->shape, {t->src->data, t->src->nbytes});
            ++sum.dense_tensors;
            break;
          case OutTensor::Kind::ReciprocalGlobal: {
            float g;
            std::memcpy(&g, t->src->data, 4);
            const float inv = 1.0f / g;
            std::vector<uint8_t> b(4);
            std::memcpy(b.data(), &inv, 4);
            w.add_owned(t->name, DType::F32, {}, std::move(b));
            break;
          }
          case OutTensor::Kind::Packed:
          case OutTensor::Kind::Scales:
          case OutTensor::Kind::Global: {
            auto& q = cache[t->module];
            if (!q) {
              q = std::make_shared<Nvfp4Tensor>(
                  quantize_rows_parallel(*t->src, global_of.at(t->module), threads));
              sum.quantized_params += static_cast<uint64_t>(q->out * q->in);
              const std::string pg = progress_group(t->module);
              if (--pending[pg] == 0)
                say(fmt::format("[{}/{}] quantised {}", ++done_progress, n_progress, pg));
            }
            if (t->kind == OutTensor::Kind::Packed) {
              w.add_owned(t->name, DType::U8, t->shape, q->packed);
            } else if (t->kind == OutTensor::Kind::Scales) {
              w.add_owned(t->name, DType::F8_E4M3, t->shape, q->scales);
            } else {
              std::vector<uint8_t> b(4);
              std::memcpy(b.data(), &q->global_scale, 4);
              w.add_owned(t->name, DType::F32, {}, std::move(b));
            }
            if (--uses[t->module] == 0) cache.erase(t->module);
            break;
          }
        }
      }
      w.write(staging / file);
      sum.shards.push_back(file);
      say(fmt::format("wrote {} ({} tensors, {})", file, shards[si].size(), human_bytes(w.data_bytes())));
    }
    if (shards.size() > 1)
      write_safetensors_index(staging / "model.safetensors.index.json", weight_map, total);

    config["quantization_config"] = ojson::parse(modelopt_quantization_config(plan.exclude).dump());
    write_file_atomic(staging / "config.json", config.dump(2) + "\n");
    write_file_atomic(staging / "hf_quant_config.json",
                      modelopt_hf_quant_config(plan.exclude).dump(2) + "\n");
    for (const auto& e : fs::directory_iterator(opt.model_dir)) {
      const std::string f = e.path().filename().string();
      if (e.is_regular_file() && is_side_file(f)) copy_file_atomic(e.path(), staging / f);
    }
    const fs::path out = fs::weakly_canonical(opt.out_dir);
    if (fs::exists(out)) fs::remove_all(out);
    fs::rename(staging, out);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(staging, ec);
    throw;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  say(fmt::format("done in {:.1f} s", secs));
  return sum;
}

}  // namespace nibble
