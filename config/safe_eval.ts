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
 */
import { ConfigError } from "./errors.ts";
import { Budget, MAX_DEPTH, pyStr, type Scalar } from "./util.ts";

type Tok =
  | { t: "num"; v: number }
  | { t: "str"; v: string }
  | { t: "name"; v: string }
  | { t: "op"; v: string }
  | { t: "end" };

type Node =
  | { k: "lit"; v: Scalar }
  | { k: "un"; op: string; a: Node }
  | { k: "bin"; op: string; a: Node; b: Node }
  | { k: "cmp"; ops: string[]; xs: Node[] }
  | { k: "and" | "or"; a: Node; b: Node }
  | { k: "if"; c: Node; a: Node; b: Node }
  | { k: "call"; f: string; args: Node[] };

const OPS = ["**", "//", "==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "(", ")", ","];
const KEYWORDS = new Set(["and", "or", "not", "if", "else", "in", "is", "lambda"]);
const FUNCS = new Set(["abs", "min", "max", "round", "int", "float"]);

function fail(expr: string, msg: string): never {
  const e = expr.length > 80 ? expr.slice(0, 77) + "..." : expr;
  throw new ConfigError(`bad eval expression ${JSON.stringify(e)}: ${msg}`);
}

function tokenize(expr: string): Tok[] {
  const toks: Tok[] = [];
  let i = 0;
  const s = expr;
  while (i < s.length) {
    const c = s[i];
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    const rest = s.slice(i, i + 400);
    let m = /^0[xX](?:_?[0-9a-fA-F])+|^0[oO](?:_?[0-7])+|^0[bB](?:_?[01])+/.exec(rest);
    if (m) {
      const digits = m[0].slice(2).replace(/_/g, "");
      const base = /[xX]/.test(m[0][1]) ? 16 : /[oO]/.test(m[0][1]) ? 8 : 2;
      toks.push({ t: "num", v: parseInt(digits, base) });
      i += m[0].length;
      continue;
    }
    m = /^(?:\d(?:_?\d)*\.(?:\d(?:_?\d)*)?|\.\d(?:_?\d)*|\d(?:_?\d)*)(?:[eE][+-]?\d(?:_?\d)*)?/
      .exec(
        rest,
      );
    if (m) {
      const txt = m[0].replace(/_/g, "");
      if (/^0\d/.test(txt) && /^\d+$/.test(txt) && /[1-9]/.test(txt)) {
        fail(expr, `leading zeros in '${m[0]}' are not allowed`);
      }
      toks.push({ t: "num", v: Number(txt) });
      i += m[0].length;
      if (/^[A-Za-z_]/.test(s[i] ?? "")) {
        fail(expr, `invalid number near '${s.slice(i - m[0].length, i + 1)}'`);
      }
      continue;
    }
    if (c === "'" || c === '"') {
      let j = i + 1;
      let v = "";
      for (;;) {
        const d = s[j];
        if (d === undefined) fail(expr, "unterminated string");
        if (d === c) break;
        if (d === "\\") {
          const e = s[j + 1];
          const map: Record<string, string> = {
            n: "\n",
            t: "\t",
            r: "\r",
            "\\": "\\",
            "'": "'",
            '"': '"',
            "0": "\0",
          };
          if (e !== undefined && e in map) {
            v += map[e];
            j += 2;
            continue;
          }
          v += "\\";
          j++;
          continue;
        }
        v += d;
        j++;
      }
      toks.push({ t: "str", v });
      i = j + 1;
      continue;
    }
    m = /^[A-Za-z_][A-Za-z0-9_]*/.exec(rest);
    if (m) {
      toks.push({ t: "name", v: m[0] });
      i += m[0].length;
      continue;
    }
    const op = OPS.find((o) => s.startsWith(o, i));
    if (op) {
      toks.push({ t: "op", v: op });
      i += op.length;
      continue;
    }
    fail(expr, `unexpected character '${c}'`);
  }
  toks.push({ t: "end" });
  return toks;
}

class P {
  i = 0;
  depth = 0;
  constructor(readonly toks: Tok[], readonly expr: string) {}
  peek(): Tok {
    return this.toks[this.i];
  }
  isOp(v: string): boolean {
    const t = this.peek();
    return t.t === "op" && t.v === v;
  }
  isName(v: string): boolean {
    const t = this.peek();
    return t.t === "name" && t.v === v;
  }
  expectOp(v: string): void {
    if (!this.isOp(v)) this.fail(`expected '${v}'`);
    this.i++;
  }
  fail(msg: string): never {
    const t = this.peek();
    const at = t.t === "end" ? "at the end" : `at '${"v" in t ? t.v : ""}'`;
    fail(this.expr, `${msg} ${at}`);
  }
  enter(): void {
    if (++this.depth > MAX_DEPTH) fail(this.expr, "nested too deeply");
  }

  expr_(): Node {
    this.enter();
    const a = this.or();
    let r = a;
    if (this.isName("if")) {
      this.i++;
      const c = this.or();
      if (!this.isName("else")) this.fail("expected 'else'");
      this.i++;
      const b = this.expr_();
      r = { k: "if", c, a, b };
    }
    this.depth--;
    return r;
  }
  or(): Node {
    let a = this.and();
    while (this.isName("or")) {
      this.i++;
      a = { k: "or", a, b: this.and() };
    }
    return a;
  }
  and(): Node {
    let a = this.not();
    while (this.isName("and")) {
      this.i++;
      a = { k: "and", a, b: this.not() };
    }
    return a;
  }
  not(): Node {
    if (this.isName("not")) {
      this.i++;
      this.enter();
      const r: Node = { k: "un", op: "not", a: this.not() };
      this.depth--;
      return r;
    }
    return this.cmp();
  }
  cmpOp(): string | undefined {
    const t = this.peek();
    if (t.t === "op" && ["<", ">", "<=", ">=", "==", "!="].includes(t.v)) {
      this.i++;
      return t.v;
    }
    if (this.isName("in")) {
      this.i++;
      return "in";
    }
    if (
      this.isName("not") && this.toks[this.i + 1]?.t === "name" &&
      (this.toks[this.i + 1] as { v: string }).v === "in"
    ) {
      this.i += 2;
      return "not in";
    }
    if (this.isName("is")) this.fail("'is' is not supported");
    return undefined;
  }
  cmp(): Node {
    const first = this.arith();
    const ops: string[] = [];
    const xs: Node[] = [first];
    for (;;) {
      const op = this.cmpOp();
      if (!op) break;
      ops.push(op);
      xs.push(this.arith());
    }
    return ops.length ? { k: "cmp", ops, xs } : first;
  }
  arith(): Node {
    let a = this.term();
    while (this.isOp("+") || this.isOp("-")) {
      const op = (this.toks[this.i++] as { v: string }).v;
      a = { k: "bin", op, a, b: this.term() };
    }
    return a;
  }
  term(): Node {
    let a = this.unary();
    while (this.isOp("*") || this.isOp("/") || this.isOp("//") || this.isOp("%")) {
      const op = (this.toks[this.i++] as { v: string }).v;
      a = { k: "bin", op, a, b: this.unary() };
    }
    return a;
  }
  unary(): Node {
    if (this.isOp("-") || this.isOp("+")) {
      const op = (this.toks[this.i++] as { v: string }).v;
      this.enter();
      const r: Node = { k: "un", op, a: this.unary() };
      this.depth--;
      return r;
    }
    return this.power();
  }
  power(): Node {
    const a = this.atom();
    if (this.isOp("**")) {
      this.i++;
      this.enter();
      const r: Node = { k: "bin", op: "**", a, b: this.unary() };
      this.depth--;
      return r;
    }
    return a;
  }
  atom(): Node {
    const t = this.peek();
    if (t.t === "num") {
      this.i++;
      return { k: "lit", v: t.v };
    }
    if (t.t === "str") {
      this.i++;
      let v = t.v;
      // adjacent string literals concatenate, as in Python
      while (this.peek().t === "str") v += (this.toks[this.i++] as { v: string }).v;
      return { k: "lit", v };
    }
    if (t.t === "op" && t.v === "(") {
      this.i++;
      const e = this.expr_();
      this.expectOp(")");
      return e;
    }
    if (t.t === "name") {
      this.i++;
      if (t.v === "True") return { k: "lit", v: true };
      if (t.v === "False") return { k: "lit", v: false };
      if (t.v === "None") return { k: "lit", v: null };
      if (FUNCS.has(t.v) && this.isOp("(")) {
        this.i++;
        const args: Node[] = [];
        if (!this.isOp(")")) {
          for (;;) {
            args.push(this.expr_());
            if (this.isOp(",")) {
              this.i++;
              if (this.isOp(")")) break;
              continue;
            }
            break;
          }
        }
        this.expectOp(")");
        return { k: "call", f: t.v, args };
      }
      this.i--;
      if (KEYWORDS.has(t.v)) this.fail("unexpected keyword");
      fail(this.expr, `unknown name '${t.v}' (only numbers, strings, True, False, None)`);
    }
    this.fail("unexpected token");
  }
}

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
