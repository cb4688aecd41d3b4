/** Interpolations, resolvers and the safe evaluator. */
import { deepStrictEqual as eq } from "node:assert/strict";
import { pyStr, resolveTree, safeEval, strftime } from "../../config/mod.ts";
import type { ConfigMap } from "../../config/mod.ts";
import { NOW, throwsBased } from "./helpers.ts";

function resolve(tree: ConfigMap, env: Record<string, string> = {}): ConfigMap {
  return resolveTree(tree, { cwd: "/here", env, now: NOW, choices: { experiment: "x" } });
}

Deno.test("config/interp: absolute, relative and climbing references keep the target's type", () => {
  const r = resolve({
    a: { b: 5, list: [1, { deep: "d" }] },
    abs: "${a.b}",
    idx: "${a.list.1.deep}",
    idx2: "${a.list[0]}",
    whole: "${a}",
    m: {
      x: 2,
      sib: "${.x}",
      inner: { up: "${..x}", feature: { up2: "${...x}", root: "${....a.b}" } },
      deep: { deeper: { root: "${....a.b}" } },
    },
    str: "b=${a.b}, ok=${t}, none=${n}, f=${f}",
    t: true,
    n: null,
    f: 1e-6,
    esc: "\\${a.b}",
    esc2: "\\\\${a.b}",
    chain1: "${chain2}",
    chain2: "${a.list}",
    through: "${alias.b}",
    alias: "${a}",
  });
  eq(r.abs, 5);
  eq(r.idx, "d");
  eq(r.idx2, 1);
  eq(r.whole, { b: 5, list: [1, { deep: "d" }] });
  eq(r.m, {
    x: 2,
    sib: 2,
    inner: { up: 2, feature: { up2: 2, root: 5 } },
    deep: { deeper: { root: 5 } },
  });
  eq(r.str, "b=5, ok=True, none=None, f=1e-06");
  eq(r.esc, "${a.b}");
  eq(r.esc2, "\\5");
  eq(r.chain1, [1, { deep: "d" }]);
  eq(r.through, 5);
});

Deno.test("config/interp: resolvers", () => {
  const r = resolve({
    n: 3,
    s: { n_embd: 1024, inner: "${eval:2 * ${.n_embd}}" },
    devices: 8,
    gt: '${eval:"${devices} > 1"}',
    cond: '${eval:"8 if ${n} < 24 else (16 if ${n} < 40 else 32)"}',
    div: "${div_up:${g}, ${eval:${devices} * ${bs} * 1}}",
    g: 256,
    bs: 8,
    big: "${div_up:374337375694, 2048}",
    env: "${oc.env:HOME_DIR,/default}/x",
    env2: "${oc.env:SET}",
    envnull: "${oc.env:UNSET,null}",
    envnested: "${oc.env:UNSET,${n}}",
    sel: "${oc.select:missing.key,'fallback'}",
    sel2: "${oc.select:n}",
    sel3: "${oc.select:nope}",
    selrel: { k: 1, v: "${oc.select:.k,0}" },
    empty: "${oc.select:name,''}",
    cwd: "${hydra:runtime.cwd}",
    choice: "${hydra:runtime.choices.experiment}",
    date: "${now:%Y-%m-%d}/${now:%H-%M-%S}",
  }, { SET: "yes" });
  eq(r.s, { n_embd: 1024, inner: 2048 });
  eq(r.gt, true);
  eq(r.cond, 8);
  eq(r.div, 4);
  eq(r.big, 182781922);
  eq(r.env, "/default/x");
  eq(r.env2, "yes");
  eq(r.envnull, null);
  eq(r.envnested, "3");
  eq(r.sel, "fallback");
  eq(r.sel2, 3);
  eq(r.sel3, null);
  eq(r.selrel, { k: 1, v: 1 });
  eq(r.empty, "");
  eq(r.cwd, "/here");
  eq(r.choice, "x");
  eq(r.date, "2024-02-20/13-05-09");
});

