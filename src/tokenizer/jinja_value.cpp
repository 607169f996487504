#include "tokenizer/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace nibble::jinja {

const Value* Dict::find(std::string_view key) const {
  for (const auto& [k, v] : entries) {
    if (k == key) return &v;
  }
  return nullptr;
}

void Dict::set(const std::string& key, Value value) {
  for (auto& [k, v] : entries) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  entries.emplace_back(key, std::move(value));
}

Value Value::from_list(List items) {
  Value v;
  v.kind = Kind::List;
  v.list = std::make_shared<List>(std::move(items));
  return v;
}

Value Value::from_tuple(List items) {
  Value v = from_list(std::move(items));
  v.tuple = true;
  return v;
}

Value Value::from_dict(Dict d) {
  Value v;
  v.kind = Kind::Dict;
  v.dict = std::make_shared<Dict>(std::move(d));
  return v;
}

Value Value::new_namespace(Dict d) {
  Value v = from_dict(std::move(d));
  v.kind = Kind::Namespace;
  return v;
}

Value Value::from_function(Function f) {
  Value v;
  v.kind = Kind::Function;
  v.function = std::make_shared<const Function>(std::move(f));
  return v;
}

std::optional<Value> CallArgs::get(size_t index, std::string_view name) const {
  if (index < positional.size()) return positional[index];
  for (const auto& [k, v] : keyword) {
    if (k == name) return v;
  }
  return std::nullopt;
}

void CallArgs::check(size_t max_positional, std::initializer_list<std::string_view> keywords) const {
  if (positional.size() > max_positional) {
    fail("line {}: {}() takes at most {} positional arguments, got {}", line, callee, max_positional,
         positional.size());
  }
  for (const auto& [k, v] : keyword) {
    if (std::find(keywords.begin(), keywords.end(), k) == keywords.end()) {
      fail("line {}: {}() got an unexpected keyword argument '{}'", line, callee, k);
    }
  }
}

std::optional<std::string> CallArgs::opt_string(size_t index, std::string_view name) const {
  std::optional<Value> v = get(index, name);
  if (!v || v->is_none() || v->is_undefined()) return std::nullopt;
  if (!v->is_string()) {
    fail("line {}: {}() argument '{}' must be a string, not {}", line, callee, name, kind_name(v->kind));
  }
  return v->text;
}

std::string CallArgs::req_string(size_t index, std::string_view name) const {
  std::optional<std::string> s = opt_string(index, name);
  if (!s) fail("line {}: {}() is missing the string argument '{}'", line, callee, name);
  return *s;
}

int64_t CallArgs::opt_int(size_t index, std::string_view name, int64_t def) const {
  std::optional<Value> v = get(index, name);
  if (!v || v->is_none()) return def;
  if (v->kind == Kind::Int) return v->integer;
  if (v->kind == Kind::Bool) return v->boolean;
  fail("line {}: {}() argument '{}' must be an integer, not {}", line, callee, name, kind_name(v->kind));
}

bool CallArgs::opt_bool(size_t index, std::string_view name, bool def) const {
  std::optional<Value> v = get(index, name);
  return v ? truthy(*v) : def;
}

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::Undefined:
      return "Undefined";
    case Kind::None:
      return "NoneType";
    case Kind::Bool:
      return "bool";
    case Kind::Int:
      return "int";
    case Kind::Float:
      return "float";
    case Kind::String:
      return "str";
    case Kind::List:
      return "list";
    case Kind::Dict:
      return "dict";
    case Kind::Namespace:
      return "Namespace";
    case Kind::Function:
      return "function";
  }
  return "?";
}

bool truthy(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined:
    case Kind::None:
      return false;
    case Kind::Bool:
      return v.boolean;
    case Kind::Int:
      return v.integer != 0;
    case Kind::Float:
      return v.number != 0.0;
    case Kind::String:
      return !v.text.empty();
    case Kind::List:
      return !v.list->empty();
    case Kind::Dict:
      return !v.dict->entries.empty();
    case Kind::Namespace:
    case Kind::Function:
      return true;
  }
  return false;
}

// Python's repr(float) is the shortest text that round-trips, in fixed notation for decimal
// exponents in [-4, 16) and scientific otherwise, always with a '.0' or an exponent.
std::string format_float(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  NIBBLE_ASSERT(ec == std::errc());
  std::string sci(buf, end);  // "-d.ddde+XX"
  size_t e = sci.find('e');
  int exponent = std::atoi(sci.c_str() + e + 1);
  std::string sign = sci[0] == '-' ? "-" : "";
  std::string digits;
  for (size_t i = sign.size(); i < e; ++i) {
    if (sci[i] != '.') digits += sci[i];
  }
  if (exponent < -4 || exponent >= 16) {
    std::string mant = digits.substr(0, 1);
    if (digits.size() > 1) mant += fmt::format(".{}", digits.substr(1));
    return fmt::format("{}{}e{}{:02d}", sign, mant, exponent < 0 ? '-' : '+', std::abs(exponent));
  }
  std::string out;
  if (exponent < 0) {
    out = fmt::format("0.{}{}", std::string(-exponent - 1, '0'), digits);
  } else if (static_cast<size_t>(exponent) + 1 >= digits.size()) {
    out = digits + std::string(exponent + 1 - digits.size(), '0') + ".0";
  } else {
    out = fmt::format("{}.{}", digits.substr(0, exponent + 1), digits.substr(exponent + 1));
  }
  return sign + out;
}

