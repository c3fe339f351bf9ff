"""Optimizer step time: the fused optimizers (list and flat mode) against their references + a scheduler.

One run, one table per rule. SGD applies momentum 0.9 and weight decay 5e-4 with a
cyclical lr; AdamW applies weight decay 1e-2 with a cyclical lr and beta1 cycling
0.95 -> 0.85 (torch: ``CyclicLR(cycle_momentum=True)``). The floor is the bytes each
update must move (SGD: read p, g, buf, write p, buf = 20 bytes/param; AdamW: read p,
g, m, v, write p, m, v = 28) over the bandwidth of an in-place ``a.add_(b)``
(12 bytes/element) measured in the same run. RMSprop (momentum cycling 0.85 -> 0.95, as
``CyclicLR`` cycles it; 28 bytes/param) is compared with torch's RMSprop, Lion (20 bytes/param)
with the lion-pytorch package's Lion (its default for-loop and its foreach variant).
Schedule-free AdamW and SGD (train mode, a 100-step warmup) are compared with the schedulefree
package's ``AdamWScheduleFree`` and ``SGDScheduleFree``, foreach (its default, the baseline) and
for-loop; each update reads p, g, z (AdamW: and v) and writes them all back, g included (the
package leaves the normalised, decayed gradient in ``p.grad``): 32 bytes/param for AdamW, 24 for SGD.

    python bench/bench_optimizer.py [--repeat N] [--rule sgd|adamw|rmsprop|lion|sfadamw|sfsgd|all] [--gpt2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import clrfast as clr
import torch
from clrfast import _core
from clrfast.torch import CLRSGD, CLRAdamW, CLRLion, CLRRMSprop, CLRScheduleFreeAdamW, CLRScheduleFreeSGD

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


def gpt2_small_shapes():
    """GPT-2 small's 148 parameter tensors (124,439,808 parameters; the output layer is tied to wte)."""
    d, ff, layers = 768, 3072, 12
    shapes = [(50257, d), (1024, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, ff), (ff,), (ff, d), (d,)]
    return shapes + [(d,), (d,)]


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


