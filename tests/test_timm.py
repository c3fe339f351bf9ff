"""timm's schedulers: the drop-ins in clrfast.torch and the clrfast schedule values, against timm itself.

timm is the oracle: a timm scheduler and a clrfast drop-in drive two identical optimizers side
by side, and every group's lr must be the same float (==) after every call.
"""

from __future__ import annotations

import copy
import json
import math
import pickle
import sys
import warnings

import clrfast as clr
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracles import import_timm

torch = pytest.importorskip("torch")

# timm's package __init__ imports torchvision, whose PyPI build does not load beside a CPU-only
# torch; timm.scheduler needs neither (see oracles.import_timm).
ts, _factory = import_timm("timm.scheduler", "timm.scheduler.scheduler_factory")
timm_create = _factory.create_scheduler_v2

import clrfast.torch as ct  # noqa: E402
from clrfast.torch import timm_schedulers as cts  # noqa: E402

NAMES = [
    "CosineLRScheduler",
    "TanhLRScheduler",
    "PolyLRScheduler",
    "StepLRScheduler",
    "MultiStepLRScheduler",
    "WSDLRScheduler",
]


def optimizer(lrs=(0.1, 0.03, 0.5), scale=0.25):
    """SGD with one group per lr; the last also has an lr_scale (layer-wise lr decay)."""
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in lrs]
    if scale is not None:
        groups[-1]["lr_scale"] = scale
    return torch.optim.SGD(groups, lr=0.1)


def lrs_of(opt):
    return [g["lr"] for g in opt.param_groups]


def build(name, lrs=(0.1, 0.03, 0.5), scale=0.25, **kw):
    oa, ob = optimizer(lrs, scale), optimizer(lrs, scale)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm's plateau FutureWarning, its t_initial == 1 log
        a = getattr(ts, name)(oa, **kw)
    b = getattr(ct, name)(ob, **kw)
    return (a, oa), (b, ob)


def outcome(fn, *args):
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - the oracle's exception is compared, not handled
        return type(e)
    return None


def call_both(a, oa, b, ob, method, *args):
    """Calls ``method`` on both; True when both gave the same lrs, False when both refused the step.

    Where timm's Python raises, or puts a complex lr in a group (a negative float to a fractional
    power), clrfast must raise.
    """
    ea = outcome(getattr(a, method), *args)
    if ea is None and any(isinstance(v, complex) for v in lrs_of(oa)):
        ea = TypeError
    eb = outcome(getattr(b, method), *args)
    assert (ea is None) == (eb is None), (method, args, ea, eb)
    if ea is None:
        assert lrs_of(oa) == lrs_of(ob), (method, args)
    return ea is None


def drive(pair_a, pair_b, epochs, updates_per_epoch=3, metrics=None):
    """timm's train loop on both: step_update after each update, step at the end of each epoch."""
    (a, oa), (b, ob) = pair_a, pair_b
    assert lrs_of(oa) == lrs_of(ob)
    num_updates = 0
    for epoch in range(epochs):
        for _ in range(updates_per_epoch):
            num_updates += 1
            if not call_both(a, oa, b, ob, "step_update", num_updates):
                return num_updates
        metric = None if metrics is None else metrics[epoch]
        if not call_both(a, oa, b, ob, "step", epoch + 1, metric):
            return num_updates
    return num_updates


CYCLE_OPTIONS = [
    dict(t_initial=20),
    dict(t_initial=15, lr_min=1e-4, cycle_limit=4, cycle_decay=0.5),
    dict(t_initial=10, cycle_mul=2.0, cycle_limit=5, cycle_decay=0.7, warmup_t=3, warmup_lr_init=1e-5),
    dict(t_initial=12, cycle_mul=1.5, cycle_limit=4, warmup_t=4, warmup_prefix=True, lr_min=1e-3),
    dict(t_initial=7, cycle_limit=100, cycle_decay=1.1, warmup_t=2),
    dict(t_initial=9, cycle_limit=3, warmup_t=5, warmup_lr_init=1e-4, t_in_epochs=False),
    dict(t_initial=11, noise_range_t=(3, 20), noise_pct=0.3, noise_std=0.5, noise_seed=7),
    dict(t_initial=30, cycle_mul=1.3, cycle_limit=3, noise_range_t=5, t_in_epochs=False),
    dict(t_initial=1),
]
K_OPTIONS = [dict(), dict(k_decay=1.7), dict(k_decay=0.6)]


