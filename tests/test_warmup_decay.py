"""Warmup-decay schedules, the transformers drop-ins and ScheduleLR, against transformers itself.

transformers' factories are the oracle: each returns a ``LambdaLR`` over a Python lambda, so
its lr is ``initial_lr * factor(step)`` in Python floats; clrfast must give the same double.
"""

from __future__ import annotations

import copy
import json
import math
import pickle
import warnings
from functools import partial

import clrfast as clr
import numpy as np
import pytest
from clrfast._spec import SpecError, parse_spec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
optimization = pytest.importorskip("transformers.optimization")

import clrfast.torch as ct  # noqa: E402

FACTORIES = [
    "get_constant_schedule_with_warmup",
    "get_linear_schedule_with_warmup",
    "get_cosine_schedule_with_warmup",
    "get_cosine_with_hard_restarts_schedule_with_warmup",
    "get_polynomial_decay_schedule_with_warmup",
    "get_inverse_sqrt_schedule",
    "get_cosine_with_min_lr_schedule_with_warmup",
    "get_wsd_schedule",
]


# ------------------------------------------------------------------ schedule values vs the lambdas


def lambda_values(fn, base, n, **kw):
    """base * factor(t) for t in 0..n-1, as LambdaLR computes it."""
    f = partial(fn, **kw)
    return np.array([base * f(t) for t in range(n)])


def assert_same(got, want, what):
    assert got.shape == want.shape
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, f"{what}: {bad.size} mismatches, first at {bad[0]}: {got[bad[0]]!r} vs {want[bad[0]]!r}"


counts = st.integers(0, 400)
lrs = st.floats(1e-6, 10.0)
ratios = st.floats(0.0, 1.0)
cycles = st.floats(0.0, 5.0)
ramps = st.sampled_from(["linear", "cosine", "1-sqrt"])


@settings(max_examples=60, deadline=None)
@given(lr=lrs, w=counts, s=counts, d=counts, wt=ramps, dt=ramps, r=ratios, nc=cycles)
def test_wsd_values(lr, w, s, d, wt, dt, r, nc):
    sched = clr.WarmupStableDecay(lr, w, s, d, warmup_type=wt, decay_type=dt, min_lr_ratio=r, num_cycles=nc)
    n = w + s + d + 50
    want = lambda_values(
        optimization._get_wsd_scheduler_lambda,
        lr,
        n,
        num_warmup_steps=w,
        num_stable_steps=s,
        num_decay_steps=d,
        warmup_type=wt,
        decay_type=dt,
        min_lr_ratio=r,
        num_cycles=nc,
    )
    assert_same(sched.lr_table(n), want, repr(sched))
    assert sched.lr(n - 1) == want[-1]


@settings(max_examples=40, deadline=None)
@given(lr=lrs, w=counts, extra=counts, nc=cycles, r=st.one_of(st.none(), ratios))
def test_cosine_values(lr, w, extra, nc, r):
    n_train = w + extra
    n = n_train + 100
    sched = clr.WarmupCosine(lr, w, n_train, num_cycles=nc, min_lr_rate=r)
    if r is None:  # get_cosine_schedule_with_warmup: no floor
        want = lambda_values(
            optimization._get_cosine_schedule_with_warmup_lr_lambda,
            lr,
            n,
            num_warmup_steps=w,
            num_training_steps=n_train,
            num_cycles=nc,
        )
    else:  # get_cosine_with_min_lr_schedule_with_warmup
        want = lambda_values(
            optimization._get_cosine_schedule_with_warmup_lr_lambda,
            lr,
            n,
            num_warmup_steps=w,
            num_training_steps=n_train,
            num_cycles=nc,
            min_lr_rate=r,
        )
    assert_same(sched.lr_table(n), want, repr(sched))


def test_cosine_min_lr_is_a_floor_relative_to_peak():
    sched = clr.WarmupCosine(0.1, 10, 110, min_lr=0.01)
    assert sched.floor_ratio == 0.01 / 0.1
    assert sched.lr(110) == pytest.approx(0.01, rel=1e-15)
    assert sched.lr(10) == 0.1
    assert min(sched.lr_table(111)[10:]) == sched.lr(110)


@settings(max_examples=40, deadline=None)
@given(lr=lrs, w=counts, extra=counts, nc=st.integers(0, 6))
def test_hard_restart_values(lr, w, extra, nc):
    n_train = w + extra
    n = n_train + 50
    sched = clr.CosineHardRestarts(lr, w, n_train, num_cycles=nc)
    want = lambda_values(
        optimization._get_cosine_with_hard_restarts_schedule_with_warmup_lr_lambda,
        lr,
        n,
        num_warmup_steps=w,
        num_training_steps=n_train,
        num_cycles=nc,
    )
    assert_same(sched.lr_table(n), want, repr(sched))


