#!/usr/bin/env python3
"""Reference token ids from HF `tokenizers` for tests/test_tokenizer.cpp.

Usage (repo root as cwd):  python3 scripts/gen_tokenizer_fixtures.py OUTDIR
Needs only the `tokenizers` package (and the standard library).
Writes OUTDIR/tokenizer/qwen3_cases.json; copy it to tests/fixtures/tokenizer/qwen3_cases.json.

The tokenizer is tests/fixtures/qwen3_tokenizer/tokenizer.json loaded with
tokenizers.Tokenizer.from_file. Output (one JSON object):
  "meta":   versions and the meaning of each key
  "cases":  [{"text", "ids", "ids_special", "decoded", "decoded_skip"}]
      ids          encode(text, add_special_tokens=False) with encode_special_tokens = True:
                   the text of *special* added tokens (special: true, e.g. <|im_end|>) is
                   tokenized as ordinary text; added tokens with special: false (e.g. <think>)
                   are still matched (tokenizers' AddedVocabulary::find_matches skips only
                   tokens in special_tokens_set). This is nibble's encode(text, false).
      ids_special  the same with encode_special_tokens = False (the default: every added token
                   is matched). This is nibble's encode(text, true).
      decoded      decode(ids_special, skip_special_tokens=False)
      decoded_skip decode(ids_special, skip_special_tokens=True)
  "decode_cases": [{"ids", "decoded"}]: id sequences that are not valid UTF-8 on their own
                   (single bytes of a multi-byte character, stray continuation bytes) and how
                   HF decodes them (invalid bytes become U+FFFD).
  "corpus":  ids of the whole tests/fixtures/corpus/tinyshakespeare_input.txt (default mode):
             their count, the first 2000, and hash64 = fold of h = (h * 1000003 + id + 1) mod 2^64
             from h = 0 over all ids.
"""

import json
import os
import sys

import tokenizers
from tokenizers import Tokenizer

FIXTURES = os.path.join("tests", "fixtures")
TOKENIZER_JSON = os.path.join(FIXTURES, "qwen3_tokenizer", "tokenizer.json")
CORPUS = os.path.join(FIXTURES, "corpus", "tinyshakespeare_input.txt")

# --- hand-written strings, by category -------------------------------------------------------
ENGLISH = [
    "Hello",
    "Hello world",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "It was the best of times, it was the worst of times.",
    "Mr. and Mrs. Dursley, of number four, Privet Drive, were proud to say that they were perfectly normal.",
    "a",
    " ",
    "",
    "I",
    "hello",
    " hello",
    "  hello",
    "hello ",
    "hello  ",
    " hello ",
    "   leading and trailing   ",
    "UPPER CASE TEXT",
    "MiXeD cAsE tExT",
    "don't won't can't shouldn't",
    "I'm you're he's we've they'll she'd",
    "I'M YOU'RE HE'S WE'VE THEY'LL SHE'D DON'T",
    "It'S tHe'Ll We'Ve",
    "'s 't 're 've 'm 'll 'd",
    "'sup 'twas 'tis",
    "rock 'n' roll",
    "''quoted''",
    "the dog's bone, the dogs' bones",
    "O'Neil and O'NEIL",
    "it\u2019s a curly apostrophe",
    "it'\u017f long s",
    "Hyphen-ated words and em\u2014dashes \u2013 en-dashes",
    "e.g. i.e. etc. U.S.A.",
    "What?! No!!! Really???",
    "...ellipsis... and \u2026 unicode ellipsis",
    "(parentheses) [brackets] {braces} <angles>",
    "email: someone@example.com",
    "#hashtag @mention $100 50% 3*4=12 a+b",
    "semicolons; colons: commas, periods.",
    "\"double quotes\" and 'single quotes'",
    "\u201csmart quotes\u201d and \u2018single smart\u2019",
    "tab\tseparated\tvalues",
    "trailing tab\t",
    "\tleading tab",
    "\t\t\tthree tabs",
    "Line one\nLine two\nLine three",
    "Windows\r\nline\r\nendings\r\n",
    "\r\n\r\n\r\n",
    "\n",
    "\n\n",
    "\n\n\n\n\n\n\n\n",
    "\r",
    "\r\r\r",
    "mixed \r\n \n \r endings",
    "word\n\nparagraph\n\n\nthird",
    "spaces   between   words",
    "    four leading spaces",
    "trailing spaces    ",
    "    ",
    "                                ",
    " \n ",
    "  \n  \n  ",
    "a \t b",
    "end with newline\n",
    "end with spaces and newline   \n",
    "punct at end.\n\n",
    "!!!\n\n",
    "x\u000by\u000cz",
    "form\u000cfeed and vertical\u000btab",
    "ends with space ",
]

