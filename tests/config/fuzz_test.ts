/**
 * Seeded fuzzing of the override parser, the interpolation resolver and the
 * eval evaluator: thousands of random and mutated inputs. Every call must
 * either succeed or throw a one-line BasedError that is not an internal error,
 * and no call may run long (the resolver's work is bounded).
 */
import { ok } from "node:assert/strict";
import {
  applyOverrides,
  type Config,
  type ConfigMap,
  parseOverride,
  resolveTree,
  safeEval,
} from "../../config/mod.ts";
import { BasedError } from "../../errors.ts";
import { compose, composeFrom, NOW } from "./helpers.ts";

/** Mulberry32. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Fuzz {
  calls = 0;
  failures = 0;
  slowest = 0;
  constructor(readonly r: () => number) {}
  int(n: number): number {
    return Math.floor(this.r() * n);
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)];
  }
  /** Runs fn; only a one-line, non-internal BasedError may escape. */
  check(what: string, input: unknown, fn: () => unknown): void {
    this.calls++;
    const t0 = performance.now();
    try {
      fn();
    } catch (e) {
      this.failures++;
      const show = JSON.stringify(input)?.slice(0, 300);
      if (!(e instanceof BasedError)) {
        throw new Error(`${what}: ${show} threw ${(e as Error)?.constructor?.name}: ${e}`);
      }
      if (
        /internal error|nested too deeply or recursive/.test(e.message) || /[\n\r]/.test(e.message)
      ) {
        throw new Error(`${what}: ${show} gave a bad message: ${JSON.stringify(e.message)}`);
      }
    }
    const dt = performance.now() - t0;
    this.slowest = Math.max(this.slowest, dt);
    if (dt > 2000) {
      throw new Error(`${what}: ${JSON.stringify(input)?.slice(0, 300)} took ${dt.toFixed(0)} ms`);
    }
  }
}

const PIECES = [
  "trainer",
  ".",
  "max_steps",
  "devices",
  "datamodule",
  "batch_size",
  "model.config.alt_mixer",
  "train.optimizer.betas",
  ".0",
  ".7",
  "[0]",
  "experiment",
  "example/based-tiny",
  "=",
  "+",
  "++",
  "~",
  "@",
  "/",
  "[",
  "]",
  "{",
  "}",
  "(",
  ")",
  ",",
  ":",
  "'",
  '"',
  "\\",
  " ",
  "\n",
  "\t",
  "${",
  "$",
  "eval:",
  "oc.env:",
  "oc.select:",
  "div_up:",
  "now:",
  "hydra:",
  "..",
  "1",
  "-2",
  "0.5",
  "1e-3",
  "null",
  "true",
  "False",
  "abc",
  "str(",
  "int(",
  "choice(",
  "*",
  "**",
  "//",
  "%",
  "<",
  "if",
  " else ",
  "not ",
  "x",
  "é",
  "\u0000",
  "\u2028",
];

const VALID = [
  "trainer.max_steps=100",
  "datamodule.batch_size=4",
  "+trainer.extra=[1, {a: 'b'}]",
  "++model.config.n_embd=64",
  "~callbacks.gpu_affinity",
  "name='my run, 2'",
  "train.optimizer.betas=[0.8,0.9]",
  "model.config.alt_mixer={feature_dim: 8}",
  "trainer.val_check_interval=${eval:10 * ${trainer.max_steps}}",
  "seed=null",
  "+x=${oc.env:HOME,/tmp}/a",
  "+y=${oc.select:name,'none'}",
  "+z='${div_up:7, 2}'",
  "datamodule=kjv",
  "trainer.precision=str(16)",
];

function randomString(f: Fuzz, n: number): string {
  let s = "";
  for (let i = 0; i < n; i++) s += f.pick(PIECES);
  return s;
}

function mutate(f: Fuzz, s: string): string {
  const k = 1 + f.int(3);
  for (let i = 0; i < k; i++) {
    const p = f.int(s.length + 1);
    switch (f.int(5)) {
      case 0:
        s = s.slice(0, p) + s.slice(p + 1);
        break;
      case 1:
        s = s.slice(0, p) + f.pick(PIECES) + s.slice(p);
        break;
      case 2:
        s = s.slice(0, p) + s.slice(f.int(s.length + 1));
        break;
      case 3:
        s = s + s.slice(p);
        break;
      default:
        s = s.slice(0, p) + String.fromCharCode(32 + f.int(95)) + s.slice(p + 1);
    }
  }
  return s;
}

Deno.test("config/fuzz: override parser and applyOverrides (random and mutated inputs)", () => {
  const f = new Fuzz(rng(1234));
  const base: Config = composeFrom({
    "config.yaml": `trainer: {max_steps: 10, devices: 1, extra: null}
datamodule: {batch_size: 8, name: x}
model: {config: {alt_mixer: {feature_dim: 16, l: "\${..n_embd}"}, n_embd: 32}}
name: run
seed: 1
callbacks: {gpu_affinity: {a: 1}}
train: {optimizer: {betas: [0.9, 0.95]}}
`,
  });
  const inputs: string[] = [];
  for (let i = 0; i < 2500; i++) inputs.push(randomString(f, 1 + f.int(12)));
  for (let i = 0; i < 2500; i++) inputs.push(mutate(f, f.pick(VALID)));
  for (const s of inputs) {
    f.check("parseOverride", s, () => parseOverride(s));
    f.check(
      "applyOverrides",
      s,
      () => applyOverrides(base, [s], { env: { HOME: "/h" }, now: NOW, cwd: "/" }),
    );
  }
  ok(f.failures > 0 && f.failures < f.calls, `${f.failures} of ${f.calls} failed`);
});

