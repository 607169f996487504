// Loading a Tokenizer from HF files: tokenizer.json, or vocab.json + merges.txt with the added
// tokens of tokenizer_config.json. Only the byte-level BPE that Qwen2/Qwen3 use is supported;
// anything else is refused with an error naming the field, rather than tokenized differently.
#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_data.h"
#include "tokenizer/tokenizer_json.h"

namespace nibble {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

json parse_json_file(const fs::path& path) {
  const std::string text = read_text_file(path);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    fail("{}: expected a JSON document, found invalid JSON: {}", path.string(), e.what());
  }
}

std::string describe(const json& j) {
  std::string s = j.dump();
  return s.size() > 200 ? s.substr(0, 200) + "..." : s;
}

bool is_null_or_empty_string(const json& j) {
  return j.is_null() || (j.is_string() && j.get<std::string>().empty());
}

// The tokenizer.json fields that change how text is tokenized must have the Qwen2/Qwen3 values.
void check_pipeline(const json& root, const std::string& where) {
  const json& model = root.at("model");
  if (model.value("type", "BPE") != "BPE") {
    fail("{}: expected model.type \"BPE\", found {}", where, describe(model.at("type")));
  }
  if (model.contains("dropout") && !model["dropout"].is_null()) {
    fail("{}: expected model.dropout null, found {}", where, describe(model["dropout"]));
  }
  for (const char* key : {"byte_fallback", "ignore_merges"}) {
    if (model.contains(key) && model[key].is_boolean() && model[key].get<bool>()) {
      fail("{}: model.{} = true is not supported (byte-level BPE as Qwen2/Qwen3 use it)", where, key);
    }
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && !is_null_or_empty_string(model[key])) {
      fail("{}: expected model.{} empty, found {}", where, key, describe(model[key]));
    }
  }

  const json& norm = root.value("normalizer", json());
  if (!norm.is_null() && !(norm.is_object() && norm.value("type", "") == "NFC")) {
    fail("{}: expected normalizer null or NFC, found {}", where, describe(norm));
  }

  const json& pre = root.value("pre_tokenizer", json());
  bool pre_ok = pre.is_object() && pre.value("type", "") == "Sequence" && pre.contains("pretokenizers") &&
                pre["pretokenizers"].size() == 2;
  if (pre_ok) {
    const json& split = pre["pretokenizers"][0];
    const json& bl = pre["pretokenizers"][1];
    pre_ok = split.value("type", "") == "Split" && split.contains("pattern") &&
             split["pattern"].is_object() && split["pattern"].value("Regex", "") == kQwenSplitPattern &&
             split.value("behavior", "") == "Isolated" && !split.value("invert", false) &&
             bl.value("type", "") == "ByteLevel" && !bl.value("add_prefix_space", false) &&
             !bl.value("use_regex", true);
  }
  if (!pre_ok) {
    fail(
        "{}: expected pre_tokenizer Sequence[Split(Qwen regex, Isolated), ByteLevel(use_regex=false)], "
        "found {}",
        where, describe(pre));
  }
  const json& dec = root.value("decoder", json());
  if (!(dec.is_object() && dec.value("type", "") == "ByteLevel")) {
    fail("{}: expected decoder ByteLevel, found {}", where, describe(dec));
  }
}

AddedTokenSpec parse_added_token(const json& t, int64_t id, const std::string& where) {
  if (!t.is_object() || !t.contains("content") || !t["content"].is_string()) {
    fail("{}: expected an added token object with a \"content\" string, found {}", where, describe(t));
  }
  for (const char* key : {"lstrip", "rstrip", "single_word"}) {
    if (t.value(key, false)) {
      fail("{}: added token {} has {} = true, which is not supported", where, describe(t["content"]), key);
    }
  }
  if (id < 0 || id > INT32_MAX) fail("{}: added token id {} out of range", where, id);
  std::string content = t["content"].get<std::string>();
  if (content.empty()) fail("{}: added token {} has empty content", where, id);
  return {int32_t(id), std::move(content), t.value("special", false)};
}

}  // namespace