@pytest.mark.parametrize("name", ["CosineLRScheduler", "PolyLRScheduler", "TanhLRScheduler"])
@pytest.mark.parametrize("kw", CYCLE_OPTIONS)
def test_cycle_schedulers_match_timm(name, kw):
    extra = [dict(), dict(lb=-5.0, ub=4.0)] if name == "TanhLRScheduler" else K_OPTIONS
    if name == "PolyLRScheduler":
        extra = extra + [dict(power=2.0), dict(power=0.9, k_decay=1.2)]
    for more in extra:
        a, b = build(name, **kw, **more)
        drive(a, b, epochs=60)
        assert a[0].state_dict() == b[0].state_dict()
        if name != "StepLRScheduler":
            assert a[0].get_cycle_length() == b[0].get_cycle_length()


STEP_OPTIONS = [
    dict(decay_t=3),
    dict(decay_t=2.5, decay_rate=0.5),
    dict(decay_t=4, decay_rate=0.7, warmup_t=3, warmup_lr_init=1e-4),
    dict(decay_t=4, decay_rate=0.7, warmup_t=3, warmup_prefix=False),
    dict(decay_t=0.7, decay_rate=0.9, t_in_epochs=False, warmup_t=5),
    dict(decay_t=5, decay_rate=1.5),
    dict(decay_t=3, decay_rate=0.5, noise_range_t=(2, 30), noise_pct=0.2),
]


@pytest.mark.parametrize("kw", STEP_OPTIONS)
def test_step_matches_timm(kw):
    a, b = build("StepLRScheduler", **kw)
    drive(a, b, epochs=50)
    assert a[0].state_dict() == b[0].state_dict()


MULTI_OPTIONS = [
    dict(decay_t=[5, 10, 30]),
    dict(decay_t=[3, 8, 9, 20], decay_rate=0.5, warmup_t=2, warmup_lr_init=1e-3),
    dict(decay_t=[3, 8, 20], decay_rate=0.5, warmup_t=2, warmup_prefix=False),
    dict(decay_t=[20, 3, 40, 8], decay_rate=0.3),  # unsorted: bisect's answer, as timm
    dict(decay_t=[10, 50, 90], decay_rate=0.1, t_in_epochs=False, noise_range_t=[20, 100]),
    dict(decay_t=[], decay_rate=0.5),
]


@pytest.mark.parametrize("kw", MULTI_OPTIONS)
def test_multistep_matches_timm(kw):
    a, b = build("MultiStepLRScheduler", **kw)
    drive(a, b, epochs=45)
    assert a[0].state_dict() == b[0].state_dict()
    for t in range(0, 60, 7):
        assert a[0].get_curr_decay_steps(t) == b[0].get_curr_decay_steps(t)


@pytest.mark.parametrize("stable_fn", ["constant", "rsqrt", "power"])
@pytest.mark.parametrize("decay_fn", ["linear", "1-sqrt", "cosine", "power", "exp"])
@pytest.mark.parametrize(
    "kw",
    [
        dict(t_initial=40, decay_t=10, warmup_t=5),
        dict(t_initial=30, decay_t=30, warmup_t=3, lr_min=2e-3, warmup_lr_init=1e-4, stable_power=0.3),
        dict(t_initial=90, decay_t=25, stable_timescale=7.5, decay_power=2.0, decay_ratio=0.3, t_in_epochs=False),
        dict(t_initial=35, decay_t=4, warmup_t=2, lr_min=0.2, noise_range_t=(1, 30), noise_pct=0.1),
    ],
)
def test_wsd_matches_timm(stable_fn, decay_fn, kw):
    if stable_fn != "constant" and not kw.get("warmup_t") and "stable_timescale" not in kw:
        pytest.skip("timm refuses a stable_fn without a timescale")
    a, b = build("WSDLRScheduler", stable_fn=stable_fn, decay_fn=decay_fn, **kw)
    drive(a, b, epochs=45)
    assert a[0].state_dict() == b[0].state_dict()
    assert a[0].get_cycle_length() == b[0].get_cycle_length()


@pytest.mark.parametrize("noise_type", ["normal", "uniform"])
def test_noise_types_match_timm(noise_type):
    # timm's subclasses fix noise_type to 'normal'; it is a base-class attribute, set here as a user would.
    a, b = build("CosineLRScheduler", t_initial=25, noise_range_t=(2, 40), noise_pct=0.4, noise_std=0.8)
    a[0].noise_type = b[0].noise_type = noise_type
    drive(a, b, epochs=40)


