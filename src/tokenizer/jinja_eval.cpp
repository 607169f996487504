// Tree-walking evaluator for the Jinja2 subset. Scoping follows jinja2: if blocks share their
// enclosing scope; every for-loop iteration and macro call gets a fresh child scope, so a
// `set` inside a loop is invisible after it (namespace() objects exist to carry state out).
#include <ctime>
#include <unordered_map>

#include "core/error.h"
#include "tokenizer/jinja_ast.h"
#include "tokenizer/jinja_ops.h"

namespace nibble::jinja {
namespace {

struct Scope {
  std::unordered_map<std::string, Value> vars;
  std::shared_ptr<Scope> parent;

  const Value* lookup(const std::string& name) const {
    for (const Scope* s = this; s; s = s->parent.get()) {
      auto it = s->vars.find(name);
      if (it != s->vars.end()) return &it->second;
    }
    return nullptr;
  }
};

using ScopePtr = std::shared_ptr<Scope>;

ScopePtr child_scope(const ScopePtr& parent) {
  auto s = std::make_shared<Scope>();
  s->parent = parent;
  return s;
}

// ---- built-in global functions ----

Value fn_raise_exception(CallArgs& a) {
  a.check(1, {});
  fail("line {}: the template raised an error: {}", a.line,
       a.positional.empty() ? "" : to_str(a.positional[0]));
}

Value fn_namespace(CallArgs& a) {
  Dict d;
  for (const Value& p : a.positional) {
    if (!p.is_dict()) fail("line {}: namespace() takes a mapping, got {}", a.line, kind_name(p.kind));
    for (const auto& [k, v] : p.dict->entries) d.set(k, v);
  }
  for (const auto& [k, v] : a.keyword) d.set(k, v);
  return Value::new_namespace(std::move(d));
}

Value fn_dict(CallArgs& a) {
  Value ns = fn_namespace(a);
  return Value::from_dict(*ns.dict);
}

Value fn_range(CallArgs& a) {
  a.check(3, {});
  std::vector<int64_t> n;
  for (const Value& v : a.positional) {
    if (v.kind != Kind::Int) fail("line {}: range() takes integers, got {}", a.line, kind_name(v.kind));
    n.push_back(v.integer);
  }
  if (n.empty()) fail("line {}: range() expects at least one argument", a.line);
  int64_t start = n.size() > 1 ? n[0] : 0;
  int64_t stop = n.size() > 1 ? n[1] : n[0];
  int64_t step = n.size() > 2 ? n[2] : 1;
  if (step == 0) fail("line {}: range() arg 3 must not be zero", a.line);
  List out;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    // jinja2's sandbox refuses ranges over 100000 items (MAX_RANGE).
    if (out.size() >= 100000) fail("line {}: range() too big (more than 100000 items)", a.line);
    out.push_back(Value::from_int(i));
  }
  return Value::from_list(std::move(out));
}

Value fn_strftime_now(CallArgs& a) {
  a.check(1, {});
  std::string format = a.positional.empty() || !a.positional[0].is_string() ? "" : a.positional[0].text;
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char buf[256];
  size_t n = std::strftime(buf, sizeof buf, format.c_str(), &tm);
  return Value::from_string(std::string(buf, n));
}

constexpr int kMaxMacroDepth = 100;

class Evaluator {
 public:
  std::string render(const Template& tmpl, const Dict& variables) {
    auto globals = std::make_shared<Scope>();
    globals->vars["raise_exception"] = Value::from_function(fn_raise_exception);
    globals->vars["namespace"] = Value::from_function(fn_namespace);
    globals->vars["dict"] = Value::from_function(fn_dict);
    globals->vars["range"] = Value::from_function(fn_range);
    globals->vars["strftime_now"] = Value::from_function(fn_strftime_now);
    for (const auto& [k, v] : variables.entries) globals->vars[k] = v;
    std::string out;
    if (exec(tmpl.body, globals, out) != Flow::Normal) fail("'break' or 'continue' outside of a for loop");
    return out;
  }

 private:
  enum class Flow { Normal, Break, Continue };