std::unique_ptr<TokenizerData> build_tokenizer_data(const TokenizerSpec& spec) {
  int64_t max_id = -1;
  for (const auto& [token, id] : spec.vocab) max_id = std::max<int64_t>(max_id, id);
  for (const auto& t : spec.added) max_id = std::max<int64_t>(max_id, t.id);
  if (max_id < 0) fail("{}: the vocabulary is empty", spec.where);

  StringIdMap vocab;
  vocab.reserve(spec.vocab.size());
  std::vector<std::string> pieces(size_t(max_id) + 1);
  std::string bytes;
  for (const auto& [token, id] : spec.vocab) {
    if (!byte_level::to_bytes(token, bytes)) {
      fail(
          "{}: vocabulary token {:?} is not in the byte-level alphabet (expected a byte-level BPE "
          "vocabulary)",
          spec.where, token);
    }
    if (!pieces[id].empty()) fail("{}: token id {} appears twice in the vocabulary", spec.where, id);
    pieces[id] = bytes;
    vocab.emplace(bytes, id);
  }
  std::array<int32_t, 256> byte_ids{};
  for (int b = 0; b < 256; ++b) {
    auto it = vocab.find(std::string(1, char(b)));
    if (it == vocab.end()) {
      fail("{}: expected a token for every byte, found none for byte 0x{:02X} ({:?})", spec.where, b,
           byte_level::from_bytes(std::string(1, char(b))));
    }
    byte_ids[b] = it->second;
  }

  std::vector<Bpe::Merge> merges;
  merges.reserve(spec.merges.size());
  std::string left, right;
  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    const auto& [a, b] = spec.merges[rank];
    const bool ok = byte_level::to_bytes(a, left) && byte_level::to_bytes(b, right);
    auto l = vocab.find(left), r = vocab.find(right), m = vocab.find(left + right);
    if (!ok || l == vocab.end() || r == vocab.end() || m == vocab.end()) {
      fail("{}: merge {} ({:?} {:?}): expected both parts and their concatenation in the vocabulary",
           spec.where, rank, a, b);
    }
    merges.push_back({l->second, r->second, m->second});
  }

  auto data = std::make_unique<TokenizerData>(byte_ids, merges);
  data->pieces = std::move(pieces);
  data->special.assign(data->pieces.size(), 0);
  data->vocab = std::move(vocab);
  data->nfc = spec.nfc;
  data->added = spec.added;
  for (uint32_t i = 0; i < data->added.size(); ++i) {
    const AddedTokenSpec& t = data->added[i];
    data->pieces[t.id] = t.content;
    data->special[t.id] = t.special ? 1 : 0;
    data->added_ids[t.content] = t.id;
    data->added_by_first_byte[static_cast<uint8_t>(t.content[0])].push_back(i);
  }
  for (auto& list : data->added_by_first_byte) {
    std::stable_sort(list.begin(), list.end(), [&](uint32_t x, uint32_t y) {
      return data->added[x].content.size() > data->added[y].content.size();
    });
  }
  return data;
}

Tokenizer Tokenizer::load_tokenizer_json(const fs::path& path) {
  const MappedFile file(path);
  TokenizerSpec spec;
  spec.where = path.string();
  const std::string_view text(reinterpret_cast<const char*>(file.data()), file.size());
  TokenizerJson parsed = parse_tokenizer_json(text, {"model", "vocab"}, spec.where);
  const json& root = parsed.rest;
  if (!root.is_object() || !root.contains("model") || !root["model"].is_object() || !parsed.has_vocab) {
    fail("{}: expected a tokenizer.json object with a \"model\" object holding a \"vocab\" object",
         spec.where);
  }
  if (root["model"].contains("merges") && !root["model"]["merges"].is_array()) {
    fail("{}: expected model.merges to be an array, found {}", spec.where, describe(root["model"]["merges"]));
  }
  check_pipeline(root, spec.where);
  spec.nfc = root.value("normalizer", json()).is_object();
  spec.vocab = std::move(parsed.vocab);
  spec.merges = std::move(parsed.merges);
  const json& added = root.value("added_tokens", json::array());
  if (!added.is_array()) fail("{}: expected added_tokens to be an array", spec.where);
  for (const json& t : added) {
    spec.added.push_back(parse_added_token(t, t.is_object() ? t.value("id", int64_t(-1)) : -1, spec.where));
  }
  return Tokenizer(build_tokenizer_data(spec));
}