@settings(max_examples=40, deadline=None)
@given(lr=lrs, w=counts, extra=st.integers(1, 400), end_frac=st.floats(0.0, 0.99), power=st.floats(0.0, 4.0))
def test_polynomial_values(lr, w, extra, end_frac, power):
    n_train = w + extra
    n = n_train + 50
    lr_end = lr * end_frac
    sched = clr.PolynomialDecay(lr, w, n_train, lr_end=lr_end, power=power)
    want = lambda_values(
        optimization._get_polynomial_decay_schedule_with_warmup_lr_lambda,
        lr,
        n,
        num_warmup_steps=w,
        num_training_steps=n_train,
        lr_end=lr_end,
        power=power,
        lr_init=lr,
    )
    assert_same(sched.lr_table(n), want, repr(sched))


@settings(max_examples=40, deadline=None)
@given(lr=lrs, w=counts, ts=st.one_of(st.none(), st.integers(1, 5000)))
def test_inverse_sqrt_values(lr, w, ts):
    sched = clr.InverseSqrt(lr, w, timescale=ts)
    timescale = ts if ts is not None else (w or 10_000)
    assert sched.resolved_timescale == timescale
    n = w + 500
    want = lambda_values(
        optimization._get_inverse_sqrt_schedule_lr_lambda, lr, n, num_warmup_steps=w, timescale=timescale
    )
    assert_same(sched.lr_table(n), want, repr(sched))
    steps = np.array([10**6, 10**9, 2**40, 2**52])  # far steps, through the gather table
    assert_same(
        sched.lr_table(steps),
        np.array(
            [
                lr * optimization._get_inverse_sqrt_schedule_lr_lambda(int(t), num_warmup_steps=w, timescale=timescale)
                for t in steps
            ]
        ),
        "far steps",
    )


@settings(max_examples=30, deadline=None)
@given(lr=lrs, w=counts, extra=counts)
def test_linear_values(lr, w, extra):
    n_train = w + extra
    sched = clr.WarmupLinear(lr, w, n_train)
    n = n_train + 20
    want = lambda_values(
        optimization._get_linear_schedule_with_warmup_lr_lambda, lr, n, num_warmup_steps=w, num_training_steps=n_train
    )
    assert_same(sched.lr_table(n), want, repr(sched))
    assert sched.lr(n_train) == 0.0


def test_constant_with_warmup_is_warmup():
    lr, w = 3e-4, 37
    want = lambda_values(optimization._get_constant_schedule_with_warmup_lr_lambda, lr, 100, num_warmup_steps=w)
    assert_same(clr.Warmup(0.0, lr, w).lr_table(100), want, "Warmup(0, lr, w)")


def test_fractional_step_counts_follow_transformers():
    # transformers computes with a float num_warmup_steps as it is; so does the core.
    sched = clr.WarmupStableDecay(1e-3, 10.5, 20.25, 30.5, decay_type="linear")
    want = lambda_values(
        optimization._get_wsd_scheduler_lambda,
        1e-3,
        80,
        num_warmup_steps=10.5,
        num_stable_steps=20.25,
        num_decay_steps=30.5,
        warmup_type="linear",
        decay_type="linear",
        min_lr_ratio=0.0,
        num_cycles=0.5,
    )
    assert_same(sched.lr_table(80), want, repr(sched))


# ------------------------------------------------------------------ values are data

ALL = [
    clr.WarmupStableDecay(3e-4, 100, 800, 100, warmup_type="cosine", decay_type="1-sqrt", min_lr_ratio=0.1),
    clr.WarmupLinear(0.1, 10, 100),
    clr.WarmupCosine(0.1, 10, 100, num_cycles=0.5, min_lr=1e-3),
    clr.WarmupCosine(0.1, 10, 100, min_lr_rate=0.05),
    clr.CosineHardRestarts(0.1, 10, 100, num_cycles=3),
    clr.PolynomialDecay(0.1, 10, 100, lr_end=1e-4, power=2.0),
    clr.PolynomialDecay(0.05, 10, 100, lr_end=1e-4, power=0.5, lr_init=0.1),
    clr.InverseSqrt(0.1, 10),
    clr.InverseSqrt(0.1, 0, timescale=50),
]


@pytest.mark.parametrize("s", ALL, ids=lambda s: type(s).__name__)
def test_values_are_data(s):
    d = json.loads(json.dumps(s.to_dict()))
    assert clr.from_dict(d) == s
    assert pickle.loads(pickle.dumps(s)) == s
    assert hash(clr.from_dict(d)) == hash(s)
    assert copy.deepcopy(s) == s
    with pytest.raises(AttributeError):
        s.peak_lr = 1.0
    assert s.max_step is None and not s.has_momentum and s.momentum(5) is None
    table = s.lr_table(2000)
    assert np.isfinite(table).all() and (table >= 0).all()
    assert table[1234] == s.lr(1234)
    assert np.array_equal(s.lr_table(2000, dtype=np.float32), table.astype(np.float32))
    assert type(s).__doc__ and "``" in type(s).__doc__  # the formula is in the docstring


