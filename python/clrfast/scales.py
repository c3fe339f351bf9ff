"""Amplitude scales for cyclical schedules, given as data.

A scale multiplies the height of each cycle. It is evaluated at the cycle
number (``scale_mode="cycle"``, cycles count from 1) or at the iteration
(``scale_mode="iterations"``). Unlike a lambda, a scale here is a picklable,
hashable value that survives ``state_dict()`` and ``to_dict()``, and it is
computed by the C++ core. Each scale is also a plain callable ``scale(x)``, so
it can be passed as ``scale_fn`` to ``torch.optim.lr_scheduler.CyclicLR`` too;
like torch's own scales it raises ``OverflowError`` where its power overflows.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import _core
from . import _validate as check

_KIND = _core.ScaleKind


class Scale:
    """Base class of the amplitude scales."""

    _kind = _KIND.triangular

    @property
    def _gamma(self) -> float:
        return 1.0

    def __call__(self, x) -> float:
        return _core.cyclic_scale(self._kind, self._gamma, float(check.real("x", x)))

    def to_dict(self) -> dict:
        return {"type": type(self).__name__, **{k: getattr(self, k) for k in self.__dataclass_fields__}}

    @staticmethod
    def from_dict(d: dict) -> Scale:
        if not isinstance(d, dict):
            raise TypeError(f"a scale must be given as a dict from Scale.to_dict(), got {d!r}")
        d = dict(d)
        kind = d.pop("type", None)
        cls = {c.__name__: c for c in (Flat, Halving, ExpRange, Geometric)}.get(kind)
        if cls is None:
            raise ValueError(f"unknown scale type {kind!r}")
        return cls(**d)


@dataclass(frozen=True)
class Flat(Scale):
    """``scale(x) = 1``: every cycle has the full height (Smith's ``triangular``)."""

    _kind = _KIND.triangular


@dataclass(frozen=True)
class Halving(Scale):
    """``scale(x) = 1 / 2**(x - 1)``: the height halves each cycle (Smith's ``triangular2``)."""

    _kind = _KIND.triangular2


@dataclass(frozen=True)
class ExpRange(Scale):
    """``scale(x) = gamma**x`` (Smith's ``exp_range``, usually per iteration)."""

    gamma: float = 1.0
    _kind = _KIND.exp_range

    def __post_init__(self):
        object.__setattr__(self, "gamma", check.real("gamma", self.gamma, min=0.0, min_open=True, keep_int=True))

    @property
    def _gamma(self) -> float:
        return float(self.gamma)


@dataclass(frozen=True)
class Geometric(Scale):
    """``scale(x) = ratio**(x - 1)``: each cycle is ``ratio`` times the previous one."""

    ratio: float = 0.5
    _kind = _KIND.geometric

    def __post_init__(self):
        object.__setattr__(self, "ratio", check.real("ratio", self.ratio, min=0.0, min_open=True, keep_int=True))

    @property
    def _gamma(self) -> float:
        return float(self.ratio)


__all__ = ["Scale", "Flat", "Halving", "ExpRange", "Geometric"]
