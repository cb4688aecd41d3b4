"""Lab: our Based LM in plain PyTorch, for the PyTorch anchors of `based bench --only step`.

    python3 dev/torch_based.py check CONFIG.json FIXTURES [--device cuda] [--dtype float32] [--out F]
    python3 dev/torch_based.py time CONFIG.json --out torch-step.json [--modes fp32,tf32,bf16]
                               [--warmup 3] [--steps 10] [--batch B] [--seq-len L]

CONFIG.json is dev/torch_config.ts's output: the resolved model config (model/config.ts), the batch,
the optimizer, and every parameter's state-dict name, shape and optimizer group. The model mirrors
model/*.ts and the reference (HazyResearch/based, docs/reference.md): token embedding, pre-norm
blocks with BaseConv (in_proj, causal depthwise conv k=3, silu gate, out_proj), LinearAttention
(Taylor feature map, the reference's quadratic `parallel_forward`: tril(phi(q) phi(k)^T) v over
phi(q).cumsum(phi(k)) + eps) or SlidingAttention (Wqkv, GPT-NeoX rotary with flash-attn's fp32
tables, softmax over keys i - window//2 .. i through scaled_dot_product_attention with a band mask),
a SwiGLU MLP, RMSNorm, the LM head tied to the embedding. Torch only: no fla, flash-attn or Triton.

check: loads FIXTURES/model_params_init.safetensors (names checked against CONFIG's list), runs the
fixtures' batch and compares the logits, the loss, every activation and every parameter gradient
with model_forward / model_grads.safetensors under the manifest's tolerances (|d| <= atol +
rtol |ref| everywhere and ||d|| / ||ref|| <= rel_l2). Exit 1 when any tensor fails.

time: a training step at CONFIG's batch (Based-360m: 8 x 2048) on random tokens: forward,
cross-entropy, backward, clip_grad_norm_(1.0), AdamW (fused on CUDA), lr 1e-4 as bench/step.ts;
warm-up steps, then N steps between two torch.cuda.synchronize(); peak = max_memory_allocated over
the timed steps. Modes: fp32 (TF32 off), tf32 (TF32 on for matmuls and cuDNN), bf16 (autocast
bf16, TF32 off). Writes {"step": {"workload", mode: {tokens_per_s, peak_gib, ...}}} for
`based bench --only step --anchors FILE`.

bf16 note: the linear-attention normaliser (phi(q) . cumsum phi(k), a running sum up to ~L) is
computed in fp32 with autocast off, as our 16-mixed step does; the reference's own einsum would
round the cumsum to bf16 under autocast.
"""
import argparse
import gc
import json
import math
import sys
import time

import numpy as np

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ModuleNotFoundError:  # without torch, `check` compares the parameter names only (numpy)
    torch = F = nn = None

Module = nn.Module if nn else object


# ----------------------------------------------------------------------------- the model


