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

import reprlib
from dataclasses import Field, dataclass, fields, is_dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from . import _core
from . import _validate as check

_KIND = _core.ScaleKind

# Bounds what an error message quotes of a value read from a file or a pickle.
_quote = reprlib.Repr()
_quote.maxstring = _quote.maxother = 80


def _build(cls, args, kwargs):
    """A new, checked instance of the value class ``cls`` (the ``__new__`` of schedules and scales).

    The value is built in ``__new__`` rather than left to ``__init__`` because pickle's NEWOBJ
    (and so ``torch.load``) calls ``__new__`` alone: no instance may exist unchecked.
    """
    if not is_dataclass(cls):
        raise TypeError(f"{cls.__name__} is a base class; build one of its subclasses")
    self = object.__new__(cls)
    cls.__init__(self, *args, **kwargs)
    return self


def _seal(self, validate) -> None:
    """Run ``validate`` once; an ``__init__`` run again on the built value changes nothing.

    ``type.__call__`` runs ``__init__`` after ``__new__`` has built the value, and so does an
    explicit ``value.__init__(...)``: the fields it has just overwritten are put back.
    """
    d = self.__dict__
    built = d.get("_built")
    if built is not None:
        d.update(built)
        return
    validate()
    d["_built"] = {f.name: d[f.name] for f in fields(self)}


def _reduce(self):
    # Rebuilt by calling the class with its fields: every value a pickle (or torch.load with
    # weights_only=True) can make goes through the checks of the constructor.
    return (type(self), tuple(getattr(self, f.name) for f in fields(self)))


def _refuse_state(self, state) -> None:
    raise TypeError(
        f"{type(self).__name__} is pickled as a call of its constructor and has no state to set: a pickle "
        f"that sets one (BUILD, __setstate__) was not written by clrfast; got state {_quote.repr(state)}"
    )


def _check_keys(what: str, d: dict, allowed) -> None:
    """Every key of ``d`` must be a string naming one of ``allowed``."""
    for k, v in d.items():
        if not isinstance(k, str) or k not in allowed:
            raise TypeError(
                f"{what} has no key {_quote.repr(k)} (given {_quote.repr(v)}); its keys: {', '.join(allowed) or 'none'}"
            )


class Scale:
    """Base class of the amplitude scales."""

    _kind = _KIND.triangular
    if TYPE_CHECKING:  # every concrete scale is a dataclass
        __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    def __new__(cls, *args, **kwargs):
        return _build(cls, args, kwargs)

    def __post_init__(self):
        _seal(self, self._validate)

    def _validate(self) -> None:
        pass

    __reduce__ = _reduce
    __setstate__ = _refuse_state

    @property
    def _gamma(self) -> float:
        return 1.0

    def __call__(self, x) -> float:
        return _core.cyclic_scale(self._kind, self._gamma, float(check.real("x", x)))

    def to_dict(self) -> dict:
        """A JSON-safe description, restored by :meth:`from_dict`."""
        return {"type": type(self).__name__, **{f.name: getattr(self, f.name) for f in fields(self)}}

    @staticmethod
    def from_dict(d: dict) -> Scale:
        """Rebuild a scale from :meth:`to_dict` output."""
        if not isinstance(d, dict):
            raise TypeError(f"a scale must be given as a dict from Scale.to_dict(), got {_quote.repr(d)}")
        kind = d.get("type")
        cls = _TYPES.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise ValueError(f"unknown scale type {_quote.repr(kind)}; known: {', '.join(_TYPES)}")
        params = {k: v for k, v in d.items() if k != "type"}
        _check_keys(f"the {kind} scale", params, [f.name for f in fields(cls)])
        return cls(**params)


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

    def _validate(self):
        object.__setattr__(self, "gamma", check.real("gamma", self.gamma, min=0.0, min_open=True, keep_int=True))

    @property
    def _gamma(self) -> float:
        return float(self.gamma)


@dataclass(frozen=True)
class Geometric(Scale):
    """``scale(x) = ratio**(x - 1)``: each cycle is ``ratio`` times the previous one."""

    ratio: float = 0.5
    _kind = _KIND.geometric

    def _validate(self):
        object.__setattr__(self, "ratio", check.real("ratio", self.ratio, min=0.0, min_open=True, keep_int=True))

    @property
    def _gamma(self) -> float:
        return float(self.ratio)


_TYPES = {c.__name__: c for c in (Flat, Halving, ExpRange, Geometric)}

__all__ = ["Scale", "Flat", "Halving", "ExpRange", "Geometric"]
