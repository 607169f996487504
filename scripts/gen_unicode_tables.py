#!/usr/bin/env python3
"""Generate src/tokenizer/unicode_tables.cpp (character classes, combining classes, NFC quick
check) and src/tokenizer/unicode_tables_nfc.cpp (decompositions and compositions) from the
Unicode Character Database.

Usage (repo root as cwd):  python3 scripts/gen_unicode_tables.py [UCD_DIR] [OUT_DIR]
  UCD_DIR defaults to /usr/share/unicode (Debian package unicode-data), OUT_DIR to
  src/tokenizer. Standard library only.

Tables (all sorted by code point, searched by binary search in unicode.cpp):
  kCharClasses    ranges of general category L* (letter), N* (number), and the whitespace
                  class that \\s has in Oniguruma, the regex engine HF tokenizers uses:
                  U+0009..U+000D, U+0085 and general categories Zs, Zl, Zp. The script checks
                  that this equals the White_Space property (what Rust's regex calls \\s).
  kCombiningClass ranges of non-zero canonical combining class (UnicodeData field 3).
  kDecompositions canonical (not compatibility) one-level decompositions (field 5), with a
                  flag for Full_Composition_Exclusion.
  kCompositions   primary composites: (first, second) -> composite for two-code-point canonical
                  decompositions that are not excluded, sorted by (first << 21 | second).
  kNfcQuickCheckNo ranges whose NFC_Quick_Check is No or Maybe (DerivedNormalizationProps).
Hangul syllables are decomposed and composed algorithmically and are not in these tables.
"""

import os
import re
import sys

HANGUL_FIRST, HANGUL_LAST = 0xAC00, 0xD7A3


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                yield [x.strip() for x in line.split(";")]


def parse_range(s):
    if ".." in s:
        lo, hi = s.split("..")
        return int(lo, 16), int(hi, 16)
    return int(s, 16), int(s, 16)


def unicode_data(ucd):
    """Yields (cp, fields) for every code point, expanding <..., First>/<..., Last> ranges."""
    first = None
    for fields in read_lines(os.path.join(ucd, "UnicodeData.txt")):
        cp = int(fields[0], 16)
        name = fields[1]
        if name.endswith(", First>"):
            first = cp
            continue
        if name.endswith(", Last>"):
            for c in range(first, cp + 1):
                yield c, fields
            first = None
            continue
        yield cp, fields


def to_ranges(cps_with_value):
    """[(cp, value)] sorted -> [(lo, hi, value)] merging adjacent equal values."""
    out = []
    for cp, v in cps_with_value:
        if out and out[-1][1] + 1 == cp and out[-1][2] == v:
            out[-1][1] = cp
        else:
            out.append([cp, cp, v])
    return out


def version(ucd):
    with open(os.path.join(ucd, "ReadMe.txt"), encoding="utf-8") as f:
        for line in f:
            m = re.search(r"Version (\d+\.\d+\.\d+) of the Unicode Standard", line)
            if m:
                return "Unicode " + m.group(1)
    sys.exit("no version line in %s/ReadMe.txt" % ucd)


def emit(name, ctype, rows, fmt, width=110):
    lines = ["const %s %s[] = {" % (ctype, name)]
    line = "   "
    for r in rows:
        item = " " + fmt(r) + ","
        if len(line) + len(item) > width:
            lines.append(line)
            line = "   "
        line += item
    lines.append(line)
    lines.append("};")
    lines.append("const size_t %sCount = sizeof(%s) / sizeof(%s[0]);" % (name, name, name))
    return "\n".join(lines)