@pytest.mark.parametrize(
    "kw",
    [
        dict(patience_t=2, decay_rate=0.5),
        dict(patience_t=1, decay_rate=0.3, warmup_t=3, warmup_lr_init=1e-4, mode="min", lr_min=1e-3),
        dict(patience_t=2, cooldown_t=1, noise_range_t=(4, 30), noise_pct=0.3, noise_type="uniform"),
        dict(patience_t=3, noise_range_t=2, noise_seed=5),
    ],
)
def test_plateau_matches_timm_without_its_warning(kw):
    rng = np.random.default_rng(0)
    metrics = list(rng.permutation(40) / 40.0)
    oa, ob = optimizer(), optimizer()
    with pytest.warns(FutureWarning):
        a = ts.PlateauLRScheduler(oa, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b = ct.PlateauLRScheduler(ob, **kw)
    drive((a, oa), (b, ob), epochs=40, metrics=metrics)
    assert a.state_dict() == b.state_dict() and set(b.state_dict()) == {"best", "last_epoch"}
    a2, b2 = build("PlateauLRScheduler", **kw)
    b2[0].load_state_dict(a.state_dict())
    a2[0].load_state_dict(b.state_dict())
    assert a2[0].lr_scheduler.best == b2[0].lr_scheduler.best == b.lr_scheduler.best


# ------------------------------------------------------------------ properties over the arguments


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(["CosineLRScheduler", "TanhLRScheduler", "PolyLRScheduler"]),
    t_initial=st.integers(1, 40),
    lr_min=st.sampled_from([0.0, 1e-5, 0.01]),
    cycle_mul=st.sampled_from([1.0, 1.0, 1.25, 2.0, 3.0]),
    cycle_decay=st.floats(0.1, 1.5),
    cycle_limit=st.integers(0, 6),
    warmup_t=st.integers(0, 6),
    warmup_lr_init=st.sampled_from([0.0, 1e-6, 1e-3]),
    warmup_prefix=st.booleans(),
    k=st.sampled_from([1.0, 0.5, 1.5, 2.0]),
    base=st.floats(1e-4, 2.0),
)
def test_cycle_values_match_timm_property(
    name, t_initial, lr_min, cycle_mul, cycle_decay, cycle_limit, warmup_t, warmup_lr_init, warmup_prefix, k, base
):
    kw = dict(
        t_initial=t_initial,
        lr_min=lr_min,
        cycle_mul=cycle_mul,
        cycle_decay=cycle_decay,
        cycle_limit=cycle_limit,
        warmup_t=warmup_t,
        warmup_lr_init=warmup_lr_init,
        warmup_prefix=warmup_prefix,
        t_in_epochs=False,
    )
    if name != "TanhLRScheduler":
        kw["k_decay"] = k
    (a, oa), (b, ob) = build(name, lrs=(base, base * 0.3), **kw)
    for t in range(0, 4 * t_initial + warmup_t + 5):
        if not call_both(a, oa, b, ob, "step_update", t):
            return


@settings(max_examples=60, deadline=None)
@given(
    decay_t=st.one_of(st.integers(1, 10), st.floats(0.3, 10.0)),
    decay_rate=st.floats(0.0, 1.2),
    warmup_t=st.integers(0, 5),
    warmup_prefix=st.booleans(),
    milestones=st.lists(st.integers(0, 60), max_size=8),
)
def test_step_values_match_timm_property(decay_t, decay_rate, warmup_t, warmup_prefix, milestones):
    common = dict(decay_rate=decay_rate, warmup_t=warmup_t, warmup_prefix=warmup_prefix, warmup_lr_init=1e-4)
    for name, d in (("StepLRScheduler", decay_t), ("MultiStepLRScheduler", milestones)):
        (a, oa), (b, ob) = build(name, decay_t=d, **common)
        for t in range(80):
            a.step(t)
            b.step(t)
            assert lrs_of(oa) == lrs_of(ob), (name, t)


# ------------------------------------------------------------------ state dicts


@pytest.mark.parametrize(
    "name, kw",
    [
        ("CosineLRScheduler", dict(t_initial=10, cycle_mul=1.5, cycle_limit=4, warmup_t=2, noise_range_t=(3, 30))),
        ("TanhLRScheduler", dict(t_initial=10, warmup_t=3)),
        ("PolyLRScheduler", dict(t_initial=12, cycle_limit=2, k_decay=1.3)),
        ("StepLRScheduler", dict(decay_t=3, decay_rate=0.5, warmup_t=2)),
        ("MultiStepLRScheduler", dict(decay_t=[4, 9], decay_rate=0.5)),
        ("WSDLRScheduler", dict(t_initial=30, decay_t=8, warmup_t=3, stable_fn="rsqrt")),
    ],
)
def test_state_dicts_exchange_both_ways(name, kw):
    a, b = build(name, **kw)
    drive(a, b, epochs=5)
    sa, sb = a[0].state_dict(), b[0].state_dict()
    assert sa == sb and list(sa) == list(sb)
    json.dumps({k: v for k, v in sb.items()})  # plain values
    # timm's state into a fresh clrfast scheduler built with other arguments, and the other way
    other = dict(t_initial=99) if "t_initial" in kw else dict(decay_rate=0.9)
    kw2 = {**kw, **other}
    a2, b2 = build(name, lrs=(0.7, 0.2, 0.05), **kw2)
    b2[0].load_state_dict(copy.deepcopy(sa))
    a2[0].load_state_dict(copy.deepcopy(sb))
    # the loaded base_values / warmup_steps drive the schedule from here on
    for t in range(5, 60):
        a[0].step(t)
        a2[0].step(t)
        b2[0].step(t)
        assert lrs_of(a2[1]) == lrs_of(b2[1]) == lrs_of(a[1]), t
    assert a2[0].state_dict() == b2[0].state_dict()


