#include "tokenizer/unicode.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "tokenizer/unicode_tables.h"

namespace nibble::unicode {
namespace {

using unicode_tables::ClassRange;

// Hangul syllable arithmetic (Unicode 15, section 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28;
constexpr char32_t kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

constexpr std::array<CharClass, 128> make_ascii_classes() {
  std::array<CharClass, 128> t{};
  for (int c = 0; c < 128; ++c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
      t[c] = CharClass::Letter;
    else if (c >= '0' && c <= '9')
      t[c] = CharClass::Number;
    else if ((c >= 0x09 && c <= 0x0D) || c == ' ')
      t[c] = CharClass::Space;
  }
  return t;
}
constexpr std::array<CharClass, 128> kAsciiClasses = make_ascii_classes();

// Value of the range holding cp, or 0 when none does.
uint8_t range_lookup(const ClassRange* table, size_t count, char32_t cp) {
  const ClassRange* end = table + count;
  const ClassRange* it =
      std::upper_bound(table, end, cp, [](char32_t c, const ClassRange& r) { return c < r.lo; });
  if (it == table) return 0;
  --it;
  return cp <= it->hi ? it->value : 0;
}

const unicode_tables::Decomposition* find_decomposition(char32_t cp) {
  const auto* begin = unicode_tables::kDecompositions;
  const auto* end = begin + unicode_tables::kDecompositionsCount;
  const auto* it = std::lower_bound(
      begin, end, cp, [](const unicode_tables::Decomposition& d, char32_t c) { return d.cp < c; });
  return it != end && it->cp == cp ? it : nullptr;
}

void decompose(char32_t cp, std::vector<char32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const char32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
    return;
  }
  if (cp < 0xC0) {  // nothing below U+00C0 decomposes
    out.push_back(cp);
    return;
  }
  const auto* d = find_decomposition(cp);
  if (d == nullptr) {
    out.push_back(cp);
    return;
  }
  decompose(d->first, out);
  if (d->second != 0) decompose(d->second, out);
}

// The primary composite of (a, b), or 0 when there is none.
char32_t compose_pair(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount) {
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  }
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount) {
    return a + (b - kTBase);
  }
  const uint64_t key = (uint64_t{a} << 21) | b;
  const auto* begin = unicode_tables::kCompositions;
  const auto* end = begin + unicode_tables::kCompositionsCount;
  const auto* it = std::lower_bound(
      begin, end, key, [](const unicode_tables::Composition& c, uint64_t k) { return c.key < k; });
  return it != end && it->key == key ? it->composite : 0;
}

// Valid lead byte: sets the sequence length and the allowed range of the second byte
// (Unicode 15, table 3-7, which excludes overlongs, surrogates and values above U+10FFFF).
bool lead_info(uint8_t b, size_t& n, uint8_t& lo, uint8_t& hi) {
  lo = 0x80;
  hi = 0xBF;
  if (b >= 0xC2 && b <= 0xDF)
    n = 2;
  else if (b >= 0xE0 && b <= 0xEF) {
    n = 3;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    n = 4;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
  } else {
    return false;
  }
  return true;
}

// Number of bytes of s[pos..] that form a valid prefix of the sequence led by s[pos] (at least
// 1, the lead itself); equals n when the character is complete.
size_t valid_run(std::string_view s, size_t pos, size_t n, uint8_t lo, uint8_t hi) {
  size_t j = 1;
  for (; j < n && pos + j < s.size(); ++j) {
    const auto c = static_cast<uint8_t>(s[pos + j]);
    const uint8_t l = j == 1 ? lo : 0x80, h = j == 1 ? hi : 0xBF;
    if (c < l || c > h) break;
  }
  return j;
}

}  // namespace

CharClass char_class(char32_t cp) {
  if (cp < 128) return kAsciiClasses[cp];
  return static_cast<CharClass>(
      range_lookup(unicode_tables::kCharClasses, unicode_tables::kCharClassesCount, cp));
}

uint8_t combining_class(char32_t cp) {
  if (cp < 0x300) return 0;
  return range_lookup(unicode_tables::kCombiningClass, unicode_tables::kCombiningClassCount, cp);
}

