// defines: the GPT-2 byte-to-unicode map that HF's ByteLevel pre-tokenizer and decoder use.
// Printable bytes ('!'..'~', U+00A1..U+00AC, U+00AE..U+00FF) map to themselves; the other 68
// bytes map, in byte order, to U+0100, U+0101, ... So every vocabulary string is a sequence of
// these characters, one per byte ("Ġ" = U+0120 is the space byte 0x20).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "tokenizer/unicode.h"

namespace nibble::byte_level {

constexpr bool printable(int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE); }

constexpr std::array<char32_t, 256> make_byte_to_char() {
  std::array<char32_t, 256> t{};
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) t[b] = printable(b) ? char32_t(b) : next++;
  return t;
}
inline constexpr std::array<char32_t, 256> kByteToChar = make_byte_to_char();
inline constexpr char32_t kMaxChar = 256 + 68 - 1;  // the largest character in the map

constexpr std::array<int16_t, kMaxChar + 1> make_char_to_byte() {
  std::array<int16_t, kMaxChar + 1> t{};
  for (auto& v : t) v = -1;
  for (int b = 0; b < 256; ++b) t[kByteToChar[b]] = int16_t(b);
  return t;
}
inline constexpr std::array<int16_t, kMaxChar + 1> kCharToByte = make_char_to_byte();

// Maps a vocabulary string back to the raw bytes it stands for; false when it holds a character
// outside the map (the string is then not a byte-level token).
inline bool to_bytes(std::string_view token, std::string& out) {
  out.clear();
  for (size_t pos = 0; pos < token.size();) {
    size_t len;
    const char32_t c = unicode::decode_utf8(token, pos, len);
    if (c > kMaxChar || kCharToByte[c] < 0) return false;
    out.push_back(static_cast<char>(kCharToByte[c]));
    pos += len;
  }
  return true;
}

// The vocabulary spelling of raw bytes.
inline std::string from_bytes(std::string_view bytes) {
  std::string out;
  for (unsigned char b : bytes) unicode::append_utf8(out, kByteToChar[b]);
  return out;
}

}  // namespace nibble::byte_level
