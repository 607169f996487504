// A recursive-descent parser that mirrors jinja2's parser.py for the supported subset, with
// the same operator precedence: condexpr < or < and < not < compare < + - < ~ < * / // % < **
// < unary - + < primary with postfix (.a [i] (...)) and filters/tests (| f, is t).
#include <algorithm>
#include <initializer_list>

#include "core/error.h"
#include "tokenizer/jinja_ast.h"
#include "tokenizer/jinja_lexer.h"
#include "tokenizer/jinja_ops.h"

namespace nibble::jinja {

void unsupported(int line, std::string_view what) {
  fail("line {}: unsupported Jinja construct: {}", line, what);
}

namespace {

// Nesting deeper than this (brackets, unary operators, blocks, chains like a+a+...+a) is refused
// rather than risking the stack on a hostile template; real templates nest a handful of levels.
constexpr int kMaxDepth = 200;

// Adds `child` (may be null) to `parent`, tracking the tree's depth: the evaluator recurses
// over the tree, so its depth is what must stay bounded.
void attach(Expr& parent, ExprPtr child) {
  if (child) {
    parent.depth = std::max(parent.depth, child->depth + 1);
    if (parent.depth > kMaxDepth)
      fail("line {}: the template nests deeper than {} levels", parent.line, kMaxDepth);
  }
  parent.children.push_back(std::move(child));
}

ExprPtr make(ExprKind kind, int line) {
  auto e = std::make_unique<Expr>();
  e->kind = kind;
  e->line = line;
  return e;
}

ExprPtr make_unary(ExprKind kind, int line, ExprPtr operand) {
  ExprPtr e = make(kind, line);
  attach(*e, std::move(operand));
  return e;
}

ExprPtr make_binary(ExprKind kind, int line, std::string op, ExprPtr a, ExprPtr b) {
  ExprPtr e = make(kind, line);
  e->name = std::move(op);
  attach(*e, std::move(a));
  attach(*e, std::move(b));
  return e;
}

std::string describe(const Token& t) {
  switch (t.kind) {
    case Tok::Text:
      return "template text";
    case Tok::VarBegin:
      return "'{{'";
    case Tok::VarEnd:
      return "'}}'";
    case Tok::BlockBegin:
      return "'{%'";
    case Tok::BlockEnd:
      return "'%}'";
    case Tok::Name:
      return fmt::format("name '{}'", t.text);
    case Tok::String:
      return "a string";
    case Tok::Int:
    case Tok::Float:
      return "a number";
    case Tok::Op:
      return fmt::format("'{}'", t.text);
    case Tok::End:
      return "the end of the template";
  }
  return "?";
}

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : toks_(std::move(tokens)) {}

  std::shared_ptr<const Template> run() {
    auto tmpl = std::make_shared<Template>();
    std::string end = parse_body(tmpl->body, {});
    NIBBLE_ASSERT(end.empty());
    return tmpl;
  }

 private:
  // Counts the recursion of the parse functions that can nest without bound.
  class DepthGuard {
   public:
    explicit DepthGuard(Parser& p) : p_(p) {
      if (++p_.depth_ > kMaxDepth)
        fail("line {}: the template nests deeper than {} levels", p_.cur().line, kMaxDepth);
    }
    ~DepthGuard() { --p_.depth_; }
    DepthGuard(const DepthGuard&) = delete;
    DepthGuard& operator=(const DepthGuard&) = delete;

   private:
    Parser& p_;
  };

