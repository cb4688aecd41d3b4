/** Device-to-device copy bandwidth through a vec4 WGSL copy kernel. */
import { defineKernel, type Engine } from "../tensor/engine.ts";
import { median } from "./report.ts";
import { randomTensor } from "./random.ts";

const COPY4 = defineKernel({
  name: "bench_copy_vec4",
  params: { n4: "u32" },
  bindings: {
    src: { access: "read", type: "array<vec4<f32>>" },
    dst: { access: "rw", type: "array<vec4<f32>>" },
  },
  code: /* wgsl */ `
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  // grid-stride: each thread moves 4 vec4 (64 bytes) per iteration
  let nthreads = nwg.x * nwg.y * 256u;
  var i = (wid.y * nwg.x + wid.x) * 256u + lid;
  loop {
    if (i >= P.n4) { break; }
    dst[i] = src[i];
    i += nthreads;
  }
}`,
});

export interface CopyResult {
  bytes: number;
  ms: number;
  tbps: number;
}

/** Copies `bytes` (default 1 GiB, capped by the adapter's binding size) and reports TB/s (read + write). */
export async function benchCopy(
  e: Engine,
  opts: { bytes?: number; repeats?: number } = {},
): Promise<CopyResult> {
  const bytes = Math.min(opts.bytes ?? 1 << 30, Math.floor(e.maxBinding / 16) * 16);
  const n = bytes / 4;
  const dst = e.empty([n]);
  const src = randomTensor(e, [n], 7); // never time zeros
  const n4 = n / 4;
  const groups = Math.min(Math.ceil(n4 / 256 / 4), 65535 * 4);
  const grid: [number, number, number] = groups > 65535
    ? [65535, Math.ceil(groups / 65535), 1]
    : [groups, 1, 1];
  const reps = opts.repeats ?? 10;
  const inner = 5;
  const times: number[] = [];
  e.run(COPY4, { src, dst }, { n4 }, grid); // warm-up
  await e.sync();
  for (let r = 0; r < reps; r++) {
    const ms = await e.measure(() => {
      for (let i = 0; i < inner; i++) e.run(COPY4, { src, dst }, { n4 }, grid);
    });
    times.push(ms / inner);
  }
  // check the copy
  const a = await e.read(src);
  const b = await e.read(dst);
  for (let i = 0; i < n; i += Math.max(1, Math.floor(n / 997))) {
    if (a[i] !== b[i]) throw new Error(`copy benchmark: mismatch at ${i}`);
  }
  src.dispose();
  dst.dispose();
  const ms = median(times);
  return { bytes, ms, tbps: (2 * bytes) / (ms / 1e3) / 1e12 };
}
