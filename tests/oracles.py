"""Oracles and assertions shared by the tests.

The torch oracle steps a scheduler (torch's, or a drop-in with the same signature) one step at a
time on a dummy SGD optimizer and records what the optimizer sees; comparisons are exact.
"""

from __future__ import annotations

import warnings

import numpy as np


def run_scheduler(opt, sched, n, momentum=True):
    """lr (and momentum) of param group 0 at last_epoch = 0..n-1, as the optimizer sees them."""
    lrs = np.empty(n)
    moms = np.empty(n) if momentum else None
    group = opt.param_groups[0]
    with warnings.catch_warnings():
        # The scheduler is stepped without an optimizer.step(); torch warns about the order.
        warnings.simplefilter("ignore")
        for i in range(n):
            lrs[i] = group["lr"]
            if momentum:
                moms[i] = group["momentum"]
            if i + 1 < n:
                sched.step()
    return lrs, moms


def sgd(lr=0.1, momentum=0.9):
    import torch

    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=momentum)


def _module(module):
    if module is None:
        import torch

        return torch.optim.lr_scheduler
    return module


def torch_cyclic(n, module=None, **kw):
    opt = sgd()
    sched = _module(module).CyclicLR(opt, **kw)
    return run_scheduler(opt, sched, n, momentum=kw.get("cycle_momentum", True))


def torch_onecycle(n, module=None, **kw):
    opt = sgd()
    sched = _module(module).OneCycleLR(opt, **kw)
    return run_scheduler(opt, sched, n, momentum=kw.get("cycle_momentum", True))


def torch_restarts(n, base_lr, module=None, **kw):
    opt = sgd(lr=base_lr, momentum=0.0)
    sched = _module(module).CosineAnnealingWarmRestarts(opt, **kw)
    return run_scheduler(opt, sched, n, momentum=False)[0]


def first_mismatch(got, want) -> str:
    bad = np.flatnonzero(~((got == want) | (np.isnan(got) & np.isnan(want))))
    if bad.size == 0:
        return "no mismatch"
    i = int(bad[0])
    return f"{bad.size} mismatches, first at step {i}: clrfast {got[i]!r} vs torch {want[i]!r}"


def assert_exact(got, want, what):
    assert got.shape == want.shape, what
    assert np.array_equal(got, want), f"{what}: {first_mismatch(got, want)}"


def import_timm(*modules: str, stubs: dict | None = None) -> list:
    """timm's submodules ``modules`` (e.g. ``"timm.scheduler"``), imported without timm's ``__init__``.

        timm's package ``__init__`` (and ``timm.models``, ``timm.layers``) import torchvision, whose
        PyPI build does not load beside a CPU-only torch; the scheduler and param-group code needs
        neither. So the packages on the way (``timm``, and the parents named in ``stubs``) are
        registered bare (their real spec and path, their ``__init__`` not run), ``stubs`` gives a bare
        package the attributes the imported code takes from it (a ``"module:attr"`` string is timm's own
    object, imported then), and every ``timm`` module is taken
        out of ``sys.modules`` again afterwards, so other tests (transformers' ``find_spec("timm")``)
        see the import state they expect. Returns the modules, or raises ``pytest.skip`` without timm.
    """
    import importlib
    import importlib.util
    import sys

    import pytest

    if importlib.util.find_spec("timm") is None:
        pytest.skip("timm is not installed", allow_module_level=True)
    saved = {k: v for k, v in sys.modules.items() if k == "timm" or k.startswith("timm.")}
    try:
        for name in ["timm", *(stubs or {})]:
            if name not in sys.modules:
                spec = importlib.util.find_spec(name)
                sys.modules[name] = importlib.util.module_from_spec(spec)
        for name, attrs in (stubs or {}).items():
            for attr, value in attrs.items():
                if isinstance(value, str):  # "module:attr", timm's own object, imported in stub order
                    module, _, obj = value.partition(":")
                    value = getattr(importlib.import_module(module), obj)
                setattr(sys.modules[name], attr, value)
        return [importlib.import_module(m) for m in modules]
    finally:
        for k in [k for k in sys.modules if k == "timm" or k.startswith("timm.")]:
            del sys.modules[k]
        sys.modules.update(saved)
