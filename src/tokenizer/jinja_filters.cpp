// Filters and tests from jinja2's defaults (plus transformers' tojson, which keeps non-ASCII
// text as is), and the Python str / dict methods that chat templates call.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>

#include "core/error.h"
#include "tokenizer/jinja_ast.h"
#include "tokenizer/jinja_ops.h"

namespace nibble::jinja {
namespace {

// ---- argument helpers ----

// An argument index no call reaches: the argument can only be passed by keyword.
constexpr size_t kKeywordOnly = static_cast<size_t>(-1);

std::optional<std::string> opt_string(const CallArgs& args, size_t index, std::string_view name) {
  std::optional<Value> v = args.get(index, name);
  if (!v || v->is_none() || v->is_undefined()) return std::nullopt;
  if (!v->is_string()) {
    fail("line {}: {}() argument '{}' must be a string, not {}", args.line, args.callee, name,
         kind_name(v->kind));
  }
  return v->text;
}

std::string req_string(const CallArgs& args, size_t index, std::string_view name) {
  std::optional<std::string> s = opt_string(args, index, name);
  if (!s) fail("line {}: {}() is missing the string argument '{}'", args.line, args.callee, name);
  return *s;
}

int64_t opt_int(const CallArgs& args, size_t index, std::string_view name, int64_t def) {
  std::optional<Value> v = args.get(index, name);
  if (!v || v->is_none()) return def;
  if (v->kind == Kind::Int) return v->integer;
  if (v->kind == Kind::Bool) return v->boolean;
  fail("line {}: {}() argument '{}' must be an integer, not {}", args.line, args.callee, name,
       kind_name(v->kind));
}

bool opt_bool(const CallArgs& args, size_t index, std::string_view name, bool def) {
  std::optional<Value> v = args.get(index, name);
  return v ? truthy(*v) : def;
}

// Arguments after the first `skip` positional ones, for filters that forward to a test/filter.
CallArgs rest_args(const CallArgs& args, size_t skip, std::string callee) {
  CallArgs rest;
  rest.callee = std::move(callee);
  rest.line = args.line;
  if (args.positional.size() > skip)
    rest.positional.assign(args.positional.begin() + skip, args.positional.end());
  rest.keyword = args.keyword;
  return rest;
}

// ---- strings ----

std::string ascii_map(std::string s, int (*f)(int)) {
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 0x80) c = static_cast<char>(f(static_cast<unsigned char>(c)));
  }
  return s;
}

std::string capitalize(const std::string& s) {
  std::string out = ascii_map(s, [](int c) { return std::tolower(c); });
  if (!out.empty() && static_cast<unsigned char>(out[0]) < 0x80)
    out[0] = static_cast<char>(std::toupper(out[0]));
  return out;
}

// str.title(): a letter after a non-letter is upper-cased, every other letter lower-cased.
std::string python_title(const std::string& s) {
  std::string out;
  bool prev_letter = false;
  for (char c : s) {
    bool letter = std::isalpha(static_cast<unsigned char>(c)) != 0;
    out += letter ? static_cast<char>(prev_letter ? std::tolower(c) : std::toupper(c)) : c;
    prev_letter = letter || static_cast<unsigned char>(c) >= 0x80;
  }
  return out;
}

std::string replace_all(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  std::string out;
  if (from.empty()) {  // Python inserts `to` before every code point and at the end
    std::vector<size_t> offsets = code_point_offsets(s);
    int64_t done = 0;
    for (size_t i = 0; i + 1 < offsets.size(); ++i) {
      if (count < 0 || done < count) out += to, ++done;
      out += s.substr(offsets[i], offsets[i + 1] - offsets[i]);
    }
    if (count < 0 || done < count) out += to;
    return out;
  }
  size_t pos = 0;
  for (int64_t done = 0; count < 0 || done < count; ++done) {
    size_t hit = s.find(from, pos);
    if (hit == std::string::npos) break;
    out += s.substr(pos, hit - pos) + to;
    pos = hit + from.size();
  }
  return out + s.substr(pos);
}