def main():
    ucd = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/unicode"
    out_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join("src", "tokenizer")

    LETTER, NUMBER, SPACE = 1, 2, 3
    classes = {}
    ccc = {}
    decomp = {}
    for cp, f in unicode_data(ucd):
        gc = f[2]
        if gc.startswith("L"):
            classes[cp] = LETTER
        elif gc.startswith("N"):
            classes[cp] = NUMBER
        elif gc in ("Zs", "Zl", "Zp") or 0x09 <= cp <= 0x0D or cp == 0x85:
            classes[cp] = SPACE
        if int(f[3]) != 0:
            ccc[cp] = int(f[3])
        if f[5] and not f[5].startswith("<"):
            parts = [int(x, 16) for x in f[5].split()]
            assert 1 <= len(parts) <= 2, (cp, parts)
            decomp[cp] = parts

    white_space = set()
    for fields in read_lines(os.path.join(ucd, "PropList.txt")):
        if fields[1] == "White_Space":
            lo, hi = parse_range(fields[0])
            white_space.update(range(lo, hi + 1))
    onig_space = {cp for cp, c in classes.items() if c == SPACE}
    if onig_space != white_space:
        sys.exit("Oniguruma \\s differs from White_Space: %s" % sorted(onig_space ^ white_space))

    exclusions = set()
    nfc_qc = {}
    for fields in read_lines(os.path.join(ucd, "DerivedNormalizationProps.txt")):
        lo, hi = parse_range(fields[0])
        if fields[1] == "Full_Composition_Exclusion":
            exclusions.update(range(lo, hi + 1))
        elif fields[1] == "NFC_QC" and fields[2] in ("N", "M"):
            for cp in range(lo, hi + 1):
                nfc_qc[cp] = 1

    class_ranges = to_ranges(sorted(classes.items()))
    ccc_ranges = to_ranges(sorted(ccc.items()))
    qc_ranges = to_ranges(sorted(nfc_qc.items()))
    decomps = []
    comps = []
    for cp in sorted(decomp):
        assert not (HANGUL_FIRST <= cp <= HANGUL_LAST)
        parts = decomp[cp]
        excluded = cp in exclusions
        decomps.append((cp, parts[0], parts[1] if len(parts) == 2 else 0, 1 if excluded else 0))
        if len(parts) == 2 and not excluded:
            comps.append(((parts[0] << 21) | parts[1], cp))
        # A singleton decomposition is always excluded from composition (UAX #15).
        assert len(parts) == 2 or excluded, hex(cp)
    comps.sort()

    header = [
        "// GENERATED by scripts/gen_unicode_tables.py from the Unicode Character Database, %s" % version(ucd),
        "// (UnicodeData.txt, PropList.txt, DerivedNormalizationProps.txt in /usr/share/unicode,",
        "// Debian package unicode-data). Do not edit: rerun the script. Tables are described in",
        "// unicode_tables.h; Hangul syllables are handled algorithmically in unicode.cpp.",
        "// clang-format off",
        '#include "tokenizer/unicode_tables.h"',
        "",
        "namespace nibble::unicode_tables {",
        "",
    ]
    ranges = lambda r: "{0x%X, 0x%X, %d}" % (r[0], r[1], r[2])
    files = {
        "unicode_tables.cpp": [
            emit("kCharClasses", "ClassRange", class_ranges, ranges),
            emit("kCombiningClass", "ClassRange", ccc_ranges, ranges),
            emit("kNfcQuickCheckNo", "ClassRange", qc_ranges, ranges),
        ],
        "unicode_tables_nfc.cpp": [
            emit("kDecompositions", "Decomposition", decomps, lambda r: "{0x%X, 0x%X, 0x%X, %d}" % r),
            emit("kCompositions", "Composition", comps, lambda r: "{0x%XULL, 0x%X}" % r),
        ],
    }
    for name, tables in files.items():
        src = header + "\n\n".join(tables).split("\n") + ["", "}  // namespace nibble::unicode_tables", ""]
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            f.write("\n".join(src))
    print("wrote %s: %d class ranges, %d ccc ranges, %d decompositions, %d compositions, %d QC ranges" %
          (out_dir, len(class_ranges), len(ccc_ranges), len(decomps), len(comps), len(qc_ranges)))


if __name__ == "__main__":
    main()
