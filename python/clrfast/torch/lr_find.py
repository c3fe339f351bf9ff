"""The LR range test (Smith 2017, section 3.3) for PyTorch: choose ``base_lr`` and ``max_lr`` from one short run.

Train for a few hundred steps while the learning rate rises from ``start_lr`` to
``end_lr`` (the sweep is :class:`clrfast.RangeSweep`, computed by the C++ core),
record the loss, stop when it diverges, put everything back as it was, and read
the bounds off the curve. The sweep, smoothing, divergence rule, suggestion and plot are
:mod:`clrfast._range_test`'s, shared with the Keras and optax front ends; this module
trains the steps and restores torch's state.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Iterable, Iterator, Sequence, Sized
from typing import Callable

import numpy as np
import torch

from .. import _range_test as rt
from .. import _validate as check
from .._range_test import MIN_STEPS, LRFindResult, suggest

# The seeds torch.manual_seed accepts; outside them it raises an overflow error that names nothing.
_SEED_MIN, _SEED_MAX = -(2**63), 2**64 - 1


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
def _to(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


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
    cfg = rt.settings(start_lr, end_lr, num_steps, mode, smooth, diverge, val_every, min_div, base_div)
    accum = check.integer("accumulation_steps", accumulation_steps, min=1)
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
    seeds = rt.check_seeds(seeds, loader, _check_seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    if optimizer is None:
        from .optim import CLRSGD

        optimizer = CLRSGD(params, cfg.sweep, momentum=0.9)
    elif not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    rt.check_progress(progress)
    if device is None:
        device = params[0].device
    else:
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device must name a torch device, got {device!r}") from None

    snap = _Snapshot(model, optimizer)
    bar = rt.progress_bar(cfg.num_steps * (len(seeds) if seeds else 1), progress)

    def one_run(seed) -> dict:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        batches = rt.Batches(loader)

        def step(lr: float) -> float | None:
            _set_lr(optimizer, lr)
            total = 0.0
            for _ in range(accum):
                batch = batches.next()
                if batch is None:
                    return None
                loss = _loss(model, loss_fn, closure, _to(batch, device))
                value = float(loss.detach())
                total += value
                if not math.isfinite(value):
                    return total  # not stepped: the run stops at a NaN or infinite loss
                (loss / accum).backward()
            step_loss = total / accum
            if math.isfinite(step_loss):
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            return step_loss

        def describe_data() -> str:
            length = f"{len(loader)} batches" if isinstance(loader, Sized) else f"{batches.count} batches"
            return f"loader gave {length}, accumulation_steps={accum}"

        validate = None
        if val_loader is not None or val_fn is not None:

            def validate() -> float:
                return _validate(model, loss_fn, closure, val_loader, val_fn, device)

        return rt.sweep(
            step,
            cfg,
            validate=validate,
            bar=bar,
            describe_data=describe_data,
        )

    try:
        return rt.run_seeds(one_run, cfg, seeds, restore=lambda: snap.restore(model, optimizer), before_seed=_seed_all)
    finally:
        if bar is not None:
            bar.close()


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


__all__ = ["lr_find", "LRFindResult", "suggest", "MIN_STEPS"]