// str.split(sep, maxsplit) / rsplit; sep unset splits on runs of whitespace.
List python_split(const std::string& s, const std::optional<std::string>& sep, int64_t maxsplit,
                  bool from_right, int line) {
  std::vector<std::string> parts;
  if (sep) {
    if (sep->empty()) fail("line {}: split(): empty separator", line);
    if (!from_right) {
      size_t pos = 0;
      for (int64_t n = 0; maxsplit < 0 || n < maxsplit; ++n) {
        size_t hit = s.find(*sep, pos);
        if (hit == std::string::npos) break;
        parts.push_back(s.substr(pos, hit - pos));
        pos = hit + sep->size();
      }
      parts.push_back(s.substr(pos));
    } else {
      size_t end = s.size();
      for (int64_t n = 0; maxsplit < 0 || n < maxsplit; ++n) {
        if (end < sep->size()) break;
        size_t hit = s.rfind(*sep, end - sep->size());
        if (hit == std::string::npos) break;
        parts.insert(parts.begin(), s.substr(hit + sep->size(), end - hit - sep->size()));
        end = hit;
      }
      parts.insert(parts.begin(), s.substr(0, end));
    }
  } else {
    // Words are runs of non-whitespace code points; past maxsplit the rest of the string, from
    // the start of the next word, is the last item (trailing whitespace kept, as Python does).
    std::vector<std::pair<size_t, size_t>> words;
    size_t len = 0;
    for (size_t pos = 0; pos < s.size();) {
      bool space = is_python_space(decode_code_point(s, pos, &len));
      if (!space && (words.empty() || words.back().second != pos))
        words.emplace_back(pos, pos + len);
      else if (!space)
        words.back().second = pos + len;
      pos += len;
    }
    size_t n = words.size();
    size_t limit = maxsplit < 0 ? n : std::min<size_t>(n, static_cast<size_t>(maxsplit) + 1);
    if (limit == n) {
      for (auto [b, e] : words) parts.push_back(s.substr(b, e - b));
    } else if (!from_right) {
      for (size_t i = 0; i + 1 < limit; ++i)
        parts.push_back(s.substr(words[i].first, words[i].second - words[i].first));
      parts.push_back(s.substr(words[limit - 1].first));
    } else {
      parts.push_back(s.substr(0, words[n - limit].second));
      for (size_t i = n - limit + 1; i < n; ++i)
        parts.push_back(s.substr(words[i].first, words[i].second - words[i].first));
    }
  }
  List out;
  for (auto& p : parts) out.push_back(Value::from_string(std::move(p)));
  return out;
}

bool affix_match(const std::string& s, const Value& affix, bool prefix, int line) {
  auto one = [&](const Value& a) {
    if (!a.is_string())
      fail("line {}: {}with() argument must be str or a tuple of str", line, prefix ? "starts" : "ends");
    if (a.text.size() > s.size()) return false;
    return prefix ? s.compare(0, a.text.size(), a.text) == 0
                  : s.compare(s.size() - a.text.size(), a.text.size(), a.text) == 0;
  };
  if (affix.is_list()) return std::any_of(affix.list->begin(), affix.list->end(), one);
  return one(affix);
}

