/**
 * Progress output: a cli-progress bar (step, loss, lr, tokens/s, ETA) on a
 * terminal, plain lines otherwise, plus an llm.c-style line per logging step.
 */
import cliProgress from "cli-progress";

export interface StepInfo {
  step: number;
  total: number;
  loss: number;
  lr: number;
  gradNorm: number;
  ms: number;
  tokPerSec: number;
}

function fmtEta(s: number): string {
  if (!Number.isFinite(s) || s < 0) return "?";
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
  return h
    ? `${h}h${String(m).padStart(2, "0")}m`
    : m
    ? `${m}m${String(sec).padStart(2, "0")}s`
    : `${sec}s`;
}

export function stepLine(i: StepInfo): string {
  const w = String(i.total).length;
  return `step ${String(i.step).padStart(w)}/${i.total} | loss ${i.loss.toFixed(6)} | lr ${
    i.lr.toExponential(2)
  } | ` +
    `norm ${i.gradNorm.toFixed(4)} | ${i.ms.toFixed(1)} ms | ${
      Math.round(i.tokPerSec).toLocaleString("en-US")
    } tok/s`;
}

export class Progress {
  #bar: cliProgress.SingleBar | null = null;
  #t0 = performance.now();
  #s0 = 0;
  readonly tty: boolean;

  constructor(readonly total: number, start: number, opts: { quiet?: boolean } = {}) {
    this.tty = Deno.stdout.isTerminal() && !opts.quiet;
    this.#s0 = start;
    if (this.tty) {
      this.#bar = new cliProgress.SingleBar({
        format: "step {value}/{total} |{bar}| loss {loss} | lr {lr} | {tps} tok/s | ETA {eta2}",
        hideCursor: true,
        noTTYOutput: true,
        clearOnComplete: false,
        etaBuffer: 50,
      }, cliProgress.Presets.shades_classic);
      this.#bar.start(total, start, { loss: "-", lr: "-", tps: "-", eta2: "?" });
    }
  }

  update(i: StepInfo): void {
    if (!this.#bar) return;
    const el = (performance.now() - this.#t0) / 1000;
    const eta = ((this.total - i.step) * el) / Math.max(1, i.step - this.#s0);
    this.#bar.update(i.step, {
      loss: i.loss.toFixed(4),
      lr: i.lr.toExponential(2),
      tps: Math.round(i.tokPerSec).toLocaleString("en-US"),
      eta2: fmtEta(eta),
    });
  }

  /** Prints a line above the bar (or plainly when not a terminal). */
  log(line: string): void {
    if (this.#bar) {
      // move to a fresh line, print, redraw the bar
      Deno.stdout.writeSync(new TextEncoder().encode("\r\x1b[K" + line + "\n"));
      this.#bar.render();
    } else console.log(line);
  }

  stop(): void {
    this.#bar?.stop();
    this.#bar = null;
  }
}