Deno.test("config/interp: errors", () => {
  throwsBased(
    () => resolve({ a: "${b.c}", b: { d: 1 } }),
    /key 'b.c' not found \(did you mean 'b.d'\?\)/,
  );
  throwsBased(
    () => resolve({ a: "${b}", b: "${c}", c: "${a}" }),
    /interpolation cycle: a -> b -> c -> a/,
  );
  throwsBased(() => resolve({ a: { b: "${a}" } }), /interpolation cycle/);
  throwsBased(() => resolve({ a: "${.}" }), /cycle|refers to the root/);
  throwsBased(() => resolve({ a: "${...x}" }), /climbs above the root/);
  throwsBased(() => resolve({ a: "${b" }), /malformed interpolation in 'a': missing '}'/);
  throwsBased(() => resolve({ a: "${}" }), /empty interpolation/);
  throwsBased(() => resolve({ a: "${nope:1}" }), /unsupported resolver 'nope'.*eval, div_up/);
  throwsBased(
    () => resolve({ a: "${oc.env:NOT_SET_ANYWHERE}" }),
    /environment variable 'NOT_SET_ANYWHERE' is not set/,
  );
  throwsBased(() => resolve({ a: "${eval:1 +}" }), /bad eval expression "1 \+"/);
  throwsBased(
    () => resolve({ a: "${eval:__import__('os')}" }),
    /bad eval expression|unknown name|malformed interpolation/,
  );
  throwsBased(() => resolve({ a: "${eval:1, 2}" }), /eval takes one expression/);
  throwsBased(() => resolve({ a: "${div_up:1, 0}" }), /division by zero/);
  throwsBased(() => resolve({ a: "${div_up:x, 1}" }), /div_up needs two numbers/);
  throwsBased(() => resolve({ a: "${hydra:runtime.output_dir}" }), /unsupported hydra key/);
  throwsBased(() => resolve({ a: "???" }), /config key 'a' is mandatory/);
});

Deno.test("config/interp: work is bounded (doubling strings, long chains)", () => {
  const t: ConfigMap = { a0: "xxxxxxxxxxxxxxxx" };
  for (let i = 1; i < 40; i++) t[`a${i}`] = `\${a${i - 1}}\${a${i - 1}}`;
  throwsBased(() => resolve(t), /too long|too complex/);
  // resolved first, the last key of the chain needs every other one on the stack
  const c: ConfigMap = {};
  for (let i = 1999; i > 0; i--) c[`k${i}`] = `\${k${i - 1}}`;
  c.k0 = 1;
  throwsBased(() => resolve(c), /too deep/);
});

Deno.test("config/eval: Python semantics of the supported subset", () => {
  const e = (s: string) => safeEval(s);
  eq(e("2 * 1024"), 2048);
  eq(e("0.01 * 20000"), 200);
  eq(e("0.1 * 0.0008"), 0.1 * 0.0008);
  eq(e("7 / 2"), 3.5);
  eq(e("7 // 2"), 3);
  eq(e("-7 // 2"), -4);
  eq(e("-7 % 3"), 2);
  eq(e("7 % -3"), -2);
  eq(e("2 ** 10"), 1024);
  eq(e("-2 ** 2"), -4);
  eq(e("2 ** -1"), 0.5);
  eq(e("2 ** 3 ** 2"), 512);
  eq(e("(1 + 2) * 3"), 9);
  eq(e("1 < 2 < 3"), true);
  eq(e("3 > 2 > 2"), false);
  eq(e("1 == 1.0"), true);
  eq(e("True + True"), 2);
  eq(e("'a' + 'b'"), "ab");
  eq(e("'fla' in 'fla_parallel'"), true);
  eq(e("'fla' not in 'quadratic'"), true);
  eq(e("not 0"), true);
  eq(e("0 or 'x'"), "x");
  eq(e("1 and 0"), 0);
  eq(e("None"), null);
  eq(e("1 if True else 1/0"), 1);
  eq(e("8 if 80 < 24 else (16 if 80 < 40 else 32)"), 32);
  eq(e("max(1, 5, 3) + min(2, 4) + abs(-1)"), 8);
  eq(e("round(2.5) + round(3.5)"), 6);
  eq(e("int('12') + int(3.9) + float('1.5')"), 16.5);
  eq(e("0x10 + 1_000 + 1e3 + .5"), 2016.5);
  eq(safeEval(42), 42);
  for (
    const bad of [
      "1/0",
      "1//0",
      "1%0",
      "0**-1",
      "'a' * 3",
      "'a' < 1",
      "x",
      "len('a')",
      "1 +",
      "(1",
      "1 is 1",
      "lambda: 1",
      "",
      "01",
      "[1]",
    ]
  ) {
    throwsBased(() => safeEval(bad), /bad eval expression/);
  }
  throwsBased(() => safeEval("(".repeat(500) + "1" + ")".repeat(500)), /nested too deeply/);
});

Deno.test("config/interp: pyStr and strftime", () => {
  eq(pyStr(1e-6), "1e-06");
  eq(pyStr(0.0008), "0.0008");
  eq(pyStr(1.25e-7), "1.25e-07");
  eq(pyStr(1.5e16), "15000000000000000"); // an integral float prints as an int (JS has one number type)
  eq(pyStr(123456.789), "123456.789");
  eq(pyStr(-0.00001), "-1e-05");
  eq(pyStr([1, "a", null]), "[1, 'a', None]");
  eq(pyStr({ a: true }), "{'a': True}");
  eq(
    strftime(NOW, "%Y-%m-%d_%H-%M-%S %j %b %A %% %y %q"),
    "2024-02-20_13-05-09 051 Feb Tuesday % 24 %q",
  );
});