  // ---- token helpers ----
  const Token& cur() const { return toks_[i_]; }
  const Token& peek() const { return toks_[i_ + 1 < toks_.size() ? i_ + 1 : i_]; }
  void next() {
    if (i_ + 1 < toks_.size()) ++i_;
  }
  bool is_op(std::string_view op) const { return cur().kind == Tok::Op && cur().text == op; }
  bool is_name(std::string_view name) const { return cur().kind == Tok::Name && cur().text == name; }
  bool skip_op(std::string_view op) {
    if (!is_op(op)) return false;
    next();
    return true;
  }
  bool skip_name(std::string_view name) {
    if (!is_name(name)) return false;
    next();
    return true;
  }
  [[noreturn]] void error_expected(std::string_view what) const {
    fail("line {}: expected {}, found {}", cur().line, what, describe(cur()));
  }
  void expect_op(std::string_view op) {
    if (!skip_op(op)) error_expected(fmt::format("'{}'", op));
  }
  std::string expect_name() {
    if (cur().kind != Tok::Name) error_expected("a name");
    std::string n = cur().text;
    next();
    return n;
  }
  void expect_block_end() {
    if (cur().kind != Tok::BlockEnd) error_expected("'%}'");
    next();
  }

  // ---- statements ----

  // Parses statements until a block tag whose keyword is in `ends` (returned, with the tag's
  // keyword consumed) or the end of the source (returns "" when `ends` is empty, else an error).
  std::string parse_body(Body& body, std::initializer_list<std::string_view> ends) {
    while (true) {
      const Token& t = cur();
      if (t.kind == Tok::End) {
        if (ends.size() == 0) return "";
        fail("line {}: unexpected end of template, a block is not closed: expected '{{% {} %}}'", t.line,
             *(ends.end() - 1));
      }
      if (t.kind == Tok::Text) {
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::Text;
        s->line = t.line;
        s->text = t.text;
        body.push_back(std::move(s));
        next();
      } else if (t.kind == Tok::VarBegin) {
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::Print;
        s->line = t.line;
        next();
        s->expr = parse_tuple(true);
        if (cur().kind != Tok::VarEnd) error_expected("'}}'");
        next();
        body.push_back(std::move(s));
      } else if (t.kind == Tok::BlockBegin) {
        next();
        if (cur().kind != Tok::Name) error_expected("a statement keyword");
        std::string keyword = cur().text;
        for (std::string_view e : ends) {
          if (keyword == e) {
            next();
            return keyword;
          }
        }
        parse_statement(body);
      } else {
        fail("line {}: unexpected {}", t.line, describe(t));
      }
    }
  }

  void parse_statement(Body& body) {
    DepthGuard guard(*this);
    const int line = cur().line;
    const std::string keyword = expect_name();
    auto s = std::make_unique<Stmt>();
    s->line = line;
    if (keyword == "if") {
      s->kind = StmtKind::If;
      ExprPtr cond = parse_expression(false);
      while (true) {
        expect_block_end();
        Body branch;
        std::string end = parse_body(branch, {"elif", "else", "endif"});
        s->branches.emplace_back(std::move(cond), std::move(branch));
        if (end == "elif") {
          cond = parse_expression(false);
          continue;
        }
        if (end == "else") {
          expect_block_end();
          parse_body(s->else_body, {"endif"});
        }
        break;
      }
    } else if (keyword == "for") {
      s->kind = StmtKind::For;
      do {
        s->targets.push_back(expect_name());
      } while (skip_op(","));
      if (!skip_name("in")) error_expected("'in'");
      s->expr = parse_tuple(false);
      if (skip_name("if")) s->cond = parse_expression(true);
      if (is_name("recursive")) unsupported(line, "recursive for loops");
      expect_block_end();
      if (parse_body(s->body, {"else", "endfor"}) == "else") {
        expect_block_end();
        parse_body(s->else_body, {"endfor"});
      }
    } else if (keyword == "set") {
      std::string first = expect_name();
      s->targets.push_back(first);
      if (skip_op(".")) {
        s->attr_target = true;
        s->targets.push_back(expect_name());
      } else {
        while (skip_op(",")) s->targets.push_back(expect_name());
      }
      if (skip_op("=")) {
        s->kind = StmtKind::Set;
        s->expr = parse_tuple(true);
      } else {
        if (s->attr_target || s->targets.size() != 1) error_expected("'='");
        if (is_op("|")) unsupported(line, "filtered set blocks ({% set x | filter %})");
        s->kind = StmtKind::SetBlock;
        expect_block_end();
        parse_body(s->body, {"endset"});
      }
    } else if (keyword == "macro") {
      s->kind = StmtKind::Macro;
      s->text = expect_name();
      expect_op("(");
      while (!skip_op(")")) {
        if (!s->params.empty()) expect_op(",");
        std::string param = expect_name();
        ExprPtr def;
        if (skip_op("=")) def = parse_expression(true);
        s->params.emplace_back(std::move(param), std::move(def));
      }
      expect_block_end();
      parse_body(s->body, {"endmacro"});
    } else if (keyword == "break" || keyword == "continue") {
      s->kind = keyword == "break" ? StmtKind::Break : StmtKind::Continue;
    } else if (keyword == "generation") {
      // transformers' AssistantTracker extension only records where assistant text is; the
      // rendered text is the body's.
      expect_block_end();
      Body inner;
      parse_body(inner, {"endgeneration"});
      expect_block_end();
      for (auto& st : inner) body.push_back(std::move(st));
      return;
    } else if (keyword.starts_with("end") || keyword == "elif" || keyword == "else") {
      fail("line {}: unexpected '{{% {} %}}' (no open block it could close)", line, keyword);
    } else {
      unsupported(line, fmt::format("the '{{% {} %}}' statement", keyword));
    }
    expect_block_end();
    body.push_back(std::move(s));
  }

