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
