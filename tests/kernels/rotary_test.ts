import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { rotary, rotaryQK, rotaryTables } from "../../kernels/rotary.ts";
import * as ref from "../../kernels/rotary_ref.ts";
import { backward } from "../../tensor/tape.ts";
import type { Engine } from "../../tensor/engine.ts";
import { readSafetensors, tensorData } from "../../tensor/safetensors.ts";
import {
  assertClose,
  checkFiniteDiff,
  dot,
  type F64,
  fixtureCpuTest,
  FIXTURES,
  fixtureTest,
  fixtureTol,
  gpuTest,
  param,
  readF64,
  Rng,
} from "../helpers.ts";

const REPORT = Deno.env.get("ROTARY_REPORT");
/** f32 unit roundoff. */
const U = 2 ** -24;

/**
 * GPU vs the float64 reference with the same f32 tables: each rotated element is
 * x1·c ∓ x2·s, two products and one add in f32, so |err| ≤ γ_2·(|x1·c| + |x2·s|) ≤
 * 2.001·u·(|x1·c| + |x2·s|) (rigorous, with or without FMA). That magnitude is the
 * reference run on |x|, |cos|, |sin|. Copied elements (v, dims ≥ rotaryDim) are exact.
 */
function within(what: string, got: ArrayLike<number>, want: F64, mag: F64) {
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    const tol = 2.001 * U * mag[i];
    if (!(d <= tol)) {
      throw new Error(
        `${what}: element ${i} got ${got[i]} expected ${want[i]} (|d| ${d.toExponential(3)} > ` +
          `${tol.toExponential(3)})`,
      );
    }
    if (tol) worst = Math.max(worst, d / tol);
  }
  if (REPORT) console.log(what, "error / tolerance", worst.toFixed(4));
}

type Shape = { B: number; L: number; P: number; H: number; Dh: number };

/**
 * Reference output and its error magnitude |x1·c| + |x2·s| (|x2·c| + |x1·s| in the second
 * half): rotating |x| by |cos| and ±|sin| gives that sum in one half and the difference in
 * the other, so it is the elementwise larger of the two.
 */
function reference(x: F64, s: Shape, nrot: number, rd: number, offset: number, inverse = false) {
  const { cos, sin } = rotaryTables(s.L, rd, 10000, offset);
  const y = ref.rotary(x, s, nrot, rd, cos, sin, inverse);
  const ax = x.map(Math.abs), ac = cos.map(Math.abs), as = sin.map(Math.abs);
  const plus = ref.rotary(ax, s, nrot, rd, ac, as);
  const minus = ref.rotary(ax, s, nrot, rd, ac, as, true);
  return { y, mag: plus.map((v, i) => Math.max(v, minus[i])) };
}

Deno.test("rotary ref: gradient (rotation by −θ) matches finite differences", () => {
  const rng = new Rng(1);
  const s = { B: 2, L: 3, P: 3, H: 2, Dh: 6 };
  const n = 2 * 3 * 3 * 2 * 6;
  const x = rng.randn(n), gy = rng.randn(n);
  for (const rd of [6, 4]) {
    const { cos, sin } = rotaryTables(s.L, rd, 10000, 3);
    checkFiniteDiff(
      `rotary rd=${rd}`,
      () => dot(ref.rotary(x, s, 2, rd, cos, sin), gy),
      x,
      ref.rotary(gy, s, 2, rd, cos, sin, true),
      { samples: n },
    );
  }
});

fixtureCpuTest("rotary: tables match flash-attn's (the fixture's swa.cos / swa.sin)", async () => {
  const f = await readSafetensors(`${FIXTURES}/sliding_window.safetensors`);
  const [L, half] = f.tensors.get("swa.cos")!.shape;
  const { cos, sin } = rotaryTables(L, 2 * half, 10000, 0);
  // inv_freq and t·inv_freq reproduce torch's f32 values bit for bit; torch's vectorised f32
  // cos/sin are within 1 ulp of the correctly rounded value we take (|v| ≤ 1: 1 ulp ≤ 2^-24),
  // 2 ulp allowed for the rounding of Math.cos itself (measured: max 2^-24, on ~8% of entries)
  const tol = { atol: 2 * U, rtol: 0 };
  assertClose("cos", cos, tensorData(f, "swa.cos"), tol);
  assertClose("sin", sin, tensorData(f, "swa.sin"), tol);
  // positions from an offset are rows of the longer table, bit for bit
  const part = rotaryTables(5, 2 * half, 10000, 100);
  const full = rotaryTables(105, 2 * half, 10000, 0);
  assertEquals(part.cos, full.cos.slice(100 * half));
  assertEquals(part.sin, full.sin.slice(100 * half));
});

