/**
 * The bad-input table (docs/errors.md), one test per row: `based` run as a
 * subprocess must print exactly one line, `error: <message>`, on stderr (no
 * stack trace), exit 1, and leave everything the user had byte for byte as it
 * was (the tests hash the files and directories involved before and after).
 *
 * The full-disk row mounts a tmpfs (root with CAP_SYS_ADMIN, as in CI); where
 * mounting is not permitted it is skipped with the reason in its name.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { join } from "node:path";
import { loadCheckpoint } from "../../train/checkpoint.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** A tiny run on the bundled corpus (~0.5 s per step on lavapipe). */
const TINY = [
  "experiment=example/based-tiny",
  "datamodule.max_length=32",
  "datamodule.batch_size=2",
  "datamodule.batch_size_eval=2",
  "train.global_batch_size=2",
  "model.config.n_embd=32",
  "model.config.n_layer=3",
  "model.config.n_inner=64",
  "trainer.max_steps=4",
  "train.scheduler.warmup_t=2",
  "trainer.log_every_n_steps=1",
  "trainer.limit_val_batches=2",
  "trainer.limit_test_batches=2",
];

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** The shared scratch root: cwd of every run, token cache under it. */
const ROOT = await Deno.makeTempDir({ prefix: "based-errors-test-" });
const CACHE = join(ROOT, "token-cache");
globalThis.addEventListener("unload", () => Deno.removeSync(ROOT, { recursive: true }));
const BASE_ENV: Record<string, string> = {
  NO_COLOR: "1",
  DENO_NO_UPDATE_CHECK: "1",
  // wgpu complains on stderr without it (an extra line that is not ours)
  XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR") ?? ROOT,
};

async function based(args: string[], env: Record<string, string> = {}): Promise<Result> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    cwd: ROOT,
    env: { ...BASE_ENV, ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** `based train TINY... cache_dir... extra...` */
function train(extra: string[], env: Record<string, string> = {}): Promise<Result> {
  return based(["train", ...TINY, `datamodule.cache_dir=${CACHE}`, ...extra], env);
}

/** Exit 1 and one `error: ` line holding every part (no stack trace); returns the message. */
function refused(r: Result, ...parts: (string | RegExp)[]): string {
  const lines = r.stderr.split("\n").filter((l) => l.trim());
  const ctx = `exit ${r.code}\nstderr:\n${r.stderr}\nstdout (end):\n${r.stdout.slice(-1500)}`;
  assertEquals(r.code, 1, ctx);
  assertEquals(lines.length, 1, `not one line on stderr: ${ctx}`);
  assert(lines[0].startsWith("error: "), ctx);
  assert(!/\n\s+at |Stack backtrace|Uncaught/.test(r.stderr), `a stack trace: ${ctx}`);
  const msg = lines[0].slice("error: ".length);
  for (const p of parts) {
    assert(typeof p === "string" ? msg.includes(p) : p.test(msg), `'${p}' not in: ${msg}`);
  }
  return msg;
}

/** Every file and directory under `path` (or the file itself): relative path -> sha-256. */
async function hashTree(path: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const sha = async (p: string) => {
    const h = await crypto.subtle.digest("SHA-256", await Deno.readFile(p));
    return [...new Uint8Array(h)].map((b) => b.toString(16).padStart(2, "0")).join("");
  };
  const st = await Deno.stat(path).catch(() => null);
  if (!st) return { "": "missing" };
  if (st.isFile) return { "": await sha(path) };
  const walk = async (rel: string) => {
    const entries = [...Deno.readDirSync(join(path, rel))].sort((a, b) => a.name < b.name ? -1 : 1);
    for (const e of entries) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory) {
        out[`${p}/`] = "dir/";
        await walk(p);
      } else out[p] = await sha(join(path, p));
    }
  };
  await walk("");
  return out;
}

