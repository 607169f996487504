#include "tokenizer/jinja_ops.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "tokenizer/jinja_ast.h"

namespace nibble::jinja {

void fail_undefined(const Value& undefined, int line) {
  fail("line {}: {}", line, undefined.text.empty() ? std::string("undefined value") : undefined.text);
}

Value get_attr(const Value& obj, const std::string& name, int line) {
  if (obj.is_undefined()) fail_undefined(obj, line);
  if (obj.kind == Kind::Dict || obj.kind == Kind::Namespace) {
    if (const Value* v = obj.dict->find(name)) return *v;
  }
  return Value::undefined(fmt::format("'{} object' has no attribute '{}'", kind_name(obj.kind), name));
}

Value get_item(const Value& obj, const Value& key, int line) {
  if (obj.is_undefined()) fail_undefined(obj, line);
  // jinja2 returns Undefined where Python's obj[key] raises (IndexError, KeyError, TypeError).
  Value missing =
      Value::undefined(fmt::format("'{} object' has no element {}", kind_name(obj.kind), repr(key)));
  if (key.kind == Kind::String) return get_attr(obj, key.text, line);
  if (key.kind != Kind::Int && key.kind != Kind::Bool) return missing;
  int64_t index = key.kind == Kind::Int ? key.integer : key.boolean;
  if (obj.is_list()) {
    int64_t n = static_cast<int64_t>(obj.list->size());
    if (index < 0) index += n;
    return index >= 0 && index < n ? (*obj.list)[static_cast<size_t>(index)] : missing;
  }
  if (obj.is_string()) {
    std::vector<size_t> offsets = code_point_offsets(obj.text);
    int64_t n = static_cast<int64_t>(offsets.size()) - 1;
    if (index < 0) index += n;
    if (index < 0 || index >= n) return missing;
    return Value::from_string(obj.text.substr(offsets[index], offsets[index + 1] - offsets[index]));
  }
  return missing;
}

namespace {

int64_t slice_bound(const Value& v, int line) {
  if (v.kind == Kind::Int) return v.integer;
  if (v.kind == Kind::Bool) return v.boolean;
  fail("line {}: slice indices must be integers or None, not {}", line, kind_name(v.kind));
}

// Python's slice.indices(n), then the visited positions.
std::vector<int64_t> slice_positions(int64_t n, const Value& start_v, const Value& stop_v,
                                     const Value& step_v, int line) {
  auto unset = [](const Value& v) { return v.is_undefined() || v.is_none(); };
  int64_t step = unset(step_v) ? 1 : slice_bound(step_v, line);
  if (step == 0) fail("line {}: slice step cannot be zero", line);
  auto clamp = [&](const Value& v, int64_t def) {
    if (unset(v)) return def;
    int64_t i = slice_bound(v, line);
    if (i < 0) i += n;
    if (step > 0) return std::clamp<int64_t>(i, 0, n);
    return std::clamp<int64_t>(i, -1, n - 1);
  };
  int64_t start = clamp(start_v, step > 0 ? 0 : n - 1);
  int64_t stop = clamp(stop_v, step > 0 ? n : -1);
  std::vector<int64_t> out;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.push_back(i);
  return out;
}

}  // namespace

Value get_slice(const Value& obj, const Value& start, const Value& stop, const Value& step, int line) {
  if (obj.is_undefined()) fail_undefined(obj, line);
  if (obj.is_list()) {
    List out;
    for (int64_t i : slice_positions(static_cast<int64_t>(obj.list->size()), start, stop, step, line)) {
      out.push_back((*obj.list)[static_cast<size_t>(i)]);
    }
    return Value::from_list(std::move(out));
  }
  if (obj.is_string()) {
    std::vector<size_t> offsets = code_point_offsets(obj.text);
    std::string out;
    for (int64_t i : slice_positions(static_cast<int64_t>(offsets.size()) - 1, start, stop, step, line)) {
      out += obj.text.substr(offsets[i], offsets[i + 1] - offsets[i]);
    }
    return Value::from_string(std::move(out));
  }
  return Value::undefined(fmt::format("'{} object' is not subscriptable", kind_name(obj.kind)));
}

std::vector<Value> iterate(const Value& v, int line) {
  switch (v.kind) {
    case Kind::Undefined:
      return {};  // jinja2's Undefined iterates as empty
    case Kind::List:
      return *v.list;
    case Kind::Dict: {
      std::vector<Value> keys;
      for (const auto& [k, x] : v.dict->entries) keys.push_back(Value::from_string(k));
      return keys;
    }
    case Kind::String: {
      std::vector<Value> chars;
      std::vector<size_t> offsets = code_point_offsets(v.text);
      for (size_t i = 0; i + 1 < offsets.size(); ++i) {
        chars.push_back(Value::from_string(v.text.substr(offsets[i], offsets[i + 1] - offsets[i])));
      }
      return chars;
    }
    default:
      fail("line {}: '{}' object is not iterable", line, kind_name(v.kind));
  }
}

namespace {

[[noreturn]] void bad_operands(const std::string& op, const Value& a, const Value& b, int line) {
  fail("line {}: unsupported operand type(s) for {}: '{}' and '{}'", line, op, kind_name(a.kind),
       kind_name(b.kind));
}

bool is_integral(const Value& v) { return v.kind == Kind::Int || v.kind == Kind::Bool; }
int64_t int_of(const Value& v) { return v.kind == Kind::Int ? v.integer : v.boolean; }
double float_of(const Value& v) { return v.kind == Kind::Float ? v.number : static_cast<double>(int_of(v)); }

Value repeat(const Value& seq, int64_t times) {
  if (seq.is_string()) {
    std::string out;
    for (int64_t i = 0; i < times; ++i) out += seq.text;
    return Value::from_string(std::move(out));
  }
  List out;
  for (int64_t i = 0; i < times; ++i) out.insert(out.end(), seq.list->begin(), seq.list->end());
  return Value::from_list(std::move(out));
}

}  // namespace

Value binary_op(const std::string& op, const Value& a, const Value& b, int line) {
  if (a.is_undefined()) fail_undefined(a, line);
  if (b.is_undefined()) fail_undefined(b, line);
  const bool numbers = a.is_number() && b.is_number();
  const bool ints = is_integral(a) && is_integral(b);
  if (op == "+") {
    if (ints) return Value::from_int(int_of(a) + int_of(b));
    if (numbers) return Value::from_float(float_of(a) + float_of(b));
    if (a.is_string() && b.is_string()) return Value::from_string(a.text + b.text);
    if (a.is_list() && b.is_list()) {
      List out = *a.list;
      out.insert(out.end(), b.list->begin(), b.list->end());
      return Value::from_list(std::move(out));
    }
  } else if (op == "-") {
    if (ints) return Value::from_int(int_of(a) - int_of(b));
    if (numbers) return Value::from_float(float_of(a) - float_of(b));
  } else if (op == "*") {
    if (ints) return Value::from_int(int_of(a) * int_of(b));
    if (numbers) return Value::from_float(float_of(a) * float_of(b));
    if ((a.is_string() || a.is_list()) && is_integral(b)) return repeat(a, int_of(b));
    if ((b.is_string() || b.is_list()) && is_integral(a)) return repeat(b, int_of(a));
  } else if (op == "/" || op == "//" || op == "%") {
    if (a.is_string() && op == "%") {
      unsupported(line, "printf-style string formatting ('...' % args)");
    }
    if (numbers) {
      if (float_of(b) == 0.0) fail("line {}: division by zero", line);
      if (op == "/") return Value::from_float(float_of(a) / float_of(b));
      if (ints) {
        int64_t x = int_of(a), y = int_of(b);
        int64_t q = x / y, r = x % y;
        if (r != 0 && ((r < 0) != (y < 0))) {  // Python floors toward negative infinity
          --q;
          r += y;
        }
        return Value::from_int(op == "//" ? q : r);
      }
      double x = float_of(a), y = float_of(b);
      double q = std::floor(x / y);
      return Value::from_float(op == "//" ? q : x - q * y);
    }
  } else if (op == "**") {
    if (ints && int_of(b) >= 0) {
      int64_t r = 1;
      for (int64_t i = 0; i < int_of(b); ++i) r *= int_of(a);
      return Value::from_int(r);
    }
    if (numbers) return Value::from_float(std::pow(float_of(a), float_of(b)));
  }
  bad_operands(op, a, b, line);
}

bool contains(const Value& container, const Value& item, int line) {
  switch (container.kind) {
    case Kind::Undefined:
      return false;
    case Kind::String:
      if (!item.is_string()) {
        fail("line {}: 'in <string>' requires string as left operand, not {}", line, kind_name(item.kind));
      }
      return container.text.find(item.text) != std::string::npos;
    case Kind::List:
      for (const Value& x : *container.list) {
        if (equals(x, item)) return true;
      }
      return false;
    case Kind::Dict:
    case Kind::Namespace:
      return item.is_string() && container.dict->find(item.text) != nullptr;
    default:
      fail("line {}: argument of type '{}' is not iterable", line, kind_name(container.kind));
  }
}

}  // namespace nibble::jinja
