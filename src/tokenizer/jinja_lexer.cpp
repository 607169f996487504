#include "tokenizer/jinja_lexer.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>

#include "core/error.h"
#include "tokenizer/jinja_value.h"

namespace nibble::jinja {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// jinja2 decodes string literals with Python's "unicode-escape" codec.
std::string decode_escapes(std::string_view s, int line) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out += s[i];
      continue;
    }
    char c = s[++i];
    switch (c) {
      case '\n':
        break;  // line continuation
      case '\\':
        out += '\\';
        break;
      case '\'':
        out += '\'';
        break;
      case '"':
        out += '"';
        break;
      case 'a':
        out += '\a';
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
      case 'v':
        out += '\v';
        break;
      case 'x':
      case 'u':
      case 'U': {
        size_t digits = c == 'x' ? 2 : c == 'u' ? 4 : 8;
        uint32_t cp = 0;
        for (size_t k = 0; k < digits; ++k) {
          int h = i + 1 + k < s.size() ? hex_value(s[i + 1 + k]) : -1;
          if (h < 0) fail("line {}: truncated \\{} escape in a string literal", line, c);
          cp = cp * 16 + static_cast<uint32_t>(h);
        }
        if (cp > 0x10ffff) fail("line {}: \\{} escape out of range in a string literal", line, c);
        append_utf8(out, cp);
        i += digits;
        break;
      }
      default:
        if (c >= '0' && c <= '7') {
          uint32_t cp = 0;
          size_t k = 0;
          for (; k < 3 && i + k < s.size() && s[i + k] >= '0' && s[i + k] <= '7'; ++k)
            cp = cp * 8 + (s[i + k] - '0');
          append_utf8(out, cp);
          i += k - 1;
        } else {
          // Python keeps unknown escapes as written.
          out += '\\';
          out += c;
        }
    }
  }
  return out;
}

