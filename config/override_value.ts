/**
 * The value side of a command-line override (`key=<value>`): the parser for
 * scalars, quoted strings, [lists], {dicts}, `${...}` interpolations and the
 * str()/int()/float()/bool() casts (see overrides.ts for the grammar).
 * Moved out of overrides.ts unchanged.
 */
import { ConfigError } from "./errors.ts";
import { parsePrimitive } from "./resolve.ts";
import { brief, clip, type ConfigMap, type ConfigValue, isMap, MAX_DEPTH } from "./util.ts";

export function fail(input: string, msg: string): never {
  throw new ConfigError(`malformed override '${clip(input)}': ${msg}`);
}

export class ValueParser {
  i = 0;
  constructor(readonly s: string, readonly input: string) {}

  fail(msg: string): never {
    fail(this.input, msg);
  }

  ws(): void {
    while (this.i < this.s.length && /\s/.test(this.s[this.i])) this.i++;
  }

  /** Skips a `${...}` (balanced, quotes inside respected) and returns its text. */
  interp(): string {
    const start = this.i;
    let depth = 0;
    let q: string | null = null;
    while (this.i < this.s.length) {
      const c = this.s[this.i];
      if (q) {
        if (c === "\\") this.i++;
        else if (c === q) q = null;
      } else if (c === "'" || c === '"') {
        if (depth > 0) q = c;
      } else if (c === "{") depth++;
      else if (c === "}") {
        depth--;
        if (depth === 0) {
          this.i++;
          return this.s.slice(start, this.i);
        }
      }
      this.i++;
    }
    this.fail("unterminated '${'");
  }

  quoted(): string {
    const q = this.s[this.i++];
    let out = "";
    for (;;) {
      const c = this.s[this.i];
      if (c === undefined) this.fail(`missing closing ${q}`);
      if (c === "\\" && (this.s[this.i + 1] === q || this.s[this.i + 1] === "\\")) {
        out += this.s[this.i + 1];
        this.i += 2;
        continue;
      }
      if (c === q) {
        this.i++;
        return out;
      }
      out += c;
      this.i++;
    }
  }

  /** One element: stops before `,` `]` `}` (and `:` in a dict key) at depth 0. */
  element(depth: number, inContainer: boolean): { v: ConfigValue; raw?: string } {
    if (depth > MAX_DEPTH) this.fail("nested too deeply");
    this.ws();
    const c = this.s[this.i];
    if (c === "[") return { v: this.list(depth) };
    if (c === "{") return { v: this.dict(depth) };
    if (c === "'" || c === '"') {
      const v = this.quoted();
      this.ws();
      return { v };
    }
    const cast = /^(str|int|float|bool)\(/.exec(this.s.slice(this.i, this.i + 8));
    if (cast) {
      this.i += cast[0].length;
      const inner = this.element(depth + 1, true);
      this.ws();
      if (this.s[this.i] !== ")") this.fail(`missing ')' after ${cast[1]}(`);
      this.i++;
      this.ws();
      return { v: castValue(cast[1], inner.v, this.input) };
    }
    if (
      /^(choice|range|interval|glob|shuffle|sort|tag|extend_list)\(/.test(
        this.s.slice(this.i, this.i + 12),
      )
    ) {
      this.fail("sweeps and functions need multirun, which is not supported");
    }
    let text = "";
    for (;;) {
      const d = this.s[this.i];
      if (d === undefined) break;
      if (d === "$" && this.s[this.i + 1] === "{") {
        text += this.interp();
        continue;
      }
      if (d === "," || (inContainer && (d === "]" || d === "}" || d === ")"))) break;
      if (d === "[" || d === "]" || d === "{" || d === "}") {
        this.fail(`unexpected '${d}' (quote the value if it is a string)`);
      }
      if (d === "'" || d === '"') {
        this.fail(`unexpected ${d} inside a value (quote the whole value)`);
      }
      if (
        d === "\\" && this.s[this.i + 1] !== undefined &&
        /[,[\]{}()'" \\=:]/.test(this.s[this.i + 1])
      ) {
        text += this.s[this.i + 1];
        this.i += 2;
        continue;
      }
      text += d;
      this.i++;
    }
    const raw = text.trim();
    if (raw.includes("${")) return { v: raw, raw };
    return { v: parsePrimitive(raw), raw };
  }

  list(depth: number): ConfigValue[] {
    this.i++; // [
    const out: ConfigValue[] = [];
    this.ws();
    if (this.s[this.i] === "]") {
      this.i++;
      this.ws();
      return out;
    }
    for (;;) {
      out.push(this.element(depth + 1, true).v);
      this.ws();
      const c = this.s[this.i];
      if (c === ",") {
        this.i++;
        continue;
      }
      if (c === "]") {
        this.i++;
        this.ws();
        return out;
      }
      this.fail(c === undefined ? "missing ']'" : `unexpected '${c}' in a list`);
    }
  }

  dict(depth: number): ConfigMap {
    this.i++; // {
    const out: ConfigMap = {};
    this.ws();
    if (this.s[this.i] === "}") {
      this.i++;
      this.ws();
      return out;
    }
    for (;;) {
      this.ws();
      let key: string;
      if (this.s[this.i] === "'" || this.s[this.i] === '"') key = this.quoted();
      else {
        const m = /^[^:,{}[\]'"]*/.exec(this.s.slice(this.i))!;
        key = m[0].trim();
        this.i += m[0].length;
      }
      if (key === "") this.fail("empty key in a dict");
      this.ws();
      if (this.s[this.i] !== ":") this.fail(`expected ':' after '${key}' in a dict`);
      this.i++;
      out[key] = this.element(depth + 1, true).v;
      this.ws();
      const c = this.s[this.i];
      if (c === ",") {
        this.i++;
        continue;
      }
      if (c === "}") {
        this.i++;
        this.ws();
        return out;
      }
      this.fail(c === undefined ? "missing '}'" : `unexpected '${c}' in a dict`);
    }
  }
}

function castValue(fn: string, v: ConfigValue, input: string): ConfigValue {
  if (Array.isArray(v)) return v.map((x) => castValue(fn, x, input));
  if (isMap(v)) {
    const out: ConfigMap = {};
    for (const [k, x] of Object.entries(v)) out[k] = castValue(fn, x, input);
    return out;
  }
  switch (fn) {
    case "str":
      return v === null ? "null" : typeof v === "string" ? v : String(v);
    case "bool":
      if (typeof v === "boolean") return v;
      if (typeof v === "number") return v !== 0;
      if (typeof v === "string" && /^(true|false)$/i.test(v)) return v.toLowerCase() === "true";
      return fail(input, `cannot cast ${brief(v)} to bool`);
    case "int": {
      const n = typeof v === "string" ? parsePrimitive(v) : v;
      if (typeof n === "boolean") return n ? 1 : 0;
      if (typeof n !== "number" || !Number.isFinite(n)) {
        fail(input, `cannot cast ${brief(v)} to int`);
      }
      return Math.trunc(n);
    }
    default: {
      const n = typeof v === "string" ? parsePrimitive(v) : v;
      if (typeof n === "boolean") return n ? 1 : 0;
      if (typeof n !== "number") fail(input, `cannot cast ${brief(v)} to float`);
      return n;
    }
  }
}
