// Chat templates: the two real Qwen3 templates rendered byte for byte as HF apply_chat_template
// does (golden strings from scripts/gen_template_fixtures.py in tests/fixtures/templates), a few
// expectations derived by hand from reading the templates, loading rules, error messages,
// parse_messages_json, and `nibble template` run as a user would.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "support/test_support.h"
#include "tokenizer/chat_template.h"

namespace nibble {
namespace {

using test::error_of;

namespace fs = std::filesystem;
using test::data_dir;

ChatTemplate qwen3_2507() { return ChatTemplate::from_model_dir(data_dir() / "qwen3_4b_instruct_2507"); }
ChatTemplate qwen3_hybrid() { return ChatTemplate::from_model_dir(data_dir() / "qwen3_tokenizer"); }

ChatTemplateOptions opts(bool generation_prompt, std::optional<bool> thinking = std::nullopt) {
  ChatTemplateOptions o;
  o.add_generation_prompt = generation_prompt;
  o.enable_thinking = thinking;
  return o;
}

// Runs `fn` and returns the Error message it throws ("" when it does not throw).
void write_file(const fs::path& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}

// ---- golden renderings ----

TEST(ChatTemplateGolden, MatchesTransformersByteForByte) {
  const fs::path path = data_dir() / "templates" / "cases.json";
  ASSERT_TRUE(fs::exists(path)) << path << " is missing: run scripts/gen_template_fixtures.py";
  nlohmann::json cases = nlohmann::json::parse(read_text_file(path));
  ASSERT_GE(cases.size(), 100u) << "the fixture should hold every conversation x option combination";
  const ChatTemplate templates[2] = {qwen3_2507(), qwen3_hybrid()};
  size_t checked[2] = {0, 0};
  for (const auto& c : cases) {
    const std::string name = c["template"].get<std::string>();
    ASSERT_TRUE(name == "qwen3_2507" || name == "qwen3_hybrid") << name;
    const int which = name == "qwen3_2507" ? 0 : 1;
    std::vector<ChatMessage> messages = parse_messages_json(c["messages"].dump(), "cases.json");
    std::optional<bool> thinking;
    if (!c["enable_thinking"].is_null()) thinking = c["enable_thinking"].get<bool>();
    const std::string want = c["rendered"].get<std::string>();
    const std::string got =
        templates[which].render(messages, opts(c["add_generation_prompt"].get<bool>(), thinking));
    EXPECT_EQ(got, want) << name << " / " << c.value("name", "?")
                         << " add_generation_prompt=" << c["add_generation_prompt"]
                         << " enable_thinking=" << c["enable_thinking"];
    ++checked[which];
  }
  EXPECT_GE(checked[0], 15u * 2);
  EXPECT_GE(checked[1], 15u * 2 * 3);
}

// ---- expectations read off the templates by hand ----

TEST(ChatTemplateQwen3, InstructSingleUser) {
  EXPECT_EQ(qwen3_2507().render({{"user", "Hello!"}}, opts(true)),
            "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplateQwen3, InstructSystemUserNoGenerationPrompt) {
  EXPECT_EQ(qwen3_2507().render({{"system", "S"}, {"user", "U"}}, opts(false)),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n");
}

TEST(ChatTemplateQwen3, HybridThinkingOffAddsEmptyThinkBlock) {
  const ChatTemplate t = qwen3_hybrid();
  EXPECT_EQ(t.render({{"user", "Hi"}}, opts(true, false)),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
  // enable_thinking unset or true: the model decides; no think block is forced.
  EXPECT_EQ(t.render({{"user", "Hi"}}, opts(true)),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(t.render({{"user", "Hi"}}, opts(true, true)),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  // Without the generation prompt enable_thinking changes nothing.
  EXPECT_EQ(t.render({{"user", "Hi"}}, opts(false, false)), "<|im_start|>user\nHi<|im_end|>\n");
}

TEST(ChatTemplateQwen3, ReasoningOfEarlierTurnsIsDropped) {
  const std::vector<ChatMessage> chat = {
      {"user", "q"}, {"assistant", "<think>\nr\n</think>\n\na"}, {"user", "q2"}};
  const std::string want =
      "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\na<|im_end|>\n"
      "<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n";
  EXPECT_EQ(qwen3_hybrid().render(chat, opts(true)), want);
  EXPECT_EQ(qwen3_2507().render(chat, opts(true)), want);
}

TEST(ChatTemplateQwen3, FinalAssistantTurnGetsThinkBlock) {
  EXPECT_EQ(qwen3_hybrid().render({{"user", "q"}, {"assistant", "a"}}, opts(false)),
            "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\na<|im_end|>\n");
  EXPECT_EQ(qwen3_hybrid().render({{"user", "q"}, {"assistant", "<think>\nwhy\n</think>\n\na"}}, opts(false)),
            "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\nwhy\n</think>\n\na<|im_end|>\n");
}

TEST(ChatTemplateQwen3, TemplateSyntaxInContentIsLiteral) {
  EXPECT_EQ(qwen3_2507().render({{"user", "{{ x }} {% if %}"}}, opts(false)),
            "<|im_start|>user\n{{ x }} {% if %}<|im_end|>\n");
}

// ---- built-ins and loading ----

TEST(ChatTemplateLoad, ChatmlBuiltin) {
  const ChatTemplate t = ChatTemplate::builtin("chatml");
  EXPECT_EQ(t.render({{"system", "S"}, {"user", "U"}}, opts(true)),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(t.render({{"user", "U"}}, opts(false)), "<|im_start|>user\nU<|im_end|>\n");
  const ChatTemplate via_dir = ChatTemplate::from_model_dir(data_dir() / "qwen3_tokenizer", "chatml");
  EXPECT_EQ(via_dir.render({{"user", "U"}}, opts(true, false)),
            "<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_NE(error_of([] { ChatTemplate::builtin("llama9"); }).find("chatml"), std::string::npos);
}

TEST(ChatTemplateLoad, OverrideFileAndJinjaFileAndNamedList) {
  test::ScratchDir dir("chat_template_load");
  write_file(dir / "tokenizer_config.json",
             R"({"eos_token": {"content": "</s>", "__type": "AddedToken"}, "bos_token": "<s>",
                 "chat_template": [{"name": "tool_use", "template": "TOOLS"},
                                   {"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}"}]})");
  ChatTemplate t = ChatTemplate::from_model_dir(dir.path());
  EXPECT_EQ(t.bos_token, "<s>");
  EXPECT_EQ(t.eos_token, "</s>");
  EXPECT_EQ(t.render({{"user", "x"}}, opts(true)), "<s>x</s>");

  // chat_template.jinja beside it wins over tokenizer_config.json (as in transformers v5).
  write_file(dir / "chat_template.jinja", "J:{{ messages | length }}\n");
  EXPECT_EQ(ChatTemplate::from_model_dir(dir.path()).render({{"user", "x"}}, opts(true)), "J:1");

  // An explicit file override wins over both.
  write_file(dir / "mine.jinja", "{% for m in messages %}[{{ m.role }}]{% endfor %}");
  EXPECT_EQ(ChatTemplate::from_model_dir(dir.path(), (dir / "mine.jinja").string())
                .render({{"a", "b"}}, opts(true)),
            "[a]");
  const std::string err = error_of([&] { ChatTemplate::from_model_dir(dir.path(), "no-such-template"); });
  EXPECT_NE(err.find("no-such-template"), std::string::npos) << err;
  EXPECT_NE(err.find("chatml"), std::string::npos) << err;
}

TEST(ChatTemplateLoad, MissingConfigOrTemplateIsClear) {
  test::ScratchDir dir("chat_template_missing");
  std::string err = error_of([&] { ChatTemplate::from_model_dir(dir.path()); });
  EXPECT_NE(err.find("tokenizer_config.json"), std::string::npos) << err;
  EXPECT_NE(err.find("--chat-template"), std::string::npos) << err;

  write_file(dir / "tokenizer_config.json", R"({"eos_token": "<|im_end|>"})");
  err = error_of([&] { ChatTemplate::from_model_dir(dir.path()); });
  EXPECT_NE(err.find("chat_template"), std::string::npos) << err;
  EXPECT_NE(err.find("--chat-template chatml"), std::string::npos) << err;

  write_file(dir / "tokenizer_config.json", "{not json");
  err = error_of([&] { ChatTemplate::from_model_dir(dir.path()); });
  EXPECT_NE(err.find("not valid JSON"), std::string::npos) << err;

  err = error_of([&] { ChatTemplate::from_model_dir(dir / "absent"); });
  EXPECT_NE(err.find("absent"), std::string::npos) << err;
}

// ---- errors name the construct and the override ----

TEST(ChatTemplateErrors, UnsupportedConstructsNameTheOverride) {
  for (const char* src : {"{{ x | wordwrap }}", "{% include 'other.jinja' %}", "{{ x is prime }}",
                          "{% call foo() %}x{% endcall %}", "{% extends 'base' %}"}) {
    const std::string err = error_of([&] { ChatTemplate::from_source(src); });
    EXPECT_NE(err.find("unsupported"), std::string::npos) << src << ": " << err;
    EXPECT_NE(err.find("--chat-template chatml"), std::string::npos) << src << ": " << err;
  }
  // Unsupported methods are only known when called on a value.
  const ChatTemplate t = ChatTemplate::from_source("{{ messages[0].content.zfill(5) }}");
  const std::string err = error_of([&] { t.render({{"user", "7"}}, opts(true)); });
  EXPECT_NE(err.find("zfill"), std::string::npos) << err;
  EXPECT_NE(err.find("--chat-template"), std::string::npos) << err;
}

TEST(ChatTemplateErrors, MalformedTemplatesSayWhere) {
  const struct {
    const char* src;
    const char* needle;
  } cases[] = {
      {"{% if x %}no end", "endif"},
      {"line1\n{{ x ", "line 2"},
      {"{% for x in %}{% endfor %}", "expected an expression"},
      {"{% endif %}", "unexpected"},
      {"{{ 'unterminated }}", "unterminated string"},
      {"{# never closed", "comment"},
      {"{{ (1 }}", "expected"},
  };
  for (const auto& c : cases) {
    const std::string err = error_of([&] { ChatTemplate::from_source(c.src); });
    EXPECT_NE(err.find(c.needle), std::string::npos) << c.src << ": " << err;
    EXPECT_NE(err.find("--chat-template"), std::string::npos) << c.src << ": " << err;
  }
}

TEST(ChatTemplateErrors, RaiseExceptionAndUndefinedAccess) {
  const ChatTemplate t = ChatTemplate::from_source(
      "{% if messages[0].role != 'user' %}{{ raise_exception('first message must be from the user') }}{% "
      "endif %}ok");
  EXPECT_EQ(t.render({{"user", "x"}}, opts(true)), "ok");
  std::string err = error_of([&] { t.render({{"system", "x"}}, opts(true)); });
  EXPECT_NE(err.find("first message must be from the user"), std::string::npos) << err;
  // The Qwen3 templates index messages[0]: an empty conversation fails like jinja2 does.
  err = error_of([] { qwen3_2507().render({}, opts(true)); });
  EXPECT_NE(err.find("has no element 0"), std::string::npos) << err;
}

// ---- messages JSON ----

TEST(MessagesJson, ParsesRolesAndContent) {
  auto m = parse_messages_json(
      R"([{"role": "system", "content": "s"}, {"role": "critic", "content": "é\n"}])", "m.json");
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(m[0].role, "system");
  EXPECT_EQ(m[1].role, "critic");  // unknown roles pass through to the template
  EXPECT_EQ(m[1].content, "é\n");
  EXPECT_TRUE(parse_messages_json("[]", "m.json").empty());
}

TEST(MessagesJson, BadShapesAreErrors) {
  const struct {
    const char* json;
    const char* needle;
  } cases[] = {
      {"[{\"role\": \"user\", \"content\": \"x\"", "not valid JSON"},
      {R"({"role": "user", "content": "x"})", "expected a JSON list"},
      {R"([{"role": "user"}])", "message 0 has no \"content\""},
      {R"([{"role": "user", "content": "a"}, {"content": "x"}])", "message 1 has no \"role\""},
      {R"([{"role": "user", "content": null}])", "\"content\" must be a string"},
      {R"([{"role": 3, "content": "x"}])", "\"role\" must be a string"},
      {R"(["hello"])", "must be an object"},
  };
  for (const auto& c : cases) {
    const std::string err = error_of([&] { parse_messages_json(c.json, "in.json"); });
    EXPECT_NE(err.find(c.needle), std::string::npos) << c.json << ": " << err;
    EXPECT_NE(err.find("in.json"), std::string::npos) << c.json << ": " << err;
  }
}

// ---- nibble template ----

TEST(TemplateCommand, PrintsExactlyTheRenderedPrompt) {
  test::ScratchDir dir("cmd_template");
  const std::string messages =
      R"([{"role": "system", "content": "  sys\n"}, {"role": "user", "content": "héllo"}])";
  write_file(dir / "m.json", messages);
  const std::string model = (data_dir() / "qwen3_tokenizer").string();
  const std::vector<ChatMessage> parsed = parse_messages_json(messages, "m.json");

  auto r = test::run_nibble({"template", "--model", model, "--messages", (dir / "m.json").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(
      r.out,
      "<|im_start|>system\n  sys\n<|im_end|>\n<|im_start|>user\nhéllo<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(r.err, "");

  r = test::run_nibble(
      {"template", "--model", model, "--messages", (dir / "m.json").string(), "--thinking", "off"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, qwen3_hybrid().render(parsed, opts(true, false)));
  EXPECT_TRUE(r.out.ends_with("<think>\n\n</think>\n\n"));

  r = test::run_nibble(
      {"template", "--model", model, "--messages", (dir / "m.json").string(), "--no-generation-prompt"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "<|im_start|>system\n  sys\n<|im_end|>\n<|im_start|>user\nhéllo<|im_end|>\n");

  r = test::run_nibble({"template", "--model", (data_dir() / "qwen3_4b_instruct_2507").string(), "--messages",
                        "-", "--chat-template", "chatml"},
                       R"([{"role": "user", "content": "x"}])");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n");
}

TEST(TemplateCommand, BadInputsFailClearly) {
  test::ScratchDir dir("cmd_template_bad");
  write_file(dir / "bad.json", "[{\"role\": \"user\", \"content\": ");
  write_file(dir / "ok.json", R"([{"role": "user", "content": "x"}])");
  const std::string model = (data_dir() / "qwen3_tokenizer").string();

  auto r = test::run_nibble({"template", "--model", model, "--messages", (dir / "bad.json").string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("bad.json"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("not valid JSON"), std::string::npos) << r.err;

  r = test::run_nibble({"template", "--model", model, "--messages", (dir / "absent.json").string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("absent.json"), std::string::npos) << r.err;

  // A model directory without tokenizer_config.json (and no chat_template.jinja).
  r = test::run_nibble(
      {"template", "--model", dir.path().string(), "--messages", (dir / "ok.json").string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("tokenizer_config.json"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--chat-template"), std::string::npos) << r.err;

  r = test::run_nibble(
      {"template", "--model", model, "--messages", (dir / "ok.json").string(), "--thinking", "maybe"});
  EXPECT_NE(r.exit_code, 0);

  write_file(dir / "tmpl.jinja", "{{ messages | shuffle }}");
  r = test::run_nibble({"template", "--model", model, "--messages", (dir / "ok.json").string(),
                        "--chat-template", (dir / "tmpl.jinja").string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("shuffle"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--chat-template chatml"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace nibble
