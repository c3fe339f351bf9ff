"""The LR range test (Smith 2017, section 3.3): choose ``base_lr`` and ``max_lr`` from one short run.

Train for a few hundred steps while the learning rate rises from ``start_lr`` to
``end_lr`` (the sweep is :class:`clrfast.RangeSweep`, computed by the C++ core),
record the loss, stop when it diverges, put everything back as it was, and read
the bounds off the curve.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .. import _validate as check
from ..schedules import CosineRestarts, Cyclic, OneCycle, RangeSweep

MIN_STEPS = 10
"""The fewest optimizer steps a range test can read a suggestion from."""

_AUTO_PROGRESS_STEPS = 200

# The seeds torch.manual_seed accepts; outside them it raises an overflow error that names nothing.
_SEED_MIN, _SEED_MAX = -(2**63), 2**64 - 1


# ----------------------------------------------------------------------------- suggestion rule
def _check_divs(min_div, base_div) -> tuple[float, float]:
    # Below 1 the names would lie: max_lr would pass lr_min, base_lr would pass max_lr.
    return check.real("min_div", min_div, min=1.0), check.real("base_div", base_div, min=1.0)


def _diverged(s: float, best: float, factor: float) -> bool:
    # A ratio to the best is meaningless once the best is negative (s > 4*best would hold at once);
    # measuring the rise in units of |best| keeps the usual s > factor*best for positive losses.
    return s - best > (factor - 1.0) * abs(best)


def suggest(lrs: Sequence[float], smoothed: Sequence[float], *, min_div: float = 4.0, base_div: float = 4.0) -> dict:
    r"""The bounds read off a range-test curve; the rule used by :func:`lr_find`.

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
    is ``"diverged"`` (see :func:`lr_find` for the rule), ``"nan"``
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
        from ..plotting import new_figure, save

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


# ----------------------------------------------------------------------------- state
def _rng_state():
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def _check_seed(name: str, seed) -> int:
    seed = check.integer(name, seed)
    if not _SEED_MIN <= seed <= _SEED_MAX:
        raise ValueError(f"{name} must be in [-2**63, 2**64 - 1] (what torch.manual_seed takes), got {seed!r}")
    return seed


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _host_copy(obj):
    """A deep copy with every tensor cloned to host memory (a GPU model's copy costs no GPU memory)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        out = type(obj)((k, _host_copy(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # module versions that load_state_dict reads
            out._metadata = copy.deepcopy(obj._metadata)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_host_copy(v) for v in obj)
    return copy.deepcopy(obj)


def _all_params(model, optimizer) -> list:
    # The optimizer may hold tensors outside the model, and the model trainable tensors the
    # optimizer does not step (backward still accumulates into their .grad).
    seen, out = set(), []
    for p in [*model.parameters(), *(p for g in optimizer.param_groups for p in g["params"])]:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


class _Snapshot:
    """Copies of the model, the optimizer, every parameter's .grad and every RNG, put back by :meth:`restore`."""

    def __init__(self, model, optimizer):
        self.model_state = _host_copy(model.state_dict())
        self.training = {m: m.training for m in model.modules()}
        self.opt_state = _host_copy(optimizer.state_dict())
        self.params = _all_params(model, optimizer)
        self.grads = [None if p.grad is None else _host_copy(p.grad) for p in self.params]
        # The model's state_dict misses what the optimizer steps outside it (e.g. a parameter of the loss).
        in_model = {id(p) for p in model.parameters()}
        self.outside = [(p, _host_copy(p)) for p in self.params if id(p) not in in_model]
        self.rng = _rng_state()

    def restore(self, model, optimizer) -> None:
        model.load_state_dict(self.model_state)
        for m, flag in self.training.items():
            m.training = flag
        optimizer.load_state_dict(_host_copy(self.opt_state))
        with torch.no_grad():
            for p, value in self.outside:
                p.copy_(value)
        for p, g in zip(self.params, self.grads):
            p.grad = None if g is None else g.to(p.device, copy=True)
        _set_rng_state(self.rng)


def _set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        if group.get("schedule") is not None:
            # A fused optimizer's schedule would refuse a written lr: the sweep sets it instead,
            # and the momentum holds its value meanwhile (the snapshot's restore brings the schedule back).
            group["schedule"] = None
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


# ----------------------------------------------------------------------------- data
class _Batches:
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


def _to(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


def _progress(total: int, progress, desc: str):
    if progress is None:
        progress = total >= _AUTO_PROGRESS_STEPS
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, leave=False, unit="step")


