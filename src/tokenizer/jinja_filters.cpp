// Filters and tests from jinja2's defaults, plus transformers' tojson (which keeps non-ASCII
// text as is).
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>

#include "core/error.h"
#include "tokenizer/jinja_ast.h"
#include "tokenizer/jinja_ops.h"

namespace nibble::jinja {
namespace {

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

// ---- filters ----

Value first_or_last(const Value& v, bool first, int line) {
  std::vector<Value> items = iterate(v, line);
  if (items.empty()) return Value::undefined("no first/last item of an empty sequence");
  return first ? items.front() : items.back();
}

Value map_filter(const Value& v, CallArgs& args) {
  List out;
  std::optional<Value> attribute = args.get(CallArgs::kKeywordOnly, "attribute");
  if (attribute) {
    args.check(0, {"attribute", "default"});
    std::optional<Value> def = args.get(CallArgs::kKeywordOnly, "default");
    for (const Value& item : iterate(v, args.line)) {
      Value x = attribute->is_string() ? get_attr(item, attribute->text, args.line)
                                       : get_item(item, *attribute, args.line);
      out.push_back(x.is_undefined() && def ? *def : x);
    }
  } else {
    std::string filter = args.req_string(0, "filter");
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
  std::string attr = by_attr ? args.req_string(0, "attribute") : "";
  size_t test_at = by_attr ? 1 : 0;
  std::optional<std::string> test = args.opt_string(test_at, "test");
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
       return Value::from_string(python_strip(to_str(v), a.opt_string(0, "chars"), true, true));
     }},
    {"tojson",
     [](const Value& v, CallArgs& a) {
       a.check(0, {"ensure_ascii", "indent", "separators", "sort_keys"});
       if (a.get(CallArgs::kKeywordOnly, "separators") ||
           a.opt_bool(CallArgs::kKeywordOnly, "ensure_ascii", false)) {
         unsupported(a.line, "tojson(separators=...) / tojson(ensure_ascii=true)");
       }
       std::optional<Value> indent = a.get(CallArgs::kKeywordOnly, "indent");
       std::optional<int> ind;
       if (indent && !indent->is_none())
         ind = static_cast<int>(a.opt_int(CallArgs::kKeywordOnly, "indent", 0));
       return Value::from_string(to_json(v, ind, a.opt_bool(CallArgs::kKeywordOnly, "sort_keys", false)));
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
       return Value::from_string(ascii_lower(to_str(v)));
     }},
    {"upper",
     [](const Value& v, CallArgs& a) {
       a.check(0, {});
       return Value::from_string(ascii_upper(to_str(v)));
     }},
    {"capitalize",
     [](const Value& v, CallArgs& a) {
       a.check(0, {});
       return Value::from_string(python_capitalize(to_str(v)));
     }},
    {"default",
     [](const Value& v, CallArgs& a) {
       a.check(2, {"default_value", "boolean"});
       std::optional<Value> def = a.get(0, "default_value");
       bool use_default = v.is_undefined() || (a.opt_bool(1, "boolean", false) && !truthy(v));
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
       return dict_items(*v.dict);
     }},
    {"join",
     [](const Value& v, CallArgs& a) {
       a.check(2, {"d", "attribute"});
       std::string sep = a.opt_string(0, "d").value_or("");
       std::optional<std::string> attr = a.opt_string(1, "attribute");
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
       return Value::from_string(python_replace(to_str(v), a.req_string(0, "old"), a.req_string(1, "new"),
                                                a.opt_int(2, "count", -1)));
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
       int64_t def = a.opt_int(0, "default", 0);
       if (v.kind == Kind::Int || v.kind == Kind::Bool)
         return Value::from_int(v.kind == Kind::Int ? v.integer : v.boolean);
       if (v.kind == Kind::Float) return Value::from_int(static_cast<int64_t>(v.number));
       if (v.is_string()) {
         std::string t = python_strip(v.text, std::nullopt, true, true);
         char* end = nullptr;
         long long i = std::strtoll(t.c_str(), &end, static_cast<int>(a.opt_int(1, "base", 10)));
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
    {"lower", [](const Value& v, CallArgs&) { return v.is_string() && ascii_lower(v.text) == v.text; }},
    {"upper", [](const Value& v, CallArgs&) { return v.is_string() && ascii_upper(v.text) == v.text; }},
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

}  // namespace nibble::jinja
