#include "quant/inspect_quant.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include "core/error.h"
#include "core/half.h"
#include "format/inspect.h"
#include "quant/fp8.h"
#include "quant/nvfp4.h"
#include "quant/nvfp4_checkpoint.h"

namespace nibble {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string module_of(const std::string& name) { return name.substr(0, name.rfind('.')); }

// The NVFP4 linears of a store: module -> its tensors.
std::map<std::string, LinearTensors> nvfp4_modules(const WeightStore& store) {
  std::map<std::string, LinearTensors> out;
  for (const std::string& n : store.names()) {
    if (!ends_with(n, ".weight") && !ends_with(n, ".weight_packed")) continue;
    const std::string m = module_of(n);
    if (out.count(m)) continue;
    const LinearTensors t = find_linear_tensors(store, m);
    if (t.layout == LinearTensors::Layout::ModelOpt || t.layout == LinearTensors::Layout::CompressedTensors)
      out.emplace(m, t);
  }
  return out;
}

// The NVFP4 Weight of module m (validated by the loader).
Weight nvfp4_weight(const WeightStore& store, const std::string& m, const LinearTensors& t) {
  if (t.weight->shape.size() != 2)
    fail("{}: NVFP4 codes must be 2-D, found {} dimensions", t.weight->name, t.weight->shape.size());
  return load_linear_weight(store, m, t.weight->shape[0], t.weight->shape[1] * 2, {});
}

std::vector<double> values_f64(const TensorInfo& t) {
  std::vector<double> v(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < v.size(); ++i) {
    switch (t.dtype) {
      case DType::F32: {
        float f;
        std::memcpy(&f, t.data + 4 * i, 4);
        v[i] = f;
        break;
      }
      case DType::F64:
        std::memcpy(&v[i], t.data + 8 * i, 8);
        break;
      case DType::BF16:
      case DType::F16: {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        v[i] = t.dtype == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
        break;
      }
      case DType::F8_E4M3:
        v[i] = fp8_e4m3_to_f32(t.data[i]);
        break;
      default:
        fail("{}: cannot compare values of dtype {}", t.name, dtype_name(t.dtype));
    }
  }
  return v;
}

std::string shape_str(const std::vector<int64_t>& s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

}  // namespace

WeightBitsReport inspect_weight_bits(const WeightStore& store) {
  WeightBitsReport r;
  const auto modules = nvfp4_modules(store);
  std::set<std::string> used;
  for (const auto& [m, t] : modules) {
    const Weight w = nvfp4_weight(store, m, t);
    WeightBitsRow row{m + ".weight", "NVFP4", {w.out, w.in}, w.out * w.in, 0};
    for (const TensorInfo* p : {t.weight, t.scale, t.global_scale, t.input_scale}) {
      if (p == nullptr) continue;
      row.bytes += p->nbytes;
      used.insert(p->name);
    }
    r.rows.push_back(std::move(row));
  }
  for (const std::string& n : store.names()) {
    if (used.count(n)) continue;
    const TensorInfo& t = store.get(n);
    r.rows.push_back({n, std::string(dtype_name(t.dtype)), t.shape, t.numel(), t.nbytes});
  }
  std::sort(r.rows.begin(), r.rows.end(),
            [](const WeightBitsRow& a, const WeightBitsRow& b) { return natural_less(a.name, b.name); });
  std::map<std::string, WeightBitsReport::Total> by;
  r.total.format = "total";
  for (const auto& row : r.rows) {
    for (auto* t : {&by[row.format], &r.total}) {
      t->weights += 1;
      t->params += row.params;
      t->bytes += row.bytes;
    }
  }
  if (by.count("NVFP4")) r.by_format.push_back(by["NVFP4"]), r.by_format.back().format = "NVFP4";
  for (auto& [f, t] : by) {
    if (f == "NVFP4") continue;
    t.format = f;
    r.by_format.push_back(t);
  }
  return r;
}

std::string format_weight_bits(const WeightBitsReport& report) {
  size_t wn = 6, ws = 5;
  for (const auto& row : report.rows) {
    wn = std::max(wn, row.name.size());
    ws = std::max(ws, shape_str(row.shape).size());
  }
  std::string out = fmt::format("{:<{}}  {:<7}  {:<{}}  {:>12}  {:>12}  {:>9}\n", "weight", wn, "format",
                                "shape", ws, "params", "bytes", "bits/w");
  for (const auto& row : report.rows) {
    out += fmt::format("{:<{}}  {:<7}  {:<{}}  {:>12}  {:>12}  {:>9.3f}\n", row.name, wn, row.format,
                       shape_str(row.shape), ws, row.params, row.bytes, row.bits_per_weight());
  }
  const auto line = [](const WeightBitsReport::Total& t) {
    const double bits = t.params ? 8.0 * static_cast<double>(t.bytes) / static_cast<double>(t.params) : 0.0;
    return fmt::format("  {:<7}  {:>5} weights  {:>14} params  {:>14} bytes ({:>10})  {:>7.3f} bits/weight\n",
                       t.format, t.weights, t.params, t.bytes, format_bytes(t.bytes), bits);
  };
  out += "\nby format:\n";
  for (const auto& t : report.by_format) out += line(t);
  out += line(report.total);
  return out;
}

std::vector<WeightErrorRow> quantization_error(const WeightStore& quant, const WeightStore& ref) {
  const auto modules = nvfp4_modules(quant);
  std::vector<WeightErrorRow> rows;
  for (const std::string& n : ref.names()) {
    const TensorInfo& r = ref.get(n);
    if (!dtype_is_float(r.dtype)) continue;
    const std::vector<double> want = values_f64(r);
    std::vector<double> got;
    WeightErrorRow row;
    row.name = n;
    row.params = r.numel();
    const std::string m = module_of(n);
    if (ends_with(n, ".weight") && modules.count(m)) {
      const Weight w = nvfp4_weight(quant, m, modules.at(m));
      if (r.shape != std::vector<int64_t>{w.out, w.in})
        fail("{}: the reference has shape {}, the NVFP4 weight [{}, {}]", n, shape_str(r.shape), w.out, w.in);
      const std::vector<float> d = dequantize_nvfp4(w);
      got.assign(d.begin(), d.end());
      row.format = "NVFP4";
    } else {
      const TensorInfo* q = quant.find(n);
      if (q == nullptr)
        fail("{}: in the reference model but not in the quantised one ({})", n, quant.dir().string());
      if (q->shape != r.shape)
        fail("{}: the reference has shape {}, the quantised model {}", n, shape_str(r.shape),
             shape_str(q->shape));
      got = values_f64(*q);
      row.format = std::string(dtype_name(q->dtype));
    }
    double err = 0, mag = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      const double e = got[i] - want[i];
      err += e * e;
      mag += want[i] * want[i];
      row.max_abs = std::max(row.max_abs, std::fabs(e));
    }
    row.nmse = mag > 0 ? err / mag : (err > 0 ? INFINITY : 0.0);
    rows.push_back(std::move(row));
  }
  std::stable_sort(rows.begin(), rows.end(), [](const WeightErrorRow& a, const WeightErrorRow& b) {
    if (a.nmse != b.nmse) return a.nmse > b.nmse;
    return natural_less(a.name, b.name);
  });
  return rows;
}