def test_join_runs_each_piece_on_its_own_clock():
    wsd = clr.WarmupStableDecay(1e-3, 10, 50, 40, decay_type="linear")
    tail = clr.InverseSqrt(1e-3, 0, timescale=100)
    j = clr.Join([clr.Constant(1e-4), wsd, tail], boundaries=[20, 120])
    t = j.lr_table(300)
    assert np.array_equal(t[:20], np.full(20, 1e-4))
    assert np.array_equal(t[20:120], wsd.lr_table(100))
    assert np.array_equal(t[120:], tail.lr_table(180))
    assert clr.from_dict(json.loads(json.dumps(j.to_dict()))) == j


def test_cosine_continues_past_total_as_transformers():
    s = clr.WarmupCosine(1.0, 0, 100)
    assert s.lr(100) == 0.0 and s.lr(150) == pytest.approx(0.5) and s.lr(200) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: clr.WarmupStableDecay(-1.0, 1, 1, 1), "peak_lr must be >= 0.0, got -1.0"),
        (lambda: clr.WarmupStableDecay(1.0, -1, 1, 1), "warmup_steps must be >= 0.0, got -1"),
        (lambda: clr.WarmupStableDecay(1.0, 1, 1, 1, warmup_type="exp"), "warmup_type must be one of"),
        (lambda: clr.WarmupStableDecay(1.0, 1, 1, 1, decay_type="sqrt"), "decay_type must be one of"),
        (lambda: clr.WarmupStableDecay(1.0, 1, 1, 1, min_lr_ratio=1.5), "min_lr_ratio must be <= 1.0, got 1.5"),
        (lambda: clr.WarmupStableDecay(1.0, 1, 1, 1, num_cycles=-1), "num_cycles must be >= 0.0, got -1"),
        (lambda: clr.WarmupStableDecay(1.0, 2**52, 2**52, 1), "must be <= 2\\*\\*53"),
        (lambda: clr.WarmupStableDecay(float("nan"), 1, 1, 1), "peak_lr must be finite, got nan"),
        (lambda: clr.WarmupLinear(1.0, 10, 5), "total_steps must be >= warmup_steps=10, got 5"),
        (lambda: clr.WarmupCosine(1.0, 1, 10, min_lr=0.1, min_lr_rate=0.1), "give min_lr or min_lr_rate, not both"),
        (lambda: clr.WarmupCosine(1.0, 1, 10, min_lr=2.0), "min_lr must be <= peak_lr=1.0, got 2.0"),
        (lambda: clr.PolynomialDecay(1.0, 10, 10), "total_steps must be > warmup_steps=10, got 10"),
        (lambda: clr.PolynomialDecay(1e-8, 1, 10), "lr_end \\(1e-07\\) must be smaller than peak_lr \\(1e-08\\)"),
        (lambda: clr.PolynomialDecay(1.0, 1, 10, lr_end=0.5, lr_init=0.4), "must be smaller than lr_init \\(0.4\\)"),
        (lambda: clr.PolynomialDecay(1.0, 1, 10, power=-1), "power must be >= 0.0, got -1"),
        (lambda: clr.InverseSqrt(1.0, 1, timescale=0), "timescale must be > 0.0, got 0"),
    ],
)
def test_bad_values_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_a_peak_near_the_largest_double_is_refused():
    # peak*factor must stay finite where a factor rounds a hair above 1.
    with pytest.raises(OverflowError, match="peak_lr\\*2 overflows a double: peak_lr=1e\\+308"):
        clr.WarmupLinear(1e308, 1, 10)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: clr.WarmupStableDecay("1e-3", 1, 1, 1), "peak_lr must be a real number, got '1e-3'"),
        (lambda: clr.WarmupLinear(1.0, True, 10), "warmup_steps must be a real number, got True"),
        (lambda: clr.InverseSqrt(1.0, None), "warmup_steps must be a real number, got None"),
    ],
)
def test_bad_types_raise_type_error(make, match):
    with pytest.raises(TypeError, match=match):
        make()


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(range(6)),
    lr=st.floats(0.0, 1e300),
    w=st.integers(0, 2**40),
    n=st.integers(0, 2**40),
    r=ratios,
    nc=st.floats(0.0, 2.0**53),
    p=st.floats(0.0, 1e3),
    steps=st.lists(st.integers(0, 2**63 - 1), min_size=1, max_size=8),
)
def test_finite_everywhere(kind, lr, w, n, r, nc, p, steps):
    total = w + n + 1
    s = [
        lambda: clr.WarmupStableDecay(
            lr, w, n, n, warmup_type="1-sqrt", decay_type="cosine", min_lr_ratio=r, num_cycles=nc
        ),
        lambda: clr.WarmupLinear(lr, w, total),
        lambda: clr.WarmupCosine(lr, w, total, num_cycles=nc, min_lr_rate=r),
        lambda: clr.CosineHardRestarts(lr, w, total, num_cycles=nc),
        lambda: clr.PolynomialDecay(lr + 1.0, w, total, lr_end=r, power=p),
        lambda: clr.InverseSqrt(lr, w, timescale=n + 1),
    ][kind]()
    values = s.lr_table(np.array(steps))
    assert np.isfinite(values).all() and (values >= 0).all()


