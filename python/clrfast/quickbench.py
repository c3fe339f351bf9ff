"""``clrfast bench``: a few seconds of timings against torch and NumPy (the full suite is in bench/).

Each row times clrfast and its peer in the same process, best of several runs,
and reports ``peer / clrfast`` (above 1: clrfast is faster). A row whose pieces
are missing (no torch, a front end not built) prints ``n/a`` with the reason.
"""

from __future__ import annotations

import platform
import sys
import time
import warnings

import numpy as np


def best_time(fn, number: int = 1, repeat: int = 5) -> float:
    """Best (minimum) seconds per call of ``fn`` over ``repeat`` runs of ``number`` calls."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


def _fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


# ----------------------------------------------------------------------------- rows
def _scheduler_row(name, make_ours, make_peer, steps=2000):
    import torch

    def loop(make):
        def run():
            p = torch.nn.Parameter(torch.zeros(1))
            opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
            sched = make(opt)
            for _ in range(steps):
                sched.step()

        return run

    with warnings.catch_warnings():
        # Stepping the scheduler without optimizer.step() is the point here: time step() alone.
        warnings.simplefilter("ignore", UserWarning)
        ours = best_time(loop(make_ours), 1, 3) / steps
        peer = best_time(loop(make_peer), 1, 3) / steps
    return name, "per step()", ours, "torch", peer


def row_cyclic():
    import torch

    from clrfast.torch import CyclicLR

    kw = {"base_lr": 1e-3, "max_lr": 6e-3, "step_size_up": 200, "mode": "triangular2"}
    return _scheduler_row(
        "CyclicLR.step()", lambda o: CyclicLR(o, **kw), lambda o: torch.optim.lr_scheduler.CyclicLR(o, **kw)
    )


def row_onecycle():
    import torch

    from clrfast.torch import OneCycleLR

    kw = {"max_lr": 0.1, "total_steps": 2001}
    return _scheduler_row(
        "OneCycleLR.step()", lambda o: OneCycleLR(o, **kw), lambda o: torch.optim.lr_scheduler.OneCycleLR(o, **kw)
    )


def row_cosine():
    import torch

    from clrfast.torch import CosineAnnealingWarmRestarts

    kw = {"T_0": 100, "T_mult": 2}
    return _scheduler_row(
        "CosineAnnealingWarmRestarts.step()",
        lambda o: CosineAnnealingWarmRestarts(o, **kw),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, **kw),
    )


def row_table():
    import clrfast as clr

    n, base, top, up = 1_000_000, 1e-3, 6e-3, 2000.0
    s = clr.Cyclic(base, top, step_size_up=up)
    out = np.empty(n)
    t = np.arange(n, dtype=np.float64)

    def numpy_formula():
        # torch's CyclicLR formula, vectorised (the form a NumPy user would write).
        total = 2 * up
        cycle = np.floor(1 + t / total)
        x = 1.0 + t / total - cycle
        scale = np.where(x <= 0.5, x / 0.5, (x - 1) / (0.5 - 1))
        return base + (top - base) * scale

    ours = best_time(lambda: s.lr_table(n, out=out), 3)
    peer = best_time(numpy_formula, 3)
    return "Cyclic.lr_table(1e6)", "per table", ours, "NumPy formula", peer


def _sgd_row(label, shapes, steps=20):
    import torch

    import clrfast as clr
    from clrfast.torch import CLRSGD

    def params():
        g = torch.Generator().manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
        for p in ps:
            p.grad = torch.randn(p.shape, generator=g)
        return ps

    pa, pb = params(), params()
    ours = CLRSGD(pa, clr.Cyclic(1e-3, 6e-3, step_size_up=1000), momentum=0.9)
    peer = torch.optim.SGD(pb, lr=1e-3, momentum=0.9)
    ours.step()
    peer.step()
    t_ours = best_time(ours.step, steps)
    t_peer = best_time(peer.step, steps)
    return label, "per step()", t_ours, "torch.optim.SGD", t_peer


def row_sgd_small():
    return _sgd_row("CLRSGD, 100 tensors x 1k", [(1000,)] * 100)


def row_sgd_1m():
    return _sgd_row("CLRSGD, 4 tensors x 250k", [(250_000,)] * 4)


ROWS = [row_cyclic, row_onecycle, row_cosine, row_table, row_sgd_small, row_sgd_1m]

# What each row measures, printed when it cannot run.
LABELS = {
    "row_cyclic": "CyclicLR.step()",
    "row_onecycle": "OneCycleLR.step()",
    "row_cosine": "CosineAnnealingWarmRestarts.step()",
    "row_table": "Cyclic.lr_table(1e6)",
    "row_sgd_small": "CLRSGD, 100 tensors x 1k",
    "row_sgd_1m": "CLRSGD, 4 tensors x 250k",
}


def run(stream=None) -> list:
    """Time every row and print the table; returns the rows (None timings where n/a)."""
    stream = stream or sys.stdout
    results = []
    header = f"{'case':<36} {'unit':<11} {'clrfast':>10} {'peer':<16} {'peer time':>10} {'speedup':>8}"
    print(
        f"clrfast quick bench ({platform.machine()}, Python {platform.python_version()}); "
        "speedup = peer time / clrfast time",
        file=stream,
    )
    print(header, file=stream)
    print("-" * len(header), file=stream)
    for fn in ROWS:
        name = LABELS.get(fn.__name__, fn.__name__.removeprefix("row_"))
        try:
            case, unit, ours, peer_name, peer = fn()
        except Exception as e:  # a missing piece must not stop the other rows
            reason = " ".join(str(e).split())[:100] or type(e).__name__
            print(f"{name:<36} n/a ({type(e).__name__}: {reason})", file=stream, flush=True)
            results.append({"case": name, "ours": None, "peer": None, "error": reason})
            continue
        print(
            f"{case:<36} {unit:<11} {_fmt(ours):>10} {peer_name:<16} {_fmt(peer):>10} {peer / ours:>7.2f}x",
            file=stream,
            flush=True,
        )
        results.append({"case": case, "ours": ours, "peer": peer, "peer_name": peer_name})
    return results