// The format of the slow Qwen2Tokenizer: it always NFC-normalizes and splits with the Qwen
// regex, so those are implied here. Added tokens come from tokenizer_config.json's
// "added_tokens_decoder" ({"<id>": {"content", "special", ...}}) when that file exists.
Tokenizer Tokenizer::load_vocab_merges(const fs::path& vocab_json, const fs::path& merges_txt,
                                       const fs::path& tokenizer_config_json) {
  TokenizerSpec spec;
  spec.where = vocab_json.string() + " + " + merges_txt.string();
  {
    const MappedFile file(vocab_json);
    const std::string_view text(reinterpret_cast<const char*>(file.data()), file.size());
    TokenizerJson parsed = parse_tokenizer_json(text, {}, vocab_json.string());
    if (!parsed.has_vocab) fail("{}: expected a JSON object token -> id", vocab_json.string());
    spec.vocab = std::move(parsed.vocab);
  }

  const std::string merges = read_text_file(merges_txt);
  size_t line_no = 0;
  for (size_t pos = 0; pos < merges.size();) {
    size_t end = merges.find('\n', pos);
    if (end == std::string::npos) end = merges.size();
    std::string_view line(merges.data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_no == 1 && line.starts_with("#version"))) continue;
    const size_t sp = line.find(' ');
    if (sp == std::string_view::npos || line.find(' ', sp + 1) != std::string_view::npos) {
      fail("{}:{}: expected a merge as two tokens separated by one space, found {:?}", merges_txt.string(),
           line_no, std::string(line));
    }
    spec.merges.emplace_back(std::string(line.substr(0, sp)), std::string(line.substr(sp + 1)));
  }

  if (!tokenizer_config_json.empty() && fs::exists(tokenizer_config_json)) {
    const json config = parse_json_file(tokenizer_config_json);
    const std::string where = tokenizer_config_json.string();
    const json& decoder = config.value("added_tokens_decoder", json::object());
    if (!decoder.is_object()) fail("{}: expected added_tokens_decoder to be an object", where);
    for (const auto& [key, t] : decoder.items()) {
      int64_t id = -1;
      try {
        size_t used = 0;
        id = std::stoll(key, &used);
        if (used != key.size()) id = -1;
      } catch (const std::exception&) {
      }
      if (id < 0) fail("{}: added_tokens_decoder key {:?}: expected a token id", where, key);
      spec.added.push_back(parse_added_token(t, id, where));
    }
    spec.where += " + " + where;
  }
  return Tokenizer(build_tokenizer_data(spec));
}

bool Tokenizer::dir_has_tokenizer(const fs::path& dir) {
  return fs::is_regular_file(dir / "tokenizer.json") ||
         (fs::is_regular_file(dir / "vocab.json") && fs::is_regular_file(dir / "merges.txt"));
}

Tokenizer Tokenizer::load_dir(const fs::path& dir) {
  if (fs::is_regular_file(dir / "tokenizer.json")) return load_tokenizer_json(dir / "tokenizer.json");
  if (fs::is_regular_file(dir / "vocab.json") && fs::is_regular_file(dir / "merges.txt")) {
    return load_vocab_merges(dir / "vocab.json", dir / "merges.txt", dir / "tokenizer_config.json");
  }
  fail(
      "{}: expected a tokenizer: tokenizer.json, or vocab.json + merges.txt (with tokenizer_config.json "
      "for added tokens); found {}",
      dir.string(), fs::is_directory(dir) ? "none of them" : "no such directory");
}

}  // namespace nibble
