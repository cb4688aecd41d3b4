/**
 * Hugging Face snapshots without the fixture: pytorch_model.bin files written
 * here as torch.save writes them (tests/hf/torch_writer.ts) in float32,
 * float16 and bfloat16 load with exactly the values written (half and bfloat16
 * widen to float32 exactly, so equality is exact); model.safetensors too; a
 * strided (transposed) tensor is gathered; the safe unpickler refuses a
 * forbidden global and opcode; truncated and corrupt zips are refused;
 * config.json keys based does not read are named in one line, and keys that
 * change the network are refused; an untied lm_head.weight is refused; our
 * checkpoints load with and without lm_head.weight (issue 12).
 */
import { deepStrictEqual as eq, ok, rejects, throws } from "node:assert/strict";
import { join } from "node:path";
import { findCheckpoint } from "../../train/restore.ts";
import { loadCheckpoint, saveCheckpoint } from "../../train/checkpoint.ts";
import { modelConfigFromCfg } from "../../model/config.ts";
import { declareParams } from "../../model/params.ts";
import { serializeSafetensors } from "../../tensor/safetensors.ts";
import { BasedError } from "../../errors.ts";
import { mapHfConfig } from "../../hf/config_map.ts";
import { evalConfig } from "../../hf/hooks.ts";
import { exportHf } from "../../hf/export.ts";
import { type PyGlobal, PyTuple, unpickle } from "../../hf/unpickle.ts";
import { ALLOWED_GLOBALS, TorchStateDict } from "../../hf/torch_load.ts";
import { writeTorchFile } from "../../hf/torch_save.ts";
import { ZipArchive } from "../../hf/zip.ts";
import { fromF16, type Storage, torchSave, type TorchTensor, zipStored } from "./torch_writer.ts";
import { Random } from "../../tensor/random.ts";

/** config.json of a tiny Based model, as the released ones write it. */
const CONFIG = {
  n_embd: 16,
  n_head: 2,
  n_layer: 3,
  n_inner: 32,
  n_positions: 64,
  vocab_size: 50257,
  pad_vocab_size_multiple: 8,
  alt_mixer_layers: [1],
  alt_mixer_2_layers: [2],
  mixer: {
    _target_: "based.models.mixers.convolution.BaseConv",
    l_max: 64,
    use_bias: true,
    expand_proj: 4,
    kernel_sizes: 3,
  },
  alt_mixer: {
    _target_: "based.models.mixers.linear_attention.LinearAttention",
    l_max: 64,
    feature_map: { _target_: "based.models.mixers.linear_attention.TaylorExp", input_dim: 8 },
    feature_dim: 8,
    num_heads: 2,
    parallel_implementation: "quadratic",
  },
  alt_mixer_2: {
    _target_: "based.models.mixers.slide_attention.SlidingAttention",
    window_size: 16,
    num_heads: 2,
    causal: true,
  },
  rms_norm: true,
  residual_in_fp32: true,
  mlp_fc1_bias: false,
  mlp_fc2_bias: false,
  out_proj_bias: false,
  qkv_proj_bias: false,
  activation_function: "swiglu",
  rotary_emb_fraction: 1,
  max_position_embeddings: 0,
  model_type: "gpt2",
  architectures: ["GPTLMHeadModel"],
  torch_dtype: "float32",
};

const DECLS = declareParams(modelConfigFromCfg(CONFIG as Record<string, unknown>));
const EMB = "transformer.embeddings.word_embeddings.weight";

/** Random raw values per parameter for a storage type, and the float32 values they mean. */
function values(
  storage: Storage,
  n: number,
  rng: Random,
): { bytes: Uint8Array; f32: Float32Array } {
  if (storage === "FloatStorage") {
    const f = new Float32Array(n);
    for (let i = 0; i < n; i++) f[i] = rng.normal() * 0.1;
    return { bytes: new Uint8Array(f.buffer), f32: f };
  }
  // half / bfloat16 bit patterns of modest magnitude, either sign; their exact float32 values
  const h = new Uint16Array(n);
  const f = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const sign = rng.next() < 0.5 ? 0x8000 : 0;
    if (storage === "HalfStorage") {
      h[i] = sign | ((5 + Math.floor(rng.next() * 12)) << 10) | Math.floor(rng.next() * 1024);
      f[i] = fromF16(h[i]);
    } else {
      h[i] = sign | ((117 + Math.floor(rng.next() * 12)) << 7) | Math.floor(rng.next() * 128);
      f[i] = new Float32Array(new Uint32Array([h[i] << 16]).buffer)[0];
    }
  }
  return { bytes: new Uint8Array(h.buffer), f32: f };
}

