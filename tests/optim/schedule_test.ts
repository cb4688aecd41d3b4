import { deepStrictEqual as assertEquals, throws as assertThrows } from "node:assert/strict";
import {
  constantSchedule,
  type CosineSchedule,
  lrAt,
  scheduleFromConfig,
} from "../../optim/schedule.ts";

// The example run's scheduler (docs/reference.md, Training).
const TRAIN = {
  optimizer: { lr: 8e-4, weight_decay: 0.1 },
  scheduler: {
    _target_: "train.optim.timm_lr_scheduler.TimmCosineLRScheduler",
    t_in_epochs: false,
    t_initial: 19800,
    warmup_lr_init: 1e-6,
    warmup_t: 200,
    lr_min: 8e-5,
    warmup_prefix: true,
  },
};

/** The closed form (docs/reference.md, Training). */
function f(t: number): number {
  if (t < 200) return 1e-6 + (t * (8e-4 - 1e-6)) / 200;
  if (t < 20000) return 8e-5 + 0.5 * (8e-4 - 8e-5) * (1 + Math.cos((Math.PI * (t - 200)) / 19800));
  return 8e-5;
}

// Sample values of the closed form, rounded to the digits shown (docs/reference.md).
const SAMPLES: [number, string][] = [
  [0, "1.0e-6"],
  [1, "4.995e-6"],
  [100, "4.005e-4"],
  [199, "7.96005e-4"],
  [200, "8.0e-4"],
  [1000, "7.97104e-4"],
  [5000, "7.00544e-4"],
  [10100, "4.4e-4"],
  [15000, "1.87469e-4"],
  [19800, "8.01812e-5"],
  [19999, "8.0000005e-5"],
];

/** Half a unit in the last printed digit of a value like "7.97104e-4". */
function halfUlpOfPrinted(s: string): number {
  const [mant, exp] = s.split("e");
  const decimals = (mant.split(".")[1] ?? "").length;
  return 0.5 * 10 ** (-decimals + Number(exp));
}

const STEPS = [0, 1, 100, 199, 200, 201, 1000, 5000, 10000, 10100, 15000, 19800, 19999, 20000];

Deno.test("schedule: timm cosine with warmup matches the closed form and its sample values", () => {
  const s = scheduleFromConfig(TRAIN);
  assertEquals(s.kind, "cosine");
  const samples = new Map(SAMPLES);
  const lines: string[] = [];
  for (const t of STEPS) {
    const got = lrAt(t, s);
    const want = f(t);
    // same float64 formula evaluated in a different order: 1e-12 relative is ~4500 ulp of
    // headroom, far below any difference that matters and far above reordering noise
    if (!(Math.abs(got - want) <= 1e-12 * want)) {
      throw new Error(`lr(${t}) = ${got}, formula ${want}`);
    }
    const printed = samples.get(t);
    if (printed !== undefined) {
      // the samples are rounded: allow half a unit in the last printed digit
      const tol = halfUlpOfPrinted(printed);
      if (!(Math.abs(got - Number(printed)) <= tol * (1 + 1e-9))) {
        throw new Error(`lr(${t}) = ${got}, sample ${printed} (±${tol})`);
      }
    }
    lines.push(
      `  f(${String(t).padStart(5)}) = ${got.toExponential(9)}` +
        (printed ? `   sample ${printed}` : "") + `   (optimizer step ${t + 1})`,
    );
  }
  console.log(lines.join("\n"));
  // the schedule is monotone: rising in the warmup, falling after it, flat at lr_min
  for (let t = 1; t < 200; t++) assertEquals(lrAt(t, s) > lrAt(t - 1, s), true);
  for (let t = 201; t < 20000; t += 37) assertEquals(lrAt(t, s) <= lrAt(t - 1, s), true);
  assertEquals(lrAt(25000, s), 8e-5);
});

Deno.test("schedule: scheduler section + base lr, constant schedule, timm options", () => {
  const a = scheduleFromConfig(TRAIN.scheduler, 8e-4);
  const b = scheduleFromConfig(TRAIN);
  assertEquals(a, b);
  // no scheduler: Lightning keeps the optimizer's lr
  for (const sec of [null, undefined, {}]) {
    assertEquals(scheduleFromConfig(sec, 3e-4), constantSchedule(3e-4));
  }
  assertEquals(scheduleFromConfig({ optimizer: { lr: 2e-4 }, scheduler: null }).kind, "constant");
  assertEquals(lrAt(12345, constantSchedule(2e-4)), 2e-4);
  // without warmup_prefix the cosine spans t_initial from t = 0 and the warmup overrides its start
  const noPrefix = { ...(b as CosineSchedule), warmupPrefix: false };
  assertEquals(lrAt(19800, noPrefix), 8e-5);
  assertEquals(
    Math.abs(lrAt(9900, noPrefix) - (8e-5 + 0.5 * 7.2e-4)) < 1e-18,
    true,
  );
  // two cycles with cycle_decay 0.5: the second restarts at half the peak
  const two = { ...(b as CosineSchedule), cycleLimit: 2, cycleDecay: 0.5 };
  assertEquals(
    Math.abs(lrAt(200 + 19800, two) - (8e-5 + (0.5 * 8e-4 - 8e-5))) < 1e-18,
    true,
  );
  // cycle_mul 2: the second cycle is twice as long (starts at t_initial, length 2·t_initial)
  const mul = { ...(b as CosineSchedule), cycleMul: 2, cycleLimit: 2, warmupT: 0 };
  assertEquals(Math.abs(lrAt(19800 + 19800, mul) - (8e-5 + 0.5 * 7.2e-4)) < 1e-15, true);
  // errors are clear
  assertThrows(() => scheduleFromConfig(TRAIN.scheduler), /base learning rate/);
  assertThrows(
    () => scheduleFromConfig({ _target_: "torch.optim.lr_scheduler.StepLR", step_size: 3 }, 1e-3),
    /unsupported scheduler/,
  );
  assertThrows(
    () => scheduleFromConfig({ ...TRAIN.scheduler, t_in_epochs: true }, 1e-3),
    /t_in_epochs/,
  );
  assertThrows(() => scheduleFromConfig({ ...TRAIN.scheduler, t_initial: "x" }, 1e-3), /number/);
});