DIGITS = [
    "1234567",
    "0",
    "42",
    "3.14159265358979",
    "1,000,000",
    "2024-01-15",
    "12:30:45",
    "+1 (555) 123-4567",
    "version 1.2.3-beta.4",
    "0x1F600 0b1010 0o777",
    "1e-10 6.022e23",
    "a1b2c3d4",
    "999999999999999999999999",
    "\u0661\u0662\u0663 Arabic-Indic digits",
    "\u0967\u0968\u0969 Devanagari digits",
    "\uff11\uff12\uff13 fullwidth digits",
    "\u00bd \u00bc \u00be fractions \u2155",
    "\u2160 \u2161 \u2162 roman numerals \u216b",
    "\u00b2 \u00b3 superscripts x\u00b2",
    "\u2460\u2461\u2462 circled",
    "Price: $1,234.56 (\u20ac999)",
    "100km/h 5kg 3.5GHz",
]

CODE = [
    "def foo(x):\n    return x + 1\n",
    "class A:\n    def __init__(self):\n        self.x = 0\n\n    def f(self, y):\n        if y:\n            return self.x\n        return None\n",
    "for (int i = 0; i < n; ++i) {\n  sum += a[i] * b[i];\n}\n",
    "#include <stdio.h>\nint main(void) { printf(\"hi\\n\"); return 0; }\n",
    "const f = (a, b) => a ?? b;",
    "if (x != y && z >= 3 || !w) { return; }",
    "SELECT * FROM users WHERE id = 42;",
    "<div class=\"main\"><p>Hello</p></div>",
    "{\"key\": \"value\", \"list\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
    "{\n  \"name\": \"nibble\",\n  \"version\": \"0.1.0\",\n  \"deps\": []\n}",
    "https://www.example.com/path/to/page?query=1&other=two#fragment",
    "http://localhost:8080/v1/chat/completions",
    "git commit -m \"fix: handle CRLF\"",
    "$ ls -la /usr/local/bin | grep -v '^d'",
    "x = [i**2 for i in range(10) if i % 2 == 0]",
    "fn main() {\n\tlet v: Vec<u8> = vec![0; 16];\n\tprintln!(\"{:?}\", v);\n}\n",
    "    indented with spaces\n\tindented with tab\n  \t mixed\n",
    "a_very_long_snake_case_identifier_name = another_identifier",
    "camelCaseIdentifier PascalCaseName SCREAMING_CASE",
    "/* comment */ // line comment\n# python comment",
    "std::vector<std::pair<int, std::string>> v;",
    "@decorator\ndef f(*args, **kwargs): ...",
    "\\n \\t \\\\ escaped backslashes",
    "```python\nprint('hi')\n```",
    "key1=value1;key2=value2",
    "--flag=value -x -abc",
    "0.5*(a+b)/c-d^2",
    "}}}}]]]])))",
    "!!!???...,,,;;;",
    "<<<>>>===---+++",
]

