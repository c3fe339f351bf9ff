"""``Schedule.with_total_steps`` (a re-horizon) and ``Scaled`` (lr scales and plateau reductions).

Oracles: transformers' own schedule lambdas evaluated at the stretched time
``T = at + (t - at) * (H - at) / (total_steps - 1 - at)`` (they take a float step), times the peak
as ``LambdaLR`` multiplies them; torch's SGD under a ``LambdaLR`` for the fused step; torch's
``ReduceLROnPlateau`` for the rounding of repeated reductions.
"""

from __future__ import annotations

import copy
import math
import pickle

import clrfast as clr
import numpy as np
import pytest
import torch
from clrfast.torch import CLRSGD
from hypothesis import given, settings
from hypothesis import strategies as st

optimization = pytest.importorskip("transformers.optimization")


def cosine_lambda(w: int, n: int):
    return lambda t: optimization._get_cosine_schedule_with_warmup_lr_lambda(
        t, num_warmup_steps=w, num_training_steps=n, num_cycles=0.5
    )


def wsd_lambda(w: int, s: int, d: int, decay_type: str, ratio: float):
    return lambda t: optimization._get_wsd_scheduler_lambda(
        t,
        num_warmup_steps=w,
        num_stable_steps=s,
        num_decay_steps=d,
        warmup_type="linear",
        decay_type=decay_type,
        min_lr_ratio=ratio,
        num_cycles=0.5,
    )


def stretched(at: int, horizon: int, total: int, t: int) -> float:
    """The time a re-horizoned step t >= at reads the schedule at (the documented expression)."""
    return float(at) + float(t - at) * float(horizon - at) / float(total - 1 - at)


@settings(max_examples=80, deadline=None)
@given(
    w=st.integers(0, 30),
    n_extra=st.integers(2, 300),
    at_frac=st.floats(0.0, 1.0),
    total_frac=st.floats(0.05, 4.0),
)
def test_a_cosine_re_horizoned_is_transformers_cosine_at_the_stretched_time(w, n_extra, at_frac, total_frac):
    n = w + n_extra
    peak = 3e-3
    s = clr.WarmupCosine(peak, w, n)
    assert s.horizon == n - 1
    at = int(at_frac * (n - 2))  # an endless schedule keeps its last value past its horizon: at < n - 1
    total = max(at + 2, int(total_frac * n))
    r = s.with_total_steps(total, at)
    lam = cosine_lambda(w, n)
    steps = np.arange(total + 20)
    got = r.lr_table(steps)
    want = [peak * lam(t) if t <= at else peak * lam(stretched(at, n - 1, total, t)) for t in steps]
    assert got.tolist() == want
    assert [r.lr(t) for t in range(at + 1)] == [s.lr(t) for t in range(at + 1)]
    assert r.lr(total - 1) == s.lr(n - 1)  # the old last step's value lands on the new last step
    assert r.max_step is None and r.horizon == total - 1


def test_the_same_horizon_gives_back_the_schedule_and_one_cycle_keeps_its_extra_step():
    s = clr.WarmupCosine(0.1, 10, 500)
    assert s.with_total_steps(500, 123).lr_table(600).tolist() == s.lr_table(600).tolist()
    o = clr.OneCycle(1.0, total_steps=100)
    assert o.with_total_steps(100, 40).lr_table(101).tolist() == o.lr_table(101).tolist()
    longer = o.with_total_steps(300, 40)
    assert longer.max_step == 300 and longer.lr(299) == o.lr(99)
    assert longer.momentum(40) == o.momentum(40) and longer.momentum(299) == o.momentum(99)
    with pytest.raises(ValueError, match="Tried to step 301 times"):
        longer.lr(301)


