// Encoding and decoding (loading is in tokenizer_load.cpp).
//
// Added tokens, the way HF tokenizers' AddedVocabulary treats them: before normalization the raw
// text is searched for the contents of all added tokens, leftmost match first and the longest
// one at that position. A match of a special token (special: true) when the caller did not ask
// for special tokens is skipped, but the text it covers is still consumed by the search, so it is
// tokenized as ordinary text (tokenizers' encode_special_tokens = true). Added tokens that are not
// special (Qwen3's <think>, <tool_call>, <|fim_prefix|> ...) are matched in both modes.
#include "tokenizer/tokenizer.h"

#include "core/error.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/tokenizer_data.h"
#include "tokenizer/unicode.h"

namespace nibble {
namespace {

// Normalize, pre-tokenize and BPE one stretch of text that holds no added token.
void encode_segment(const TokenizerData& d, std::string_view text, std::vector<int32_t>& out) {
  if (text.empty()) return;
  std::string normalized;
  if (d.nfc && !unicode::is_nfc_quick(text)) {
    normalized = unicode::nfc(text);
    text = normalized;
  }
  PretokenizeScratch scratch;
  std::vector<std::string_view> words;
  split_qwen(text, scratch, words);
  for (std::string_view w : words) d.bpe.encode(w, out);
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<TokenizerData> data) : d_(std::move(data)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool parse_special) const {
  const TokenizerData& d = *d_;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  size_t segment = 0;  // start of the text not yet encoded
  for (size_t pos = 0; pos < text.size();) {
    const auto& candidates = d.added_by_first_byte[static_cast<uint8_t>(text[pos])];
    const AddedTokenSpec* match = nullptr;
    for (uint32_t index : candidates) {  // longest first
      if (text.substr(pos).starts_with(d.added[index].content)) {
        match = &d.added[index];
        break;
      }
    }
    if (match == nullptr) {
      ++pos;
      continue;
    }
    if (match->special && !parse_special) {
      pos += match->content.size();  // consumed by the search, left in the text
      continue;
    }
    encode_segment(d, text.substr(segment, pos - segment), out);
    out.push_back(match->id);
    pos += match->content.size();
    segment = pos;
  }
  encode_segment(d, text.substr(segment), out);
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string bytes;
  for (int32_t id : ids) {
    // Ids with no token (beyond the vocabulary, e.g. embedding padding rows) are skipped, as HF
    // does.
    if (id < 0 || size_t(id) >= d_->pieces.size()) continue;
    if (skip_special && d_->special[id]) continue;
    bytes += d_->pieces[id];
  }
  return unicode::utf8_lossy(bytes);
}

std::string Tokenizer::piece(int32_t id) const {
  if (id < 0 || size_t(id) >= d_->pieces.size()) {
    fail("token id {} is out of range: expected 0 <= id < {}", id, d_->pieces.size());
  }
  return d_->pieces[id];
}

std::optional<int32_t> Tokenizer::token_id(std::string_view token) const {
  if (auto it = d_->added_ids.find(token); it != d_->added_ids.end()) return it->second;
  std::string bytes;
  if (!byte_level::to_bytes(token, bytes)) return std::nullopt;
  if (auto it = d_->vocab.find(bytes); it != d_->vocab.end()) return it->second;
  return std::nullopt;
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && size_t(id) < d_->special.size() && d_->special[id] != 0;
}

int64_t Tokenizer::vocab_size() const { return int64_t(d_->pieces.size()); }

StreamDecoder::StreamDecoder(const Tokenizer& tok, bool skip_special)
    : tok_(&tok), skip_special_(skip_special) {}

std::string StreamDecoder::push(int32_t id) {
  // decode() would replace a split character by U+FFFD, so take the raw bytes instead.
  if (id < 0 || id >= tok_->vocab_size() || (skip_special_ && tok_->is_special(id))) return {};
  pending_ += tok_->piece(id);
  const size_t ready = unicode::utf8_complete_prefix(pending_);
  std::string out = unicode::utf8_lossy(std::string_view(pending_).substr(0, ready));
  pending_.erase(0, ready);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out = unicode::utf8_lossy(pending_);
  pending_.clear();
  return out;
}

}  // namespace nibble