/** A fresh directory under ROOT for one test. */
async function scratch(name: string): Promise<string> {
  const d = join(ROOT, name);
  await Deno.mkdir(d, { recursive: true });
  return d;
}

/** Runs `fn` and asserts that `paths` hash the same before and after. */
async function unchanged(paths: string[], fn: () => Promise<void>): Promise<void> {
  const before = await Promise.all(paths.map(hashTree));
  await fn();
  const after = await Promise.all(paths.map(hashTree));
  for (let i = 0; i < paths.length; i++) assertEquals(after[i], before[i], `${paths[i]} changed`);
}

/** Outputs of a run under `dir`. */
function outputs(dir: string): string[] {
  return [
    `callbacks.model_checkpoint.dirpath=${join(dir, "ck")}`,
    `hydra.run.dir=${join(dir, "run")}`,
  ];
}

function t(name: string, fn: () => Promise<void>, ignore?: string): void {
  Deno.test({
    name: ignore ? `errors: ${name} (skipped: ${ignore})` : `errors: ${name}`,
    ignore: ignore !== undefined,
    sanitizeResources: false,
    sanitizeOps: false,
    fn,
  });
}

// ------------------------------------------------------------------ config

t("malformed YAML in a --config-dir file: the file and line are named", async () => {
  const dir = await scratch("malformed");
  await Deno.mkdir(join(dir, "experiment"));
  await Deno.writeTextFile(
    join(dir, "experiment", "mine.yaml"),
    "# @package _global_\ntrainer:\n  max_steps: 3\n  bad: [1, 2\nfoo: bar\n",
  );
  await unchanged([ROOT], async () => {
    refused(
      await based(["train", "--config-dir", dir, "experiment=mine"]),
      "malformed YAML in ",
      /experiment\/mine\.yaml:\d+:\d+: /,
    );
  });
});

t("unknown config key: the closest valid key is suggested", async () => {
  await unchanged([ROOT], async () => {
    refused(
      await based(["train", "experiment=example/based-tiny", "trainer.max_stepz=3"]),
      "unknown config key 'trainer.max_stepz' (did you mean 'trainer.max_steps'?)",
    );
  });
});

t("wrong type: trainer.max_steps=abc", async () => {
  await unchanged([ROOT], async () => {
    refused(
      await based(["train", "experiment=example/based-tiny", "trainer.max_steps=abc"]),
      "config key 'trainer.max_steps' expects an int, got 'abc'",
    );
  });
});

t("missing experiment: the available ones are listed", async () => {
  await unchanged([ROOT], async () => {
    refused(
      await based(["train", "experiment=nope"]),
      "unknown option 'nope' for config group 'experiment'",
      "example/based-tiny",
    );
  });
});

t("no experiment: the available ones are listed", async () => {
  await unchanged([ROOT], async () => {
    refused(await based(["train"]), "no experiment chosen", "experiment=example/based-tiny");
  });
});

t("model sizes: a head dimension rotary cannot use, and zero, name the key", async () => {
  await unchanged([ROOT], async () => {
    refused(
      await train(["model.config.n_embd=100"]),
      "model.config.n_embd 100 / model.config.alt_mixer_2.num_heads 4 gives a head dimension of 25",
      "set model.config.n_embd to a multiple of 8",
    );
    refused(
      await train(["model.config.n_embd=0"]),
      "model.config.n_embd must be a positive integer, got 0",
    );
  });
});

t("fewer steps than the warm-up: the keys are named", async () => {
  await unchanged([ROOT], async () => {
    refused(
      await train(["trainer.max_steps=2", "train.scheduler.warmup_t=6"]),
      "trainer.max_steps 2 leaves no steps after the warm-up of train.scheduler.warmup_t 6",
      "e.g. train.scheduler.warmup_t=1",
    );
  });
});

// ------------------------------------------------------------------ data

