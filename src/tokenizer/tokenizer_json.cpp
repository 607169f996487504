#include "tokenizer/tokenizer_json.h"

#include <cstdint>

#include "core/error.h"

namespace nibble {
namespace {

using nlohmann::json;

class Reader : public nlohmann::json_sax<json> {
 public:
  Reader(TokenizerJson& out, std::vector<std::string> vocab_path, const std::string& where)
      : out_(out), vocab_path_(std::move(vocab_path)), where_(where) {
    if (!vocab_path_.empty()) {
      merges_path_ = vocab_path_;
      merges_path_.back() = "merges";
    }
  }

  bool null() override { return value(json()); }
  bool boolean(bool v) override { return value(json(v)); }
  bool number_integer(number_integer_t v) override {
    if (mode_ == Mode::kVocab) return vocab_id(v);
    return value(json(v));
  }
  bool number_unsigned(number_unsigned_t v) override {
    if (mode_ == Mode::kVocab) return vocab_id(v > uint64_t(INT64_MAX) ? -1 : int64_t(v));
    return value(json(v));
  }
  bool number_float(number_float_t v, const string_t&) override { return value(json(v)); }
  bool binary(binary_t&) override { return value(json()); }

  bool string(string_t& v) override {
    if (mode_ == Mode::kMerges) {
      if (merge_level_ == 1) {
        if (pair_.size() == 2) bad_merge();
        pair_.push_back(std::move(v));
        return true;
      }
      // Older files write a merge as "a b".
      const size_t sp = v.find(' ');
      if (sp == std::string::npos || v.find(' ', sp + 1) != std::string::npos) {
        fail("{}: merge {} {:?}: expected two tokens separated by one space", where_, out_.merges.size(), v);
      }
      out_.merges.emplace_back(v.substr(0, sp), v.substr(sp + 1));
      return true;
    }
    return value(json(std::move(v)));
  }

  bool key(string_t& k) override {
    key_ = std::move(k);
    return true;
  }

  bool start_object(std::size_t) override {
    if (mode_ != Mode::kDom) fail_unexpected("an object");
    if (child_path_is(vocab_path_)) {
      value(json::object());  // placeholder: the entries go to out_.vocab
      mode_ = Mode::kVocab;
      out_.has_vocab = true;
      return true;
    }
    return open(json::object());
  }
  bool end_object() override {
    if (mode_ == Mode::kVocab) {
      mode_ = Mode::kDom;
      return true;
    }
    return close();
  }

  bool start_array(std::size_t) override {
    if (mode_ == Mode::kMerges) {
      if (merge_level_ != 0) bad_merge();
      merge_level_ = 1;
      pair_.clear();
      return true;
    }
    if (mode_ == Mode::kVocab) fail_unexpected("an array");
    if (!merges_path_.empty() && child_path_is(merges_path_)) {
      value(json::array());
      mode_ = Mode::kMerges;
      merge_level_ = 0;
      return true;
    }
    return open(json::array());
  }
  bool end_array() override {
    if (mode_ == Mode::kMerges) {
      if (merge_level_ == 0) {
        mode_ = Mode::kDom;
        return true;
      }
      if (pair_.size() != 2) bad_merge();
      out_.merges.emplace_back(std::move(pair_[0]), std::move(pair_[1]));
      merge_level_ = 0;
      return true;
    }
    return close();
  }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    fail("{}: expected valid JSON, found an error: {}", where_, e.what());
  }

 private:
  enum class Mode { kDom, kVocab, kMerges };

  // The object-key path of the container about to open (arrays contribute "[]").
  bool child_path_is(const std::vector<std::string>& target) const {
    const bool in_object = !stack_.empty() && stack_.back()->is_object();
    const size_t depth = path_.size() + (stack_.empty() ? 0 : 1);
    if (depth != target.size()) return false;
    for (size_t i = 0; i < path_.size(); ++i) {
      if (path_[i] != target[i]) return false;
    }
    return stack_.empty() || (in_object && key_ == target.back());
  }

  json* place(json&& v) {
    if (stack_.empty()) {
      out_.rest = std::move(v);
      return &out_.rest;
    }
    json& parent = *stack_.back();
    if (parent.is_array()) {
      parent.push_back(std::move(v));
      return &parent.back();
    }
    json& slot = parent[key_];
    slot = std::move(v);
    return &slot;
  }

  bool value(json&& v) {
    if (mode_ == Mode::kVocab) fail("{}: vocabulary entry {:?}: expected an integer id", where_, key_);
    if (mode_ == Mode::kMerges) bad_merge();
    place(std::move(v));
    return true;
  }

  bool open(json&& container) {
    if (!stack_.empty()) path_.push_back(stack_.back()->is_object() ? key_ : "[]");
    stack_.push_back(place(std::move(container)));
    return true;
  }
  bool close() {
    stack_.pop_back();
    if (!path_.empty() && stack_.size() == path_.size()) path_.pop_back();
    return true;
  }

  bool vocab_id(int64_t id) {
    if (id < 0 || id > INT32_MAX) {
      fail("{}: vocabulary entry {:?}: expected an id in [0, 2^31), found {}", where_, key_, id);
    }
    out_.vocab.emplace_back(std::move(key_), int32_t(id));
    return true;
  }

  [[noreturn]] void bad_merge() {
    fail("{}: merge {}: expected \"a b\" or [\"a\", \"b\"]", where_, out_.merges.size());
  }
  [[noreturn]] void fail_unexpected(const char* what) {
    fail("{}: vocabulary entry {:?}: expected an integer id, found {}", where_, key_, what);
  }

  TokenizerJson& out_;
  std::vector<std::string> vocab_path_, merges_path_;
  const std::string& where_;
  Mode mode_ = Mode::kDom;
  int merge_level_ = 0;
  std::vector<std::string> pair_;
  std::vector<json*> stack_;       // open containers of the DOM being built
  std::vector<std::string> path_;  // keys of stack_[1..] in their parents ("[]" in arrays)
  std::string key_;
};

}  // namespace

TokenizerJson parse_tokenizer_json(std::string_view text, const std::vector<std::string>& vocab_path,
                                   const std::string& where) {
  TokenizerJson out;
  Reader reader(out, vocab_path, where);
  if (!json::sax_parse(text, &reader)) fail("{}: expected valid JSON", where);
  return out;
}

}  // namespace nibble
