/** Composition semantics (Hydra 1.3) on small in-memory config trees. */
import { deepStrictEqual as eq } from "node:assert/strict";
import { mapSource } from "../../config/mod.ts";
import { composeRaw as composeBuiltin } from "../../configs/mod.ts";
import { at, compose, composeFrom, throwsBased } from "./helpers.ts";

const ROOT = `defaults:
  - _self_
  - db: mysql
  - server: null
  - experiment: null
a: 1
`;

const TREE: Record<string, string> = {
  "config.yaml": ROOT,
  "db/mysql.yaml": "driver: mysql\nport: 3306\nuser: root\n",
  "db/pg.yaml": "driver: pg\nport: 5432\n",
  "db/sqlite.yaml": "driver: sqlite\n",
  "server/apache.yaml": "name: apache\n",
  "server/nginx.yaml": "name: nginx\n",
  "experiment/e1.yaml": `# @package _global_
defaults:
  - override /db: pg
  - override /server: nginx
a: 10
db:
  port: 6000
`,
  "experiment/e2.yaml": `# @package _global_
defaults:
  - /experiment/e1.yaml
  - override /db: sqlite
a: 20
`,
};

Deno.test("config/compose: _self_ first, then groups, the experiment last", () => {
  const cfg = composeFrom(TREE, ["experiment=e1"]);
  eq(cfg, { a: 10, db: { driver: "pg", port: 6000 }, server: { name: "nginx" } });
});

Deno.test("config/compose: first registration wins (outer experiment over inner), command line over both", () => {
  // e2 registers db=sqlite before its child e1 registers db=pg
  eq(at(composeFrom(TREE, ["experiment=e2"]), "db.driver"), "sqlite");
  eq(at(composeFrom(TREE, ["experiment=e2"]), "a"), 20);
  // a command-line choice beats every override in the defaults lists
  eq(at(composeFrom(TREE, ["experiment=e2", "db=mysql"]), "db.driver"), "mysql");
  eq(at(composeFrom(TREE, ["db=mysql", "experiment=e2"]), "db.port"), 6000);
});

Deno.test("config/compose: _self_ position decides who wins", () => {
  const t = { ...TREE, "config.yaml": ROOT.replace("  - _self_\n", "") + "db:\n  port: 1\n" };
  eq(at(composeFrom(t), "db.port"), 1); // _self_ appended last: own keys win
  const u = { ...TREE, "config.yaml": ROOT + "db:\n  port: 1\n" };
  eq(at(composeFrom(u), "db.port"), 3306); // _self_ first: the group wins
});

Deno.test("config/compose: package headers and @package", () => {
  const t = {
    "config.yaml": "defaults:\n  - opt: adam\n  - opt@other.place: adam\n  - m: x\n",
    "opt/adam.yaml": "# @package train.optimizer\nlr: 1\n",
    "m/x.yaml": "defaults:\n  - _self_\n  - sub: s\nk: 1\n",
    "m/sub/s.yaml": "# @package _global_\nm:\n  deep: 2\ntop: 3\n",
  };
  eq(composeFrom(t), {
    train: { optimizer: { lr: 1 } },
    other: { place: { lr: 1 } },
    m: { k: 1, deep: 2 },
    top: 3,
  });
});

Deno.test("config/compose: option lists merge in order; nested groups are relative", () => {
  const t = {
    "config.yaml": "defaults:\n  - cb: [a, b]\n  - model: gpt\n",
    "cb/a.yaml": "x: 1\nshared: a\n",
    "cb/b.yaml": "y: 2\nshared: b\n",
    "model/gpt.yaml": "defaults:\n  - _self_\n  - size: small\nname: gpt\n",
    "model/size/small.yaml": "n: 1\n",
    "model/size/big.yaml": "n: 2\n",
  };
  eq(composeFrom(t), { cb: { x: 1, shared: "b", y: 2 }, model: { name: "gpt", size: { n: 1 } } });
  eq(at(composeFrom(t, ["model/size=big"]), "model.size.n"), 2);
  eq(at(composeFrom(t, ["cb=[b,a]"]), "cb.shared"), "a");
  eq(at(composeFrom(t, ["cb=a"]), "cb"), { x: 1, shared: "a" });
});

Deno.test("config/compose: group=null, ~group, +group, optional", () => {
  const t = {
    "config.yaml": "defaults:\n  - db: mysql\n  - optional extra: none\n",
    "db/mysql.yaml": "driver: mysql\n",
    "log/json.yaml": "fmt: json\n",
  };
  eq(composeFrom(t), { db: { driver: "mysql" } });
  eq(composeFrom(t, ["db=null"]), {});
  eq(composeFrom(t, ["~db"]), {});
  eq(composeFrom(t, ["~db=mysql"]), {});
  eq(composeFrom(t, ["+log=json"]), { db: { driver: "mysql" }, log: { fmt: "json" } });
  throwsBased(() => composeFrom(t, ["~db=pg"]), /cannot delete 'db=pg'/);
  throwsBased(() => composeFrom(t, ["log=json"]), /'log' is not in the defaults list.*\+log=json/);
  throwsBased(() => composeFrom(t, ["++db=mysql"]), /'\+\+' cannot be used with config groups/);
});

