// defines: the operations of the Jinja2-subset interpreter on values: attribute and item lookup,
// slices, iteration, arithmetic and `in` (jinja_ops.cpp); filters, tests and the str / dict
// methods templates call (jinja_filters.cpp). Semantics are Python's and jinja2's sandboxed
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
// obj.name(args) for str, dict and list objects; throws Error for unknown methods.
Value call_method(const Value& obj, const std::string& name, CallArgs& args);

}  // namespace nibble::jinja
