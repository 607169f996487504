// defines: TokenizerData, everything a loaded Tokenizer holds (internal to src/tokenizer), and
// build_tokenizer_data(), which both file formats go through.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/bpe.h"

namespace nibble {

struct AddedTokenSpec {
  int32_t id;
  std::string content;  // matched in raw text, byte for byte
  bool special;         // special: true in the file
};

// The model part as read from either format, still in the vocabulary's byte-level spelling.
struct TokenizerSpec {
  std::vector<std::pair<std::string, int32_t>> vocab;       // token string -> id
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  std::vector<AddedTokenSpec> added;
  bool nfc = true;    // NFC normalizer (tokenizer.json says; Qwen2's vocab.json format implies it)
  std::string where;  // the file(s) it came from, for error messages
};

struct TransparentHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringIdMap = std::unordered_map<std::string, int32_t, TransparentHash, std::equal_to<>>;

struct TokenizerData {
  TokenizerData(const std::array<int32_t, 256>& byte_ids, const std::vector<Bpe::Merge>& merges)
      : bpe(byte_ids, merges) {}

  std::vector<std::string> pieces;  // (vocab_size) id -> raw bytes; empty for unused ids
  std::vector<uint8_t> special;     // (vocab_size) 1 for added tokens marked special
  StringIdMap vocab;                // raw bytes -> id, model vocabulary
  StringIdMap added_ids;            // content -> id, added tokens
  std::vector<AddedTokenSpec> added;
  // added_by_first_byte[b]: indices into `added` of tokens starting with byte b, longest first.
  std::array<std::vector<uint32_t>, 256> added_by_first_byte;
  bool nfc = true;
  Bpe bpe;
};

// Checks the spec (every merge and its result in the vocabulary, all 256 bytes present, ids
// unique) and builds the lookup tables; throws Error naming spec.where.
std::unique_ptr<TokenizerData> build_tokenizer_data(const TokenizerSpec& spec);

}  // namespace nibble