Value string_method(const std::string& s, const std::string& name, CallArgs& args) {
  const int line = args.line;
  if (name == "startswith" || name == "endswith") {
    args.check(1, {});
    std::optional<Value> affix = args.get(0, "");
    if (!affix) fail("line {}: {}() takes one argument", line, name);
    return Value::from_bool(affix_match(s, *affix, name == "startswith", line));
  }
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    args.check(1, {"chars"});
    return Value::from_string(
        python_strip(s, opt_string(args, 0, "chars"), name != "rstrip", name != "lstrip"));
  }
  if (name == "split" || name == "rsplit") {
    args.check(2, {"sep", "maxsplit"});
    return Value::from_list(python_split(s, opt_string(args, 0, "sep"), opt_int(args, 1, "maxsplit", -1),
                                         name == "rsplit", line));
  }
  if (name == "replace") {
    args.check(3, {"count"});
    return Value::from_string(replace_all(s, req_string(args, 0, "old"), req_string(args, 1, "new"),
                                          opt_int(args, 2, "count", -1)));
  }
  if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
    args.check(0, {});
    if (name == "upper") return Value::from_string(ascii_map(s, [](int c) { return std::toupper(c); }));
    if (name == "lower") return Value::from_string(ascii_map(s, [](int c) { return std::tolower(c); }));
    return Value::from_string(name == "title" ? python_title(s) : capitalize(s));
  }
  if (name == "find" || name == "count") {
    args.check(1, {});
    std::string sub = req_string(args, 0, "sub");
    if (name == "find") {
      size_t hit = s.find(sub);
      return Value::from_int(
          hit == std::string::npos ? -1 : static_cast<int64_t>(code_point_count(s.substr(0, hit))));
    }
    if (sub.empty()) return Value::from_int(static_cast<int64_t>(code_point_count(s)) + 1);
    int64_t n = 0;
    for (size_t pos = s.find(sub); pos != std::string::npos; pos = s.find(sub, pos + sub.size())) ++n;
    return Value::from_int(n);
  }
  if (name == "join") {
    args.check(1, {});
    std::string out;
    std::optional<Value> items = args.get(0, "iterable");
    bool first = true;
    for (const Value& v : iterate(items ? *items : Value::undefined(), line)) {
      if (!v.is_string()) fail("line {}: join(): expected str items, found {}", line, kind_name(v.kind));
      if (!first) out += s;
      out += v.text;
      first = false;
    }
    return Value::from_string(std::move(out));
  }
  unsupported(line, fmt::format("the str method '{}()'", name));
}

Value dict_method(const Dict& d, const std::string& name, CallArgs& args) {
  if (name == "items" || name == "keys" || name == "values") {
    args.check(0, {});
    List out;
    for (const auto& [k, v] : d.entries) {
      if (name == "items")
        out.push_back(Value::from_list({Value::from_string(k), v}));
      else
        out.push_back(name == "keys" ? Value::from_string(k) : v);
    }
    return Value::from_list(std::move(out));
  }
  if (name == "get") {
    args.check(2, {});
    const Value* v = d.find(req_string(args, 0, "key"));
    if (v) return *v;
    std::optional<Value> def = args.get(1, "default");
    return def ? *def : Value::none();
  }
  unsupported(args.line, fmt::format("the dict method '{}()'", name));
}

// ---- filters ----

Value first_or_last(const Value& v, bool first, int line) {
  std::vector<Value> items = iterate(v, line);
  if (items.empty()) return Value::undefined("no first/last item of an empty sequence");
  return first ? items.front() : items.back();
}

Value map_filter(const Value& v, CallArgs& args) {
  List out;
  std::optional<Value> attribute = args.get(kKeywordOnly, "attribute");
  if (attribute) {
    args.check(0, {"attribute", "default"});
    std::optional<Value> def = args.get(kKeywordOnly, "default");
    for (const Value& item : iterate(v, args.line)) {
      Value x = attribute->is_string() ? get_attr(item, attribute->text, args.line)
                                       : get_item(item, *attribute, args.line);
      out.push_back(x.is_undefined() && def ? *def : x);
    }
  } else {
    std::string filter = req_string(args, 0, "filter");
    for (const Value& item : iterate(v, args.line)) {
      CallArgs rest = rest_args(args, 1, filter);
      out.push_back(apply_filter(filter, item, rest));
    }
  }
  return Value::from_list(std::move(out));
}

// select / reject (test on the item) and selectattr / rejectattr (test on item.attr).
Value select_filter(const Value& v, CallArgs& args, bool keep, bool by_attr) {
  List out;
  std::string attr = by_attr ? req_string(args, 0, "attribute") : "";
  size_t test_at = by_attr ? 1 : 0;
  std::optional<std::string> test = opt_string(args, test_at, "test");
  for (const Value& item : iterate(v, args.line)) {
    Value subject = by_attr ? get_attr(item, attr, args.line) : item;
    bool ok = truthy(subject);
    if (test) {
      CallArgs rest = rest_args(args, test_at + 1, *test);
      ok = apply_test(*test, subject, rest);
    }
    if (ok == keep) out.push_back(item);
  }
  return Value::from_list(std::move(out));
}

using FilterFn = Value (*)(const Value&, CallArgs&);

struct FilterEntry {
  std::string_view name;
  FilterFn fn;
};

