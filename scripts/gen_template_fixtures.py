#!/usr/bin/env python3
"""Golden chat-template renderings for tests/test_chat_template.cpp.

Usage (repo root as cwd):  python3 scripts/gen_template_fixtures.py OUTDIR
Writes OUTDIR/templates/cases.json (copy it to tests/fixtures/templates/cases.json) and
OUTDIR/templates/meta.json (which renderer and versions produced it).

cases.json is a list of
  {"template": "qwen3_2507" | "qwen3_hybrid", "messages": [{"role", "content"}...],
   "add_generation_prompt": bool, "enable_thinking": null | bool, "rendered": str}
where enable_thinking null means the keyword was not passed at all (undefined in the template).

The reference is transformers' tokenizer.apply_chat_template(tokenize=False). When transformers
(or the tokenizer) cannot be loaded, it falls back to jinja2 configured the way transformers
configures it (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, a
raise_exception global, tojson with ensure_ascii=False) and records that in meta.json. When both
are available, every case is also rendered with plain jinja2 and disagreements are recorded.
"""

import hashlib
import json
import os
import sys
import traceback

FIXTURES = os.path.join("tests", "fixtures")
TEMPLATE_FILES = {
    "qwen3_2507": os.path.join(FIXTURES, "qwen3_4b_instruct_2507", "tokenizer_config.json"),
    "qwen3_hybrid": os.path.join(FIXTURES, "qwen3_tokenizer", "tokenizer_config.json"),
}
TOKENIZER_DIR = os.path.join(FIXTURES, "qwen3_tokenizer")  # tokenizer.json + tokenizer_config.json


def m(role, content):
    return {"role": role, "content": content}


# Each conversation: (name, messages). Chosen to exercise every branch of the two Qwen3 templates
# that plain {role, content} messages can reach.
CONVERSATIONS = [
    ("single_user", [m("user", "Hello!")]),
    ("system_user", [m("system", "You are a helpful assistant."), m("user", "What is 2+2?")]),
    ("multi_turn", [
        m("system", "You are terse."),
        m("user", "Name a colour."),
        m("assistant", "Blue."),
        m("user", "Another one?"),
        m("assistant", "Red."),
        m("user", "Thanks."),
    ]),
    ("multi_turn_no_system", [
        m("user", "Hi"),
        m("assistant", "Hello! How can I help?"),
        m("user", "Tell me a joke."),
    ]),
    ("think_in_earlier_turn", [
        m("user", "What is 3*7?"),
        m("assistant", "<think>\n3 times 7 is 21.\n</think>\n\n21"),
        m("user", "And 4*5?"),
    ]),
    ("think_in_last_assistant", [
        m("user", "Is 17 prime?"),
        m("assistant", "<think>\nCheck divisors 2, 3: none divide 17.\n</think>\n\nYes, 17 is prime."),
    ]),
    ("ends_with_assistant_plain", [
        m("system", "Be kind."),
        m("user", "Say hi."),
        m("assistant", "Hi there!"),
    ]),
    ("assistants_after_last_user", [
        m("user", "Plan a trip."),
        m("assistant", "<think>\nFirst think about the destination.\n</think>\n\nWhere to?"),
        m("assistant", "No reasoning in this one."),
        m("assistant", "<think>\n\n</think>\n\nEmpty reasoning here."),
    ]),
    ("think_without_open_tag", [
        m("user", "q"),
        m("assistant", "only closing reasoning\n</think>\nanswer"),
        m("user", "q2"),
        m("assistant", "x</think>y</think>\n\nz"),
    ]),
    ("multiple_think_blocks", [
        m("user", "a"),
        m("assistant", "<think>one</think><think>\ntwo\n\n</think>\n\n\nfinal\n"),
    ]),
    ("empty_content", [m("system", ""), m("user", ""), m("assistant", ""), m("user", "")]),
    ("unicode", [
        m("system", "Tu es un assistant. 你是一个助手。"),
        m("user", "Größe? ¿Qué tal? Привет 👋🏽 — \u00e9\u0301 \u200b zero-width"),
        m("assistant", "<think>\n思考中…\n</think>\n\n答案：42 ✅"),
        m("user", "日本語で答えて"),
    ]),
    ("whitespace_content", [
        m("system", "  leading and trailing spaces  "),
        m("user", "\n\nline one\nline two\n\n"),
        m("assistant", "\n  indented answer\n\t tab\n"),
        m("user", " \r\n windows newline \r\n"),
    ]),
    ("consecutive_users", [
        m("user", "First message."),
        m("user", "Second message."),
        m("user", "Third message."),
    ]),
    ("system_not_first", [
        m("user", "Hi"),
        m("system", "A mid-conversation system note."),
        m("user", "Continue"),
    ]),
    ("tool_turns", [
        m("system", "You can call tools."),
        m("user", "Weather in Paris?"),
        m("assistant", "<think>\nNeed the weather tool.\n</think>\n\nChecking."),
        m("tool", "{\"temp\": 18}"),
        m("tool", "{\"sky\": \"clear\"}"),
        m("assistant", "<think>\nGot it.\n</think>\n\n18 degrees and clear."),
    ]),
    ("user_tool_response_text", [
        m("user", "Real question"),
        m("assistant", "<think>\nr\n</think>\n\nok"),
        m("user", "<tool_response>\nresult\n</tool_response>"),
        m("assistant", "<think>\nafter tool\n</think>\n\ndone"),
    ]),
    ("template_like_text", [
        m("user", "{{ messages }} {% if x %}y{% endif %} {# c #} <|im_end|> {%- raw -%}"),
        m("assistant", "Literal braces: {{ }} and {% %}."),
    ]),
    ("unknown_role", [m("developer", "dev note"), m("user", "Hi")]),
    ("only_system", [m("system", "Just a system prompt.")]),
]