class Lexer {
 public:
  explicit Lexer(std::string_view source) {
    // jinja2 normalises \r\n and \r to \n, and (keep_trailing_newline=False) drops one final \n.
    for (size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
        src_ += '\n';
      } else {
        src_ += source[i];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
    for (size_t i = 0; i < src_.size(); ++i) {
      if (src_[i] == '\n') newlines_.push_back(i);
    }
  }

  std::vector<Token> run() {
    while (pos_ < src_.size()) {
      if (!root_step()) break;
    }
    push(Tok::End, src_.size());
    return std::move(out_);
  }

 private:
  int line_at(size_t pos) const {
    return 1 +
           static_cast<int>(std::lower_bound(newlines_.begin(), newlines_.end(), pos) - newlines_.begin());
  }

  Token& push(Tok kind, size_t at, std::string text = "") {
    Token t;
    t.kind = kind;
    t.text = std::move(text);
    t.line = line_at(at);
    out_.push_back(std::move(t));
    return out_.back();
  }

  bool starts_with(size_t at, std::string_view s) const { return src_.compare(at, s.size(), s) == 0; }

  size_t skip_space(size_t at) const {
    while (at < src_.size()) {
      size_t len = 0;
      if (!is_python_space(decode_code_point(src_, at, &len))) break;
      at += len;
    }
    return at;
  }

  // The text before a tag, after the tag's whitespace control (jinja2's OptionalLStrip).
  void emit_text(size_t begin, size_t end, char sign, bool is_variable) {
    std::string_view text(src_.data() + begin, end - begin);
    if (sign == '-') {
      text = text.substr(0, python_strip(text, std::nullopt, false, true).size());
    } else if (sign != '+' && !is_variable) {
      size_t nl = text.rfind('\n');
      size_t l_pos = nl == std::string_view::npos ? 0 : nl + 1;
      if ((l_pos > 0 || line_starting_) && text.find_first_not_of(" \t", l_pos) == std::string_view::npos) {
        text = text.substr(0, l_pos);
      }
    }
    if (!text.empty()) push(Tok::Text, begin, std::string(text));
  }

  // After a tag end at `end`: the next text starts a line when the tag consumed a newline.
  void finish_tag(size_t end) {
    line_starting_ = end > 0 && src_[end - 1] == '\n';
    pos_ = end;
  }

  // Block/comment end with trim_blocks: `+X}` keeps what follows, `-X}` strips whitespace,
  // `X}` drops one newline. Returns the position after it, or npos when `at` is not an end.
  size_t match_block_end(size_t at, char x) const {
    const std::string close{x, '}'};
    if (starts_with(at, "+" + close)) return at + 3;
    if (starts_with(at, "-" + close)) return skip_space(at + 3);
    if (starts_with(at, close)) return at + 2 + (at + 2 < src_.size() && src_[at + 2] == '\n' ? 1 : 0);
    return std::string::npos;
  }

  // `{%[-+]? raw [-]?%}` at `at` (jinja2 applies no trim_blocks here); npos when it is not one.
  size_t match_raw_begin(size_t at) const {
    size_t i = at + 2;
    if (i < src_.size() && (src_[i] == '-' || src_[i] == '+')) ++i;
    i = skip_space(i);
    if (!starts_with(i, "raw")) return std::string::npos;
    i = skip_space(i + 3);
    if (starts_with(i, "-%}")) return skip_space(i + 3);
    if (starts_with(i, "%}")) return i + 2;
    return std::string::npos;
  }

  bool root_step() {
    size_t p = pos_;
    while (true) {
      p = src_.find('{', p);
      if (p == std::string::npos || p + 1 >= src_.size()) {
        push(Tok::Text, pos_, src_.substr(pos_));
        pos_ = src_.size();
        return false;
      }
      char k = src_[p + 1];
      if (k == '{' || k == '%' || k == '#') break;
      ++p;
    }
    const char kind = src_[p + 1];
    size_t after = p + 2;
    char sign = 0;
    if (after < src_.size() && (src_[after] == '-' || src_[after] == '+')) sign = src_[after++];
    emit_text(pos_, p, sign, kind == '{');
    line_starting_ = false;
    const int line = line_at(p);

    if (kind == '#') {
      for (size_t q = after; q < src_.size(); ++q) {
        size_t end = match_block_end(q, '#');
        if (end != std::string::npos) {
          finish_tag(end);
          return true;
        }
      }
      fail("line {}: missing end of comment tag '#}}'", line);
    }
    if (kind == '%') {
      size_t raw_end = match_raw_begin(p);
      if (raw_end != std::string::npos) {
        finish_tag(raw_end);
        lex_raw(line);
        return true;
      }
    }
    push(kind == '%' ? Tok::BlockBegin : Tok::VarBegin, p);
    pos_ = after;
    lex_tag(kind == '%', line);
    return true;
  }

  void lex_raw(int line) {
    for (size_t q = pos_; q + 1 < src_.size(); ++q) {
      if (src_[q] != '{' || src_[q + 1] != '%') continue;
      size_t i = q + 2;
      char sign = 0;
      if (i < src_.size() && (src_[i] == '-' || src_[i] == '+')) sign = src_[i++];
      i = skip_space(i);
      if (!starts_with(i, "endraw")) continue;
      size_t end = match_block_end(skip_space(i + 6), '%');
      if (end == std::string::npos) continue;
      emit_text(pos_, q, sign, false);
      finish_tag(end);
      return;
    }
    fail("line {}: missing '{{% endraw %}}' for this raw block", line);
  }

  void lex_tag(bool block, int begin_line) {
    std::string brackets;  // open ( [ { : a tag end only counts where they are balanced
    while (true) {
      if (pos_ >= src_.size()) {
        fail("line {}: unterminated '{}' tag: expected '{}'", begin_line, block ? "{%" : "{{",
             block ? "%}" : "}}");
      }
      if (brackets.empty()) {
        size_t end = std::string::npos;
        if (block) {
          end = match_block_end(pos_, '%');
        } else if (starts_with(pos_, "-}}")) {
          end = skip_space(pos_ + 3);
        } else if (starts_with(pos_, "}}")) {
          end = pos_ + 2;
        }
        if (end != std::string::npos) {
          push(block ? Tok::BlockEnd : Tok::VarEnd, pos_);
          finish_tag(end);
          return;
        }
      }
      size_t next = skip_space(pos_);
      if (next != pos_) {
        pos_ = next;
        continue;
      }
      char c = src_[pos_];
      if (is_digit(c)) {
        lex_number();
      } else if (is_name_start(c)) {
        size_t e = pos_;
        while (e < src_.size() && is_name_char(src_[e])) ++e;
        push(Tok::Name, pos_, src_.substr(pos_, e - pos_));
        pos_ = e;
      } else if (c == '\'' || c == '"') {
        lex_string(c);
      } else {
        lex_operator(brackets);
      }
    }
  }

  size_t scan_digits(size_t at) const {  // \d+(_\d+)*
    if (at >= src_.size() || !is_digit(src_[at])) return at;
    size_t e = at;
    while (e < src_.size() &&
           (is_digit(src_[e]) || (src_[e] == '_' && e + 1 < src_.size() && is_digit(src_[e + 1]))))
      ++e;
    return e;
  }

  void lex_number() {
    size_t start = pos_;
    if (src_[start] == '0' && start + 2 < src_.size()) {  // 0x.. 0o.. 0b.. (underscores allowed)
      const char base_char = static_cast<char>(std::tolower(static_cast<unsigned char>(src_[start + 1])));
      const int base = base_char == 'x' ? 16 : base_char == 'o' ? 8 : base_char == 'b' ? 2 : 0;
      auto digit_ok = [&](char c) { return hex_value(c) >= 0 && hex_value(c) < base; };
      if (base != 0 && digit_ok(src_[start + 2])) {
        std::string digits;
        size_t e = start + 2;
        for (; e < src_.size() &&
               (digit_ok(src_[e]) || (src_[e] == '_' && e + 1 < src_.size() && digit_ok(src_[e + 1])));
             ++e) {
          if (src_[e] != '_') digits += src_[e];
        }
        Token& t = push(Tok::Int, start);
        errno = 0;
        t.integer = std::strtoll(digits.c_str(), nullptr, base);
        if (errno == ERANGE) fail("line {}: integer literal is too large", t.line);
        pos_ = e;
        return;
      }
    }
    size_t e = scan_digits(start);
    size_t f = e;
    // jinja2's float: digits then `.digits` and/or an exponent; never right after a '.', so
    // that `foo.0.1` stays two item lookups.
    bool after_dot = start > 0 && src_[start - 1] == '.';
    if (!after_dot) {
      if (f < src_.size() && src_[f] == '.' && scan_digits(f + 1) > f + 1) f = scan_digits(f + 1);
      if (f < src_.size() && (src_[f] == 'e' || src_[f] == 'E')) {
        size_t g = f + 1;
        if (g < src_.size() && (src_[g] == '+' || src_[g] == '-')) ++g;
        if (scan_digits(g) > g) f = scan_digits(g);
      }
    }
    std::string digits;
    for (size_t i = start; i < f; ++i) {
      if (src_[i] != '_') digits += src_[i];
    }
    if (f > e) {
      push(Tok::Float, start).number = std::strtod(digits.c_str(), nullptr);
    } else {
      Token& t = push(Tok::Int, start);
      errno = 0;
      t.integer = std::strtoll(digits.c_str(), nullptr, 10);
      if (errno == ERANGE) fail("line {}: integer literal {} is too large", t.line, digits);
    }
    pos_ = f;
  }

  void lex_string(char quote) {
    size_t i = pos_ + 1;
    while (i < src_.size() && src_[i] != quote) i += src_[i] == '\\' ? 2 : 1;
    if (i >= src_.size()) fail("line {}: unterminated string literal", line_at(pos_));
    int line = line_at(pos_);
    push(Tok::String, pos_, decode_escapes(std::string_view(src_).substr(pos_ + 1, i - pos_ - 1), line));
    pos_ = i + 1;
  }

  void lex_operator(std::string& brackets) {
    static constexpr std::string_view two[] = {"//", "**", "==", "!=", ">=", "<="};
    for (std::string_view op : two) {
      if (starts_with(pos_, op)) {
        push(Tok::Op, pos_, std::string(op));
        pos_ += 2;
        return;
      }
    }
    char c = src_[pos_];
    if (std::string_view("+-/*%~[](){}><=.:|,;").find(c) == std::string_view::npos) {
      size_t len = 0;
      decode_code_point(src_, pos_, &len);
      fail("line {}: unexpected character '{}' in a template tag", line_at(pos_), src_.substr(pos_, len));
    }
    if (c == '(' || c == '[' || c == '{') {
      brackets += c;
    } else if (c == ')' || c == ']' || c == '}') {
      char open = c == ')' ? '(' : c == ']' ? '[' : '{';
      if (brackets.empty() || brackets.back() != open) fail("line {}: unexpected '{}'", line_at(pos_), c);
      brackets.pop_back();
    }
    push(Tok::Op, pos_, std::string(1, c));
    ++pos_;
  }

  std::string src_;
  std::vector<size_t> newlines_;
  size_t pos_ = 0;
  bool line_starting_ = true;
  std::vector<Token> out_;
};

}  // namespace

std::vector<Token> lex(std::string_view source) { return Lexer(source).run(); }

}  // namespace nibble::jinja
