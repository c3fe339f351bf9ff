"""``clrfast demo``: the LR range test and seven LR policies on real data, in about a minute on a CPU.

A small CNN learns scikit-learn's bundled handwritten digits (1797 8x8 images,
shipped inside scikit-learn, nothing is downloaded). The demo

1. runs the LR range test (:func:`clrfast.torch.lr_find`) over a few seeds and
   reads ``base_lr`` and ``max_lr`` off the curve;
2. trains with :class:`clrfast.torch.CLRSGD` under a fixed LR, ``triangular``,
   ``triangular2``, ``exp_range`` and one-cycle, and with
   :class:`clrfast.torch.CLRAdamW` under fastai's one-cycle recipe (beta1
   0.95 -> 0.85 -> 0.95), and with :class:`clrfast.torch.CLRScheduleFreeAdamW`
   (a short warmup, then a constant lr; evaluated at its average), each for the
   same number of iterations and the same seeds;
3. prints a table in the spirit of Smith's Table 1 (final test accuracy mean ± std,
   iterations to reach a target accuracy) and writes PNGs of the range test, the
   schedules and the accuracy curves.

Every random draw comes from seeded generators, so a run with the same seeds and
thread count prints the same numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

TARGET_ACC = 0.98


@dataclass(frozen=True)
class Config:
    iterations: int = 400
    seeds: tuple = (0, 1, 2)
    batch_size: int = 64
    eval_every: int = 10
    cycles: int = 4  # triangular cycles in the budget: step_size_up = iterations/(2*cycles)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    adamw_max_lr: float = 3e-3  # fastai v1's fit_one_cycle default; see ADAMW_RECIPE
    adamw_weight_decay: float = 1e-2  # CLRAdamW's (and torch's AdamW's) default, fastai's wd too
    sf_lr: float = 5e-3  # schedule-free AdamW's constant lr (see the README's demo section)
    sf_warmup: float = 0.05  # its warmup, as a fraction of the iterations
    sweep_steps: int = 200
    sweep_start: float = 1e-4
    sweep_end: float = 10.0
    target: float = TARGET_ACC
    threads: int = 1


FAST = Config(iterations=120, seeds=(0, 1), eval_every=20, cycles=2, sweep_steps=40)

# fastai's fit_one_cycle recipe for AdamW: the lr rises from max_lr/25 to max_lr over the first quarter of
# the run, then anneals (cosine) to max_lr/25/1e5; beta1 mirrors it, 0.95 -> 0.85 (at the lr peak) -> 0.95.
# max_lr is Config.adamw_max_lr, not the SGD range test's: Adam's useful lrs sit an order of magnitude lower.
ADAMW_RECIPE: dict[str, Any] = dict(
    pct_start=0.25, div_factor=25.0, final_div_factor=1e5, base_momentum=0.85, max_momentum=0.95, anneal="cos"
)
# Which optimizer trains each policy (the rest: CLRSGD).
OPTIMIZERS = {"adamw_onecycle": "adamw", "schedulefree": "sf_adamw"}
OPTIMIZER_NAMES = {"sgd": "CLRSGD", "adamw": "CLRAdamW", "sf_adamw": "CLRScheduleFreeAdamW"}


def _require():
    missing = []
    for mod, pkg in (("torch", "torch"), ("sklearn", "scikit-learn"), ("matplotlib", "matplotlib")):
        try:
            __import__(mod)
        except ImportError:
            missing.append(pkg)
    if missing:
        raise ImportError(f"clrfast demo needs {', '.join(missing)}: pip install 'clrfast[demo]'")


# ----------------------------------------------------------------------------- data and model
def load_data():
    """Digits as float32 tensors ``(N, 1, 8, 8)`` scaled to [0, 1], split 75/25, stratified, fixed."""
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    mean, std = xtr.mean(), xtr.std()
    norm = lambda a: torch.from_numpy((a - mean) / std)  # noqa: E731
    return norm(xtr), torch.from_numpy(ytr), norm(xte), torch.from_numpy(yte)


class Batches:
    """Shuffled mini-batches of ``(x, y)``; a new order every pass, drawn from ``generator``.

    Without a generator the order comes from torch's global RNG, so :func:`lr_find`'s
    ``seeds`` give each repeat its own order.
    """

    def __init__(self, x, y, batch_size, generator=None):
        self.x, self.y, self.batch_size, self.generator = x, y, batch_size, generator

    def __len__(self):
        return len(self.x) // self.batch_size

    def __iter__(self):
        import torch

        perm = torch.randperm(len(self.x), generator=self.generator)
        for i in range(len(self)):
            idx = perm[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.x[idx], self.y[idx]


def make_model(seed: int):
    """3x3 conv, max-pool, 3x3 conv, two linear layers: 38k parameters, ~3 ms per step on one core."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def make_optimizer(params, schedule, cfg: Config, rule: str = "sgd"):
    """The one place the demo builds its optimizers: lr (and momentum or beta1, where defined) from ``schedule``.

    ``rule="sgd"``: :class:`~clrfast.torch.CLRSGD`; ``rule="adamw"``: :class:`~clrfast.torch.CLRAdamW` with
    torch's betas/eps defaults, beta1 replaced by the schedule's momentum; ``rule="sf_adamw"``:
    :class:`~clrfast.torch.CLRScheduleFreeAdamW` with the package's betas/eps defaults, in train mode.
    """
    from clrfast.torch import CLRSGD, CLRAdamW, CLRScheduleFreeAdamW

    if rule == "sgd":
        return CLRSGD(params, schedule, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if rule == "adamw":
        return CLRAdamW(params, schedule, weight_decay=cfg.adamw_weight_decay)
    if rule == "sf_adamw":
        opt = CLRScheduleFreeAdamW(params, schedule=schedule, weight_decay=cfg.adamw_weight_decay)
        opt.train()
        return opt
    raise ValueError(f"rule must be one of {', '.join(map(repr, OPTIMIZER_NAMES))}, got {rule!r}")


def accuracy(model, x, y) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).double().mean().item()
    model.train()
    return acc


