"""Segment tables of every declared rule built by hand, shared by the emulated and the real CUDA step's tests:
option sets per rule, random rows of given lengths and their table (host or device addresses)."""

from __future__ import annotations

import numpy as np
import torch
from clrfast import _core
from clrfast.torch._checks import DTYPE_CODES

DTYPES = DTYPE_CODES  # the kernels' dtype codes, as the engine sends them

# Option sets per rule, by scalar name: each exercises other variants.
OPTIONS = {
    "sgd": [
        dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.01, nesterov=1, maximize=0),
        dict(lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=0, maximize=1),
        dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.0, nesterov=0, maximize=0),
    ],
    "adam": [
        dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, decoupled=1, amsgrad=1, maximize=0),
        dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, decoupled=0, amsgrad=0, maximize=1),
        dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled=0, amsgrad=0, maximize=0),
    ],
    "rmsprop": [
        dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.01, momentum=0.9, centered=1, maximize=0),
        dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=0, maximize=1),
    ],
    "lion": [dict(lr=1e-4, beta1=0.9, beta2=0.99, weight_decay=0.1), dict(lr=1e-4, beta1=0.9, beta2=0.99)],
    "schedulefree_adamw": [
        dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, ckp1=0.5, bias_correction2=0.9),
        dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, ckp1=0.5, bias_correction2=0.9),
    ],
    "schedulefree_sgd": [dict(lr=0.1, momentum=0.9, weight_decay=0.01, ckp1=0.5), dict(lr=0.1, momentum=0.9, ckp1=0.5)],
}


def scalars(name: str, opts: dict) -> list[float]:
    out = []
    for s in _core.rules[name]["scalars"]:
        out.append(float(opts.get(s, 1.0 if s == "lr_dtype" else 0.0)))
    return out


def make_rows(name: str, dtype: torch.dtype, lengths: list[int], seed: int = 0):
    """Tensors and the segment table of rows of these lengths (one parameter and counter each)."""
    lay = _core.rules[name]
    gen = torch.Generator().manual_seed(seed)
    tensors = []
    for n in lengths:
        p = torch.randn(n, generator=gen, dtype=torch.float64).to(dtype)
        g = torch.randn(n, generator=gen, dtype=torch.float64).to(dtype)
        slots = [torch.rand(n, generator=gen, dtype=torch.float64).to(dtype) for _ in lay["slots"]]
        tensors.append([p, g, *slots, torch.zeros((), dtype=torch.float32)])
    return tensors


def table(name: str, tensors, fresh: int = 0) -> np.ndarray:
    lay = _core.rules[name]
    cols = lay["cols"]
    t = np.zeros((len(tensors), lay["width"]), dtype=np.int64)
    for i, ts in enumerate(tensors):
        p, g, *slots, step = ts
        t[i, cols["p"]] = p.data_ptr()
        t[i, cols["g"]] = g.data_ptr()
        for k, s in enumerate(lay["slots"]):
            t[i, cols[s]] = slots[k].data_ptr()
        t[i, cols["n"]] = p.numel()
        t[i, cols["dtype"]] = DTYPES[p.dtype]
        t[i, cols["step"]] = step.data_ptr()
        t[i, cols["fresh"]] = fresh
    return t


def bits(ts) -> list[bytes]:
    return [x.detach().reshape(-1).contiguous().view(torch.uint8).cpu().numpy().tobytes() for row in ts for x in row]