# ------------------------------------------------------------------ specs and the command line


@pytest.mark.parametrize(
    "spec, want",
    [
        (
            "wsd peak_lr=3e-4 warmup_steps=200 stable_steps=1400 decay_steps=400 decay_type=1-sqrt",
            clr.WarmupStableDecay(3e-4, 200, 1400, 400, decay_type="1-sqrt"),
        ),
        ("warmup_linear peak_lr=0.1 warmup_steps=10 total_steps=1e3", clr.WarmupLinear(0.1, 10, 1000)),
        (
            "warmup_cosine peak_lr=0.1 warmup_steps=10 total_steps=100 min_lr=1e-3",
            clr.WarmupCosine(0.1, 10, 100, min_lr=1e-3),
        ),
        (
            "hard_restarts peak_lr=0.1 warmup_steps=10 total_steps=100 num_cycles=3",
            clr.CosineHardRestarts(0.1, 10, 100, 3),
        ),
        ("polynomial peak_lr=0.1 warmup_steps=10 total_steps=100 power=2", clr.PolynomialDecay(0.1, 10, 100, power=2)),
        ("inverse_sqrt peak_lr=0.1 warmup_steps=10", clr.InverseSqrt(0.1, 10)),
    ],
)
def test_specs(spec, want):
    assert parse_spec(spec) == want


def test_spec_error_names_the_argument():
    with pytest.raises(SpecError, match="wsd: min_lr_ratio must be <= 1.0, got 2"):
        parse_spec("wsd peak_lr=1 warmup_steps=1 stable_steps=1 decay_steps=1 min_lr_ratio=2")


def test_cli_table_is_the_schedule(tmp_path, capsys):
    from clrfast.cli import main

    out = tmp_path / "wsd.npy"
    spec = ["wsd", "peak_lr=1e-3", "warmup_steps=10", "stable_steps=50", "decay_steps=40", "min_lr_ratio=0.1"]
    assert main(["table", *spec, "--steps", "120", "-o", str(out)]) == 0
    arr = np.load(out)
    assert arr.shape == (120, 2)
    assert np.array_equal(arr[:, 1], parse_spec(spec).lr_table(120))


# ------------------------------------------------------------------ the drop-ins vs transformers


def two_groups(kind="adamw", lr=1.3e-3, lr2=3.7e-4):
    p1 = torch.nn.Parameter(torch.zeros(2))
    p2 = torch.nn.Parameter(torch.zeros(3))
    groups = [{"params": [p1]}, {"params": [p2], "lr": lr2}]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    return torch.optim.AdamW(groups, lr=lr)


def group_lrs(opt):
    return [g["lr"] for g in opt.param_groups]


def run_pair(name, kw, n, lr=1.3e-3, lr2=3.7e-4, resume_at=None):
    """Steps transformers' factory and clrfast's side by side; returns the first mismatch or None.

    With ``resume_at`` the clrfast scheduler is rebuilt at that step from its state dict (a fresh
    optimizer and scheduler, the way a training script resumes).
    """
    oa, ob = two_groups(lr=lr, lr2=lr2), two_groups(lr=lr, lr2=lr2)
    a = getattr(transformers, name)(oa, **kw)
    b = getattr(ct, name)(ob, **kw)
    for t in range(n):
        if group_lrs(oa) != group_lrs(ob):
            return f"step {t}: transformers {group_lrs(oa)} clrfast {group_lrs(ob)}"
        if t == resume_at:
            saved_opt, saved = ob.state_dict(), pickle.loads(pickle.dumps(b.state_dict()))
            ob = two_groups(lr=lr, lr2=lr2)
            b = getattr(ct, name)(ob, **kw)
            ob.load_state_dict(saved_opt)
            b.load_state_dict(saved)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # stepping the scheduler without an optimizer step
            a.step()
            b.step()
        if a.get_last_lr() != b.get_last_lr():
            return f"get_last_lr after step {t}: {a.get_last_lr()} vs {b.get_last_lr()}"
    return None