SCRIPTS = [
    "\u4f60\u597d\uff0c\u4e16\u754c\uff01",
    "\u6211\u7231\u5317\u4eac\u5929\u5b89\u95e8\u3002\u4eca\u5929\u5929\u6c14\u5f88\u597d\u3002",
    "\u4e2d\u6587 English \u6df7\u5408 text",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3067\u3059\u3002\u3072\u3089\u304c\u306a\u3068\u30ab\u30bf\u30ab\u30ca\u3002",
    "\u6771\u4eac\u30bf\u30ef\u30fc\u306f\u9ad8\u3044\u3067\u3059",
    "\uff8a\uff9d\uff76\uff78\uff76\uff80\uff76\uff85 halfwidth katakana",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8\uc785\ub2c8\ub2e4.",
    "\uc548\ub155\ud558\uc138\uc694, \uc138\uacc4!",
    "\u1112\u1161\u11ab\u1100\u1173\u11af decomposed hangul jamo",
    "\u0627\u0644\u0633\u0644\u0627\u0645 \u0639\u0644\u064a\u0643\u0645",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645! \u0643\u064a\u0641 \u062d\u0627\u0644\u0643\u061f",
    "\u0627\u0644\u0639\u064e\u0631\u064e\u0628\u0650\u064a\u0651\u064e\u0629 with harakat",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!",
    "\u0421\u044a\u0435\u0448\u044c \u0436\u0435 \u0435\u0449\u0451 \u044d\u0442\u0438\u0445 \u043c\u044f\u0433\u043a\u0438\u0445 \u0444\u0440\u0430\u043d\u0446\u0443\u0437\u0441\u043a\u0438\u0445 \u0431\u0443\u043b\u043e\u043a.",
    "\u0415\u0401\u0439\u0419 \u0438\u0306",
    "\u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5 \u039a\u03cc\u03c3\u03bc\u03b5",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
    "\u0939\u093f\u0928\u094d\u0926\u0940 \u092d\u093e\u0937\u093e \u092e\u0947\u0902 \u0935\u093e\u0915\u094d\u092f\u0964",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a \u0e42\u0e25\u0e01",
    "\u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22\u0e44\u0e21\u0e48\u0e21\u0e35\u0e0a\u0e48\u0e2d\u0e07\u0e27\u0e48\u0e32\u0e07\u0e23\u0e30\u0e2b\u0e27\u0e48\u0e32\u0e07\u0e04\u0e33",
    "\u10d2\u10d0\u10db\u10d0\u10e0\u10ef\u10dd\u10d1\u10d0",
    "\u0532\u0561\u0580\u0587 \u0541\u0565\u0566",
    "\u12a0\u121b\u122d\u129b",
    "\u0ba4\u0bae\u0bbf\u0bb4\u0bcd \u0bae\u0bca\u0bb4\u0bbf",
    "\u09ac\u09be\u0982\u09b2\u09be \u09ad\u09be\u09b7\u09be",
    "Ti\u1ebfng Vi\u1ec7t c\u00f3 d\u1ea5u",
    "T\u00fcrk\u00e7e \u0130stanbul \u0131\u015f\u0131k",
    "Polski: za\u017c\u00f3\u0142\u0107 g\u0119\u015bl\u0105 ja\u017a\u0144",
    "Deutsch: Stra\u00dfe, Gr\u00f6\u00dfe, \u00dcbergr\u00f6\u00dfe, GROSS\u1e9e",
    "Fran\u00e7ais: \u00e0 la cr\u00e8me br\u00fbl\u00e9e, \u0153uvre, No\u00ebl",
    "Espa\u00f1ol: \u00bfQu\u00e9 tal? \u00a1Ma\u00f1ana!",
    "Portugu\u00eas: a\u00e7\u00e3o, cora\u00e7\u00e3o, p\u00e3o",
    "\u00cdslenska: \u00fe\u00f0\u00e6\u00f6",
    "mixed: English \u0420\u0443\u0441\u0441\u043a\u0438\u0439 \u4e2d\u6587 \u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u0939\u093f\u0928\u094d\u0926\u0940 \ud55c\uad6d\uc5b4",
    "abc\u0430\u0431\u0432abc",
    "\u0391\u0392\u0393abc\u4e00\u4e8c\u4e09123",
    "\ua000\ua001 Yi syllables",
    "\U00020000\U0002a6d6 CJK extension B",
    "\U0001d400\U0001d401 math bold",
    "\U00010330\U00010331 gothic",
    "\u1401\u1402 canadian syllabics",
    "\u2c00\u2c01 glagolitic",
]