# ----------------------------------------------------------------------------- the test
def lr_find(
    model: torch.nn.Module,
    loss_fn: Callable | None,
    loader: Iterable,
    optimizer=None,
    *,
    closure: Callable | None = None,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    mode: str = "exp",
    accumulation_steps: int = 1,
    smooth: float = 0.95,
    diverge: float = 4.0,
    val_loader: Iterable | None = None,
    val_fn: Callable | None = None,
    val_every: int = 1,
    seeds: Sequence[int] | None = None,
    progress: bool | None = None,
    device=None,
    min_div: float = 4.0,
    base_div: float = 4.0,
) -> LRFindResult:
    r"""LR range test: raise the lr from ``start_lr`` to ``end_lr`` over ``num_steps`` optimizer steps.

    The lr of step ``t`` is ``clrfast.RangeSweep(start_lr, end_lr, num_steps, mode).lr(t)``:
    exp ``start_lr*(end_lr/start_lr)**(t/(num_steps-1))``, linear
    ``start_lr + (end_lr-start_lr)*t/(num_steps-1)``, set in every parameter group.

    Each step runs ``accumulation_steps`` batches ``(x, y)`` from ``loader`` (a new pass
    starts when it runs out), computing ``loss_fn(model(x), y)`` or ``closure(model, batch)``
    (which returns the loss tensor) and back-propagating ``loss/accumulation_steps``; the
    recorded loss is the mean over those batches. Its bias-corrected moving average
    ``s_t = a_t/(1 - smooth**(t+1))``, ``a_t = smooth*a_{t-1} + (1-smooth)*loss_t``, is the
    curve read.

    Divergence: the test stops when ``s_t - best > (diverge - 1)*|best|``, ``best`` being the
    smallest ``s`` so far, i.e. ``s_t > diverge*best`` for positive losses. Losses that can
    be negative (e.g. a log-likelihood) are judged by the same rise in units of ``|best|``:
    with ``diverge=4`` and ``best=-2`` the test stops above ``4``. It also stops at a NaN or
    infinite loss (that step is not recorded).

    ``optimizer``: any torch optimizer over the model's parameters (a
    :class:`~clrfast.torch.CLRSGD` included: it applies a written lr), its groups' ``lr``
    set each step.
    Default: ``CLRSGD(trainable parameters, sweep, momentum=0.9)``. Optionally every
    ``val_every`` steps the mean loss over ``val_loader`` or ``val_fn(model)`` (a float,
    e.g. an accuracy) is recorded, with the model in eval mode.

    ``seeds``: a list of integers in ``[-2**63, 2**64 - 1]`` (what torch.manual_seed takes)
    repeats the test once per seed (torch, NumPy and Python RNGs seeded with it) and
    returns the mean curve with the spread as ``band``; suggestions come from the mean
    curve, cut where the first seed stopped (so a seed that diverges early pulls
    the suggestion down: the cautious reading), and each seed's own are in ``runs``. More
    than one seed needs a ``loader`` that can be iterated again: a one-shot iterator (a
    generator) is refused, as is one as ``val_loader``, which is read at every validation.
    ``progress``: a tqdm bar (None: only for runs of 200 steps or more).

    Afterwards the model's state_dict, its train/eval flags, the optimizer's state_dict, the
    values of optimizer parameters outside the model, every parameter's ``.grad`` (None or
    the same values) and the torch (and CUDA), NumPy and Python RNG states are exactly what
    they were, also when the test raises.

    Suggestion rule (:func:`suggest`): ``lr_min`` is the lr of the smallest smoothed loss,
    ``lr_steep`` that of its steepest descent against log(lr) before ``lr_min``;
    ``max_lr = max(lr_steep, lr_min/min_div)`` and ``base_lr = max_lr/base_div``.

    Every argument is checked before anything changes: a bad one raises ValueError or
    TypeError naming it and its value. Raises ValueError when the loader gives fewer than
    ``MIN_STEPS`` (10) optimizer steps.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if (loss_fn is None) == (closure is None):
        raise TypeError("give exactly one of loss_fn (called as loss_fn(model(x), y)) and closure(model, batch)")
    for name, fn in (("loss_fn", loss_fn), ("closure", closure), ("val_fn", val_fn)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be callable, got {fn!r}")
    check.choice("mode", mode, ("exp", "linear"))
    sweep = RangeSweep(start_lr, end_lr, check.integer("num_steps", num_steps, min=MIN_STEPS), mode)
    if not end_lr > start_lr:
        raise ValueError(f"end_lr must be > start_lr, got start_lr={start_lr!r}, end_lr={end_lr!r}")
    accum = check.integer("accumulation_steps", accumulation_steps, min=1)
    beta = check.real("smooth", smooth, min=0.0, max=0.999)
    diverge = check.real("diverge", diverge, min=1.0, min_open=True)
    val_every = check.integer("val_every", val_every, min=1)
    min_div, base_div = _check_divs(min_div, base_div)
    if val_loader is not None and val_fn is not None:
        raise TypeError("give at most one of val_loader and val_fn")
    for name, data in (("loader", loader), ("val_loader", val_loader)):
        if data is not None and not isinstance(data, Iterable) and not hasattr(data, "__getitem__"):
            raise TypeError(f"{name} must be iterable, got {data!r} of type {type(data).__name__}")
    if isinstance(val_loader, Iterator):
        raise ValueError(
            f"val_loader is read at every validation, so it cannot be a one-shot iterator, got "
            f"{type(val_loader).__name__}: pass a list or a DataLoader"
        )
    if isinstance(loader, Sized):
        n_batches = len(loader)
        if n_batches // accum < MIN_STEPS:
            raise ValueError(
                f"loader has {n_batches} batches; with accumulation_steps={accum} that is "
                f"{n_batches // accum} optimizer steps per pass, the range test needs at least {MIN_STEPS}"
            )
    if seeds is not None:
        if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
            raise TypeError(f"seeds must be a sequence of integers, got {seeds!r}")
        seeds = [_check_seed(f"seeds[{i}]", s) for i, s in enumerate(seeds)]
        if not seeds:
            raise ValueError("seeds must not be empty")
        if len(seeds) > 1 and isinstance(loader, Iterator):
            raise ValueError(
                f"seeds={seeds} repeats the test, but loader is a one-shot iterator "
                f"({type(loader).__name__}) that the second seed would find empty: pass a "
                "re-iterable loader (a list, a DataLoader) or a single seed"
            )
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    if optimizer is None:
        from .optim import CLRSGD

        optimizer = CLRSGD(params, sweep, momentum=0.9)
    elif not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be True, False or None, got {progress!r}")
    if device is None:
        device = params[0].device
    else:
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device must name a torch device, got {device!r}") from None
    lrs_all = sweep.lr_table(num_steps)

    snap = _Snapshot(model, optimizer)
    runs = []
    total = num_steps * (len(seeds) if seeds else 1)
    bar = _progress(total, progress, "lr_find")
    try:
        for seed in [*seeds] if seeds else [None]:
            if seed is not None:
                _seed_all(seed)
            run = _one_run(
                model,
                optimizer,
                loss_fn,
                closure,
                loader,
                lrs_all,
                accum,
                beta,
                diverge,
                val_loader,
                val_fn,
                val_every,
                device,
                bar,
            )
            run["seed"] = seed
            run.update(suggest(run["lrs"], run["smoothed"], min_div=min_div, base_div=base_div))
            runs.append(run)
            snap.restore(model, optimizer)
    finally:
        if bar is not None:
            bar.close()
        snap.restore(model, optimizer)
    return _aggregate(runs, sweep, seeds, min_div, base_div)


def _one_run(
    model,
    optimizer,
    loss_fn,
    closure,
    loader,
    lrs_all,
    accum,
    beta,
    diverge,
    val_loader,
    val_fn,
    val_every,
    device,
    bar,
) -> dict:
    model.train()
    optimizer.zero_grad(set_to_none=True)
    batches = _Batches(loader)
    losses, smoothed, val = [], [], []
    avg, best = 0.0, math.inf
    stop, diverged_lr = "end", None
    for t, lr in enumerate(lrs_all):
        _set_lr(optimizer, float(lr))
        total = 0.0
        for _ in range(accum):
            batch = batches.next()
            if batch is None:
                stop = "data"
                break
            loss = _loss(model, loss_fn, closure, _to(batch, device))
            value = float(loss.detach())
            total += value
            if not math.isfinite(value):
                break
            (loss / accum).backward()
        if stop == "data":
            break
        step_loss = total / accum
        if not math.isfinite(step_loss):
            stop, diverged_lr = "nan", float(lr)
            break
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        avg = beta * avg + (1.0 - beta) * step_loss
        s = avg / (1.0 - beta ** (t + 1))
        losses.append(step_loss)
        smoothed.append(s)
        if val_loader is not None or val_fn is not None:
            val.append(
                _validate(model, loss_fn, closure, val_loader, val_fn, device) if t % val_every == 0 else math.nan
            )
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
        length = f"{len(loader)} batches" if hasattr(loader, "__len__") else f"{batches.count} batches"
        raise ValueError(
            f"the range test {where}recorded only {n} steps (loader gave {length}, "
            f"accumulation_steps={accum}); it needs at least {MIN_STEPS}: use more data or a lower start_lr"
        )
    return {
        "lrs": np.asarray(lrs_all[:n], dtype=np.float64),
        "losses": np.asarray(losses),
        "smoothed": np.asarray(smoothed),
        "val": np.asarray(val) if val else None,
        "stop_reason": stop,
        "diverged_lr": diverged_lr,
    }


def _loss(model, loss_fn, closure, batch):
    if closure is not None:
        loss = closure(model, batch)
    else:
        if not isinstance(batch, (list, tuple)) or len(batch) < 2:
            raise TypeError(f"loader must yield (x, y) pairs when loss_fn is given, got {type(batch).__name__}")
        loss = loss_fn(model(batch[0]), batch[1])
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise TypeError(f"the loss must be a scalar tensor, got {loss!r}")
    return loss.reshape(())


@torch.no_grad()
def _validate(model, loss_fn, closure, val_loader, val_fn, device) -> float:
    model.eval()
    try:
        if val_fn is not None:
            return float(val_fn(model))
        total, count = 0.0, 0
        for batch in val_loader:
            total += float(_loss(model, loss_fn, closure, _to(batch, device)))
            count += 1
        return total / count if count else math.nan
    finally:
        model.train()


def _aggregate(runs, sweep, seeds, min_div, base_div) -> LRFindResult:
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
