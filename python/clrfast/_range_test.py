"""The LR range test (Smith 2017, section 3.3), written once for every front end.

Train for a few hundred steps while the learning rate rises from ``start_lr`` to ``end_lr``
(the sweep is :class:`clrfast.RangeSweep`, computed by the C++ core), record the loss, stop
when it diverges, and read the bounds off the curve. This module holds everything that does
not depend on a framework: the argument checks, the sweep loop with its smoothing and
divergence rule, the repetition over seeds, the suggestion rule and :class:`LRFindResult`
with its plot and :meth:`~LRFindResult.to_schedule`.

A front end supplies one function, ``step(lr) -> loss``, that trains one optimizer step at
``lr`` and returns its loss (``None`` when the data ran out), and puts its model back
afterwards: :func:`clrfast.torch.lr_find`, :func:`clrfast.keras.lr_find` and
:func:`clrfast.optax.lr_find` are such front ends.

Importing this module needs only NumPy (and matplotlib for :meth:`LRFindResult.plot`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import _validate as check
from .schedules import CosineRestarts, Cyclic, OneCycle, RangeSweep

MIN_STEPS = 10
"""The fewest optimizer steps a range test can read a suggestion from."""

_AUTO_PROGRESS_STEPS = 200


# ----------------------------------------------------------------------------- suggestion rule
def _check_divs(min_div, base_div) -> tuple[float, float]:
    # Below 1 the names would lie: max_lr would pass lr_min, base_lr would pass max_lr.
    return check.real("min_div", min_div, min=1.0), check.real("base_div", base_div, min=1.0)


def _diverged(s: float, best: float, factor: float) -> bool:
    # A ratio to the best is meaningless once the best is negative (s > 4*best would hold at once);
    # measuring the rise in units of |best| keeps the usual s > factor*best for positive losses.
    return s - best > (factor - 1.0) * abs(best)


def suggest(lrs: Sequence[float], smoothed: Sequence[float], *, min_div: float = 4.0, base_div: float = 4.0) -> dict:
    r"""The bounds read off a range-test curve; the rule every front end's ``lr_find`` uses.

    With ``x = log(lr)`` and ``L`` the smoothed loss:

    * ``lr_min``: the lr where ``L`` is smallest, i.e. where the loss stops falling;
    * ``lr_steep``: the lr of the steepest descent, ``argmin dL/dx`` over the points up to
      ``lr_min``; the slope at ``i`` is the difference quotient over ``i-k .. min(i+k, i_min)``
      with ``k = max(1, n // 40)``, which a single noisy point cannot dominate;
    * both are searched after the first 10 % of the ``n`` points, where the average has seen
      too few batches to be trusted;
    * ``max_lr = max(lr_steep, lr_min / min_div)``: a step back from the minimum, which the
      lagging average reaches late and where training is already at its edge, but never
      below the steepest descent;
    * ``base_lr = max_lr / base_div`` (Smith: 3 to 4).

    ``min_div`` and ``base_div`` must be finite and >= 1. Returns a dict with those four
    values and the indices ``i_min`` and ``i_steep``.
    """
    min_div, base_div = _check_divs(min_div, base_div)
    lr = np.asarray(lrs, dtype=np.float64)
    loss = np.asarray(smoothed, dtype=np.float64)
    if lr.shape != loss.shape or lr.ndim != 1:
        raise ValueError(f"lrs and smoothed must be 1-D of the same length, got {lr.shape} and {loss.shape}")
    if not np.isfinite(loss).all() or len(loss) < 3:
        raise ValueError(f"smoothed must hold at least 3 losses, all finite, got {loss!r}")
    if (lr <= 0).any() or (np.diff(lr) <= 0).any():
        raise ValueError("lrs must be positive and increasing")
    n = len(loss)
    skip = n // 10
    i_min = skip + int(np.argmin(loss[skip:]))
    x = np.log(lr)
    k = max(1, n // 40)
    lo, hi = np.clip(np.arange(n) - k, 0, n - 1), np.clip(np.arange(n) + k, 0, max(i_min, 1))
    dx = x[hi] - x[lo]
    slope = np.divide(loss[hi] - loss[lo], dx, out=np.full(n, np.inf), where=dx > 0)
    i_steep = skip + int(np.argmin(slope[skip : i_min + 1]))
    lr_min, lr_steep = float(lr[i_min]), float(lr[i_steep])
    max_lr = max(lr_steep, lr_min / min_div)
    return {
        "max_lr": max_lr,
        "base_lr": max_lr / base_div,
        "lr_min": lr_min,
        "lr_steep": lr_steep,
        "i_min": i_min,
        "i_steep": i_steep,
    }


# ----------------------------------------------------------------------------- result
@dataclass
class LRFindResult:
    """Curves and suggestions of one LR range test (several seeds: mean curve plus band).

    ``lrs``, ``losses`` (raw, mean over seeds), ``smoothed`` and ``val`` (None unless a
    validation loader/function was given) share one index, the optimizer step. With
    several seeds ``band`` is ``(low, high)``, the smallest and largest smoothed loss at
    each step, and ``runs`` holds every seed's own curves and suggestion. ``stop_reason``
    is ``"diverged"`` (see :func:`run_sweep` for the rule), ``"nan"``
    (a NaN/inf loss), ``"end"`` (reached ``end_lr``) or ``"data"`` (the loader ran out).
    """

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    val: np.ndarray | None
    max_lr: float
    base_lr: float
    lr_min: float
    lr_steep: float
    stop_reason: str
    diverged_lr: float | None
    start_lr: float
    end_lr: float
    mode: str
    seeds: list[int] | None = None
    band: tuple | None = None
    runs: list[dict] = field(default_factory=list)

    def __repr__(self) -> str:
        spread = ""
        if len(self.runs) > 1:
            m = np.array([r["max_lr"] for r in self.runs])
            spread = f", max_lr over {len(m)} seeds {m.min():.3g}..{m.max():.3g}"
        return (
            f"LRFindResult(max_lr={self.max_lr:.4g}, base_lr={self.base_lr:.4g}, lr_min={self.lr_min:.4g}, "
            f"lr_steep={self.lr_steep:.4g}, steps={len(self.lrs)}, stop={self.stop_reason!r}{spread})"
        )

    def to_schedule(self, policy: str = "triangular", step_size_up=None, total_steps=None, **kwargs):
        """A clrfast schedule built from the suggested bounds.

        * ``triangular`` / ``triangular2`` / ``exp_range``: ``Cyclic(base_lr, max_lr, step_size_up,
          mode=policy)``; exp_range's ``gamma`` defaults to ``0.1**(1/total_steps)`` (the
          amplitude falls tenfold over the run) when ``total_steps`` is given;
        * ``onecycle``: ``OneCycle(max_lr, total_steps, div_factor=max_lr/base_lr)``, so it
          starts at ``base_lr``;
        * ``cosine``: ``CosineRestarts(max_lr, T_0=step_size_up or total_steps, eta_min=base_lr)``.

        Extra keyword arguments go to the schedule's constructor and win over these defaults.
        """
        policies = ("triangular", "triangular2", "exp_range", "onecycle", "cosine")
        check.choice("policy", policy, policies)
        if policy in ("triangular", "triangular2", "exp_range"):
            if step_size_up is None:
                raise ValueError(f"policy={policy!r} needs step_size_up (e.g. 2-10 epochs of iterations)")
            args = {"base_lr": self.base_lr, "max_lr": self.max_lr, "step_size_up": step_size_up, "mode": policy}
            if policy == "exp_range" and total_steps is not None:
                args["gamma"] = 0.1 ** (1.0 / check.integer("total_steps", total_steps, min=1))
            args.update(kwargs)
            return Cyclic(**args)
        if policy == "onecycle":
            if total_steps is None:
                raise ValueError("policy='onecycle' needs total_steps")
            args = {"max_lr": self.max_lr, "total_steps": total_steps, "div_factor": self.max_lr / self.base_lr}
            args.update(kwargs)
            return OneCycle(**args)
        period = step_size_up if step_size_up is not None else total_steps
        if period is None:
            raise ValueError("policy='cosine' needs step_size_up (the first period T_0) or total_steps")
        args = {"base_lr": self.max_lr, "T_0": int(period), "eta_min": self.base_lr}
        args.update(kwargs)
        return CosineRestarts(**args)

    def plot(self, path=None, *, ax=None, title=None, figsize=(6.4, 4.0), dpi=100):
        """Draw the smoothed loss against lr (log axis) with the suggestions marked; return the Figure.

        Raw losses are drawn faintly, the seed spread as a band, ``max_lr``/``base_lr`` as
        vertical lines, ``lr_min`` and ``lr_steep`` as dots, and the validation curve (if
        recorded) on a second axis. With ``path`` the PNG is written there.
        """
        from .plotting import new_figure, save

        if ax is None:
            fig = new_figure(figsize=figsize, dpi=dpi)
            ax = fig.add_subplot(1, 1, 1)
        else:
            fig = ax.figure
        lrs = self.lrs
        if self.mode == "exp":
            ax.set_xscale("log")
        ax.plot(lrs, self.losses, color="0.75", lw=0.8, label="loss (raw)")
        if self.band is not None:
            ax.fill_between(
                lrs,
                self.band[0],
                self.band[1],
                color="tab:blue",
                alpha=0.2,
                label=f"spread over {len(self.runs)} seeds",
            )
        ax.plot(lrs, self.smoothed, color="tab:blue", lw=1.8, label="loss (smoothed)")
        ax.axvline(self.max_lr, color="tab:red", ls="--", lw=1.2, label=f"max_lr = {self.max_lr:.3g}")
        ax.axvline(self.base_lr, color="tab:green", ls="--", lw=1.2, label=f"base_lr = {self.base_lr:.3g}")
        for lr, name, color in ((self.lr_min, "min", "k"), (self.lr_steep, "steepest", "tab:purple")):
            i = int(np.argmin(np.abs(lrs - lr)))
            ax.plot([lr], [self.smoothed[i]], "o", color=color, ms=5, label=f"{name} at {lr:.3g}")
        # Frame the descent; the divergence may leave through the top.
        i_min = int(np.argmin(self.smoothed))
        curves = [self.smoothed[: i_min + 1], self.losses[: i_min + 1]]
        curves += [b[: i_min + 1] for b in self.band] if self.band else []
        lo = min(float(c.min()) for c in curves)
        hi = max(float(c.max()) for c in curves)
        pad = 0.08 * (hi - lo) + 1e-12
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3, which="both")
        if self.val is not None and np.isfinite(self.val).any():
            ax2 = ax.twinx()
            ax2.plot(lrs, self.val, color="tab:orange", lw=1.0, label="validation")
            ax2.set_ylabel("validation", color="tab:orange")
        ax.legend(fontsize=7, loc="upper left")
        ax.set_title(title or f"LR range test ({self.stop_reason})", fontsize=10)
        if path is not None:
            save(fig, path)
        return fig


# ----------------------------------------------------------------------------- arguments
@dataclass(frozen=True)
class Settings:
    """The checked arguments every front end's ``lr_find`` shares."""

    sweep: RangeSweep
    smooth: float
    diverge: float
    val_every: int
    min_div: float
    base_div: float

    @property
    def num_steps(self) -> int:
        return self.sweep.num_steps

    def lrs(self) -> np.ndarray:
        """The lr of every step of the sweep, computed by the core."""
        return self.sweep.lr_table(self.sweep.num_steps)


