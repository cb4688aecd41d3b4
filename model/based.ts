/**
 * The Based language model (the reference's `based/models/gpt.py::GPTLMHeadModel`;
 * docs/reference.md, Model): token embedding, a pre-norm stack of
 * blocks whose mixer is BaseConv, LinearAttention (Taylor feature map) or
 * SlidingAttention (rotary, windowed softmax) by layer, a SwiGLU MLP in every
 * block, a final RMSNorm and the LM head tied to the embedding.
 */
import type { Engine } from "../tensor/engine.ts";
import { ParamStore } from "../tensor/params.ts";
import { type Tensor, tidy } from "../tensor/tensor.ts";
import type { BasedConfig } from "./config.ts";
import { declareParams, initValues, type ModuleKind, type ParamDecl } from "./params.ts";
import { addRmsNorm } from "../kernels/rmsnorm.ts";
import { reshape } from "../kernels/layout.ts";
import { embedding } from "../kernels/embedding.ts";
import { mixerForward, mlpForward } from "./mixers.ts";
import { sortSpecsForOptimizer } from "../optim/groups.ts";
import { lmHeadLogits, lmHeadLoss } from "./lm_head.ts";

export const EMBEDDING = "transformer.embeddings.word_embeddings.weight";

/** Maps a parameter to its optimizer group. */
export type GroupFn = (name: string, kind: ModuleKind) => string;

export interface Batch {
  /** i32 [B, L] token ids on the GPU */
  ids: Tensor;
  /** the same ids on the host (embedding backward groups positions by id) */
  hostIds: Int32Array;
  /** i32 [B, L] targets (-100 = ignored) */
  labels?: Tensor;
  B: number;
  L: number;
}

export class BasedLM {
  readonly decls: ParamDecl[];
  /** optional activation trace (name -> tensor handle), for parity checks */
  trace: Map<string, Tensor> | null = null;

  constructor(
    readonly engine: Engine,
    readonly config: BasedConfig,
    readonly store: ParamStore,
  ) {
    this.decls = declareParams(config);
  }

  /**
   * Declares, initialises (seeded, as `based/models/gpt.py::_init_weights`) and uploads all
   * parameters.
   */
  static create(
    engine: Engine,
    config: BasedConfig,
    opts: { seed: number; groupOf: GroupFn; groupOrder?: string[] },
  ): BasedLM {
    const decls = declareParams(config);
    const order = opts.groupOrder ?? ["decay", "no_decay"];
    // the reference's optimizer order: by group, then by sorted name
    const specs = sortSpecsForOptimizer(
      decls.map((d) => ({
        name: d.name,
        shape: d.shape,
        group: opts.groupOf(d.name, d.kind),
        init: initValues(d, opts.seed),
      })),
      order,
    );
    const store = new ParamStore(engine, specs, order);
    return new BasedLM(engine, config, store);
  }

  p(name: string): Tensor {
    return this.store.get(name);
  }

  #trace(name: string, t: Tensor): void {
    if (this.trace) {
      this.trace.get(name)?.dispose();
      this.trace.set(name, t.ref());
    }
  }

  /** Final hidden states after ln_f: [B·L, D]. */
  hidden(batch: Batch): Tensor {
    const c = this.config;
    const { B, L } = batch;
    let h = embedding(this.p(EMBEDDING), batch.ids, batch.hostIds); // [B, L, D]
    this.#trace("embeddings", h);
    let residual: Tensor | null = null;
    for (let i = 0; i < c.nLayer; i++) {
      const pre = `transformer.layers.${i}`;
      // one scope per block: intermediates that no backward saved are freed
      // here, not at the end of the step (the tape holds its own references)
      const [hNext, rNext] = tidy(() => {
        const [r, x] = addRmsNorm(h, residual, this.p(`${pre}.norm1.weight`), c.normEps);
        this.#trace(`layers.${i}.mixer_in`, x);
        const a = mixerForward(c.layers[i], (n) => this.p(`${pre}.mixer.${n}`), x, B, L, c);
        this.#trace(`layers.${i}.mixer_out`, a);
        const [r2, x2] = addRmsNorm(a, r, this.p(`${pre}.norm2.weight`), c.normEps);
        this.#trace(`layers.${i}.mlp_in`, x2);
        const out = mlpForward((n) => this.p(`${pre}.mlp.${n}`), x2, c.mlpHidden);
        this.#trace(`layers.${i}.mlp_out`, out);
        return [out, r2];
      });
      h.dispose();
      residual?.dispose();
      h = hNext;
      residual = rNext;
    }
    const y = tidy(() => {
      const [, y] = addRmsNorm(h, residual, this.p("transformer.ln_f.weight"), c.normEps);
      this.#trace("ln_f_out", y);
      return reshape(y, [B * L, c.nEmbd]);
    });
    h.dispose();
    residual?.dispose();
    return y;
  }

  /**
   * Mean token cross-entropy (`train/tasks/seq.py::SequenceLMModel.step`). Training: see lmHeadLoss
   * for gradScale.
   */
  loss(batch: Batch, opts: { gradScale?: number } = {}): Tensor {
    if (!batch.labels) throw new Error("BasedLM.loss: batch has no labels");
    const y = this.hidden(batch);
    const labels = batch.labels.view([batch.B * batch.L]);
    const loss = lmHeadLoss(y, this.p(EMBEDDING), labels, opts);
    labels.dispose();
    return loss;
  }

  /** Logits [B, L, V] (small batches: the whole tensor is materialised). */
  logits(batch: Batch): Tensor {
    const y = this.hidden(batch);
    const out = lmHeadLogits(y, this.p(EMBEDDING));
    const v = out.view([batch.B, batch.L, this.config.vocabPadded]);
    out.dispose();
    return v;
  }

  clearTrace(): void {
    if (this.trace) { for (const t of this.trace.values()) t.dispose(); }
    this.trace?.clear();
  }
}
