/**
 * Checkpoint integrity pieces (train/integrity.ts, tensor/hash64.ts): the
 * weights' shapes against the model the config builds, and the checksum.
 * The file-level cases (changed values, an edited header, NaN / Inf, old
 * checkpoints without checksums) are in checkpoint_test.ts.
 */
import { deepStrictEqual as assertEquals, notDeepStrictEqual, throws } from "node:assert/strict";
import { checkShapes } from "../../train/integrity.ts";
import { hash64 } from "../../tensor/hash64.ts";

const PARAMS = [{ name: "a.weight", shape: [4, 8] }, { name: "b.weight", shape: [8] }];
const ok = new Map([["a.weight", [4, 8]], ["b.weight", [8]]]);
const moments = new Map([
  ["exp_avg.a.weight", [4, 8]],
  ["exp_avg_sq.a.weight", [4, 8]],
  ["exp_avg.b.weight", [8]],
  ["exp_avg_sq.b.weight", [8]],
]);

function refuses(fn: () => void, msg: string): void {
  throws(fn, (e: Error) => {
    assertEquals(e.message, msg);
    return true;
  });
}

Deno.test("integrity: shapes are checked against the config's model, naming file and tensor", () => {
  checkShapes("ck", PARAMS, ok, moments);
  refuses(
    () => checkShapes("ck", PARAMS, new Map([["a.weight", [8, 4]], ["b.weight", [8]]])),
    "ck/model.safetensors: tensor 'a.weight' has shape [8, 4], the model of its config needs " +
      "[4, 8] (the checkpoint is from another model, or its header was edited)",
  );
  refuses(
    () => checkShapes("ck", PARAMS, new Map([["a.weight", [4, 8]]])),
    "ck/model.safetensors has no tensor 'b.weight' (the checkpoint is from another model)",
  );
  const m = new Map(moments);
  m.set("exp_avg_sq.b.weight", [1, 8]);
  refuses(
    () => checkShapes("ck", PARAMS, ok, m),
    "ck/optimizer.safetensors: tensor 'exp_avg_sq.b.weight' has shape [1, 8], the model of its " +
      "config needs [8] (the checkpoint is from another model, or its header was edited)",
  );
});

Deno.test("integrity: hash64 sees every byte and any length; finds the first NaN / Inf", () => {
  for (const n of [0, 1, 3, 4, 15, 16, 17, 63, 1000]) {
    const b = new Uint8Array(n).map((_, i) => (i * 7 + 3) & 255);
    const h = hash64(b).hash;
    assertEquals(h.length, 16);
    for (const i of [0, n >> 1, n - 1].filter((i) => i >= 0 && i < n)) {
      const c = b.slice();
      c[i] ^= 0x10;
      notDeepStrictEqual(hash64(c).hash, h, `byte ${i} of ${n}`);
    }
    if (n > 0) notDeepStrictEqual(hash64(b.subarray(0, n - 1)).hash, h, "length");
  }
  const f = new Float32Array(37).fill(1.5);
  assertEquals(hash64(new Uint8Array(f.buffer), true).firstNonFinite, -1);
  f[30] = Infinity;
  f[33] = NaN;
  assertEquals(hash64(new Uint8Array(f.buffer), true).firstNonFinite, 30);
  f[5] = NaN;
  assertEquals(hash64(new Uint8Array(f.buffer), true).firstNonFinite, 5);
  // unaligned input
  const u = new Uint8Array(41);
  u.set(new Uint8Array(f.buffer, 0, 40), 1);
  assertEquals(hash64(u.subarray(1), true).firstNonFinite, 5);
});
