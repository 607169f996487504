// defines: ChatMessage, ChatTemplateOptions, ChatTemplate (renders a conversation into the prompt
// text exactly as HF `apply_chat_template(..., tokenize=False)` does), parse_messages_json.
//
// A model's template is Jinja2 source from its tokenizer_config.json (or chat_template.jinja).
// It is run by a small Jinja2-subset interpreter (jinja_*.h) with the settings transformers uses:
// trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False. A construct the interpreter
// does not support is an Error that names it and suggests `--chat-template chatml`.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace nibble {

struct ChatMessage {
  std::string role;     // "system", "user", "assistant", "tool", ... (passed through unchecked)
  std::string content;  // UTF-8 text
};

struct ChatTemplateOptions {
  bool add_generation_prompt = true;
  std::optional<bool> enable_thinking;  // unset: the variable is undefined in the template
};

namespace jinja {
struct Template;
}

class ChatTemplate {
 public:
  // From `dir`: a chat_template.jinja file if present, else tokenizer_config.json's "chat_template"
  // (a string, or a list of {name, template} from which "default" is taken). `override_name`
  // wins when set: a built-in name ("chatml") or a path to a .jinja file. bos_token / eos_token
  // are read from tokenizer_config.json (when present) and passed to the template as variables.
  static ChatTemplate from_model_dir(const std::filesystem::path& dir, const std::string& override_name = "");
  // Parses Jinja source; throws Error on a syntax error or an unsupported construct.
  static ChatTemplate from_source(std::string source);
  // A built-in template by name ("chatml"); throws Error listing the known names.
  static ChatTemplate builtin(const std::string& name);
  static std::vector<std::string> builtin_names();

  // Throws Error when the template raises (raise_exception) or hits an unsupported construct.
  std::string render(const std::vector<ChatMessage>& messages, const ChatTemplateOptions& opts) const;

  const std::string& source() const { return source_; }
  // Special tokens passed to the template as variables (empty: undefined in the template).
  std::string bos_token;
  std::string eos_token;

 private:
  std::string source_;
  std::string origin_;  // where the source came from, for error messages
  std::shared_ptr<const jinja::Template> program_;
  std::string pad_token_;  // also passed when set, as transformers passes every special token
  std::string unk_token_;
};

// Parses a JSON list of {"role": str, "content": str} objects. `label` names the source (a file
// path) in error messages. Throws Error on bad JSON or a bad shape.
std::vector<ChatMessage> parse_messages_json(const std::string& json_text, const std::string& label);

}  // namespace nibble
