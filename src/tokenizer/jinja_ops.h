// defines: the operations of the Jinja2-subset interpreter on values: attribute and item lookup,
// slices, iteration, arithmetic and `in` (jinja_ops.cpp); filters and tests (jinja_filters.cpp);
// the str / dict methods templates call (jinja_methods.cpp). Semantics are Python's and jinja2's sandboxed
// environment's (the one HF renders chat templates with); `line` goes into error messages.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "tokenizer/jinja_value.h"

namespace nibble::jinja {

// An Undefined value's text is the message an operation on it fails with.
[[noreturn]] void fail_undefined(const Value& undefined, int line);

Value get_attr(const Value& obj, const std::string& name, int line);  // obj.name
Value get_item(const Value& obj, const Value& key, int line);         // obj[key]
Value get_slice(const Value& obj, const Value& start, const Value& stop, const Value& step, int line);
std::vector<Value> iterate(const Value& v, int line);                              // what `for x in v` visits
Value binary_op(const std::string& op, const Value& a, const Value& b, int line);  // + - * / // % **
bool contains(const Value& container, const Value& item, int line);                // item in container

bool is_known_filter(const std::string& name);
bool is_known_test(const std::string& name);
Value apply_filter(const std::string& name, const Value& v, CallArgs& args);
bool apply_test(const std::string& name, const Value& v, CallArgs& args);
// obj.name(args) for str and dict objects; an unknown method is an unsupported-construct Error.
Value call_method(const Value& obj, const std::string& name, CallArgs& args);

// Python str behaviour shared by methods and filters (case mapping is ASCII-only).
std::string ascii_lower(std::string s);
std::string ascii_upper(std::string s);
std::string python_capitalize(const std::string& s);
std::string python_replace(const std::string& s, const std::string& from, const std::string& to,
                           int64_t count);
Value dict_items(const Dict& d);  // d.items() as a list of [key, value] lists

}  // namespace nibble::jinja