async function qkvCase(e: Engine, rng: Rng, B: number, L: number, H: number, Dh: number, opts: {
  rotaryDim?: number;
  offset?: number;
}) {
  const rd = opts.rotaryDim ?? Dh, off = opts.offset ?? 0;
  const tag = `qkv B=${B} L=${L} H=${H} Dh=${Dh} rd=${rd} offset=${off}`;
  const s = { B, L, P: 3, H, Dh };
  const n = B * L * 3 * H * Dh;
  const x = rng.randn(n), gy = rng.randn(n);
  const tx = param(e, x, [B, L, 3, H, Dh]);
  const y = rotaryQK(tx, opts);
  const f = reference(x, s, 2, rd, off);
  within(`${tag} forward`, await readF64(y), f.y, f.mag);
  const tg = e.tensor(Float32Array.from(gy), [B, L, 3, H, Dh]);
  backward(y, tg);
  const b = reference(gy, s, 2, rd, off, true);
  within(`${tag} backward`, await readF64(tx.grad!), b.y, b.mag);
  for (const t of [tx, tx.grad!, y, tg]) t.dispose();
}

gpuTest(
  "rotaryQK: forward and backward vs reference (Dh 32 / 64, odd L, partial dim)",
  async (e) => {
    const rng = new Rng(2);
    await qkvCase(e, rng, 2, 37, 3, 32, {});
    await qkvCase(e, rng, 1, 33, 2, 64, {});
    await qkvCase(e, rng, 2, 5, 2, 32, { rotaryDim: 16, offset: 7 });
    await qkvCase(e, rng, 1, 3, 1, 64, { offset: 2047 }); // positions past a fresh table
  },
);

gpuTest("rotary: single tensor, and an offset run equals the tail of the full run", async (e) => {
  const rng = new Rng(3);
  const B = 2, L = 41, H = 3, Dh = 64;
  const n = B * L * H * Dh;
  const x = rng.randn(n), gy = rng.randn(n);
  const tx = param(e, x, [B, L, H, Dh]);
  const y = rotary(tx);
  const s = { B, L, P: 1, H, Dh };
  const f = reference(x, s, 1, Dh, 0);
  within("rotary forward", await readF64(y), f.y, f.mag);
  backward(y, e.tensor(Float32Array.from(gy), [B, L, H, Dh]));
  const b = reference(gy, s, 1, Dh, 0, true);
  within("rotary backward", await readF64(tx.grad!), b.y, b.mag);
  // generation: the last token alone at offset L−1 is bit-identical to row L−1 of the full run
  const full = await e.read(y);
  const last = new Float32Array(H * Dh);
  for (let h = 0; h < H * Dh; h++) last[h] = x[((B - 1) * L + L - 1) * H * Dh + h];
  const tl = e.tensor(last, [1, 1, H, Dh]);
  const yl = rotary(tl, { offset: L - 1 });
  assertEquals(await e.read(yl), full.slice(((B - 1) * L + L - 1) * H * Dh, B * L * H * Dh));
  for (const t of [tx, tx.grad!, y, tl, yl]) t.dispose();
});

fixtureTest("rotaryQK: the sliding-window fixture (swa.q_rot, swa.k_rot)", async (e) => {
  const f = await readSafetensors(`${FIXTURES}/sliding_window.safetensors`);
  const shape = f.tensors.get("swa.qkv")!.shape;
  const [B, L, , H, Dh] = shape;
  const qkv = tensorData(f, "swa.qkv") as Float32Array;
  const tq = e.tensor(qkv, shape);
  const y = await e.read(rotaryQK(tq));
  const part = (p: number) => {
    const out = new Float64Array(B * L * H * Dh);
    for (let bl = 0; bl < B * L; bl++) {
      for (let j = 0; j < H * Dh; j++) out[bl * H * Dh + j] = y[(bl * 3 + p) * H * Dh + j];
    }
    return out;
  };
  for (const [p, name] of [[0, "q_rot"], [1, "k_rot"]] as const) {
    // the manifest's tolerance (fixture generator's bound from an fp32 re-run)
    assertClose(
      name,
      part(p),
      Float64Array.from(tensorData(f, `swa.${name}`)),
      fixtureTol(`swa.${name}`),
    );
  }
  // v passes through unchanged
  const v = new Float64Array(B * L * H * Dh);
  for (let bl = 0; bl < B * L; bl++) {
    for (let j = 0; j < H * Dh; j++) v[bl * H * Dh + j] = qkv[(bl * 3 + 2) * H * Dh + j];
  }
  assertEquals(part(2), v);
  tq.dispose();
});
