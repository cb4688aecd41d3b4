/**
 * `deno task pack` (tools/pack.sh): builds the single-file executable, copies
 * ONLY that file into an empty directory and runs it there with a cleared
 * environment — HOME = that directory, no DENO_DIR, PATH = a directory holding
 * just the shell tools the stub uses (no deno), and no network (a new network
 * namespace where `unshare -n` is permitted) — checking that `./based info` and
 * a short training run on the bundled corpus and configs work, that the
 * tokeniser worker falls back to the main thread inside the bundle, and that
 * nothing outside that directory was written.
 *
 * Slow (a ~40 MB build): it runs only with BASED_PACK_TEST=1, as its own CI step:
 *   BASED_PACK_TEST=1 DENO_WEBGPU_BACKEND=vulkan deno test -A tests/pack_test.ts
 */
import { ok as assert } from "node:assert/strict";
import { join } from "node:path";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const ENABLED = Deno.env.get("BASED_PACK_TEST") === "1";
/** the tools the stub calls (tools/pack.sh), found on this machine's PATH */
const TOOLS = ["sh", "mkdir", "tail", "gzip", "tar", "dirname", "mv", "rm"];

interface Result {
  code: number;
  out: string;
}

async function run(
  cmd: string,
  args: string[],
  o: { cwd: string; env?: Record<string, string>; clearEnv?: boolean },
): Promise<Result> {
  const r = await new Deno.Command(cmd, {
    args,
    cwd: o.cwd,
    env: o.env,
    clearEnv: o.clearEnv,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout) + dec.decode(r.stderr) };
}

/** `name`'s absolute path on the PATH of this process. */
function which(name: string): string | null {
  for (const d of (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":")) {
    try {
      const p = join(d, name);
      if (Deno.statSync(p).isFile) return p;
    } catch { /* not here */ }
  }
  return null;
}

/** Paths (relative) of every file under `dir`. */
function files(dir: string, rel = ""): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(join(dir, rel))) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory) out.push(...files(dir, p));
    else out.push(p);
  }
  return out;
}

Deno.test({
  name: ENABLED
    ? "pack: dist/based runs alone in an empty directory, offline"
    : "pack: dist/based runs alone in an empty directory, offline (skipped: set BASED_PACK_TEST=1)",
  ignore: !ENABLED,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const tmp = await Deno.makeTempDir({ prefix: "based-pack-test-" });
    try {
      // ---- build
      const built = join(tmp, "build", "based");
      const b = await run("bash", [join(ROOT, "tools", "pack.sh"), built], { cwd: ROOT });
      assert(b.code === 0, `pack.sh failed:\n${b.out}`);
      const size = (await Deno.stat(built)).size;
      assert(size > 10e6, `${size} bytes: no runtime inside?`);

      // ---- an empty directory holding only the executable
      const home = join(tmp, "empty");
      await Deno.mkdir(home);
      await Deno.copyFile(built, join(home, "based"));
      await Deno.chmod(join(home, "based"), 0o755);
      // PATH: only the stub's tools (no deno), as links in a directory of their own
      const bin = join(tmp, "bin");
      await Deno.mkdir(bin);
      for (const t of TOOLS) {
        const p = which(t);
        assert(p, `${t} not found`);
        await Deno.symlink(p, join(bin, t));
      }
      const env: Record<string, string> = {
        HOME: home,
        PATH: bin,
        XDG_RUNTIME_DIR: home,
        NO_COLOR: "1",
      };
      for (const [k, v] of Object.entries(Deno.env.toObject())) {
        if (k === "DENO_WEBGPU_BACKEND" || k.startsWith("VK_")) env[k] = v; // the GPU driver choice
      }
      // no network: a fresh network namespace when permitted
      const unshare = which("unshare");
      const offline = unshare !== null &&
        (await run(unshare, ["-n", "true"], { cwd: home })).code === 0;
      console.log(
        offline ? "running offline (unshare -n)" : "unshare -n not permitted: network not cut",
      );
      const based = (args: string[]) =>
        offline
          ? run(unshare!, ["-n", "./based", ...args], { cwd: home, env, clearEnv: true })
          : run("./based", args, { cwd: home, env, clearEnv: true });

      // ---- info
      const info = await based(["info"]);
      assert(info.code === 0, `./based info failed:\n${info.out}`);
      assert(
        /^adapter: /m.test(info.out) && /maxStorageBufferBindingSize/.test(info.out),
        info.out,
      );

      // ---- the bundled configs and corpus: a short training run
      const tiny = [
        "datamodule.max_length=32",
        "datamodule.batch_size=2",
        "datamodule.batch_size_eval=2",
        "train.global_batch_size=2",
        "model.config.n_embd=32",
        "model.config.n_layer=3",
        "model.config.n_inner=64",
        "trainer.max_steps=2",
        "train.scheduler.warmup_t=1",
        "trainer.log_every_n_steps=1",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
      ];
      const tr = await based(["train", "experiment=example/based-tiny", ...tiny]);
      assert(tr.code === 0, `./based train failed:\n${tr.out}`);
      assert(/^data: kjv, max_length 32: train 1,033,265 tokens/m.test(tr.out), tr.out);
      assert(/^step 2\/2 \| loss \d+\.\d+ /m.test(tr.out), tr.out);
      assert(/^test {2}loss \d+\.\d+ /m.test(tr.out), tr.out);
      // every built-in experiment is in the bundle
      const cfg = await based(["train", "--cfg", "experiment=reference/based-1b"]);
      assert(cfg.code === 0 && /n_layer: 36/.test(cfg.out), cfg.out);

      // ---- a corpus large enough for worker threads: the bundle has no worker module, so the
      // tokeniser must fall back to the main thread
      const wt = join(home, "wikitext", "wikitext-103-v1");
      await Deno.mkdir(wt, { recursive: true });
      const row = (i: number) => ` The quick brown fox number ${i} jumps over the lazy dog .\n`;
      const text = (n: number) => Array.from({ length: n }, (_, i) => row(i)).join("");
      await Deno.writeTextFile(join(wt, "wiki.train.tokens"), text(150_000)); // ~9 MiB
      await Deno.writeTextFile(join(wt, "wiki.valid.tokens"), text(200));
      await Deno.writeTextFile(join(wt, "wiki.test.tokens"), text(200));
      const w = await based([
        "train",
        "experiment=example/based-tiny",
        "datamodule=wikitext103",
        "datamodule.data_dir=wikitext",
        ...tiny,
        "trainer.max_steps=1",
        "train.scheduler.warmup_t=0",
        "do_test=false",
      ]);
      assert(w.code === 0, `./based train on WikiText failed:\n${w.out}`);
      assert(/tokenising wikitext-103-v1 train: .* on the main thread/.test(w.out), w.out);
      assert(/^step 1\/1 \| loss \d/m.test(w.out), w.out);

      // ---- nothing of the checkout inside, nothing written outside the directory
      const unpacked = files(home).filter((f) => f.endsWith("/based.js"));
      assert(unpacked.length === 1, `unpacked: ${unpacked}`);
      const js = await Deno.readTextFile(join(home, unpacked[0]));
      assert(!js.includes(ROOT), `the bundle refers to the checkout (${ROOT})`);
      const top = [...Deno.readDirSync(tmp)].map((e) => e.name).sort();
      assert(top.join() === "bin,build,empty", `written outside the directory: ${top}`);
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