def interleaved(runners, repeat, block=5, prepare=None):
    """Best step time of each runner, measured round-robin so machine drift hits all alike.

    Each turn runs a block of consecutive steps, as training does, so a working set that
    fits in cache is warm again after the first step of the block (the floor is measured
    the same way). ``prepare[k]``, when given, runs before each step, untimed.
    """
    best = {k: float("inf") for k in runners}
    for _ in range(max(1, repeat // block)):
        for k, fn in runners.items():
            for _ in range(block):
                if prepare is not None:
                    prepare[k]()
                t0 = time.perf_counter()
                fn()
                best[k] = min(best[k], time.perf_counter() - t0)
    return best


def new_gradients(ps):
    """What backward after ``zero_grad(set_to_none=True)`` leaves: a new gradient object per parameter.

    Two sets alternate, so every step sees other objects than the step before.
    """
    g = torch.Generator().manual_seed(1)
    pools = [[torch.randn(p.shape, generator=g) for p in ps] for _ in range(2)]
    turn = [0]

    def prepare():
        turn[0] ^= 1
        for p, grad in zip(ps, pools[turn[0]]):
            p.grad = grad

    return prepare


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


def torch_adamw_runner(ps, **kw):
    opt = torch.optim.AdamW(ps, lr=1e-3, weight_decay=1e-2, **kw)
    sch = torch.optim.lr_scheduler.CyclicLR(opt, 1e-4, 1e-3, step_size_up=100, base_momentum=0.85, max_momentum=0.95)

    def fn():
        opt.step()
        sch.step()

    return fn


def clr_adamw_runner(ps, flat, reference=None):
    s = clr.Cyclic(1e-4, 1e-3, step_size_up=100, base_momentum=0.85, max_momentum=0.95)
    return CLRAdamW(ps, s, weight_decay=1e-2, flat=flat, reference=reference).step


def torch_rmsprop_runner(ps, **kw):
    opt = torch.optim.RMSprop(ps, lr=1e-3, momentum=0.9, **kw)
    sch = torch.optim.lr_scheduler.CyclicLR(opt, 1e-4, 1e-3, step_size_up=100, base_momentum=0.85, max_momentum=0.95)

    def fn():
        opt.step()
        sch.step()

    return fn


def clr_rmsprop_runner(ps, flat):
    s = clr.Cyclic(1e-4, 1e-3, step_size_up=100, base_momentum=0.85, max_momentum=0.95)
    return CLRRMSprop(ps, s, momentum=0.9, flat=flat).step


def lion_runner(ps, foreach=False):
    import lion_pytorch
    from lion_pytorch.foreach import Lion as ForeachLion

    opt = (ForeachLion if foreach else lion_pytorch.Lion)(ps, lr=1e-4, weight_decay=0.1)
    sch = torch.optim.lr_scheduler.CyclicLR(opt, 1e-5, 1e-4, step_size_up=100, cycle_momentum=False)

    def fn():
        opt.step()
        sch.step()

    return fn


def clr_lion_runner(ps, flat):
    return CLRLion(ps, clr.Cyclic(1e-5, 1e-4, step_size_up=100), weight_decay=0.1, flat=flat).step


# Schedule-free rule: (the clrfast optimizer, the package's class name, its hyperparameters)
SCHEDULE_FREE = {
    "AdamW": (CLRScheduleFreeAdamW, "AdamWScheduleFree", dict(lr=2.5e-3, weight_decay=1e-2, warmup_steps=100)),
    "SGD": (CLRScheduleFreeSGD, "SGDScheduleFree", dict(lr=0.1, momentum=0.9, weight_decay=5e-4, warmup_steps=100)),
}


def schedulefree_runner(ps, rule, foreach):
    import schedulefree

    _, cls, hyper = SCHEDULE_FREE[rule]
    opt = getattr(schedulefree, cls)(ps, foreach=foreach, **hyper)
    opt.train()  # the step's mode: gradients are taken at y
    return opt.step


def clr_schedulefree_runner(ps, rule, flat):
    cls, _, hyper = SCHEDULE_FREE[rule]
    opt = cls(ps, flat=flat, **hyper)
    opt.train()
    return opt.step


def schedulefree_rule(rule, nbytes):
    """A ``RULES`` entry: clrfast list and flat against the package's foreach (the baseline) and for-loop."""
    base, loop = f"schedulefree {rule} foreach", f"schedulefree {rule} for-loop"
    name = SCHEDULE_FREE[rule][0].__name__
    return (
        nbytes,
        base,
        loop,
        {
            base: lambda ps: schedulefree_runner(ps, rule, True),
            loop: lambda ps: schedulefree_runner(ps, rule, False),
            f"{name} list": lambda ps: clr_schedulefree_runner(ps, rule, False),
            f"{name} flat": lambda ps: clr_schedulefree_runner(ps, rule, True),
        },
    )


# rule: (bytes each update moves per parameter, the baseline, a second reference (the fastest, where
# the baseline is not), runners)
RULES = {
    "sgd": (
        20,
        "torch SGD default",
        "torch SGD fused",
        {
            "torch SGD default": lambda ps: torch_runner(ps),
            "torch SGD foreach": lambda ps: torch_runner(ps, foreach=True),
            "torch SGD fused": lambda ps: torch_runner(ps, fused=True),
            "CLRSGD list": lambda ps: clr_runner(ps, False),
            "CLRSGD flat": lambda ps: clr_runner(ps, True),
        },
    ),
    "adamw": (
        28,
        "torch AdamW default",
        "torch AdamW fused",
        {
            "torch AdamW default": lambda ps: torch_adamw_runner(ps),
            "torch AdamW for-loop": lambda ps: torch_adamw_runner(ps, foreach=False),
            "torch AdamW fused": lambda ps: torch_adamw_runner(ps, fused=True),
            "CLRAdamW list": lambda ps: clr_adamw_runner(ps, False),
            "CLRAdamW flat": lambda ps: clr_adamw_runner(ps, True),
            "CLRAdamW list, reference='foreach'": lambda ps: clr_adamw_runner(ps, False, "foreach"),
        },
    ),
    "rmsprop": (
        28,
        "torch RMSprop default",
        "torch RMSprop foreach",
        {
            "torch RMSprop default": lambda ps: torch_rmsprop_runner(ps),
            "torch RMSprop for-loop": lambda ps: torch_rmsprop_runner(ps, foreach=False),
            "torch RMSprop foreach": lambda ps: torch_rmsprop_runner(ps, foreach=True),
            "CLRRMSprop list": lambda ps: clr_rmsprop_runner(ps, False),
            "CLRRMSprop flat": lambda ps: clr_rmsprop_runner(ps, True),
        },
    ),
    "lion": (
        20,
        "lion-pytorch Lion",
        "lion-pytorch foreach Lion",
        {
            "lion-pytorch Lion": lambda ps: lion_runner(ps),
            "lion-pytorch foreach Lion": lambda ps: lion_runner(ps, foreach=True),
            "CLRLion list": lambda ps: clr_lion_runner(ps, False),
            "CLRLion flat": lambda ps: clr_lion_runner(ps, True),
        },
    ),
    "sfadamw": schedulefree_rule("AdamW", 32),
    "sfsgd": schedulefree_rule("SGD", 24),
}


def floor_seconds(n, repeat, bytes_per_param=20):
    a, b = torch.randn(n), torch.randn(n)
    t = time_step(lambda: a.add_(b), repeat)
    bw = 12 * n / t
    return bytes_per_param * n / bw, bw


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--rule", choices=[*RULES, "all"], default="all")
    ap.add_argument("--gpt2", action="store_true", help="add GPT-2 small's 124 M parameters (SGD, AdamW; ~8 GB RAM)")
    args = ap.parse_args()
    sets = {"ResNet-18 (62 tensors, 11.7 M)": resnet18_shapes(), "2,000 x 256": [(256,)] * 2000}
    print(f"Machine: {machine()}; clrfast kernels: {_core.cpu_isa()}, threads {torch.get_num_threads()}")
    for rule in list(RULES) if args.rule == "all" else [args.rule]:
        nbytes, base, second, runners = RULES[rule]
        rule_sets = dict(sets)
        if args.gpt2 and rule in ("sgd", "adamw"):
            rule_sets["GPT-2 small (148 tensors, 124 M)"] = gpt2_small_shapes()
        print()
        print(f"| parameter set | optimizer | step (ms) | vs {base} | vs {second} | vs floor ({nbytes} B/param) |")
        print("|---|---|---:|---:|---:|---:|")
        for set_name, shapes in rule_sets.items():
            n = sum(torch.Size(s).numel() for s in shapes)
            floor, bw = floor_seconds(n, args.repeat, nbytes)
            big = n > 50_000_000
            # 124 M parameters: one optimizer at a time, few steps, and no flat copy or for-loop
            keys = [k for k in runners if not (big and ("flat" in k or "for-loop" in k))]
            times = {}
            if big:
                for k in keys:
                    fn = runners[k](make(shapes))
                    times[k] = time_step(fn, max(3, args.repeat // 10))
                    del fn
            else:
                times = interleaved({k: runners[k](make(shapes)) for k in keys}, args.repeat)
            for k, t in times.items():
                print(
                    f"| {set_name} | {k} | {t * 1e3:.3f} | {times[base] / t:.2f}x | {times[second] / t:.2f}x | "
                    f"{t / floor:.2f} |"
                )
            print(f"| {set_name} | bandwidth floor ({bw / 1e9:.1f} GB/s add_) | {floor * 1e3:.3f} | | | 1.00 |")
            if big:
                continue
            # The training loop's case: zero_grad(set_to_none=True), then backward gives new gradients.
            params = {k: make(shapes) for k in keys}
            times = interleaved(
                {k: runners[k](params[k]) for k in keys},
                args.repeat,
                prepare={k: new_gradients(params[k]) for k in keys},
            )
            for k, t in times.items():
                print(
                    f"| {set_name}, new gradients each step | {k} | {t * 1e3:.3f} | {times[base] / t:.2f}x | "
                    f"{times[second] / t:.2f}x | {t / floor:.2f} |"
                )


if __name__ == "__main__":
    main()
