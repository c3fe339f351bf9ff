"""Schedules are values: pickle, dict/JSON round trips, equality, hashing and repr."""

from __future__ import annotations

import copy
import json
import pickle

import clrfast as clr
import numpy as np
import pytest
from clrfast import scales


def examples():
    cyc = clr.Cyclic(1e-3, 6e-3, 2000, 1500, mode="triangular2", base_momentum=0.85, max_momentum=0.95)
    return [
        cyc,
        clr.Cyclic(0.01, 0.1, 333.5, mode="exp_range", gamma=0.9999, window="hann"),
        clr.Cyclic(0.01, 0.1, 10, 0, window="welch", scale_fn=scales.Geometric(0.7), scale_mode="iterations"),
        clr.Cyclic(0.01, 0.1, 10, scale_fn=scales.ExpRange(0.99), base_momentum=0.8, max_momentum=0.9),
        clr.Cyclic(0.01, 0.1, 10, scale_fn=scales.Halving()),
        clr.Cyclic(0.01, 0.1, 10, scale_fn=scales.Flat(), scale_mode="cycle"),
        clr.OneCycle(0.1, 1000),
        clr.OneCycle(
            2.0,
            777,
            pct_start=0.25,
            anneal="linear",
            three_phase=True,
            div_factor=10.0,
            final_div_factor=1e5,
            base_momentum=0.8,
            max_momentum=0.97,
        ),
        clr.OneCycle(0.1, 100, cycle_momentum=False),
        clr.CosineRestarts(0.1, 100),
        clr.CosineRestarts(0.1, 10, T_mult=1.5, eta_min=1e-5, peak_decay=0.8, warmup_steps=3),
        clr.Warmup(0.0, 0.1, 500),
        clr.Constant(0.05),
        clr.RangeSweep(1e-7, 10.0, 100),
        clr.RangeSweep(1e-4, 1.0, 50, mode="linear"),
        clr.Join([clr.Warmup(0.0, 0.1, 500), clr.CosineRestarts(0.1, 1000, 2)], [500]),
        clr.Join([clr.Join([clr.Constant(0.01), cyc], [5]), clr.OneCycle(0.1, 50)], [4000]),
    ]


EXAMPLES = examples()
IDS = [f"{i}-{type(s).__name__}" for i, s in enumerate(EXAMPLES)]
N = 3000


def horizon(s):
    return N if s.max_step is None else min(N, s.max_step + 1)


def assert_same_values(a, b):
    n = horizon(a)
    assert np.array_equal(a.lr_table(n), b.lr_table(n))
    assert a.has_momentum == b.has_momentum
    if a.has_momentum:
        assert np.array_equal(a.momentum_table(n), b.momentum_table(n), equal_nan=True)
    else:
        assert b.momentum_table(n) is None
    assert a.max_step == b.max_step


@pytest.mark.parametrize("s", EXAMPLES, ids=IDS)
def test_pickle_round_trip(s):
    s.lr(0)  # compile first: the cached core object must not be what gets pickled
    for proto in (2, pickle.HIGHEST_PROTOCOL):
        blob = pickle.dumps(s, protocol=proto)
        back = pickle.loads(blob)
        assert type(back) is type(s)
        assert back == s and hash(back) == hash(s)
        assert_same_values(back, s)
    assert copy.deepcopy(s) == s and copy.copy(s) == s


@pytest.mark.parametrize("s", EXAMPLES, ids=IDS)
def test_dict_json_round_trip(s):
    d = s.to_dict()
    assert d["clrfast_schedule"] == clr.FORMAT_VERSION and d["type"] == type(s).__name__
    text = json.dumps(d, allow_nan=False)  # strictly JSON: no NaN/inf, no Python objects
    back = clr.from_dict(json.loads(text))
    assert type(back) is type(s)
    assert back == s and hash(back) == hash(s)
    assert_same_values(back, s)
    assert back.to_dict() == d
    assert clr.Schedule.from_dict(d) == s


def test_to_dict_contents_are_readable():
    d = clr.Cyclic(0.01, 0.1, 10, scale_fn=scales.ExpRange(0.99), base_momentum=0.8, max_momentum=0.9).to_dict()
    assert d == {
        "clrfast_schedule": 1,
        "type": "Cyclic",
        "params": {
            "base_lr": 0.01,
            "max_lr": 0.1,
            "step_size_up": 10,
            "step_size_down": None,
            "mode": "triangular",
            "gamma": 1.0,
            "scale_mode": None,
            "window": "triangular",
            "base_momentum": 0.8,
            "max_momentum": 0.9,
            "scale_fn": {"type": "ExpRange", "gamma": 0.99},
        },
    }
    j = clr.Join([clr.Constant(0.1), clr.Warmup(0.0, 1.0, 5)], [7]).to_dict()
    assert j["params"]["boundaries"] == [7]
    assert [p["type"] for p in j["params"]["schedules"]] == ["Constant", "Warmup"]