Deno.test("config/compose: OmegaConf merge rules (maps merge, lists and null replace, ??? does not)", () => {
  const t = {
    "config.yaml":
      "defaults:\n  - _self_\n  - over: o\nm: {a: 1, b: {c: 2}}\nl: [1, 2, 3]\ns: x\nn: {k: 1}\nq: 5\n",
    "over/o.yaml": "# @package _global_\nm: {b: {d: 3}}\nl: [9]\ns: null\nn: null\nq: '???'\n",
  };
  eq(composeFrom(t), { m: { a: 1, b: { c: 2, d: 3 } }, l: [9], s: null, n: null, q: 5 });
});

Deno.test("config/compose: the reference's defaults-list errors", () => {
  const base = { "db/a.yaml": "x: 1\n", "db/b.yaml": "x: 2\n" };
  throwsBased(
    () => composeFrom({ ...base, "config.yaml": "defaults:\n  - override db: a\n  - db: b\n" }),
    /overrides must be at the end of the defaults list/,
  );
  throwsBased(
    () => composeFrom({ ...base, "config.yaml": "defaults:\n  - db: a\n  - db: b\n" }),
    /multiple values for config group 'db'|appears more than once/,
  );
  throwsBased(
    () => composeFrom({ ...base, "config.yaml": "defaults:\n  - _self_\n  - _self_\n" }),
    /'_self_' appears twice/,
  );
  throwsBased(
    () => composeFrom({ ...base, "config.yaml": "defaults:\n  - db: ???\n" }),
    /config group 'db' needs a choice.*db=a/,
  );
  throwsBased(
    () => composeFrom({ ...base, "config.yaml": "defaults:\n  - db: a\n  - override nope: x\n" }),
    /cannot choose 'nope=x'/,
  );
  throwsBased(
    () =>
      composeFrom({
        ...base,
        "config.yaml": "defaults:\n  - a\n",
        "a.yaml": "defaults:\n  - config\n",
      }),
    /defaults list cycle: config -> a -> config/,
  );
  throwsBased(
    () => composeFrom({ ...base, "config.yaml": "defaults:\n  - db: ${x}\n" }),
    /interpolations in defaults lists are not supported/,
  );
  throwsBased(
    () => composeFrom({ "other.yaml": "a: 1\n" }),
    /cannot find the primary config 'config'/,
  );
});

Deno.test("config/compose: Hydra's own groups in a defaults list are ignored", () => {
  const t = {
    "config.yaml": "defaults:\n  - _self_\n  - override hydra/job_logging: colorlog\na: 1\n",
  };
  eq(composeFrom(t), { a: 1 });
});

Deno.test("config/compose: an extra source overrides and extends the bundle", () => {
  const user = mapSource(
    {
      "datamodule/mine.yaml": "dataset_name: kjv\nmax_length: 64\nmine: true\n",
      "trainer/default.yaml": "_target_: x\nmin_epochs: 7\n",
    },
    "user",
    "user/",
  );
  const cfg = compose(["experiment=example/based-tiny", "datamodule=mine"], {
    extraSources: [user],
  });
  eq(at(cfg, "datamodule.mine"), true);
  eq(at(cfg, "datamodule.max_length"), 128); // the experiment's own keys come later
  eq(at(cfg, "trainer.min_epochs"), 7);
  eq(at(cfg, "trainer.log_every_n_steps"), 5); // from the experiment; the user's trainer lacks it
  eq(at(cfg, "trainer.num_sanity_val_steps"), undefined); // the built-in trainer/default is shadowed
});

Deno.test("config/compose: merge order of based-360m is Hydra 1.3's", () => {
  const { order } = composeBuiltin(["experiment=example/based-360m"]);
  eq(order.map((o) => o.configPath), [
    "config",
    "trainer/default",
    "optimizer/adamw-apex",
    "scheduler/cosine-warmup-timm",
    "task/sequence-model",
    "model/gpt2",
    "model/gpt2model/gpt2-medium",
    "datamodule/wikitext103",
    "callbacks/default",
    "callbacks/norm-monitor",
    "metrics/perplexity",
    "metrics/num-tokens",
    "logger/wandb",
    "mode/default",
    "experiment/pile/base",
    "experiment/pile/gpt3s-flash",
    "experiment/pile/gpt3m-flash",
    "experiment/example/based-360m",
  ]);
  eq(order.find((o) => o.configPath === "optimizer/adamw-apex")!.package, "train.optimizer");
  eq(order.find((o) => o.configPath === "model/gpt2model/gpt2-medium")!.package, "");
  eq(order.find((o) => o.configPath === "metrics/num-tokens")!.package, "eval.metrics");
});
