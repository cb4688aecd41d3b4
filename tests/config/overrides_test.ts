/** Command-line overrides: grammar, struct mode, type checks, errors. */
import { deepStrictEqual as eq } from "node:assert/strict";
import { applyOverrides, parseOverride } from "../../config/mod.ts";
import { at, compose, composeFrom, throwsBased } from "./helpers.ts";

const X = "experiment=example/based-360m";

Deno.test("config/overrides: value grammar", () => {
  const v = (s: string) => parseOverride(`k=${s}`).value;
  eq(v("8"), 8);
  eq(v("-3"), -3);
  eq(v("1_000"), 1000);
  eq(v("1e-3"), 1e-3);
  eq(v("3.0e-4"), 3e-4);
  eq(v(".5"), 0.5);
  eq(v("inf"), Infinity);
  eq(v("true"), true);
  eq(v("False"), false);
  eq(v("null"), null);
  eq(v("NULL"), null);
  eq(v(""), "");
  eq(v("abc"), "abc");
  eq(v("007"), "007");
  eq(v("  spaced out  "), "spaced out");
  eq(v("/tmp/a-b_c.d"), "/tmp/a-b_c.d");
  eq(v("'quoted, with comma'"), "quoted, with comma");
  eq(v('"123"'), "123");
  eq(v("'it\\'s'"), "it's");
  eq(v("[1,2, 3]"), [1, 2, 3]);
  eq(v("[]"), []);
  eq(v("[a, 'b c', [1, null]]"), ["a", "b c", [1, null]]);
  eq(v("{a: 1, b: [x, y], 'c d': {e: true}}"), { a: 1, b: ["x", "y"], "c d": { e: true } });
  eq(v("${a.b}"), "${a.b}");
  eq(v("x${eval:'1, 2'}y"), "x${eval:'1, 2'}y");
  eq(v("str(123)"), "123");
  eq(v("int(3.7)"), 3);
  eq(v("float(2)"), 2);
  eq(v("bool(1)"), true);
  eq(parseOverride("+a.b=1"), { input: "+a.b=1", kind: "add", key: "a.b", value: 1, raw: "1" });
  eq(parseOverride("++a=x").kind, "force");
  eq(parseOverride("~a.b"), { input: "~a.b", kind: "delete", key: "a.b" });
  eq(parseOverride("group@pkg=opt").package, "pkg");
});