namespace {

// Python's repr(str): single quotes unless the text holds ' and no ", escapes for \\, the quote,
// \n \r \t and other non-printable ASCII; printable non-ASCII is kept as is.
std::string repr_string(const std::string& s) {
  char quote = (s.find('\'') != std::string::npos && s.find('"') == std::string::npos) ? '"' : '\'';
  std::string out(1, quote);
  for (unsigned char c : s) {
    if (c == '\\' || c == static_cast<unsigned char>(quote)) {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  out += quote;
  return out;
}

void append_json_string(std::string& out, const std::string& s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20) {
          out += fmt::format("\\u{:04x}", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

void append_json(std::string& out, const Value& v, std::optional<int> indent, bool sort_keys, int depth) {
  // json.dumps: item separator ", " without indent and "," with it; key separator ": ".
  const std::string item_sep = indent ? "," : ", ";
  auto newline = [&](int d) {
    if (indent) {
      out += '\n';
      out.append(static_cast<size_t>(*indent) * d, ' ');
    }
  };
  switch (v.kind) {
    case Kind::None:
      out += "null";
      return;
    case Kind::Bool:
      out += v.boolean ? "true" : "false";
      return;
    case Kind::Int:
      out += std::to_string(v.integer);
      return;
    case Kind::Float:
      if (std::isnan(v.number)) {
        out += "NaN";
      } else if (std::isinf(v.number)) {
        out += v.number < 0 ? "-Infinity" : "Infinity";
      } else {
        out += format_float(v.number);
      }
      return;
    case Kind::String:
      append_json_string(out, v.text);
      return;
    case Kind::List:
      if (v.list->empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t i = 0; i < v.list->size(); ++i) {
        if (i) out += item_sep;
        newline(depth + 1);
        append_json(out, (*v.list)[i], indent, sort_keys, depth + 1);
      }
      newline(depth);
      out += ']';
      return;
    case Kind::Dict: {
      if (v.dict->entries.empty()) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<std::string, Value>*> entries;
      for (const auto& e : v.dict->entries) entries.push_back(&e);
      if (sort_keys) {
        std::stable_sort(entries.begin(), entries.end(),
                         [](auto* a, auto* b) { return a->first < b->first; });
      }
      out += '{';
      for (size_t i = 0; i < entries.size(); ++i) {
        if (i) out += item_sep;
        newline(depth + 1);
        append_json_string(out, entries[i]->first);
        out += ": ";
        append_json(out, entries[i]->second, indent, sort_keys, depth + 1);
      }
      newline(depth);
      out += '}';
      return;
    }
    case Kind::Undefined:
    case Kind::Namespace:
    case Kind::Function:
      fail("tojson: Object of type {} is not JSON serializable", kind_name(v.kind));
  }
}

}  // namespace

Value from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null:
      return Value::none();
    case nlohmann::json::value_t::boolean:
      return Value::from_bool(j.get<bool>());
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
      return Value::from_int(j.get<int64_t>());
    case nlohmann::json::value_t::number_float:
      return Value::from_float(j.get<double>());
    case nlohmann::json::value_t::string:
      return Value::from_string(j.get<std::string>());
    case nlohmann::json::value_t::array: {
      List items;
      for (const auto& x : j) items.push_back(from_json(x));
      return Value::from_list(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      Dict d;
      for (const auto& [k, x] : j.items()) d.set(k, from_json(x));
      return Value::from_dict(std::move(d));
    }
    default:
      fail("cannot use a JSON {} as a template value", j.type_name());
  }
}

std::string to_json(const Value& v, std::optional<int> indent, bool sort_keys) {
  std::string out;
  append_json(out, v, indent, sort_keys, 0);
  return out;
}

std::string repr(const Value& v) {
  switch (v.kind) {
    case Kind::String:
      return repr_string(v.text);
    case Kind::Undefined:
      return "Undefined";
    default:
      return to_str(v);
  }
}

std::string to_str(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined:
      return "";
    case Kind::None:
      return "None";
    case Kind::Bool:
      return v.boolean ? "True" : "False";
    case Kind::Int:
      return std::to_string(v.integer);
    case Kind::Float:
      return format_float(v.number);
    case Kind::String:
      return v.text;
    case Kind::List: {
      std::string out = v.tuple ? "(" : "[";
      for (size_t i = 0; i < v.list->size(); ++i) {
        if (i) out += ", ";
        out += repr((*v.list)[i]);
      }
      if (v.tuple && v.list->size() == 1) out += ",";
      return out + (v.tuple ? ")" : "]");
    }
    case Kind::Dict:
    case Kind::Namespace: {
      std::string out = v.kind == Kind::Namespace ? "<Namespace {" : "{";
      for (size_t i = 0; i < v.dict->entries.size(); ++i) {
        if (i) out += ", ";
        out += repr_string(v.dict->entries[i].first) + ": " + repr(v.dict->entries[i].second);
      }
      return out + (v.kind == Kind::Namespace ? "}>" : "}");
    }
    case Kind::Function:
      return "<function>";
  }
  return "";
}

namespace {

double as_double(const Value& v) {
  if (v.kind == Kind::Float) return v.number;
  if (v.kind == Kind::Int) return static_cast<double>(v.integer);
  return v.boolean ? 1.0 : 0.0;
}

int64_t as_int(const Value& v) { return v.kind == Kind::Int ? v.integer : (v.boolean ? 1 : 0); }

}  // namespace

bool equals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind == Kind::Float || b.kind == Kind::Float) return as_double(a) == as_double(b);
    return as_int(a) == as_int(b);
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::Undefined:
    case Kind::None:
      return true;
    case Kind::String:
      return a.text == b.text;
    case Kind::List:
      if (a.tuple != b.tuple || a.list->size() != b.list->size()) return false;
      for (size_t i = 0; i < a.list->size(); ++i) {
        if (!equals((*a.list)[i], (*b.list)[i])) return false;
      }
      return true;
    case Kind::Dict:
      if (a.dict->entries.size() != b.dict->entries.size()) return false;
      for (const auto& [k, v] : a.dict->entries) {
        const Value* other = b.dict->find(k);
        if (!other || !equals(v, *other)) return false;
      }
      return true;
    case Kind::Namespace:
      return a.dict == b.dict;
    case Kind::Function:
      return a.function == b.function;
    default:
      return false;
  }
}

