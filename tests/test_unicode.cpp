// Unicode pieces of the tokenizer: UTF-8 decoding and lossy repair, character classes, NFC, and
// the Qwen pre-tokenizer split. Expected values are from the Unicode Standard (UAX #15 examples,
// table 3-7) and, for the split, from the Python `regex` module running the same pattern.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tokenizer/pretokenize.h"
#include "tokenizer/unicode.h"

namespace nibble {
namespace {

using unicode::CharClass;

std::string u8(std::u8string_view s) { return std::string(s.begin(), s.end()); }

TEST(Utf8, DecodesValidAndMarksInvalidBytes) {
  size_t len = 0;
  EXPECT_EQ(unicode::decode_utf8("A", 0, len), U'A');
  EXPECT_EQ(len, 1u);
  EXPECT_EQ(unicode::decode_utf8(u8(u8"\u00e9"), 0, len), U'\u00e9');
  EXPECT_EQ(len, 2u);
  EXPECT_EQ(unicode::decode_utf8(u8(u8"\U0001F600"), 0, len), U'\U0001F600');
  EXPECT_EQ(len, 4u);
  // Overlong, surrogate, above U+10FFFF, truncated, stray continuation: one raw byte each.
  for (std::string bad : {"\xC0\x80", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\xF0\x9F\x98", "\x80"}) {
    EXPECT_EQ(unicode::decode_utf8(bad, 0, len), unicode::kRawByteBase + static_cast<uint8_t>(bad[0])) << bad;
    EXPECT_EQ(len, 1u);
  }
}

TEST(Utf8, LossyReplacesMaximalSubparts) {
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(unicode::utf8_lossy("abc"), "abc");
  EXPECT_EQ(unicode::utf8_lossy("\xF0\x9F\x98"), fffd);                // one truncated character
  EXPECT_EQ(unicode::utf8_lossy("\xC0\x80"), fffd + fffd);             // C0 is never a lead
  EXPECT_EQ(unicode::utf8_lossy("\xED\xA0\x80"), fffd + fffd + fffd);  // surrogate
  EXPECT_EQ(unicode::utf8_lossy("\xE2\x28\xA1"), fffd + "(" + fffd);   // bad continuation
  EXPECT_EQ(unicode::utf8_lossy("\xF4\x90\x80\x80"), fffd + fffd + fffd + fffd);
  EXPECT_EQ(unicode::utf8_lossy("A\xC3"
                                "A"),
            "A" + fffd + "A");
}

TEST(Utf8, CompletePrefixHoldsBackOnlyAValidIncompleteTail) {
  EXPECT_EQ(unicode::utf8_complete_prefix("abc"), 3u);
  EXPECT_EQ(unicode::utf8_complete_prefix("ab\xF0\x9F\x98"), 2u);
  EXPECT_EQ(unicode::utf8_complete_prefix("ab\xF0\x9F\x98\x80"), 6u);
  EXPECT_EQ(unicode::utf8_complete_prefix("\xE2"), 0u);
  EXPECT_EQ(unicode::utf8_complete_prefix("a\xC0"), 2u);      // invalid lead: nothing to wait for
  EXPECT_EQ(unicode::utf8_complete_prefix("a\xE0\x80"), 3u);  // E0 80 can never complete
  EXPECT_EQ(unicode::utf8_complete_prefix("a\x80\x80"), 3u);  // stray continuation bytes
}

TEST(Unicode, CharacterClasses) {
  EXPECT_EQ(unicode::char_class(U'a'), CharClass::Letter);
  EXPECT_EQ(unicode::char_class(U'\u4e00'), CharClass::Letter);  // CJK ideograph, Lo
  EXPECT_EQ(unicode::char_class(U'\u02b0'), CharClass::Letter);  // modifier letter, Lm
  EXPECT_EQ(unicode::char_class(U'7'), CharClass::Number);
  EXPECT_EQ(unicode::char_class(U'\u00bd'), CharClass::Number);  // No
  EXPECT_EQ(unicode::char_class(U'\u2163'), CharClass::Number);  // Nl
  EXPECT_EQ(unicode::char_class(U'\u0663'), CharClass::Number);  // Nd
  for (char32_t c : {U'\t', U'\n', U'\v', U'\f', U'\r', U' ', U'\u0085', U'\u00a0', U'\u1680', U'\u2000',
                     U'\u200a', U'\u2028', U'\u2029', U'\u202f', U'\u205f', U'\u3000'}) {
    EXPECT_EQ(unicode::char_class(c), CharClass::Space) << std::hex << uint32_t(c);
  }
  for (char32_t c : {U'\u200b', U'\u180e', U'\ufeff', U'\u0301', U'!', U'\U0001F600', U'\x1f'}) {
    EXPECT_EQ(unicode::char_class(c), CharClass::Other) << std::hex << uint32_t(c);
  }
  EXPECT_EQ(unicode::combining_class(U'\u0301'), 230);
  EXPECT_EQ(unicode::combining_class(U'\u0323'), 220);
  EXPECT_EQ(unicode::combining_class(U'a'), 0);
}

TEST(Unicode, NfcExamplesFromUax15) {
  EXPECT_EQ(unicode::nfc(u8(u8"cafe\u0301")), u8(u8"caf\u00e9"));
  EXPECT_EQ(unicode::nfc(u8(u8"A\u030a")), u8(u8"\u00c5"));
  EXPECT_EQ(unicode::nfc(u8(u8"\u212b")), u8(u8"\u00c5"));  // singleton: Angstrom sign
  EXPECT_EQ(unicode::nfc(u8(u8"\u2126")), u8(u8"\u03a9"));  // ohm sign
  EXPECT_EQ(unicode::nfc(u8(u8"\u1e9b\u0323")), u8(u8"\u1e9b\u0323"));
  EXPECT_EQ(unicode::nfc(u8(u8"q\u0307\u0323")), u8(u8"q\u0323\u0307"));  // canonical order
  EXPECT_EQ(unicode::nfc(u8(u8"\u0958")), u8(u8"\u0915\u093c"));          // composition exclusion
  EXPECT_EQ(unicode::nfc(u8(u8"\u1100\u1161\u11a8")), u8(u8"\uac01"));    // Hangul L V T
  EXPECT_EQ(unicode::nfc(u8(u8"\uac00\u11a8")), u8(u8"\uac01"));          // Hangul LV + T
  EXPECT_EQ(unicode::nfc(u8(u8"\u0301a")), u8(u8"\u0301a"));              // leading combining mark
  EXPECT_EQ(unicode::nfc(u8(u8"e\u0301\u0301")), u8(u8"\u00e9\u0301"));
  EXPECT_EQ(unicode::nfc("plain ascii"), "plain ascii");
  // Invalid bytes pass through untouched and block composition across them.
  EXPECT_EQ(unicode::nfc("e\xff\xCC\x81"), "e\xff\xCC\x81");
  EXPECT_TRUE(unicode::is_nfc_quick(u8(u8"caf\u00e9 \u4f60\u597d")));
  EXPECT_FALSE(unicode::is_nfc_quick(u8(u8"cafe\u0301")));
}

std::vector<std::string> split(std::string_view text) {
  PretokenizeScratch scratch;
  std::vector<std::string_view> pieces;
  split_qwen(text, scratch, pieces);
  return {pieces.begin(), pieces.end()};
}

using Pieces = std::vector<std::string>;

TEST(Pretokenize, QwenRegexPieces) {
  EXPECT_EQ(split("Hello world"), (Pieces{"Hello", " world"}));
  EXPECT_EQ(split("I'M DON'T it's"), (Pieces{"I", "'M", " DON", "'T", " it", "'s"}));
  EXPECT_EQ(split("x  \t y"), (Pieces{"x", "  \t", " y"}));
  EXPECT_EQ(split("a\n\n  b"), (Pieces{"a", "\n\n", " ", " b"}));
  EXPECT_EQ(split("end   "), (Pieces{"end", "   "}));
  EXPECT_EQ(split("  (foo)\r\n\r\nbar"), (Pieces{" ", " (", "foo", ")\r\n\r\n", "bar"}));
  EXPECT_EQ(split("12345"), (Pieces{"1", "2", "3", "4", "5"}));
  EXPECT_EQ(split(u8(u8"\u00a0hi")), (Pieces{u8(u8"\u00a0hi")}));
  EXPECT_EQ(split("\tif x:\n\t\treturn"), (Pieces{"\tif", " x", ":\n", "\t", "\treturn"}));
  EXPECT_EQ(split("'sup"), (Pieces{"'s", "up"}));
  EXPECT_EQ(split("a.\n\nb"), (Pieces{"a", ".\n\n", "b"}));
  EXPECT_EQ(split(u8(u8"x \u3000 y")), (Pieces{"x", u8(u8" \u3000"), " y"}));
  EXPECT_EQ(split(""), (Pieces{}));
  EXPECT_EQ(split("\xff\xfe"
                  "ab"),
            (Pieces{"\xff\xfe", "ab"}));  // invalid bytes are "other"
}

TEST(Pretokenize, PiecesCoverTheText) {
  const std::string text = u8(u8"  Mixed\tTEXT 'LL \r\n\r\n 123 \u4f60\u597d!! \U0001F600\u200d \u00a0\n");
  std::string joined;
  for (const auto& p : split(text)) {
    EXPECT_FALSE(p.empty());
    joined += p;
  }
  EXPECT_EQ(joined, text);
}

}  // namespace
}  // namespace nibble
