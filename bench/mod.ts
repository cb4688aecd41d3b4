/** `based bench`: runs the benchmarks and prints measured vs limit. */
import { initEngine } from "../tensor/engine.ts";
import { benchCopy } from "./copy.ts";
import { type BenchRow, formatRows, H200 } from "./report.ts";

export async function runBench(opts: { only?: string; quick?: boolean; out?: string }): Promise<void> {
  const e = await initEngine();
  const only = opts.only ? new Set(opts.only.split(",")) : null;
  const want = (n: string) => !only || only.has(n);
  const quick = opts.quick ?? e.info.isFallback;
  const rows: BenchRow[] = [];
  const results: Record<string, unknown> = {
    adapter: e.info.name,
    backend: e.info.backend,
    date: new Date().toISOString(),
  };
  console.log(`adapter: ${e.info.name} (${e.info.backend})${quick ? " [quick sizes]" : ""}`);
  if (want("copy")) {
    const r = await benchCopy(e, { bytes: quick ? 64 << 20 : 1 << 30 });
    results.copy = r;
    rows.push({
      name: `copy ${(r.bytes / 2 ** 30).toFixed(2)} GiB`,
      value: r.tbps,
      unit: "TB/s",
      limit: H200.copyTBps,
      limitName: "H200 copy",
    });
  }
  console.log(formatRows(rows));
  if (opts.out) {
    await Deno.mkdir(opts.out, { recursive: true });
    await Deno.writeTextFile(`${opts.out}/bench.json`, JSON.stringify(results, null, 2));
  }
}
