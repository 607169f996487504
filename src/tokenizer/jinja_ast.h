// defines: the syntax tree of the Jinja2 subset (jinja::Expr, jinja::Stmt, jinja::Template),
// parse_template() (jinja_parser.cpp) and render_template() (jinja_eval.cpp).
//
// The subset is what Hugging Face chat templates use: text, {{ expr }}, if/elif/else, for (with
// loop.*, an `if` filter, else, break/continue), set (names, tuples, namespace attributes, set
// blocks), macros, generation blocks, and Python-like expressions with filters and tests.
// Anything else (include, extends, call blocks, ...) fails to parse with an Error naming it.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenizer/jinja_value.h"

namespace nibble::jinja {

enum class ExprKind {
  Const,     // value
  Name,      // name
  List,      // children: items
  Tuple,     // children: items (a Python tuple; evaluated as a list)
  Dict,      // children: key0, value0, key1, value1, ...
  Getattr,   // children: [object]; name: attribute        a.b
  Getitem,   // children: [object, index]                  a[i]
  Slice,     // children: [object, start, stop, step], absent parts null   a[i:j:k]
  Call,      // children: [callee, positional...]; kwargs
  Filter,    // children: [operand, positional...]; name; kwargs           a | f(...)
  Test,      // children: [operand, positional...]; name; kwargs           a is t(...)
  Not,       // children: [operand]
  Neg,       // children: [operand]
  Pos,       // children: [operand]
  Binary,    // children: [a, b]; name: + - * / // % **
  Compare,   // children: [first, rest...]; ops: == != < <= > >= in notin (chained like Python)
  And,       // children: [a, b]
  Or,        // children: [a, b]
  CondExpr,  // children: [condition, then, else or null]   `then if condition else else`
  Concat,    // children: items                            a ~ b ~ c
};

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  ExprKind kind = ExprKind::Const;
  int line = 0;
  int depth = 1;  // height of this subtree (bounded by the parser)
  Value value;
  std::string name;
  std::vector<ExprPtr> children;
  std::vector<std::string> ops;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
};

enum class StmtKind {
  Text,      // text
  Print,     // expr                                  {{ expr }}
  If,        // branches (condition, body)...; else_body
  For,       // targets in expr [if cond]: body; else_body
  Set,       // targets = expr; or targets[0].targets[1] = expr when attr_target
  SetBlock,  // targets[0] = rendered body           {% set x %}...{% endset %}
  Macro,     // text: name; params; body
  Break,
  Continue,
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct Stmt {
  StmtKind kind = StmtKind::Text;
  int line = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr cond;
  std::vector<std::string> targets;
  bool attr_target = false;
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body;
  Body else_body;
  std::vector<std::pair<std::string, ExprPtr>> params;  // name, default (may be null)
};

struct Template {
  Body body;
};

// Throws Error "line N: ..." on a syntax error or an unsupported construct.
std::shared_ptr<const Template> parse_template(std::string_view source);

// Renders with `variables` as the template's globals (next to the built-in functions
// raise_exception, namespace, range, dict, strftime_now). Throws Error "line N: ...".
std::string render_template(const Template& tmpl, const Dict& variables);

// The message every construct outside the subset produces, so that callers can recognise it.
[[noreturn]] void unsupported(int line, std::string_view what);

}  // namespace nibble::jinja
