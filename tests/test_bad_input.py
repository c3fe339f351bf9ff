"""Bad input raises ValueError/TypeError naming the argument and the value; nothing crashes."""

from __future__ import annotations

import math

import clrfast as clr
import numpy as np
import pytest
from clrfast import scales
from hypothesis import given, settings
from hypothesis import strategies as st

NAN, INF = math.nan, math.inf


def ok_cyclic(**kw):
    return clr.Cyclic(**{"base_lr": 1e-3, "max_lr": 6e-3, "step_size_up": 10, **kw})


def ok_onecycle(**kw):
    return clr.OneCycle(**{"max_lr": 0.1, "total_steps": 100, **kw})


def ok_restarts(**kw):
    return clr.CosineRestarts(**{"base_lr": 0.1, "T_0": 10, **kw})


def ok_warmup(**kw):
    return clr.Warmup(**{"start_lr": 0.0, "end_lr": 0.1, "warmup_steps": 10, **kw})


def ok_sweep(**kw):
    return clr.RangeSweep(**{"start_lr": 1e-6, "end_lr": 1.0, "num_steps": 10, **kw})


# (constructor, keyword, bad value, exception, pattern the message must match)
CONSTRUCTOR_CASES = [
    (ok_cyclic, "step_size_up", 0, ValueError, r"step_size_up must be > 0.*got 0"),
    (ok_cyclic, "step_size_up", -3, ValueError, r"step_size_up.*-3"),
    (ok_cyclic, "step_size_up", NAN, ValueError, r"step_size_up.*nan"),
    (ok_cyclic, "step_size_up", "10", TypeError, r"step_size_up.*'10'"),
    (ok_cyclic, "step_size_down", -1, ValueError, r"step_size_down.*-1"),
    (ok_cyclic, "step_size_down", INF, ValueError, r"step_size_down.*inf"),
    (ok_cyclic, "base_lr", NAN, ValueError, r"base_lr.*nan"),
    (ok_cyclic, "base_lr", -1e-3, ValueError, r"base_lr.*-0\.001"),
    (ok_cyclic, "max_lr", INF, ValueError, r"max_lr.*inf"),
    (ok_cyclic, "max_lr", -INF, ValueError, r"max_lr.*-inf"),
    (ok_cyclic, "max_lr", None, TypeError, r"max_lr.*None"),
    (ok_cyclic, "max_lr", True, TypeError, r"max_lr.*True"),
    (ok_cyclic, "mode", "triangle", ValueError, r"mode.*'triangle'"),
    (ok_cyclic, "mode", None, ValueError, r"mode.*None"),
    (ok_cyclic, "window", "hamming", ValueError, r"window.*'hamming'"),
    (ok_cyclic, "scale_mode", "epoch", ValueError, r"scale_mode.*'epoch'"),
    (ok_cyclic, "gamma", 0.0, ValueError, r"gamma.*0\.0"),
    (ok_cyclic, "gamma", NAN, ValueError, r"gamma.*nan"),
    (ok_cyclic, "scale_fn", lambda x: 1.0, TypeError, r"scale_fn.*lambda"),
    (ok_cyclic, "base_momentum", 0.8, ValueError, r"base_momentum=0\.8, max_momentum=None"),
    (ok_cyclic, "max_momentum", 0.9, ValueError, r"base_momentum=None, max_momentum=0\.9"),
    (ok_onecycle, "total_steps", 0, ValueError, r"total_steps.*0"),
    (ok_onecycle, "total_steps", -5, ValueError, r"total_steps.*-5"),
    (ok_onecycle, "total_steps", 100.0, TypeError, r"total_steps.*100\.0"),
    (ok_onecycle, "total_steps", True, TypeError, r"total_steps.*True"),
    (ok_onecycle, "max_lr", NAN, ValueError, r"max_lr.*nan"),
    (ok_onecycle, "max_lr", INF, ValueError, r"max_lr.*inf"),
    (ok_onecycle, "pct_start", 1.5, ValueError, r"pct_start.*1\.5"),
    (ok_onecycle, "pct_start", -0.1, ValueError, r"pct_start.*-0\.1"),
    (ok_onecycle, "pct_start", NAN, ValueError, r"pct_start.*nan"),
    (ok_onecycle, "anneal", "cosine", ValueError, r"anneal.*'cosine'"),
    (ok_onecycle, "div_factor", 0.0, ValueError, r"div_factor.*0\.0"),
    (ok_onecycle, "div_factor", INF, ValueError, r"div_factor.*inf"),
    (ok_onecycle, "final_div_factor", -1.0, ValueError, r"final_div_factor.*-1\.0"),
    (ok_onecycle, "base_momentum", NAN, ValueError, r"base_momentum.*nan"),
    (ok_onecycle, "max_momentum", INF, ValueError, r"max_momentum.*inf"),
    (ok_restarts, "T_0", 0, ValueError, r"T_0.*0"),
    (ok_restarts, "T_0", -2, ValueError, r"T_0.*-2"),
    (ok_restarts, "T_0", 10.5, TypeError, r"T_0.*10\.5"),
    (ok_restarts, "T_mult", 0.5, ValueError, r"T_mult.*0\.5"),
    (ok_restarts, "T_mult", INF, ValueError, r"T_mult.*inf"),
    (ok_restarts, "eta_min", NAN, ValueError, r"eta_min.*nan"),
    (ok_restarts, "eta_min", -0.1, ValueError, r"eta_min.*-0\.1"),
    (ok_restarts, "base_lr", INF, ValueError, r"base_lr.*inf"),
    (ok_restarts, "peak_decay", 0.0, ValueError, r"peak_decay.*0\.0"),
    (ok_restarts, "warmup_steps", -1, ValueError, r"warmup_steps.*-1"),
    (ok_restarts, "warmup_steps", 10, ValueError, r"warmup_steps.*10"),
    (ok_restarts, "warmup_steps", 2.0, TypeError, r"warmup_steps.*2\.0"),
    (ok_warmup, "warmup_steps", 0, ValueError, r"warmup_steps.*0"),
    (ok_warmup, "warmup_steps", -4, ValueError, r"warmup_steps.*-4"),
    (ok_warmup, "end_lr", NAN, ValueError, r"end_lr.*nan"),
    (ok_warmup, "start_lr", -INF, ValueError, r"start_lr.*-inf"),
    (ok_sweep, "num_steps", 0, ValueError, r"num_steps.*0"),
    (ok_sweep, "num_steps", 1.5, TypeError, r"num_steps.*1\.5"),
    (ok_sweep, "start_lr", 0.0, ValueError, r"start_lr.*0\.0"),  # exp sweep from 0 is undefined
    (ok_sweep, "end_lr", INF, ValueError, r"end_lr.*inf"),
    (ok_sweep, "mode", "log", ValueError, r"mode.*'log'"),
]