def test_state_dict_from_timm_with_changed_values_is_followed():
    (a, oa), (b, ob) = build("CosineLRScheduler", t_initial=20, warmup_t=4)
    state = a.state_dict()
    state["warmup_steps"] = [0.001, 0.002, 0.003]  # as a run saved with other lrs would hold them
    state["base_values"] = [0.2, 0.1, 0.05]
    a.load_state_dict(state)
    b.load_state_dict(state)
    for t in range(30):
        a.step(t)
        b.step(t)
        assert lrs_of(oa) == lrs_of(ob)
    b.t_initial = a.t_initial = 7  # a plain attribute change takes effect, as in timm
    a.step(12)
    b.step(12)
    assert lrs_of(oa) == lrs_of(ob)
    a.base_values[1] = b.base_values[1] = 0.9  # and so does one made in place
    a.step(13)
    b.step(13)
    assert lrs_of(oa) == lrs_of(ob) and lrs_of(ob)[1] != state["base_values"][1]


@pytest.mark.parametrize(
    "name, kw",
    [
        ("CosineLRScheduler", dict(t_initial=10, cycle_limit=3, warmup_t=2)),
        ("CosineLRScheduler", dict(t_initial=10, cycle_mul=1.5, cycle_limit=3, k_decay=1.5)),
        ("TanhLRScheduler", dict(t_initial=7.5, cycle_limit=2, warmup_t=3)),
        ("StepLRScheduler", dict(decay_t=2.5, decay_rate=0.5, warmup_t=1)),
        ("MultiStepLRScheduler", dict(decay_t=[2.5, 6], decay_rate=0.5)),
        ("WSDLRScheduler", dict(t_initial=20.5, decay_t=6.25, stable_fn="power", warmup_t=2)),
    ],
)
def test_float_steps_and_float_lengths_match_timm(name, kw):
    a, b = build(name, **kw)
    for t in np.arange(0.0, 40.0, 0.375):
        assert call_both(*a, *b, "step", float(t)), t


# ------------------------------------------------------------------ create_scheduler_v2

SCHEDS = ["cosine", "tanh", "step", "constant", "multistep", "plateau", "poly", "wsd", "rsqrt", "none"]


@pytest.mark.parametrize("sched", SCHEDS)
@pytest.mark.parametrize(
    "kw",
    [
        dict(num_epochs=40),
        dict(num_epochs=40, warmup_epochs=3, warmup_prefix=True, cooldown_epochs=2, min_lr=1e-5),
        dict(
            num_epochs=30,
            warmup_epochs=2,
            decay_epochs=7,
            decay_milestones=[5, 15],
            cycle_limit=3,
            cycle_mul=1.5,
            noise=[0.2, 0.8],
        ),
        dict(num_epochs=20, warmup_epochs=2, step_on_epochs=False, updates_per_epoch=4, noise=0.5, cooldown_epochs=1),
        dict(num_epochs=25, decay_epochs=0.4, stable_timescale=3, decay_fn="cosine", warmup_epochs=2),
    ],
)
def test_create_scheduler_v2_matches_timm(sched, kw):
    if sched == "plateau" and kw.get("step_on_epochs") is False:
        oa, ob = optimizer(), optimizer()
        with pytest.raises(AssertionError):
            timm_create(oa, sched=sched, **kw)
        with pytest.raises(AssertionError):
            ct.create_scheduler_v2(ob, sched=sched, **kw)
        return
    oa, ob = optimizer(), optimizer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            a, na = timm_create(oa, sched=sched, **kw)
        except ValueError as e:  # rsqrt without a warmup or a timescale: the same error
            with pytest.raises(ValueError) as mine:
                ct.create_scheduler_v2(ob, sched=sched, **kw)
            assert str(mine.value) == str(e)
            return
    b, nb = ct.create_scheduler_v2(ob, sched=sched, **kw)
    assert na == nb
    assert (a is None) == (b is None)
    assert type(a).__name__ == type(b).__name__
    if a is None:
        return
    assert a.state_dict() == b.state_dict()
    metrics = list(np.random.default_rng(1).random(na + 1))
    drive((a, oa), (b, ob), epochs=na, updates_per_epoch=kw.get("updates_per_epoch", 2), metrics=metrics)