def factory_kwargs(name, draw):
    w = draw(st.integers(0, 60))
    n = w + draw(st.integers(1, 200))
    if name == "get_constant_schedule_with_warmup":
        return dict(num_warmup_steps=w), n
    if name == "get_linear_schedule_with_warmup":
        return dict(num_warmup_steps=w, num_training_steps=n), n
    if name == "get_cosine_schedule_with_warmup":
        return dict(num_warmup_steps=w, num_training_steps=n, num_cycles=draw(cycles)), n
    if name == "get_cosine_with_hard_restarts_schedule_with_warmup":
        return dict(num_warmup_steps=w, num_training_steps=n, num_cycles=draw(st.integers(1, 5))), n
    if name == "get_polynomial_decay_schedule_with_warmup":
        return dict(
            num_warmup_steps=w, num_training_steps=n, lr_end=draw(st.floats(0.0, 5e-6)), power=draw(st.floats(0.1, 3.0))
        ), n
    if name == "get_inverse_sqrt_schedule":
        return dict(num_warmup_steps=w, timescale=draw(st.one_of(st.none(), st.integers(1, 1000)))), n
    if name == "get_cosine_with_min_lr_schedule_with_warmup":
        floor = draw(st.sampled_from(["min_lr", "min_lr_rate"]))
        value = draw(st.floats(0.0, 1e-5)) if floor == "min_lr" else draw(ratios)  # lr >= 1e-5
        return dict(num_warmup_steps=w, num_training_steps=n, num_cycles=draw(cycles), **{floor: value}), n
    d = draw(st.integers(0, 100))
    kw = dict(
        num_warmup_steps=w,
        num_decay_steps=d,
        warmup_type=draw(ramps),
        decay_type=draw(ramps),
        min_lr_ratio=draw(ratios),
        num_cycles=draw(cycles),
    )
    if draw(st.booleans()):
        kw["num_training_steps"] = w + d + draw(st.integers(0, 100))
    else:
        kw["num_stable_steps"] = draw(st.integers(0, 100))
    return kw, w + d + 20


@pytest.mark.parametrize("name", FACTORIES)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), lr=st.floats(1e-5, 1.0), lr2=st.floats(1e-5, 1.0))
def test_drop_in_matches_transformers(name, data, lr, lr2):
    kw, n = factory_kwargs(name, data.draw)
    resume = data.draw(st.one_of(st.none(), st.integers(0, n + 20)))
    assert run_pair(name, kw, n + 40, lr=lr, lr2=lr2, resume_at=resume) is None


@pytest.mark.parametrize("name", FACTORIES)
def test_drop_in_long_run(name):
    # 20,000 steps, far past the end of training for the finite ones.
    kw = {"num_warmup_steps": 500}
    if name != "get_constant_schedule_with_warmup" and name != "get_inverse_sqrt_schedule":
        kw["num_training_steps"] = 8000
    if name == "get_cosine_with_min_lr_schedule_with_warmup":
        kw["min_lr"] = 1e-5
    if name == "get_wsd_schedule":
        kw.update(num_decay_steps=2000, decay_type="1-sqrt", min_lr_ratio=0.01)
    assert run_pair(name, kw, 20_000) is None


def test_drop_in_signatures_are_transformers():
    import inspect

    for name in FACTORIES:
        ours = inspect.signature(getattr(ct, name))
        theirs = inspect.signature(getattr(transformers, name))
        assert list(ours.parameters) == list(theirs.parameters), name
        for p in theirs.parameters.values():
            assert ours.parameters[p.name].default == p.default, (name, p.name)


def test_drop_in_resume_with_last_epoch():
    oa, ob = two_groups(), two_groups()
    kw = dict(num_warmup_steps=5, num_training_steps=50, num_cycles=0.5)
    transformers.get_cosine_schedule_with_warmup(oa, **kw)
    ct.get_cosine_schedule_with_warmup(ob, **kw)
    a = transformers.get_cosine_schedule_with_warmup(oa, **kw, last_epoch=19)
    b = ct.get_cosine_schedule_with_warmup(ob, **kw, last_epoch=19)
    assert group_lrs(oa) == group_lrs(ob) and a.last_epoch == b.last_epoch == 20
    fresh = two_groups()
    with pytest.raises(KeyError, match="initial_lr"):
        ct.get_cosine_schedule_with_warmup(fresh, **kw, last_epoch=3)


