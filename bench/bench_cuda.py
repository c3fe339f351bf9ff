"""CUDA optimizer step times: clrfast's fused rules against torch's fused and foreach optimizers, one GPU.

    python bench/bench_cuda.py [--repeat N] [--steps N]

Per parameter set (ResNet-18, 2,000 x 256, GPT-2 small) and rule (SGD with momentum under a
cyclical schedule, AdamW under one-cycle), the time of one optimizer step, measured with CUDA
events over ``--steps`` steps, best of ``--repeat``:

- torch fused (``fused=True``) plus its scheduler's ``step()``, as users run it;
- torch foreach plus its scheduler;
- clrfast, whose step computes lr and momentum on the device;
- clrfast replayed from a CUDA graph (the whole ``step()`` captured once);
- the memory-bandwidth floor: the bytes a step must move (SGD 20, AdamW 28 per float32
  parameter) at the device-to-device copy bandwidth measured in the same run.

Ratios are torch fused's time over each column's, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clrfast as clr  # noqa: E402
from _common import machine, table  # noqa: E402
from bench_optimizer import gpt2_small_shapes, resnet18_shapes  # noqa: E402
from clrfast.torch import CLRSGD, CLRAdamW  # noqa: E402


def make(shapes):
    g = torch.Generator(device="cuda").manual_seed(0)
    ps = [torch.randn(s, device="cuda", generator=g).requires_grad_() for s in shapes]
    for p in ps:
        p.grad = torch.randn(p.shape, device="cuda", generator=g)
    return ps


def timed(fn, steps, repeat) -> float:
    """Seconds per call: CUDA events around `steps` calls, best of `repeat`."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeat):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(steps):
            fn()
        b.record()
        b.synchronize()
        best = min(best, a.elapsed_time(b) / 1e3 / steps)
    return best


def copy_bandwidth() -> float:
    """Bytes per second of a 2 GiB device-to-device copy (read + write)."""
    x = torch.empty(1 << 29, device="cuda")
    y = torch.empty_like(x)
    t = timed(lambda: y.copy_(x), 10, 3)
    return 2 * x.numel() * 4 / t


def captured(step):
    """The step replayed from a CUDA graph (warm-up on a side stream, as torch's docs do it)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def variants(rule, shapes):
    total = 1000
    if rule == "sgd":
        sched = clr.Cyclic(0.01, 0.1, step_size_up=500, base_momentum=0.8, max_momentum=0.9)

        def torch_opt(ps, **kw):
            o = torch.optim.SGD(ps, lr=0.01, momentum=0.9, weight_decay=5e-4, **kw)
            return o, torch.optim.lr_scheduler.CyclicLR(o, 0.01, 0.1, step_size_up=500)

        def ours(ps):
            return CLRSGD(ps, sched, momentum=0.9, weight_decay=5e-4)
    else:
        sched = clr.OneCycle(1e-3, total_steps=total)

        def torch_opt(ps, **kw):
            o = torch.optim.AdamW(ps, lr=1e-3, weight_decay=1e-2, **kw)
            return o, torch.optim.lr_scheduler.OneCycleLR(o, 1e-3, total_steps=total)

        def ours(ps):
            return CLRAdamW(ps, sched, weight_decay=1e-2)

    def with_scheduler(o, s):
        def step():
            o.step()
            s.step()

        return step

    out = {}
    for name, kw in (("torch fused", dict(fused=True)), ("torch foreach", dict(foreach=True))):
        out[name] = lambda kw=kw: with_scheduler(*torch_opt(make(shapes), **kw))
    out["clrfast"] = lambda: ours(make(shapes)).step
    out["clrfast graph"] = lambda: captured(ours(make(shapes)).step)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()
    print(machine())
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    bw = copy_bandwidth()
    print(f"device-to-device copy: {bw / 1e12:.2f} TB/s (read + write)\n")
    sets = {
        "ResNet-18 (62 tensors, 11.7 M)": resnet18_shapes(),
        "2,000 x 256": [(256,)] * 2000,
        "GPT-2 small (148 tensors, 124 M)": gpt2_small_shapes(),
    }
    cols = ["torch fused", "torch foreach", "clrfast", "clrfast graph"]
    rows = []
    for rule, per_param in (("sgd", 20), ("adamw", 28)):
        for set_name, shapes in sets.items():
            n = sum(torch.Size(s).numel() for s in shapes)
            times = {}
            for col, build in variants(rule, shapes).items():
                times[col] = timed(build(), args.steps, args.repeat)
                torch.cuda.empty_cache()
            floor = n * per_param / bw
            ref = times["torch fused"]
            cells = [f"{times[c] * 1e6:.1f} µs ({ref / times[c]:.2f}x)" for c in cols]
            rows.append([rule, set_name, *cells, f"{floor * 1e6:.1f} µs", f"{times['clrfast'] / floor:.2f}"])
    print(table(["rule", "parameters", *cols, "floor", "clrfast / floor"], rows))


if __name__ == "__main__":
    main()
