/**
 * The OmegaConf 2.3 interpolation grammar, parsed (not resolved):
 *   "text ${a.b} more"                  string interpolation (values spliced with Python str())
 *   "${a.b}" / "${.x}" / "${..x}"        node interpolation (keeps the target's type);
 *                                        each leading dot beyond the first climbs one level
 *   "${name:arg, 'quoted', [1, 2], ${x}}"  resolver call; unquoted args are typed like YAML
 *                                        scalars, an arg that is a lone interpolation keeps
 *                                        its type, anything mixed becomes a string
 *   "\${x}"                              a literal "${x}"
 * Deviation (lenient): unquoted resolver arguments may contain any character
 * except `,` `}` and unbalanced brackets (OmegaConf rejects e.g. `(` and `<`).
 */
import { ConfigError } from "./errors.ts";
import { MAX_DEPTH } from "./util.ts";

export type Seg = string | Interp;
export type Interp = RefInterp | ResolverInterp;
export interface RefInterp {
  kind: "ref";
  /** leading dots: 0 absolute, 1 the containing node, 2 its parent, ... */
  up: number;
  /** the key after the dots; may hold nested interpolations */
  key: Seg[];
  text: string;
}
export interface ResolverInterp {
  kind: "resolver";
  name: string;
  args: Arg[];
  text: string;
}
export type Arg =
  | { kind: "prim"; segs: Seg[] }
  | { kind: "quoted"; segs: Seg[] }
  | { kind: "list"; items: Arg[] }
  | { kind: "dict"; entries: [string, Arg][] };

/** True when a string holds `${` and so needs parsing. */
export function hasInterpolation(s: string): boolean {
  return s.includes("${");
}

class Parser {
  i = 0;
  constructor(readonly s: string, readonly where: string) {}

  fail(msg: string): never {
    throw new ConfigError(
      `malformed interpolation in '${this.where}': ${msg}`,
      `in ${JSON.stringify(this.s.length > 80 ? this.s.slice(0, 77) + "..." : this.s)}`,
    );
  }

  /** Top-level string: text and interpolations to the end. */
  template(): Seg[] {
    const segs: Seg[] = [];
    let text = "";
    const s = this.s;
    while (this.i < s.length) {
      const c = s[this.i];
      if (c === "\\") {
        let n = 0;
        while (s[this.i + n] === "\\") n++;
        if (s.startsWith("${", this.i + n)) {
          text += "\\".repeat(n >> 1);
          this.i += n;
          if (n % 2 === 1) {
            text += "${";
            this.i += 2;
          }
          continue;
        }
        text += "\\".repeat(n);
        this.i += n;
        continue;
      }
      if (c === "$" && s[this.i + 1] === "{") {
        if (text) segs.push(text);
        text = "";
        segs.push(this.interp(0));
        continue;
      }
      text += c;
      this.i++;
    }
    if (text) segs.push(text);
    return segs;
  }