# ----------------------------------------------------------------------------- the demo
def policies(result, cfg: Config) -> dict:
    """The seven schedules over ``cfg.iterations`` steps: five for SGD from the range test's bounds, two for AdamW."""
    import clrfast as clr

    n = cfg.iterations
    step = n // (2 * cfg.cycles)
    return {
        "fixed": clr.Constant((result.base_lr + result.max_lr) / 2),
        "triangular": result.to_schedule("triangular", step_size_up=step),
        "triangular2": result.to_schedule("triangular2", step_size_up=step),
        "exp_range": result.to_schedule("exp_range", step_size_up=step, total_steps=n),
        "onecycle": result.to_schedule("onecycle", total_steps=n),
        "adamw_onecycle": clr.OneCycle(cfg.adamw_max_lr, total_steps=n, **ADAMW_RECIPE),
        "schedulefree": clr.Warmup(0.0, cfg.sf_lr, max(1, round(cfg.sf_warmup * n))),
    }


def describe(name: str, s) -> str:
    if name == "fixed":
        return f"lr={s.lr_value:.3g} (mean of the cycle)"
    if name in ("onecycle", "adamw_onecycle"):
        return f"{s.max_lr / s.div_factor:.3g} -> {s.max_lr:.3g} -> {s.max_lr / s.div_factor / s.final_div_factor:.2g}"
    if name == "schedulefree":
        return f"0 -> {s.end_lr:.3g} over {s.warmup_steps}, then constant"
    extra = f", gamma={s.gamma:.5f}" if s.mode == "exp_range" else ""
    return f"{s.base_lr:.3g}..{s.max_lr:.3g}, step {s.step_size_up:g}{extra}"


def train(schedule, seed: int, data, cfg: Config, bar=None, rule: str = "sgd"):
    """Train one model (``rule``: see :func:`make_optimizer`); returns the test accuracy at every ``eval_every``
    steps and at the end. A schedule-free optimizer is evaluated at its average x (``opt.averaged()``: ``eval()``,
    then ``train()`` again); its gradients are taken at y."""
    import torch
    import torch.nn.functional as F

    xtr, ytr, xte, yte = data
    model = make_model(seed)
    opt = make_optimizer(model.parameters(), schedule, cfg, rule)
    gen = torch.Generator().manual_seed(seed)
    loader = Batches(xtr, ytr, cfg.batch_size, generator=gen)
    steps, accs = [], []
    t = 0
    while t < cfg.iterations:
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            t += 1
            if t % cfg.eval_every == 0 or t == cfg.iterations:
                steps.append(t)
                with opt.averaged() if hasattr(opt, "averaged") else contextlib.nullcontext():
                    accs.append(accuracy(model, xte, yte))
            if bar is not None:
                bar.update(1)
            if t == cfg.iterations:
                break
    if not math.isfinite(loss.item()):
        accs[-1] = float("nan")
    return np.array(steps), np.array(accs)


