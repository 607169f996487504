// defines: jinja::Token and lex(), which turns template source into a flat token stream: text
// (with Jinja2's whitespace control already applied) and the tokens inside {{ }} and {% %} tags.
//
// Whitespace follows jinja2's lexer with the settings transformers uses for chat templates
// (trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False):
//  - newlines in the source become "\n"; one trailing newline of the source is dropped;
//  - `{%-` `{{-` `{#-` strip all whitespace before the tag, `-%}` `-}}` `-#}` all whitespace after;
//  - trim_blocks: the first newline after `%}` or `#}` (not `}}`) is removed; `+%}` keeps it;
//  - lstrip_blocks: spaces and tabs between a line start and `{%` / `{#` are removed; `{%+` keeps them.
// Comments are dropped; {% raw %}...{% endraw %} becomes text.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace nibble::jinja {

enum class Tok {
  Text,        // literal template text
  VarBegin,    // {{
  VarEnd,      // }}
  BlockBegin,  // {%
  BlockEnd,    // %}
  Name,        // identifier (keywords too: if, for, in, not, true, ...)
  String,      // string literal, escapes decoded
  Int,
  Float,
  Op,   // operator or punctuation: + - * / // % ** ~ == != < <= > >= = . , : | ( ) [ ] { }
  End,  // end of the source
};

struct Token {
  Tok kind = Tok::End;
  std::string text;  // Text / Name / String / Op: the text or value
  int64_t integer = 0;
  double number = 0.0;
  int line = 1;  // 1-based line in the source where the token starts
};

// Throws Error (with the line) on an unterminated tag, comment or string, or a stray character.
std::vector<Token> lex(std::string_view source);

}  // namespace nibble::jinja
