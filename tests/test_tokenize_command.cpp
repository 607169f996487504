// `nibble tokenize`, run as a user runs it: ids and pieces on stdout, text from argv or stdin.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "support/test_support.h"
#include "tokenizer/tokenizer.h"

namespace nibble {
namespace {

using test::run_nibble;

std::string qwen_dir() { return (test::data_dir() / "qwen3_tokenizer").string(); }

std::string ids_line(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? " " : "") + std::to_string(ids[i]);
  return s + "\n";
}

TEST(TokenizeCommand, IdsOnly) {
  const auto r = run_nibble({"tokenize", "--model", qwen_dir(), "--ids-only", "Hello world"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "9707 1879\n");
}

TEST(TokenizeCommand, IdsWithEscapedPieces) {
  const auto r = run_nibble({"tokenize", "-m", qwen_dir(), "Hello world\n\tx\\"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Tokenizer tok = Tokenizer::load_dir(qwen_dir());
  std::string want;
  for (int32_t id : tok.encode("Hello world\n\tx\\")) {
    std::string piece = tok.piece(id);
    std::string escaped;
    for (char c : piece) {
      escaped += c == '\n' ? "\\n" : c == '\t' ? "\\t" : c == '\\' ? "\\\\" : std::string(1, c);
    }
    want += std::to_string(id) + "\t" + escaped + "\n";
  }
  EXPECT_EQ(r.out, want);
  EXPECT_NE(r.out.find("9707\tHello\n1879\t world\n"), std::string::npos) << r.out;
}

TEST(TokenizeCommand, PartialUtf8AndInvisiblesAreEscaped) {
  // U+00A0 NBSP is whitespace, so it prints as an escape; a lone 0xFF byte as \xFF.
  const auto r = run_nibble({"tokenize", "-m", qwen_dir(), "-"}, "a\xC2\xA0\xff");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\\u{00A0}"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\\xFF"), std::string::npos) << r.out;
}

TEST(TokenizeCommand, StdinIsReadByteForByte) {
  const std::string text = "line one\r\nline two\r\n\r\n  \t tabs\xff\xfe <|im_end|>\n";
  const auto r = run_nibble({"tokenize", "--model", qwen_dir(), "--ids-only", "-"}, text);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Tokenizer tok = Tokenizer::load_dir(qwen_dir());
  EXPECT_EQ(r.out, ids_line(tok.encode(text)));
  // The vocab.json + merges.txt directory gives the same ids.
  const auto r2 = run_nibble(
      {"tokenize", "--model", (test::data_dir() / "qwen3_4b_instruct_2507").string(), "--ids-only", "-"},
      text);
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  EXPECT_EQ(r2.out, r.out);
}

TEST(TokenizeCommand, SpecialTokensOnlyWhenAsked) {
  const auto plain = run_nibble({"tokenize", "-m", qwen_dir(), "--ids-only", "<|im_end|>"});
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_EQ(plain.out.find("151645"), std::string::npos) << plain.out;
  const auto special = run_nibble({"tokenize", "-m", qwen_dir(), "--ids-only", "--special", "<|im_end|>"});
  ASSERT_EQ(special.exit_code, 0) << special.err;
  EXPECT_EQ(special.out, "151645\n");
}

TEST(TokenizeCommand, DirectoryWithoutTokenizerIsAClearError) {
  test::ScratchDir dir("tokenize-empty");
  const auto r = run_nibble({"tokenize", "--model", dir.path().string(), "hi"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_NE(r.err.find("tokenizer.json"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("vocab.json + merges.txt"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(dir.path().string()), std::string::npos) << r.err;
}

TEST(TokenizeCommand, MissingTextIsAUsageError) {
  const auto r = run_nibble({"tokenize", "--model", qwen_dir()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("text"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace nibble