Value length_filter(const Value& v, CallArgs& a) {
  a.check(0, {});
  switch (v.kind) {
    case Kind::Undefined:
      return Value::from_int(0);
    case Kind::String:
      return Value::from_int(static_cast<int64_t>(code_point_count(v.text)));
    case Kind::List:
      return Value::from_int(static_cast<int64_t>(v.list->size()));
    case Kind::Dict:
      return Value::from_int(static_cast<int64_t>(v.dict->entries.size()));
    default:
      fail("line {}: object of type '{}' has no len()", a.line, kind_name(v.kind));
  }
}

const FilterEntry kFilters[] = {
    {"length", length_filter},
    {"count", length_filter},
    {"trim",
     [](const Value& v, CallArgs& a) {
       a.check(1, {"chars"});
       return Value::from_string(python_strip(to_str(v), opt_string(a, 0, "chars"), true, true));
     }},
    {"tojson",
     [](const Value& v, CallArgs& a) {
       a.check(0, {"ensure_ascii", "indent", "separators", "sort_keys"});
       if (a.get(kKeywordOnly, "separators") || opt_bool(a, kKeywordOnly, "ensure_ascii", false)) {
         unsupported(a.line, "tojson(separators=...) / tojson(ensure_ascii=true)");
       }
       std::optional<Value> indent = a.get(kKeywordOnly, "indent");
       std::optional<int> ind;
       if (indent && !indent->is_none()) ind = static_cast<int>(opt_int(a, kKeywordOnly, "indent", 0));
       return Value::from_string(to_json(v, ind, opt_bool(a, kKeywordOnly, "sort_keys", false)));
     }},
    {"string",
     [](const Value& v, CallArgs& a) {
       a.check(0, {});
       return Value::from_string(to_str(v));
     }},
    {"safe",
     [](const Value& v, CallArgs& a) {
       a.check(0, {});
       return v;
     }},
    {"lower",
     [](const Value& v, CallArgs& a) {
       a.check(0, {});
       return Value::from_string(ascii_map(to_str(v), [](int c) { return std::tolower(c); }));
     }},
    {"upper",
     [](const Value& v, CallArgs& a) {
       a.check(0, {});
       return Value::from_string(ascii_map(to_str(v), [](int c) { return std::toupper(c); }));
     }},
    {"capitalize",
     [](const Value& v, CallArgs& a) {
       a.check(0, {});
       return Value::from_string(capitalize(to_str(v)));
     }},
    {"default",
     [](const Value& v, CallArgs& a) {
       a.check(2, {"default_value", "boolean"});
       std::optional<Value> def = a.get(0, "default_value");
       bool use_default = v.is_undefined() || (opt_bool(a, 1, "boolean", false) && !truthy(v));
       return use_default ? (def ? *def : Value::from_string("")) : v;
     }},
    {"first",
     [](const Value& v, CallArgs& a) {
       a.check(0, {});
       return first_or_last(v, true, a.line);
     }},
    {"last",
     [](const Value& v, CallArgs& a) {
       a.check(0, {});
       return first_or_last(v, false, a.line);
     }},
    {"list",
     [](const Value& v, CallArgs& a) {
       a.check(0, {});
       return Value::from_list(iterate(v, a.line));
     }},
    {"items",
     [](const Value& v, CallArgs& a) {
       a.check(0, {});
       if (v.is_undefined()) return Value::from_list({});
       if (!v.is_dict()) fail("line {}: items: expected a mapping, found {}", a.line, kind_name(v.kind));
       CallArgs none;
       none.line = a.line;
       return dict_method(*v.dict, "items", none);
     }},
    {"join",
     [](const Value& v, CallArgs& a) {
       a.check(2, {"d", "attribute"});
       std::string sep = opt_string(a, 0, "d").value_or("");
       std::optional<std::string> attr = opt_string(a, 1, "attribute");
       std::string out;
       bool first = true;
       for (const Value& item : iterate(v, a.line)) {
         if (!first) out += sep;
         out += to_str(attr ? get_attr(item, *attr, a.line) : item);
         first = false;
       }
       return Value::from_string(std::move(out));
     }},
    {"replace",
     [](const Value& v, CallArgs& a) {
       a.check(3, {"old", "new", "count"});
       return Value::from_string(replace_all(to_str(v), req_string(a, 0, "old"), req_string(a, 1, "new"),
                                             opt_int(a, 2, "count", -1)));
     }},
    {"reverse",
     [](const Value& v, CallArgs& a) {
       a.check(0, {});
       Value none = Value::none();
       Value back = Value::from_int(-1);
       return get_slice(v, none, none, back, a.line);
     }},
    {"int",
     [](const Value& v, CallArgs& a) {
       a.check(2, {"default", "base"});
       int64_t def = opt_int(a, 0, "default", 0);
       if (v.kind == Kind::Int || v.kind == Kind::Bool)
         return Value::from_int(v.kind == Kind::Int ? v.integer : v.boolean);
       if (v.kind == Kind::Float) return Value::from_int(static_cast<int64_t>(v.number));
       if (v.is_string()) {
         std::string t = python_strip(v.text, std::nullopt, true, true);
         char* end = nullptr;
         long long i = std::strtoll(t.c_str(), &end, static_cast<int>(opt_int(a, 1, "base", 10)));
         if (!t.empty() && *end == '\0') return Value::from_int(i);
         double d = std::strtod(t.c_str(), &end);
         if (!t.empty() && *end == '\0' && std::isfinite(d)) return Value::from_int(static_cast<int64_t>(d));
       }
       return Value::from_int(def);
     }},
    {"float",
     [](const Value& v, CallArgs& a) {
       a.check(1, {"default"});
       if (v.is_number())
         return Value::from_float(v.kind == Kind::Float ? v.number
                                  : v.kind == Kind::Int ? v.integer
                                                        : v.boolean);
       if (v.is_string()) {
         std::string t = python_strip(v.text, std::nullopt, true, true);
         char* end = nullptr;
         double d = std::strtod(t.c_str(), &end);
         if (!t.empty() && *end == '\0') return Value::from_float(d);
       }
       std::optional<Value> def = a.get(0, "default");
       return def ? *def : Value::from_float(0.0);
     }},
    {"abs",
     [](const Value& v, CallArgs& a) {
       a.check(0, {});
       if (v.kind == Kind::Float) return Value::from_float(std::fabs(v.number));
       if (v.kind == Kind::Int || v.kind == Kind::Bool)
         return Value::from_int(std::llabs(v.kind == Kind::Int ? v.integer : v.boolean));
       fail("line {}: bad operand type for abs(): '{}'", a.line, kind_name(v.kind));
     }},
    {"map", map_filter},
    {"select", [](const Value& v, CallArgs& a) { return select_filter(v, a, true, false); }},
    {"reject", [](const Value& v, CallArgs& a) { return select_filter(v, a, false, false); }},
    {"selectattr", [](const Value& v, CallArgs& a) { return select_filter(v, a, true, true); }},
    {"rejectattr", [](const Value& v, CallArgs& a) { return select_filter(v, a, false, true); }},
};