bool less_than(const Value& a, const Value& b, int line) {
  if (a.is_number() && b.is_number()) {
    if (a.kind == Kind::Float || b.kind == Kind::Float) return as_double(a) < as_double(b);
    return as_int(a) < as_int(b);
  }
  // UTF-8 byte order is code point order, which is how Python compares str.
  if (a.is_string() && b.is_string()) return a.text < b.text;
  if (a.is_list() && b.is_list()) {
    const List& x = *a.list;
    const List& y = *b.list;
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (!equals(x[i], y[i])) return less_than(x[i], y[i], line);
    }
    return x.size() < y.size();
  }
  fail("line {}: '<' not supported between instances of '{}' and '{}'", line, kind_name(a.kind),
       kind_name(b.kind));
}

uint32_t decode_code_point(std::string_view s, size_t pos, size_t* length) {
  auto byte = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  unsigned char c = byte(pos);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
  if (n == 0 || pos + n > s.size()) {
    *length = 1;
    return c;
  }
  uint32_t cp = n == 1 ? c : c & (0x7f >> n);
  for (size_t i = 1; i < n; ++i) {
    if ((byte(pos + i) & 0xc0) != 0x80) {
      *length = 1;
      return c;
    }
    cp = (cp << 6) | (byte(pos + i) & 0x3f);
  }
  *length = n;
  return cp;
}

std::vector<size_t> code_point_offsets(std::string_view s) {
  std::vector<size_t> offsets;
  for (size_t pos = 0; pos < s.size();) {
    offsets.push_back(pos);
    size_t len = 0;
    decode_code_point(s, pos, &len);
    pos += len;
  }
  offsets.push_back(s.size());
  return offsets;
}

size_t code_point_count(std::string_view s) { return code_point_offsets(s).size() - 1; }

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

bool is_python_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 || cp == 0xa0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f ||
         cp == 0x205f || cp == 0x3000;
}

std::string python_strip(std::string_view s, const std::optional<std::string>& chars, bool left, bool right) {
  std::vector<uint32_t> strip_set;
  if (chars) {
    for (size_t pos = 0, len = 0; pos < chars->size(); pos += len) {
      strip_set.push_back(decode_code_point(*chars, pos, &len));
    }
  }
  auto strip = [&](uint32_t cp) {
    return chars ? std::find(strip_set.begin(), strip_set.end(), cp) != strip_set.end() : is_python_space(cp);
  };
  std::vector<size_t> offsets = code_point_offsets(s);
  size_t n = offsets.size() - 1;
  size_t begin = 0;
  size_t end = n;
  size_t len = 0;
  while (left && begin < end && strip(decode_code_point(s, offsets[begin], &len))) ++begin;
  while (right && end > begin && strip(decode_code_point(s, offsets[end - 1], &len))) --end;
  return std::string(s.substr(offsets[begin], offsets[end] - offsets[begin]));
}

}  // namespace nibble::jinja