ACCENTS = [
    "caf\u00e9",
    "cafe\u0301",
    "na\u00efve re\u0301sume\u0301",
    "\u00c5ngstr\u00f6m \u212b",
    "A\u030a",
    "\u1e9b\u0323",
    "q\u0307\u0323",
    "o\u0328\u0304",
    "e\u0301\u0301\u0301 stacked",
    "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034dalgo text",
    "\u0041\u0300\u0041\u0301\u0041\u0302\u0041\u0303\u0041\u0308",
    "\u00c0\u00c1\u00c2\u00c3\u00c4",
    "\u2126 ohm sign, \u212a kelvin",
    "\ufb01 ligature fi, \ufb00 ff",
    "\u0390 \u1fd3",
    "\u0958 \u0915\u093c",
    "\u2000\u2001 en/em quad spaces",
    "\u1100\u1161 \u1100\u1161\u11a8 jamo to compose",
    "\uac00\u11a8 LV + T",
    "\u0f73 tibetan",
    "\u0344 \u0308\u0301",
    "\u00e9\u0300 precomposed then combining",
    "\u0301 leading combining mark",
    "n\u0303o\u0308\u00f1\u00f6",
]

EMOJI = [
    "\U0001f600",
    "Hello \U0001f44b world \U0001f30d",
    "\U0001f44d\U0001f3fb\U0001f44d\U0001f3fc\U0001f44d\U0001f3fd\U0001f44d\U0001f3fe\U0001f44d\U0001f3ff",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "\U0001f469\U0001f3fd\u200d\U0001f4bb",
    "\U0001f3f3\ufe0f\u200d\U0001f308",
    "\u2764\ufe0f \u2764",
    "\U0001f1fa\U0001f1f8\U0001f1ef\U0001f1f5\U0001f1e9\U0001f1ea",
    "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
    "1\ufe0f\u20e3 #\ufe0f\u20e3",
    "\U0001f600\U0001f603\U0001f604\U0001f601\U0001f606\U0001f605\U0001f923\U0001f602",
    "emoji\U0001f525inside\U0001f525words",
    "\U0001f9d1\u200d\U0001f91d\u200d\U0001f9d1",
    "\u263a \u2639 \u2603 \u2600",
    "\U0001f4a9 \U0001f916 \U0001f47b",
    "\U0001faf6\U0001fae8",
    "  \U0001f600  ",
    "\n\U0001f600\n",
]

INVISIBLE = [
    "zero\u200bwidth\u200bspace",
    "zero\u200cwidth\u200dnon-joiner",
    "\u200b",
    "\ufeffBOM at start",
    "non\u00a0breaking\u00a0space",
    "\u00a0\u00a0\u00a0",
    "a\u00a0 b",
    "narrow\u202fnbsp",
    "ideographic\u3000space",
    "em\u2003space thin\u2009space hair\u200aspace",
    "line\u2028separator",
    "para\u2029separator",
    "next\u0085line",
    "ogham\u1680space",
    "mongolian\u180evowel",
    "soft\u00adhyphen",
    "word joiner\u2060here",
    "left\u200eto\u200fright marks",
    "\u202ebidi override\u202c",
    "\u0000nul and \u0001 control \u001f chars \u007f",
    "\u0007bell \u001bescape",
    " \u00a0 \u00a0",
    "\u3000\u3000\u3000",
    "\u00a0\n\u00a0",
    "x\u2028\u2028y",
]