  /** At "${": one interpolation, up to and including its "}". */
  interp(depth: number): Interp {
    if (depth > MAX_DEPTH) this.fail("interpolations nested too deeply");
    const start = this.i;
    this.i += 2;
    const s = this.s;
    const m = /^\s*([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*)\s*:/.exec(s.slice(this.i, this.i + 200));
    if (m) {
      this.i += m[0].length;
      const args: Arg[] = [];
      this.ws();
      if (s[this.i] === "}") {
        this.i++;
        return { kind: "resolver", name: m[1], args, text: s.slice(start, this.i) };
      }
      for (;;) {
        args.push(this.arg(depth + 1, "}"));
        this.ws();
        const c = s[this.i];
        if (c === ",") {
          this.i++;
          continue;
        }
        if (c === "}") {
          this.i++;
          break;
        }
        if (c === undefined) this.fail("missing '}'");
        this.fail(`unexpected '${c}' in resolver arguments`);
      }
      return { kind: "resolver", name: m[1], args, text: s.slice(start, this.i) };
    }
    // node interpolation: dots, then a key that may itself hold interpolations
    this.ws();
    let up = 0;
    while (s[this.i] === ".") {
      up++;
      this.i++;
    }
    const key: Seg[] = [];
    let text = "";
    for (;;) {
      const c = s[this.i];
      if (c === undefined) this.fail("missing '}'");
      if (c === "}") {
        this.i++;
        break;
      }
      if (c === "$" && s[this.i + 1] === "{") {
        if (text) key.push(text);
        text = "";
        key.push(this.interp(depth + 1));
        continue;
      }
      if (c === "{" || c === "'" || c === '"' || c === "," || c === ":") {
        this.fail(`unexpected '${c}' in a key`);
      }
      text += c;
      this.i++;
    }
    text = text.trimEnd();
    if (text) key.push(text);
    if (up === 0 && key.length === 0) this.fail("empty interpolation '${}'");
    return { kind: "ref", up, key, text: s.slice(start, this.i) };
  }

  ws(): void {
    while (this.i < this.s.length && /\s/.test(this.s[this.i])) this.i++;
  }

  /** One resolver argument (or list element), ending before `,` or `close`. */
  arg(depth: number, close: string): Arg {
    if (depth > MAX_DEPTH) this.fail("arguments nested too deeply");
    this.ws();
    const s = this.s;
    const c = s[this.i];
    if (c === "'" || c === '"') {
      const segs = this.quoted(depth);
      return { kind: "quoted", segs };
    }
    if (c === "[") {
      this.i++;
      const items: Arg[] = [];
      this.ws();
      if (s[this.i] === "]") {
        this.i++;
        return { kind: "list", items };
      }
      for (;;) {
        items.push(this.arg(depth + 1, "]"));
        this.ws();
        const d = s[this.i];
        if (d === ",") {
          this.i++;
          continue;
        }
        if (d === "]") {
          this.i++;
          return { kind: "list", items };
        }
        this.fail(d === undefined ? "missing ']'" : `unexpected '${d}' in a list`);
      }
    }
    if (c === "{") {
      this.i++;
      const entries: [string, Arg][] = [];
      this.ws();
      if (s[this.i] === "}") {
        this.i++;
        return { kind: "dict", entries };
      }
      for (;;) {
        this.ws();
        let key = "";
        if (s[this.i] === "'" || s[this.i] === '"') {
          const segs = this.quoted(depth);
          if (segs.some((x) => typeof x !== "string")) this.fail("interpolation in a dict key");
          key = (segs as string[]).join("");
        } else {
          while (this.i < s.length && !/[:,{}[\]]/.test(s[this.i])) key += s[this.i++];
          key = key.trim();
        }
        this.ws();
        if (s[this.i] !== ":") this.fail("expected ':' in a dict");
        this.i++;
        entries.push([key, this.arg(depth + 1, "}")]);
        this.ws();
        const d = s[this.i];
        if (d === ",") {
          this.i++;
          continue;
        }
        if (d === "}") {
          this.i++;
          return { kind: "dict", entries };
        }
        this.fail(d === undefined ? "missing '}'" : `unexpected '${d}' in a dict`);
      }
    }
    // primitive: text and interpolations up to `,` / close at bracket depth 0
    const segs: Seg[] = [];
    let text = "";
    let paren = 0;
    for (;;) {
      const d = s[this.i];
      if (d === undefined) this.fail(`missing '${close}'`);
      if (paren === 0 && (d === "," || d === close || d === "}" || d === "]")) break;
      if (
        d === "\\" && (s[this.i + 1] === "," || s[this.i + 1] === "\\" || s[this.i + 1] === "}")
      ) {
        text += s[this.i + 1];
        this.i += 2;
        continue;
      }
      if (d === "$" && s[this.i + 1] === "{") {
        if (text) segs.push(text);
        text = "";
        segs.push(this.interp(depth + 1));
        continue;
      }
      if (d === "(") paren++;
      if (d === ")") paren = Math.max(0, paren - 1);
      if (d === "{" || d === "[" || d === "'" || d === '"') {
        this.fail(`unexpected '${d}' in an unquoted argument (quote it)`);
      }
      text += d;
      this.i++;
    }
    if (text) segs.push(text);
    // trim whitespace at both ends
    if (typeof segs[0] === "string") {
      segs[0] = (segs[0] as string).trimStart();
      if (segs[0] === "") segs.shift();
    }
    const last = segs.length - 1;
    if (last >= 0 && typeof segs[last] === "string") {
      segs[last] = (segs[last] as string).trimEnd();
      if (segs[last] === "") segs.pop();
    }
    return { kind: "prim", segs };
  }

  /** A quoted string (may hold interpolations); escapes \\ \' \" . */
  quoted(depth: number): Seg[] {
    const s = this.s;
    const q = s[this.i++];
    const segs: Seg[] = [];
    let text = "";
    for (;;) {
      const c = s[this.i];
      if (c === undefined) this.fail(`missing closing ${q}`);
      if (c === q) {
        this.i++;
        break;
      }
      if (c === "\\" && (s[this.i + 1] === q || s[this.i + 1] === "\\")) {
        text += s[this.i + 1];
        this.i += 2;
        continue;
      }
      if (c === "$" && s[this.i + 1] === "{") {
        if (text) segs.push(text);
        text = "";
        segs.push(this.interp(depth + 1));
        continue;
      }
      text += c;
      this.i++;
    }
    if (text) segs.push(text);
    return segs;
  }
}

const cache = new Map<string, Seg[]>();

/** Parses a string value into text and interpolations. `where` names the key for errors. */
export function parseTemplate(s: string, where: string): Seg[] {
  const hit = cache.get(s);
  if (hit) return hit;
  const segs = new Parser(s, where).template();
  if (cache.size > 5000) cache.clear();
  cache.set(s, segs);
  return segs;
}
