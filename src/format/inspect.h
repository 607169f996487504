// defines: what `nibble inspect` reports about stored tensors: one row per tensor (name, dtype,
// shape, parameters, bytes, kind) and totals by dtype, by kind and overall; plus its text form.
//
// Rows are built in a separate step from totals and printing so that a row can later stand for a
// logical weight made of several stored tensors (NVFP4: X.weight U8 + X.weight_scale +
// X.weight_scale_2) with its bits per weight, and so that a comparison against a reference model
// can add columns without touching the totals.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "format/safetensors.h"

namespace nibble {

enum class TensorKind : uint8_t { Embedding, Attention, Mlp, Norm, LmHead, Other };
inline constexpr int kTensorKindCount = 6;

std::string_view tensor_kind_name(TensorKind kind);  // "embedding", "attention", ...
// From HF naming: embed_tokens -> embedding, lm_head, *norm* -> norm (q_norm and k_norm included),
// self_attn -> attention, mlp -> mlp, anything else -> other.
TensorKind classify_tensor(std::string_view name);

struct InspectRow {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  int64_t params = 0;  // stored elements
  uint64_t bytes = 0;  // stored bytes
  TensorKind kind = TensorKind::Other;
  std::string file;  // where it is stored
};

struct InspectTotal {
  std::string group;  // dtype name, kind name, or "total"
  int64_t tensors = 0;
  int64_t params = 0;
  uint64_t bytes = 0;
};

struct InspectReport {
  std::vector<InspectRow> rows;        // by name, numbers in numeric order (layers.2 < layers.10)
  std::vector<InspectTotal> by_dtype;  // in DType order, only dtypes present
  std::vector<InspectTotal> by_kind;   // in TensorKind order, only kinds present
  InspectTotal total;
};

std::vector<InspectRow> inspect_rows(const WeightStore& store);  // one per stored tensor
InspectReport summarize(std::vector<InspectRow> rows);           // sorts rows, adds totals
inline InspectReport inspect_weights(const WeightStore& store) { return summarize(inspect_rows(store)); }

// The table and totals as `nibble inspect` prints them.
std::string format_inspect_report(const InspectReport& report);

// Orders names with embedded numbers by value: "layers.2.x" < "layers.10.x".
bool natural_less(std::string_view a, std::string_view b);
// 1536 -> "1.5 KiB"; below 1 KiB, "N B".
std::string format_bytes(uint64_t bytes);

}  // namespace nibble
