import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { compactWorkgroupArrays } from "../../tensor/wgsl_compact.ts";
import { defineKernel } from "../../tensor/engine.ts";
import { gpuTest, withCompactWorkgroup } from "../helpers.ts";

Deno.test("wgsl compact: declarations and every indexing rewritten, inner accesses first", () => {
  const code = [
    "var<workgroup> a: array<f32, 1000>;",
    "var<workgroup> b: array<vec4<f32>, 300>;",
    "var<workgroup> c: array<vec2<f32>, 129>;",
    "var<workgroup> t: array<u32, 260>;",
    "var<workgroup> small: array<f32, 255>;",
    "fn f(i: i32) { a[i + 1] = b[t[2]].x + c[3].y + small[4]; }",
  ].join("\n");
  const u = (i: string) => `u32(${i})`;
  assertEquals(
    compactWorkgroupArrays(code),
    [
      "var<workgroup> a: array<mat4x4<f32>, 63>;",
      "var<workgroup> b: array<mat4x4<f32>, 75>;",
      "var<workgroup> c: array<mat4x2<f32>, 33>;",
      "var<workgroup> t: array<vec4<u32>, 65>;",
      "var<workgroup> small: array<f32, 255>;",
      `fn f(i: i32) { a[${u("i + 1")} / 16u][(${u("i + 1")} / 4u) % 4u][${u("i + 1")} % 4u] = ` +
      `b[${u(`t[${u("2")} / 4u][${u("2")} % 4u]`)} / 4u][${
        u(`t[${u("2")} / 4u][${u("2")} % 4u]`)
      } % 4u].x + c[${u("3")} / 4u][${u("3")} % 4u].y + small[4]; }`,
    ].join("\n"),
  );
});

Deno.test("wgsl compact: arrays used other than by indexing, or of other types, are kept", () => {
  const code = [
    "var<workgroup> p: array<f32, 512>;",
    "var<workgroup> q: array<atomic<u32>, 512>;",
    "var<workgroup> r: array<array<f32, 32>, 32>;",
    "fn f() { let x = workgroupUniformLoad(&p); atomicAdd(&q[0], 1u); r[1][2] = 0.0; }",
  ].join("\n");
  assertEquals(compactWorkgroupArrays(code), code);
  // a longer name that contains a compacted one, and a member of the same name, are not touched
  const named = "var<workgroup> s: array<f32, 256>;\nfn f() { s[0] = s2[0] + v.s[1]; }";
  assertEquals(
    compactWorkgroupArrays(named),
    "var<workgroup> s: array<mat4x4<f32>, 16>;\n" +
      "fn f() { s[u32(0) / 16u][(u32(0) / 4u) % 4u][u32(0) % 4u] = s2[0] + v.s[1]; }",
  );
});

gpuTest("wgsl compact: the compacted kernel computes what the original does", async (e) => {
  // every element type, counts that are not multiples of the wider element, i32 and u32 indices,
  // reads and writes through scalars, vectors and their components
  const k = defineKernel({
    name: "test_wgsl_compact",
    bindings: { out: "rw" },
    code: `
var<workgroup> a: array<f32, 1001>;
var<workgroup> b: array<vec4<f32>, 301>;
var<workgroup> c: array<vec2<f32>, 259>;
var<workgroup> t: array<u32, 263>;
var<workgroup> n: array<i32, 270>;
@compute @workgroup_size(64) fn main(@builtin(local_invocation_index) li: u32) {
  for (var i = li; i < 1001u; i += 64u) { a[i] = f32(i) * 0.5; }
  for (var i = i32(li); i < 301; i += 64) { b[i] = vec4<f32>(f32(i), 1.0, 2.0, 3.0); b[i].y = -f32(i); }
  for (var i = li; i < 259u; i += 64u) { c[i] = vec2<f32>(f32(i), 7.0); c[i][1] += 1.0; }
  for (var i = li; i < 263u; i += 64u) { t[i] = (i * 7u) % 263u; }
  for (var i = li; i < 270u; i += 64u) { n[i] = -i32(i); }
  workgroupBarrier();
  for (var i = li; i < 1001u; i += 64u) {
    let j = t[i % 263u];
    out[i] = a[1000u - i] + b[j % 301u].y + b[i % 301u][2] + c[j % 259u].x + c[i % 259u][1]
      + f32(n[i % 270u]);
  }
}`,
  });
  const run = async () => {
    const out = e.empty([1001]);
    e.run(k, { out }, {}, [1]);
    const v = await e.read(out);
    out.dispose();
    return v;
  };
  const plain = await withCompactWorkgroup(e, run, false);
  assertEquals(k.compacted, false);
  const compacted = await withCompactWorkgroup(e, run);
  assertEquals(k.compacted, true);
  assertEquals(compacted, plain);
  assertEquals(plain[0], 500 + 0 + 2 + 0 + 8 + 0);
});
