/**
 * Lab: where a training step's memory goes. Runs a reduced Based-360m (the
 * 360m widths, a few layers: by default the tail of the 360m stack, linear
 * attention, sliding window, BaseConv) for one fwd+bwd+clip+AdamW step at a
 * small B·L, watches every pool buffer (its size class, who acquired it, which
 * tape node saves it), and prints
 *   1. the activations each layer saves for backward at the end of the forward
 *      pass, by layer kind and op, in bytes per token;
 *   2. what is alive at the step's pool peak (forward/head and backward
 *      separately);
 *   3. the extrapolation to Based-360m (27 layers: 17 BaseConv, 5 linear
 *      attention, 5 sliding window) at 8 × 2048 tokens on a 2 GiB-binding
 *      adapter (the H200's), per-buffer size classes included.
 *
 *   deno run -A dev/memory_account.ts [--precision 16-mixed|32] [--B 1] [--L 512]
 *     [--layers linear,slide,conv] [--view chunked] [--vocab 16384]
 *
 * On a CPU adapter the f16 GEMM widens its inputs to f32 temporaries
 * (kernels/f16/gemm.ts); those are listed but left out of the extrapolation
 * (the GPU's packed kernel reads f16 directly).
 */
import { parseArgs } from "node:util";
import { initEngine } from "../tensor/engine.ts";
import { backward, tapeLength, tapeSaved } from "../tensor/tape.ts";
import { type Tensor, tidy } from "../tensor/tensor.ts";
import { sizeClass } from "../tensor/pool.ts";
import { BasedLM } from "../model/based.ts";
import { modelConfigFromCfg } from "../model/config.ts";
import { declareParams } from "../model/params.ts";
import { headChunkRows } from "../model/lm_head.ts";
import { AdamW } from "../optim/adamw.ts";
import { GradClip } from "../optim/clip.ts";
import { paramGroup } from "../optim/groups.ts";
import { composeConfig } from "../configs/mod.ts";
import { Random } from "../tensor/random.ts";
import { MixedPrecision } from "../train/amp.ts";

const { values: a } = parseArgs({
  args: Deno.args,
  options: {
    precision: { type: "string", default: "16-mixed" },
    B: { type: "string", default: "1" },
    L: { type: "string", default: "512" },
    layers: { type: "string", default: "linear,slide,conv" },
    view: { type: "string", default: "chunked" },
    vocab: { type: "string", default: "16384" },
  },
});
const B = Number(a.B), L = Number(a.L), T = B * L;
const kinds = a.layers!.split(",");
const f16 = a.precision !== "32";

// the full model: Based-360m at 8 x 2048 on a 2 GiB-binding adapter
const FULL = { T: 8 * 2048, maxBinding: 2 ** 31 };
const GiB = 2 ** 30;
const gib = (b: number) => (b / GiB).toFixed(2).padStart(7);

const e = await initEngine();
const amp = f16 ? MixedPrecision.create(e) : null;

const layerOverrides = [
  `model.config.n_layer=${kinds.length}`,
  `model.config.alt_mixer_layers=[${kinds.flatMap((k, i) => k === "linear" ? [i] : [])}]`,
  `model.config.alt_mixer_2_layers=[${kinds.flatMap((k, i) => k === "slide" ? [i] : [])}]`,
];
const compose = (extra: string[]) =>
  composeConfig([
    "experiment=example/based-360m",
    "trainer.devices=1",
    `datamodule.max_length=${L}`,
    `model.config.alt_mixer.parallel_implementation=${a.view}`,
    ...extra,
  ]) as Record<string, Record<string, unknown>>;
// CPU adapters bind at most 128 MiB: a smaller vocabulary (the head chunks are rescaled to 50,264)
const cfg = compose([...layerOverrides, `++model.config.vocab_size=${a.vocab}`]);
const mc = modelConfigFromCfg(cfg.model.config as Record<string, unknown>, L);
const fullMc = modelConfigFromCfg(compose([]).model.config as Record<string, unknown>, 2048);
const fullKinds = fullMc.layers.map((l) => (l.kind === "mha" ? "slide" : l.kind));

