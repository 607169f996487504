// defines: Tokenizer (HF byte-level BPE as Qwen2/Qwen3 use it: tokenizer.json, or vocab.json +
// merges.txt + tokenizer_config.json) and StreamDecoder (ids in, complete UTF-8 out).
//
// Encoding follows HF tokenizers: added tokens are split out of the raw text first, then each
// remaining segment is NFC-normalized, pre-tokenized with the Qwen split regex, mapped through
// the GPT-2 byte-to-unicode table and merged by BPE rank.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace nibble {

struct TokenizerData;  // vocab, merges, added tokens, word cache (tokenizer.cpp)

class Tokenizer {
 public:
  // tokenizer.json, else vocab.json + merges.txt (+ tokenizer_config.json added tokens).
  // Throws Error listing the files expected when the directory has neither.
  static Tokenizer load_dir(const std::filesystem::path& dir);
  static bool dir_has_tokenizer(const std::filesystem::path& dir);
  static Tokenizer load_tokenizer_json(const std::filesystem::path& path);
  static Tokenizer load_vocab_merges(const std::filesystem::path& vocab_json,
                                     const std::filesystem::path& merges_txt,
                                     const std::filesystem::path& tokenizer_config_json);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // parse_special=false: the text of special tokens (special: true, e.g. "<|im_end|>") is
  // encoded as ordinary text. Added tokens that are not special (e.g. "<think>") are always
  // matched, as HF does. parse_special=true: every added token is matched.
  std::vector<int32_t> encode(std::string_view text, bool parse_special = false) const;
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;
  std::string piece(int32_t id) const;                            // raw bytes of one token
  std::optional<int32_t> token_id(std::string_view token) const;  // exact token string
  bool is_special(int32_t id) const;
  int64_t vocab_size() const;  // highest id + 1

 private:
  explicit Tokenizer(std::unique_ptr<TokenizerData> data);
  std::unique_ptr<TokenizerData> d_;
};

// Feed ids one by one; push() returns only complete UTF-8 characters and holds back the bytes of
// a character split across tokens until it is complete.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tok, bool skip_special = false);
  std::string push(int32_t id);
  std::string flush();  // whatever is held back (invalid bytes replaced by U+FFFD)

 private:
  const Tokenizer* tok_;
  bool skip_special_;
  std::string pending_;
};

}  // namespace nibble