def test_create_scheduler_v2_errors_match_timm():
    for kw in (dict(sched="nope"), dict(sched="wsd", num_epochs=10, decay_epochs=20)):
        oa, ob = optimizer(), optimizer()
        with pytest.raises(ValueError) as ea:
            timm_create(oa, **kw)
        with pytest.raises(ValueError) as eb:
            ct.create_scheduler_v2(ob, **kw)
        assert str(ea.value) == str(eb.value)


# ------------------------------------------------------------------ where timm has no float value


def test_overflowing_peak_raises_where_timm_does():
    (a, oa), (b, ob) = build("CosineLRScheduler", t_initial=2, cycle_decay=1e30, cycle_limit=100)
    for t in range(0, 40):
        ea, eb = outcome(a.step, t), outcome(b.step, t)
        assert ea is eb, t
        if ea is not None:
            assert eb is OverflowError
            break
        assert lrs_of(oa) == lrs_of(ob)
    else:
        pytest.fail("no overflow")
    before = lrs_of(ob)
    with pytest.raises(OverflowError, match="overflows"):
        b.step(t)
    assert lrs_of(ob) == before  # a refused step changes nothing
    value = clr.TimmCosine(0.1, 2, cycle_decay=1e30, cycle_limit=100)
    with pytest.raises(OverflowError, match="no finite value"):
        value.lr(t)
    with pytest.raises(OverflowError, match="no finite value"):
        value.lr_table(400)  # the steps past the limit hold lr_min, the range between them does not
    assert value.lr(t - 1) == lrs_of(oa)[0]


def test_cycle_mul_below_one_ends_where_timm_raises():
    (a, oa), (b, ob) = build("CosineLRScheduler", t_initial=10, cycle_mul=0.5, cycle_limit=50)
    for t in range(0, 40):
        ea, eb = outcome(a.step, t), outcome(b.step, t)
        assert ea is eb, t
        if ea is not None:
            assert ea is ValueError and t == 20
            break
        assert lrs_of(oa) == lrs_of(ob)
    with pytest.raises(ValueError, match="cycle_mul must be >= 1"):
        clr.TimmCosine(0.1, 10, cycle_mul=0.5)


def test_complex_value_is_refused_where_timm_has_no_float():
    # cycle_mul 1.1 over t_initial 100 rounds the start of cycle 3 past step 331: t_curr < 0, and
    # t_curr ** 1.5 is complex in Python (math.cos then raises TypeError).
    (a, oa), (b, ob) = build("CosineLRScheduler", t_initial=100, cycle_mul=1.1, cycle_limit=10, k_decay=1.5)
    assert outcome(a.step, 330) is None and outcome(b.step, 330) is None
    assert lrs_of(oa) == lrs_of(ob)
    assert outcome(a.step, 331) is TypeError
    with pytest.raises(ValueError, match="complex"):
        b.step(331)
    value = clr.TimmCosine(0.1, 100, cycle_mul=1.1, cycle_limit=10, k_decay=1.5)
    with pytest.raises(OverflowError, match="complex"):
        value.lr(331)
    out = np.zeros(400)
    with pytest.raises(OverflowError, match="step 331"):
        value.lr_table(400, out=out)
    assert not out.any()  # nothing written
    assert value.lr_table([330, 332]).tolist() == [value.lr(330), value.lr(332)]


# ------------------------------------------------------------------ schedule values

VALUES = [
    (
        clr.TimmCosine,
        "CosineLRScheduler",
        dict(t_initial=20, cycle_mul=1.5, cycle_decay=0.6, cycle_limit=4, warmup_t=3),
    ),  # fmt: skip
    (
        clr.TimmCosine,
        "CosineLRScheduler",
        dict(t_initial=9, lr_min=1e-4, cycle_limit=3, k_decay=2.0, warmup_t=2, warmup_prefix=True),
    ),  # fmt: skip
    (clr.TimmTanh, "TanhLRScheduler", dict(t_initial=15, cycle_limit=3, warmup_t=4, warmup_lr_init=1e-4)),
    (clr.TimmTanh, "TanhLRScheduler", dict(t_initial=15, cycle_mul=2.0, cycle_limit=3, warmup_t=4, warmup_prefix=True)),
    (clr.TimmPoly, "PolyLRScheduler", dict(t_initial=25, power=0.9, cycle_limit=2, lr_min=1e-3)),
    (clr.TimmStep, "StepLRScheduler", dict(decay_t=2.5, decay_rate=0.5, warmup_t=3, warmup_lr_init=1e-5)),
    (clr.TimmMultiStep, "MultiStepLRScheduler", dict(decay_t=(5, 10, 30), decay_rate=0.5, warmup_t=2)),
    (clr.TimmWSD, "WSDLRScheduler", dict(t_initial=50, decay_t=20, stable_fn="rsqrt", warmup_t=5, decay_fn="exp")),
    (clr.TimmWSD, "WSDLRScheduler", dict(t_initial=60, decay_t=60, lr_min=0.01, decay_fn="power", decay_power=2.0)),
]