const FilterEntry* find_filter(std::string_view name) {
  if (name == "d") name = "default";
  for (const FilterEntry& f : kFilters) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

// ---- tests ----

using TestFn = bool (*)(const Value&, CallArgs&);

struct TestEntry {
  std::string_view name;
  TestFn fn;
};

Value arg0(const CallArgs& a) {
  std::optional<Value> v = a.get(0, "other");
  if (!v) fail("line {}: test '{}' needs an argument", a.line, a.callee);
  return *v;
}

bool is_int(const Value& v) { return v.kind == Kind::Int; }

const TestEntry kTests[] = {
    {"defined", [](const Value& v, CallArgs&) { return !v.is_undefined(); }},
    {"undefined", [](const Value& v, CallArgs&) { return v.is_undefined(); }},
    {"none", [](const Value& v, CallArgs&) { return v.is_none(); }},
    {"boolean", [](const Value& v, CallArgs&) { return v.kind == Kind::Bool; }},
    {"true", [](const Value& v, CallArgs&) { return v.kind == Kind::Bool && v.boolean; }},
    {"false", [](const Value& v, CallArgs&) { return v.kind == Kind::Bool && !v.boolean; }},
    {"integer", [](const Value& v, CallArgs&) { return is_int(v); }},
    {"float", [](const Value& v, CallArgs&) { return v.kind == Kind::Float; }},
    {"number", [](const Value& v, CallArgs&) { return v.is_number(); }},
    {"string", [](const Value& v, CallArgs&) { return v.is_string(); }},
    {"mapping", [](const Value& v, CallArgs&) { return v.is_dict(); }},
    {"iterable", [](const Value& v,
                    CallArgs&) { return v.is_undefined() || v.is_list() || v.is_dict() || v.is_string(); }},
    {"sequence", [](const Value& v, CallArgs&) { return v.is_list() || v.is_dict() || v.is_string(); }},
    {"callable", [](const Value& v, CallArgs&) { return v.kind == Kind::Function; }},
    {"even", [](const Value& v, CallArgs&) { return is_int(v) && v.integer % 2 == 0; }},
    {"odd", [](const Value& v, CallArgs&) { return is_int(v) && v.integer % 2 != 0; }},
    {"divisibleby",
     [](const Value& v, CallArgs& a) {
       Value d = arg0(a);
       return is_int(v) && is_int(d) && d.integer != 0 && v.integer % d.integer == 0;
     }},
    {"lower",
     [](const Value& v, CallArgs&) {
       return v.is_string() && ascii_map(v.text, [](int c) { return std::tolower(c); }) == v.text;
     }},
    {"upper",
     [](const Value& v, CallArgs&) {
       return v.is_string() && ascii_map(v.text, [](int c) { return std::toupper(c); }) == v.text;
     }},
    {"sameas",
     [](const Value& v, CallArgs& a) {
       // Python `is`: identity for shared objects, value for None / booleans / small values.
       Value o = arg0(a);
       if (v.kind != o.kind) return false;
       if (v.is_list()) return v.list == o.list;
       if (v.is_dict() || v.kind == Kind::Namespace) return v.dict == o.dict;
       return equals(v, o);
     }},
    {"eq", [](const Value& v, CallArgs& a) { return equals(v, arg0(a)); }},
    {"ne", [](const Value& v, CallArgs& a) { return !equals(v, arg0(a)); }},
    {"lt", [](const Value& v, CallArgs& a) { return less_than(v, arg0(a), a.line); }},
    {"gt", [](const Value& v, CallArgs& a) { return less_than(arg0(a), v, a.line); }},
    {"le", [](const Value& v, CallArgs& a) { return !less_than(arg0(a), v, a.line); }},
    {"ge", [](const Value& v, CallArgs& a) { return !less_than(v, arg0(a), a.line); }},
    {"in", [](const Value& v, CallArgs& a) { return contains(arg0(a), v, a.line); }},
};

std::string_view test_alias(std::string_view name) {
  if (name == "==" || name == "equalto") return "eq";
  if (name == "!=") return "ne";
  if (name == "<" || name == "lessthan") return "lt";
  if (name == ">" || name == "greaterthan") return "gt";
  if (name == "<=") return "le";
  if (name == ">=") return "ge";
  return name;
}

const TestEntry* find_test(std::string_view name) {
  name = test_alias(name);
  for (const TestEntry& t : kTests) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

}  // namespace

bool is_known_filter(const std::string& name) { return find_filter(name) != nullptr; }
bool is_known_test(const std::string& name) { return find_test(name) != nullptr; }

Value apply_filter(const std::string& name, const Value& v, CallArgs& args) {
  const FilterEntry* f = find_filter(name);
  if (!f) unsupported(args.line, fmt::format("the filter '{}'", name));
  args.callee = name;
  return f->fn(v, args);
}

bool apply_test(const std::string& name, const Value& v, CallArgs& args) {
  const TestEntry* t = find_test(name);
  if (!t) unsupported(args.line, fmt::format("the test '{}'", name));
  args.callee = name;
  return t->fn(v, args);
}

Value call_method(const Value& obj, const std::string& name, CallArgs& args) {
  args.callee = name;
  if (obj.is_undefined()) fail_undefined(obj, args.line);
  if (obj.is_string()) return string_method(obj.text, name, args);
  if (obj.is_dict()) return dict_method(*obj.dict, name, args);
  unsupported(args.line, fmt::format("the {} method '{}()'", kind_name(obj.kind), name));
}

}  // namespace nibble::jinja