  int macro_depth_ = 0;

  Flow exec(const Body& body, const ScopePtr& scope, std::string& out) {
    for (const StmtPtr& s : body) {
      Flow f = exec(*s, scope, out);
      if (f != Flow::Normal) return f;
    }
    return Flow::Normal;
  }

  Flow exec(const Stmt& s, const ScopePtr& scope, std::string& out) {
    switch (s.kind) {
      case StmtKind::Text:
        out += s.text;
        return Flow::Normal;
      case StmtKind::Print:
        out += to_str(eval(*s.expr, scope));
        return Flow::Normal;
      case StmtKind::If:
        for (const auto& [cond, body] : s.branches) {
          if (truthy(eval(*cond, scope))) return exec(body, scope, out);
        }
        return exec(s.else_body, scope, out);
      case StmtKind::For:
        exec_for(s, scope, out);
        return Flow::Normal;
      case StmtKind::Set:
        assign(s, eval(*s.expr, scope), *scope);
        return Flow::Normal;
      case StmtKind::SetBlock: {
        std::string text;
        exec(s.body, scope, text);
        assign(s, Value::from_string(std::move(text)), *scope);
        return Flow::Normal;
      }
      case StmtKind::Macro:
        scope->vars[s.text] = make_macro(s, scope);
        return Flow::Normal;
      case StmtKind::Break:
        return Flow::Break;
      case StmtKind::Continue:
        return Flow::Continue;
    }
    return Flow::Normal;
  }

  // Binds `targets` to `value` in `scope` (unpacking a list for several names).
  static void bind(const std::vector<std::string>& targets, const Value& value, Scope& scope, int line) {
    if (targets.size() == 1) {
      scope.vars[targets[0]] = value;
      return;
    }
    if (!value.is_list() || value.list->size() != targets.size()) {
      fail("line {}: cannot unpack {} into {} names", line, repr(value), targets.size());
    }
    for (size_t i = 0; i < targets.size(); ++i) scope.vars[targets[i]] = (*value.list)[i];
  }

  static void assign(const Stmt& s, Value value, Scope& scope) {
    if (!s.attr_target) {
      bind(s.targets, value, scope, s.line);
      return;
    }
    const Value* ns = scope.lookup(s.targets[0]);
    if (!ns || ns->kind != Kind::Namespace) {
      fail("line {}: cannot assign attribute on non-namespace object '{}'", s.line, s.targets[0]);
    }
    ns->dict->set(s.targets[1], std::move(value));
  }

  void exec_for(const Stmt& s, const ScopePtr& scope, std::string& out) {
    std::vector<Value> items = iterate(eval(*s.expr, scope), s.line);
    if (s.cond) {  // the `if` filter sees the loop variables but no `loop`
      std::vector<Value> kept;
      for (Value& item : items) {
        ScopePtr probe = child_scope(scope);
        bind(s.targets, item, *probe, s.line);
        if (truthy(eval(*s.cond, probe))) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      exec(s.else_body, scope, out);
      return;
    }
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      ScopePtr iter_scope = child_scope(scope);
      bind(s.targets, items[i], *iter_scope, s.line);
      iter_scope->vars["loop"] = loop_object(items, i);
      Flow f = exec(s.body, iter_scope, out);
      if (f == Flow::Break) break;
    }
  }

  static Value loop_object(const std::vector<Value>& items, int64_t i) {
    const int64_t n = static_cast<int64_t>(items.size());
    Dict loop;
    loop.set("index0", Value::from_int(i));
    loop.set("index", Value::from_int(i + 1));
    loop.set("revindex0", Value::from_int(n - i - 1));
    loop.set("revindex", Value::from_int(n - i));
    loop.set("first", Value::from_bool(i == 0));
    loop.set("last", Value::from_bool(i == n - 1));
    loop.set("length", Value::from_int(n));
    loop.set("depth", Value::from_int(1));
    loop.set("depth0", Value::from_int(0));
    if (i > 0) loop.set("previtem", items[i - 1]);
    if (i + 1 < n) loop.set("nextitem", items[i + 1]);
    loop.set("cycle", Value::from_function([i](CallArgs& a) {
               if (a.positional.empty()) fail("line {}: loop.cycle() needs at least one argument", a.line);
               return a.positional[static_cast<size_t>(i) % a.positional.size()];
             }));
    return Value::from_dict(std::move(loop));
  }

