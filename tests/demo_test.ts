/**
 * `deno task demo` with its defaults (based-tiny on the bundled corpus, on
 * whatever adapter exists: the CPU in CI) drops the training loss by at least
 * 1.0 nat from step 0. Outputs go to a temporary directory (RESULT_DIR,
 * CHECKPOINT_DIR); the token cache is the checkout's own .cache.
 */
import { REPO } from "./helpers.ts";

Deno.test({
  name: "demo: deno task demo drops the training loss by at least 1 nat",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const tmp = await Deno.makeTempDir({ prefix: "based-demo-" });
    try {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["task", "demo"],
        cwd: REPO,
        env: { RESULT_DIR: `${tmp}/logs`, CHECKPOINT_DIR: `${tmp}/checkpoints`, NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      if (!out.success) throw new Error(`deno task demo failed:\n${text.slice(-3000)}`);
      // the run directory holds metrics.jsonl: first and last training loss
      const runs: string[] = [];
      for await (const d of Deno.readDir(`${tmp}/logs/runs`)) {
        for await (const t of Deno.readDir(`${tmp}/logs/runs/${d.name}`)) {
          runs.push(`${tmp}/logs/runs/${d.name}/${t.name}`);
        }
      }
      if (runs.length !== 1) throw new Error(`expected one run directory, found ${runs.length}`);
      const recs = (await Deno.readTextFile(`${runs[0]}/metrics.jsonl`)).trim().split("\n").map((
        l,
      ) => JSON.parse(l));
      const train = recs.filter((r) => r.split === "train").sort((a, b) => a.step - b.step);
      const first = train[0], last = train[train.length - 1];
      console.log(
        `demo: loss ${first.loss.toFixed(4)} at step ${first.step} -> ${
          last.loss.toFixed(4)
        } at step ${last.step}`,
      );
      if (first.step !== 1) {
        throw new Error(
          `first logged step is ${first.step}, expected 1 (the loss before any update)`,
        );
      }
      if (!(first.loss - last.loss >= 1.0)) {
        throw new Error(
          `the loss fell by ${(first.loss - last.loss).toFixed(3)} nats, less than 1.0`,
        );
      }
      for (const f of ["loss.svg", "perplexity.svg", "config.yaml"]) {
        await Deno.stat(`${runs[0]}/${f}`);
      }
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});
