/**
 * A safe evaluator for the `${eval:...}` resolver: the subset of Python
 * expressions the configs use, evaluated with Python's semantics, never with
 * JS eval and without access to anything outside the expression.
 *   literals: ints (1_000, 0x1f), floats (1.5, .5, 1e-3), 'strings', "strings",
 *             True, False, None
 *   operators (Python precedence): x if c else y; or; and; not;
 *             < <= > >= == != in, not in (chained); + -; * / // %; unary + -; **
 *   calls: abs, min, max, round (half to even), int, float
 * `/` always gives a float, `//` floors, `%` takes the sign of the divisor,
 * `and`/`or` return an operand; a zero divisor is an error, as in Python.
 * This file holds the evaluator; the tokenizer and parser are in
 * safe_eval_parse.ts.
 */
import { Budget, pyStr, type Scalar } from "./util.ts";
import { fail, type Node, P, tokenize } from "./safe_eval_parse.ts";

type V = Scalar;

function truthy(v: V): boolean {
  return !(v === null || v === false || v === 0 || v === "");
}

function num(expr: string, v: V, op: string): number {
  if (typeof v === "number") return v;
  if (typeof v === "boolean") return v ? 1 : 0;
  fail(expr, `unsupported operand ${JSON.stringify(v)} for '${op}'`);
}

function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

class Ev {
  constructor(readonly expr: string, readonly budget: Budget) {}

  eval(n: Node): V {
    this.budget.charge();
    switch (n.k) {
      case "lit":
        return n.v;
      case "and": {
        const a = this.eval(n.a);
        return truthy(a) ? this.eval(n.b) : a;
      }
      case "or": {
        const a = this.eval(n.a);
        return truthy(a) ? a : this.eval(n.b);
      }
      case "if":
        return truthy(this.eval(n.c)) ? this.eval(n.a) : this.eval(n.b);
      case "un": {
        const a = this.eval(n.a);
        if (n.op === "not") return !truthy(a);
        const x = num(this.expr, a, n.op);
        return n.op === "-" ? -x : x;
      }
      case "cmp": {
        let left = this.eval(n.xs[0]);
        for (let i = 0; i < n.ops.length; i++) {
          const right = this.eval(n.xs[i + 1]);
          if (!this.compare(n.ops[i], left, right)) return false;
          left = right;
        }
        return true;
      }
      case "bin":
        return this.binary(n.op, this.eval(n.a), this.eval(n.b));
      case "call":
        return this.call(n.f, n.args.map((a) => this.eval(a)));
    }
  }

  compare(op: string, a: V, b: V): boolean {
    if (op === "in" || op === "not in") {
      if (typeof a !== "string" || typeof b !== "string") {
        fail(this.expr, "'in' is supported for strings only");
      }
      return b.includes(a) === (op === "in");
    }
    const isNum = (v: V) => typeof v === "number" || typeof v === "boolean";
    if (op === "==" || op === "!=") {
      let eq: boolean;
      if (isNum(a) && isNum(b)) eq = num(this.expr, a, op) === num(this.expr, b, op);
      else eq = a === b;
      return op === "==" ? eq : !eq;
    }
    let x: number | string, y: number | string;
    if (isNum(a) && isNum(b)) {
      x = num(this.expr, a, op);
      y = num(this.expr, b, op);
    } else if (typeof a === "string" && typeof b === "string") {
      x = a;
      y = b;
    } else {
      fail(
        this.expr,
        `'${op}' not supported between ${JSON.stringify(a)} and ${JSON.stringify(b)}`,
      );
    }
    switch (op) {
      case "<":
        return x < y;
      case "<=":
        return x <= y;
      case ">":
        return x > y;
      default:
        return x >= y;
    }
  }