  Value make_macro(const Stmt& s, const ScopePtr& defining) {
    return Value::from_function([this, &s, defining](CallArgs& a) {
      // Python stops runaway recursion with RecursionError; so do we, before the stack does.
      if (macro_depth_ >= kMaxMacroDepth) {
        fail("line {}: macro '{}' recursed deeper than {} calls", a.line, s.text, kMaxMacroDepth);
      }
      ++macro_depth_;
      struct Leave {
        int& depth;
        ~Leave() { --depth; }
      } leave{macro_depth_};
      if (a.positional.size() > s.params.size()) {
        fail("line {}: macro '{}' takes not more than {} argument(s)", a.line, s.text, s.params.size());
      }
      ScopePtr scope = child_scope(defining);
      for (size_t i = 0; i < s.params.size(); ++i) {
        const auto& [name, def] = s.params[i];
        std::optional<Value> v = a.get(i, name);
        scope->vars[name] = v     ? *v
                            : def ? eval(*def, scope)
                                  : Value::undefined(fmt::format("'{}' is undefined", name));
      }
      for (const auto& [k, v] : a.keyword) {
        bool known = false;
        for (const auto& p : s.params) known = known || p.first == k;
        if (!known) fail("line {}: macro '{}' takes no keyword argument '{}'", a.line, s.text, k);
      }
      std::string text;
      exec(s.body, scope, text);
      return Value::from_string(std::move(text));
    });
  }

  CallArgs eval_args(const Expr& e, size_t first_positional, const ScopePtr& scope, std::string callee) {
    CallArgs args;
    args.callee = std::move(callee);
    args.line = e.line;
    for (size_t i = first_positional; i < e.children.size(); ++i)
      args.positional.push_back(eval(*e.children[i], scope));
    for (const auto& [k, v] : e.kwargs) args.keyword.emplace_back(k, eval(*v, scope));
    return args;
  }

  static Value call_value(const Value& f, CallArgs& args, const std::string& what) {
    if (f.kind == Kind::Function) return (*f.function)(args);
    if (f.is_undefined()) fail_undefined(f, args.line);
    fail("line {}: '{}' ({}) is not callable", args.line, what, kind_name(f.kind));
  }

  Value eval_call(const Expr& e, const ScopePtr& scope) {
    const Expr& callee = *e.children[0];
    if (callee.kind == ExprKind::Getattr) {
      Value obj = eval(*callee.children[0], scope);
      CallArgs args = eval_args(e, 1, scope, callee.name);
      const std::string& name = callee.name;
      bool dict_method = name == "items" || name == "keys" || name == "values" || name == "get";
      if ((obj.is_dict() && !dict_method) || obj.kind == Kind::Namespace) {
        return call_value(get_attr(obj, name, e.line), args, name);
      }
      return call_method(obj, name, args);
    }
    Value f = eval(callee, scope);
    CallArgs args = eval_args(e, 1, scope, callee.kind == ExprKind::Name ? callee.name : "expression");
    return call_value(f, args, args.callee);
  }

  bool compare(const std::string& op, const Value& a, const Value& b, int line) {
    if (op == "==") return equals(a, b);
    if (op == "!=") return !equals(a, b);
    if (op == "in") return contains(b, a, line);
    if (op == "notin") return !contains(b, a, line);
    if (a.is_undefined()) fail_undefined(a, line);
    if (b.is_undefined()) fail_undefined(b, line);
    if (op == "<") return less_than(a, b, line);
    if (op == ">") return less_than(b, a, line);
    if (op == "<=") return !less_than(b, a, line);
    return !less_than(a, b, line);  // >=
  }

