"""Argument checks shared by the front ends: each error names the argument and the value."""

from __future__ import annotations

import math
import numbers
import operator


def real(name: str, value, *, min=None, max=None, min_open=False) -> float:
    """Return ``value`` as a float after checking it is a finite real in range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if min is not None and (v < min or (min_open and v == min)):
        op = ">" if min_open else ">="
        raise ValueError(f"{name} must be {op} {min}, got {value!r}")
    if max is not None and v > max:
        raise ValueError(f"{name} must be <= {max}, got {value!r}")
    return v


def integer(name: str, value, *, min=None) -> int:
    """Return ``value`` as an int after checking it is a whole number (not a float or bool)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r} of type {type(value).__name__}") from None
    if min is not None and v < min:
        raise ValueError(f"{name} must be >= {min}, got {value!r}")
    return v


def choice(name: str, value, options) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")
    return value