class RMSNorm(Module):
    """x * rsqrt(mean(x^2) + eps) * w over the last axis, in fp32 (weight only)."""

    def __init__(self, d, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class ShortConvolution(Module):
    """Causal depthwise Conv1d over [B, L, C]: c[t] = sum_k w[k] x[t + k - (K-1)], zeros before 0."""

    def __init__(self, channels, kernel_size):
        super().__init__()
        self.conv = nn.Conv1d(
            channels, channels, kernel_size, groups=channels, padding=kernel_size - 1, bias=False
        )

    def forward(self, x):
        L = x.shape[1]
        return self.conv(x.transpose(1, 2))[..., :L].transpose(1, 2)


class BaseConv(Module):
    """out_proj(silu(conv(u1)) * u2), [u1 | u2] = in_proj(x)."""

    def __init__(self, d, m):
        super().__init__()
        self.inner = m["expandProj"] * d // 2
        self.in_proj = nn.Linear(d, 2 * self.inner, bias=m["useBias"])
        self.out_proj = nn.Linear(self.inner, d, bias=m["useBias"])
        self.conv = ShortConvolution(self.inner, m["kernelSize"])

    def forward(self, x):
        u1, u2 = self.in_proj(x).split(self.inner, dim=-1)
        return self.out_proj(F.silu(self.conv(u1)) * u2)


def taylor_feature_map(x):
    """phi(x) = [1, x / F^(1/4), vec(x x^T) / (sqrt(2) sqrt(F))] over the last axis (F -> 1+F+F^2)."""
    f = x.shape[-1]
    x2 = (x.unsqueeze(-1) * x.unsqueeze(-2)).flatten(start_dim=-2) / math.sqrt(2)
    return torch.cat([torch.ones_like(x[..., :1]), x / f**0.25, x2 / math.sqrt(f)], dim=-1)


class LinearAttention(Module):
    """The reference's quadratic parallel form: y = tril(phi(q) phi(k)^T) v / (phi(q).cumsum(phi(k)) + eps)."""

    def __init__(self, d, m):
        super().__init__()
        self.h, self.f, self.dh, self.eps = m["numHeads"], m["featureDim"], m["headDim"], m["eps"]
        self.proj_q = nn.Linear(d, self.f * self.h, bias=False)
        self.proj_k = nn.Linear(d, self.f * self.h, bias=False)
        self.proj_v = nn.Linear(d, self.dh * self.h, bias=False)
        self.out_proj = nn.Linear(self.dh * self.h, d, bias=False)

    def forward(self, x):
        B, L, _ = x.shape
        q = self.proj_q(x).view(B, L, self.h, self.f).transpose(1, 2)
        k = self.proj_k(x).view(B, L, self.h, self.f).transpose(1, 2)
        v = self.proj_v(x).view(B, L, self.h, self.dh).transpose(1, 2)
        q, k = taylor_feature_map(q), taylor_feature_map(k)
        A = torch.tril(torch.einsum("bhnd,bhmd->bhnm", q, k))
        y = torch.einsum("bhnm,bhme->bhne", A, v)
        with torch.autocast(x.device.type, enabled=False):  # the normaliser in fp32 (see above)
            qf = q.float() if q.dtype in (torch.float16, torch.bfloat16) else q
            kf = k.float() if k.dtype in (torch.float16, torch.bfloat16) else k
            z = 1 / (torch.einsum("bhld,bhld->bhl", qf, kf.cumsum(2)) + self.eps)
        y = y * z[..., None]
        return self.out_proj(y.transpose(1, 2).reshape(B, L, self.h * self.dh))


_ROTARY = {}


def rotary_tables(L, dim, base, device):
    """cos, sin [L, dim/2] as flash-attn builds them: fp32 inv_freq, positions and products."""
    key = (L, dim, base, str(device))
    if key not in _ROTARY:
        inv = 1.0 / (base ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim))
        t = torch.arange(L, device=device, dtype=torch.float32)
        freqs = torch.outer(t, inv)
        _ROTARY[key] = (freqs.cos(), freqs.sin())
    return _ROTARY[key]


def apply_rotary(x, cos, sin, rd):
    """GPT-NeoX halves on x [B, L, H, Dh]: out1 = x1 cos - x2 sin, out2 = x2 cos + x1 sin; dims >= rd pass."""
    cos, sin = cos[:, None, :].to(x.dtype), sin[:, None, :].to(x.dtype)
    x1, x2, rest = x[..., : rd // 2], x[..., rd // 2 : rd], x[..., rd:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], dim=-1)


_MASKS = {}


def window_mask(L, left, device):
    """[L, L] bool, True where query i may attend key j: i - left <= j <= i (left None: j <= i)."""
    key = (L, left, str(device))
    if key not in _MASKS:
        i = torch.arange(L, device=device)[:, None]
        j = torch.arange(L, device=device)[None, :]
        _MASKS[key] = (j <= i) & ((j >= i - left) if left is not None else True)
    return _MASKS[key]


def window_attention(q, k, v, left):
    """softmax(q k^T / sqrt(Dh)) v over the band, q, k, v [B, H, L, Dh]."""
    mask = window_mask(q.shape[2], left, q.device)
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    s = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # torch < 2.0
    return s.masked_fill(~mask, float("-inf")).softmax(-1) @ v


class SlidingAttention(Module):
    """Wqkv -> rotary q, k -> windowed causal softmax attention -> out_proj (no biases)."""

    def __init__(self, d, m, rotary_base, rotary_fraction):
        super().__init__()
        self.h = m["numHeads"]
        self.dh = d // self.h
        self.rd = round(self.dh * rotary_fraction)
        self.base = rotary_base
        w = m["window"]  # None: full causal attention (mha)
        self.left = None if w is None else w // 2
        self.Wqkv = nn.Linear(d, 3 * d, bias=False)
        self.out_proj = nn.Linear(d, d, bias=False)

    def forward(self, x):
        B, L, D = x.shape
        q, k, v = self.Wqkv(x).view(B, L, 3, self.h, self.dh).unbind(2)
        cos, sin = rotary_tables(L, self.rd, self.base, x.device)
        q, k = apply_rotary(q, cos, sin, self.rd), apply_rotary(k, cos, sin, self.rd)
        o = window_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), self.left)
        return self.out_proj(o.transpose(1, 2).reshape(B, L, D))


