/**
 * The autograd tape. Ops call `record` after they have recorded their forward
 * dispatches; `backward` walks the nodes in reverse, routes gradients by
 * tensor id, sums the gradients of reused tensors, accumulates into leaves'
 * `.grad`, and releases each node's saved tensors as soon as it has run.
 */
import { keep, type Tensor } from "./tensor.ts";
import { accumulate, fill } from "./elementwise.ts";

/** Returned by a backward function for an input whose gradient it already added into `acc[i]`. */
export const ACCUMULATED: unique symbol = Symbol("accumulated");
export type GradOut = Tensor | null | typeof ACCUMULATED;

/**
 * A backward function: gets the gradients of the op's outputs (null where no
 * gradient arrives), the saved tensors, and for each input the leaf gradient
 * buffer it may add into directly (then it returns ACCUMULATED for that
 * input). Returns one gradient (or null) per input.
 */
export type BackwardFn = (
  gradOutputs: (Tensor | null)[],
  saved: Tensor[],
  acc: (Tensor | null)[],
) => GradOut[];

interface Node {
  name: string;
  inputs: Tensor[];
  outputIds: number[];
  saved: Tensor[];
  backward: BackwardFn;
  /** the unpack hook of the saved tensors that were packed (by index), if any */
  unpack?: (((t: Tensor) => Tensor) | undefined)[];
}

/** What the tape keeps of a saved activation, and what the backward reads of it. */
export interface SavedHooks {
  /**
   * a copy to keep instead of `t` (owned by the tape), or null to keep `t` itself; unless
   * `inexact`, only a copy equal to `t` (the op computed with values the copy holds exactly)
   */
  pack(t: Tensor, inexact: boolean): Tensor | null;
  /** the tensor the backward reads for a packed copy (a new one, freed after the backward) */
  unpack(packed: Tensor): Tensor;
}

let gradEnabled = true;
const nodes: Node[] = [];
let hooks: SavedHooks | null = null;

/** Sets the saved-tensor hooks (null: none); returns the previous ones. */
export function setSavedHooks(h: SavedHooks | null): SavedHooks | null {
  const prev = hooks;
  hooks = h;
  return prev;
}

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs `fn` without recording (evaluation, optimizer updates). */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** Number of recorded, not yet consumed, nodes. */
export function tapeLength(): number {
  return nodes.length;
}

/** The recorded nodes' names and saved tensors, oldest first (memory accounting; read only). */
export function tapeSaved(): { name: string; saved: readonly Tensor[] }[] {
  return nodes.map((n) => ({ name: n.name, saved: n.saved }));
}

/**
 * Records an op. No-op (returns false) when grad mode is off or no input
 * requires a gradient. `save` tensors are retained until the node runs;
 * those at the indices `opts.packable` may be kept packed by the saved-tensor
 * hooks (the backward then gets what `unpack` makes of them): exactly, or with
 * `opts.inexact` (a backward whose error bound allows it) rounded.
 */
export function record(
  name: string,
  inputs: Tensor[],
  outputs: Tensor[],
  save: Tensor[],
  backward: BackwardFn,
  opts: { packable?: number[]; inexact?: boolean } = {},
): boolean {
  if (!gradEnabled || !inputs.some((t) => t.requiresGrad)) return false;
  for (const o of outputs) {
    o.requiresGrad = true;
    o.hasNode = true;
  }
  const node: Node = { name, inputs, outputIds: outputs.map((o) => o.id), saved: [], backward };
  node.saved = save.map((t, i) => {
    const packed = hooks && opts.packable?.includes(i) ? hooks.pack(t, !!opts.inexact) : null;
    if (!packed) return t.ref();
    (node.unpack ??= [])[i] = hooks!.unpack;
    return packed;
  });
  nodes.push(node);
  return true;
}

function releaseNode(n: Node): void {
  for (const t of n.saved) t.dispose();
  n.saved = [];
}

/** Drops every recorded node (and what it saved) without running backward. */
export function clearTape(): void {
  for (const n of nodes) releaseNode(n);
  nodes.length = 0;
}

/** A leaf's gradient buffer, created (zeroed) on first use and kept out of scopes. */
export function leafGrad(t: Tensor): Tensor {
  if (!t.grad) {
    const g = t.engine.empty(t.shape, "f32", `gradient of ${t.name ?? t}`);
    fill(g, 0);
    t.grad = keep(g);
  }
  return t.grad;
}

/**
 * Backpropagates from `root` (a scalar loss unless `gradRoot` is given).
 * Leaves (tensors with requiresGrad and no producing op) receive `.grad`,
 * added to what is there. The tape is empty afterwards.
 */
export function backward(root: Tensor, gradRoot?: Tensor): void {
  const eng = root.engine;
  const grads = new Map<number, Tensor>();
  if (gradRoot) grads.set(root.id, gradRoot.ref());
  else {
    const one = eng.empty(root.shape);
    fill(one, 1);
    grads.set(root.id, keep(one));
  }
  try {
    for (let ni = nodes.length - 1; ni >= 0; ni--) {
      const node = nodes[ni];
      const gouts = node.outputIds.map((id) => grads.get(id) ?? null);
      for (const id of node.outputIds) grads.delete(id);
      if (gouts.every((g) => g === null)) {
        releaseNode(node);
        continue;
      }
      const acc = node.inputs.map((t) => (t.requiresGrad && !t.hasNode ? leafGrad(t) : null));
      const un = node.unpack;
      const saved = un ? node.saved.map((t, i) => un[i]?.(t) ?? t) : node.saved;
      const gins = node.backward(gouts, saved, acc);
      if (un) saved.forEach((t, i) => un[i] && t.dispose());
      releaseNode(node);
      const returned = new Set<Tensor>();
      node.inputs.forEach((inp, i) => {
        const g = gins[i];
        if (g === null || g === undefined || g === ACCUMULATED) return;
        returned.add(g);
        if (!inp.requiresGrad) return;
        if (!inp.hasNode) {
          accumulate(leafGrad(inp), g);
          return;
        }
        const prev = grads.get(inp.id);
        if (!prev) grads.set(inp.id, g.ref());
        else if (prev.storage.refs === 1) accumulate(prev, g);
        else {
          const sum = eng.empty(prev.shape);
          fill(sum, 0);
          accumulate(sum, prev);
          accumulate(sum, g);
          prev.dispose();
          grads.set(inp.id, keep(sum));
        }
      });
      // after routing: a backward may return an incoming gradient as its result
      for (const g of returned) g.dispose();
      for (const g of gouts) g?.dispose();
    }
  } finally {
    for (const g of grads.values()) g.dispose();
    clearTape();
  }
}