/** A snapshot folder: config.json + pytorch_model.bin (Lightning keys, counters, tied head). */
async function snapshot(
  storage: Storage,
  opts: { config?: unknown; transform?: (t: [string, TorchTensor][]) => void } = {},
): Promise<{ dir: string; expect: Map<string, Float32Array> }> {
  const dir = await Deno.makeTempDir({ prefix: "based-hf-test-" });
  const rng = new Random(7);
  const expect = new Map<string, Float32Array>();
  const tensors: [string, TorchTensor][] = [];
  for (const d of DECLS) {
    const v = values(storage, d.shape.reduce((a, b) => a * b, 1), rng);
    expect.set(d.name, v.f32);
    tensors.push([`model.${d.name}`, { storage, bytes: v.bytes, shape: d.shape }]);
  }
  tensors.push(["model.lm_head.weight", { ...tensors[0][1], sameAs: `model.${EMB}` }]);
  for (const s of ["train", "val", "test"]) {
    tensors.push([`${s}_metrics.num-tokens.count`, {
      storage: "LongStorage",
      bytes: new Uint8Array(8),
      shape: [],
    }]);
  }
  opts.transform?.(tensors);
  await Deno.writeFile(join(dir, "pytorch_model.bin"), torchSave(tensors, "pytorch_model"));
  await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(opts.config ?? CONFIG));
  return { dir, expect };
}

function sameValues(got: Map<string, Float32Array>, expect: Map<string, Float32Array>) {
  eq([...got.keys()].sort(), [...expect.keys()].sort());
  for (const [n, v] of expect) {
    const g = got.get(n)!;
    eq(g.length, v.length, n);
    for (let i = 0; i < v.length; i++) if (g[i] !== v[i]) eq([n, i, g[i]], [n, i, v[i]]);
  }
}

const quiet = () => {};

