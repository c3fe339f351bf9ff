"""Argument checks shared by the front ends: each error names the argument and the value.

Each check returns the value as a plain Python ``int``/``float``/``str``/``bool``
(a NumPy scalar becomes the Python number it holds), so that a schedule holding
it is JSON-safe and equal, hashed and computed alike whatever type it was given.
"""

from __future__ import annotations

import math
import numbers
import operator


def _short(value) -> str:
    """repr of a value, shortened for huge integers (10**400 has 401 digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"a {value.bit_length()}-bit integer"
    return repr(value)


def real(name: str, value, *, min=None, max=None, min_open=False, keep_int=False):
    """``value`` as a float after checking it is a finite real in range.

    With ``keep_int`` an integer stays a Python int (``2000`` reads back as ``2000``).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}")
    if isinstance(value, numbers.Integral):
        try:
            f = float(value)
        except OverflowError:
            raise OverflowError(f"{name} is too large for a double, got {_short(value)}") from None
        v = int(value) if keep_int else f
    else:
        v = f = float(value)
    if not math.isfinite(f):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if min is not None and (f < min or (min_open and f == min)):
        op = ">" if min_open else ">="
        raise ValueError(f"{name} must be {op} {min}, got {value!r}")
    if max is not None and f > max:
        raise ValueError(f"{name} must be <= {max}, got {value!r}")
    return v


def integer(name: str, value, *, min=None, max=None) -> int:
    """``value`` as an int after checking it is a whole number (not a float or bool) in range."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r} of type {type(value).__name__}") from None
    if min is not None and v < min:
        raise ValueError(f"{name} must be >= {min}, got {value!r}")
    if max is not None and v > max:
        raise OverflowError(f"{name} must be <= {max}, got {_short(value)}")
    return int(v)


def boolean(name: str, value) -> bool:
    """``value`` as a bool; only True and False (and NumPy's) are accepted, not truthy values."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r} of type {type(value).__name__}")


def choice(name: str, value, options) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")
    return str(value)


def step_counts(name: str, value):
    """Integer step counts of any integer dtype (or Python ints) as an int64 NumPy array.

    Unsigned counts above ``2**63 - 1`` saturate there rather than wrap negative. NumPy 2
    refuses to compare a ``uint8`` array with that bound as a Python int, so the bound is
    given as a ``uint64``. A Python int past it raises ``OverflowError`` (NumPy would hold it
    as an object array).
    """
    import numpy as np

    top = np.iinfo(np.int64).max
    if isinstance(value, int) and not isinstance(value, bool) and value > top:
        raise OverflowError(f"{name} must be <= {top}, got {_short(value)}")
    arr = np.asarray(value)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be an integer step count, got dtype {arr.dtype}")
    if arr.dtype.kind == "u":
        arr = np.minimum(arr, np.uint64(top))
    return arr.astype(np.int64)


def whole(name: str, value, *, min=None) -> int:
    """``value`` as an int: an integer, or a float holding one (``3.0``, ``np.float64(3)``).

    For counters that come back through JSON or NumPy as floats (a resumed step clock);
    ``2.5``, ``nan`` and bools are refused.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        if not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be an integer, got {value!r} of type {type(value).__name__}") from None
        f = float(value)
        if not f.is_integer():  # also False for nan and inf
            raise ValueError(f"{name} must be a whole number, got {value!r}") from None
        v = int(f)
    if min is not None and v < min:
        raise ValueError(f"{name} must be >= {min}, got {value!r}")
    return int(v)
