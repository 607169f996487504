// Tokenizer: ids against HF tokenizers (tests/fixtures/tokenizer/qwen3_cases.json, written by
// scripts/gen_tokenizer_fixtures.py on the GPU machine), ids read by hand from vocab.json, the
// vocab.json + merges.txt format against tokenizer.json, special tokens, streaming decode and
// load errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "core/error.h"
#include "core/file.h"
#include "support/test_support.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace nibble {
namespace {

using nlohmann::json;
using Ids = std::vector<int32_t>;
namespace fs = std::filesystem;

const Tokenizer& qwen() {
  static const Tokenizer tok = Tokenizer::load_dir(test::data_dir() / "qwen3_tokenizer");
  return tok;
}
const Tokenizer& qwen_vocab_merges() {
  static const Tokenizer tok = Tokenizer::load_dir(test::data_dir() / "qwen3_4b_instruct_2507");
  return tok;
}
const json& vocab_json() {
  static const json v = json::parse(read_text_file(test::data_dir() / "qwen3_4b_instruct_2507/vocab.json"));
  return v;
}
int32_t vocab(const char* token) { return vocab_json().at(token).get<int32_t>(); }

fs::path fixture_path() { return test::data_dir() / "tokenizer" / "qwen3_cases.json"; }
const json& fixture() {
  static const json f = fs::exists(fixture_path()) ? json::parse(read_text_file(fixture_path())) : json();
  return f;
}
#define REQUIRE_FIXTURE()                                                                                   \
  if (fixture().is_null()) {                                                                                \
    GTEST_SKIP() << "missing " << fixture_path()                                                            \
                 << ": run scripts/gen_tokenizer_fixtures.py with HF tokenizers and copy its output there"; \
  }

std::string u8(std::u8string_view s) { return std::string(s.begin(), s.end()); }

// Strings for the checks that need no HF fixture.
std::vector<std::string> sample_texts() {
  return {
      "Hello world",
      "  leading and trailing  \n",
      "I'M DON'T it's they'll",
      "def f(x):\n\treturn x ** 2\r\n\r\n",
      "1234567 3.14",
      u8(u8"caf\u00e9 na\u00efve \u4f60\u597d\uff0c\u4e16\u754c \u041f\u0440\u0438\u0432\u0435\u0442 "
         u8"\u0645\u0631\u062d\u0628\u0627"),
      u8(u8"\U0001F468\u200D\U0001F469\u200D\U0001F467 \U0001F44D\U0001F3FD \U0001F1FA\U0001F1F8"),
      u8(u8"\ud55c\uad6d\uc5b4 \u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35 \u0928\u092e\u0938\u094d\u0924\u0947"),
      "<|im_start|>user\nHi<|im_end|>\n<think>\nhmm\n</think>",
      std::string(500, 'a'),
      u8(u8"zero\u200Bwidth\u00A0nbsp\u3000ideographic")};
}

TEST(Tokenizer, HandCheckedIdsFromVocabJson) {
  const Tokenizer& tok = qwen();
  EXPECT_EQ(tok.encode("Hello"), (Ids{vocab("Hello")}));
  EXPECT_EQ(tok.encode("Hello world"), (Ids{vocab("Hello"), vocab("\u0120world")}));
  EXPECT_EQ(tok.encode("\n"), (Ids{vocab("\u010a")}));
  EXPECT_EQ(tok.encode("\n\n"), (Ids{vocab("\u010a\u010a")}));
  EXPECT_EQ(tok.encode("1234"), (Ids{vocab("1"), vocab("2"), vocab("3"), vocab("4")}));
  EXPECT_EQ(tok.encode("don't"), (Ids{vocab("don"), vocab("'t")}));
  EXPECT_EQ(tok.encode("I'M DON'T"), (Ids{vocab("I"), vocab("'M"), vocab("\u0120DON"), vocab("'T")}));
  EXPECT_EQ(tok.encode(""), Ids{});
  EXPECT_EQ(tok.token_id("Hello"), vocab("Hello"));
  EXPECT_EQ(tok.token_id("\u0120world"), vocab("\u0120world"));  // vocabulary spelling
  EXPECT_EQ(tok.token_id("no-such-token-xyz"), std::nullopt);
  EXPECT_EQ(tok.piece(vocab("\u0120world")), " world");  // raw bytes
  EXPECT_EQ(tok.vocab_size(), 151669);
}

TEST(Tokenizer, NfcBeforeSplitting) {
  const Tokenizer& tok = qwen();
  EXPECT_EQ(tok.encode(u8(u8"cafe\u0301")), tok.encode(u8(u8"caf\u00e9")));
  EXPECT_EQ(tok.encode(u8(u8"\u1100\u1161")), tok.encode(u8(u8"\uac00")));
  EXPECT_EQ(tok.decode(tok.encode(u8(u8"\u212b"))), u8(u8"\u00c5"));
}

TEST(Tokenizer, SpecialTokens) {
  const Tokenizer& tok = qwen();
  const int32_t im_end = 151645, think = 151667, endoftext = 151643;
  EXPECT_EQ(tok.token_id("<|im_end|>"), im_end);
  EXPECT_EQ(tok.token_id("<think>"), think);
  EXPECT_TRUE(tok.is_special(im_end));
  EXPECT_TRUE(tok.is_special(endoftext));
  EXPECT_FALSE(tok.is_special(think));  // added token with special: false
  EXPECT_FALSE(tok.is_special(vocab("Hello")));
  EXPECT_FALSE(tok.is_special(-1));
  EXPECT_EQ(tok.piece(im_end), "<|im_end|>");

  // Asked for: special token text becomes the special token.
  EXPECT_EQ(tok.encode("<|im_end|>", true), (Ids{im_end}));
  EXPECT_EQ(tok.encode("a<|im_end|>b", true), (Ids{vocab("a"), im_end, vocab("b")}));
  // Not asked for: the same text is ordinary text, several tokens, none of them special.
  const Ids plain = tok.encode("<|im_end|>");
  EXPECT_GT(plain.size(), 1u);
  for (int32_t id : plain) EXPECT_FALSE(tok.is_special(id)) << id;
  EXPECT_EQ(tok.decode(plain), "<|im_end|>");
  // Non-special added tokens are matched in both modes, as HF does.
  EXPECT_EQ(tok.encode("<think>"), (Ids{think}));
  EXPECT_EQ(tok.encode("<think>", true), (Ids{think}));
  // A match that is not a whole token stays text.
  const Ids partial = tok.encode("<|im_end", true);
  EXPECT_EQ(std::count(partial.begin(), partial.end(), im_end), 0);

  const Ids ids = tok.encode("<|im_start|>user\nHi<|im_end|><think>x</think>", true);
  EXPECT_EQ(tok.decode(ids), "<|im_start|>user\nHi<|im_end|><think>x</think>");
  EXPECT_EQ(tok.decode(ids, true), "user\nHi<think>x</think>");
}

TEST(Tokenizer, DecodeSkipsIdsWithoutTokenAndRejectsThemInPiece) {
  const Tokenizer& tok = qwen();
  EXPECT_EQ(tok.decode(Ids{vocab("Hello"), 151800, -5, vocab("\u0120world")}), "Hello world");
  EXPECT_THROW(tok.piece(151669), Error);
  EXPECT_THROW(tok.piece(-1), Error);
}

TEST(Tokenizer, RoundTripsNfcTextAndAnyBytes) {
  const Tokenizer& tok = qwen();
  for (const std::string& text : sample_texts()) {
    EXPECT_EQ(tok.decode(tok.encode(text, true)), text) << text;
    EXPECT_EQ(tok.decode(tok.encode(text, false)), text) << text;
  }
  // Bytes that are not UTF-8 still get tokens; their pieces give back the exact bytes.
  const std::string bytes = "ok \xff\xfe bad \xC3 end \xF0\x9F\x98";
  std::string joined;
  for (int32_t id : tok.encode(bytes)) joined += tok.piece(id);
  EXPECT_EQ(joined, bytes);
  EXPECT_EQ(tok.decode(tok.encode(bytes)), unicode::utf8_lossy(bytes));
}

TEST(Tokenizer, VocabMergesFormatGivesTheSameIds) {
  const Tokenizer& a = qwen();
  const Tokenizer& b = qwen_vocab_merges();
  EXPECT_EQ(a.vocab_size(), b.vocab_size());
  for (int32_t id = 151643; id < 151669; ++id) {
    EXPECT_EQ(a.piece(id), b.piece(id));
    EXPECT_EQ(a.is_special(id), b.is_special(id)) << id;
  }
  std::vector<std::string> texts = sample_texts();
  if (!fixture().is_null()) {
    for (const json& c : fixture()["cases"]) texts.push_back(c["text"].get<std::string>());
  }
  for (const std::string& text : texts) {
    EXPECT_EQ(a.encode(text), b.encode(text)) << text;
    EXPECT_EQ(a.encode(text, true), b.encode(text, true)) << text;
  }
}

TEST(Tokenizer, ThreadsShareOneTokenizer) {
  const Tokenizer& tok = qwen();
  const std::vector<std::string> texts = sample_texts();
  std::vector<Ids> want;
  for (const auto& t : texts) want.push_back(tok.encode(t, true));
  std::vector<int> bad(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round) {
        for (size_t i = 0; i < texts.size(); ++i) bad[t] += tok.encode(texts[i], true) != want[i];
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad, std::vector<int>(4, 0));
}

std::string stream_all(const Tokenizer& tok, const Ids& ids, std::vector<std::string>* chunks = nullptr) {
  StreamDecoder dec(tok);
  std::string out;
  for (int32_t id : ids) {
    std::string s = dec.push(id);
    if (chunks) chunks->push_back(s);
    out += s;
  }
  std::string rest = dec.flush();
  if (chunks) chunks->push_back(rest);
  return out + rest;
}

TEST(StreamDecoder, HoldsBackSplitCharacters) {
  const Tokenizer& tok = qwen();
  // U+1F600 sent as its four single-byte tokens.
  const std::string smile = u8(u8"\U0001F600");
  Ids bytes;
  for (unsigned char c : smile) bytes.push_back(tok.encode(std::string(1, char(c))).at(0));
  StreamDecoder dec(tok);
  EXPECT_EQ(dec.push(bytes[0]), "");
  EXPECT_EQ(dec.push(bytes[1]), "");
  EXPECT_EQ(dec.push(bytes[2]), "");
  EXPECT_EQ(dec.push(bytes[3]), smile);
  EXPECT_EQ(dec.flush(), "");
  // A truncated character followed by text: the held bytes become U+FFFD, as decode() does.
  const Ids broken = {bytes[0], bytes[1], vocab("A")};
  EXPECT_EQ(stream_all(tok, broken),
            "\xEF\xBF\xBD"
            "A");
  EXPECT_EQ(stream_all(tok, broken), tok.decode(broken));
  // Left incomplete at the end: flush() gives U+FFFD.
  StreamDecoder dec2(tok);
  EXPECT_EQ(dec2.push(bytes[0]), "");
  EXPECT_EQ(dec2.flush(), "\xEF\xBF\xBD");
}

TEST(StreamDecoder, EveryChunkIsCompleteUtf8AndTheyJoinToDecode) {
  const Tokenizer& tok = qwen();
  for (const std::string& text : sample_texts()) {
    const Ids ids = tok.encode(text, true);
    std::vector<std::string> chunks;
    EXPECT_EQ(stream_all(tok, ids, &chunks), text);
    for (const auto& c : chunks) EXPECT_EQ(unicode::utf8_lossy(c), c) << "chunk is not valid UTF-8";
  }
  // Random id sequences, many of them invalid UTF-8: streaming must agree with decode().
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> any_id(0, int32_t(tok.vocab_size()) - 1);
  for (int round = 0; round < 200; ++round) {
    Ids ids(1 + round % 13);
    for (auto& id : ids)
      id = round % 2 ? any_id(rng) : tok.encode(std::string(1, char(0x80 + rng() % 128)))[0];
    EXPECT_EQ(stream_all(tok, ids), tok.decode(ids));
  }
}

TEST(TokenizerLoad, MissingFilesListWhatWasExpected) {
  test::ScratchDir dir("tok-missing");
  EXPECT_FALSE(Tokenizer::dir_has_tokenizer(dir.path()));
  try {
    Tokenizer::load_dir(dir.path());
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("tokenizer.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find("vocab.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find("merges.txt"), std::string::npos) << msg;
    EXPECT_NE(msg.find(dir.path().string()), std::string::npos) << msg;
  }
  // vocab.json alone is not enough.
  write_file_atomic(dir / "vocab.json", "{}");
  EXPECT_FALSE(Tokenizer::dir_has_tokenizer(dir.path()));
  EXPECT_THROW(Tokenizer::load_dir(dir.path()), Error);
  EXPECT_TRUE(Tokenizer::dir_has_tokenizer(test::data_dir() / "qwen3_tokenizer"));
  EXPECT_TRUE(Tokenizer::dir_has_tokenizer(test::data_dir() / "qwen3_4b_instruct_2507"));
}

std::string load_error(const std::string& tokenizer_json) {
  test::ScratchDir dir("tok-bad");
  write_file_atomic(dir / "tokenizer.json", tokenizer_json);
  try {
    Tokenizer::load_dir(dir.path());
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(TokenizerLoad, MalformedOrUnsupportedFilesAreErrors) {
  EXPECT_NE(load_error("{not json").find("JSON"), std::string::npos);
  EXPECT_NE(load_error("[]").find("model"), std::string::npos);
  // A WordPiece model, a different pre-tokenizer, a merge whose parts are missing.
  const json base = json::parse(R"({
    "normalizer": {"type": "NFC"},
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"Regex": "PATTERN"}, "behavior": "Isolated", "invert": false},
      {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]},
    "decoder": {"type": "ByteLevel"},
    "added_tokens": [],
    "model": {"type": "BPE", "vocab": {}, "merges": []}})");
  json good = base;
  good["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
      "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  EXPECT_NE(load_error(base.dump()).find("pre_tokenizer"), std::string::npos);
  json wordpiece = good;
  wordpiece["model"]["type"] = "WordPiece";
  EXPECT_NE(load_error(wordpiece.dump()).find("model.type"), std::string::npos);
  json no_bytes = good;
  no_bytes["model"]["vocab"] = {{"a", 0}};
  EXPECT_NE(load_error(no_bytes.dump()).find("every byte"), std::string::npos);
  json bad_merge = good;
  for (int b = 0; b < 256; ++b)
    bad_merge["model"]["vocab"][byte_level::from_bytes(std::string(1, char(b)))] = b;
  EXPECT_EQ(load_error(bad_merge.dump()), "");  // all 256 bytes and no merges: loads
  bad_merge["model"]["merges"] = json::array({json::array({"a", "b"})});  // "ab" is not in the vocabulary
  const std::string msg = load_error(bad_merge.dump());
  EXPECT_NE(msg.find("merge 0"), std::string::npos) << msg;
  EXPECT_NE(msg.find("tokenizer.json"), std::string::npos) << msg;
  bad_merge["model"]["merges"] = json::object({{"a", "b"}});
  EXPECT_NE(load_error(bad_merge.dump()).find("model.merges"), std::string::npos);
  bad_merge["model"]["merges"] = json::array({json::array({"a", "b", "c"})});
  EXPECT_NE(load_error(bad_merge.dump()).find("merge 0"), std::string::npos);
}