  binary(op: string, a: V, b: V): V {
    if (op === "+" && typeof a === "string" && typeof b === "string") {
      return this.budget.checkString(a + b, "eval");
    }
    if (typeof a === "string" || typeof b === "string") {
      fail(this.expr, `unsupported operands ${JSON.stringify(a)} ${op} ${JSON.stringify(b)}`);
    }
    const x = num(this.expr, a, op);
    const y = num(this.expr, b, op);
    switch (op) {
      case "+":
        return x + y;
      case "-":
        return x - y;
      case "*":
        return x * y;
      case "/":
        if (y === 0) fail(this.expr, "division by zero");
        return x / y;
      case "//":
        if (y === 0) fail(this.expr, "integer division by zero");
        return Math.floor(x / y);
      case "%": {
        if (y === 0) fail(this.expr, "modulo by zero");
        const r = x % y;
        return r !== 0 && (r < 0) !== (y < 0) ? r + y : r;
      }
      default: { // "**"
        if (x === 0 && y < 0) fail(this.expr, "0 cannot be raised to a negative power");
        if (x < 0 && !Number.isInteger(y)) fail(this.expr, "negative number to a fractional power");
        return x ** y;
      }
    }
  }

  call(f: string, args: V[]): V {
    const need = (n: number) => {
      if (args.length !== n) fail(this.expr, `${f}() takes ${n} argument${n === 1 ? "" : "s"}`);
    };
    switch (f) {
      case "abs":
        need(1);
        return Math.abs(num(this.expr, args[0], f));
      case "min":
      case "max": {
        if (args.length < 1) fail(this.expr, `${f}() needs arguments`);
        const xs = args.map((a) => num(this.expr, a, f));
        return f === "min" ? Math.min(...xs) : Math.max(...xs);
      }
      case "round": {
        if (args.length !== 1 && args.length !== 2) {
          fail(this.expr, "round() takes 1 or 2 arguments");
        }
        const x = num(this.expr, args[0], f);
        if (args.length === 1 || args[1] === null) return roundHalfEven(x);
        const nd = num(this.expr, args[1], f);
        if (!Number.isInteger(nd) || Math.abs(nd) > 300) fail(this.expr, "round(): bad ndigits");
        const p = 10 ** nd;
        return roundHalfEven(x * p) / p;
      }
      case "int": {
        need(1);
        const a = args[0];
        if (typeof a === "string") {
          const t = a.trim().replace(/_/g, "");
          if (!/^[+-]?\d+$/.test(t)) {
            fail(this.expr, `invalid literal for int(): ${JSON.stringify(a)}`);
          }
          return Number(t);
        }
        const x = num(this.expr, a, f);
        if (!Number.isFinite(x)) fail(this.expr, "cannot convert infinity or NaN to int");
        return Math.trunc(x);
      }
      default: { // float
        need(1);
        const a = args[0];
        if (typeof a === "string") {
          const t = a.trim().toLowerCase();
          if (/^[+-]?(inf|infinity)$/.test(t)) return t.startsWith("-") ? -Infinity : Infinity;
          if (/^[+-]?nan$/.test(t)) return NaN;
          if (!/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/.test(t)) {
            fail(this.expr, `could not convert string to float: ${JSON.stringify(a)}`);
          }
          return Number(t);
        }
        return num(this.expr, a, f);
      }
    }
  }
}

/**
 * Evaluates one `${eval:...}` argument. A non-string argument (an argument
 * that was a lone interpolation) is returned as it is.
 */
export function safeEval(input: unknown, budget: Budget = new Budget()): Scalar {
  if (input === null || typeof input === "number" || typeof input === "boolean") return input;
  if (typeof input !== "string") {
    fail(pyStr(input as never), "eval takes an expression string");
  }
  const expr = input;
  if (expr.length > 100_000) fail(expr, "expression too long");
  budget.charge(1 + (expr.length >> 6));
  const toks = tokenize(expr);
  if (toks.length > 4000) fail(expr, "expression too long");
  const p = new P(toks, expr);
  if (toks.length === 1) fail(expr, "empty expression");
  const node = p.expr_();
  if (p.peek().t !== "end") p.fail("unexpected token");
  return new Ev(expr, budget).eval(node);
}
