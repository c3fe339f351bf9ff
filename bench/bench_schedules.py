"""Schedule benchmarks: drop-in scheduler step() cost vs torch, and batch tables vs NumPy and Python.

    python bench/bench_schedules.py            # full run (10^7-step tables)
    python bench/bench_schedules.py --quick    # seconds

All times are best-of-N wall times measured in this one run; the ratios are what to compare
across machines.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clrfast as clr  # noqa: E402
from _common import best_time, fmt_time, machine, table  # noqa: E402


# ----------------------------------------------------------------------------- scheduler step()
def scheduler_rows(steps: int) -> list[list[str]]:
    """step() of torch's schedulers and transformers' factories against clrfast's drop-ins."""
    import clrfast.torch as ct
    import torch
    from torch.optim import lr_scheduler as L

    warnings.simplefilter("ignore")
    pairs = []  # (what, reference's name, make the reference, make clrfast's) from an optimizer
    for name, kwargs in (
        ("CyclicLR", dict(base_lr=1e-3, max_lr=6e-3, step_size_up=2000)),
        ("OneCycleLR", dict(max_lr=0.1, total_steps=10**9)),
        ("CosineAnnealingWarmRestarts", dict(T_0=1000, T_mult=2)),
    ):
        pairs.append((f"{name}.step()", "torch", getattr(L, name), getattr(ct, name), kwargs))
    try:
        import transformers
    except ImportError:
        transformers = None
    if transformers is not None:
        for name, kwargs in (
            ("get_cosine_schedule_with_warmup", dict(num_warmup_steps=100, num_training_steps=10**9)),
            ("get_linear_schedule_with_warmup", dict(num_warmup_steps=100, num_training_steps=10**9)),
            ("get_wsd_schedule", dict(num_warmup_steps=100, num_decay_steps=1000, num_training_steps=10**9)),
        ):
            pairs.append((f"{name}().step()", "transformers", getattr(transformers, name), getattr(ct, name), kwargs))
    rows = []
    for what, ref_name, make_ref, make_clr, kwargs in pairs:
        steppers = {}
        for label, make in (("reference", make_ref), ("clrfast", make_clr)):
            opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
            steppers[label] = make(opt, **kwargs).step
            opt.step()
            steppers[label]()  # past the first step (torch's order check)
        # Interleaved best-of-N, so that drifts in the machine's speed hit both alike.
        per_step = {label: float("inf") for label in steppers}
        for _ in range(7):
            for label, step in steppers.items():
                per_step[label] = min(per_step[label], best_time(step, number=steps, repeat=1))
        ratio = per_step["reference"] / per_step["clrfast"]
        rows.append(
            [what, f"{ref_name} {fmt_time(per_step['reference'])}", fmt_time(per_step["clrfast"]), f"{ratio:.1f}x"]
        )
    return rows


# ----------------------------------------------------------------------------- tables
def numpy_cyclic(n, base, top, up, down, mode="triangular", gamma=1.0):
    """torch's CyclicLR formula, vectorised with NumPy."""
    total = float(up) + float(down)
    ratio = float(up) / total
    t = np.arange(n, dtype=np.float64)
    q = t / total
    cycle = np.floor(1.0 + q)
    x = 1.0 + q - cycle
    s = np.where(x <= ratio, x / ratio, (x - 1.0) / (ratio - 1.0))
    if mode == "triangular2":
        return base + (top - base) * s * (1 / 2.0 ** (cycle - 1))
    if mode == "exp_range":
        return base + (top - base) * s * gamma**t
    return base + (top - base) * s


def numpy_restarts(n, base, T_0):
    """torch's CosineAnnealingWarmRestarts with T_mult=1, vectorised with NumPy."""
    t = np.arange(n, dtype=np.float64)
    return base * (1 + np.cos(np.pi * np.fmod(t, T_0) / T_0)) / 2


def python_cyclic(n, base, top, up, down, mode="triangular", gamma=1.0):
    """The same formula as a plain Python loop (what a pure-Python scheduler does per step)."""
    total = float(up) + float(down)
    ratio = float(up) / total
    out = []
    for t in range(n):
        cycle = math.floor(1 + t / total)
        x = 1.0 + t / total - cycle
        s = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
        scale = {"triangular": 1.0, "triangular2": 1 / (2.0 ** (cycle - 1))}.get(mode) or gamma**t
        out.append(base + (top - base) * s * scale)
    return out


def python_restarts(n, base, T_0):
    return [base * (1 + math.cos(math.pi * (t % T_0) / T_0)) / 2 for t in range(n)]


def numpy_onecycle(n, max_lr, total_steps, pct=0.3, div=25.0, final_div=1e4):
    """torch's OneCycleLR (two-phase, cos) vectorised with NumPy."""
    initial = max_lr / div
    low = initial / final_div
    end1 = float(pct * total_steps) - 1
    end2 = float(total_steps - 1)
    t = np.arange(n, dtype=np.float64)
    first = t <= end1
    pct1 = t / end1
    pct2 = (t - end1) / (end2 - end1)
    cos_up = max_lr + (initial - max_lr) / 2.0 * (np.cos(np.pi * pct1) + 1)
    cos_down = low + (max_lr - low) / 2.0 * (np.cos(np.pi * pct2) + 1)
    return np.where(first, cos_up, cos_down)