def timm_sequence(name, base, n, **kw):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    s = getattr(ts, name)(opt, **kw, t_in_epochs=False)
    out = []
    for t in range(n):
        s.step_update(t)
        out.append(opt.param_groups[0]["lr"])
    return np.array(out)


@pytest.mark.parametrize("cls, name, kw", VALUES)
def test_values_table_is_timms_sequence(cls, name, kw):
    v = cls(0.1, **kw)
    want = timm_sequence(name, 0.1, 300, **{k: list(x) if isinstance(x, tuple) else x for k, x in kw.items()})
    got = v.lr_table(300)
    assert np.array_equal(got, want)
    assert [v.lr(t) for t in (0, 7, 299)] == [want[0], want[7], want[299]]
    assert np.array_equal(v.lr_table(np.array([[3, 250], [11, 0]])), want[[[3, 250], [11, 0]]])
    assert np.array_equal(v.lr_table(300, dtype=np.float32), want.astype(np.float32))
    assert v.max_step is None and v.momentum(5) is None


@pytest.mark.parametrize("cls, name, kw", VALUES)
def test_values_round_trip(cls, name, kw):
    v = cls(0.1, **kw)
    d = json.loads(json.dumps(v.to_dict()))
    w = clr.from_dict(d)
    assert w == v and hash(w) == hash(v) and type(w) is cls
    assert pickle.loads(pickle.dumps(v)) == v
    assert np.array_equal(w.lr_table(100), v.lr_table(100))
    assert cls.__name__ in repr(v)


def test_values_in_a_join():
    j = clr.Join([clr.Warmup(0.0, 0.1, 10), clr.TimmCosine(0.1, 50, lr_min=1e-3)], [10])
    c = clr.TimmCosine(0.1, 50, lr_min=1e-3)
    assert np.array_equal(j.lr_table(np.arange(10, 200)), c.lr_table(190))


@pytest.mark.parametrize(
    "cls, kw, err, match",
    [
        (clr.TimmCosine, dict(base_lr=0.1, t_initial=0), ValueError, "t_initial"),
        (clr.TimmCosine, dict(base_lr=-0.1, t_initial=5), ValueError, "base_lr"),
        (clr.TimmCosine, dict(base_lr=0.1, t_initial=5, k_decay=0), ValueError, "k_decay"),
        (clr.TimmCosine, dict(base_lr=0.1, t_initial=5, cycle_limit=1.5), TypeError, "cycle_limit"),
        (clr.TimmCosine, dict(base_lr=0.1, t_initial=5, warmup_prefix=1), TypeError, "warmup_prefix"),
        (clr.TimmCosine, dict(base_lr=0.1, t_initial=5, noise_range_t=(1, 4)), TypeError, "noise_range_t"),
        (clr.TimmTanh, dict(base_lr=0.1, t_initial=5, lb=3.0, ub=3.0), ValueError, "lb must be < ub"),
        (clr.TimmPoly, dict(base_lr=0.1, t_initial="5"), TypeError, "t_initial"),
        (clr.TimmStep, dict(base_lr=0.1, decay_t=0), ValueError, "decay_t"),
        (clr.TimmStep, dict(base_lr=0.1, decay_t=2, decay_rate=-1), ValueError, "decay_rate"),
        (clr.TimmMultiStep, dict(base_lr=0.1, decay_t=(5, 3)), ValueError, "sorted"),
        (clr.TimmMultiStep, dict(base_lr=0.1, decay_t=tuple(range(17))), ValueError, "16"),
        (clr.TimmMultiStep, dict(base_lr=0.1, decay_t=5), TypeError, "decay_t"),
        (clr.TimmWSD, dict(base_lr=0.1, t_initial=10, decay_t=11), ValueError, "decay_t"),
        (clr.TimmWSD, dict(base_lr=0.1, t_initial=10, decay_t=5, decay_fn=math.sqrt), TypeError, "callable"),
        (clr.TimmWSD, dict(base_lr=0.1, t_initial=10, decay_t=5, decay_fn="square"), ValueError, "decay_fn"),
        (clr.TimmWSD, dict(base_lr=0.1, t_initial=10, decay_t=5, stable_fn="rsqrt"), ValueError, "stable_timescale"),
        (clr.TimmWSD, dict(base_lr=0.1, t_initial=10, decay_t=5, decay_ratio=1.0), ValueError, "decay_ratio"),
    ],
)
def test_values_refuse_bad_arguments(cls, kw, err, match):
    with pytest.raises(err, match=match):
        cls(**kw)


