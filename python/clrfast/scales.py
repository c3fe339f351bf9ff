"""Amplitude scales for cyclical schedules, given as data.

A scale multiplies the height of each cycle. It is evaluated at the cycle
number (``scale_mode="cycle"``, cycles count from 1) or at the iteration
(``scale_mode="iterations"``). Unlike a lambda, a scale here is a picklable,
hashable value that survives ``state_dict()`` and ``to_dict()``, and it is
computed by the C++ core. Each scale is also a plain callable ``scale(x)``, so
it can be passed as ``scale_fn`` to ``torch.optim.lr_scheduler.CyclicLR`` too.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import _core
from . import _validate as check

# Codes of clrfast::ScaleKind in cpp/include/clrfast/schedule.hpp.
_TRIANGULAR, _TRIANGULAR2, _EXP_RANGE, _GEOMETRIC = 0, 1, 2, 3


class Scale:
    """Base class of the amplitude scales."""

    _kind: int = _TRIANGULAR

    @property
    def _gamma(self) -> float:
        return 1.0

    def __call__(self, x) -> float:
        return _core.cyclic_scale(self._kind, self._gamma, float(x))

    def to_dict(self) -> dict:
        return {"type": type(self).__name__, **{k: getattr(self, k) for k in self.__dataclass_fields__}}

    @staticmethod
    def from_dict(d: dict) -> Scale:
        d = dict(d)
        kind = d.pop("type", None)
        cls = {c.__name__: c for c in (Flat, Halving, ExpRange, Geometric)}.get(kind)
        if cls is None:
            raise ValueError(f"unknown scale type {kind!r}")
        return cls(**d)


@dataclass(frozen=True)
class Flat(Scale):
    """``scale(x) = 1``: every cycle has the full height (Smith's ``triangular``)."""

    _kind = _TRIANGULAR


@dataclass(frozen=True)
class Halving(Scale):
    """``scale(x) = 1 / 2**(x - 1)``: the height halves each cycle (Smith's ``triangular2``)."""

    _kind = _TRIANGULAR2


@dataclass(frozen=True)
class ExpRange(Scale):
    """``scale(x) = gamma**x`` (Smith's ``exp_range``, usually per iteration)."""

    gamma: float = 1.0
    _kind = _EXP_RANGE

    def __post_init__(self):
        check.real("gamma", self.gamma, min=0.0, min_open=True)

    @property
    def _gamma(self) -> float:
        return float(self.gamma)


@dataclass(frozen=True)
class Geometric(Scale):
    """``scale(x) = ratio**(x - 1)``: each cycle is ``ratio`` times the previous one."""

    ratio: float = 0.5
    _kind = _GEOMETRIC

    def __post_init__(self):
        check.real("ratio", self.ratio, min=0.0, min_open=True)

    @property
    def _gamma(self) -> float:
        return float(self.ratio)


__all__ = ["Scale", "Flat", "Halving", "ExpRange", "Geometric"]
