#include "tokenizer/pretokenize.h"

#include "core/error.h"

namespace nibble {
namespace {

using unicode::CharClass;
using Char = PretokenizeScratch::Char;

bool is_crlf(char32_t c) { return c == '\r' || c == '\n'; }

// Simple case folding of the contraction letters. U+017F LATIN SMALL LETTER LONG S folds to 's'
// in Unicode CaseFolding.txt, so Oniguruma's (?i:'s) matches "'\u017F" too.
char32_t fold(char32_t c) {
  if (c >= 'A' && c <= 'Z') return c + ('a' - 'A');
  if (c == 0x17F) return 's';
  return c;
}

// Length in characters of the match of the regex starting at chars[i] (always >= 1).
size_t match_at(const std::vector<Char>& ch, size_t i) {
  const size_t n = ch.size();
  auto cls = [&](size_t k) { return ch[k].cls(); };
  auto letter = [&](size_t k) { return k < n && cls(k) == CharClass::Letter; };
  auto other = [&](size_t k) { return k < n && cls(k) == CharClass::Other; };  // [^\s\p{L}\p{N}]

  // (?i:'s|'t|'re|'ve|'m|'ll|'d)
  if (ch[i].cp() == '\'' && i + 1 < n) {
    const char32_t a = fold(ch[i + 1].cp());
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (i + 2 < n) {
      const char32_t b = fold(ch[i + 2].cp());
      if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    }
  }
  // [^\r\n\p{L}\p{N}]?\p{L}+ : the optional prefix is tried first, then the bare letters.
  {
    size_t j = i;
    if (!letter(j) && cls(j) != CharClass::Number && !is_crlf(ch[j].cp()) && letter(j + 1)) ++j;
    if (letter(j)) {
      while (letter(j)) ++j;
      return j - i;
    }
  }
  // \p{N}
  if (cls(i) == CharClass::Number) return 1;
  // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
  {
    size_t j = i;
    if (ch[j].cp() == ' ' && other(j + 1)) ++j;
    if (other(j)) {
      while (other(j)) ++j;
      while (j < n && is_crlf(ch[j].cp())) ++j;
      return j - i;
    }
  }
  // What is left starts with whitespace: the character is not a letter, number or other.
  size_t end = i;
  size_t last_crlf = n;
  while (end < n && cls(end) == CharClass::Space) {
    if (is_crlf(ch[end].cp())) last_crlf = end;
    ++end;
  }
  // \s*[\r\n]+ : \s* backs off to the last CR/LF of the whitespace run.
  if (last_crlf != n) return last_crlf + 1 - i;
  // \s+(?!\S) : the whole run at the end of the text, else the run minus its last character.
  if (end == n || end - i >= 2) return end == n ? end - i : end - i - 1;
  // \s+
  return end - i;
}

}  // namespace

void split_qwen(std::string_view text, PretokenizeScratch& scratch, std::vector<std::string_view>& pieces) {
  if (text.size() > UINT32_MAX)
    fail("cannot pre-tokenize {} bytes of text without an added token: at most 4 GiB", text.size());
  auto& chars = scratch.chars;
  chars.clear();
  chars.reserve(text.size());  // at most one character per byte
  for (size_t pos = 0; pos < text.size();) {
    const auto b = static_cast<uint8_t>(text[pos]);
    if (b < 0x80) {  // ASCII fast path
      chars.push_back({b | uint32_t(unicode::char_class(b)) << 24, uint32_t(pos)});
      ++pos;
      continue;
    }
    size_t len;
    const char32_t cp = unicode::decode_utf8(text, pos, len);
    chars.push_back({uint32_t(cp) | uint32_t(unicode::char_class(cp)) << 24, uint32_t(pos)});
    pos += len;
  }
  for (size_t i = 0; i < chars.size();) {
    const size_t k = match_at(chars, i);
    const size_t begin = chars[i].offset;
    const size_t end = i + k < chars.size() ? chars[i + k].offset : text.size();
    pieces.push_back(text.substr(begin, end - begin));
    i += k;
  }
}

}  // namespace nibble
