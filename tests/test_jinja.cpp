// The Jinja2-subset interpreter on its own: whitespace control, expressions, str / dict
// methods, filters, tests, loops, scoping and macros. Each case's expected text was rendered by
// jinja2 itself with the environment transformers uses for chat templates (sandboxed,
// trim_blocks, lstrip_blocks, loopcontrols, HF's tojson), so these compare against jinja2, not
// against our own reading of it. Errors are checked for the construct and the line they name.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "tokenizer/jinja_ast.h"
#include "tokenizer/jinja_value.h"

namespace nibble::jinja {
namespace {

struct JinjaCase {
  const char* source;
  const char* variables;  // a JSON object
  const char* expected;
};

std::string render(const std::string& source, const std::string& variables_json = "{}") {
  Value vars = from_json(nlohmann::ordered_json::parse(variables_json));
  return render_template(*parse_template(source), *vars.dict);
}

template <size_t N>
void check_cases(const JinjaCase (&cases)[N]) {
  for (const JinjaCase& c : cases) {
    std::string got;
    try {
      got = render(c.source, c.variables);
    } catch (const Error& e) {
      ADD_FAILURE() << "template: " << c.source << "\nthrew: " << e.what();
      continue;
    }
    EXPECT_EQ(got, c.expected) << "template: " << c.source;
  }
}

std::string repeat(const std::string& s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

std::string error_of(const std::string& source, const std::string& variables_json = "{}") {
  try {
    render(source, variables_json);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Generated expectations: jinja2 3.1.6, ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
const JinjaCase kWhitespace[] = {
    {"a  {% if true %}x{% endif %}  b", "{}", "a  x  b"},
    {"a\n  {% if true %}\n  x\n  {% endif %}\nb", "{}", "a\n  x\nb"},
    {"a\n  {%- if true -%}\n  x\n  {%- endif -%}\nb", "{}", "axb"},
    {"a\n  {%+ if true %}x{% endif +%}\nb", "{}", "a\n  x\nb"},
    {"  {{ 'v' }}  \n", "{}", "  v  "},
    {"a\n  {# comment #}\nb", "{}", "a\nb"},
    {"a {#- c -#} b", "{}", "ab"},
    {"x\n\n", "{}", "x\n"},
    {"line\r\nnext\rlast\r\n", "{}", "line\nnext\nlast"},
    {"{% raw %}{{ not evaluated }}{% endraw %}", "{}", "{{ not evaluated }}"},
    {"  {% raw %} {{x}} {% endraw %}\n after", "{}", " {{x}}  after"},
    {" x  {{- 'y' -}}  z ", "{}", " xyz "},
    {"{% for i in [1,2] %}\n  {{ i }}\n{% endfor %}\n", "{}", "  1\n  2\n"},
    {"\t{% if true %}t{% endif %}", "{}", "t"},
    {"a\n  text {% if true %}x{% endif %}", "{}", "a\n  text x"},
    {"{%if true%}a{%endif%}\n\nb", "{}", "a\nb"},
    {"{{ 'a' }}\n{{ 'b' }}\n", "{}", "a\nb"},
    {"{% set x = 1 %}\n{{ x }}\n{#- c #}\n\n", "{}", "1"},
    {"<{%- if true %}\n\n  y{% endif -%}\n\n>", "{}", "<\n  y>"},
    {"  {%- for m in ms %}\n    {{- m }}\n  {%- endfor %}\n", "{\"ms\": [\"a\", \"b\"]}", "ab"},
};
const JinjaCase kExpressions[] = {
    {"{{ 1 + 2 * 3 }}|{{ (1 + 2) * 3 }}|{{ 2 ** 3 ** 2 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ 7 % -3 }}|{{ 7 / 2 "
     "}}|{{ 1.5 + 1 }}|{{ 10 - 2 - 3 }}",
     "{}", "7|9|64|3|-4|-2|3.5|2.5|5"},
    {"{{ 'a' ~ 1 ~ none ~ true }}|{{ 'ab' * 2 }}|{{ [1] + [2, 'x'] }}|{{ x ~ 'y' }}", "{}",
     "a1NoneTrue|abab|[1, 2, 'x']|y"},
    {"{{ 1 < 2 < 3 }}|{{ 3 > 2 > 2 }}|{{ 'b' > 'a' }}|{{ 1 == 1.0 }}|{{ 'a' != 'a' }}|{{ 'x' in 'xyz' }}|{{ "
     "4 not in [1, 2] }}|{{ 'k' in {'k': 1} }}|{{ [1, 2] == [1, 2] }}|{{ x == y }}",
     "{}", "True|False|True|True|False|True|True|True|True|True"},
    {"{{ not true or false }}|{{ 0 or 'd' }}|{{ 1 and 'y' }}|{{ '' and 'y' }}|{{ 'yes' if 0 else 'no' }}|{{ "
     "'v' if 1 }}|[{{ 'v' if 0 }}]|{{ not 1 == 2 }}",
     "{}", "False|d|y||no|v|[]|True"},
    {"{{ -3|abs }}|{{ - 2 + 5 }}|{{ +4 }}|{{ -(1 + 2) }}|{{ 1_000 + 0x10 * 0 }}", "{}", "3|3|4|-3|1000"},
    {"{{ 'a' 'b' }}|{{ 'tab\\there' }}|{{ '\\u00e9\\x41\\'\\\\' }}|{{ \"dq'\" }}|{{ 'multi\nline' }}", "{}",
     "ab|tab\there|éA'\\|dq'|multi\nline"},
    {"{{ [1,2,3,4][1:3] }}|{{ [1,2,3,4][::-1] }}|{{ [1,2,3,4][-2:] }}|{{ 'héllo'[1:4] }}|{{ 'héllo'[::-2] "
     "}}|{{ [1,2,3][5:] }}|{{ 'abc'[-1] }}|{{ [1,2,3][-1] }}|{{ [1,2,3][:-1] }}|{{ [1,2,3,4,5][4:0:-2] }}",
     "{}", "[2, 3]|[4, 3, 2, 1]|[3, 4]|éll|olh|[]|c|3|[1, 2]|[5, 3]"},
    {"{{ d.a.b[1] }}|{{ d['a']['b'].0 }}|{{ d.missing }}|{{ d.missing is defined }}|{{ d.a.b|length }}|{{ "
     "d['a'].b[-1] }}|{{ d.a.b[7] is defined }}|{{ n.x }}",
     "{\"d\": {\"a\": {\"b\": [10, 20]}}, \"n\": null}", "20|10||False|2|20|False|"},
    {"{{ [1, 'a', none, true, 1.5, {'k': 'v'}] }}|{{ {'a': [1]} }}|{{ none }}|{{ undefined_var }}|{{ "
     "\"it's\" }}|{{ [\"it's\", 'q\"', 'n\\nl'] }}|{{ (1, 2) }}|{{ true }}",
     "{}",
     "[1, 'a', None, True, 1.5, {'k': 'v'}]|{'a': [1]}|None||it's|[\"it's\", 'q\"', 'n\\nl']|(1, 2)|True"},
    {"{{ 1.0 }}|{{ 1e16 }}|{{ 1e-5 }}|{{ 0.1 + 0.2 }}|{{ 4 / 2 }}|{{ 1e15 }}|{{ 2.5e-3 }}|{{ 123.456 }}|{{ "
     "1.5E2 }}|{{ -0.0 }}|{{ 1/3 }}",
     "{}",
     "1.0|1e+16|1e-05|0.30000000000000004|2.0|1000000000000000.0|0.0025|123.456|150.0|-0.0|0."
     "3333333333333333"},
    {"{{ f }}|{{ i }}|{{ b }}|{{ s }}|{{ l }}|{{ o }}",
     "{\"f\": 2.0, \"i\": -3, \"b\": false, \"s\": \"str\", \"l\": [1, [2]], \"o\": {\"z\": 1, \"a\": null}}",
     "2.0|-3|False|str|[1, [2]]|{'z': 1, 'a': None}"},
};
const JinjaCase kMethods[] = {
    {"{{ '  a b  '.strip() }}|{{ 'xxaxx'.lstrip('x') }}|{{ 'xxaxx'.rstrip('x') }}|{{ 'a,b,,c'.split(',') "
     "}}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'a b c'.rsplit(' ', 1) }}|{{ "
     "'aaa'.replace('a', 'b', 2) }}",
     "{}", "a b|axx|xxa|['a', 'b', '', 'c']|['a', 'b']|['a', 'b c']|['a b', 'c']|bba"},
    {"{{ 'Hi'.upper() }}{{ 'Hi'.lower() }}|{{ 'hello wORLD'.title() }}|{{ 'abc'.startswith('ab') }}{{ "
     "'abc'.endswith(('x', 'c')) }}|{{ 'banana'.find('n') }}{{ 'banana'.count('a') }}|{{ '-'.join(['a', "
     "'b']) }}|{{ 'hELLO'.capitalize() }}",
     "{}", "HIhi|Hello World|TrueTrue|23|a-b|Hello"},
    {"{{ '  a  b  c '.split(none, 1) }}|{{ '  a  b  c '.rsplit(none, 1) }}|{{ 'a::b::c'.rsplit('::') }}|{{ "
     "' x '.strip() }}|{{ 'x​'.strip() }}|{{ 'ab'.replace('', '-') }}|{{ '\\n\\nhi\\n'.strip('\\n') }}",
     "{}", "['a', 'b  c ']|['  a  b', 'c']|['a', 'b', 'c']|x|x​|-a-b-|hi"},
    {"{{ m.content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') }}|{{ "
     "m.content.split('</think>')[-1].lstrip('\\n') }}",
     "{\"m\": {\"content\": \"<think>\\nwhy\\n</think>\\n\\nanswer\"}}", "why|answer"},
};
const JinjaCase kFilters[] = {
    {"{{ '  x  '|trim }}|{{ 'xyx'|trim('x') }}|{{ [3,1]|length }}|{{ 'héllo'|length }}|{{ {'a':1}|length "
     "}}|{{ [1,2]|first }}{{ [1,2]|last }}|{{ 'abc'|list }}|{{ [1,'a']|join(', ') }}|{{ 'abc'|reverse }}|{{ "
     "[1,2,3]|reverse|list }}",
     "{}", "x|y|2|5|1|12|['a', 'b', 'c']|1, a|cba|[3, 2, 1]"},
    {"{{ 'Hello'|upper }}{{ 'Hello'|lower }}|{{ 'hello WORLD'|capitalize }}|{{ '42'|int + 1 }}|{{ 'x'|int "
     "}}|{{ '2.5'|float }}|{{ 3|string ~ 'x' }}|{{ undefined_var|default('dflt') }}|{{ ''|default('e', true) "
     "}}|{{ ''|d('e') }}|{{ 'aXbX'|replace('X', '-') }}|{{ 3.7|int }}|{{ x|length }}|[{{ x|trim }}]|{{ "
     "'a'|safe }}|{{ x|count }}",
     "{}", "HELLOhello|Hello world|43|0|2.5|3x|dflt|e||a-b-|3|0|[]|a|0"},
    {"{{ obj|tojson }}|{{ obj|tojson(indent=2) }}|{{ obj|tojson(sort_keys=true) }}|{{ 'x'|tojson }}|{{ [] | "
     "tojson }}|{{ {} | tojson }}|{{ 1.0|tojson }}|{{ [[1, []], {}]|tojson(indent=1) }}",
     "{\"obj\": {\"b\": 1, \"a\": [true, null, 1.5, \"é\\\"\\n\\u0001/<\"]}}",
     "{\"b\": 1, \"a\": [true, null, 1.5, \"é\\\"\\n\\u0001/<\"]}|{\n  \"b\": 1,\n  \"a\": [\n    true,\n    "
     "null,\n    1.5,\n    \"é\\\"\\n\\u0001/<\"\n  ]\n}|{\"a\": [true, null, 1.5, \"é\\\"\\n\\u0001/<\"], "
     "\"b\": 1}|\"x\"|[]|{}|1.0|[\n [\n  1,\n  []\n ],\n {}\n]"},
    {"{% for k, v in obj|items %}{{ k }}={{ v }};{% endfor %}|{% for k, v in obj.items() %}{{ k }};{% endfor "
     "%}|{{ obj.keys()|list }}|{{ obj.values()|list }}|{{ obj.get('b') }}{{ obj.get('zz', 'none!') }}{{ "
     "obj.get('zz') }}",
     "{\"obj\": {\"b\": 1, \"a\": 2}}", "b=1;a=2;|b;a;|['b', 'a']|[1, 2]|1none!None"},
    {"{{ msgs|map(attribute='role')|join(',') }}|{{ msgs|selectattr('role', 'equalto', "
     "'user')|map(attribute='content')|list }}|{{ msgs|rejectattr('role', 'eq', 'user')|list|length }}|{{ "
     "[0,1,2,'',none]|select|list }}|{{ [1,2,3,4]|select('even')|list }}|{{ ['a','b']|map('upper')|join "
     "}}|{{ [1,2,3]|reject('odd')|list }}|{{ msgs|selectattr('missing')|list }}",
     "{\"msgs\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}, "
     "{\"role\": \"user\", \"content\": \"c\"}]}",
     "user,assistant,user|['a', 'c']|1|[1, 2]|[2, 4]|AB|[2]|[]"},
};
const JinjaCase kTests[] = {
    {"{{ x is defined }}{{ x is undefined }}{{ none is none }}{{ 1 is number }}{{ true is number }}{{ true "
     "is integer }}{{ 1 is integer }}{{ 1.0 is float }}{{ 's' is string }}{{ {} is mapping }}{{ [] is "
     "mapping }}{{ [] is iterable }}{{ 's' is sequence }}",
     "{}", "FalseTrueTrueTrueTrueFalseTrueTrueTrueTrueFalseTrueTrue"},
    {"{{ true is true }}{{ 1 is true }}{{ false is false }}{{ 0 is false }}{{ true is boolean }}{{ 4 is even "
     "}}{{ 3 is odd }}{{ 9 is divisibleby 3 }}{{ 9 is divisibleby(2) }}{{ 'a' is in 'abc' }}{{ 2 is eq 2 "
     "}}{{ 2 is ne 2 }}",
     "{}", "TrueFalseTrueFalseTrueTrueTrueTrueFalseTrueTrueFalse"},
    {"{{ 'abc' is lower }}{{ 'ABC' is upper }}{{ none is sameas none }}{{ x is not defined }}{{ not x is "
     "defined }}{{ 3 is gt 2 }}{{ 3 is lt 2 }}{{ 3 is ge 3 }}{{ 3 is le 2 }}{{ 2 is equalto 2 }}{{ 1 is "
     "sameas true }}{{ x is none }}{{ f is callable }}",
     "{\"f\": null}", "TrueTrueTrueTrueTrueTrueFalseTrueFalseTrueFalseFalseFalse"},
    {"{{ m.reasoning_content is defined and m.reasoning_content is not none }}|{{ m.content is string }}|{{ "
     "m.content.startswith('<tool_response>') and m.content.endswith('</tool_response>') }}|{{ m.tool_calls "
     "is defined }}|{{ not m.tool_calls }}",
     "{\"m\": {\"content\": \"<tool_response>x</tool_response>\", \"reasoning_content\": null}}",
     "False|True|True|False|True"},
};
const JinjaCase kLoops[] = {
    {"{% for i in [1,2,3] %}{{ loop.index0 }}{{ loop.index }}{{ loop.revindex0 }}{{ loop.revindex }}{{ "
     "loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.previtem }}{{ loop.nextitem }};{% endfor %}",
     "{}", "0123TrueFalse32;1212FalseFalse313;2301FalseTrue32;"},
    {"{% for i in [1,2,3,4] if i is even %}{{ i }}{{ loop.index }}{{ loop.length }};{% else %}none{% endfor "
     "%}",
     "{}", "212;422;"},
    {"{% for i in [] %}x{% else %}empty{% endfor %}|{% for i in [1,2,3,4] %}{% if i == 2 %}{% continue %}{% "
     "endif %}{% if i == 4 %}{% break %}{% endif %}{{ i }}{% endfor %}|{% for x in undefined_thing %}x{% "
     "else %}u{% endfor %}",
     "{}", "empty|13|u"},
    {"{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %}|{% for c in 'hé' %}[{{ c }}]{% endfor %}|{% "
     "for k in {'x': 1, 'y': 2} %}{{ k }}{% endfor %}|{% for i in range(3) %}{{ i }}{% endfor %}{% for i in "
     "range(5, 0, -2) %}{{ i }}{% endfor %}",
     "{}", "37|[h][é]|xy|012531"},
    {"{% for i in [1,2] %}{% for j in 'ab' %}{{ loop.index }}{{ i }}{{ j }}{% endfor %}{{ loop.index }};{% "
     "endfor %}|{% for x in [1,2,3] %}{{ loop.cycle('o', 'e') }}{% endfor %}",
     "{}", "11a21b1;12a22b2;|oeo"},
    {"{%- for message in messages[::-1] %}{%- set index = (messages|length - 1) - loop.index0 %}{{ index "
     "}}{{ message }}{% endfor %}",
     "{\"messages\": [\"a\", \"b\", \"c\"]}", "2c1b0a"},
};
const JinjaCase kScoping[] = {
    {"{% set x = 1 %}{% for i in [1,2] %}{{ x }}{% set x = i * 10 %}{{ x }}{% endfor %}{{ x }}", "{}",
     "1101201"},
    {"{% for i in [1, 2] %}{% if i == 1 %}{% set y = 5 %}{% endif %}[{{ y }}]{% endfor %}|{% if true %}{% "
     "set z = 1 %}{% endif %}{{ z }}",
     "{}", "[5][]|1"},
    {"{% set ns = namespace(n=0, last=none) %}{% for i in [1,2,3] %}{% set ns.n = ns.n + i %}{% set ns.last "
     "= i %}{% endfor %}{{ ns.n }}{{ ns.last }}",
     "{}", "63"},
    {"{% set a, b = [1, 2] %}{{ b }}{{ a }}|{% set t = 1, 2 %}{{ t }}|{% set block %}in {{ 'block' }}{% "
     "endset %}[{{ block }}]",
     "{}", "21|(1, 2)|[in block]"},
    {"{% macro f(a, b=2) %}[{{ a }}{{ b }}]{% endmacro %}{{ f(1) }}{{ f(1, b=3) }}{{ f(b=5, a=4) }}{{ f() "
     "}}|{% set g = 'G' %}{% macro m() %}{{ g }}{% endmacro %}{{ m() }}",
     "{}", "[12][13][45][2]|G"},
    {"{% set messages = messages[1:] %}{{ messages|length }}{% for message in messages %}{% set content = "
     "message ~ '!' %}{{ content }}{% endfor %}{{ content }}",
     "{\"messages\": [\"s\", \"u\", \"a\"]}", "2u!a!"},
};

TEST(Jinja, WhitespaceControlMatchesJinja2) { check_cases(kWhitespace); }
TEST(Jinja, ExpressionsMatchJinja2) { check_cases(kExpressions); }
TEST(Jinja, StringMethodsMatchPython) { check_cases(kMethods); }
TEST(Jinja, FiltersMatchJinja2) { check_cases(kFilters); }
TEST(Jinja, TestsMatchJinja2) { check_cases(kTests); }
TEST(Jinja, LoopsMatchJinja2) { check_cases(kLoops); }
TEST(Jinja, ScopingAndMacrosMatchJinja2) { check_cases(kScoping); }

// transformers adds a {% generation %} block (AssistantTracker) that renders its body unchanged.
TEST(Jinja, GenerationBlockRendersItsBody) {
  EXPECT_EQ(render("a{% generation %}{{ 'g' }}{% endgeneration %}b"), "agb");
}

TEST(Jinja, RuntimeErrorsNameTheProblemAndLine) {
  const struct {
    const char* source;
    const char* needle;
  } cases[] = {
      {"\n{{ x.y }}", "line 2: 'x' is undefined"},
      {"{{ 1 + 'a' }}", "unsupported operand type(s) for +: 'int' and 'str'"},
      {"{% for x in 3 %}{% endfor %}", "'int' object is not iterable"},
      {"{% set d = {} %}{% set d.a = 1 %}", "cannot assign attribute on non-namespace object"},
      {"{{ 1 / 0 }}", "division by zero"},
      {"{{ 1 // 0 }}", "division by zero"},
      {"{{ 'a %s' % 1 }}", "unsupported Jinja construct: printf-style"},
      {"{% macro f(a) %}{% endmacro %}{{ f(1, 2) }}", "takes not more than 1 argument"},
      {"{% macro f(a) %}{% endmacro %}{{ f(b=2) }}", "no keyword argument 'b'"},
      {"{{ raise_exception('nope: ' ~ 3) }}", "the template raised an error: nope: 3"},
      {"{{ 3() }}", "not callable"},
      {"{{ nothing() }}", "'nothing' is undefined"},
      {"{{ x < 1 }}", "'x' is undefined"},
      {"{{ [1] < 'a' }}", "'<' not supported"},
      {"{{ {'a': 1}|tojson(separators=(',', ':')) }}", "unsupported Jinja construct"},
      {"{{ [1, 2][::0] }}", "slice step cannot be zero"},
      {"{{ 'x'.zfill(3) }}", "unsupported Jinja construct: the str method 'zfill()'"},
      {"{{ x|tojson }}", "not JSON serializable"},
      {"{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recursed deeper than"},
      {"{% for a, b in [[1, 2, 3]] %}{% endfor %}", "cannot unpack"},
  };
  for (const auto& c : cases) {
    const std::string err = error_of(c.source);
    EXPECT_NE(err.find(c.needle), std::string::npos) << c.source << "\n  error: " << err;
  }
}

TEST(Jinja, ParseErrorsNameTheConstructAndLine) {
  const struct {
    std::string source;
    const char* needle;
  } cases[] = {
      {"{{ x | nosuchfilter }}", "unsupported Jinja construct: the filter 'nosuchfilter'"},
      {"{{ x is nosuchtest }}", "unsupported Jinja construct: the test 'nosuchtest'"},
      {"a\nb\n{% include 'x' %}", "line 3: unsupported Jinja construct: the '{% include %}' statement"},
      {"{% for x in y recursive %}{% endfor %}", "recursive"},
      {"{{ f(*args) }}", "*args"},
      {"{% if x %}{% else %}{% else %}{% endif %}", "unexpected '{% else %}'"},
      {"{% for x in y %}", "expected '{% endfor %}'"},
      {"{{ 1 2 }}", "expected '}}', found a number"},
      {"{% set %}", "expected a name"},
      {"{{ x ]}}", "unexpected ']'"},
      {"{{ 'a\\x4' }}", "truncated \\x escape"},
      {"{{ x $ y }}", "unexpected character '$'"},
      {"{% raw %}never ends", "endraw"},
      {"{{ " + repeat("(", 5000) + "1" + repeat(")", 5000) + " }}", "nests deeper than"},
      {"{{ " + repeat("-", 5000) + "1 }}", "nests deeper than"},
      {"{{ 1" + repeat(" + 1", 5000) + " }}", "nests deeper than"},
      {"{{ y" + repeat(".a", 5000) + " }}", "nests deeper than"},
      {"{{ y" + repeat("|trim", 5000) + " }}", "nests deeper than"},
      {repeat("{% if x %}", 5000), "nests deeper than"},
      {"{{ a is divisibleby is odd }}", "cannot chain multiple tests"},
  };
  for (const auto& c : cases) {
    std::string err;
    try {
      parse_template(c.source);
    } catch (const Error& e) {
      err = e.what();
    }
    EXPECT_NE(err.find(c.needle), std::string::npos) << c.source.substr(0, 80) << "\n  error: " << err;
  }
}

TEST(JinjaValue, PythonFloatRepr) {
  EXPECT_EQ(format_float(1.0), "1.0");
  EXPECT_EQ(format_float(0.1), "0.1");
  EXPECT_EQ(format_float(1e16), "1e+16");
  EXPECT_EQ(format_float(1.5e-7), "1.5e-07");
  EXPECT_EQ(format_float(0.0001), "0.0001");
  EXPECT_EQ(format_float(123456789012345.0), "123456789012345.0");
  EXPECT_EQ(format_float(-2.5), "-2.5");
}

}  // namespace
}  // namespace nibble::jinja