def python_onecycle(n, max_lr, total_steps, pct=0.3, div=25.0, final_div=1e4):
    initial = max_lr / div
    low = initial / final_div
    end1 = float(pct * total_steps) - 1
    end2 = total_steps - 1
    out = []
    for t in range(n):
        if t <= end1:
            start, end, p = initial, max_lr, t / end1
        else:
            start, end, p = max_lr, low, (t - end1) / (end2 - end1)
        out.append(end + (start - end) / 2.0 * (math.cos(math.pi * p) + 1))
    return out


def table_rows(n: int, python_n: int) -> list[list[str]]:
    g = 0.9999999  # exp_range: gamma**t stays above the base over 10^7 steps
    cases = [
        (
            "Cyclic triangular",
            clr.Cyclic(1e-3, 6e-3, step_size_up=2000),
            lambda m: numpy_cyclic(m, 1e-3, 6e-3, 2000, 2000),
            lambda m: python_cyclic(m, 1e-3, 6e-3, 2000, 2000),
        ),
        (
            "Cyclic triangular2",
            clr.Cyclic(1e-3, 6e-3, step_size_up=2000, mode="triangular2"),
            lambda m: numpy_cyclic(m, 1e-3, 6e-3, 2000, 2000, "triangular2"),
            lambda m: python_cyclic(m, 1e-3, 6e-3, 2000, 2000, "triangular2"),
        ),
        (
            "Cyclic exp_range",
            clr.Cyclic(1e-3, 6e-3, step_size_up=2000, mode="exp_range", gamma=g),
            lambda m: numpy_cyclic(m, 1e-3, 6e-3, 2000, 2000, "exp_range", g),
            lambda m: python_cyclic(m, 1e-3, 6e-3, 2000, 2000, "exp_range", g),
        ),
        (
            "CosineRestarts",
            clr.CosineRestarts(0.1, T_0=1000),
            lambda m: numpy_restarts(m, 0.1, 1000),
            lambda m: python_restarts(m, 0.1, 1000),
        ),
        (
            "OneCycle cos",
            clr.OneCycle(0.1, total_steps=n),
            lambda m: numpy_onecycle(m, 0.1, n),
            lambda m: python_onecycle(m, 0.1, n),
        ),
    ]
    out = np.empty(n)
    out.fill(0.0)  # fault the pages in once, so every "out=" row writes warm memory
    write_once = best_time(lambda: out.fill(1.0), repeat=7)
    alloc_write = best_time(lambda: np.empty(n).fill(1.0), repeat=5)
    rows = [
        [f"write the output once (out.fill), n={n:,}", fmt_time(write_once), "", "", "1.0x"],
        [f"allocate + write once (np.empty().fill), n={n:,}", fmt_time(alloc_write), "", "", ""],
    ]
    for label, sched, numpy_fn, python_fn in cases:
        assert np.allclose(sched.lr_table(5000), numpy_fn(5000), rtol=1e-12, atol=0)
        t_into = best_time(lambda s=sched: s.lr_table(n, out=out), repeat=7)
        t_alloc = best_time(lambda s=sched: s.lr_table(n), repeat=5)
        t_numpy = best_time(lambda f=numpy_fn: f(n), repeat=3)
        t_python = best_time(lambda f=python_fn: f(python_n), repeat=3) * (n / python_n)
        rows.append(
            [
                f"{label}: lr_table(n, out=)",
                fmt_time(t_into),
                f"{t_numpy / t_into:.0f}x",
                f"{t_python / t_into:.0f}x",
                f"{t_into / write_once:.2f}x",
            ]
        )
        rows.append(
            [
                f"{label}: lr_table(n)",
                fmt_time(t_alloc),
                f"{t_numpy / t_alloc:.0f}x",
                f"{t_python / t_alloc:.0f}x",
                f"{t_alloc / alloc_write:.2f}x (vs alloc+write)",
            ]
        )
        rows.append([f"{label}: NumPy vectorised", fmt_time(t_numpy), "1x", "", ""])
        rows.append([f"{label}: Python loop (from {python_n:,} steps)", fmt_time(t_python), "", "1x", ""])
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    ap.add_argument("--n", type=int, default=None, help="table length (default 10^7, 10^6 with --quick)")
    args = ap.parse_args(argv)
    n = args.n or (10**6 if args.quick else 10**7)
    steps = 20_000 if args.quick else 200_000
    python_n = min(n, 100_000 if args.quick else 1_000_000)

    print(f"Machine: {machine()}")
    print()
    print("Scheduler step() cost (per call, one param group, SGD with momentum)")
    print(table(["scheduler", "reference", "clrfast.torch", "speed-up"], scheduler_rows(steps)))
    print()
    print(f"Batch tables, float64, {n:,} steps ({os.cpu_count()} threads)")
    print(table(["what", "time", "vs NumPy", "vs Python", "vs writing the output"], table_rows(n, python_n)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