const KEYS = [
  "trainer.max_steps",
  "trainer.devices",
  "datamodule.batch_size",
  "model.config.alt_mixer.feature_dim",
  "model.config.alt_mixer_layers",
  "model.config.alt_mixer_layers.0",
  "train.optimizer.betas.1",
  "callbacks.model_checkpoint",
  "hydra.run.dir",
  "name",
  "experiment",
  "datamodule",
  "model/gpt2model",
  "model",
  "callbacks",
  "logger",
  "seed",
  "train.scheduler",
  "~callbacks.early_stopping",
  "~experiment",
  "~model",
  "+callbacks",
  "+logger",
  "++trainer",
];
const VALS = [
  "1",
  "x",
  "null",
  "[1,2]",
  "{a: 1}",
  "{max_steps: 3}",
  "example/based-tiny",
  "kjv",
  "wandb",
  "gpt2-small",
  "[default]",
  "${trainer.max_steps}",
  "${oc.select:name}",
  "${eval:'1/0'}",
  "${.x}",
  "${....a}",
  "1e9",
  "'s'",
  "true",
  "",
];

Deno.test("config/fuzz: full composition with random and mutated command lines", () => {
  const f = new Fuzz(rng(99));
  const starts = [
    "experiment=example/based-tiny",
    "experiment=example/based-360m",
    "experiment=reference/attn-360m",
    "datamodule=kjv",
  ];
  for (let i = 0; i < 400; i++) {
    const args = [f.pick(starts)];
    const n = 1 + f.int(3);
    for (let j = 0; j < n; j++) {
      const k = f.pick(KEYS);
      args.push(k.startsWith("~") && f.int(2) ? k : `${k}=${f.pick(VALS)}`);
    }
    if (f.int(4) === 0) args.push(mutate(f, f.pick(VALID)));
    f.check("composeConfig", args, () => compose(args));
  }
});

function randomTemplate(f: Fuzz, depth: number): string {
  const n = 1 + f.int(4);
  let s = "";
  for (let i = 0; i < n; i++) {
    const c = f.int(10);
    if (c < 3 && depth < 4) {
      const head = f.pick([
        "",
        ".",
        "..",
        "...",
        "eval:",
        "oc.select:",
        "oc.env:",
        "div_up:",
        "now:",
        "hydra:",
        "nope:",
      ]);
      const key = f.pick([
        "a",
        "b.c",
        "l.0",
        "l.9",
        "d",
        "e",
        "s",
        "x",
        "b",
        "runtime.cwd",
        "%Y",
        "1 + 2",
        "'q'",
      ]);
      s += "${" + head + (f.int(3) === 0 ? randomTemplate(f, depth + 1) : key) +
        (f.int(8) ? "}" : "");
    } else s += f.pick(PIECES);
  }
  return s;
}

Deno.test("config/fuzz: interpolation resolver on random trees", () => {
  const f = new Fuzz(rng(4321));
  for (let i = 0; i < 1500; i++) {
    const tree: ConfigMap = {
      a: randomTemplate(f, 0),
      b: { c: f.int(2) ? 3 : randomTemplate(f, 0), d: randomTemplate(f, 0) },
      l: [1, randomTemplate(f, 0)],
      d: f.int(2) ? "${b}" : randomTemplate(f, 0),
      e: f.pick([null, true, 2.5, "txt", "${a}${a}"]),
      s: randomTemplate(f, 0),
    };
    f.check(
      "resolveTree",
      tree,
      () => resolveTree(tree, { cwd: "/c", env: { HOME: "/h" }, now: NOW }),
    );
  }
});

Deno.test("config/fuzz: eval expressions", () => {
  const f = new Fuzz(rng(777));
  const toks = [
    "1",
    "2.5",
    "0",
    "-",
    "+",
    "*",
    "/",
    "//",
    "%",
    "**",
    "(",
    ")",
    " and ",
    " or ",
    "not ",
    " if ",
    " else ",
    "<",
    "==",
    "!=",
    " in ",
    "'s'",
    '"t"',
    "True",
    "None",
    "max(",
    "round(",
    "int(",
    ",",
    "x",
    "1e308",
    "__import__",
    " ",
    ".",
  ];
  for (let i = 0; i < 4000; i++) {
    let s = "";
    const n = 1 + f.int(12);
    for (let j = 0; j < n; j++) s += f.pick(toks);
    f.check("safeEval", s, () => safeEval(s));
  }
  // pathological sizes stay bounded
  for (
    const s of [
      "(".repeat(10000),
      "-".repeat(10000) + "1",
      "1+".repeat(20000) + "1",
      "'" + "a".repeat(200000) + "'",
    ]
  ) {
    f.check("safeEval", s.slice(0, 50), () => safeEval(s));
  }
});