THINKING_VARIANTS = {"qwen3_2507": [None], "qwen3_hybrid": [None, True, False]}


def load_templates():
    out = {}
    for name, path in TEMPLATE_FILES.items():
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
        tpl = cfg["chat_template"]
        if isinstance(tpl, list):
            tpl = next(t["template"] for t in tpl if t["name"] == "default")
        out[name] = tpl
    return out


def make_jinja_renderer():
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    cache = {}

    def render(source, messages, add_generation_prompt, enable_thinking):
        if source not in cache:
            cache[source] = env.from_string(source)
        kwargs = {"messages": messages, "add_generation_prompt": add_generation_prompt,
                  "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
        if enable_thinking is not None:
            kwargs["enable_thinking"] = enable_thinking
        return cache[source].render(**kwargs)

    return render, "jinja2 " + jinja2.__version__


def make_transformers_renderer():
    import transformers
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TOKENIZER_DIR)

    def render(source, messages, add_generation_prompt, enable_thinking):
        kwargs = {}
        if enable_thinking is not None:
            kwargs["enable_thinking"] = enable_thinking
        out = tok.apply_chat_template(messages, chat_template=source, tokenize=False,
                                      add_generation_prompt=add_generation_prompt, **kwargs)
        if not isinstance(out, str):
            raise TypeError("apply_chat_template(tokenize=False) returned %r" % type(out))
        return out

    return render, "transformers " + transformers.__version__


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gen_template_fixtures.py OUTDIR")
    outdir = os.path.join(sys.argv[1], "templates")
    os.makedirs(outdir, exist_ok=True)
    templates = load_templates()

    meta = {"template_sha256": {k: hashlib.sha256(v.encode("utf-8")).hexdigest()
                                for k, v in templates.items()}}
    render = None
    try:
        render, meta["renderer"] = make_transformers_renderer()
    except Exception:  # noqa: BLE001 - any failure to import or load means: fall back
        meta["transformers_error"] = traceback.format_exc()
        print("transformers unavailable, falling back to jinja2:\n" + meta["transformers_error"],
              file=sys.stderr)
    check = None
    try:
        check, meta["jinja2"] = make_jinja_renderer()
    except Exception:  # noqa: BLE001
        meta["jinja2_error"] = traceback.format_exc()
    if render is None:
        if check is None:
            sys.exit("neither transformers nor jinja2 could be loaded")
        render, meta["renderer"] = check, meta["jinja2"]
        check = None
    print("rendering with", meta["renderer"], file=sys.stderr)

    cases, disagreements = [], []
    for tname, source in templates.items():
        for conv_name, messages in CONVERSATIONS:
            for agp in (True, False):
                for thinking in THINKING_VARIANTS[tname]:
                    rendered = render(source, messages, agp, thinking)
                    cases.append({"template": tname, "name": conv_name, "messages": messages,
                                  "add_generation_prompt": agp, "enable_thinking": thinking,
                                  "rendered": rendered})
                    if check is not None:
                        other = check(source, messages, agp, thinking)
                        if other != rendered:
                            disagreements.append({"template": tname, "name": conv_name,
                                                  "add_generation_prompt": agp,
                                                  "enable_thinking": thinking, "jinja2": other})
    meta["cases"] = len(cases)
    meta["jinja2_disagreements"] = disagreements

    with open(os.path.join(outdir, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False, indent=1)
        f.write("\n")
    with open(os.path.join(outdir, "meta.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote %d cases (%d jinja2 disagreements) to %s" % (len(cases), len(disagreements), outdir),
          file=sys.stderr)


if __name__ == "__main__":
    main()
