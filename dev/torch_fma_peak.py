"""Lab: the FMA peaks the same GPU reaches through CUDA, beside bench/peak.ts's WGSL figures.

    python3 dev/torch_fma_peak.py

A Triton kernel runs independent register chains x <- x*a + b (a, b loaded at run time) in
fp32 and in fp16, where Triton emits packed f16x2 multiply-adds; the same work per element as
bench/peak.ts. Prints TFLOP/s (CUDA-event timing, median of 5) and the checked fixed point.
"""
import torch
import triton
import triton.language as tl

CHAINS = 8
UNROLL = 8


@triton.jit
def peak(out, ab, iters, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    a = tl.load(ab)
    b = tl.load(ab + 1)
    base = (offs % 8).to(ab.dtype.element_ty) * 0.0625 + 0.125
    x0 = base
    x1 = base + 0.0625
    x2 = base + 0.125
    x3 = base + 0.1875
    x4 = base - 0.0625
    x5 = base - 0.125
    x6 = base + 0.25
    x7 = base - 0.25
    for _ in range(iters):
        for _u in tl.static_range(8):
            x0 = x0 * a + b
            x1 = x1 * a + b
            x2 = x2 * a + b
            x3 = x3 * a + b
            x4 = x4 * a + b
            x5 = x5 * a + b
            x6 = x6 * a + b
            x7 = x7 * a + b
    s = (x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7).to(tl.float32)
    tl.store(out + pid * BLOCK + offs, s)


def run(dtype, programs=16384, block=1024, iters=128):
    ab = torch.tensor([0.5, 0.25], device="cuda", dtype=dtype)
    out = torch.empty(programs * block, device="cuda", dtype=torch.float32)
    f = lambda: peak[(programs,)](out, ab, iters, BLOCK=block, num_warps=4)
    k = f()
    ptx = k.asm.get("ptx", "") if k is not None and hasattr(k, "asm") else ""
    ops = {op: ptx.count(op) for op in ("fma.rn.f16x2", "fma.rn.f16 ", "fma.rn.f32", "mul.rn.f16x2")}
    torch.cuda.synchronize()
    ok = abs(out[0].item() - CHAINS * 0.5) < 1e-3
    for _ in range(20):
        f()
    ts = []
    for _ in range(5):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(10):
            f()
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e) / 10)
    ms = sorted(ts)[2]
    flops = programs * block * iters * UNROLL * CHAINS * 2
    print(f"triton {str(dtype):14s} {flops / (ms / 1e3) / 1e12:6.1f} TFLOP/s  fixed point {'ok' if ok else 'WRONG'}  ptx {ops}")


if __name__ == "__main__":
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__)
    run(torch.float32)
    run(torch.float16)