def test_state_dicts_load_both_ways_with_lambda_lr():
    kw = dict(num_warmup_steps=10, num_decay_steps=20, num_training_steps=60, decay_type="linear")
    oa, ob = two_groups(), two_groups()
    a = transformers.get_wsd_schedule(oa, **kw)
    b = ct.get_wsd_schedule(ob, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(25):
            a.step()
            b.step()
    # A transformers checkpoint resumed with clrfast, and the other way round.
    oc, od = two_groups(), two_groups()
    c = ct.get_wsd_schedule(oc, **kw)
    c.load_state_dict(a.state_dict())
    d = transformers.get_wsd_schedule(od, **kw)
    d.load_state_dict(b.state_dict())
    assert c.last_epoch == d.last_epoch == 25
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(50):
            a.step()
            c.step()
            d.step()
            assert group_lrs(oc) == group_lrs(oa) == group_lrs(od)


def test_lambda_lr_state_rescales_to_saved_base_lrs():
    opt = two_groups(lr=1e-3, lr2=1e-4)
    b = ct.get_linear_schedule_with_warmup(opt, 0, 100)
    ref = transformers.get_linear_schedule_with_warmup(two_groups(lr=2e-3, lr2=3e-4), 0, 100)
    b.load_state_dict(ref.state_dict())
    assert [s.peak_lr for s in b.schedules] == [2e-3, 3e-4]
    with pytest.raises(ValueError, match="one lr per param group"):
        b.load_state_dict({"base_lrs": [1.0], "lr_lambdas": [None], "last_epoch": 0})


def test_drop_in_pickles_and_plots_its_schedule():
    opt = two_groups()
    s = ct.get_wsd_schedule(opt, 10, 20, num_training_steps=100)
    assert isinstance(s, torch.optim.lr_scheduler.LRScheduler)
    assert s.schedules[0] == clr.WarmupStableDecay(1.3e-3, 10, 70, 20)
    assert s.schedules[1].peak_lr == 3.7e-4
    state = json.loads(json.dumps(s.state_dict()))  # JSON-safe, no lambda
    assert clr.from_dict(state["schedules"][0]) == s.schedules[0]
    t = pickle.loads(pickle.dumps(s))
    assert t.schedules == s.schedules and t.last_epoch == s.last_epoch


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (
            lambda o: ct.get_linear_schedule_with_warmup(o, -1, 10),
            ValueError,
            "num_warmup_steps must be >= 0.0, got -1",
        ),
        (lambda o: ct.get_linear_schedule_with_warmup(o, "5", 10), TypeError, "num_warmup_steps must be a real number"),
        (lambda o: ct.get_linear_schedule_with_warmup(o, 20, 10), ValueError, "num_training_steps \\(10\\) must be >="),
        (lambda o: ct.get_polynomial_decay_schedule_with_warmup(o, 10, 10), ValueError, "must be > num_warmup_steps"),
        (
            lambda o: ct.get_polynomial_decay_schedule_with_warmup(o, 1, 10, lr_end=1.0),
            ValueError,
            "lr_end \\(1.0\\) must be smaller than initial lr \\(0.0013\\)",
        ),
        (
            lambda o: ct.get_cosine_with_min_lr_schedule_with_warmup(o, 1, 10),
            ValueError,
            "One of min_lr or min_lr_rate",
        ),
        (
            lambda o: ct.get_cosine_with_min_lr_schedule_with_warmup(o, 1, 10, min_lr=1, min_lr_rate=0.1),
            ValueError,
            "Only one of min_lr or min_lr_rate",
        ),
        (
            lambda o: ct.get_cosine_with_min_lr_schedule_with_warmup(o, 1, 10, min_lr=1.0),
            ValueError,
            "must be <= the optimizer's lr",
        ),
        (lambda o: ct.get_wsd_schedule(o, 1, 1), ValueError, "Either num_training_steps or num_stable_steps"),
        (lambda o: ct.get_wsd_schedule(o, 1, 1, 10, warmup_type="exp"), ValueError, "Unknown warmup type: exp"),
        (lambda o: ct.get_wsd_schedule(o, 1, 1, 10, decay_type="exp"), ValueError, "Unknown decay type: exp"),
        (
            lambda o: ct.get_wsd_schedule(o, 5, 5, 8),
            ValueError,
            "num_training_steps \\(8\\) must be >= num_warmup_steps",
        ),
        (lambda o: ct.get_wsd_schedule(o, 1, 1, 10, min_lr_ratio=-0.5), ValueError, "min_lr_ratio must be >= 0.0"),
        (lambda o: ct.get_constant_schedule_with_warmup(o, 2.5), ValueError, "num_warmup_steps must be a whole number"),
        (
            lambda o: ct.get_cosine_schedule_with_warmup(o, 1, 10, num_cycles=float("inf")),
            ValueError,
            "num_cycles must be finite",
        ),
        (lambda o: ct.get_linear_schedule_with_warmup(object(), 1, 10), TypeError, "object is not an Optimizer"),
    ],
)
def test_drop_in_bad_input(call, exc, match):
    opt = two_groups()
    before = copy.deepcopy(opt.param_groups[0]["lr"])
    with pytest.raises(exc, match=match):
        call(opt)
    assert opt.param_groups[0]["lr"] == before and "initial_lr" not in opt.param_groups[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "name",
    [
        "get_cosine_schedule_with_warmup",
        "get_wsd_schedule",
        "get_polynomial_decay_schedule_with_warmup",
        "get_constant_schedule_with_warmup",
    ],
)
def test_drop_in_tensor_lr_matches_lambda_lr(name, dtype):
    # LambdaLR multiplies a tensor initial lr in its dtype: float32 rounds differently from a double product.
    kw = {
        "get_cosine_schedule_with_warmup": dict(num_warmup_steps=10, num_training_steps=300),
        "get_wsd_schedule": dict(
            num_warmup_steps=10, num_decay_steps=100, num_training_steps=300, decay_type="1-sqrt", min_lr_ratio=0.1
        ),
        "get_polynomial_decay_schedule_with_warmup": dict(num_warmup_steps=10, num_training_steps=300, power=2.0),
        "get_constant_schedule_with_warmup": dict(num_warmup_steps=10),
    }[name]

    def make():
        p = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
        return torch.optim.AdamW(
            [{"params": [p[0]], "lr": torch.tensor(1.3e-3, dtype=dtype)}, {"params": [p[1]], "lr": 3.7e-4}], lr=1.3e-3
        )

    oa, ob = make(), make()
    a, b = getattr(transformers, name)(oa, **kw), getattr(ct, name)(ob, **kw)
    lr_tensor = ob.param_groups[0]["lr"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in range(320):
            assert oa.param_groups[0]["lr"].item() == lr_tensor.item(), t
            assert oa.param_groups[1]["lr"] == ob.param_groups[1]["lr"], t
            if t == 150:  # resume from a state dict mid-way
                saved = pickle.loads(pickle.dumps(b.state_dict()))
                b = getattr(ct, name)(ob, **kw, last_epoch=t - 1)
                b.load_state_dict(saved)
            a.step()
            b.step()
    assert ob.param_groups[0]["lr"] is lr_tensor
    assert [float(x) for x in a.get_last_lr()] == [float(x) for x in b.get_last_lr()]


def test_wsd_both_counts_warns_as_transformers():
    with pytest.warns(UserWarning, match="num_stable_steps will be used"):
        s = ct.get_wsd_schedule(two_groups(), 1, 2, num_training_steps=100, num_stable_steps=7)
    assert s.schedules[0].stable_steps == 7


# ------------------------------------------------------------------ ScheduleLR


def run(opt, sched, n, key="momentum"):
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(n):
            g = opt.param_groups[0]
            out.append((g["lr"], g["betas"][0] if key == "betas" else g.get(key)))
            if i + 1 < n:
                sched.step()
    return out


def test_schedule_lr_writes_lr_and_momentum():
    s = clr.Cyclic(0.01, 0.1, step_size_up=7, base_momentum=0.8, max_momentum=0.95)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5, momentum=0.5)
    sched = ct.ScheduleLR(opt, s)
    assert isinstance(sched, torch.optim.lr_scheduler.LRScheduler) and sched.last_epoch == 0
    got = run(opt, sched, 40)
    assert got == [(s.lr(k), s.momentum(k)) for k in range(40)]
    assert sched.get_last_lr() == [s.lr(39)]