def run_demo(out="clrfast-demo", cfg: Config = Config(), quiet=False, stream=None) -> dict:
    """Run the whole demo; print the table to ``stream`` (stdout) and write PNGs under ``out``."""
    _require()
    import torch
    import torch.nn.functional as F

    from clrfast.torch import lr_find

    stream = stream or sys.stdout
    say = lambda *a: print(*a, file=stream, flush=True)  # noqa: E731
    os.makedirs(out, exist_ok=True)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(cfg.threads, os.cpu_count() or 1)))
    t0 = time.perf_counter()
    try:
        data = load_data()
        xtr, ytr = data[0], data[1]
        say(
            f"clrfast demo: a {sum(p.numel() for p in make_model(0).parameters()):,}-parameter CNN on "
            f"scikit-learn's digits ({len(xtr)} train / {len(data[2])} test images), "
            f"{cfg.iterations} iterations per run, seeds {', '.join(map(str, cfg.seeds))}"
        )

        # 1. LR range test: same model init, each seed its own batch order.
        result = lr_find(
            make_model(cfg.seeds[0]),
            F.cross_entropy,
            Batches(xtr, ytr, cfg.batch_size),
            start_lr=cfg.sweep_start,
            end_lr=cfg.sweep_end,
            num_steps=cfg.sweep_steps,
            seeds=list(cfg.seeds),
            progress=not quiet,
        )
        result.plot(os.path.join(out, "range_test.png"), title="LR range test, digits CNN, CLRSGD momentum 0.9")
        spread = [r["max_lr"] for r in result.runs]
        say(
            f"LR range test ({len(result.lrs)} steps, {result.stop_reason} at lr={result.diverged_lr or 0:.3g}): "
            f"loss min at {result.lr_min:.3g}, steepest at {result.lr_steep:.3g} -> "
            f"max_lr={result.max_lr:.3g}, base_lr={result.base_lr:.3g} "
            f"(max_lr per seed {min(spread):.3g}..{max(spread):.3g})"
        )

        # 2. Train every policy for every seed.
        scheds = policies(result, cfg)
        total = len(scheds) * len(cfg.seeds) * cfg.iterations
        bar = None
        if not quiet:
            try:
                from tqdm.auto import tqdm

                bar = tqdm(total=total, desc="training", unit="it", leave=False)
            except ImportError:
                bar = None
        curves = {}
        try:
            for name, sched in scheds.items():
                runs = []
                for seed in cfg.seeds:
                    if bar is not None:
                        bar.set_description(f"{name} seed {seed}")
                    runs.append(train(sched, seed, data, cfg, bar, OPTIMIZERS.get(name, "sgd")))
                curves[name] = (runs[0][0], np.stack([r[1] for r in runs]))
        finally:
            if bar is not None:
                bar.close()

        # 3. The table.
        rows = []
        for name, (steps, accs) in curves.items():
            final = accs[:, -1]
            hit = [int(steps[np.argmax(a >= cfg.target)]) if (a >= cfg.target).any() else None for a in accs]
            reached = [h for h in hit if h is not None]
            rows.append(
                {
                    "policy": name,
                    "optimizer": OPTIMIZER_NAMES[OPTIMIZERS.get(name, "sgd")],
                    "schedule": describe(name, scheds[name]),
                    "acc_mean": float(np.mean(final)),
                    "acc_std": float(np.std(final)),
                    "iters_to_target": hit,
                    "iters_mean": float(np.mean(reached)) if reached else None,
                }
            )
        _print_table(rows, cfg, say)
        _plot_schedules(scheds, cfg, os.path.join(out, "schedules.png"))
        _plot_accuracy(curves, cfg, os.path.join(out, "accuracy.png"))
        elapsed = time.perf_counter() - t0
        summary = {
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()},
            "range_test": {
                "max_lr": result.max_lr,
                "base_lr": result.base_lr,
                "lr_min": result.lr_min,
                "lr_steep": result.lr_steep,
                "stop_reason": result.stop_reason,
            },
            "rows": rows,
            "seconds": elapsed,
        }
        with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=2)
        threads = torch.get_num_threads()
        say(
            f"wrote {out}/range_test.png, schedules.png, accuracy.png, results.json ({elapsed:.0f} s, "
            f"{threads} thread{'s' if threads != 1 else ''})"
        )
        return summary
    finally:
        torch.set_num_threads(threads_before)