class GatedMlp(Module):
    """fc2(value * silu(gate)), [value | gate] = fc1(x), no biases."""

    def __init__(self, d, hidden):
        super().__init__()
        self.hidden = hidden
        self.fc1 = nn.Linear(d, 2 * hidden, bias=False)
        self.fc2 = nn.Linear(hidden, d, bias=False)

    def forward(self, x):
        value, gate = self.fc1(x).split(self.hidden, dim=-1)
        return self.fc2(value * F.silu(gate))


class Block(Module):
    def __init__(self, c, m):
        super().__init__()
        d = c["nEmbd"]
        if m.get("decay"):
            raise SystemExit("error: the linear-attention decay option is not in this script")
        if m["kind"] == "conv":
            self.mixer = BaseConv(d, m)
        elif m["kind"] == "linear":
            self.mixer = LinearAttention(d, m)
        else:  # slide, mha
            self.mixer = SlidingAttention(d, m, c["rotaryBase"], c["rotaryFraction"])
        self.norm1 = RMSNorm(d, c["normEps"])
        self.mlp = GatedMlp(d, c["mlpHidden"])
        self.norm2 = RMSNorm(d, c["normEps"])


class Embeddings(Module):
    def __init__(self, c):
        super().__init__()
        self.word_embeddings = nn.Embedding(c["vocabPadded"], c["nEmbd"])


class Transformer(Module):
    def __init__(self, c):
        super().__init__()
        self.embeddings = Embeddings(c)
        self.layers = nn.ModuleList([Block(c, m) for m in c["layers"]])
        self.ln_f = RMSNorm(c["nEmbd"], c["normEps"])


class BasedLM(Module):
    """State-dict names as the reference's GPTLMHeadModel (the tied lm_head is not a parameter)."""

    def __init__(self, c):
        super().__init__()
        self.config = c
        self.transformer = Transformer(c)

    def forward(self, ids, trace=None):
        """Logits [B, L, V]; trace (a dict) receives the activations the fixtures name."""
        t = self.transformer
        rec = (lambda name, x: trace.__setitem__(name, x.detach())) if trace is not None else None
        r = t.embeddings.word_embeddings(ids)  # the residual stream (fp32 under autocast too)
        if rec:
            rec("embeddings", r)
        for i, blk in enumerate(t.layers):
            x = blk.norm1(r)
            a = blk.mixer(x)
            r = r + a
            x2 = blk.norm2(r)
            h = blk.mlp(x2)
            r = r + h
            if rec:
                for name, v in (("mixer_in", x), ("mixer_out", a), ("mlp_in", x2), ("mlp_out", h)):
                    rec(f"layers.{i}.{name}", v)
        y = t.ln_f(r)
        if rec:
            rec("ln_f_out", y)
        return F.linear(y, t.embeddings.word_embeddings.weight)

    def init_weights(self):
        """As model/params.ts (the reference's _init_weights); values differ from ours (other RNG)."""
        c = self.config
        std = c["initializerRange"]
        out_std = std / math.sqrt(2 * c["nLayer"])
        with torch.no_grad():
            self._init(std, out_std)

    def _init(self, std, out_std):
        for name, p in self.named_parameters():
            if name.endswith(".bias"):
                p.zero_()
            elif name.endswith("norm1.weight") or name.endswith("norm2.weight") or "ln_f" in name:
                p.fill_(1.0)
            elif name.endswith("conv.conv.weight"):
                bound = 1 / math.sqrt(p.shape[-1])
                p.uniform_(-bound, bound)
            elif name.endswith("out_proj.weight") or name.endswith("fc2.weight"):
                p.normal_(0, out_std)
            else:
                p.normal_(0, std)


# ----------------------------------------------------------------------------- helpers