t("missing dataset files: the paths searched and how to get the data", async () => {
  const dir = await scratch("missing-data");
  const data = join(dir, "nonexistent");
  await unchanged([dir], async () => {
    refused(
      await train(["datamodule=wikitext103", `datamodule.data_dir=${data}`, ...outputs(dir)]),
      `wikitext-103-v1 train split not found: looked for wiki.train.tokens or `,
      join(data, "wikitext-103-v1"),
      "download wikitext-103-v1 from the Salesforce release",
      "point datamodule.data_dir at it",
    );
  });
});

t("empty corpus: the empty files are named", async () => {
  const dir = await scratch("empty-corpus");
  const data = join(dir, "wikitext");
  await Deno.mkdir(join(data, "wikitext-103-v1"), { recursive: true });
  for (const s of ["train", "valid", "test"]) {
    await Deno.writeTextFile(join(data, "wikitext-103-v1", `wiki.${s}.tokens`), "");
  }
  await unchanged([data], async () => {
    refused(
      await train([
        "datamodule=wikitext103",
        `datamodule.data_dir=${data}`,
        `datamodule.cache_dir=${join(dir, "cache")}`,
        ...outputs(dir),
      ]),
      "the wikitext/wikitext-103-v1 train split is empty (0 tokens in ",
      join(data, "wikitext-103-v1", "wiki.train.tokens"),
      "the files hold no text",
    );
  });
});