def _print_table(rows, cfg: Config, say) -> None:
    target = f"iters to {cfg.target:.0%} (runs)"
    say("")
    say(f"{'policy':<14} {'schedule (lr)':<38} {'final test acc':>16}   {target}")
    say(f"{'-' * 14} {'-' * 38} {'-' * 16}   {'-' * len(target)}")
    for r in rows:
        acc = f"{100 * r['acc_mean']:.2f} ± {100 * r['acc_std']:.2f} %"
        n_hit = sum(h is not None for h in r["iters_to_target"])
        runs = len(r["iters_to_target"])
        its = f"{r['iters_mean']:.0f} ({n_hit}/{runs})" if n_hit else f"never (0/{runs})"
        say(f"{r['policy']:<14} {r['schedule']:<38} {acc:>16}   {its}")
    say("")


_COLORS = {
    "fixed": "0.4",
    "triangular": "tab:blue",
    "triangular2": "tab:green",
    "exp_range": "tab:purple",
    "onecycle": "tab:red",
    "adamw_onecycle": "tab:orange",
    "schedulefree": "tab:brown",
}


def _plot_schedules(scheds, cfg: Config, path) -> None:
    """SGD lrs on the left axis; the AdamW rules' (an order of magnitude smaller) dashed on a right axis."""
    from clrfast.plotting import new_figure, save

    fig = new_figure(figsize=(6.4, 3.4), dpi=90)
    ax = fig.add_subplot(1, 1, 1)
    steps = np.arange(cfg.iterations)
    adamw = [name for name in scheds if name in OPTIMIZERS]
    lines, top = [], 0.0
    for name, s in scheds.items():
        if name not in adamw:
            lrs = s.lr_table(steps)
            top = max(top, float(lrs.max()))
            lines += ax.plot(steps, lrs, label=name, color=_COLORS[name], lw=1.3)
    ax.set_xlabel("iteration")
    ax.set_ylabel("learning rate (SGD)")
    ax.grid(alpha=0.3)
    if adamw:
        ax2 = ax.twinx()
        top2 = 0.0
        for name in adamw:
            lrs = scheds[name].lr_table(steps)
            top2 = max(top2, float(lrs.max()))
            lines += ax2.plot(steps, lrs, label=f"{name} (right axis)", color=_COLORS[name], lw=1.3, ls="--")
        ax2.set_ylabel("learning rate (AdamW)", color=_COLORS[adamw[0]])
        ax2.tick_params(axis="y", colors=_COLORS[adamw[0]])
        ax2.set_ylim(0, 1.35 * top2)  # headroom for the legend, as on the left
    ax.set_ylim(0, 1.35 * top)
    ax.set_title("the policies: SGD's bounds from the range test, AdamW's at their own scale", fontsize=10)
    ax.legend(lines, [ln.get_label() for ln in lines], fontsize=7, ncol=3, loc="upper right")
    save(fig, path)


def _plot_accuracy(curves, cfg: Config, path) -> None:
    from clrfast.plotting import new_figure, save

    fig = new_figure(figsize=(6.4, 3.6), dpi=90)
    ax = fig.add_subplot(1, 1, 1)
    for name, (steps, accs) in curves.items():
        mean = accs.mean(0)
        ls = "--" if name in OPTIMIZERS else "-"
        ax.plot(steps, 100 * mean, label=name, color=_COLORS[name], lw=1.3, ls=ls)
        if len(accs) > 1:
            ax.fill_between(steps, 100 * accs.min(0), 100 * accs.max(0), color=_COLORS[name], alpha=0.15)
    ax.axhline(100 * cfg.target, color="k", lw=0.8, ls=":")
    ax.set_ylim(80, 100)
    ax.set_xlabel("iteration")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"test accuracy, mean and range over {len(cfg.seeds)} seeds", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    save(fig, path)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="clrfast-demo", help="folder for the PNGs and results.json (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default: 3; --fast: 2)")
    p.add_argument("--seed", type=int, default=0, help="first seed (default: %(default)s)")
    p.add_argument("--iterations", type=int, default=None, help="iterations per run (default: 400; --fast: 120)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    p.add_argument("--fast", action="store_true", help="a few seconds: fewer iterations and seeds (for tests)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def config_from_args(args) -> Config:
    base = FAST if args.fast else Config()
    n_seeds = args.seeds if args.seeds is not None else len(base.seeds)
    if n_seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {n_seeds}")
    iterations = args.iterations if args.iterations is not None else base.iterations
    if iterations < 2 * base.cycles or iterations < base.eval_every:
        raise ValueError(f"--iterations must be >= {max(2 * base.cycles, base.eval_every)}, got {iterations}")
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    return Config(
        **{
            **base.__dict__,
            "iterations": iterations,
            "seeds": tuple(range(args.seed, args.seed + n_seeds)),
            "threads": args.threads,
        }
    )
