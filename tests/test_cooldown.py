"""``Schedule.cooldown``: the schedule up to ``at``, then transformers' WSD decay from ``lr(at)`` to ``final_lr``.

The oracle is transformers' own WSD lambda (``get_wsd_schedule`` with no warmup and no stable
phase) times ``lr(at)``, as ``LambdaLR`` multiplies it, and torch's SGD driven by a LambdaLR over
the same values for the fused step.
"""

from __future__ import annotations

import copy
import math

import clrfast as clr
import numpy as np
import pytest
import torch
from clrfast.torch import CLRSGD
from hypothesis import given, settings
from hypothesis import strategies as st

optimization = pytest.importorskip("transformers.optimization")

BASES = {
    "onecycle": clr.OneCycle(0.1, total_steps=120),
    "cyclic": clr.Cyclic(0.01, 0.1, step_size_up=7, step_size_down=5),
    "warmup_cosine": clr.WarmupCosine(3e-3, 10, 150),
    "constant": clr.Constant(0.05),
    "restarts": clr.CosineRestarts(0.1, T_0=9, T_mult=2, eta_min=1e-4),
}
SHAPES = ("linear", "cosine", "1-sqrt")


def wsd(start: float, final: float, steps: int, shape: str, t: int) -> float:
    """transformers' WSD value at t steps into the decay, times the decay's start (LambdaLR's product)."""
    return start * optimization._get_wsd_scheduler_lambda(
        t,
        num_warmup_steps=0,
        num_stable_steps=0,
        num_decay_steps=steps,
        warmup_type="linear",
        decay_type=shape,
        min_lr_ratio=final / start,
        num_cycles=0.5,
    )


@settings(max_examples=60, deadline=None)
@given(
    base=st.sampled_from(sorted(BASES)),
    at=st.integers(0, 110),
    steps=st.integers(1, 60),
    shape=st.sampled_from(SHAPES),
    fraction=st.sampled_from([0.0, 0.01, 0.3, 1.0]),
)
def test_values_are_the_schedule_then_transformers_wsd_decay(base, at, steps, shape, fraction):
    s = BASES[base]
    start = s.lr(at)
    final = start * fraction
    c = s.cooldown(at, steps, shape=shape, final_lr=final)
    n = at + steps + 20
    got = c.lr_table(n)
    for t in range(n):
        if t < at:
            want = s.lr(t)
        elif t < at + steps:
            want = 0.0 if start == 0.0 else wsd(start, final, steps, shape, t - at)
        else:
            want = final
        assert got[t] == want, (t, got[t], want)
        assert c.lr(t) == got[t]
    assert c.lr(at) == start  # continuous at `at`
    assert c.max_step is None and c.lr(10**9) == final
    assert clr.from_dict(c.to_dict()) == c


def test_a_cooldown_decays_monotonically_for_every_shape():
    s = clr.Constant(0.2)
    for shape in SHAPES:
        v = s.cooldown(5, 40, shape=shape, final_lr=0.02).lr_table(60)
        assert (np.diff(v[5:]) <= 0).all() and v[44] > 0.02 and v[45] == 0.02, shape


def test_a_group_keeps_the_momentum_it_last_applied_through_the_cooldown():
    s = clr.OneCycle(0.1, total_steps=50)
    c = s.cooldown(30, 10)
    assert c.momentum(29) == s.momentum(29) and c.momentum(30) is None
    p = torch.nn.Parameter(torch.ones(2))
    opt = CLRSGD([p], c, momentum=0.9)
    shown = []
    for _ in range(45):
        p.grad = torch.ones(2)
        opt.step()
        shown.append(opt.param_groups[0]["momentum"])
    assert shown[28] == s.momentum(29) and set(shown[29:]) == {s.momentum(29)}
    assert CLRSGD([p], clr.Constant(0.1).cooldown(3, 4), momentum=0.7).param_groups[0]["momentum"] == 0.7


@pytest.mark.parametrize("flat", [False, True], ids=["list", "flat"])
def test_swapped_into_a_running_fused_optimizer_it_continues_without_a_jump(flat):
    # a run planned for 200 steps is cut short at 80: the group's schedule is replaced mid-run, and
    # torch's SGD under a LambdaLR with the same values gives the same parameters bit for bit
    s = clr.WarmupCosine(0.1, 10, 200)
    a = torch.nn.Parameter(torch.randn(5, generator=torch.Generator().manual_seed(0)))
    b = a.detach().clone().requires_grad_()
    opt = CLRSGD([a], s, momentum=0.9, flat=flat)
    ref = torch.optim.SGD([b], lr=1.0, momentum=0.9, foreach=False)
    values = []
    c = s.cooldown(80, 30, shape="1-sqrt", final_lr=1e-3)
    sch = torch.optim.lr_scheduler.LambdaLR(ref, lambda t: c.lr(t))
    g = torch.Generator().manual_seed(1)
    for t in range(130):
        if t == 80:
            before = opt.param_groups[0]["lr"]
            opt.param_groups[0]["schedule"] = c
            assert opt.param_groups[0]["lr"] == before == s.lr(80) == c.lr(80)
        grad = torch.randn(5, generator=g)
        a.grad, b.grad = grad.clone(), grad.clone()
        values.append(opt.param_groups[0]["lr"])
        assert values[-1] == ref.param_groups[0]["lr"], t
        opt.step()
        ref.step()
        sch.step()
        assert torch.equal(a.detach(), b.detach()), t
    assert values[79] == s.lr(79) and values[-1] == 1e-3
    assert copy.deepcopy(opt).param_groups[0]["schedule"] == c


@pytest.mark.parametrize(
    "kw, exc, match",
    [
        (dict(at=-1, steps=5), ValueError, r"at must be >= 0"),
        (dict(at=3, steps=0), ValueError, r"steps must be >= 1"),
        (dict(at=3, steps=5, shape="cos"), ValueError, r"shape must be one of"),
        (dict(at=3, steps=5, final_lr=-1.0), ValueError, r"final_lr must be >= 0"),
        (dict(at=3, steps=5, final_lr=math.nan), ValueError, r"final_lr"),
        (dict(at=3, steps=5, final_lr=1.0), ValueError, r"final_lr=1.0 is above lr\(at\)"),
        (dict(at=200, steps=5), ValueError, r"at=200 lies past the schedule's last step 120"),
        (dict(at="3", steps=5), TypeError, r"at must be an integer"),
    ],
)
def test_bad_arguments_are_named(kw, exc, match):
    with pytest.raises(exc, match=match):
        BASES["onecycle"].cooldown(**kw)


def test_a_cooldown_from_zero_stays_at_zero():
    s = clr.OneCycle(0.1, total_steps=20, final_div_factor=1e300)  # ends at (almost) 0
    z = clr.Constant(0.0).cooldown(4, 10)
    assert all(z.lr(t) == 0.0 for t in range(30))
    assert s.cooldown(19, 5).lr(21) <= s.lr(19)
