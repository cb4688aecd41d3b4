/**
 * Usage errors of every command: a bad option value (not a number, negative,
 * zero where meaningless, out of range) or an unknown option / command is one
 * line on stderr, `error: … (see 'based CMD --help')`, exit 1, no help text
 * and no stack trace — and nothing starts (no adapter, no data).
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

async function based(args: string[]): Promise<{ code: number; stderr: string; stdout: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    env: { NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

const CK = ["--checkpoint", "nonexistent"];

/** [args, the part of the message that must be there] */
const CASES: [string[], string][] = [
  [["eval", ...CK, "--limit", "abc"], "option '--limit <n>' argument 'abc' is invalid"],
  [["eval", ...CK, "--limit", "0"], "expected an integer ≥ 1"],
  [["eval", ...CK, "--limit", "-3"], "expected an integer ≥ 1"],
  [["eval", ...CK, "--limit", "2.5"], "expected an integer"],
  [["eval", ...CK, "--split", "valid"], "'valid' is not one"],
  [["eval"], "required option '--checkpoint <dir>' not specified"],
  [["generate", ...CK, "--max-new-tokens", "abc"], "'--max-new-tokens <n>' argument 'abc'"],
  [["generate", ...CK, "--max-new-tokens", "0"], "expected an integer ≥ 1"],
  [["generate", ...CK, "--temperature", "-1"], "expected a number ≥ 0"],
  [["generate", ...CK, "--temperature", "hot"], "expected a number"],
  [["generate", ...CK, "--top-k", "-1"], "expected an integer ≥ 0"],
  [["generate", ...CK, "--top-k", "1.5"], "expected an integer"],
  [["generate", ...CK, "--top-p", "0"], "expected a number > 0"],
  [["generate", ...CK, "--top-p", "1.5"], "expected a number ≤ 1"],
  [["generate", ...CK, "--seed", "x"], "'--seed <n>' argument 'x'"],
  [["bench", "--lengths", "abc"], "'--lengths <list>' argument 'abc' is invalid"],
  [["bench", "--lengths", "64,0"], "expected integers ≥ 1, comma-separated ('0')"],
  [["bench", "--batch", "0"], "expected an integer ≥ 1"],
  [["bench", "--only", "matmull"], "'matmull' is not one"],
  // every benchmark the bench runs is a valid --only name (generate was missing)
  [
    ["bench", "--only", "matmull"],
    "copy, peak, matmul, attention, bandwidth, optim, step, generate",
  ],
  [["parity", "dir", "--view", "nope"], "unknown linear-attention view 'nope'"],
  [["train", "--bogus"], "unknown option '--bogus'"],
  [["plot"], "missing required argument 'run_dir'"],
  [["trian"], "unknown command 'trian'"],
];

Deno.test("usage: bad option values and unknown options are one line pointing to --help", async () => {
  for (const [args, part] of CASES) {
    const r = await based(args);
    const ctx = `based ${args.join(" ")}: exit ${r.code}\n${r.stderr}`;
    const lines = r.stderr.split("\n").filter((l) => l.trim());
    assertEquals(r.code, 1, ctx);
    assertEquals(lines.length, 1, `not one line: ${ctx}`);
    assert(lines[0].startsWith("error: "), ctx);
    assert(lines[0].includes(part), `'${part}' not in: ${ctx}`);
    if (!args.includes("parity")) { // (a BasedError from the view name: no --help pointer)
      assert(/\(see 'based( [a-z]+)? --help'\)$/.test(lines[0]), ctx);
    }
    assert(!/Usage:|\n\s+at /.test(r.stderr), `help or a stack trace: ${ctx}`);
  }
});

Deno.test("usage: --help prints the command's help and exits 0", async () => {
  const r = await based(["generate", "--help"]);
  assertEquals(r.code, 0, r.stderr);
  assert(r.stdout.includes("--top-p <p>") && r.stdout.includes("--no-stop"), r.stdout);
});