// --- against HF tokenizers -------------------------------------------------------------------

TEST(TokenizerHf, IdsMatchBothModes) {
  REQUIRE_FIXTURE();
  const Tokenizer& tok = qwen();
  const json& cases = fixture()["cases"];
  ASSERT_GE(cases.size(), 250u);
  size_t mismatches = 0;
  for (const json& c : cases) {
    const std::string text = c["text"];
    const Ids ids = tok.encode(text, false), ids_special = tok.encode(text, true);
    EXPECT_EQ(ids, c["ids"].get<Ids>()) << "parse_special=false: " << json(text).dump();
    EXPECT_EQ(ids_special, c["ids_special"].get<Ids>()) << "parse_special=true: " << json(text).dump();
    mismatches += (ids != c["ids"].get<Ids>()) + (ids_special != c["ids_special"].get<Ids>());
  }
  EXPECT_EQ(mismatches, 0u) << "of " << 2 * cases.size();
}

TEST(TokenizerHf, DecodeMatchesAndRoundTrips) {
  REQUIRE_FIXTURE();
  const Tokenizer& tok = qwen();
  for (const json& c : fixture()["cases"]) {
    const std::string text = c["text"];
    const Ids ids = c["ids_special"].get<Ids>();
    EXPECT_EQ(tok.decode(ids), c["decoded"].get<std::string>()) << json(text).dump();
    EXPECT_EQ(tok.decode(ids, true), c["decoded_skip"].get<std::string>()) << json(text).dump();
    // HF normalizes to NFC, so the round trip gives back NFC text (all of it for NFC input).
    EXPECT_EQ(tok.decode(tok.encode(text, true)), unicode::nfc(text)) << json(text).dump();
    EXPECT_EQ(tok.decode(tok.encode(text, false)), unicode::nfc(text)) << json(text).dump();
    EXPECT_EQ(stream_all(tok, ids), c["decoded"].get<std::string>()) << json(text).dump();
  }
  for (const json& c : fixture()["decode_cases"]) {
    const Ids ids = c["ids"].get<Ids>();
    EXPECT_EQ(tok.decode(ids), c["decoded"].get<std::string>()) << c["ids"].dump();
    EXPECT_EQ(stream_all(tok, ids), c["decoded"].get<std::string>()) << c["ids"].dump();
  }
}

TEST(TokenizerHf, WholeCorpusIds) {
  REQUIRE_FIXTURE();
  const json& corpus = fixture()["corpus"];
  const Ids ids = qwen().encode(read_text_file(test::data_dir() / corpus["path"].get<std::string>()), true);
  EXPECT_EQ(ids.size(), corpus["num_ids"].get<size_t>());
  const Ids first = corpus["first_ids"].get<Ids>();
  EXPECT_EQ(Ids(ids.begin(), ids.begin() + std::min(ids.size(), first.size())), first);
  uint64_t h = 0;
  for (int32_t id : ids) h = h * 1000003u + uint64_t(id) + 1;
  EXPECT_EQ(std::to_string(h), corpus["hash64"].get<std::string>());
}

}  // namespace
}  // namespace nibble