@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt"])
def test_a_cooldown_join_picks_its_piece_by_the_stretched_time(shape):
    # WarmupCosine for 200 steps, cut at 120 into a 1-sqrt/linear/cosine decay of 50 steps, then the hold;
    # stretched from step 150 on: each piece runs on the clock (at - b) + (t - at) * num / den
    peak, final = 0.1, 1e-3
    s = clr.WarmupCosine(peak, 20, 200)
    c = s.cooldown(120, 50, shape=shape, final_lr=final)
    assert c.horizon == 169
    at, total = 150, 260
    r = c.with_total_steps(total, at)
    start = s.lr(120)
    decay = wsd_lambda(0, 0, 50, shape, final / start)
    num, den = float(169 - at), float(total - 1 - at)

    def oracle(t: int) -> float:
        if t <= at:
            return c.lr(t)
        x = float(t - at) * num / den
        if float(at - 170) + x >= 0.0:  # the hold piece starts at b = 170
            return final
        return start * decay(float(at - 120) + x)

    steps = range(total + 40)
    assert [r.lr(t) for t in steps] == [oracle(t) for t in steps]
    assert r.lr(total - 1) == c.lr(169) and r.lr(total + 39) == final


def test_a_wsd_is_stretched_through_its_own_decay():
    s = clr.WarmupStableDecay(1e-3, 100, 800, 100, decay_type="1-sqrt", min_lr_ratio=0.1)
    assert s.horizon == 999
    r = s.with_total_steps(2000, 500)
    lam = wsd_lambda(100, 800, 100, "1-sqrt", 0.1)
    steps = np.arange(0, 2100, 7)
    want = [1e-3 * lam(t if t <= 500 else stretched(500, 999, 2000, t)) for t in steps]
    assert r.lr_table(steps).tolist() == want
    assert r.lr(1999) == s.lr(999)


def test_re_horizons_nest_and_serialise():
    s = clr.WarmupCosine(0.1, 10, 400)
    r1 = s.with_total_steps(600, 100)
    r2 = r1.with_total_steps(300, 250)
    assert [r2.lr(t) for t in range(251)] == [r1.lr(t) for t in range(251)]
    assert r2.lr(299) == r1.lr(599) == s.lr(399)
    for v in (r1, r2, r2.cooldown(280, 10)):
        back = clr.from_dict(v.to_dict())
        assert back == v and back.lr_table(400).tolist() == v.lr_table(400).tolist()
        assert pickle.loads(pickle.dumps(v)) == v


@pytest.mark.parametrize("flat", [False, True], ids=["list", "flat"])
def test_swapped_into_a_running_fused_optimizer_it_continues_without_a_jump(flat):
    # a run planned for 200 steps is made 320 long at step 90; torch's SGD under a LambdaLR over
    # the same values gives the same parameters bit for bit
    s = clr.WarmupCosine(0.1, 10, 200)
    r = s.with_total_steps(320, 90)
    a = torch.nn.Parameter(torch.randn(6, generator=torch.Generator().manual_seed(0)))
    b = a.detach().clone().requires_grad_()
    opt = CLRSGD([a], s, momentum=0.9, flat=flat)
    ref = torch.optim.SGD([b], lr=1.0, momentum=0.9, foreach=False)
    sch = torch.optim.lr_scheduler.LambdaLR(ref, lambda t: r.lr(t))
    g = torch.Generator().manual_seed(1)
    for t in range(320):
        if t == 90:
            before = opt.param_groups[0]["lr"]
            opt.param_groups[0]["schedule"] = r
            assert opt.param_groups[0]["lr"] == before == s.lr(90) == r.lr(90)
        grad = torch.randn(6, generator=g)
        a.grad, b.grad = grad.clone(), grad.clone()
        assert opt.param_groups[0]["lr"] == ref.param_groups[0]["lr"], t
        opt.step()
        ref.step()
        sch.step()
        assert torch.equal(a.detach(), b.detach()), t
    assert copy.deepcopy(opt).param_groups[0]["schedule"] == r


