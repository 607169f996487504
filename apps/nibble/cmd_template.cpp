// nibble template: print the prompt a conversation renders to with the model's chat template,
// byte for byte as HF apply_chat_template(tokenize=False) gives it, and nothing else (no newline
// is added, so the output can be compared or piped as is).
#include <cstdio>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>

#include "commands.h"
#include "core/error.h"
#include "core/file.h"
#include "tokenizer/chat_template.h"

namespace nibble::app {
namespace {

struct TemplateCli {
  std::string model;
  std::string messages;
  bool no_generation_prompt = false;
  std::string thinking;  // "", "on" or "off"
  std::string chat_template;
};

void run(const TemplateCli& c) {
  std::string json_text;
  if (c.messages == "-") {
    json_text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else {
    json_text = read_text_file(c.messages);
  }
  const std::vector<ChatMessage> messages =
      parse_messages_json(json_text, c.messages == "-" ? std::string("<stdin>") : c.messages);
  const ChatTemplate tmpl = ChatTemplate::from_model_dir(c.model, c.chat_template);

  ChatTemplateOptions opts;
  opts.add_generation_prompt = !c.no_generation_prompt;
  if (!c.thinking.empty()) opts.enable_thinking = c.thinking == "on";
  const std::string prompt = tmpl.render(messages, opts);

  if (std::fwrite(prompt.data(), 1, prompt.size(), stdout) != prompt.size() || std::fflush(stdout) != 0) {
    fail("could not write the rendered prompt to standard output");
  }
}

}  // namespace

void add_template_command(CLI::App& app) {
  auto cli = std::make_shared<TemplateCli>();
  CLI::App* sub =
      app.add_subcommand("template", "Print the prompt a conversation renders to (the chat template)");
  sub->add_option("--model", cli->model, "HF model directory (tokenizer_config.json or chat_template.jinja)")
      ->required();
  sub->add_option("--messages", cli->messages,
                  "JSON file with a list of {\"role\", \"content\"} objects ('-' reads standard input)")
      ->required();
  sub->add_flag("--no-generation-prompt", cli->no_generation_prompt,
                "Do not append the assistant turn opener (add_generation_prompt=false)");
  sub->add_option("--thinking", cli->thinking,
                  "on | off: the template's enable_thinking (default: not passed)")
      ->check(CLI::IsMember({"on", "off"}));
  sub->add_option("--chat-template", cli->chat_template,
                  "Template to use instead of the model's: a built-in name (chatml) or a .jinja file");
  sub->callback([cli] { run(*cli); });
}

}  // namespace nibble::app