// ------------------------------------------------------------------ instrumentation
interface Buf {
  cls: number;
  bytes: number;
  what: string;
  site: string;
}
const live = new Map<GPUBuffer, Buf>();
const pool = e.pool;
const acquire = pool.acquire.bind(pool), release = pool.release.bind(pool);
let lastKernel = "";
let phase = "setup";
let peak = { live: 0, phase: "", kernel: "", entries: [] as [GPUBuffer, Buf, string][] };
let liveBytes = 0;

function site(): string {
  const frames = (new Error().stack ?? "").split("\n").slice(1)
    .map((l) => l.trim().replace(/^at /, ""))
    .filter((l) => !/tensor\/(pool|engine_core|tensor)\.ts|memory_account\.ts|<anonymous>/.test(l))
    .map((l) => l.replace(/\(?file:\/\/.*\/([^/]+\/[^/]+\.ts):(\d+):\d+\)?/, "$1:$2"));
  return frames.slice(0, 3).join(" < ");
}

/** Buffer -> "block/section/op" for every tensor the tape saves now. */
function savedOwners(): Map<GPUBuffer, string> {
  const m = new Map<GPUBuffer, string>();
  tapeSaved().forEach((n, i) => {
    for (const t of n.saved) if (!m.has(t.buffer)) m.set(t.buffer, `${where(i)}|${n.name}`);
  });
  return m;
}

pool.acquire = (bytes: number, what?: string) => {
  const buf = acquire(bytes, what);
  const cls = Math.min(sizeClass(bytes), Math.max(bytes, pool.maxBinding));
  live.set(buf, { cls, bytes, what: what ?? "", site: site() });
  liveBytes += cls;
  if (liveBytes > peak.live) {
    const own = savedOwners();
    peak = {
      live: liveBytes,
      phase,
      kernel: lastKernel,
      entries: [...live].map(([b, x]) => [b, x, own.get(b) ?? ""]),
    };
  }
  return buf;
};
pool.release = (buf: GPUBuffer) => {
  const x = live.get(buf);
  if (x) liveBytes -= x.cls;
  live.delete(buf);
  release(buf);
};
const run = e.run.bind(e);
e.run = (k, b, p, g) => {
  lastKernel = k.spec.name;
  run(k, b, p, g);
};

// block boundaries: the model's trace points, recorded as tape positions (no tensor kept)
const marks = new Map<string, number>();
class MarkMap extends Map<string, Tensor> {
  override set(name: string, t: Tensor): this {
    marks.set(name, tapeLength());
    t.dispose();
    return this;
  }
  override get(): Tensor | undefined {
    return undefined;
  }
}

/** The block and section of tape node i: "L<b>:<kind>/<norm1|mixer|norm2|mlp>", or "head". */
function where(i: number): string {
  if (i < (marks.get("embeddings") ?? 0)) return "embedding";
  for (let b = 0; b < kinds.length; b++) {
    const m = (s: string) => marks.get(`layers.${b}.${s}`) ?? Infinity;
    const sec = i < m("mixer_in")
      ? "norm1"
      : i < m("mixer_out")
      ? "mixer"
      : i < m("mlp_in")
      ? "norm2"
      : i < m("mlp_out")
      ? "mlp"
      : null;
    if (sec) return `L${b}:${kinds[b]}/${sec}`;
  }
  return i < (marks.get("ln_f_out") ?? Infinity) ? "ln_f" : "head";
}

