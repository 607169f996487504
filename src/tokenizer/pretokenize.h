// defines: split_qwen(), the Qwen2/Qwen3 pre-tokenizer: HF's Split pre-tokenizer (behavior
// Isolated) with the regex
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//   \s*[\r\n]+|\s+(?!\S)|\s+
// written as a hand matcher over code points with the leftmost-first, backtracking semantics of
// Oniguruma (the engine HF tokenizers uses). Every character matches some alternative, so the
// pieces cover the text with no gaps.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "tokenizer/unicode.h"

namespace nibble {

// The exact pattern string found in Qwen2/Qwen3 tokenizer.json files; load checks against it.
inline constexpr std::string_view kQwenSplitPattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// Reusable buffers, so that splitting many segments does not allocate.
struct PretokenizeScratch {
  // One decoded character: 8 bytes, so that a 1 MB text needs a small array.
  struct Char {
    uint32_t cp_class;  // code point (< 2^21, or a raw-byte pseudo code point) | class << 24
    uint32_t offset;    // byte offset of the character in the segment
    char32_t cp() const { return cp_class & 0xFFFFFF; }
    unicode::CharClass cls() const { return unicode::CharClass(cp_class >> 24); }
  };
  std::vector<Char> chars;
};

// Appends the pieces of `text` (views into it, in order, covering it exactly) to `pieces`.
// Throws Error for a segment of 4 GiB or more (offsets are 32-bit).
void split_qwen(std::string_view text, PretokenizeScratch& scratch, std::vector<std::string_view>& pieces);

}  // namespace nibble
