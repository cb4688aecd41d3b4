/**
 * Lab: prints the matmul benchmark's default shapes for this adapter as JSON
 * ([{name, size: [m, n, k, transA, transB]}]), for dev/torch_matmul.py.
 *
 *   deno run -A dev/matmul_shapes.ts > shapes.json
 */
import { initEngine } from "../tensor/engine.ts";
import { defaultMatmulSizes } from "../bench/matmul.ts";

const e = await initEngine();
console.log(JSON.stringify(defaultMatmulSizes(e.maxBinding)));
e.destroy();