  // ---- expressions ----

  // Comma-separated expressions: one without a comma is itself, more make a Tuple.
  ExprPtr parse_tuple(bool with_condexpr) {
    const int line = cur().line;
    ExprPtr first = parse_expression(with_condexpr);
    if (!is_op(",")) return first;
    ExprPtr t = make(ExprKind::Tuple, line);
    attach(*t, std::move(first));
    while (skip_op(",")) {
      if (tuple_ends()) break;
      attach(*t, parse_expression(with_condexpr));
    }
    return t;
  }

  bool tuple_ends() const {
    return cur().kind == Tok::VarEnd || cur().kind == Tok::BlockEnd || is_op(")") || is_name("if");
  }

  ExprPtr parse_expression(bool with_condexpr) {
    DepthGuard guard(*this);
    return with_condexpr ? parse_condexpr() : parse_or();
  }

  ExprPtr parse_condexpr() {
    const int line = cur().line;
    ExprPtr expr = parse_or();
    while (skip_name("if")) {
      ExprPtr cond = parse_or();
      ExprPtr other = skip_name("else") ? parse_condexpr() : nullptr;
      ExprPtr e = make(ExprKind::CondExpr, line);
      attach(*e, std::move(cond));
      attach(*e, std::move(expr));
      attach(*e, std::move(other));
      expr = std::move(e);
    }
    return expr;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (is_name("or")) {
      const int line = cur().line;
      next();
      left = make_binary(ExprKind::Or, line, "or", std::move(left), parse_and());
    }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (is_name("and")) {
      const int line = cur().line;
      next();
      left = make_binary(ExprKind::And, line, "and", std::move(left), parse_not());
    }
    return left;
  }

  ExprPtr parse_not() {
    DepthGuard guard(*this);
    if (is_name("not")) {
      const int line = cur().line;
      next();
      return make_unary(ExprKind::Not, line, parse_not());
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    const int line = cur().line;
    ExprPtr first = parse_math1();
    ExprPtr cmp;
    while (true) {
      std::string op;
      if (cur().kind == Tok::Op && (cur().text == "==" || cur().text == "!=" || cur().text == "<" ||
                                    cur().text == "<=" || cur().text == ">" || cur().text == ">=")) {
        op = cur().text;
        next();
      } else if (is_name("in")) {
        op = "in";
        next();
      } else if (is_name("not") && peek().kind == Tok::Name && peek().text == "in") {
        op = "notin";
        next();
        next();
      } else {
        break;
      }
      if (!cmp) {
        cmp = make(ExprKind::Compare, line);
        attach(*cmp, std::move(first));
      }
      cmp->ops.push_back(op);
      attach(*cmp, parse_math1());
    }
    return cmp ? std::move(cmp) : std::move(first);
  }

  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      const int line = cur().line;
      std::string op = cur().text;
      next();
      left = make_binary(ExprKind::Binary, line, op, std::move(left), parse_concat());
    }
    return left;
  }