def settings(start_lr, end_lr, num_steps, mode, smooth, diverge, val_every=1, min_div=4.0, base_div=4.0) -> Settings:
    """Checks the shared arguments (each error names the argument and its value)."""
    check.choice("mode", mode, ("exp", "linear"))
    sweep = RangeSweep(start_lr, end_lr, check.integer("num_steps", num_steps, min=MIN_STEPS), mode)
    if not end_lr > start_lr:
        raise ValueError(f"end_lr must be > start_lr, got start_lr={start_lr!r}, end_lr={end_lr!r}")
    beta = check.real("smooth", smooth, min=0.0, max=0.999)
    diverge = check.real("diverge", diverge, min=1.0, min_open=True)
    val_every = check.integer("val_every", val_every, min=1)
    min_div, base_div = _check_divs(min_div, base_div)
    return Settings(sweep, beta, diverge, val_every, min_div, base_div)


def check_seeds(seeds, data, check_seed: Callable[[str, object], int] = check.integer, name="loader") -> list | None:
    """``seeds`` as a list of checked integers (None stays None).

    More than one seed reads ``data`` (the argument ``name``) once per seed, so a one-shot
    iterator is refused.
    """
    if seeds is None:
        return None
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
        raise TypeError(f"seeds must be a sequence of integers, got {seeds!r}")
    seeds = [check_seed(f"seeds[{i}]", s) for i, s in enumerate(seeds)]
    if not seeds:
        raise ValueError("seeds must not be empty")
    if len(seeds) > 1 and isinstance(data, Iterator):
        raise ValueError(
            f"seeds={seeds} repeats the test, but {name} is a one-shot iterator "
            f"({type(data).__name__}) that the second seed would find empty: pass a "
            f"re-iterable {name} (a list, a DataLoader) or a single seed"
        )
    return seeds