Deno.test("config/overrides: malformed input is one BasedError line", () => {
  throwsBased(() => parseOverride("trainer.devices"), /missing '='/);
  throwsBased(() => parseOverride("=3"), /empty key/);
  throwsBased(() => parseOverride("a b=3"), /invalid key/);
  throwsBased(() => parseOverride("a..b=3"), /invalid key/);
  throwsBased(() => parseOverride("a=1,2"), /sweep/);
  throwsBased(() => parseOverride("a=[1,2"), /missing '\]'/);
  throwsBased(() => parseOverride("a={x 1}"), /expected ':'/);
  throwsBased(() => parseOverride("a='open"), /missing closing '/);
  throwsBased(() => parseOverride("a=${x"), /unterminated/);
  throwsBased(() => parseOverride("a=choice(1,2)"), /multirun/);
  throwsBased(() => parseOverride("a=int(x)"), /cannot cast 'x' to int/);
});

Deno.test("config/overrides: key=value sets, struct mode refuses unknown keys", () => {
  const cfg = compose([X, "trainer.max_steps=100", "datamodule.batch_size=4", "name=run1"]);
  eq(at(cfg, "trainer.max_steps"), 100);
  eq(at(cfg, "datamodule.batch_size"), 4);
  eq(at(cfg, "trainer.accumulate_grad_batches"), 8); // 256 / (8 devices * 4)
  eq(at(cfg, "callbacks.model_checkpoint.dirpath"), "checkpoints/run1");
  eq(at(cfg, "logger.wandb.name"), "run1");
  const m = throwsBased(() => compose([X, "trainer.max_step=100"]), /unknown config key/);
  eq(m, "unknown config key 'trainer.max_step' (did you mean 'trainer.max_steps'?)");
  throwsBased(
    () => compose([X, "model.config.alt_mixer.featuer_dim=8"]),
    /unknown config key 'model.config.alt_mixer.featuer_dim' \(did you mean 'model.config.alt_mixer.feature_dim'\?\)/,
  );
  throwsBased(
    () => compose([X, "completely_new=1"]),
    /unknown config key 'completely_new' \(to add a new key use \+completely_new=1\)/,
  );
});

Deno.test("config/overrides: the replaced value's type decides", () => {
  const m = throwsBased(() => compose([X, "trainer.max_steps=abc"]), /expects an int/);
  eq(m, "config key 'trainer.max_steps' expects an int, got 'abc' (from 'trainer.max_steps=abc')");
  throwsBased(
    () => compose([X, "train.optimizer.lr=fast"]),
    /'train.optimizer.lr' expects a float, got 'fast'/,
  );
  throwsBased(() => compose([X, "resume=yes"]), /'resume' expects a bool, got 'yes'/);
  throwsBased(
    () => compose([X, "train.optimizer.betas=0.9"]),
    /'train.optimizer.betas' expects a list/,
  );
  throwsBased(() => compose([X, "model.config=3"]), /'model.config' expects a mapping/);
  throwsBased(() => compose([X, "name=[a]"]), /'name' expects a string/);
  // an interpolated value is typed by what it resolves to
  throwsBased(() => compose([X, "trainer.accumulate_grad_batches=x"]), /expects an int/);
  // numbers interchange; strings take the text; null and interpolations always pass
  const cfg = compose([
    X,
    "trainer.gradient_clip_val=0.5",
    "train.optimizer.lr=1e-3",
    "trainer.max_steps=2e4",
    "trainer.precision=32",
    "name=2024",
    "trainer.strategy=ddp",
    "seed=null",
    "trainer.val_check_interval=${trainer.max_steps}",
    "resume=False",
  ]);
  eq(at(cfg, "trainer.gradient_clip_val"), 0.5);
  eq(at(cfg, "train.optimizer.lr"), 1e-3);
  eq(at(cfg, "trainer.max_steps"), 20000);
  eq(at(cfg, "trainer.precision"), "32");
  eq(at(cfg, "name"), "2024");
  eq(at(cfg, "trainer.strategy"), "ddp");
  eq(at(cfg, "seed"), null);
  eq(at(cfg, "trainer.val_check_interval"), 20000);
  eq(at(cfg, "resume"), false);
});

Deno.test("config/overrides: mappings merge in struct mode; lists replace; list items by index", () => {
  const cfg = compose([
    X,
    "model.config.alt_mixer={feature_dim: 8, num_heads: 4}",
    "model.config.alt_mixer_layers=[1, 2]",
    "model.config.alt_mixer_2_layers.0=3",
  ]);
  eq(at(cfg, "model.config.alt_mixer.feature_dim"), 8);
  eq(at(cfg, "model.config.alt_mixer.feature_map.input_dim"), 8);
  eq(at(cfg, "model.config.alt_mixer.eps"), 1e-12);
  eq(at(cfg, "model.config.alt_mixer_layers"), [1, 2]);
  eq(at(cfg, "model.config.alt_mixer_2_layers"), [3, 7, 12, 17, 22]);
  throwsBased(
    () => compose([X, "model.config.alt_mixer={feature_dims: 8}"]),
    /unknown config key 'model.config.alt_mixer.feature_dims'/,
  );
  throwsBased(() => compose([X, "model.config.alt_mixer_layers.9=3"]), /unknown config key/);
});

Deno.test("config/overrides: +key, ++key, ~key", () => {
  const cfg = compose([
    X,
    "+trainer.new_key=3",
    "++trainer.max_steps=7",
    "++brand.new.deep=x",
    "~callbacks.gpu_affinity",
  ]);
  eq(at(cfg, "trainer.new_key"), 3);
  eq(at(cfg, "trainer.max_steps"), 7);
  eq(at(cfg, "brand.new.deep"), "x");
  eq(at(cfg, "callbacks.gpu_affinity"), undefined);
  eq(at(compose([X, "+callbacks.early_stopping={patience: 3}"]), "callbacks.early_stopping"), {
    patience: 3,
  });
  eq(at(compose([X, "~trainer.max_steps=20000"]), "trainer.max_steps"), undefined);
  eq(at(compose([X, "~datamodule.ddp=true"]), "datamodule.ddp"), undefined);
  throwsBased(
    () => compose([X, "+trainer.max_steps=3"]),
    /cannot add 'trainer.max_steps': it exists already/,
  );
  throwsBased(() => compose([X, "~trainer.nope"]), /cannot delete 'trainer.nope': no such key/);
  throwsBased(() => compose([X, "~trainer.max_steps=5"]), /its value is 20000, not 5/);
  throwsBased(() => compose([X, "+name.sub=1"]), /'name' is a string, not a mapping/);
  throwsBased(() => compose([X, "+train.optimizer.betas.5.x=1"]), /no such list item/);
  throwsBased(() => compose([X, "++train.optimizer.betas.x=1"]), /list index x is out of range/);
  eq(at(compose([X, "++train.optimizer.betas.1=0.99"]), "train.optimizer.betas"), [0.9, 0.99]);
});

Deno.test("config/overrides: group choices and their errors", () => {
  eq(at(compose([X, "datamodule=kjv"]), "datamodule.dataset_name"), "kjv");
  eq(at(compose([X, "logger=null"]), "logger"), undefined);
  eq(at(compose([X, "model/gpt2model=gpt2-small"]), "model.config.n_head"), 16); // the experiment's own keys win
  const m = throwsBased(() => compose(["experiment=example/based-999m"]), /unknown option/);
  eq(
    m.startsWith(
      "unknown option 'example/based-999m' for config group 'experiment' (available: example/based-360m,",
    ),
    true,
    m,
  );
  throwsBased(
    () => compose([X, "datamodule=wikitext"]),
    /unknown option 'wikitext' for config group 'datamodule' \(available: wikitext103,/,
  );
  throwsBased(
    () => compose(["experiment=example/based-360m", "optimizer=sgd"]),
    /available: adamw,/,
  );
  throwsBased(
    () => compose(["+experiment=example/based-360m"]),
    /appears more than once|multiple values/,
  );
  throwsBased(() => compose([X, "datamodule@foo=kjv"]), /cannot choose 'datamodule@foo=kjv'/);
  eq(
    throwsBased(() => compose(["experimnt=example/based-360m"]), /unknown config key/),
    "unknown config key 'experimnt' (did you mean the config group 'experiment'?)",
  );
});

Deno.test("config/overrides: applyOverrides on a resolved (checkpoint) config", () => {
  const cfg = compose([X]);
  const c = applyOverrides(cfg, [
    "datamodule.batch_size_eval=8",
    "+extra=${datamodule.batch_size_eval}",
  ]);
  eq(at(c, "datamodule.batch_size_eval"), 8);
  eq(at(c, "extra"), 8);
  eq(at(cfg, "datamodule.batch_size_eval"), 32); // the input is not modified
  throwsBased(
    () => applyOverrides(cfg, ["datamodule.batch_size_evl=8"]),
    /did you mean 'datamodule.batch_size_eval'/,
  );
  throwsBased(() => applyOverrides(cfg, ["datamodule.batch_size_eval=x"]), /expects an int/);
});

Deno.test("config/overrides: an in-memory tree without experiment", () => {
  const cfg = composeFrom({ "config.yaml": "a: {b: 1}\n" }, ["a.b=2", "+c=[1]"]);
  eq(cfg, { a: { b: 2 }, c: [1] });
});

Deno.test("config/overrides: applyOverrides keeps literal '${' text of a resolved config", () => {
  const cfg = { a: "cost ${x}", b: "\\${y}", c: 1, d: ["${z}"] };
  const out = applyOverrides(cfg, ["c=2"]);
  eq(out, { a: "cost ${x}", b: "\\${y}", c: 2, d: ["${z}"] });
});

Deno.test("config/overrides: requireGroups refuses a run without an experiment", () => {
  throwsBased(
    () => compose([], { requireGroups: ["experiment"] }),
    /^no experiment chosen \(choose one: experiment=example\/based-360m \| experiment=example\/based-tiny/,
  );
  eq(at(compose([X], { requireGroups: ["experiment"] }), "name"), "02-20-based-360m");
});
