/**
 * The front half of the `${eval:...}` evaluator (see safe_eval.ts): the
 * tokenizer and the recursive-descent parser that turns an expression into
 * a syntax tree (Python precedence). Moved out of safe_eval.ts unchanged.
 */
import { ConfigError } from "./errors.ts";
import { MAX_DEPTH, type Scalar } from "./util.ts";

export type Tok =
  | { t: "num"; v: number }
  | { t: "str"; v: string }
  | { t: "name"; v: string }
  | { t: "op"; v: string }
  | { t: "end" };

export type Node =
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

export function fail(expr: string, msg: string): never {
  const e = expr.length > 80 ? expr.slice(0, 77) + "..." : expr;
  throw new ConfigError(`bad eval expression ${JSON.stringify(e)}: ${msg}`);
}

export function tokenize(expr: string): Tok[] {
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

export class P {
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