def read_safetensors(path):
    """{name: numpy array} of a safetensors file (the format of the fixtures' README)."""
    with open(path, "rb") as f:
        buf = f.read()
    n = int.from_bytes(buf[:8], "little")
    header = json.loads(buf[8 : 8 + n])
    dtypes = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64}
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        dt = np.dtype(dtypes[t["dtype"]])
        a = np.frombuffer(buf, dtype=dt, count=(e - b) // dt.itemsize, offset=8 + n + b)
        out[name] = a.reshape(t["shape"]).copy()
    return out


def compare(got, ref, tol):
    """The manifest's rule: |d| <= atol + rtol |ref| everywhere and ||d|| / ||ref|| <= rel_l2."""
    got = np.asarray(got, dtype=np.float64).reshape(-1)
    ref = np.asarray(ref, dtype=np.float64).reshape(-1)
    if got.shape != ref.shape:
        return {"ok": False, "max_abs": math.inf, "rel_l2": math.inf, "ratio": math.inf}
    d = np.abs(got - ref)
    bound = tol["atol"] + tol["rtol"] * np.abs(ref)
    norm = float(np.linalg.norm(ref))
    rel_l2 = float(np.linalg.norm(got - ref)) / norm if norm > 0 else float(np.linalg.norm(d))
    ratio = max(float(np.max(d / bound)), rel_l2 / tol["rel_l2"])
    return {"ok": bool(ratio <= 1.0), "max_abs": float(np.max(d)), "rel_l2": rel_l2, "ratio": ratio}


def check_names(cfg, names_shapes, what):
    """The parameter names and shapes of `what` against CONFIG's list; a list of mismatches."""
    want = {p["name"]: list(p["shape"]) for p in cfg["params"]}
    errs = [f"{what} lacks {n}" for n in want if n not in names_shapes]
    errs += [f"{what} has {n}, not in the config's list" for n in names_shapes if n not in want]
    errs += [
        f"{what}: {n} is {list(names_shapes[n])}, the config says {want[n]}"
        for n in want
        if n in names_shapes and list(names_shapes[n]) != want[n]
    ]
    return errs


def set_tf32(on):
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


# ----------------------------------------------------------------------------- check


def run_check(args):
    cfg = json.load(open(args.config))
    fx = args.fixtures
    manifest = json.load(open(f"{fx}/manifest.json"))["tensors"]
    params = read_safetensors(f"{fx}/model_params_init.safetensors")
    fwd = read_safetensors(f"{fx}/model_forward.safetensors")
    grads = read_safetensors(f"{fx}/model_grads.safetensors")
    errs = check_names(cfg, {n: a.shape for n, a in params.items()}, "model_params_init")
    if torch is None:  # no torch here: the names only
        print("\n".join(errs) or f"no torch: {len(params)} parameter names and shapes match")
        return 1 if errs else 0
    set_tf32(False)
    dev = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    model = BasedLM(cfg["model"]).to(device=dev, dtype=dtype)
    errs += check_names(cfg, {n: p.shape for n, p in model.state_dict().items()}, "the torch model")
    if errs:
        print("\n".join(f"error: {e}" for e in errs))
        return 1
    state = {n: torch.from_numpy(a).to(device=dev, dtype=dtype) for n, a in params.items()}
    model.load_state_dict(state, strict=True)
    ids = torch.from_numpy(fwd["input_ids"]).to(dev, torch.long)
    labels = torch.from_numpy(fwd["labels"]).to(dev, torch.long)
    trace = {}
    logits = model(ids, trace=trace)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    loss.backward()
    got = {"logits": logits.detach(), "loss": loss.detach().reshape(1)}
    got.update({f"act.{n}": v for n, v in trace.items()})
    got.update({f"grad.{n}": p.grad for n, p in model.named_parameters()})
    refs = dict(fwd)
    refs.update(grads)
    rows, failed = [], 0
    for name in sorted(n for n in refs if n in manifest and isinstance(manifest[n].get("tolerance"), dict)):
        if name not in got:
            rows.append({"name": name, "ok": False, "missing": True})
            failed += 1
            print(f"FAIL {name}: not computed")
            continue
        r = compare(got[name].double().cpu().numpy(), refs[name], manifest[name]["tolerance"])
        r["name"] = name
        rows.append(r)
        failed += not r["ok"]
        print(
            f"{'ok  ' if r['ok'] else 'FAIL'} {name:52s} max|d| {r['max_abs']:.3e}  "
            f"rel_l2 {r['rel_l2']:.2e}  {r['ratio']:.3f} of tolerance"
        )
    worst = max(rows, key=lambda r: r.get("ratio", math.inf))
    print(
        f"torch check ({args.device}, {args.dtype}, torch {torch.__version__}): loss "
        f"{loss.item():.7f} (fixture {float(fwd['loss'][0]):.7f}); logits max|d| "
        f"{next(r for r in rows if r['name'] == 'logits')['max_abs']:.3e}; worst {worst['name']} at "
        f"{worst.get('ratio', math.inf):.3f} of its tolerance"
    )
    print(f"{len(rows) - failed} passed, {failed} failed")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": args.device, "dtype": args.dtype, "torch": torch.__version__,
                       "passed": len(rows) - failed, "failed": failed, "tensors": rows}, f, indent=1)
    return 1 if failed else 0


# ----------------------------------------------------------------------------- time


