// The Python str and dict methods chat templates call (content.split('</think>'),
// message.get('tool_calls'), ...), and the str helpers the filters share with them.
#include <algorithm>
#include <cctype>

#include "core/error.h"
#include "tokenizer/jinja_ast.h"
#include "tokenizer/jinja_ops.h"

namespace nibble::jinja {

std::string ascii_lower(std::string s) {
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 0x80)
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return s;
}

std::string ascii_upper(std::string s) {
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 0x80)
      c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return s;
}

std::string python_capitalize(const std::string& s) {
  std::string out = ascii_lower(s);
  if (!out.empty() && static_cast<unsigned char>(out[0]) < 0x80)
    out[0] = static_cast<char>(std::toupper(out[0]));
  return out;
}

namespace {

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
        python_strip(s, args.opt_string(0, "chars"), name != "rstrip", name != "lstrip"));
  }
  if (name == "split" || name == "rsplit") {
    args.check(2, {"sep", "maxsplit"});
    return Value::from_list(
        python_split(s, args.opt_string(0, "sep"), args.opt_int(1, "maxsplit", -1), name == "rsplit", line));
  }
  if (name == "replace") {
    args.check(3, {"count"});
    return Value::from_string(
        replace_all(s, args.req_string(0, "old"), args.req_string(1, "new"), args.opt_int(2, "count", -1)));
  }
  if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
    args.check(0, {});
    if (name == "upper") return Value::from_string(ascii_upper(s));
    if (name == "lower") return Value::from_string(ascii_lower(s));
    return Value::from_string(name == "title" ? python_title(s) : python_capitalize(s));
  }
  if (name == "find" || name == "count") {
    args.check(1, {});
    std::string sub = args.req_string(0, "sub");
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
    const Value* v = d.find(args.req_string(0, "key"));
    if (v) return *v;
    std::optional<Value> def = args.get(1, "default");
    return def ? *def : Value::none();
  }
  unsupported(args.line, fmt::format("the dict method '{}()'", name));
}

}  // namespace

std::string python_replace(const std::string& s, const std::string& from, const std::string& to,
                           int64_t count) {
  return replace_all(s, from, to, count);
}

Value dict_items(const Dict& d) {
  CallArgs none;
  return dict_method(d, "items", none);
}

Value call_method(const Value& obj, const std::string& name, CallArgs& args) {
  args.callee = name;
  if (obj.is_undefined()) fail_undefined(obj, args.line);
  if (obj.is_string()) return string_method(obj.text, name, args);
  if (obj.is_dict()) return dict_method(*obj.dict, name, args);
  unsupported(args.line, fmt::format("the {} method '{}()'", kind_name(obj.kind), name));
}

}  // namespace nibble::jinja
