// defines: jinja::Value, the dynamically typed value of the Jinja2-subset interpreter, with the
// Python semantics the chat templates rely on: truthiness, str() / repr() text, ==, ordering,
// HF's tojson, and UTF-8 helpers (Python indexes, slices and strips strings by code point).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nibble::jinja {

struct Value;
struct CallArgs;

using List = std::vector<Value>;
// A native function or a macro: takes evaluated arguments, returns a value; throws Error.
using Function = std::function<Value(CallArgs&)>;

// A Python dict with string keys; insertion order is kept because tojson and items() show it.
struct Dict {
  std::vector<std::pair<std::string, Value>> entries;

  const Value* find(std::string_view key) const;
  void set(const std::string& key, Value value);
};

enum class Kind { Undefined, None, Bool, Int, Float, String, List, Dict, Namespace, Function };

// Lists, dicts and functions are shared, not copied: the sandbox HF uses makes lists and dicts
// immutable, so sharing is unobservable except for namespace(), which is mutable by design.
struct Value {
  Kind kind = Kind::Undefined;
  bool boolean = false;
  int64_t integer = 0;
  double number = 0.0;
  std::string text;  // String: the UTF-8 text. Undefined: the name that was looked up (for errors).
  std::shared_ptr<List> list;
  bool tuple = false;          // a List made by a tuple expression: shown as (a, b), unequal to a list
  std::shared_ptr<Dict> dict;  // Dict and Namespace
  std::shared_ptr<const Function> function;

  static Value undefined(std::string name = "") { return with_text(Kind::Undefined, std::move(name)); }
  static Value none() { return of_kind(Kind::None); }
  static Value from_bool(bool b) {
    Value v = of_kind(Kind::Bool);
    v.boolean = b;
    return v;
  }
  static Value from_int(int64_t i) {
    Value v = of_kind(Kind::Int);
    v.integer = i;
    return v;
  }
  static Value from_float(double d) {
    Value v = of_kind(Kind::Float);
    v.number = d;
    return v;
  }
  static Value from_string(std::string s) { return with_text(Kind::String, std::move(s)); }
  static Value from_list(List items);
  static Value from_tuple(List items);
  static Value from_dict(Dict d);
  static Value new_namespace(Dict d);
  static Value from_function(Function f);

  bool is_undefined() const { return kind == Kind::Undefined; }
  bool is_none() const { return kind == Kind::None; }
  bool is_string() const { return kind == Kind::String; }
  bool is_list() const { return kind == Kind::List; }
  bool is_dict() const { return kind == Kind::Dict; }
  bool is_number() const { return kind == Kind::Bool || kind == Kind::Int || kind == Kind::Float; }

 private:
  static Value of_kind(Kind k) {
    Value v;
    v.kind = k;
    return v;
  }
  static Value with_text(Kind k, std::string s) {
    Value v;
    v.kind = k;
    v.text = std::move(s);
    return v;
  }
};

// Evaluated call arguments: positional, then keyword (in call order).
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
  std::string callee;  // for error messages
  int line = 0;

  // Argument `index` or keyword `name`; nullopt when neither was passed.
  std::optional<Value> get(size_t index, std::string_view name) const;
  // Errors when more than `max_positional` positional or an unknown keyword was passed.
  void check(size_t max_positional, std::initializer_list<std::string_view> keywords) const;

  // An index no call reaches, for arguments that can only be passed by keyword.
  static constexpr size_t kKeywordOnly = static_cast<size_t>(-1);
  // Typed accessors: None / absent give the default; a wrong type is an Error naming the callee.
  std::optional<std::string> opt_string(size_t index, std::string_view name) const;
  std::string req_string(size_t index, std::string_view name) const;
  int64_t opt_int(size_t index, std::string_view name, int64_t def) const;
  bool opt_bool(size_t index, std::string_view name, bool def) const;
};

const char* kind_name(Kind k);  // Python's type name: "str", "list", "NoneType", ...

bool truthy(const Value& v);                  // Python bool(v); Undefined is false
std::string to_str(const Value& v);           // Python str(v); Undefined renders as ""
std::string repr(const Value& v);             // Python repr(v), used inside str(list) / str(dict)
std::string format_float(double d);           // Python repr(float): "1.0", "1e-05", "1e+16"
bool equals(const Value& a, const Value& b);  // Python ==
// Python <, for numbers, strings and lists; throws Error (naming `line`) for other types.
bool less_than(const Value& a, const Value& b, int line);
// json.dumps(v, ensure_ascii=False, indent=indent, sort_keys=...) as HF's tojson filter does.
std::string to_json(const Value& v, std::optional<int> indent, bool sort_keys);

// A JSON document as a value (objects keep their key order); used for template variables.
Value from_json(const nlohmann::ordered_json& j);

// UTF-8 helpers. Invalid bytes are treated as one code point each, so nothing is lost.
std::vector<size_t> code_point_offsets(std::string_view s);  // start of each code point, then size
size_t code_point_count(std::string_view s);
uint32_t decode_code_point(std::string_view s, size_t pos, size_t* length);
void append_utf8(std::string& out, uint32_t cp);
bool is_python_space(uint32_t cp);  // str.isspace(), also what \s matches in Python's re
// str.strip / lstrip / rstrip: `chars` unset strips whitespace, else any code point in chars.
std::string python_strip(std::string_view s, const std::optional<std::string>& chars, bool left, bool right);

}  // namespace nibble::jinja
