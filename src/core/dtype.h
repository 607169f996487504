// defines: DType (element types of stored tensors), their byte sizes and safetensors names.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace nibble {

// Storage element types. The names are the safetensors dtype strings.
enum class DType : uint8_t { F64, F32, F16, BF16, F8_E4M3, U8, I8, I16, I32, I64, BOOL };

size_t dtype_size(DType t);                                   // bytes per element
std::string_view dtype_name(DType t);                         // "BF16", ...
std::optional<DType> dtype_from_name(std::string_view name);  // nullopt if unknown
bool dtype_is_float(DType t);

}  // namespace nibble
