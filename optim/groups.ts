/**
 * Optimizer parameter groups, a pure re-statement of the
 * reference's `train/optim/param_grouping.py::group_parameters_for_optimizer`
 * for the module kinds a Based model has:
 *
 * | kind        | reference module                  | group                                          |
 * | ----------- | --------------------------------- | ---------------------------------------------- |
 * | `embedding` | `nn.Embedding` (blacklisted)      | no_decay                                       |
 * | `bias`      | a `*.bias` of Linear / Conv1d     | no_decay unless `bias_weight_decay`            |
 * | `linear`    | `nn.Linear` weight (whitelisted)  | decay                                          |
 * | `conv`      | `nn.Conv1d` weight (neither list) | decay (falls through to the decay set)         |
 * | `norm`      | Based's RMSNorm (plain Module)    | decay, see below                               |
 *
 * RMSNorm quirk: `normalization_weight_decay: false` blacklists nn.LayerNorm and
 * the batch/group/instance norms, but Based's RMSNorm is a plain `nn.Module`,
 * so the reference decays its weights anyway. `rmsnorm_weight_decay` (ours,
 * default true = faithful) keeps that; set it false to treat RMSNorm like
 * LayerNorm (then `normalization_weight_decay` decides).
 *
 * Without a `train.optimizer_param_grouping` section (null / undefined) the
 * reference passes `model.parameters()` as one group with the optimizer's
 * weight decay: every parameter is "decay".
 */
import { BasedError } from "../errors.ts";

export type ModuleKind = "embedding" | "linear" | "bias" | "norm" | "conv";
export type GroupName = "decay" | "no_decay";

/** The two groups in the reference's order (decay first, then no_decay). */
export const GROUP_ORDER: GroupName[] = ["decay", "no_decay"];

export interface GroupingConfig {
  bias_weight_decay?: boolean;
  normalization_weight_decay?: boolean;
  /** ours: decay RMSNorm weights even when normalization_weight_decay is false (faithful) */
  rmsnorm_weight_decay?: boolean;
}

const KEYS = ["bias_weight_decay", "normalization_weight_decay", "rmsnorm_weight_decay"];

/** Checks a `train.optimizer_param_grouping` section and fills in the defaults. */
export function groupingFromConfig(
  section: Record<string, unknown> | null | undefined,
): Required<GroupingConfig> | null {
  if (section === null || section === undefined) return null;
  if (typeof section !== "object" || Array.isArray(section)) {
    throw new BasedError(
      `train.optimizer_param_grouping must be a mapping, got ${JSON.stringify(section)}`,
    );
  }
  const out: Record<string, boolean> = {};
  for (const [k, v] of Object.entries(section)) {
    if (k.startsWith("_")) continue; // _target_ and friends
    if (!KEYS.includes(k)) {
      throw new BasedError(
        `train.optimizer_param_grouping.${k} is not a known key`,
        `use ${KEYS.join(", ")}`,
      );
    }
    if (v !== null && v !== undefined && typeof v !== "boolean") {
      throw new BasedError(
        `train.optimizer_param_grouping.${k} must be true or false, got ${JSON.stringify(v)}`,
      );
    }
    if (typeof v === "boolean") out[k] = v;
  }
  return {
    bias_weight_decay: out.bias_weight_decay ?? false,
    normalization_weight_decay: out.normalization_weight_decay ?? false,
    rmsnorm_weight_decay: out.rmsnorm_weight_decay ?? true,
  };
}

/**
 * The optimizer group of one parameter. `grouping` is the config section
 * (raw or from groupingFromConfig); null / undefined = no grouping section.
 */
export function paramGroup(
  name: string,
  kind: ModuleKind,
  grouping: GroupingConfig | Record<string, unknown> | null | undefined,
): GroupName {
  const g = groupingFromConfig(grouping as Record<string, unknown> | null | undefined);
  if (!g) return "decay";
  switch (kind) {
    case "embedding":
      return "no_decay";
    case "bias":
      return g.bias_weight_decay ? "decay" : "no_decay";
    case "linear":
    case "conv":
      return "decay";
    case "norm":
      return g.normalization_weight_decay || g.rmsnorm_weight_decay ? "decay" : "no_decay";
    default:
      throw new Error(`paramGroup: unknown module kind '${kind}' of ${name}`);
  }
}

/**
 * The module kind of a Based state-dict name (for loading checkpoints and
 * for lists such as based360m_params.json that carry only names).
 */
export function moduleKindOf(name: string): ModuleKind {
  if (name.endsWith(".bias")) return "bias";
  if (/(^|\.)embeddings\.word_embeddings\.weight$/.test(name) || name === "lm_head.weight") {
    return "embedding";
  }
  if (/(^|\.)(norm\d*|ln_f)\.weight$/.test(name)) return "norm";
  if (/\.conv\.conv\.weight$/.test(name)) return "conv";
  if (name.endsWith(".weight")) return "linear";
  throw new BasedError(`cannot tell the module kind of parameter '${name}'`);
}

/**
 * Parameters split into groups, each group's names sorted (the reference's
 * order: `sorted(list(decay))`, `sorted(list(no_decay))`); groups in
 * GROUP_ORDER. Empty groups are left out.
 */
export function groupParams(
  params: { name: string; kind: ModuleKind }[],
  grouping: GroupingConfig | Record<string, unknown> | null | undefined,
): { group: GroupName; names: string[] }[] {
  const by = new Map<GroupName, string[]>();
  for (const p of params) {
    const g = paramGroup(p.name, p.kind, grouping);
    if (!by.has(g)) by.set(g, []);
    by.get(g)!.push(p.name);
  }
  return GROUP_ORDER.filter((g) => by.has(g)).map((g) => ({
    group: g,
    names: by.get(g)!.sort(byCodePoint),
  }));
}

/** Python's `sorted()` on str: code-point order (not locale order). */
export function byCodePoint(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Reorders ParamStore specs into the reference's optimizer order: by group in
 * `groupOrder`, then by sorted name (stable for anything else).
 */
export function sortSpecsForOptimizer<T extends { name: string; group: string }>(
  specs: T[],
  groupOrder: string[] = GROUP_ORDER,
): T[] {
  const rank = (g: string) => {
    const i = groupOrder.indexOf(g);
    return i < 0 ? groupOrder.length : i;
  };
  return [...specs].sort((a, b) => rank(a.group) - rank(b.group) || byCodePoint(a.name, b.name));
}
