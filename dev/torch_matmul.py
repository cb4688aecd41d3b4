"""Lab: PyTorch matmul anchors on this machine for `based bench --only matmul --anchors FILE`.

    python3 dev/torch_matmul.py shapes.json out.json

shapes.json: dev/matmul_shapes.ts's output. Writes {"fp32": {name: TFLOP/s}, "fp16": {...},
"device": ..., "torch": ...}: fp32 with TF32 off (plain fp32 FMA, cuBLAS SGEMM) and fp16
inputs (cuBLAS uses tensor cores, f32 accumulation). CUDA-event timing, median of 5 batches.
"""
import json
import sys

import torch

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def bench(m, n, k, ta, tb, dtype):
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.rand((k, m) if ta else (m, k), device="cuda", dtype=dtype, generator=g) * 2 - 1
    b = torch.rand((n, k) if tb else (k, n), device="cuda", dtype=dtype, generator=g) * 2 - 1
    a = a.t() if ta else a
    b = b.t() if tb else b
    c = torch.empty((m, n), device="cuda", dtype=dtype)
    torch.matmul(a, b, out=c)
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    torch.matmul(a, b, out=c)
    e.record()
    torch.cuda.synchronize()
    one = max(s.elapsed_time(e), 1e-3)
    inner = max(1, min(200, int(25 / one)))
    for _ in range(max(1, int(100 / one))):  # warm the clocks
        torch.matmul(a, b, out=c)
    times = []
    for _ in range(5):
        s.record()
        for _ in range(inner):
            torch.matmul(a, b, out=c)
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e) / inner)
    ms = sorted(times)[2]
    return 2 * m * n * k / (ms * 1e-3) / 1e12


def main():
    shapes = json.load(open(sys.argv[1]))
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "fp32": {}, "fp16": {}}
    for key, dt in (("fp32", torch.float32), ("fp16", torch.float16)):
        for s in shapes:
            m, n, k, ta, tb = s["size"]
            t = bench(m, n, k, bool(ta), bool(tb), dt)
            out[key][s["name"]] = round(t, 2)
            print(f"torch {key} {s['name']}: {t:.1f} TFLOP/s", flush=True)
    json.dump(out, open(sys.argv[2], "w"), indent=1)


main()