std::string format_quantization_error(const std::vector<WeightErrorRow>& rows) {
  size_t wn = 6;
  for (const auto& r : rows) wn = std::max(wn, r.name.size());
  std::string out = fmt::format("{:<{}}  {:<7}  {:>12}  {:>11}  {:>11}\n", "weight", wn, "format", "params",
                                "nmse", "max |err|");
  double err = 0, n_q = 0;
  int64_t quantised = 0;
  for (const auto& r : rows) {
    out += fmt::format("{:<{}}  {:<7}  {:>12}  {:>11.4e}  {:>11.4e}\n", r.name, wn, r.format, r.params,
                       r.nmse, r.max_abs);
    if (r.format == "NVFP4") {
      err += r.nmse * static_cast<double>(r.params);
      n_q += static_cast<double>(r.params);
      ++quantised;
    }
  }
  if (quantised > 0)
    out += fmt::format("NVFP4 weights: {}, parameter-weighted mean NMSE {:.4e}\n", quantised, err / n_q);
  return out;
}

std::optional<std::string> check_nvfp4_linear(const ExpectedTensor& expected, const WeightStore& store) {
  if (!ends_with(expected.name, ".weight") || expected.shape.size() != 2) return std::nullopt;
  const std::string m = module_of(expected.name);
  try {
    const LinearTensors t = find_linear_tensors(store, m);
    if (t.layout != LinearTensors::Layout::ModelOpt && t.layout != LinearTensors::Layout::CompressedTensors)
      return std::nullopt;
    load_linear_weight(store, m, expected.shape[0], expected.shape[1], {});
    return std::string();
  } catch (const Error& e) {
    return std::string(e.what());
  }
}

}  // namespace nibble