  ExprPtr parse_concat() {
    const int line = cur().line;
    ExprPtr first = parse_math2();
    if (!is_op("~")) return first;
    ExprPtr e = make(ExprKind::Concat, line);
    attach(*e, std::move(first));
    while (skip_op("~")) attach(*e, parse_math2());
    return e;
  }

  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const int line = cur().line;
      std::string op = cur().text;
      next();
      left = make_binary(ExprKind::Binary, line, op, std::move(left), parse_pow());
    }
    return left;
  }

  ExprPtr parse_pow() {
    ExprPtr left = parse_unary(true);
    while (is_op("**")) {
      const int line = cur().line;
      next();
      left = make_binary(ExprKind::Binary, line, "**", std::move(left), parse_unary(true));
    }
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
    DepthGuard guard(*this);
    const int line = cur().line;
    ExprPtr node;
    if (skip_op("-")) {
      node = make_unary(ExprKind::Neg, line, parse_unary(false));
    } else if (skip_op("+")) {
      node = make_unary(ExprKind::Pos, line, parse_unary(false));
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    ExprPtr e;
    if (t.kind == Tok::Name) {
      e = make(ExprKind::Const, t.line);
      if (t.text == "true" || t.text == "True") {
        e->value = Value::from_bool(true);
      } else if (t.text == "false" || t.text == "False") {
        e->value = Value::from_bool(false);
      } else if (t.text == "none" || t.text == "None") {
        e->value = Value::none();
      } else {
        e->kind = ExprKind::Name;
        e->name = t.text;
      }
      next();
    } else if (t.kind == Tok::String) {
      // Adjacent string literals concatenate, as in Python.
      std::string s;
      const int line = t.line;
      while (cur().kind == Tok::String) {
        s += cur().text;
        next();
      }
      e = make(ExprKind::Const, line);
      e->value = Value::from_string(std::move(s));
    } else if (t.kind == Tok::Int || t.kind == Tok::Float) {
      e = make(ExprKind::Const, t.line);
      e->value = t.kind == Tok::Int ? Value::from_int(t.integer) : Value::from_float(t.number);
      next();
    } else if (is_op("(")) {
      const int line = t.line;
      next();
      if (skip_op(")")) return make(ExprKind::Tuple, line);
      e = parse_tuple(true);
      expect_op(")");
    } else if (is_op("[")) {
      e = make(ExprKind::List, t.line);
      next();
      while (!skip_op("]")) {
        if (!e->children.empty()) {
          expect_op(",");
          if (skip_op("]")) break;
        }
        attach(*e, parse_expression(true));
      }
    } else if (is_op("{")) {
      e = make(ExprKind::Dict, t.line);
      next();
      while (!skip_op("}")) {
        if (!e->children.empty()) {
          expect_op(",");
          if (skip_op("}")) break;
        }
        attach(*e, parse_expression(true));
        expect_op(":");
        attach(*e, parse_expression(true));
      }
    } else {
      error_expected("an expression");
    }
    return e;
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      const int line = cur().line;
      if (skip_op(".")) {
        if (cur().kind == Tok::Name) {
          ExprPtr e = make_unary(ExprKind::Getattr, line, std::move(node));
          e->name = cur().text;
          node = std::move(e);
        } else if (cur().kind == Tok::Int) {
          ExprPtr index = make(ExprKind::Const, line);
          index->value = Value::from_int(cur().integer);
          node = make_binary(ExprKind::Getitem, line, "", std::move(node), std::move(index));
        } else {
          error_expected("an attribute name after '.'");
        }
        next();
      } else if (skip_op("[")) {
        node = parse_subscript(std::move(node), line);
      } else if (is_op("(")) {
        node = parse_call(make_unary(ExprKind::Call, line, std::move(node)));
      } else {
        return node;
      }
    }
  }

  // After '[': an index, or a slice start:stop:step with any part left out.
  ExprPtr parse_subscript(ExprPtr object, int line) {
    ExprPtr start;
    if (!is_op(":")) {
      start = parse_expression(true);
      if (skip_op("]")) return make_binary(ExprKind::Getitem, line, "", std::move(object), std::move(start));
      if (is_op(",")) unsupported(line, "tuple subscripts (a[i, j])");
    }
    expect_op(":");
    ExprPtr e = make_unary(ExprKind::Slice, line, std::move(object));
    attach(*e, std::move(start));
    ExprPtr stop = (is_op(":") || is_op("]")) ? nullptr : parse_expression(true);
    ExprPtr step;
    if (skip_op(":") && !is_op("]")) step = parse_expression(true);
    expect_op("]");
    attach(*e, std::move(stop));
    attach(*e, std::move(step));
    return e;
  }

  // Fills the positional children and kwargs of `call` from `( args )`.
  ExprPtr parse_call(ExprPtr call) {
    expect_op("(");
    bool first = true;
    while (!skip_op(")")) {
      if (!first) {
        expect_op(",");
        if (skip_op(")")) break;
      }
      first = false;
      if (is_op("*") || is_op("**")) unsupported(cur().line, "*args / **kwargs in calls");
      if (cur().kind == Tok::Name && peek().kind == Tok::Op && peek().text == "=") {
        std::string key = cur().text;
        next();
        next();
        call->kwargs.emplace_back(std::move(key), parse_expression(true));
      } else {
        if (!call->kwargs.empty()) fail("line {}: positional argument after a keyword argument", cur().line);
        attach(*call, parse_expression(true));
      }
    }
    return call;
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      const int line = cur().line;
      if (skip_op("|")) {
        ExprPtr f = make_unary(ExprKind::Filter, line, std::move(node));
        f->name = dotted_name();
        if (!is_known_filter(f->name)) unsupported(line, fmt::format("the filter '{}'", f->name));
        if (is_op("(")) f = parse_call(std::move(f));
        node = std::move(f);
      } else if (skip_name("is")) {
        bool negated = skip_name("not");
        ExprPtr t = make_unary(ExprKind::Test, line, std::move(node));
        t->name = dotted_name();
        if (!is_known_test(t->name)) unsupported(line, fmt::format("the test '{}'", t->name));
        if (is_op("(")) {
          t = parse_call(std::move(t));
        } else if ((cur().kind == Tok::Name || cur().kind == Tok::String || cur().kind == Tok::Int ||
                    cur().kind == Tok::Float || is_op("(") || is_op("[") || is_op("{")) &&
                   !is_name("else") && !is_name("or") && !is_name("and")) {
          // jinja2 takes one argument without parentheses: `x is divisibleby 3`.
          if (is_name("is")) fail("line {}: you cannot chain multiple tests with 'is'", cur().line);
          attach(*t, parse_postfix(parse_primary()));
        }
        node = negated ? make_unary(ExprKind::Not, line, std::move(t)) : std::move(t);
      } else if (is_op("(")) {
        node = parse_call(make_unary(ExprKind::Call, line, std::move(node)));
      } else {
        return node;
      }
    }
  }

  std::string dotted_name() {
    std::string n = expect_name();
    while (skip_op(".")) n += fmt::format(".{}", expect_name());
    return n;
  }

  std::vector<Token> toks_;
  size_t i_ = 0;
  int depth_ = 0;
};

}  // namespace

std::shared_ptr<const Template> parse_template(std::string_view source) { return Parser(lex(source)).run(); }

}  // namespace nibble::jinja