  Value eval(const Expr& e, const ScopePtr& scope) {
    switch (e.kind) {
      case ExprKind::Const:
        return e.value;
      case ExprKind::Name: {
        const Value* v = scope->lookup(e.name);
        return v ? *v : Value::undefined(fmt::format("'{}' is undefined", e.name));
      }
      case ExprKind::List:
      case ExprKind::Tuple: {
        List items;
        for (const ExprPtr& c : e.children) items.push_back(eval(*c, scope));
        return e.kind == ExprKind::Tuple ? Value::from_tuple(std::move(items))
                                         : Value::from_list(std::move(items));
      }
      case ExprKind::Dict: {
        Dict d;
        for (size_t i = 0; i + 1 < e.children.size(); i += 2) {
          Value key = eval(*e.children[i], scope);
          if (!key.is_string())
            unsupported(e.line, fmt::format("dict literals with {} keys", kind_name(key.kind)));
          d.set(key.text, eval(*e.children[i + 1], scope));
        }
        return Value::from_dict(std::move(d));
      }
      case ExprKind::Getattr:
        return get_attr(eval(*e.children[0], scope), e.name, e.line);
      case ExprKind::Getitem:
        return get_item(eval(*e.children[0], scope), eval(*e.children[1], scope), e.line);
      case ExprKind::Slice: {
        auto part = [&](size_t i) { return e.children[i] ? eval(*e.children[i], scope) : Value::none(); };
        return get_slice(eval(*e.children[0], scope), part(1), part(2), part(3), e.line);
      }
      case ExprKind::Call:
        return eval_call(e, scope);
      case ExprKind::Filter: {
        Value operand = eval(*e.children[0], scope);
        CallArgs args = eval_args(e, 1, scope, e.name);
        return apply_filter(e.name, operand, args);
      }
      case ExprKind::Test: {
        Value operand = eval(*e.children[0], scope);
        CallArgs args = eval_args(e, 1, scope, e.name);
        return Value::from_bool(apply_test(e.name, operand, args));
      }
      case ExprKind::Not:
        return Value::from_bool(!truthy(eval(*e.children[0], scope)));
      case ExprKind::Neg:
      case ExprKind::Pos: {
        Value v = eval(*e.children[0], scope);
        if (v.is_undefined()) fail_undefined(v, e.line);
        if (!v.is_number())
          fail("line {}: bad operand type for unary {}: '{}'", e.line, e.kind == ExprKind::Neg ? '-' : '+',
               kind_name(v.kind));
        if (e.kind == ExprKind::Pos) return v.kind == Kind::Bool ? Value::from_int(v.boolean) : v;
        if (v.kind == Kind::Float) return Value::from_float(-v.number);
        return Value::from_int(-(v.kind == Kind::Int ? v.integer : v.boolean));
      }
      case ExprKind::Binary:
        return binary_op(e.name, eval(*e.children[0], scope), eval(*e.children[1], scope), e.line);
      case ExprKind::Compare: {
        Value left = eval(*e.children[0], scope);
        for (size_t i = 0; i < e.ops.size(); ++i) {
          Value right = eval(*e.children[i + 1], scope);
          if (!compare(e.ops[i], left, right, e.line)) return Value::from_bool(false);
          left = std::move(right);
        }
        return Value::from_bool(true);
      }
      case ExprKind::And: {  // Python returns the deciding operand, not a bool
        Value a = eval(*e.children[0], scope);
        return truthy(a) ? eval(*e.children[1], scope) : a;
      }
      case ExprKind::Or: {
        Value a = eval(*e.children[0], scope);
        return truthy(a) ? a : eval(*e.children[1], scope);
      }
      case ExprKind::CondExpr:
        if (truthy(eval(*e.children[0], scope))) return eval(*e.children[1], scope);
        return e.children[2] ? eval(*e.children[2], scope)
                             : Value::undefined("the if-expression had no else");
      case ExprKind::Concat: {
        std::string s;
        for (const ExprPtr& c : e.children) s += to_str(eval(*c, scope));
        return Value::from_string(std::move(s));
      }
    }
    return Value::undefined();
  }
};

}  // namespace

std::string render_template(const Template& tmpl, const Dict& variables) {
  return Evaluator().render(tmpl, variables);
}

}  // namespace nibble::jinja
