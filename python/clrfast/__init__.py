"""clrfast: cyclical and warmup-decay learning-rate schedules with a compiled C++ core.

>>> import clrfast as clr
>>> s = clr.Cyclic(base_lr=1e-3, max_lr=6e-3, step_size_up=2000)
>>> s.lr(1000)
0.0035
>>> table = s.lr_table(10_000)          # NumPy float64 array, computed in C++

PyTorch support (drop-in schedulers, the fused CLRSGD optimizer, the LR range
test) lives in :mod:`clrfast.torch`, which imports torch on first use.
"""

from . import scales
from .schedules import (
    FORMAT_VERSION,
    Constant,
    CosineHardRestarts,
    CosineRestarts,
    Cyclic,
    InverseSqrt,
    Join,
    OneCycle,
    PolynomialDecay,
    RangeSweep,
    Rehorizon,
    Scaled,
    Schedule,
    TimmCosine,
    TimmMultiStep,
    TimmPoly,
    TimmStep,
    TimmTanh,
    TimmWSD,
    Warmup,
    WarmupCosine,
    WarmupLinear,
    WarmupStableDecay,
    from_dict,
)

__version__ = "0.1.0"


def plot(schedule, steps, path=None, **kwargs):
    """Plot lr (and momentum) of ``schedule`` over ``steps``; see :func:`clrfast.plotting.plot`."""
    from .plotting import plot as _plot

    return _plot(schedule, steps, path=path, **kwargs)


__all__ = [
    "Schedule",
    "Cyclic",
    "OneCycle",
    "CosineRestarts",
    "Warmup",
    "Constant",
    "RangeSweep",
    "Join",
    "Rehorizon",
    "Scaled",
    "WarmupStableDecay",
    "WarmupLinear",
    "WarmupCosine",
    "CosineHardRestarts",
    "PolynomialDecay",
    "InverseSqrt",
    "TimmCosine",
    "TimmTanh",
    "TimmPoly",
    "TimmStep",
    "TimmMultiStep",
    "TimmWSD",
    "from_dict",
    "scales",
    "plot",
    "FORMAT_VERSION",
    "__version__",
]
