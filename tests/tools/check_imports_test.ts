import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { cycles, importsOf, layerViolations } from "../../tools/check_imports.ts";

Deno.test("check_imports: relative imports, type-only ones marked", () => {
  const src = [
    'import { a } from "./a.ts";',
    'import type { B } from "../b.ts";',
    'import { type C, type D } from "./c.ts";',
    'import { type E, f } from "./e.ts";',
    'export { g } from "./g.ts";',
    'import "./side.ts";',
    'import x from "npm:yaml";',
  ].join("\n");
  assertEquals(importsOf("dir/m.ts", src), [
    { path: "dir/a.ts", typeOnly: false },
    { path: "b.ts", typeOnly: true },
    { path: "dir/c.ts", typeOnly: true },
    { path: "dir/e.ts", typeOnly: false },
    { path: "dir/g.ts", typeOnly: false },
    { path: "dir/side.ts", typeOnly: false },
  ]);
});

Deno.test("check_imports: cycles and layering", () => {
  const g = new Map([
    ["a.ts", ["b.ts"]],
    ["b.ts", ["c.ts"]],
    ["c.ts", ["a.ts"]],
    ["d.ts", ["a.ts"]],
    ["e.ts", ["e.ts"]],
  ]);
  assertEquals(cycles(g), [["a.ts", "b.ts", "c.ts"], ["e.ts"]]);
  assertEquals(cycles(new Map([["a.ts", ["b.ts"]], ["b.ts", []]])), []);
  assertEquals(
    layerViolations(new Map([["tensor/x.ts", ["kernels/y.ts", "tensor/z.ts", "errors.ts"]]])),
    ["tensor/x.ts imports kernels/y.ts (tensor/ may import only tensor/, errors.ts)"],
  );
});