// ------------------------------------------------------------------ the step
const grouping = cfg.train.optimizer_param_grouping as Record<string, unknown>;
const model = BasedLM.create(e, mc, { seed: 1111, groupOf: (n, k) => paramGroup(n, k, grouping) });
const adam = new AdamW(model.store, {
  decay: { weightDecay: 0.1 },
  no_decay: { weightDecay: 0 },
}, { lr: 8e-4, betas: [0.9, 0.95], eps: 1e-8 });
const clip = new GradClip(model.store, 1.0, amp?.scaler ?? null);
const rng = new Random(7);
const ids = new Int32Array(T), lab = new Int32Array(T);
for (let i = 0; i < T; i++) [ids[i], lab[i]] = [rng.int(mc.vocabSize), rng.int(mc.vocabSize)];
const batch = {
  ids: e.tensor(ids, [B, L], "i32"),
  hostIds: ids,
  labels: e.tensor(lab, [B, L], "i32"),
  B,
  L,
};
let endSaved: [GPUBuffer, Buf, string][] = [];
let fwdPeak = peak;
const step = (measure: boolean) => {
  model.store.zeroGrads();
  tidy(() => {
    phase = "forward";
    const loss = model.loss(batch, { gradScale: 1 / T });
    if (measure) {
      const own = savedOwners();
      endSaved = [...live].filter(([b, x]) => own.has(b) && !x.what.startsWith("f16 copy of"))
        .map(([b, x]) => [b, x, own.get(b)!]);
      fwdPeak = peak;
      peak = { ...peak, live: 0 };
    }
    phase = "backward";
    backward(loss);
  });
  phase = "optimizer";
  clip.compute();
  adam.step(1e-4, { clip });
  amp?.newWeights();
};
step(false);
await e.sync();
model.trace = new MarkMap();
peak = { live: 0, phase: "", kernel: "", entries: [] };
const base = liveBytes;
step(true);
await e.sync();
const bwdPeak = peak;

// ------------------------------------------------------------------ report
const perTok = (b: number) => (b / T).toFixed(0).padStart(8);
console.log(
  `model: 360m widths, layers ${kinds.join(",")} (view ${a.view}), ${
    f16 ? "f16 mixed" : "fp32"
  }, B·L = ${B}·${L} = ${T} tokens, adapter ${e.info.name}; live between steps ${gib(base)} GiB`,
);

// 1. saved per block at the end of the forward pass
const opOf = (owner: string) => owner.split("|")[1];
const blockOf = (owner: string) => owner.split("|")[0];
const perKind = new Map<string, Map<string, number>>(); // kind/section -> op -> bytes (requested)
const savedBlocks = new Map<string, [number, number][]>(); // block -> [bytes, cls]... per buffer
for (const [, x, owner] of endSaved) {
  const blk = blockOf(owner);
  const key = blk.replace(/^L\d+:/, "");
  const m = perKind.get(key) ?? new Map<string, number>();
  m.set(opOf(owner), (m.get(opOf(owner)) ?? 0) + x.bytes);
  perKind.set(key, m);
  const l = savedBlocks.get(blk) ?? [];
  l.push([x.bytes, x.cls]);
  savedBlocks.set(blk, l);
}
console.log("\n1. saved for backward at the end of the forward pass (bytes per token)");
console.log("   block/section            op                           bytes/token  /D (=1024)");
const kindTotals = new Map<string, number>();
for (const [key, m] of [...perKind].sort()) {
  for (const [op, bytes] of m) {
    console.log(
      `   ${key.padEnd(24)} ${op.padEnd(28)} ${perTok(bytes)}  ${(bytes / T / 1024).toFixed(2)}`,
    );
    const kind = key.split("/")[0];
    kindTotals.set(kind, (kindTotals.get(kind) ?? 0) + bytes);
  }
}
for (const [k, b] of kindTotals) {
  console.log(
    `   total ${k.padEnd(46)} ${perTok(b)}  ${(b / T / 1024).toFixed(2)}`,
  );
}

// 2. at the peaks
const HEAD_CHUNK = /logits chunk|logits gradient chunk/;
const cpuOnly = (x: Buf) => /castToF32/.test(x.site) && /gemmF16/.test(x.site);
function category(x: Buf, owner: string): string {
  if (x.what.startsWith("f16 copy of")) return "f16 weight copies";
  if (owner) {
    return `saved ${blockOf(owner).replace(/^L\d+:/, "").split("/")[0]} layers`;
  }
  if (HEAD_CHUNK.test(x.what)) return `head: ${x.what.replace(/ \[.*/, "")}`;
  if (cpuOnly(x)) return "CPU-only f16 GEMM widening (not on GPUs)";
  return `other: ${x.what || x.site}`;
}
function show(name: string, p: typeof peak) {
  console.log(
    `\n2. ${name} pool peak: ${
      gib(p.live)
    } GiB (measured), during ${p.phase}, last kernel ${p.kernel}`,
  );
  const cats = new Map<string, number>();
  for (const [, x, owner] of p.entries) {
    const c = category(x, owner);
    cats.set(c, (cats.get(c) ?? 0) + x.cls);
  }
  for (const [c, b] of [...cats].sort((x, y) => y[1] - x[1])) {
    console.log(`   ${(b / 2 ** 20).toFixed(2).padStart(9)} MiB  ${c}`);
  }
}
show("forward/head", fwdPeak);
show("backward", bwdPeak);