def check_progress(progress) -> None:
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be True, False or None, got {progress!r}")


def progress_bar(total: int, progress, desc: str = "lr_find"):
    """A tqdm bar when asked for (None: only for runs of 200 steps or more, and only if tqdm is installed)."""
    if progress is None:
        progress = total >= _AUTO_PROGRESS_STEPS
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, leave=False, unit="step")


# ----------------------------------------------------------------------------- data
class Batches:
    """Yields batches, starting a new pass over a re-iterable loader when one runs out."""

    def __init__(self, loader):
        self.loader = loader
        # Not iter(loader) is loader: that would start (and drop) a DataLoader's workers.
        self.one_shot = isinstance(loader, Iterator)
        self.it = iter(loader)
        self.count = 0

    def next(self):
        try:
            batch = next(self.it)
        except StopIteration:
            if self.one_shot or self.count == 0:
                return None
            self.it = iter(self.loader)
            try:
                batch = next(self.it)
            except StopIteration:
                return None
        self.count += 1
        return batch


# ----------------------------------------------------------------------------- the test
def run_sweep(
    step: Callable[[float], float | None],
    lrs,
    *,
    smooth: float,
    diverge: float,
    validate: Callable[[], float] | None = None,
    val_every: int = 1,
    bar=None,
    describe_data: Callable[[], str] = lambda: "",
) -> dict:
    r"""One run of the range test: ``step(lr)`` for each ``lr`` of ``lrs`` until it stops.

    ``step(lr)`` trains one optimizer step at ``lr`` and returns its loss as a float, or None
    when the data ran out (the run stops with ``"data"``). A NaN or infinite loss stops the
    run with ``"nan"`` and is not recorded. The recorded loss's bias-corrected moving average
    ``s_t = a_t/(1 - smooth**(t+1))``, ``a_t = smooth*a_{t-1} + (1-smooth)*loss_t``, is the
    curve read.

    Divergence: the run stops when ``s_t - best > (diverge - 1)*|best|``, ``best`` being the
    smallest ``s`` so far, i.e. ``s_t > diverge*best`` for positive losses. Losses that can be
    negative (e.g. a log-likelihood) are judged by the same rise in units of ``|best|``: with
    ``diverge=4`` and ``best=-2`` the run stops above ``4``. Otherwise it ends with ``"end"``
    after the last lr.

    ``validate()``, when given, is called after every ``val_every``-th step (from the first)
    and its value recorded (NaN between). Raises ValueError when fewer than ``MIN_STEPS``
    steps were recorded; ``describe_data()`` says in that message what the data was.

    Returns a dict with ``lrs``, ``losses``, ``smoothed``, ``val`` (None without
    ``validate``), ``stop_reason`` and ``diverged_lr``.
    """
    lrs_all = np.asarray(lrs, dtype=np.float64)
    losses: list[float] = []
    smoothed: list[float] = []
    val: list[float] = []
    avg, best = 0.0, math.inf
    stop, diverged_lr = "end", None
    for t, lr in enumerate(lrs_all):
        step_loss = step(float(lr))
        if step_loss is None:
            stop = "data"
            break
        step_loss = float(step_loss)
        if not math.isfinite(step_loss):
            stop, diverged_lr = "nan", float(lr)
            break
        avg = smooth * avg + (1.0 - smooth) * step_loss
        s = avg / (1.0 - smooth ** (t + 1))
        losses.append(step_loss)
        smoothed.append(s)
        if validate is not None:
            val.append(float(validate()) if t % val_every == 0 else math.nan)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(lr=f"{lr:.2e}", loss=f"{s:.4f}", refresh=False)
        best = min(best, s)
        if _diverged(s, best, diverge):
            stop, diverged_lr = "diverged", float(lr)
            break
    n = len(losses)
    if n < MIN_STEPS:
        where = f"diverged at lr={diverged_lr:.3g} " if diverged_lr is not None else ""
        data = describe_data()
        raise ValueError(
            f"the range test {where}recorded only {n} steps{f' ({data})' if data else ''}; "
            f"it needs at least {MIN_STEPS}: use more data or a lower start_lr"
        )
    return {
        "lrs": lrs_all[:n].copy(),
        "losses": np.asarray(losses),
        "smoothed": np.asarray(smoothed),
        "val": np.asarray(val) if val else None,
        "stop_reason": stop,
        "diverged_lr": diverged_lr,
    }


