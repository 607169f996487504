// defines: Bpe, byte-level BPE by merge rank (HF tokenizers' BPE model without dropout, unk or
// byte fallback): a word's bytes start as single-byte tokens and the adjacent pair with the
// lowest merge rank (leftmost on ties) is merged until no pair has a merge. Results are cached
// per word; the cache is guarded by a mutex so that encode() may run on several threads.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace nibble {

class Bpe {
 public:
  struct Merge {
    int32_t left, right;  // token ids of the pair
    int32_t merged;       // token id of the result
  };
  // byte_ids[b]: the token of the single byte b. merges: in rank order (rank = index).
  Bpe(const std::array<int32_t, 256>& byte_ids, const std::vector<Merge>& merges);

  // Appends the tokens of one pre-tokenized word (raw bytes).
  void encode(std::string_view word, std::vector<int32_t>& out) const;

 private:
  struct Rule {
    int32_t rank;
    int32_t merged;
  };
  static uint64_t key(int32_t left, int32_t right) {
    return (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
  }
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;

  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };

  // Words longer than this are not cached (a long run of one character is rare and large).
  static constexpr size_t kMaxCachedWordBytes = 128;
  // The cache stops growing here (HF's BPE cache has a fixed capacity too).
  static constexpr size_t kMaxCacheEntries = 200000;

  std::array<int32_t, 256> byte_ids_;
  std::unordered_map<uint64_t, Rule> rules_;  // key(left, right) -> rank, merged token
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};

}  // namespace nibble