LONG = [
    "a" * 300,
    "ab" * 200,
    " " * 100,
    "\n" * 64,
    "\r\n" * 40,
    "\t" * 50,
    "=" * 120,
    "-" * 80 + "\n" + "-" * 80,
    "!" * 77,
    "\u4e00" * 50,
    "\U0001f600" * 30,
    "9" * 60,
    "Pneumonoultramicroscopicsilicovolcanoconiosis",
    "Supercalifragilisticexpialidocious" * 5,
    "Donaudampfschifffahrtselektrizit\u00e4tenhauptbetriebswerkbauunterbeamtengesellschaft",
    "Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch",
    "https://example.com/" + "very/long/path/" * 20 + "index.html",
    "x" * 1000,
    "ab cd " * 100,
    "\u00e9" * 100,
    "e\u0301" * 50,
]

SPECIAL = [
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n",
    "text<|im_end|>more text",
    " <|im_end|> ",
    "<|im_end|><|im_end|>",
    "<|im_end|\n>",
    "<|im_end",
    "<|im_start|><|endoftext|>",
    "<think>",
    "</think>",
    "<think>\nLet me reason.\n</think>\n\nThe answer is 4.",
    "<think></think>",
    "a<think>b</think>c",
    "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
    "<tool_response>ok</tool_response>",
    "<|fim_prefix|>def f():<|fim_suffix|>\n<|fim_middle|>",
    "<|fim_pad|><|repo_name|>nibble<|file_sep|>",
    "<|object_ref_start|>x<|object_ref_end|><|box_start|>(1,2)<|box_end|>",
    "<|quad_start|><|quad_end|><|vision_start|><|vision_end|>",
    "<|vision_pad|><|image_pad|><|video_pad|>",
    "<|IM_END|>",
    "< think >",
    "<<think>>",
    "<|im_start|>user\n<think>\nhmm\n</think><|im_end|>",
    "\n<|im_end|>\n",
    "Hello<|endoftext|>",
    "<|endoftext|><|endoftext|><|endoftext|>",
    "<|unknown_token|>",
    "<|",
    "|>",
    "<|im_start|>assistant\n<think>\n\n</think>\n\n",
]


def generated_cases():
    """Systematic combinations: each short token with each whitespace/punctuation context."""
    words = ["hello", "Hello", "HELLO", "don't", "42", "\u00e9t\u00e9", "\u4f60\u597d", "\U0001f600", "x", "'s"]
    contexts = ["{}", " {}", "{} ", "\t{}", "\n{}", "{}\n", " {}\n", "  {}", "({})", "{}.", "{}!!", "\r\n{}\r\n"]
    out = []
    for w in words:
        for c in contexts:
            out.append(c.format(w))
    # Whitespace runs of each kind followed by a letter, a digit, punctuation and end of text.
    for ws in [" ", "  ", "   ", "\t", " \t", "\t ", "\n", " \n", "\n ", "\r\n", " \r\n ", "\u00a0", " \u00a0"]:
        for tail in ["a", "1", ".", ""]:
            out.append("x" + ws + tail)
    # Apostrophe contractions in every case spelling.
    for c in ["s", "t", "re", "ve", "m", "ll", "d", "S", "T", "RE", "Re", "rE", "VE", "M", "LL", "lL", "D"]:
        out.append("it'" + c + " here")
    return out


def corpus_excerpt():
    with open(CORPUS, encoding="utf-8") as f:
        text = f.read()
    return text, [text[:3000], text[100000:102000]]


def hash64(ids):
    h = 0
    for i in ids:
        h = (h * 1000003 + i + 1) % (1 << 64)
    return h