def sweep(
    step: Callable[[float], float | None],
    cfg: Settings,
    *,
    validate: Callable[[], float] | None = None,
    bar=None,
    describe_data: Callable[[], str] = lambda: "",
) -> dict:
    """:func:`run_sweep` over ``cfg``'s lrs with its ``smooth``, ``diverge`` and ``val_every``."""
    return run_sweep(
        step,
        cfg.lrs(),
        smooth=cfg.smooth,
        diverge=cfg.diverge,
        validate=validate,
        val_every=cfg.val_every,
        bar=bar,
        describe_data=describe_data,
    )


def run_seeds(
    one_run: Callable[[int | None], dict],
    cfg: Settings,
    seeds: Sequence[int] | None,
    *,
    restore: Callable[[], None],
    before_seed: Callable[[int], None] | None = None,
) -> LRFindResult:
    """Runs ``one_run(seed)`` once per seed (once, with None, without seeds) and aggregates.

    ``before_seed(seed)`` seeds the framework's RNGs before each seeded run; ``restore()`` puts
    the model and optimizer back after each run, and once more at the end, also when a run
    raises. Each run gets its own suggestion in ``runs``.
    """
    runs = []
    try:
        for seed in [*seeds] if seeds else [None]:
            if seed is not None and before_seed is not None:
                before_seed(seed)
            r = one_run(seed)
            r["seed"] = seed
            r.update(suggest(r["lrs"], r["smoothed"], min_div=cfg.min_div, base_div=cfg.base_div))
            runs.append(r)
            restore()
    finally:
        restore()
    return aggregate(runs, cfg.sweep, seeds, cfg.min_div, cfg.base_div)