@pytest.mark.parametrize(
    "make, kw, exc, match",
    [
        (lambda: clr.Constant(0.1), dict(total_steps=10, at=0), ValueError, "needs a schedule with a horizon"),
        (lambda: clr.InverseSqrt(0.1, 10), dict(total_steps=10, at=0), ValueError, "horizon"),
        (lambda: clr.WarmupCosine(0.1, 5, 50), dict(total_steps=100, at=49), ValueError, r"at must be <= 48"),
        (lambda: clr.WarmupCosine(0.1, 5, 50), dict(total_steps=11, at=10), ValueError, r"total_steps must be >= 12"),
        (lambda: clr.WarmupCosine(0.1, 5, 50), dict(total_steps=100, at=-1), ValueError, r"at must be >= 0"),
        (lambda: clr.WarmupCosine(0.1, 5, 50), dict(total_steps=100.0, at=3), TypeError, r"total_steps must be an"),
    ],
)
def test_bad_re_horizons_are_named(make, kw, exc, match):
    with pytest.raises(exc, match=match):
        make().with_total_steps(**kw)


def test_more_re_horizons_than_a_piece_holds_are_refused():
    s = clr.WarmupCosine(0.1, 5, 1000)
    for k in range(4):
        s = s.with_total_steps(1000 + 10 * k, 100 + 10 * k)
    with pytest.raises(ValueError, match="re-horizoned at most 4 times"):
        s.with_total_steps(2000, 500)


@pytest.mark.parametrize("factor, min_lr", [(0.1, 0.0), (0.5, 1e-4), (0.3, 0.0123), (0.9, 0.0)])
def test_scaled_reductions_round_as_torch_reduce_lr_on_plateau(factor, min_lr):
    # torch's ReduceLROnPlateau with patience 0 reduces at every worse metric: lr = max(lr * factor, min_lr),
    # a reduction that changes the lr by eps or less skipped; Scaled(Constant(lr0), factor, min_lr, k)
    # after k applied reductions is the same double
    lr0 = 0.37
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr0)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=factor, patience=0, min_lr=min_lr)
    k, last = 0, lr0
    for metric in range(60):
        plateau.step(float(metric))
        lr = opt.param_groups[0]["lr"]
        if lr != last:
            k, last = k + 1, lr
        assert clr.Scaled(clr.Constant(lr0), factor, min_lr, k).lr(0) == lr, metric
    assert k > 0


def test_scaled_multiplies_every_step_and_keeps_the_momentum():
    s = clr.OneCycle(0.1, total_steps=80)
    x = s.scaled(0.25)
    assert x.lr_table(81).tolist() == [s.lr(t) * 0.25 for t in range(81)]
    assert x.momentum_table(81).tolist() == s.momentum_table(81).tolist()
    twice = clr.Scaled(clr.Scaled(s, 0.1, 1e-3, 2), 0.1, 1e-3, 3)
    assert twice.lr_table(81).tolist() == [clr.Scaled(s, 0.1, 1e-3, 5).lr(t) for t in range(81)]
    assert clr.from_dict(twice.to_dict()) == twice
    assert x.with_total_steps(160, 20).lr(159) == x.lr(79)


@pytest.mark.parametrize(
    "kw, exc, match",
    [
        (dict(factor=-0.5), ValueError, r"factor must be >= 0"),
        (dict(factor=math.inf), ValueError, r"factor"),
        (dict(factor=0.5, floor=-1.0), ValueError, r"floor must be >= 0"),
        (dict(factor=0.5, times=-1), ValueError, r"times must be >= 0"),
        (dict(factor=0.5, times=1.5), TypeError, r"times must be an integer"),
    ],
)
def test_bad_scales_are_named(kw, exc, match):
    with pytest.raises(exc, match=match):
        clr.Scaled(clr.Constant(0.1), **kw)


def test_a_scale_that_overflows_is_an_overflow_error():
    with pytest.raises(OverflowError):
        clr.Constant(1e300).scaled(1e10)