char32_t decode_utf8(std::string_view s, size_t pos, size_t& len) {
  const auto b = static_cast<uint8_t>(s[pos]);
  len = 1;
  if (b < 0x80) return b;
  size_t n;
  uint8_t lo, hi;
  if (!lead_info(b, n, lo, hi) || valid_run(s, pos, n, lo, hi) != n) return kRawByteBase + b;
  char32_t cp = b & (0xFF >> (n + 1));
  for (size_t j = 1; j < n; ++j) cp = (cp << 6) | (static_cast<uint8_t>(s[pos + j]) & 0x3F);
  len = n;
  return cp;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp >= kRawByteBase) {
    out.push_back(static_cast<char>(cp - kRawByteBase));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool is_nfc_quick(std::string_view s) {
  uint8_t last_ccc = 0;
  for (size_t pos = 0; pos < s.size();) {
    if (static_cast<uint8_t>(s[pos]) < 0x80) {
      last_ccc = 0;
      ++pos;
      continue;
    }
    size_t len;
    const char32_t cp = decode_utf8(s, pos, len);
    pos += len;
    if (cp >= kRawByteBase) {
      last_ccc = 0;
      continue;
    }
    if (range_lookup(unicode_tables::kNfcQuickCheckNo, unicode_tables::kNfcQuickCheckNoCount, cp)) {
      return false;
    }
    const uint8_t ccc = combining_class(cp);
    if (ccc != 0 && last_ccc > ccc) return false;
    last_ccc = ccc;
  }
  return true;
}

std::string nfc(std::string_view s) {
  if (is_nfc_quick(s)) return std::string(s);

  std::vector<char32_t> cps;
  cps.reserve(s.size());
  for (size_t pos = 0; pos < s.size();) {
    size_t len;
    decompose(decode_utf8(s, pos, len), cps);
    pos += len;
  }

  // Canonical ordering: stable sort of each run of non-starters by combining class.
  for (size_t i = 0; i < cps.size();) {
    if (combining_class(cps[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < cps.size() && combining_class(cps[j]) != 0) ++j;
    std::stable_sort(cps.begin() + i, cps.begin() + j,
                     [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
    i = j;
  }

  // Canonical composition: a character combines with the last starter unless a character in
  // between has class 0 or a class >= its own (it is "blocked").
  constexpr size_t kNoStarter = SIZE_MAX;  // a leading non-starter never composes
  size_t starter = kNoStarter, out = 0;
  uint8_t last_ccc = 0;
  for (size_t i = 0; i < cps.size(); ++i) {
    const char32_t c = cps[i];
    const uint8_t ccc = combining_class(c);
    if (starter != kNoStarter && (last_ccc < ccc || last_ccc == 0)) {
      if (const char32_t composite = compose_pair(cps[starter], c); composite != 0) {
        cps[starter] = composite;
        continue;
      }
    }
    if (ccc == 0) starter = out;
    last_ccc = ccc;
    cps[out++] = c;
  }
  cps.resize(out);

  std::string result;
  result.reserve(s.size());
  for (char32_t cp : cps) append_utf8(result, cp);
  return result;
}

size_t utf8_complete_prefix(std::string_view s) {
  // A trailing incomplete sequence is at most 3 bytes and starts with a lead byte.
  const size_t first = s.size() > 3 ? s.size() - 3 : 0;
  for (size_t p = s.size(); p-- > first;) {
    const auto b = static_cast<uint8_t>(s[p]);
    if (b >= 0x80 && b < 0xC0) continue;  // continuation byte: keep looking for the lead
    size_t n;
    uint8_t lo, hi;
    if (!lead_info(b, n, lo, hi)) return s.size();
    const size_t have = s.size() - p;
    return have < n && valid_run(s, p, n, lo, hi) == have ? p : s.size();
  }
  return s.size();
}

std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t pos = 0; pos < s.size();) {
    const auto b = static_cast<uint8_t>(s[pos]);
    if (b < 0x80) {
      out.push_back(static_cast<char>(b));
      ++pos;
      continue;
    }
    size_t n;
    uint8_t lo, hi;
    const size_t run = lead_info(b, n, lo, hi) ? valid_run(s, pos, n, lo, hi) : 0;
    if (run == n) {
      out.append(s.substr(pos, n));
      pos += n;
    } else {
      out.append("\xEF\xBF\xBD");  // U+FFFD for the maximal subpart (at least the lead byte)
      pos += std::max<size_t>(run, 1);
    }
  }
  return out;
}

}  // namespace nibble::unicode