def test_equal_values_are_equal_and_hash_equal():
    a = clr.Cyclic(1e-3, 6e-3, 2000, mode="triangular2")
    b = clr.Cyclic(1e-3, 6e-3, 2000, mode="triangular2")
    c = clr.Cyclic(1e-3, 6e-3, 2001, mode="triangular2")
    a.lr_table(10)  # a compiled, b not: the cache must not affect equality or hash
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert len({a, b, c}) == 2
    assert {a: 1}[b] == 1
    j1 = clr.Join([a, clr.Constant(0.1)], [100])
    j2 = clr.Join((b, clr.Constant(0.1)), (100,))  # lists and tuples give the same value
    assert j1 == j2 and hash(j1) == hash(j2)
    assert clr.Join([a, clr.Constant(0.1)], [101]) != j1
    assert scales.ExpRange(0.5) == scales.ExpRange(0.5) and hash(scales.ExpRange(0.5)) == hash(scales.ExpRange(0.5))
    assert scales.ExpRange(0.5) != scales.Geometric(0.5)
    assert clr.Warmup(0.0, 1.0, 5) != clr.RangeSweep(0.0, 1.0, 5, mode="linear")


def test_values_are_immutable():
    s = clr.Cyclic(1e-3, 6e-3, 2000)
    with pytest.raises(AttributeError):
        s.max_lr = 1.0
    assert s.max_lr == 6e-3 and s.lr(2000) == 6e-3


@pytest.mark.parametrize("s", EXAMPLES, ids=IDS)
def test_repr_is_readable_and_evaluates_back(s):
    r = repr(s)
    assert r.startswith(type(s).__name__ + "(")
    assert "object at 0x" not in r and "_core" not in r and "_compiled" not in r
    namespace = {name: getattr(clr, name) for name in clr.__all__}
    namespace.update({name: getattr(scales, name) for name in scales.__all__})
    assert eval(r, namespace) == s


def test_repr_shows_the_parameters():
    r = repr(clr.OneCycle(0.1, 1000, anneal="linear"))
    assert "max_lr=0.1" in r and "total_steps=1000" in r and "anneal='linear'" in r
    assert repr(clr.Constant(0.05)) == "Constant(0.05)"
    assert "gamma=0.99" in repr(clr.Cyclic(0.01, 0.1, 10, scale_fn=scales.ExpRange(0.99)))


def test_from_dict_rejects_unknown_version_and_type():
    d = clr.Constant(0.1).to_dict()
    with pytest.raises(ValueError, match=r"version 2\b"):
        clr.from_dict({**d, "clrfast_schedule": 2})
    with pytest.raises(ValueError, match="version None"):
        clr.from_dict({k: v for k, v in d.items() if k != "clrfast_schedule"})
    with pytest.raises(ValueError, match="'Linear'"):
        clr.from_dict({**d, "type": "Linear"})
    with pytest.raises(ValueError, match="type None"):
        clr.from_dict({k: v for k, v in d.items() if k != "type"})
    with pytest.raises(TypeError, match="list"):
        clr.from_dict([d])
    bad_scale = clr.Cyclic(0.01, 0.1, 10, scale_fn=scales.Halving()).to_dict()
    bad_scale["params"]["scale_fn"] = {"type": "Lambda"}
    with pytest.raises(ValueError, match="'Lambda'"):
        clr.from_dict(bad_scale)
    nested = clr.Join([clr.Constant(0.1), clr.Constant(0.2)], [3]).to_dict()
    nested["params"]["schedules"][1]["clrfast_schedule"] = 99
    with pytest.raises(ValueError, match="99"):
        clr.from_dict(nested)


def test_from_dict_validates_parameters():
    d = clr.Cyclic(0.01, 0.1, 10).to_dict()
    d["params"]["step_size_up"] = -5
    with pytest.raises(ValueError, match="step_size_up.*-5"):
        clr.from_dict(d)
    d = clr.OneCycle(0.1, 100).to_dict()
    d["params"]["anneal"] = "cosine"
    with pytest.raises(ValueError, match="anneal.*'cosine'"):
        clr.from_dict(d)
    d = clr.Constant(0.1).to_dict()
    d["params"]["bogus"] = 1
    with pytest.raises(TypeError, match="bogus"):
        clr.from_dict(d)