def test_drop_ins_refuse_bad_arguments_naming_them():
    opt = optimizer()
    with pytest.raises(AssertionError, match="t_initial"):  # timm's assert
        ct.CosineLRScheduler(opt, t_initial=0)
    with pytest.raises(ValueError, match="t_initial"):
        ct.CosineLRScheduler(opt, t_initial=0)
    with pytest.raises(TypeError, match="cycle_mul"):
        ct.CosineLRScheduler(opt, t_initial=5, cycle_mul="2")
    with pytest.raises(ValueError, match="lb must be < ub"):
        ct.TanhLRScheduler(opt, t_initial=5, lb=1.0, ub=0.0)
    with pytest.raises(TypeError, match="callable"):
        ct.WSDLRScheduler(opt, t_initial=10, decay_t=5, decay_fn=math.sqrt)
    with pytest.raises(ValueError, match="16 milestones"):
        ct.MultiStepLRScheduler(opt, decay_t=list(range(20)))
    with pytest.raises(ValueError, match="Invalid decay_t"):  # timm's own message
        ct.WSDLRScheduler(opt, t_initial=10, decay_t=11)
    s = ct.StepLRScheduler(optimizer(), decay_t=2)
    with pytest.raises(ValueError, match="t must be in"):
        s.step(-1)
    with pytest.raises(TypeError, match="t must be a real"):
        s.step("3")


# ------------------------------------------------------------------ the fused optimizer and optax


@pytest.mark.parametrize(
    "value, name, kw",
    [
        (clr.TimmCosine(0.05, 40, lr_min=1e-4, cycle_limit=3, warmup_t=5, warmup_lr_init=1e-4),
         "CosineLRScheduler", dict(t_initial=40, lr_min=1e-4, cycle_limit=3, warmup_t=5, warmup_lr_init=1e-4)),
        (clr.TimmWSD(0.05, 100, 30, warmup_t=10, decay_fn="cosine"), "WSDLRScheduler",
         dict(t_initial=100, decay_t=30, warmup_t=10, decay_fn="cosine")),
    ],
)  # fmt: skip
def test_clrsgd_runs_a_timm_value_as_torch_sgd_with_timm(value, name, kw):
    a = [
        torch.nn.Parameter(torch.randn(97, generator=torch.Generator().manual_seed(1))),
        torch.nn.Parameter(torch.randn(8, 5, generator=torch.Generator().manual_seed(2))),
    ]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    oa = ct.CLRSGD(a, value, momentum=0.9, weight_decay=1e-4)
    ob = torch.optim.SGD(b, lr=0.05, momentum=0.9, weight_decay=1e-4, foreach=False)
    sb = getattr(ts, name)(ob, **kw, t_in_epochs=False)
    gen_a, gen_b = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    for k in range(150):
        sb.step_update(k)  # update k runs at timm's lr of update count k
        for p in a:
            p.grad = torch.randn(p.shape, generator=gen_a)
        for p in b:
            p.grad = torch.randn(p.shape, generator=gen_b)
        oa.step()
        ob.step()
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_optax_reads_a_timm_value():
    pytest.importorskip("jax")
    pytest.importorskip("optax")
    import clrfast.optax as clro
    import jax.numpy as jnp

    s = clr.TimmCosine(0.1, 30, cycle_mul=2.0, cycle_limit=3, warmup_t=4)
    f = clro.schedule(s)
    counts = np.arange(0, 200, 3)
    got = np.array([float(f(jnp.asarray(int(k)))) for k in counts], np.float32)
    assert np.array_equal(got, np.array([s.lr(int(k)) for k in counts], np.float32))


def test_drop_in_names_are_exported():
    for name in [*NAMES, "PlateauLRScheduler", "create_scheduler_v2"]:
        assert getattr(ct, name) is getattr(cts, name)
        assert name in ct.__all__