// 3. extrapolation to Based-360m, 27 layers x 16,384 tokens
const scaleT = FULL.T / T;
const R = headChunkRows(FULL.maxBinding, fullMc.vocabPadded, FULL.T);
const Rsmall = headChunkRows(e.maxBinding, mc.vocabPadded, T);
const fullWeights = declareParams(fullMc).filter((d) => d.shape.length === 2)
  .reduce((s, d) => s + sizeClass(2 * d.shape[0] * d.shape[1]), 0);
const fullBlock = (blk: string) =>
  (savedBlocks.get(blk) ?? []).reduce((s, [b]) => s + sizeClass(b * scaleT), 0);
const kindFull = new Map<string, number>();
kinds.forEach((k, i) => {
  const blk = [...savedBlocks.keys()].find((x) => x.startsWith(`L${i}:`));
  if (blk !== undefined) kindFull.set(k, fullBlock(blk.split("/")[0]));
});
// every section of block i
function blockFull(i: number): number {
  let s = 0;
  for (const [blk, l] of savedBlocks) {
    if (blk.startsWith(`L${i}:`)) s += l.reduce((t, [b]) => t + sizeClass(b * scaleT), 0);
  }
  return s;
}
kinds.forEach((k, i) => kindFull.set(k, blockFull(i)));
function extrapolate(p: typeof peak): { total: number; parts: Map<string, number> } {
  const parts = new Map<string, number>();
  const add = (k: string, b: number) => parts.set(k, (parts.get(k) ?? 0) + b);
  const last = kinds.length - 1;
  for (const [, x, owner] of p.entries) {
    if (x.what.startsWith("f16 copy of") || cpuOnly(x)) continue;
    if (owner) {
      const m = /^L(\d+):/.exec(blockOf(owner));
      if (m && Number(m[1]) !== last) continue; // replaced by the full stack below
      add(
        m ? `last layer (${kinds[last]}) saved` : `saved ${blockOf(owner)}`,
        sizeClass(x.bytes * scaleT),
      );
    } else if (HEAD_CHUNK.test(x.what)) {
      add(
        "head chunks (logits f32, gradient f16)",
        sizeClass((x.bytes / Rsmall / mc.vocabPadded) * R * fullMc.vocabPadded),
      );
    } else add("other, per token", sizeClass(x.bytes * scaleT));
  }
  // blocks 0..25 of the full model: fully saved
  for (let i = 0; i < fullKinds.length - 1; i++) {
    add(`saved ${fullKinds[i]} layers`, kindFull.get(fullKinds[i]) ?? NaN);
  }
  if (f16) add("f16 weight copies", fullWeights);
  let total = 0;
  for (const b of parts.values()) total += b;
  return { total, parts };
}
const arena = 16 *
  declareParams(fullMc).reduce((s, d) => s + d.shape.reduce((x, y) => x * y, 1), 0);
console.log(
  `\n3. Based-360m (${fullKinds.filter((k) => k === "conv").length} conv, ${
    fullKinds.filter((k) => k === "linear").length
  } linear, ${
    fullKinds.filter((k) => k === "slide").length
  } slide), ${FULL.T} tokens, head chunk ${R} rows: per layer saved (GiB) ${
    [...kindFull].map(([k, b]) => `${k} ${gib(b).trim()}`).join(", ")
  }`,
);
for (const [name, p] of [["forward/head", fwdPeak], ["backward", bwdPeak]] as const) {
  const x = extrapolate(p);
  console.log(
    `   at the ${name} peak: pool ${gib(x.total)} GiB + parameters/optimizer ${gib(arena)} GiB = ${
      gib(x.total + arena)
    } GiB`,
  );
  for (const [k, b] of [...x.parts].sort((u, v) => v[1] - u[1])) {
    console.log(`     ${gib(b)} GiB  ${k}`);
  }
}
amp?.destroy();
