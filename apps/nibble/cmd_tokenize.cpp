// nibble tokenize: the token ids of a text with the model's tokenizer, and with them the piece
// of each token (escaped so that whitespace, control bytes and split UTF-8 stay visible).
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "commands.h"
#include "core/error.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace nibble::app {
namespace {

struct TokenizeOptions {
  std::string model;
  std::string text;
  bool ids_only = false;
  bool special = false;
};

// All of standard input, byte for byte.
std::string read_stdin() {
  std::string data;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, stdin)) > 0) data.append(buf, n);
  if (std::ferror(stdin)) fail("tokenize: reading the text from standard input failed");
  return data;
}

// Characters that print as nothing or move the cursor: written as escapes.
bool invisible(char32_t c) {
  return c < 0x20 || c == 0x7F || (c >= 0x80 && c <= 0x9F) || c == 0xAD || (c >= 0x200B && c <= 0x200F) ||
         (c >= 0x202A && c <= 0x202E) || (c >= 0x2060 && c <= 0x2064) || c == 0xFEFF ||
         (c != ' ' && unicode::char_class(c) == unicode::CharClass::Space);
}

// One token's bytes as one line of text: \n \r \t \\ as in C, other invisible characters as
// \u{XXXX}, bytes that are not (or not yet) UTF-8 as \xHH.
std::string escape_piece(std::string_view bytes) {
  std::string out;
  for (size_t pos = 0; pos < bytes.size();) {
    size_t len;
    const char32_t c = unicode::decode_utf8(bytes, pos, len);
    pos += len;
    if (c >= unicode::kRawByteBase) {
      out += fmt::format("\\x{:02X}", uint32_t(c - unicode::kRawByteBase));
    } else if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (invisible(c)) {
      out += fmt::format("\\u{{{:04X}}}", uint32_t(c));
    } else {
      unicode::append_utf8(out, c);
    }
  }
  return out;
}

void run_tokenize(const TokenizeOptions& opt) {
  const std::filesystem::path dir(opt.model);
  if (!Tokenizer::dir_has_tokenizer(dir)) {
    fail(
        "tokenize: {} has no tokenizer: expected tokenizer.json, or vocab.json + merges.txt (with "
        "tokenizer_config.json for added tokens)",
        dir.string());
  }
  const Tokenizer tok = Tokenizer::load_dir(dir);
  const std::string text = opt.text == "-" ? read_stdin() : opt.text;
  const auto ids = tok.encode(text, opt.special);
  std::string out;
  if (opt.ids_only) {
    for (size_t i = 0; i < ids.size(); ++i) out += fmt::format("{}{}", i ? " " : "", ids[i]);
    out += '\n';
  } else {
    for (int32_t id : ids) out += fmt::format("{}\t{}\n", id, escape_piece(tok.piece(id)));
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
}

}  // namespace

void add_tokenize_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("tokenize", "Print the token ids of a text (and each token's piece)");
  auto opt = std::make_shared<TokenizeOptions>();
  cmd->add_option("--model,-m", opt->model,
                  "Model or tokenizer directory (tokenizer.json, or vocab.json + merges.txt)")
      ->required();
  cmd->add_flag("--ids-only", opt->ids_only, "Print only the ids, space-separated on one line");
  cmd->add_flag("--special", opt->special,
                "Turn special-token text such as <|im_end|> into the special token (default: plain text)");
  cmd->add_option("text", opt->text, "The text to tokenize, or - to read all of standard input")->required();
  cmd->callback([opt] { run_tokenize(*opt); });
}

}  // namespace nibble::app
