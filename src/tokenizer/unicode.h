// defines: the Unicode pieces the tokenizer needs: UTF-8 decoding that survives invalid bytes,
// the character classes of the pre-tokenizer regex (\p{L}, \p{N}, \s), canonical combining
// class, NFC normalization, and lossy UTF-8 repair (invalid bytes -> U+FFFD).
//
// Invalid UTF-8 is never rejected: each byte that does not start a valid sequence decodes to a
// pseudo code point kRawByteBase + byte, which has class Other, is left alone by NFC and is
// written back as the same byte. So encode/decode round-trip any byte string.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace nibble::unicode {

inline constexpr char32_t kRawByteBase = 0x110000;  // beyond the last Unicode code point

// Classes of the Qwen pre-tokenizer regex. Space is Oniguruma's \s: U+0009..U+000D, U+0085 and
// general categories Zs, Zl, Zp (identical to the White_Space property in Unicode 15).
enum class CharClass : uint8_t { Other = 0, Letter = 1, Number = 2, Space = 3 };

CharClass char_class(char32_t cp);
uint8_t combining_class(char32_t cp);

// Decodes the character at s[pos] (pos < s.size()); sets `len` to the bytes it takes. Overlong
// forms, surrogates, code points above U+10FFFF and truncated sequences give
// kRawByteBase + s[pos] with len 1.
char32_t decode_utf8(std::string_view s, size_t pos, size_t& len);
// Appends the UTF-8 of cp (or the raw byte for kRawByteBase + b).
void append_utf8(std::string& out, char32_t cp);

// True when s is certainly NFC already (the NFC_Quick_Check fast path of UAX #15).
bool is_nfc_quick(std::string_view s);
// Canonical decomposition, canonical ordering, canonical composition (UAX #15).
std::string nfc(std::string_view s);

// Where a trailing incomplete (but so far valid) UTF-8 sequence starts, or s.size() when s does
// not end in one. The stream decoder emits s[0, p) and holds back the rest; p is always a point
// where utf8_lossy restarts, so lossy(s[0,p)) + lossy(s[p,)) == lossy(s).
size_t utf8_complete_prefix(std::string_view s);
// Replaces each maximal invalid subsequence with U+FFFD, as Rust's String::from_utf8_lossy and
// Python's errors="replace" do (Unicode "substitution of maximal subparts").
std::string utf8_lossy(std::string_view s);

}  // namespace nibble::unicode