for (
  const [storage, label] of [
    ["FloatStorage", "float32"],
    ["HalfStorage", "float16"],
    ["BFloat16Storage", "bfloat16"],
  ] as const
) {
  Deno.test(`hf: a ${label} pytorch_model.bin loads with the exact values (tied head, counters dropped)`, async () => {
    const { dir, expect } = await snapshot(storage);
    try {
      const ck = await findCheckpoint(dir, quiet);
      sameValues(ck.weights, expect);
      eq(ck.state.step, 0);
      eq(ck.optimizer.size, 0);
      const found = (ck as { found?: string }).found!;
      ok(found.startsWith(`Hugging Face snapshot ${dir} (pytorch_model.bin, ${label}`), found);
      ok(found.includes("3 metric counters skipped"), found);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("hf: a strided (transposed) tensor is gathered in row-major order", async () => {
  const name = `model.transformer.layers.0.mlp.fc2.weight`;
  let want: Float32Array | undefined;
  const { dir, expect } = await snapshot("FloatStorage", {
    transform: (ts) => {
      const t = ts.find(([k]) => k === name)![1];
      const [r, c] = t.shape;
      const src = new Float32Array(t.bytes.buffer);
      const tr = new Float32Array(r * c); // storage holds the transpose: element (i,j) at j*r + i
      for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) tr[j * r + i] = src[i * c + j];
      t.bytes = new Uint8Array(tr.buffer);
      t.stride = [1, r];
      want = src;
    },
  });
  try {
    const ck = await findCheckpoint(dir, quiet);
    expect.set(name.slice("model.".length), want!);
    sameValues(ck.weights, expect);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("hf: model.safetensors (PyTorch names, lm_head.weight, float16) is read instead", async () => {
  const dir = await Deno.makeTempDir({ prefix: "based-hf-test-" });
  try {
    const rng = new Random(3);
    const expect = new Map<string, Float32Array>();
    const ts = DECLS.map((d) => {
      const v = values("HalfStorage", d.shape.reduce((a, b) => a * b, 1), rng);
      expect.set(d.name, v.f32);
      return { name: d.name, shape: d.shape, data: v.bytes, dtype: "F16" as const };
    });
    ts.push({ ...ts[0], name: "lm_head.weight" });
    await Deno.writeFile(join(dir, "model.safetensors"), serializeSafetensors(ts));
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(CONFIG));
    const ck = await findCheckpoint(dir, quiet);
    sameValues(ck.weights, expect);
    ok((ck as { found?: string }).found!.includes("model.safetensors, float16"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ------------------------------------------------------------------ refusals

const refuses = async (dir: string, ...parts: string[]) => {
  try {
    await rejects(() => findCheckpoint(dir, quiet), (e: Error) => {
      ok(e instanceof BasedError, `${e}`);
      ok(!e.message.includes("\n"), e.message);
      for (const p of parts) ok(e.message.includes(p), `'${p}' not in: ${e.message}`);
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
};

Deno.test("hf: a pickle naming os.system is refused before anything runs", () => {
  // PROTO 2, GLOBAL 'os system', BINUNICODE 'echo pwned', TUPLE1, REDUCE, STOP
  const cmd = new TextEncoder().encode("echo pwned");
  const pkl = new Uint8Array([
    0x80,
    2,
    0x63,
    ...new TextEncoder().encode("os\nsystem\n"),
    0x58,
    cmd.length,
    0,
    0,
    0,
    ...cmd,
    0x85,
    0x52,
    0x2e,
  ]);
  const hooks = { allowed: ALLOWED_GLOBALS, persistentLoad: () => null, call: () => null };
  throws(
    () => unpickle(pkl, hooks, "evil.bin"),
    /evil\.bin: refusing to load: the pickle names the global os\.system/,
  );
  // the same through STACK_GLOBAL (protocol 4), and an opcode a state_dict never has (INST)
  const stack = new Uint8Array([
    0x80,
    4,
    0x8c,
    2,
    0x6f,
    0x73,
    0x8c,
    6,
    ...new TextEncoder().encode("system"),
    0x93,
    0x2e,
  ]);
  throws(() => unpickle(stack, hooks, "evil.bin"), /global os\.system/);
  const inst = new Uint8Array([
    0x80,
    2,
    0x28,
    0x69,
    ...new TextEncoder().encode("os\nsystem\n"),
    0x2e,
  ]);
  throws(() => unpickle(inst, hooks, "evil.bin"), /pickle opcode INST \(0x69\) at byte 3/);
});

Deno.test("hf: a pytorch_model.bin whose pickle calls os.system is refused with one line", async () => {
  const dir = await Deno.makeTempDir({ prefix: "based-hf-test-" });
  const pkl = new Uint8Array([
    0x80,
    2,
    0x63,
    ...new TextEncoder().encode("os\nsystem\n"),
    0x29,
    0x52,
    0x2e,
  ]);
  await Deno.writeFile(join(dir, "pytorch_model.bin"), zipStored([["archive/data.pkl", pkl]]));
  await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(CONFIG));
  await refuses(
    dir,
    "refusing to load: the pickle names the global os.system",
    "do not load this file",
  );
});

Deno.test("hf: truncated and corrupt pytorch_model.bin files are refused with one line", async () => {
  for (
    const [cut, what] of [[0.5, "no end-of-central-directory record"], [
      1,
      "CRC-32 mismatch",
    ]] as const
  ) {
    const { dir } = await snapshot("FloatStorage");
    const f = join(dir, "pytorch_model.bin");
    const bytes = await Deno.readFile(f);
    if (cut < 1) await Deno.writeFile(f, bytes.subarray(0, Math.floor(bytes.length * cut)));
    else {
      bytes[2000] ^= 0xff; // inside a storage
      await Deno.writeFile(f, bytes);
    }
    await refuses(dir, "pytorch_model.bin", "not a readable zip archive", what);
  }
});

Deno.test("hf: an lm_head.weight that differs from the embedding (untied) is refused", async () => {
  const { dir } = await snapshot("FloatStorage", {
    transform: (ts) => {
      const head = ts.find(([k]) => k === "model.lm_head.weight")!;
      head[1] = { ...head[1], sameAs: undefined, bytes: head[1].bytes.slice() };
      head[1].bytes[0] ^= 1;
    },
  });
  await refuses(
    dir,
    "'lm_head.weight' differs from 'transformer.embeddings.word_embeddings.weight'",
  );
});

Deno.test("hf: weights that do not fit config.json are refused, naming the tensor", async () => {
  const { dir } = await snapshot("FloatStorage", {
    config: { ...CONFIG, pad_vocab_size_multiple: 16 }, // 50257 -> 50272, the file has 50264 rows
  });
  await refuses(
    dir,
    "tensor 'model.transformer.embeddings.word_embeddings.weight' has shape [50264,16]",
    "needs [50272,16]",
  );
});

Deno.test("hf: config.json keys based does not read are named in one line; others refused", async () => {
  const cfg = { ...CONFIG, flux_capacitor: 1, mixer: { ...CONFIG.mixer, wobble: 2 } };
  const m = mapHfConfig(cfg, "config.json");
  eq(m.unknown, ["flux_capacitor", "mixer.wobble"]);
  eq(m.maxLength, 64);
  const { dir } = await snapshot("FloatStorage", { config: cfg });
  const lines: string[] = [];
  try {
    await findCheckpoint(dir, (s) => lines.push(s));
    eq(lines.length, 1);
    ok(
      /^warning: .*config\.json: keys based does not read \(ignored\): flux_capacitor, mixer\.wobble$/
        .test(lines[0]),
      lines[0],
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  throws(
    () => mapHfConfig({ ...CONFIG, rms_norm: false }, "c.json"),
    /c\.json: rms_norm is false, based needs true/,
  );
  throws(
    () => mapHfConfig({ ...CONFIG, mlp_fc1_bias: undefined }, "c.json"),
    /mlp_fc1_bias is absent/,
  );
  throws(() => mapHfConfig({ ...CONFIG, qkv_proj_bias: true }, "c.json"), /qkv_proj_bias is true/);
  throws(
    () =>
      mapHfConfig({
        ...CONFIG,
        alt_mixer: { ...CONFIG.alt_mixer, feature_map: { _target_: "x.Hedgehog" } },
      }, "c.json"),
    /alt_mixer\.feature_map .* TaylorExp/,
  );
});

// ------------------------------------------------------------------ issue 12: lm_head.weight

Deno.test("checkpoint: loads with and without lm_head.weight; an untied head is refused", async () => {
  const root = await Deno.makeTempDir({ prefix: "based-hf-test-" });
  try {
    const emb = Float32Array.from({ length: 24 }, (_, i) => i / 7);
    const norm = Float32Array.from({ length: 4 }, (_, i) => 1 + i);
    const state = { step: 1 };
    for (const head of [undefined, emb, Float32Array.from(emb, (v, i) => (i === 3 ? v + 1 : v))]) {
      const weights = new Map([[EMB, emb], ["transformer.ln_f.weight", norm]]);
      if (head) weights.set("lm_head.weight", head);
      const dir = await saveCheckpoint(join(root, String(head?.[3] ?? "none")), {
        weights,
        optimizer: new Map(),
        state,
      });
      if (head && head[3] !== emb[3]) {
        await rejects(() => loadCheckpoint(dir), /'lm_head\.weight' differs from/);
        continue;
      }
      const ck = await loadCheckpoint(dir);
      eq([...ck.weights.keys()].sort(), [EMB, "transformer.ln_f.weight"]);
      eq(ck.weights.get(EMB), emb);
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("hf: eval of a snapshot needs a datamodule; export refuses to overwrite a snapshot", async () => {
  const { dir } = await snapshot("FloatStorage");
  try {
    const ck = await findCheckpoint(dir, quiet);
    throws(
      () => evalConfig(ck, []),
      /is a Hugging Face snapshot: it carries no data config \(choose the data, e\.g\. datamodule=/,
    );
    const c = evalConfig(ck, ["datamodule=kjv", "datamodule.max_length=64"]) as Record<
      string,
      Record<string, unknown>
    >;
    eq((c.datamodule as Record<string, unknown>).dataset_name, "kjv");
    eq((c.model.config as Record<string, unknown>).n_embd, 16);
    throws(() => evalConfig(ck, ["datamodule=kjv"]), /datamodule\.max_length 128 is longer than/);
    // a snapshot exports to safetensors (a conversion); into its own folder it refuses, untouched
    const before = await Deno.readFile(join(dir, "config.json"));
    await rejects(() => exportHf(dir, dir, quiet), /config\.json exists \(export into an empty/);
    eq(await Deno.readFile(join(dir, "config.json")), before);
    const out = join(dir, "converted");
    await exportHf(dir, out, quiet, { bin: true });
    sameValues((await findCheckpoint(out, quiet)).weights, ck.weights); // model.safetensors
    await Deno.remove(join(out, "model.safetensors"));
    const bin = await findCheckpoint(out, quiet); // pytorch_model.bin (tied head: one storage)
    sameValues(bin.weights, ck.weights);
    ok(
      (bin as { found?: string }).found!.includes(
        `(pytorch_model.bin, float32, ${DECLS.length} tensors)`,
      ),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("hf: pytorch_model.bin written by export reads back, with and without ZIP64 records", async () => {
  const dir = await Deno.makeTempDir({ prefix: "based-hf-test-" });
  try {
    const a = Float32Array.from({ length: 12 }, (_, i) => i / 3);
    const b = Float32Array.from({ length: 1000 }, (_, i) => -i);
    for (const zip64 of [false, true]) {
      const path = join(dir, `w${zip64}.bin`);
      await writeTorchFile(path, [
        { name: EMB, shape: [3, 4], data: a },
        { name: "b", shape: [10, 10, 10], data: b },
        { name: "lm_head.weight", shape: [3, 4], data: a, tiedTo: EMB },
      ], { zip64 });
      const zip = await ZipArchive.open(path);
      try {
        const sd = await TorchStateDict.read(zip);
        eq([...sd.tensors.keys()], [EMB, "b", "lm_head.weight"]);
        eq(sd.tensors.get("lm_head.weight"), sd.tensors.get(EMB)); // the same object: tied
        eq(sd.tensors.get("b")!.stride, [100, 10, 1]);
        eq(await sd.float32(EMB), a);
        eq(await sd.float32("b"), b);
        eq(await sd.float32("lm_head.weight"), a);
        // every storage's data starts at a multiple of 64 (PyTorch aligns them for mmap)
        for (const e of zip.entries.values()) {
          const h = new DataView((await Deno.readFile(path)).buffer, e.localOffset);
          ok(
            (e.localOffset + 30 + h.getUint16(26, true) + h.getUint16(28, true)) % 64 === 0,
            e.name,
          );
        }
      } finally {
        zip.close();
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const hex = (h: string) => Uint8Array.from(h.match(/../g)!, (b) => parseInt(b, 16));

Deno.test("hf: pickles written by CPython (protocols 2 and 4): an OrderedDict state_dict with _metadata", () => {
  // pickle.dumps(OrderedDict(a=1, b=-70000, c=2**40, f=0.5, n=None, l=[1, (2, 3)]) with
  // ._metadata = OrderedDict({"": {"version": 1}}), protocol=2 and protocol=4, by python3
  const P2 = hex(
    "800263636f6c6c656374696f6e730a4f726465726564446963740a71002952710128580100000061" +
      "71024b0158010000006271034a90eefeff58010000006371048a0600000000000158010000006671" +
      "05473fe000000000000058010000006e71064e58010000006c71075d7108284b014b024b03867109" +
      "65757d710a58090000005f6d65746164617461710b68002952710c5800000000710d7d710e580700" +
      "000076657273696f6e710f4b01737373622e",
  );
  const P4 = hex(
    "80049589000000000000008c0b636f6c6c656374696f6e73948c0b4f726465726564446963749493" +
      "94295294288c0161944b018c0162944a90eefeff8c0163948a060000000000018c016694473fe000" +
      "00000000008c016e944e8c016c945d94284b014b024b03869465757d948c095f6d65746164617461" +
      "9468022952948c00947d948c0776657273696f6e944b01737373622e",
  );
  const hooks = {
    allowed: ALLOWED_GLOBALS,
    persistentLoad: () => null,
    call: (fn: PyGlobal) => (fn.qualified === "collections.OrderedDict" ? new Map() : null),
  };
  for (const bytes of [P2, P4]) {
    const d = unpickle(bytes, hooks, "p") as Map<string, unknown>;
    eq([...d.keys()], ["a", "b", "c", "f", "n", "l"]);
    eq([d.get("a"), d.get("b"), d.get("c"), d.get("f"), d.get("n")], [
      1,
      -70000,
      2 ** 40,
      0.5,
      null,
    ]);
    eq(d.get("l"), [1, new PyTuple([2, 3])]);
  }
});

Deno.test("hf: fixed_decay in config.json loads without decay, as the reference computes it", () => {
  const m = mapHfConfig({ ...CONFIG, fixed_decay: true, decay_proj: true }, "config.json");
  eq(m.modelConfig.fixed_decay, false);
  eq(m.modelConfig.decay_proj, undefined);
  eq(m.notes.length, 1);
  eq(mapHfConfig(CONFIG, "config.json").notes, []);
});