def test_schedule_lr_equals_torch_cyclic_lr_bit_for_bit():
    kw = dict(base_lr=0.01, max_lr=0.1, step_size_up=13, mode="triangular2")
    oa = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    ob = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    a = torch.optim.lr_scheduler.CyclicLR(oa, **kw)
    b = ct.ScheduleLR(ob, clr.Cyclic(**kw, base_momentum=0.8, max_momentum=0.9))
    assert run(oa, a, 200) == run(ob, b, 200)


def test_schedule_lr_betas_and_fallback_momentum():
    # The warmup piece defines no momentum: beta1 is the optimizer's own there.
    cyc = clr.Cyclic(1e-3, 1e-2, step_size_up=5, base_momentum=0.85, max_momentum=0.95)
    s = clr.Join([clr.Warmup(0.0, 1e-3, 10), cyc], boundaries=[10])
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0, betas=(0.9, 0.99))
    sched = ct.ScheduleLR(opt, s)
    got = run(opt, sched, 40, key="betas")
    want = [(s.lr(k), 0.9 if k < 10 else s.momentum(k)) for k in range(40)]
    assert got == want
    assert opt.param_groups[0]["betas"][1] == 0.99


def test_schedule_lr_one_schedule_per_group_and_tensor_lr():
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    lr_tensor = torch.tensor(0.5, dtype=torch.float64)
    opt = torch.optim.AdamW([{"params": [p1], "lr": lr_tensor}, {"params": [p2]}], lr=1e-3)
    s1, s2 = clr.WarmupCosine(1e-3, 5, 50), clr.InverseSqrt(2e-3, 5)
    sched = ct.ScheduleLR(opt, [s1, s2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(1, 30):
            sched.step()
            assert opt.param_groups[0]["lr"] is lr_tensor  # updated in place with fill_
            assert lr_tensor.item() == s1.lr(k) and opt.param_groups[1]["lr"] == s2.lr(k)
    last = sched.get_last_lr()
    assert isinstance(last[0], torch.Tensor) and last[0] is not lr_tensor and last[1] == s2.lr(29)


def test_schedule_lr_state_dict_resume_and_pickle():
    s = clr.WarmupStableDecay(0.1, 5, 10, 20, decay_type="1-sqrt")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = ct.ScheduleLR(opt, s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(12):
            sched.step()
    state = json.loads(json.dumps(sched.state_dict()))  # the schedule is plain data
    assert state["schedules"] == [s.to_dict()] and state["last_epoch"] == 12
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    other = ct.ScheduleLR(opt2, clr.Constant(1.0))
    other.load_state_dict(state)
    assert other.schedules == [s]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other.step()
    assert opt2.param_groups[0]["lr"] == s.lr(13)
    clone = pickle.loads(pickle.dumps(other))
    assert clone.schedules == [s] and clone.last_epoch == 13


def test_schedule_lr_past_the_end_raises_and_changes_nothing():
    s = clr.OneCycle(0.1, total_steps=10)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    sched = ct.ScheduleLR(opt, s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(10):
            sched.step()
        before = dict(opt.param_groups[0])
        with pytest.raises(ValueError, match="Tried to step 11 times"):
            sched.step()
    assert sched.last_epoch == 10 and opt.param_groups[0]["lr"] == before["lr"] == s.lr(10)


def test_schedule_lr_overflow_raises_like_the_schedule():
    s = clr.Cyclic(0.1, 1.0, step_size_up=1, mode="exp_range", gamma=2.0)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = ct.ScheduleLR(opt, s, last_epoch=-1)
    with warnings.catch_warnings(), pytest.raises(OverflowError, match="overflow"):
        warnings.simplefilter("ignore")  # step(epoch) is deprecated, as in torch
        sched.step(5000)
    assert opt.param_groups[0]["lr"] == 0.1 and sched.last_epoch == 0


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda o: ct.ScheduleLR(o, 0.1), TypeError, "schedule must be a clrfast schedule or a list"),
        (lambda o: ct.ScheduleLR(o, [clr.Constant(0.1)] * 2), ValueError, "one per param group \\(1\\)"),
        (lambda o: ct.ScheduleLR(o, [0.1]), TypeError, "schedule\\[0\\] must be a clrfast schedule"),
        (lambda o: ct.ScheduleLR(o, clr.Constant(0.1), last_epoch=-2), ValueError, "last_epoch must be >= -1"),
        (
            lambda o: ct.ScheduleLR(
                torch.optim.Adagrad(o.param_groups[0]["params"]), clr.OneCycle(0.1, total_steps=10)
            ),
            ValueError,
            "neither 'momentum' nor 'betas'",
        ),
        (lambda o: ct.ScheduleLR(object(), clr.Constant(0.1)), TypeError, "object is not an Optimizer"),
    ],
)
def test_schedule_lr_bad_input(make, exc, match):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    with pytest.raises(exc, match=match):
        make(opt)
    assert opt.param_groups[0]["lr"] == 0.1


def test_schedule_lr_star_import():
    ns = {}
    exec("from clrfast.torch import *", ns)
    for name in ["ScheduleLR", "FactoryLR", *FACTORIES]:
        assert name in ns, name


# ------------------------------------------------------------------ fused optimizers run them


def train(opt, sched, params, n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
        if sched is not None:
            sched.step()


@pytest.mark.parametrize("wt, dt", [("linear", "cosine"), ("cosine", "1-sqrt"), ("1-sqrt", "linear")])
def test_clrsgd_runs_wsd_as_torch_sgd_with_the_transformers_factory(wt, dt):
    from clrfast.torch import CLRSGD

    kw = dict(
        num_warmup_steps=20, num_decay_steps=40, num_training_steps=150, warmup_type=wt, decay_type=dt, min_lr_ratio=0.1
    )
    a = [
        torch.nn.Parameter(torch.randn(97, generator=torch.Generator().manual_seed(1))),
        torch.nn.Parameter(torch.randn(8, 5, generator=torch.Generator().manual_seed(2))),
    ]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    sched = clr.WarmupStableDecay(0.05, 20, 90, 40, warmup_type=wt, decay_type=dt, min_lr_ratio=0.1)
    oa = CLRSGD(a, sched, momentum=0.9, weight_decay=1e-4)
    ob = torch.optim.SGD(b, lr=0.05, momentum=0.9, weight_decay=1e-4, foreach=False)
    sb = transformers.get_wsd_schedule(ob, **kw)
    train(oa, None, a, 170)  # past the end of the decay
    train(ob, sb, b, 170)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_clradamw_runs_cosine_with_min_lr_as_torch_adamw():
    from clrfast.torch import CLRAdamW

    a = [torch.nn.Parameter(torch.randn(64, generator=torch.Generator().manual_seed(3)))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    oa = CLRAdamW(a, clr.WarmupCosine(3e-3, 10, 100, min_lr_rate=0.1), weight_decay=0.01)
    ob = torch.optim.AdamW(b, lr=3e-3, weight_decay=0.01, fused=True)
    sb = transformers.get_cosine_with_min_lr_schedule_with_warmup(ob, 10, 100, min_lr_rate=0.1)
    train(oa, None, a, 100, seed=4)
    train(ob, sb, b, 100, seed=4)
    assert torch.equal(a[0], b[0])
    assert oa.param_groups[0]["lr"] == ob.param_groups[0]["lr"]


def test_fused_hyper_reads_the_new_kinds():
    from clrfast import _core

    for s in ALL:
        for k in (0, 7, 55, 99, 100, 5000):
            lr, mom = _core.sgd_hyper(s._core, k, 0.9)
            assert lr == s.lr(k) and mom == 0.9


def test_plot_draws_the_families(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "wsd.png"
    clr.plot(ALL[0], 1200, path=str(path))
    assert path.stat().st_size > 1000 and math.isfinite(ALL[0].lr(1199))
