/** The optimizer: AdamW, global-norm clipping, LR schedules and parameter groups. */
export { AdamW, type AdamWHyper, type AdamWOptions, type AdamWState } from "./adamw.ts";
export { type ClipReadout, CTL, GradClip } from "./clip.ts";
export {
  type ConstantSchedule,
  constantSchedule,
  type CosineSchedule,
  lrAt,
  type Schedule,
  scheduleFromConfig,
} from "./schedule.ts";
export {
  GROUP_ORDER,
  type GroupingConfig,
  groupingFromConfig,
  type GroupName,
  groupParams,
  type ModuleKind,
  moduleKindOf,
  paramGroup,
  sortSpecsForOptimizer,
} from "./groups.ts";