def time_mode(cfg, mode, args):
    """One precision mode: returns {tokens_per_s, peak_gib, ms_per_step, loss, ...}."""
    c = cfg["model"]
    dev = torch.device("cuda")
    B = args.batch or cfg["batch"]
    L = args.seq_len or cfg["seq_len"]
    set_tf32(mode == "tf32")
    torch.manual_seed(0)
    with torch.device(dev):
        model = BasedLM(c)
    model.init_weights()
    o = cfg["optimizer"]
    group_of = {p["name"]: p["group"] for p in cfg["params"]}
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if group_of[n] == "decay"], "weight_decay": o["weight_decay"]},
        {"params": [p for n, p in named if group_of[n] == "no_decay"], "weight_decay": 0.0},
    ]
    try:
        opt = torch.optim.AdamW(groups, lr=1e-4, betas=tuple(o["betas"]), eps=o["eps"], fused=True)
    except (TypeError, RuntimeError):  # no fused AdamW in this torch
        opt = torch.optim.AdamW(groups, lr=1e-4, betas=tuple(o["betas"]), eps=o["eps"])
    params = [p for _, p in named]
    g = torch.Generator(device=dev).manual_seed(7)
    batches = []
    for _ in range(2):
        tok = torch.randint(0, c["vocabSize"], (B, L + 1), device=dev, generator=g)
        batches.append((tok[:, :-1].contiguous(), tok[:, 1:].contiguous()))
    V = c["vocabPadded"]

    def step(i):
        x, y = batches[i % 2]
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=mode == "bf16"):
            logits = model(x)
            loss = F.cross_entropy(logits.view(-1, V), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        opt.step()
        return loss.detach()

    for i in range(args.warmup):
        step(i)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for i in range(args.steps):
        loss = step(i)
    torch.cuda.synchronize()
    s = (time.perf_counter() - t0) / args.steps
    r = {
        "tokens_per_s": round(B * L / s, 1),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
        "ms_per_step": round(s * 1000, 1),
        "loss": round(loss.item(), 4),
        "fused_adamw": bool(opt.defaults.get("fused")),
        "tf32": mode == "tf32",
        "autocast": "bf16" if mode == "bf16" else None,
    }
    return r  # the model, optimizer and batches go with this frame


def run_time(args):
    cfg = json.load(open(args.config))
    B = args.batch or cfg["batch"]
    L = args.seq_len or cfg["seq_len"]
    out = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "step": {
            # bench/mod.ts compares a step row with these figures when the workloads match
            "workload": f"{cfg['source']} B{B}x{L}",
            "batch": B,
            "seq_len": L,
            "params": sum(math.prod(p["shape"]) for p in cfg["params"]),
            "warmup": args.warmup,
            "steps": args.steps,
        },
    }
    print(f"torch step: {out['step']['workload']}, {out['step']['params']:,} parameters, "
          f"{out['device']}, torch {out['torch']}")
    for mode in args.modes.split(","):
        try:
            r = time_mode(cfg, mode, args)
        except torch.cuda.OutOfMemoryError as e:
            r = {"error": f"out of memory: {str(e).splitlines()[0]}"}
        gc.collect()
        torch.cuda.empty_cache()
        out["step"][mode] = r
        if "error" in r:
            print(f"torch step {mode}: {r['error']}")
        else:
            print(f"torch step {mode}: {r['ms_per_step']:.1f} ms, {r['tokens_per_s']:,.0f} tokens/s, "
                  f"peak {r['peak_gib']:.2f} GiB (reserved {r['reserved_gib']:.2f}), loss {r['loss']}")
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="compare with the reference fixtures")
    c.add_argument("config")
    c.add_argument("fixtures")
    c.add_argument("--device", default="cuda" if torch and torch.cuda.is_available() else "cpu")
    c.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    c.add_argument("--out")
    t = sub.add_parser("time", help="time the training step")
    t.add_argument("config")
    t.add_argument("--out", required=True)
    t.add_argument("--modes", default="fp32,tf32,bf16")
    t.add_argument("--warmup", type=int, default=3)
    t.add_argument("--steps", type=int, default=10)
    t.add_argument("--batch", type=int)
    t.add_argument("--seq-len", type=int)
    args = p.parse_args()
    if args.cmd == "time":
        if torch is None or not torch.cuda.is_available():
            raise SystemExit("error: the step timing needs PyTorch with a CUDA GPU")
        for m in args.modes.split(","):
            if m not in ("fp32", "tf32", "bf16"):
                raise SystemExit(f"error: unknown mode {m}: use fp32, tf32, bf16")
        return run_time(args)
    return run_check(args)


if __name__ == "__main__":
    sys.exit(main())
