"""Optimizer step time: CLRSGD (list and flat mode) against torch.optim.SGD + CyclicLR.

One run, one table. Every optimizer applies momentum 0.9 and weight decay 5e-4
with a cyclical lr; the floor is 20 bytes/param over the bandwidth of an
in-place ``a.add_(b)`` (12 bytes/element) measured in the same run.

    python bench/bench_optimizer.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import clrfast as clr
import torch
from clrfast import _core
from clrfast.torch import CLRSGD

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine  # noqa: E402


def resnet18_shapes():
    try:
        import torchvision

        return [tuple(p.shape) for p in torchvision.models.resnet18().parameters()]
    except ImportError:  # the same 62 tensors, 11,689,512 parameters
        shapes = [(64, 3, 7, 7), (64,), (64,)]
        cin = 64
        for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            for b in range(2):
                c0 = cin if b == 0 else cout
                shapes += [(cout, c0, 3, 3), (cout,), (cout,), (cout, cout, 3, 3), (cout,), (cout,)]
                if b == 0 and (stride != 1 or c0 != cout):
                    shapes += [(cout, c0, 1, 1), (cout,), (cout,)]
            cin = cout
        return shapes + [(1000, 512), (1000,)]


def make(shapes):
    g = torch.Generator().manual_seed(0)
    ps = [torch.randn(s, generator=g).requires_grad_() for s in shapes]
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g)
    return ps


def time_step(fn, repeat):
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def interleaved(runners, repeat, block=5):
    """Best step time of each runner, measured round-robin so machine drift hits all alike.

    Each turn runs a block of consecutive steps, as training does, so a working set that
    fits in cache is warm again after the first step of the block (the floor is measured
    the same way).
    """
    best = {k: float("inf") for k in runners}
    for _ in range(max(1, repeat // block)):
        for k, fn in runners.items():
            for _ in range(block):
                t0 = time.perf_counter()
                fn()
                best[k] = min(best[k], time.perf_counter() - t0)
    return best


def torch_runner(ps, **kw):
    opt = torch.optim.SGD(ps, lr=0.01, momentum=0.9, weight_decay=5e-4, **kw)
    sch = torch.optim.lr_scheduler.CyclicLR(opt, 0.001, 0.01, step_size_up=100, cycle_momentum=False)

    def fn():
        opt.step()
        sch.step()

    return fn


def clr_runner(ps, flat):
    opt = CLRSGD(ps, clr.Cyclic(0.001, 0.01, step_size_up=100), momentum=0.9, weight_decay=5e-4, flat=flat)
    return opt.step


def floor_seconds(n, repeat):
    a, b = torch.randn(n), torch.randn(n)
    t = time_step(lambda: a.add_(b), repeat)
    bw = 12 * n / t
    return 20 * n / bw, bw


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    sets = {"ResNet-18 (62 tensors, 11.7 M)": resnet18_shapes(), "2,000 x 256": [(256,)] * 2000}
    print(f"Machine: {machine()}; clrfast kernels: {_core.sgd_cpu_isa()}, threads {torch.get_num_threads()}")
    print()
    print("| parameter set | optimizer | step (ms) | vs torch default | vs torch fused | vs floor |")
    print("|---|---|---:|---:|---:|---:|")
    for name, shapes in sets.items():
        n = sum(torch.Size(s).numel() for s in shapes)
        floor, bw = floor_seconds(n, args.repeat)
        rows = {
            "torch SGD default": torch_runner(make(shapes)),
            "torch SGD foreach": torch_runner(make(shapes), foreach=True),
            "torch SGD fused": torch_runner(make(shapes), fused=True),
            "CLRSGD list": clr_runner(make(shapes), False),
            "CLRSGD flat": clr_runner(make(shapes), True),
        }
        times = interleaved(rows, args.repeat)
        for k, t in times.items():
            print(f"| {name} | {k} | {t * 1e3:.3f} | {times['torch SGD default'] / t:.2f}x | "
                  f"{times['torch SGD fused'] / t:.2f}x | {t / floor:.2f} |")
        print(f"| {name} | bandwidth floor ({bw / 1e9:.1f} GB/s add_) | {floor * 1e3:.3f} | | | 1.00 |")


if __name__ == "__main__":
    main()
