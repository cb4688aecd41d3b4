/**
 * The pytorch_model.bin readers on damaged input: random byte flips and cuts
 * of a valid file (zip structure and pickle) either load or fail with one
 * BasedError line, never another exception, a hang, or a huge allocation.
 */
import { ok } from "node:assert/strict";
import { join } from "node:path";
import { BasedError } from "../../errors.ts";
import { ALLOWED_GLOBALS, TorchStateDict } from "../../hf/torch_load.ts";
import { unpickle } from "../../hf/unpickle.ts";
import { ZipArchive } from "../../hf/zip.ts";
import { Random } from "../../tensor/random.ts";
import { torchSave, type TorchTensor } from "./torch_writer.ts";

function sample(): Uint8Array {
  const f = Float32Array.from({ length: 24 }, (_, i) => i - 3.5);
  const t = (shape: number[]): TorchTensor => ({
    storage: "FloatStorage",
    bytes: new Uint8Array(f.buffer.slice(0, 4 * shape.reduce((a, b) => a * b, 1))),
    shape,
  });
  return torchSave([
    ["model.a.weight", t([4, 6])],
    ["model.b.weight", t([3])],
    ["model.lm_head.weight", { ...t([4, 6]), sameAs: "model.a.weight" }],
    ["train_metrics.num-tokens.count", {
      storage: "LongStorage",
      bytes: new Uint8Array(8),
      shape: [],
    }],
  ], "pytorch_model");
}

async function readAll(path: string): Promise<void> {
  const zip = await ZipArchive.open(path);
  try {
    const sd = await TorchStateDict.read(zip);
    for (const [k, t] of sd.tensors) if (t.storage.dtype === "F32") await sd.float32(k);
  } finally {
    zip.close();
  }
}

const expectOneLine = (e: unknown, what: string) => {
  ok(e instanceof BasedError, `${what}: ${e instanceof Error ? e.stack : e}`);
  ok(!(e as Error).message.includes("\n"), (e as Error).message);
};

Deno.test("hf fuzz: 400 damaged pytorch_model.bin files load or fail with one BasedError line", async () => {
  const good = sample();
  const dir = await Deno.makeTempDir({ prefix: "based-hf-fuzz-" });
  const rng = new Random(11);
  let refused = 0;
  try {
    const path = join(dir, "pytorch_model.bin");
    await Deno.writeFile(path, good);
    await readAll(path); // the undamaged file loads
    for (let n = 0; n < 400; n++) {
      const bad = good.slice();
      let cut = bad.length;
      if (n % 4 === 0) cut = Math.floor(rng.next() * bad.length);
      else {
        for (let k = 1 + Math.floor(rng.next() * 4); k > 0; k--) {
          bad[Math.floor(rng.next() * bad.length)] = Math.floor(rng.next() * 256);
        }
      }
      await Deno.writeFile(path, bad.subarray(0, cut));
      try {
        await readAll(path);
      } catch (e) {
        expectOneLine(e, `case ${n}`);
        refused++;
      }
    }
    ok(refused > 200, `only ${refused} of 400 refused`); // most damage is detected (CRC-32)
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("hf fuzz: 3000 mutated pickles unpickle or fail with one BasedError line", () => {
  // the data.pkl of the sample (stored uncompressed: find it between the local header and its end)
  const good = sample();
  const start = good.indexOf(0x80); // PROTO
  const end = good.indexOf(0x2e, good.indexOf(0x75, start)) + 1; // SETITEMS ... STOP
  const pkl = good.slice(start, end);
  const hooks = {
    allowed: ALLOWED_GLOBALS,
    persistentLoad: (pid: unknown) => pid,
    call: () => new Map(),
  };
  const rng = new Random(5);
  let refused = 0;
  for (let n = 0; n < 3000; n++) {
    const bad = pkl.slice();
    for (let k = 1 + Math.floor(rng.next() * 3); k > 0; k--) {
      bad[Math.floor(rng.next() * bad.length)] = Math.floor(rng.next() * 256);
    }
    try {
      unpickle(
        bad.subarray(0, n % 5 === 0 ? Math.floor(rng.next() * bad.length) : bad.length),
        hooks,
        "f",
      );
    } catch (e) {
      expectOneLine(e, `case ${n}`);
      refused++;
    }
  }
  ok(refused > 1000, `only ${refused} of 3000 refused`);
});