def test_keras_reads_a_timm_value(tmp_path):
    # Keras fixes its backend on first import, so it runs in its own process.
    pytest.importorskip("keras")
    pytest.importorskip("jax")
    import os
    import subprocess

    script = tmp_path / "k.py"
    script.write_text(
        "import json, sys\n"
        "import numpy as np, clrfast as clr, clrfast.keras as ck\n"
        "s = clr.from_dict(json.loads(sys.argv[1]))\n"
        "f = ck.Schedule(s)\n"
        "print(json.dumps([float(np.asarray(f(k))) for k in range(0, 300, 7)]))\n"
    )
    s = clr.TimmWSD(0.1, 200, 50, warmup_t=10, stable_fn="rsqrt", decay_fn="cosine", lr_min=1e-4)
    # The child imports clrfast the way this process did (installed, or from PYTHONPATH).
    env = dict(os.environ, KERAS_BACKEND="jax")
    proc = subprocess.run(
        [sys.executable, str(script), json.dumps(s.to_dict())], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.array(json.loads(proc.stdout.strip().splitlines()[-1]), np.float32)
    assert np.array_equal(got, np.array([s.lr(k) for k in range(0, 300, 7)], np.float32))


def test_initialize_false_reads_the_groups_initial_lr_as_timm():
    oa, ob = optimizer(), optimizer()
    for o in (oa, ob):
        for i, g in enumerate(o.param_groups):
            g["initial_lr"] = 0.2 / (i + 1)
    a = ts.CosineLRScheduler(oa, t_initial=10, warmup_t=2, initialize=False)
    b = ct.CosineLRScheduler(ob, t_initial=10, warmup_t=2, initialize=False)
    drive((a, oa), (b, ob), epochs=15)
    fresh = optimizer()
    with pytest.raises(KeyError, match="initial_lr"):
        ct.CosineLRScheduler(fresh, t_initial=10, initialize=False)


def test_drop_ins_pickle_and_deepcopy_as_timms():
    for name, kw in [
        ("CosineLRScheduler", dict(t_initial=10, warmup_t=2)),
        ("WSDLRScheduler", dict(t_initial=20, decay_t=5)),
    ]:
        (a, oa), (b, ob) = build(name, **kw)
        a.step(3)
        b.step(3)
        b2 = pickle.loads(pickle.dumps(b))
        a2 = copy.deepcopy(a)  # pickling timm's would import its package (and torchvision)
        b3 = copy.deepcopy(b)
        for t in range(4, 30):
            for s in (a2, b2, b3):
                s.step(t)
            assert lrs_of(a2.optimizer) == lrs_of(b2.optimizer) == lrs_of(b3.optimizer)


HORIZONS = [
    (clr.TimmCosine, "CosineLRScheduler", dict(t_initial=100, lr_min=1e-4, warmup_t=10, warmup_prefix=True)),
    (clr.TimmCosine, "CosineLRScheduler", dict(t_initial=20, cycle_mul=2.0, cycle_limit=3, cycle_decay=0.5)),
    (clr.TimmTanh, "TanhLRScheduler", dict(t_initial=40, cycle_limit=2, warmup_t=5, warmup_lr_init=1e-4)),
    (clr.TimmPoly, "PolyLRScheduler", dict(t_initial=60, power=0.9, lr_min=1e-3, k_decay=1.5)),
    (clr.TimmWSD, "WSDLRScheduler", dict(t_initial=80, decay_t=30, warmup_t=8, decay_fn="cosine")),
]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(HORIZONS), at_frac=st.floats(0.0, 1.0), total_frac=st.floats(0.1, 3.0))
def test_a_timm_value_re_horizoned_is_timm_at_the_stretched_time(case, at_frac, total_frac):
    # The horizon is timm's own cycle length less one (the last step before lr_min), and the
    # re-horizoned steps are timm's _get_lr at the stretched (float) time, which timm accepts.
    cls, name, kw = case
    v = cls(0.1, **kw)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    ref = getattr(ts, name)(opt, **kw, t_in_epochs=False)
    h = v.horizon
    assert h == ref.get_cycle_length() - 1
    at = int(at_frac * (h - 1))  # an endless value keeps its last step's value past it: at < h
    total = max(at + 2, int(total_frac * (h + 1)))
    r = v.with_total_steps(total, at)
    steps = np.arange(total + 10)

    def stretched(t):
        return float(at) + float(t - at) * float(h - at) / float(total - 1 - at)

    want = [ref._get_lr(t if t <= at else stretched(t))[0] for t in range(total + 10)]  # Python numbers, as timm gets
    assert r.lr_table(steps).tolist() == want
    assert r.lr(total - 1) == v.lr(h) and r.horizon == total - 1


def test_step_values_have_no_horizon_and_say_how_to_end_them():
    with pytest.raises(ValueError, match="has none"):
        clr.TimmStep(0.1, decay_t=10).with_total_steps(100, 5)