def byte_level_char(tok, b):
    """Token id of the single byte b (GPT-2 bytes_to_unicode mapping)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + list(
        range(ord("\u00ae"), ord("\u00ff") + 1))
    cs = bs[:]
    n = 0
    for x in range(256):
        if x not in bs:
            bs.append(x)
            cs.append(256 + n)
            n += 1
    ch = chr(cs[bs.index(b)])
    tid = tok.token_to_id(ch)
    assert tid is not None, (b, ch)
    return tid


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gen_tokenizer_fixtures.py OUTDIR  (run from the repository root)")
    outdir = os.path.join(sys.argv[1], "tokenizer")
    os.makedirs(outdir, exist_ok=True)

    tok = Tokenizer.from_file(TOKENIZER_JSON)
    if not hasattr(tok, "encode_special_tokens"):
        sys.exit("tokenizers %s has no Tokenizer.encode_special_tokens" % tokenizers.__version__)

    corpus_text, excerpts = corpus_excerpt()
    texts = ENGLISH + DIGITS + CODE + SCRIPTS + ACCENTS + EMOJI + INVISIBLE + LONG + SPECIAL
    texts += generated_cases() + excerpts
    seen = set()
    unique = []
    for t in texts:
        if t not in seen:
            seen.add(t)
            unique.append(t)

    cases = []
    for t in unique:
        tok.encode_special_tokens = True
        ids = tok.encode(t, add_special_tokens=False).ids
        tok.encode_special_tokens = False
        ids_special = tok.encode(t, add_special_tokens=False).ids
        cases.append({
            "text": t,
            "ids": ids,
            "ids_special": ids_special,
            "decoded": tok.decode(ids_special, skip_special_tokens=False),
            "decoded_skip": tok.decode(ids_special, skip_special_tokens=True),
        })

    # Byte tokens that do not form valid UTF-8 alone, and splits of multi-byte characters.
    b = lambda x: byte_level_char(tok, x)
    decode_ids = [[b(x)] for x in (0x80, 0xBF, 0xC0, 0xC3, 0xE2, 0xED, 0xF0, 0xF4, 0xF5, 0xFF)]
    decode_ids += [
        [b(0xF0), b(0x9F)],                      # truncated 4-byte sequence
        [b(0xF0), b(0x9F), b(0x98)],             # truncated, one byte short
        [b(0xF0), b(0x9F), b(0x98), b(0x80)],    # complete U+1F600
        [b(0xE2), b(0x28), b(0xA1)],             # invalid continuation
        [b(0xED), b(0xA0), b(0x80)],             # UTF-16 surrogate encoded in UTF-8
        [b(0xC0), b(0x80)],                      # overlong NUL
        [b(0xE0), b(0x80), b(0x80)],             # overlong
        [b(0xF4), b(0x90), b(0x80), b(0x80)],    # above U+10FFFF
        [b(0x41), b(0xC3), b(0x41)],             # lead byte then ASCII
        [b(0xC3), b(0xA9), b(0xA9)],             # stray continuation after a complete char
    ]
    decode_cases = [{"ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)} for ids in decode_ids]

    tok.encode_special_tokens = False
    corpus_ids = tok.encode(corpus_text, add_special_tokens=False).ids
    corpus = {
        "path": "corpus/tinyshakespeare_input.txt",
        "num_ids": len(corpus_ids),
        "first_ids": corpus_ids[:2000],
        "hash64": str(hash64(corpus_ids)),
    }

    meta = {
        "tokenizers_version": tokenizers.__version__,
        "tokenizer_json": TOKENIZER_JSON,
        "ids": "encode(text, add_special_tokens=False) with encode_special_tokens=True "
               "(special added tokens not parsed; non-special added tokens still matched)",
        "ids_special": "encode(text, add_special_tokens=False) with encode_special_tokens=False",
        "decoded": "decode(ids_special, skip_special_tokens=False)",
        "decoded_skip": "decode(ids_special, skip_special_tokens=True)",
        "hash64": "h = (h * 1000003 + id + 1) mod 2^64 from h = 0, as a decimal string",
        "num_cases": len(cases),
    }
    path = os.path.join(outdir, "qwen3_cases.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "cases": cases, "decode_cases": decode_cases, "corpus": corpus}, f,
                  ensure_ascii=True, indent=None, separators=(",", ":"))
        f.write("\n")
    size = os.path.getsize(path)
    print("wrote %s: %d cases, %d decode cases, corpus %d ids, %d bytes" %
          (path, len(cases), len(decode_cases), len(corpus_ids), size))
    if len(cases) < 250:
        sys.exit("expected at least 250 cases, got %d" % len(cases))
    if size > 2 * 1024 * 1024:
        sys.exit("fixture is larger than 2 MB")


if __name__ == "__main__":
    main()
