// defines: parse_tokenizer_json(), a streaming (SAX) reader for tokenizer.json and vocab.json.
//
// A tokenizer.json is 11 MB, almost all of it model.vocab (151k entries) and model.merges (151k
// pairs). Building a DOM of those costs about a second; this reader writes them straight into
// flat vectors and builds a DOM only for the small rest of the file (normalizer, pre_tokenizer,
// added_tokens, ...), where model.vocab and model.merges are left as empty containers.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nibble {

struct TokenizerJson {
  nlohmann::json rest;                                      // the document without vocab/merges
  std::vector<std::pair<std::string, int32_t>> vocab;       // token string -> id, file order
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  bool has_vocab = false;
};

// vocab_path: the object keys leading to the vocabulary ({"model", "vocab"} for tokenizer.json,
// {} for vocab.json, whose root is the vocabulary). merges are read at vocab_path's parent +
// "merges". Throws Error naming `where` on invalid JSON or a malformed vocabulary or merge.
TokenizerJson parse_tokenizer_json(std::string_view text, const std::vector<std::string>& vocab_path,
                                   const std::string& where);

}  // namespace nibble