@pytest.mark.parametrize(
    "make,key,value,exc,pattern",
    CONSTRUCTOR_CASES,
    ids=[f"{m.__name__[3:]}-{k}={v!r}" for m, k, v, _, _ in CONSTRUCTOR_CASES],
)
def test_constructor_rejects(make, key, value, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make(**{key: value})


def test_constant_rejects():
    with pytest.raises(ValueError, match=r"lr.*nan"):
        clr.Constant(NAN)
    with pytest.raises(ValueError, match=r"lr.*-0\.5"):
        clr.Constant(-0.5)
    with pytest.raises(TypeError, match=r"lr.*'0\.1'"):
        clr.Constant("0.1")


def test_scales_reject():
    with pytest.raises(ValueError, match=r"gamma.*0"):
        scales.ExpRange(0)
    with pytest.raises(ValueError, match=r"gamma.*nan"):
        scales.ExpRange(NAN)
    with pytest.raises(ValueError, match=r"ratio.*-0\.5"):
        scales.Geometric(-0.5)
    with pytest.raises(TypeError, match=r"ratio.*'x'"):
        scales.Geometric("x")


def test_onecycle_zero_length_phase():
    with pytest.raises(ValueError, match=r"pct_start=0\.05.*total_steps=20"):
        clr.OneCycle(0.1, 20, pct_start=0.05)
    with pytest.raises(ValueError, match=r"pct_start=1\.0.*total_steps=1\b"):
        clr.OneCycle(0.1, 1, pct_start=1.0)


def test_join_rejects():
    c = clr.Constant(0.1)
    with pytest.raises(ValueError, match="schedules must not be empty"):
        clr.Join([], [])
    with pytest.raises(ValueError, match=r"boundaries.*1 entries, got 0"):
        clr.Join([c, c], [])
    with pytest.raises(ValueError, match=r"boundaries\[0\].*0"):
        clr.Join([c, c], [0])
    with pytest.raises(ValueError, match=r"boundaries\[0\].*-5"):
        clr.Join([c, c], [-5])
    with pytest.raises(TypeError, match=r"boundaries\[0\].*2\.5"):
        clr.Join([c, c], [2.5])
    with pytest.raises(ValueError, match=r"boundaries must increase.*\[5, 3\]"):
        clr.Join([c, c, c], [5, 3])
    with pytest.raises(ValueError, match=r"boundaries must increase.*\[5, 5\]"):
        clr.Join([c, c, c], [5, 5])
    with pytest.raises(TypeError, match=r"schedules\[1\].*0\.1"):
        clr.Join([c, 0.1], [5])
    with pytest.raises(ValueError, match=r"schedules\[0\] ends at step 100.*200 steps"):
        clr.Join([clr.OneCycle(0.1, 100), c], [200])
    # Exactly its 101 valid steps (0..100) before the boundary is fine.
    assert clr.Join([clr.OneCycle(0.1, 100), c], [101]).lr(101) == 0.1


def test_join_more_than_sixteen_pieces_is_a_clear_error():
    c = clr.Constant(0.1)
    ok = clr.Join([c] * 16, list(range(1, 16)))
    assert ok.lr_table(20).tolist() == [0.1] * 20
    with pytest.raises(ValueError, match="16"):
        clr.Join([c] * 17, list(range(1, 17))).lr(0)


# ------------------------------------------------------------ steps and tables
SCHEDULES = [
    ok_cyclic(base_momentum=0.8, max_momentum=0.9),
    ok_onecycle(),
    ok_restarts(),
    ok_warmup(),
    ok_sweep(),
    clr.Constant(0.1),
    clr.Join([clr.Constant(0.1), ok_cyclic()], [5]),
]
SIDS = [type(s).__name__ for s in SCHEDULES]


@pytest.mark.parametrize("s", SCHEDULES, ids=SIDS)
@pytest.mark.parametrize("method", ["lr", "momentum", "__call__"])
def test_scalar_step_must_be_a_nonnegative_integer(s, method):
    f = getattr(s, method)
    with pytest.raises(TypeError, match=r"step must be an integer.*1\.5.*float"):
        f(1.5)
    with pytest.raises(TypeError, match=r"step must be an integer.*2\.0"):
        f(2.0)
    with pytest.raises(TypeError, match=r"step must be an integer.*True"):
        f(True)
    with pytest.raises(TypeError, match=r"step must be an integer.*'3'"):
        f("3")
    with pytest.raises(TypeError, match=r"step must be an integer.*None"):
        f(None)
    with pytest.raises(TypeError, match=r"step must be an integer"):
        f(np.float64(3.0))
    with pytest.raises(ValueError, match=r"step must be >= 0, got -1"):
        f(-1)
    with pytest.raises(ValueError, match=r"step must be >= 0, got .*-7"):
        f(np.int64(-7))
    # NumPy integers are fine.
    assert f(np.int32(3)) == f(3)


@pytest.mark.parametrize("s", SCHEDULES, ids=SIDS)
@pytest.mark.parametrize("method", ["lr_table", "momentum_table"])
def test_table_steps_must_be_integers(s, method):
    if method == "momentum_table" and not s.has_momentum:
        assert s.momentum_table(5) is None
        return
    f = getattr(s, method)
    with pytest.raises(TypeError, match=r"steps.*float64"):
        f(np.array([1.0, 2.0]))
    with pytest.raises(TypeError, match=r"steps.*float32"):
        f(np.arange(3, dtype=np.float32))
    with pytest.raises(TypeError, match=r"steps.*float64"):
        f([0, 1.5])
    with pytest.raises(TypeError, match=r"steps.*bool"):
        f(np.array([True, False]))
    with pytest.raises(TypeError, match=r"steps.*bool"):
        f(True)
    with pytest.raises(TypeError, match=r"steps.*float64"):
        f(10.0)
    with pytest.raises(ValueError, match=r"steps must be >= 0, got -1"):
        f(-1)
    with pytest.raises(ValueError, match=r"steps must be >= 0, got -2"):
        f(np.array([1, -2, 3]))
    with pytest.raises(ValueError, match=r"too large for int64"):
        f(np.array([2**64 - 1], dtype=np.uint64))
    with pytest.raises(TypeError, match=r"dtype must be float64 or float32, got int32"):
        f(5, dtype=np.int32)
    with pytest.raises(TypeError, match=r"dtype must be float64 or float32, got float16"):
        f(5, dtype=np.float16)
    assert f(0).shape == (0,)
    assert f(np.array([], dtype=np.int64)).shape == (0,)


@pytest.mark.parametrize("s", SCHEDULES, ids=SIDS)
def test_bad_out_is_rejected_and_left_untouched(s):
    n = 8
    cases = [
        (np.full(n, 7.0, dtype=np.float32), {}, ValueError, r"out must have dtype float64.*got float32"),
        (np.full(n + 1, 7.0), {}, ValueError, r"shape \(8,\).*\(9,\)"),
        (np.full((2, 4), 7.0), {}, ValueError, r"shape \(8,\).*\(2, 4\)"),
        (np.full(2 * n, 7.0)[::2], {}, ValueError, r"C-contiguous"),
        (np.full(n, 7, dtype=np.int64), {}, ValueError, r"dtype float64.*int64"),
        (np.full(n, 7.0), {"dtype": np.float32}, ValueError, r"dtype float32.*float64"),
    ]
    for out, kw, exc, pattern in cases:
        before = out.copy()
        with pytest.raises(exc, match=pattern):
            s.lr_table(n, out=out, **kw)
        assert np.array_equal(out, before)
    ro = np.full(n, 7.0)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        s.lr_table(n, out=ro)
    with pytest.raises(TypeError, match=r"out must be a numpy.ndarray, got list"):
        s.lr_table(n, out=[0.0] * n)
    # An integer array of steps: out must have the steps' shape.
    with pytest.raises(ValueError, match=r"shape \(2, 3\).*\(6,\)"):
        s.lr_table(np.zeros((2, 3), dtype=np.int64), out=np.empty(6))
    good = np.empty((2, 3))
    assert s.lr_table(np.arange(6).reshape(2, 3), out=good) is good
    assert np.array_equal(good.ravel(), s.lr_table(6))


@pytest.mark.parametrize("method", ["lr", "momentum"])
def test_onecycle_stepped_past_total_steps(method):
    s = clr.OneCycle(0.1, 100)
    getattr(s, method)(100)  # the last valid step, as in torch
    with pytest.raises(ValueError, match=r"^Tried to step 101 times\. The specified number of total steps is 100$"):
        getattr(s, method)(101)
    with pytest.raises(ValueError, match="Tried to step 5000 times"):
        getattr(s, method)(5000)


@pytest.mark.parametrize("method", ["lr_table", "momentum_table"])
def test_onecycle_table_past_total_steps_is_rejected_before_writing(method):
    s = clr.OneCycle(0.1, 100)
    f = getattr(s, method)
    assert f(101).shape == (101,)
    out = np.full(102, 7.0)
    with pytest.raises(ValueError, match="Tried to step 101 times. The specified number of total steps is 100"):
        f(102, out=out)
    assert np.all(out == 7.0)
    with pytest.raises(ValueError, match="Tried to step 250 times"):
        f(np.array([3, 250, 7]))
    joined = clr.Join([clr.Constant(0.1), s], [10])
    with pytest.raises(ValueError, match="Tried to step 111 times. The specified number of total steps is 110"):
        joined.lr(111)


def test_huge_steps_do_not_crash():
    s = ok_cyclic()
    for t in (2**31, 2**53, 2**62, 2**63 - 1, 2**70):
        v = s.lr(t)
        assert math.isfinite(v) and 1e-3 * (1 - 1e-12) <= v <= 6e-3 * (1 + 1e-12)
    table = s.lr_table(np.array([2**40, 2**62], dtype=np.int64))
    assert np.isfinite(table).all()
    r = ok_restarts(T_mult=2)
    assert math.isfinite(r.lr(2**62))
    assert math.isfinite(ok_restarts(T_mult=1.5).lr(2**62))


def test_errors_leave_the_schedule_usable():
    s = ok_onecycle()
    want = s.lr_table(101)
    for bad in (-1, 1.5, 500):
        with pytest.raises((TypeError, ValueError)):
            s.lr(bad)
    assert np.array_equal(s.lr_table(101), want)


# ------------------------------------------------------- extreme arguments: never inf or NaN
# Each schedule that a constructor accepts has finite lr and momentum at every step it defines;
# where an endless schedule's values grow past a double (a scale or peak that grows with the
# step) lr(t) raises OverflowError naming the step. Arguments are drawn at the extremes.
HUGE = 1.7976931348623157e308
EDGES = [
    0.0,
    5e-324,
    2.2250738585072014e-308,
    1e-300,
    1e-8,
    0.5,
    1.0,
    1.0 + 2**-52,
    2.0,
    3.0,
    1e8,
    2.0**53,
    1e300,
    HUGE / 4,
    HUGE / 2,
    HUGE,
]


def reals(lo=0.0, hi=HUGE, open_lo=False):
    def ok(x):
        return lo <= x <= hi and not (open_lo and x == lo)

    return st.one_of(
        st.sampled_from([x for x in EDGES if ok(x)]),
        st.floats(lo, hi, exclude_min=open_lo),
        st.floats(max(lo, HUGE * (1 - 2**-20)), hi) if hi == HUGE else st.just(hi),
        st.floats(lo, min(hi, 10.0), exclude_min=open_lo),
        st.floats(max(lo, HUGE / 4), hi, exclude_min=open_lo) if hi > HUGE / 4 else st.just(hi),
    )


def ints(lo=0, hi=2**63 - 1):
    edges = [v for v in (0, 1, 2, 3, 10, 2**53 - 1, 2**53, 2**53 + 2, 2**62, 2**63 - 1) if lo <= v <= hi]
    return st.one_of(st.sampled_from(edges), st.integers(lo, min(hi, 100)), st.integers(lo, hi))


COUNTS = st.one_of(ints(0, 2**53), reals(0.0, 2.0**53))
SCALE_VALUES = st.one_of(
    st.none(),
    st.just(scales.Flat()),
    st.just(scales.Halving()),
    st.builds(scales.ExpRange, reals(open_lo=True)),
    st.builds(scales.Geometric, reals(open_lo=True)),
)
RAMPS = st.sampled_from(["linear", "cosine", "1-sqrt"])
POSITIVE = reals(open_lo=True)


def schedules_of(cls, required: dict, optional: dict):
    # An optional argument is often left at its default, so that one extreme argument meets
    # the usual values of the others as well as other extremes.
    return st.fixed_dictionaries(required, optional=optional).map(lambda kw: cls(**kw))


EXTREME = {
    "Cyclic": schedules_of(
        clr.Cyclic,
        {"base_lr": reals(), "max_lr": reals()},
        {
            "step_size_up": POSITIVE,
            "step_size_down": st.none() | reals(),
            "mode": st.sampled_from(["triangular", "triangular2", "exp_range"]),
            "gamma": POSITIVE,
            "scale_mode": st.sampled_from([None, "cycle", "iterations"]),
            "window": st.sampled_from(["triangular", "welch", "hann"]),
            "base_momentum": reals(),
            "max_momentum": reals(),
            "scale_fn": SCALE_VALUES,
        },
    ),
    "OneCycle": schedules_of(
        clr.OneCycle,
        {"max_lr": reals(), "total_steps": ints(1)},
        {
            "pct_start": reals(0.0, 1.0),
            "anneal": st.sampled_from(["cos", "linear"]),
            "three_phase": st.booleans(),
            "div_factor": POSITIVE,
            "final_div_factor": POSITIVE,
            "base_momentum": reals(),
            "max_momentum": reals(),
            "cycle_momentum": st.booleans(),
        },
    ),
    "CosineRestarts": schedules_of(
        clr.CosineRestarts,
        {"base_lr": reals(), "T_0": ints(1)},
        {
            "T_mult": reals(1.0),
            "eta_min": reals(),
            "peak_decay": POSITIVE,
            "warmup_steps": st.one_of(ints(0, 10), ints(0)),
        },
    ),
    "Warmup": schedules_of(clr.Warmup, {"start_lr": reals(), "end_lr": reals(), "warmup_steps": ints(1)}, {}),
    "Constant": schedules_of(clr.Constant, {"lr_value": reals()}, {}),
    "RangeSweep": schedules_of(
        clr.RangeSweep,
        {"start_lr": reals(), "end_lr": reals(), "num_steps": ints(1)},
        {"mode": st.sampled_from(["exp", "linear"])},
    ),
    "WarmupStableDecay": schedules_of(
        clr.WarmupStableDecay,
        {"peak_lr": reals(), "warmup_steps": COUNTS, "stable_steps": COUNTS, "decay_steps": COUNTS},
        {"warmup_type": RAMPS, "decay_type": RAMPS, "min_lr_ratio": reals(0.0, 1.0), "num_cycles": reals(0.0, 2.0**53)},
    ),
    "WarmupLinear": schedules_of(
        clr.WarmupLinear, {"peak_lr": reals(), "warmup_steps": COUNTS, "total_steps": COUNTS}, {}
    ),
    "WarmupCosine": schedules_of(
        clr.WarmupCosine,
        {"peak_lr": reals(), "warmup_steps": COUNTS, "total_steps": COUNTS},
        {"num_cycles": reals(0.0, 2.0**53), "min_lr": reals(), "min_lr_rate": reals(0.0, 1.0)},
    ),
    "CosineHardRestarts": schedules_of(
        clr.CosineHardRestarts,
        {"peak_lr": reals(), "warmup_steps": COUNTS, "total_steps": COUNTS},
        {"num_cycles": reals(0.0, 2.0**53)},
    ),
    "PolynomialDecay": schedules_of(
        clr.PolynomialDecay,
        {"peak_lr": reals(), "warmup_steps": COUNTS, "total_steps": COUNTS},
        {"lr_end": reals(), "power": reals(), "lr_init": reals()},
    ),
    "InverseSqrt": schedules_of(
        clr.InverseSqrt, {"peak_lr": reals(), "warmup_steps": COUNTS}, {"timescale": reals(0.0, 2.0**53, open_lo=True)}
    ),
    "TimmCosine": schedules_of(
        clr.TimmCosine,
        {"base_lr": reals(), "t_initial": COUNTS},
        {
            "lr_min": reals(),
            "cycle_mul": reals(1.0, 2.0**53),
            "cycle_decay": reals(),
            "cycle_limit": ints(0, 2**53),
            "warmup_t": COUNTS,
            "warmup_lr_init": reals(),
            "warmup_prefix": st.booleans(),
            "k_decay": POSITIVE,
        },
    ),
    "TimmTanh": schedules_of(
        clr.TimmTanh,
        {"base_lr": reals(), "t_initial": COUNTS},
        {
            "lb": st.builds(lambda x: -x, reals()),
            "ub": reals(),
            "lr_min": reals(),
            "cycle_mul": reals(1.0, 2.0**53),
            "cycle_decay": reals(),
            "cycle_limit": ints(0, 2**53),
            "warmup_t": COUNTS,
            "warmup_lr_init": reals(),
            "warmup_prefix": st.booleans(),
        },
    ),
    "TimmPoly": schedules_of(
        clr.TimmPoly,
        {"base_lr": reals(), "t_initial": COUNTS},
        {
            "power": reals(),
            "lr_min": reals(),
            "cycle_mul": reals(1.0, 2.0**53),
            "cycle_decay": reals(),
            "cycle_limit": ints(0, 2**53),
            "warmup_t": COUNTS,
            "warmup_lr_init": reals(),
            "warmup_prefix": st.booleans(),
            "k_decay": POSITIVE,
        },
    ),
    "TimmStep": schedules_of(
        clr.TimmStep,
        {"base_lr": reals(), "decay_t": reals(0.0, 2.0**53, open_lo=True)},
        {"decay_rate": reals(), "warmup_t": COUNTS, "warmup_lr_init": reals(), "warmup_prefix": st.booleans()},
    ),
    "TimmMultiStep": schedules_of(
        clr.TimmMultiStep,
        {"base_lr": reals(), "decay_t": st.lists(COUNTS, max_size=16).map(sorted)},
        {"decay_rate": reals(), "warmup_t": COUNTS, "warmup_lr_init": reals(), "warmup_prefix": st.booleans()},
    ),
    "TimmWSD": schedules_of(
        clr.TimmWSD,
        {"base_lr": reals(), "t_initial": COUNTS, "decay_t": COUNTS},
        {
            "lr_min": reals(),
            "stable_fn": st.sampled_from(["constant", "rsqrt", "power"]),
            "stable_timescale": reals(),
            "stable_power": POSITIVE,
            "decay_fn": st.sampled_from(["linear", "1-sqrt", "cosine", "power", "exp"]),
            "decay_power": POSITIVE,
            "decay_ratio": reals(0.0, 1.0, open_lo=True),
            "warmup_t": COUNTS,
            "warmup_lr_init": reals(),
        },
    ),
}


def accepted(strategy):
    """The schedule the strategy builds, or None when its constructor refuses the arguments."""

    @st.composite
    def draw_one(draw):
        try:
            return draw(strategy)
        except (ValueError, OverflowError):  # any other exception fails the test
            return None

    return draw_one()


@st.composite
def joins(draw):
    pieces = draw(st.lists(st.one_of(*map(accepted, EXTREME.values())), min_size=1, max_size=3))
    pieces = [p for p in pieces if p is not None] or [clr.Constant(0.0)]
    bounds = []
    for p in pieces[:-1]:
        span = draw(st.integers(1, 2**40 if p.max_step is None else p.max_step + 1))
        bounds.append((bounds[-1] if bounds else 0) + span)
    return clr.Join(pieces, bounds)


EXTREME["Join"] = joins()


@st.composite
def rehorizons(draw):
    s = draw(st.one_of(*map(accepted, EXTREME.values())))
    if s is None or s.horizon is None:
        s = clr.WarmupCosine(0.1, 3, 50)
    at = draw(st.one_of(st.integers(0, 3), st.integers(0, 2**53)))
    total = draw(st.one_of(st.integers(at + 2, at + 10), st.integers(0, 2**53)))
    return s.with_total_steps(total, at)


@st.composite
def scaled(draw):
    s = draw(st.one_of(*map(accepted, EXTREME.values()))) or clr.Constant(0.1)
    return clr.Scaled(s, draw(reals()), draw(reals()), draw(st.integers(0, 100)))


EXTREME["Rehorizon"] = rehorizons()
EXTREME["Scaled"] = scaled()
assert set(EXTREME) == set(clr.schedules._TYPES)  # every schedule type is drawn


def steps_to_check(s, extra):
    """Steps 0..2, the largest ones, and steps around every whole number among the arguments."""
    out = {0, 1, 2, 2**53, 2**62, 2**63 - 1, *extra}
    pieces = s.schedules if isinstance(s, clr.Join) else (s,)
    offsets = [0, *getattr(s, "boundaries", ())]
    for off in offsets:
        for p in pieces:
            for v in p.__dict__.values():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v < 2**63:
                    out.update(off + int(v) + d for d in range(-3, 3))
    last = s.max_step
    if last is not None:
        out.update({last, last + 1})
    return sorted(t for t in out if 0 <= t < 2**63)


def assert_finite_or_refused(s, steps):
    last = s.max_step
    lrs = []
    for t in steps:
        for what in ("lr", "momentum"):
            try:
                v = getattr(s, what)(t)
            except ValueError as e:  # stepped past the end, as torch says
                assert last is not None and t > last and "Tried to step" in str(e)
                continue
            except OverflowError as e:  # only an endless schedule whose values grow
                assert last is None and s._can_overflow, (s, t, e)
                assert f"no finite value at step {t}:" in str(e)
                continue
            assert v is None or math.isfinite(v), (s, what, t, v)
            if what == "lr":
                lrs.append((t, v))
    # the tables give the same finite values
    if lrs:
        steps_ok = np.array([t for t, _ in lrs], dtype=np.int64)
        assert np.array_equal(s.lr_table(steps_ok), np.array([v for _, v in lrs]))
        m = s.momentum_table(steps_ok)
        assert m is None or not np.isinf(m).any()
    if last is not None and last < 4000:  # a short schedule: every one of its steps
        assert np.isfinite(s.lr_table(last + 1)).all(), s
        m = s.momentum_table(last + 1)
        assert m is None or not np.isinf(m).any(), s


@pytest.mark.parametrize("name", sorted(EXTREME))
@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_extreme_arguments_give_finite_values_or_a_refusal(name, data):
    s = data.draw(accepted(EXTREME[name]), label="schedule")
    if s is None:
        return
    extra = data.draw(st.lists(st.integers(0, 2**63 - 1), max_size=3), label="steps")
    assert_finite_or_refused(s, steps_to_check(s, extra))


# Values a few ulps from the largest double, where a last rounding may step past it: each
# argument near the top, or a quarter of the way down (a difference that rounds).
TOP = st.one_of(
    st.just(HUGE),
    st.floats(HUGE * (1 - 2**-20), HUGE),
    st.builds(lambda e, m: math.ldexp(1 + m * 2**-52, e), st.sampled_from([1022, 1023]), st.integers(0, 2**52 - 1)),
)
LONG = st.sampled_from([3, 10, 82, 1000, 2**53 - 1, 2**53, 2**53 + 2, 2**62])
NEAR_THE_TOP = {
    "RangeSweep": st.builds(clr.RangeSweep, TOP, TOP, LONG, st.sampled_from(["exp", "linear"])),
    "Warmup": st.builds(clr.Warmup, TOP, TOP, LONG),
    "OneCycle": st.builds(
        clr.OneCycle,
        TOP,
        st.sampled_from([3, 10, 82, 1000]),
        st.sampled_from([0.3, 0.5, 1.0]),
        st.sampled_from(["cos", "linear"]),
        st.booleans(),
        st.sampled_from([1.0, 1.5, 2.0, 3.0]),
        st.sampled_from([1.0, 0.5, 2.0]),
        TOP,
        TOP,
    ),
    "Cyclic": st.builds(
        clr.Cyclic,
        TOP,
        TOP,
        st.sampled_from([1, 2.5, 10]),
        st.none(),
        st.just("triangular"),
        st.just(1.0),
        st.none(),
        st.sampled_from(["triangular", "welch", "hann"]),
        TOP,
        TOP,
    ),
    "CosineRestarts": st.builds(
        clr.CosineRestarts,
        TOP,
        st.sampled_from([1, 10]),
        st.sampled_from([1, 1.5, 2]),
        TOP,
        st.sampled_from([1.0, 0.5, 2.0]),
    ),
    "PolynomialDecay": st.builds(
        clr.PolynomialDecay,
        reals(0.0, HUGE / 2),
        st.sampled_from([0, 1, 4]),
        st.sampled_from([5, 82, 1000, 2**53]),
        TOP,
        reals(),
        TOP,
    ),
}


@pytest.mark.parametrize("name", sorted(NEAR_THE_TOP))
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_arguments_next_to_the_largest_double_give_finite_values_or_a_refusal(name, data):
    s = data.draw(accepted(NEAR_THE_TOP[name]), label="schedule")
    if s is not None:
        assert_finite_or_refused(s, steps_to_check(s, []))


@pytest.mark.parametrize(
    "make, exc, pattern",
    [
        (lambda: clr.CosineRestarts(0.1, T_0=10, eta_min=1e308), OverflowError, r"base_lr=0\.1, eta_min=1e\+308"),
        (lambda: clr.CosineRestarts(1e308, T_0=10), OverflowError, r"base_lr=1e\+308"),
        (lambda: clr.InverseSqrt(0.1, 1, timescale=5e-324), OverflowError, r"timescale=5e-324.*warmup_steps=1"),
        (lambda: clr.InverseSqrt(0.0, 10, timescale=1e-300), OverflowError, r"timescale=1e-300.*warmup_steps=10"),
        (
            lambda: clr.RangeSweep(1.5391766598901987e308, HUGE, 2**53 + 2),
            OverflowError,
            r"start_lr=1\.539.*end_lr=1\.797",
        ),
        (
            lambda: clr.OneCycle(
                1.7546484487626033e308,
                82,
                pct_start=1.0,
                anneal="linear",
                three_phase=True,
                div_factor=1.632040684441759,
                final_div_factor=3.329620091439023,
            ),
            OverflowError,
            r"max_lr=1\.75.*div_factor=1\.63",
        ),
        (
            lambda: clr.OneCycle(1.0, 82, base_momentum=HUGE, max_momentum=7.4e307),
            OverflowError,
            r"base_momentum=1\.797.*max_momentum=7\.4e\+307",
        ),
        (
            lambda: clr.PolynomialDecay(
                7.24361270476289e307, 0, 47, lr_end=7.473404807626024e307, power=1.5632739584864164, lr_init=HUGE
            ),
            OverflowError,
            r"lr_init\*2 overflows a double: lr_init=1\.797",
        ),
    ],
)
def test_extremes_that_once_gave_inf_or_nan_are_refused(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make()


def test_values_just_inside_the_extremes_are_exact():
    # the largest accepted arguments still give the schedules' formulas
    eta = HUGE / 2  # above base_lr: the cosine rises towards it; torch's formula, in Python's doubles
    s = clr.CosineRestarts(0.1, T_0=10, eta_min=eta)
    assert s.lr_table(10).tolist() == [eta + (0.1 - eta) * (1 + math.cos(math.pi * t / 10)) / 2 for t in range(10)]
    assert clr.InverseSqrt(0.1, 1, timescale=1.0).lr(4) == 0.1 / math.sqrt(4.0)
    grow = clr.CosineRestarts(1e300, 10, peak_decay=10.0)
    assert grow.lr(70) == 1e300 * 10.0**7
    with pytest.raises(OverflowError, match="no finite value at step 80"):  # 2*peak overflows from cycle 8
        grow.lr(80)
    assert grow.lr_table(80)[-1] == grow.lr(79)


def test_a_table_of_finite_steps_around_an_overflowing_piece_is_given():
    # found by the property above: the Join's first piece overflows before its boundary at 21, so
    # the range 0..2**63-1 holds steps without a finite value, but the two steps asked for have one
    s = clr.Join([clr.CosineRestarts(0.0, 1, T_mult=1.0, peak_decay=2.0**53), clr.Cyclic(0.0, 0.0)], boundaries=[21])
    steps = np.array([0, 2**63 - 1], dtype=np.int64)
    assert s.lr_table(steps).tolist() == [s.lr(0), s.lr(2**63 - 1)]
    with pytest.raises(OverflowError, match="no finite value at step 20:"):
        s.lr(20)
    with pytest.raises(OverflowError, match="no finite value at step 20:"):
        s.lr_table(np.array([0, 20, 2**63 - 1]))
