#include "tokenizer/chat_template.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "tokenizer/jinja_ast.h"

namespace nibble {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// What to do when the model's template is missing or beyond the interpreter.
constexpr const char* kUseAnother =
    "pass --chat-template chatml (a built-in template) or --chat-template FILE.jinja to use another one";
constexpr const char* kOverrideHint =
    "nibble cannot render this chat template; pass --chat-template chatml (a built-in template) or "
    "--chat-template FILE.jinja to use another one";

// Built-in templates, written in the same Jinja subset the model templates use.
struct Builtin {
  const char* name;
  const char* source;
};
const Builtin kBuiltins[] = {
    {"chatml",
     "{%- for message in messages %}"
     "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
     "{%- endfor %}"
     "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"},
};

// tokenizer_config.json stores a special token as a string, null, or an AddedToken object.
std::string special_token(const json& cfg, const char* key) {
  auto it = cfg.find(key);
  if (it == cfg.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return "";
}

json read_json_file(const fs::path& path) {
  try {
    return json::parse(read_text_file(path));
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", path.string(), e.what());
  }
}

// The "chat_template" entry: a string, or a list of {"name", "template"} holding "default".
std::string template_from_config(const json& cfg, const fs::path& path) {
  auto it = cfg.find("chat_template");
  if (it == cfg.end() || it->is_null()) {
    fail("{}: no \"chat_template\" entry (and no chat_template.jinja beside it); {}", path.string(),
         kUseAnother);
  }
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {
    std::vector<std::string> names;
    for (const json& entry : *it) {
      if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string()) continue;
      names.push_back(entry["name"].get<std::string>());
      if (names.back() == "default" && entry.contains("template") && entry["template"].is_string()) {
        return entry["template"].get<std::string>();
      }
    }
    fail("{}: \"chat_template\" is a list without a \"default\" template (names: {}); {}", path.string(),
         fmt::join(names, ", "), kUseAnother);
  }
  fail("{}: \"chat_template\" must be a string or a list of {{name, template}}, found {}", path.string(),
       it->type_name());
}

}  // namespace

ChatTemplate ChatTemplate::from_source(std::string source) {
  ChatTemplate t;
  t.origin_ = "chat template";
  try {
    t.program_ = jinja::parse_template(source);
  } catch (const Error& e) {
    fail("chat template: {}; {}", e.what(), kOverrideHint);
  }
  t.source_ = std::move(source);
  return t;
}

std::vector<std::string> ChatTemplate::builtin_names() {
  std::vector<std::string> names;
  for (const Builtin& b : kBuiltins) names.emplace_back(b.name);
  return names;
}

ChatTemplate ChatTemplate::builtin(const std::string& name) {
  for (const Builtin& b : kBuiltins) {
    if (name == b.name) {
      ChatTemplate t = from_source(b.source);
      t.origin_ = "built-in chat template '" + name + "'";
      return t;
    }
  }
  fail("unknown built-in chat template '{}' (known: {})", name, fmt::join(builtin_names(), ", "));
}

ChatTemplate ChatTemplate::from_model_dir(const fs::path& dir, const std::string& override_name) {
  if (!fs::is_directory(dir)) fail("model directory '{}' does not exist or is not a directory", dir.string());
  const fs::path config_path = dir / "tokenizer_config.json";
  const fs::path jinja_path = dir / "chat_template.jinja";
  const bool have_config = fs::is_regular_file(config_path);
  json cfg = have_config ? read_json_file(config_path) : json::object();
  if (!cfg.is_object()) fail("{}: expected a JSON object, found {}", config_path.string(), cfg.type_name());

  // Parse errors name the file the template came from.
  auto load = [](std::string source, const std::string& origin) {
    try {
      ChatTemplate t = from_source(std::move(source));
      t.origin_ = origin;
      return t;
    } catch (const Error& e) {
      fail("{}: {}", origin, e.what());
    }
  };
  ChatTemplate t;
  if (!override_name.empty()) {
    bool is_builtin = false;
    for (const std::string& n : builtin_names()) is_builtin = is_builtin || n == override_name;
    if (is_builtin) {
      t = builtin(override_name);
    } else if (fs::is_regular_file(override_name)) {
      t = load(read_text_file(override_name), override_name);
    } else {
      fail("--chat-template '{}' is neither a built-in template ({}) nor an existing .jinja file",
           override_name, fmt::join(builtin_names(), ", "));
    }
  } else if (fs::is_regular_file(jinja_path)) {
    t = load(read_text_file(jinja_path), jinja_path.string());
  } else {
    if (!have_config) {
      fail(
          "{}: not found; the model's chat template is read from tokenizer_config.json or "
          "chat_template.jinja in "
          "the model directory; {}",
          config_path.string(), kUseAnother);
    }
    t = load(template_from_config(cfg, config_path), config_path.string());
  }
  t.bos_token = special_token(cfg, "bos_token");
  t.eos_token = special_token(cfg, "eos_token");
  t.pad_token_ = special_token(cfg, "pad_token");
  t.unk_token_ = special_token(cfg, "unk_token");
  return t;
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages,
                                 const ChatTemplateOptions& opts) const {
  NIBBLE_ASSERT(program_ != nullptr);
  using jinja::Value;
  jinja::List list;
  for (const ChatMessage& m : messages) {
    jinja::Dict d;
    d.set("role", Value::from_string(m.role));
    d.set("content", Value::from_string(m.content));
    list.push_back(Value::from_dict(std::move(d)));
  }
  // The variables transformers' apply_chat_template passes: the special tokens, then messages,
  // tools and documents (None when not given), add_generation_prompt and the extra kwargs.
  jinja::Dict vars;
  auto token = [&](const char* name, const std::string& value) {
    if (!value.empty()) vars.set(name, Value::from_string(value));
  };
  token("bos_token", bos_token);
  token("eos_token", eos_token);
  token("pad_token", pad_token_);
  token("unk_token", unk_token_);
  vars.set("messages", Value::from_list(std::move(list)));
  vars.set("tools", Value::none());
  vars.set("documents", Value::none());
  vars.set("add_generation_prompt", Value::from_bool(opts.add_generation_prompt));
  if (opts.enable_thinking) vars.set("enable_thinking", Value::from_bool(*opts.enable_thinking));
  try {
    return jinja::render_template(*program_, vars);
  } catch (const Error& e) {
    fail("{}: {}; {}", origin_.empty() ? "chat template" : origin_, e.what(), kOverrideHint);
  }
}

std::vector<ChatMessage> parse_messages_json(const std::string& json_text, const std::string& label) {
  json doc;
  try {
    doc = json::parse(json_text);
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", label, e.what());
  }
  if (!doc.is_array()) {
    fail("{}: expected a JSON list of {{\"role\": ..., \"content\": ...}} objects, found a JSON {}", label,
         doc.type_name());
  }
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i < doc.size(); ++i) {
    const json& m = doc[i];
    if (!m.is_object())
      fail("{}: message {} must be an object with \"role\" and \"content\", found a JSON {}", label, i,
           m.type_name());
    for (const char* key : {"role", "content"}) {
      if (!m.contains(key)) fail("{}: message {} has no \"{}\"", label, i, key);
      if (!m[key].is_string())
        fail("{}: message {}: \"{}\" must be a string, found a JSON {}", label, i, key, m[key].type_name());
    }
    messages.push_back(ChatMessage{m["role"].get<std::string>(), m["content"].get<std::string>()});
  }
  return messages;
}

}  // namespace nibble