t("token ids outside the vocabulary: a clear error before any step, not NaN", async () => {
  const dir = await scratch("vocab");
  let msg = "";
  await unchanged([dir], async () => {
    const r = await train(["+model.config.vocab_size=100", ...outputs(dir)]);
    msg = refused(
      r,
      "the kjv train split has token id 50256, outside model.config.vocab_size 100",
      "set ++model.config.vocab_size=50257 or more",
    );
    assert(!/step 1\//.test(r.stdout), "no step ran");
  });
  {
    // the override printed works as given (the example config has no vocab_size key)
    const fix = /set (\S+) or more/.exec(msg)![1];
    const ok = await train([
      fix,
      "trainer.max_steps=1",
      "train.scheduler.warmup_t=0",
      "do_test=false",
      "callbacks.model_checkpoint.every_n_train_steps=0",
      ...outputs(dir),
    ]);
    assertEquals(ok.code, 0, ok.stderr);
    assert(/step 1\/1 \| loss \d/.test(ok.stdout), ok.stdout);
  }
});

t("sequence longer than the model allows (a mixer's l_max)", async () => {
  const dir = await scratch("seqlen");
  await unchanged([ROOT], async () => {
    refused(
      await train(["datamodule.max_length=64", "model.config.mixer.l_max=32", ...outputs(dir)]),
      "datamodule.max_length 64 is longer than the model allows: model.config.mixer.l_max is 32",
      "set datamodule.max_length ≤ 32 or raise model.config.mixer.l_max",
    );
  });
});

t("misspelt linear-attention view: refused before any data is read", async () => {
  const dir = await scratch("view");
  await unchanged([ROOT], async () => {
    const r = await train([
      "model.config.alt_mixer.parallel_implementation=fla_paralel",
      ...outputs(dir),
    ]);
    refused(
      r,
      "model.config.alt_mixer.parallel_implementation: unknown linear-attention view 'fla_paralel'",
      "valid: quadratic, chunked, cumsum, fla_parallel, fla_chunk, linear",
    );
    assert(!/adapter:|data:|tokens/.test(r.stdout), `work done before the refusal:\n${r.stdout}`);
  });
});

// ------------------------------------------------------------------ adapter

t("no GPU adapter (no Vulkan driver found): info and train", async () => {
  // the Vulkan loader finds no ICD: navigator.gpu.requestAdapter() returns null
  const env = {
    DENO_WEBGPU_BACKEND: "vulkan",
    VK_ICD_FILENAMES: "/nonexistent",
    VK_DRIVER_FILES: "/nonexistent",
  };
  await unchanged([ROOT], async () => {
    for (const args of [["info"], ["train", ...TINY]]) {
      refused(
        await based(args, env),
        "no GPU adapter found with DENO_WEBGPU_BACKEND=vulkan",
        "unset DENO_WEBGPU_BACKEND to let based choose",
        "install a Vulkan driver",
      );
    }
  });
});

t(
  "a tensor over the adapter's max storage binding: named, with the batch size that fits",
  async () => {
    const dir = await scratch("binding");
    const info = await based(["info", "--json"]);
    assertEquals(info.code, 0, info.stderr);
    const limit = JSON.parse(info.stdout).limits.maxStorageBufferBindingSize as number;
    // the SwiGLU hidden state [B, 32, 2·65536] f32 is 16 MiB per sequence: the largest tensor
    const perSeq = 32 * 2 * 65536 * 4;
    const fit = Math.floor(limit / perSeq);
    const wide = [
      "model.config.n_embd=64",
      "model.config.n_inner=65536",
      "model.config.n_layer=1",
      "trainer.max_steps=1",
      "train.scheduler.warmup_t=0",
      "do_test=false",
      "callbacks.model_checkpoint.every_n_train_steps=0",
      ...outputs(dir),
    ];
    const bs = (b: number) => [`datamodule.batch_size=${b}`, `train.global_batch_size=${b}`];
    refused(
      await train([...wide, ...bs(fit + 1)]),
      `tensor [${fit + 1},32,131072] needs a buffer of `,
      "over this adapter's max storage binding of ",
      `at datamodule.batch_size=${fit + 1}; the largest micro-batch that fits is ${fit} sequences`,
      `set datamodule.batch_size=${fit} or less`,
    );
    // and the suggestion is right: that batch trains
    if (fit <= 16) { // (a large adapter limit would make this slow on a CPU adapter)
      const ok = await train([...wide, ...bs(fit)]);
      assertEquals(ok.code, 0, ok.stderr);
      assert(/step 1\/1 \| loss \d/.test(ok.stdout), ok.stdout);
    }
  },
);

// ------------------------------------------------------------------ training

for (
  const [what, extra, expect] of [
    [
      "logged every step",
      ["trainer.log_every_n_steps=1"],
      /^the loss became (NaN|-?Infinity) at step (\d+) \((?:non-finite gradients: the update was skipped|the weights after step \d+'s update, checked before writing their checkpoint, which was not written)\)/,
    ],
    [
      "found at a checkpoint between logging steps",
      ["trainer.log_every_n_steps=5"],
      /^the loss (?:or the gradients became non-finite between step \d+ and step|became (?:NaN|-?Infinity) at step) (\d+) /,
    ],
  ] as const
) {
  t(`NaN loss (${what}): the step is named, the last good checkpoint kept`, async () => {
    const dir = await scratch(`nan-${extra[0].split("=")[1]}`);
    const msg = refused(
      await train([
        "train.optimizer.lr=1e30",
        "trainer.max_steps=8",
        "callbacks.model_checkpoint.every_n_train_steps=1",
        ...extra,
        ...outputs(dir),
      ]),
      expect,
      "lower train.optimizer.lr; the last good checkpoint ",
    );
    const bad = Number(expect.exec(msg)!.at(-1));
    const kept = /the last good checkpoint (\S+) is kept/.exec(msg)![1];
    const ck = await loadCheckpoint(kept);
    assert(ck.state.step < bad, `checkpoint step ${ck.state.step} < ${bad}`);
    const names = [...Deno.readDirSync(join(dir, "ck"))].map((e) => e.name).sort();
    assertEquals(names.at(-1), kept.split("/").at(-1), "no checkpoint after the bad step");
    // the kept checkpoint's weights give a finite loss
    const ev = await based(["eval", "--checkpoint", kept, "--split", "validation", "--limit", "1"]);
    assertEquals(ev.code, 0, ev.stderr);
    const loss = Number(/validation: loss (\S+)/.exec(ev.stdout)?.[1]);
    assert(Number.isFinite(loss), `the kept checkpoint evaluates to ${loss}:\n${ev.stdout}`);
    // (and eval refuses a batch of no sequences instead of looping)
    refused(
      await based(["eval", "--checkpoint", kept, "datamodule.batch_size_eval=0"]),
      "datamodule.batch_size_eval must be ≥ 1, got 0",
    );
  });
}

/** null when `mount -t tmpfs` works here, otherwise why not. */
async function probeMount(): Promise<string | null> {
  if (Deno.build.os !== "linux") return "tmpfs mounts need Linux";
  const dir = await Deno.makeTempDir({ prefix: "based-mount-probe-" });
  try {
    const m = await new Deno.Command("mount", {
      args: ["-t", "tmpfs", "-o", "size=64k", "tmpfs", dir],
      stdout: "null",
      stderr: "piped",
    }).output().catch((e) => ({ success: false, stderr: new TextEncoder().encode(String(e)) }));
    if (!m.success) {
      const why = new TextDecoder().decode(m.stderr).trim().split("\n")[0];
      return `mount -t tmpfs is not permitted here (${why || "failed"})`;
    }
    await new Deno.Command("umount", { args: [dir] }).output();
    return null;
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

const NO_MOUNT = await probeMount();

t(
  "disk full while writing a checkpoint: said so, the previous checkpoint intact, no temp dir",
  async () => {
    const dir = await scratch("disk-full");
    const mnt = join(dir, "small");
    await Deno.mkdir(mnt);
    // a checkpoint of this model is ~20 MB (weights + two moments): one fits in 32 MB, two do not
    const m = await new Deno.Command("mount", {
      args: ["-t", "tmpfs", "-o", "size=32m", "tmpfs", mnt],
    }).output();
    assert(m.success, "mount failed");
    try {
      const run = (steps: number) =>
        train([
          `trainer.max_steps=${steps}`,
          "train.scheduler.warmup_t=0",
          "callbacks.model_checkpoint.every_n_train_steps=2",
          "resume=true",
          "do_test=false",
          `callbacks.model_checkpoint.dirpath=${mnt}`,
          `hydra.run.dir=${join(dir, "run")}`,
        ]);
      const first = await run(2);
      assertEquals(first.code, 0, first.stderr);
      await unchanged([mnt], async () => {
        refused(
          await run(4),
          `disk full while writing a checkpoint in ${mnt}; the previous checkpoint is kept`,
          "free disk space or change callbacks.model_checkpoint.dirpath",
        );
      });
      assertEquals((await loadCheckpoint(join(mnt, "step_0000002"))).state.step, 2);
    } finally {
      const u = await new Deno.Command("umount", { args: [mnt] }).output();
      if (!u.success) await new Deno.Command("umount", { args: ["-l", mnt] }).output();
    }
  },
  NO_MOUNT ?? undefined,
);

t("an unwritable output directory (a path under a regular file)", async () => {
  const dir = await scratch("unwritable");
  const file = join(dir, "a-file");
  await Deno.writeTextFile(file, "not a directory");
  await unchanged([file], async () => {
    refused(
      await train([
        `hydra.run.dir=${join(file, "run")}`,
        `callbacks.model_checkpoint.dirpath=${join(dir, "ck")}`,
      ]),
      `run directory ${join(file, "run")} is not writable (Not a directory`,
      "(set hydra.run.dir to a writable directory)",
    );
    refused(
      await train([
        `hydra.run.dir=${join(dir, "run")}`,
        `callbacks.model_checkpoint.dirpath=${join(file, "ck")}`,
      ]),
      `checkpoint directory ${join(file, "ck")} is not writable (Not a directory`,
      "(set callbacks.model_checkpoint.dirpath to a writable directory)",
    );
  });
});
