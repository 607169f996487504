#include "format/inspect.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>

namespace nibble {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// The last dot-separated component that is not "weight" / "bias": "q_norm" in
// "model.layers.0.self_attn.q_norm.weight".
std::string_view module_name(std::string_view name) {
  for (std::string_view suffix : {".weight", ".bias"}) {
    if (name.size() > suffix.size() && name.substr(name.size() - suffix.size()) == suffix) {
      name.remove_suffix(suffix.size());
      break;
    }
  }
  const size_t dot = name.rfind('.');
  return dot == std::string_view::npos ? name : name.substr(dot + 1);
}

std::string shape_str(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

void add_to(InspectTotal& t, const InspectRow& r) {
  t.tensors += 1;
  t.params += r.params;
  t.bytes += r.bytes;
}

std::string total_line(const InspectTotal& t, size_t group_width) {
  return fmt::format("  {:<{}}  {:>6} tensors  {:>14} params  {:>16} bytes  ({})\n", t.group, group_width,
                     t.tensors, t.params, t.bytes, format_bytes(t.bytes));
}

}  // namespace

std::string_view tensor_kind_name(TensorKind kind) {
  static constexpr std::array<std::string_view, kTensorKindCount> kNames = {
      "embedding", "attention", "mlp", "norm", "lm_head", "other"};
  return kNames[static_cast<size_t>(kind)];
}

TensorKind classify_tensor(std::string_view name) {
  auto has = [&](std::string_view s) { return name.find(s) != std::string_view::npos; };
  if (has("embed_tokens") || has("wte.") || has("tok_embeddings")) return TensorKind::Embedding;
  if (has("lm_head")) return TensorKind::LmHead;
  // Norms first: q_norm / k_norm sit inside self_attn but are norms.
  if (module_name(name).find("norm") != std::string_view::npos) return TensorKind::Norm;
  if (has("self_attn") || has(".attention.") || has(".attn.")) return TensorKind::Attention;
  if (has(".mlp.") || has("feed_forward")) return TensorKind::Mlp;
  return TensorKind::Other;
}

bool natural_less(std::string_view a, std::string_view b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (is_digit(a[i]) && is_digit(b[j])) {
      // Compare digit runs by value: strip leading zeros, then longer is larger.
      size_t ie = i, je = j;
      while (ie < a.size() && is_digit(a[ie])) ++ie;
      while (je < b.size() && is_digit(b[je])) ++je;
      std::string_view da = a.substr(i, ie - i), db = b.substr(j, je - j);
      while (da.size() > 1 && da[0] == '0') da.remove_prefix(1);
      while (db.size() > 1 && db[0] == '0') db.remove_prefix(1);
      if (da.size() != db.size()) return da.size() < db.size();
      if (da != db) return da < db;
      i = ie;
      j = je;
      continue;
    }
    if (a[i] != b[j]) return a[i] < b[j];
    ++i;
    ++j;
  }
  if (a.size() - i != b.size() - j) return a.size() - i < b.size() - j;
  return a < b;  // equal by value ("01" vs "1"): any consistent order
}

std::string format_bytes(uint64_t bytes) {
  if (bytes < 1024) return fmt::format("{} B", bytes);
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes) / 1024;
  size_t u = 0;
  while (v >= 1024 && u + 1 < std::size(kUnits)) v /= 1024, ++u;
  return fmt::format("{:.1f} {}", v, kUnits[u]);
}

std::vector<InspectRow> inspect_rows(const WeightStore& store) {
  std::vector<InspectRow> rows;
  for (const auto& f : store.files()) {
    for (const auto& t : f.tensors()) {
      rows.push_back({t.name, t.dtype, t.shape, t.numel(), t.nbytes, classify_tensor(t.name), t.file});
    }
  }
  return rows;
}

InspectReport summarize(std::vector<InspectRow> rows) {
  InspectReport r;
  std::sort(rows.begin(), rows.end(),
            [](const InspectRow& a, const InspectRow& b) { return natural_less(a.name, b.name); });
  r.rows = std::move(rows);
  // Indexed by enum value so the totals come out in a fixed order.
  std::vector<InspectTotal> dtypes(static_cast<size_t>(DType::BOOL) + 1), kinds(kTensorKindCount);
  r.total.group = "total";
  for (const auto& row : r.rows) {
    add_to(dtypes[static_cast<size_t>(row.dtype)], row);
    add_to(kinds[static_cast<size_t>(row.kind)], row);
    add_to(r.total, row);
  }
  for (size_t i = 0; i < dtypes.size(); ++i) {
    if (dtypes[i].tensors == 0) continue;
    dtypes[i].group = dtype_name(static_cast<DType>(i));
    r.by_dtype.push_back(dtypes[i]);
  }
  for (size_t i = 0; i < kinds.size(); ++i) {
    if (kinds[i].tensors == 0) continue;
    kinds[i].group = tensor_kind_name(static_cast<TensorKind>(i));
    r.by_kind.push_back(kinds[i]);
  }
  return r;
}

std::string format_inspect_report(const InspectReport& report) {
  size_t wn = 4, wd = 5, ws = 5, wp = 6;
  for (const auto& row : report.rows) {
    wn = std::max(wn, row.name.size());
    wd = std::max(wd, dtype_name(row.dtype).size());
    ws = std::max(ws, shape_str(row.shape).size());
    wp = std::max(wp, fmt::formatted_size("{}", row.params));
  }
  std::string out = fmt::format("{:<{}}  {:<{}}  {:<{}}  {:>{}}  {:>12}  {}\n", "name", wn, "dtype", wd,
                                "shape", ws, "params", wp, "bytes", "kind");
  for (const auto& row : report.rows) {
    out += fmt::format("{:<{}}  {:<{}}  {:<{}}  {:>{}}  {:>12}  {}\n", row.name, wn, dtype_name(row.dtype),
                       wd, shape_str(row.shape), ws, row.params, wp, row.bytes, tensor_kind_name(row.kind));
  }
  out += "\nby dtype:\n";
  for (const auto& t : report.by_dtype) out += total_line(t, 9);
  out += "by kind:\n";
  for (const auto& t : report.by_kind) out += total_line(t, 9);
  out += fmt::format("total: {} tensors, {} parameters, {} bytes ({})\n", report.total.tensors,
                     report.total.params, report.total.bytes, format_bytes(report.total.bytes));
  return out;
}

}  // namespace nibble