def aggregate(runs, sweep: RangeSweep, seeds, min_div, base_div) -> LRFindResult:
    """One result from the runs of several seeds: the mean curve (cut where the first seed
    stopped), the spread of the smoothed curves as ``band``, and the suggestion of the mean."""
    n = min(len(r["lrs"]) for r in runs)
    lrs = runs[0]["lrs"][:n]
    losses = np.mean([r["losses"][:n] for r in runs], axis=0)
    curves = np.array([r["smoothed"][:n] for r in runs])
    smoothed = curves.mean(axis=0)
    vals = [r["val"][:n] for r in runs if r["val"] is not None]
    val = np.mean(vals, axis=0) if vals else None
    band = (curves.min(axis=0), curves.max(axis=0)) if len(runs) > 1 else None
    s = suggest(lrs, smoothed, min_div=min_div, base_div=base_div)
    first_stop = min(runs, key=lambda r: len(r["lrs"]))
    return LRFindResult(
        lrs=lrs,
        losses=losses,
        smoothed=smoothed,
        val=val,
        max_lr=s["max_lr"],
        base_lr=s["base_lr"],
        lr_min=s["lr_min"],
        lr_steep=s["lr_steep"],
        stop_reason=first_stop["stop_reason"],
        diverged_lr=first_stop["diverged_lr"],
        start_lr=sweep.start_lr,
        end_lr=sweep.end_lr,
        mode=sweep.mode,
        seeds=list(seeds) if seeds else None,
        band=band,
        runs=runs,
    )


__all__ = [
    "MIN_STEPS",
    "LRFindResult",
    "suggest",
    "run_sweep",
    "sweep",
    "run_seeds",
    "aggregate",
    "settings",
    "Settings",
    "Batches",
]
