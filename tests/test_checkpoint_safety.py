"""Checkpoints that hold schedules: legit ones load back equal, tampered ones are refused when loaded.

``torch.load(weights_only=True)`` may rebuild clrfast schedules and scales. A pickle can then
call their constructor (REDUCE), their ``__new__`` (NEWOBJ, with or without arguments) and set
a state (BUILD). Each crafted pickle here is loaded both by ``pickle.loads`` and by
``torch.load``; the oracle for what it must give is the constructor called with the same
arguments: the same value, or the same refusal.
"""

from __future__ import annotations

import copy
import copyreg
import io
import math
import pickle
import pickletools
import struct
import zipfile

import clrfast as clr
import numpy as np
import pytest
from clrfast import scales
from clrfast.scales import Scale
from clrfast.schedules import Schedule
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import clrfast.torch  # noqa: E402, F401  (registers the safe globals)

NAN = math.nan


def examples():
    cyc = clr.Cyclic(1e-3, 6e-3, 2000, 1500, mode="triangular2", base_momentum=0.85, max_momentum=0.95)
    return [
        cyc,
        clr.Cyclic(0.01, 0.1, 10, scale_fn=scales.ExpRange(0.99), base_momentum=0.8, max_momentum=0.9),
        clr.Cyclic(0.01, 0.1, 10, 0, window="welch", scale_fn=scales.Geometric(0.7), scale_mode="iterations"),
        clr.Cyclic(0.01, 0.1, 10, scale_fn=scales.Halving()),
        clr.Cyclic(0.01, 0.1, 10, scale_fn=scales.Flat(), scale_mode="cycle"),
        clr.OneCycle(2.0, 777, pct_start=0.25, anneal="linear", three_phase=True, div_factor=10.0),
        clr.CosineRestarts(0.1, 10, T_mult=1.5, eta_min=1e-5, peak_decay=0.8, warmup_steps=3),
        clr.Warmup(0.0, 0.1, 500),
        clr.Constant(0.05),
        clr.RangeSweep(1e-7, 10.0, 100),
        clr.WarmupStableDecay(3e-4, 200, 1400, 400, decay_type="1-sqrt", min_lr_ratio=0.1),
        clr.WarmupLinear(0.1, 10, 100),
        clr.WarmupCosine(0.1, 10, 100, min_lr=0.01),
        clr.CosineHardRestarts(0.1, 10, 100, num_cycles=3),
        clr.PolynomialDecay(0.1, 10, 100, lr_end=1e-4, power=2.0),
        clr.InverseSqrt(0.1, 10, timescale=7),
        clr.Join([clr.Join([clr.Constant(0.01), cyc], [5]), clr.OneCycle(0.1, 50)], [4000]),
    ]


EXAMPLES = examples()
IDS = [f"{i}-{type(s).__name__}" for i, s in enumerate(EXAMPLES)]
SCALES = [scales.Flat(), scales.Halving(), scales.ExpRange(0.99), scales.Geometric(0.5), scales.ExpRange(2)]


def values(s, n=600):
    n = n if s.max_step is None else min(n, s.max_step + 1)
    return s.lr_table(n), s.momentum_table(n)


def assert_same(a, b):
    assert type(a) is type(b) and a == b and hash(a) == hash(b)
    la, ma = values(a)
    lb, mb = values(b)
    assert np.array_equal(la, lb)
    assert (ma is None and mb is None) or np.array_equal(ma, mb, equal_nan=True)


# ----------------------------------------------------------------- torch files
_TEMPLATE = io.BytesIO()
torch.save({}, _TEMPLATE)


def torch_file(pkl: bytes) -> io.BytesIO:
    """A torch.save archive whose data.pkl is ``pkl`` (the other records from a real one)."""
    src = zipfile.ZipFile(io.BytesIO(_TEMPLATE.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, pkl if info.filename.endswith("/data.pkl") else src.read(info))
    out.seek(0)
    return out


def data_pkl(blob: bytes) -> bytes:
    z = zipfile.ZipFile(io.BytesIO(blob))
    return z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))


def torch_load(pkl: bytes):
    return torch.load(torch_file(pkl), weights_only=True)


def loaders():
    return [pytest.param(pickle.loads, id="pickle"), pytest.param(torch_load, id="torch.load")]


def opcodes(pkl: bytes) -> set:
    return {op.name for op, _, _ in pickletools.genops(pkl)}


def optimizer_state(sched) -> dict:
    return {
        "state": {0: {"momentum_buffer": None}},
        "param_groups": [{"lr": 0.1, "momentum": 0.9, "schedule": sched, "params": [0]}],
    }


# ------------------------------------------------------------- legit round trips
@pytest.mark.parametrize("s", EXAMPLES, ids=IDS)
def test_legit_round_trips_give_equal_hashable_values(s):
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        assert_same(pickle.loads(pickle.dumps(s, protocol=proto)), s)
    assert_same(copy.deepcopy(s), s)
    assert_same(copy.copy(s), s)
    assert_same(clr.from_dict(s.to_dict()), s)
    buf = io.BytesIO()
    torch.save(optimizer_state(s), buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=True)
    assert_same(back["param_groups"][0]["schedule"], s)
    assert len({s, back["param_groups"][0]["schedule"]}) == 1


@pytest.mark.parametrize("sc", SCALES, ids=repr)
def test_scales_round_trip_and_pickle_as_constructor_calls(sc):
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        blob = pickle.dumps(sc, protocol=proto)
        back = pickle.loads(blob)
        assert type(back) is type(sc) and back == sc and hash(back) == hash(sc)
        assert "BUILD" not in opcodes(blob)  # no state to set: the constructor gets the arguments
    assert copy.deepcopy(sc) == sc and copy.copy(sc) == sc
    buf = io.BytesIO()
    torch.save({"scale": sc}, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=True)["scale"]
    assert back == sc
    # scale(x) against its formula: gamma**x, ratio**(x - 1), 1/2**(x - 1) or 1
    g = getattr(sc, "gamma", getattr(sc, "ratio", None))
    expect = {"Flat": 1.0, "Halving": 2.0**-2, "ExpRange": g**3 if g else None, "Geometric": g**2 if g else None}
    assert back(3) == pytest.approx(expect[type(sc).__name__], rel=1e-15)


def test_only_the_concrete_classes_are_safe_globals():
    allowed = set(torch.serialization.get_safe_globals())
    concrete = set(clr.schedules._TYPES.values()) | set(scales._TYPES.values())
    assert concrete <= allowed
    assert not {Schedule, Scale, clr.schedules._WarmupDecay} & allowed


def test_a_built_value_cannot_be_changed_by_init_again():
    s = clr.Cyclic(1e-3, 6e-3, 2000)
    h = hash(s)
    s.__init__(-5.0, NAN)  # what a pickle cannot do, but neither may a caller
    assert (s.base_lr, s.max_lr, hash(s), s.lr(2000)) == (1e-3, 6e-3, h, 6e-3)
    g = scales.ExpRange(0.5)
    g.__init__(-1.0)
    assert g.gamma == 0.5 and g(2) == 0.25


# ------------------------------------------------------- hand-made opcode streams
def glob(cls) -> bytes:
    return b"c" + cls.__module__.encode() + b"\n" + cls.__qualname__.encode() + b"\n"


def frag(value) -> bytes:
    """The opcodes that push ``value`` (a plain number, string, None or tuple of them)."""
    return pickle.dumps(value, protocol=2)[2:-1]


def stream(*parts: bytes) -> bytes:
    # optimize drops the memo PUTs the fragments carry, which could clash between them
    return pickletools.optimize(b"\x80\x02" + b"".join(parts) + b".")


REDUCE, NEWOBJ, BUILD, NONE = b"R", b"\x81", b"b", b"N"
CYC_ARGS = (1e-3, 6e-3, 2000)


def test_hand_made_streams_parse_as_the_intended_opcodes():
    ok = stream(glob(clr.Cyclic), frag(CYC_ARGS), REDUCE)
    assert pickle.loads(ok) == clr.Cyclic(*CYC_ARGS) == torch_load(ok)
    assert {"GLOBAL", "REDUCE"} <= opcodes(ok)
    assert "NEWOBJ" in opcodes(stream(glob(clr.Cyclic), frag(CYC_ARGS), NEWOBJ))
    assert "BUILD" in opcodes(stream(glob(clr.Cyclic), frag(CYC_ARGS), REDUCE, frag({}), BUILD))


# (stream, exception, message pattern): each is refused, by pickle.loads and torch.load alike
TAMPERED = [
    (stream(glob(clr.Cyclic), frag((-5.0, 6e-3, 2000)), REDUCE), ValueError, r"base_lr.*-5\.0"),
    (stream(glob(clr.Cyclic), frag((1e-3, NAN, 2000)), REDUCE), ValueError, r"max_lr.*nan"),
    (stream(glob(clr.Cyclic), frag((1e-3, 6e-3, 2000, None, "bogus")), REDUCE), ValueError, r"mode.*'bogus'"),
    (stream(glob(clr.Cyclic), frag((1e-3,) * 12), REDUCE), TypeError, r"positional argument"),
    (stream(glob(clr.Cyclic), frag((-5.0, NAN)), NEWOBJ), ValueError, r"base_lr.*-5\.0"),
    # NEWOBJ alone: no instance without its arguments
    (stream(glob(clr.Cyclic), frag(()), NEWOBJ), TypeError, r"missing 2 required.*'base_lr' and 'max_lr'"),
    (stream(glob(clr.Constant), frag(()), NEWOBJ), TypeError, r"lr_value"),
    # NEWOBJ + BUILD: a state set directly is refused, whatever it holds
    (
        stream(glob(clr.Cyclic), frag(CYC_ARGS), NEWOBJ, frag({"base_lr": -5.0, "max_lr": NAN}), BUILD),
        TypeError,
        r"Cyclic is pickled as a call of its constructor.*'base_lr': -5\.0",
    ),
    (
        stream(glob(clr.Cyclic), frag(CYC_ARGS), NEWOBJ, frag({"base_lr": 1e-3, "max_lr": 6e-3, "extra": 1}), BUILD),
        TypeError,
        r"no state to set.*'extra'",
    ),
    (stream(glob(clr.Constant), frag((0.1,)), NEWOBJ, frag({}), BUILD), TypeError, r"Constant.*no state"),
    # BUILD after a valid REDUCE would change a built (and maybe hashed) value
    (stream(glob(clr.Cyclic), frag(CYC_ARGS), REDUCE, frag({"max_lr": 1e300}), BUILD), TypeError, r"max_lr.*1e\+300"),
    (stream(glob(clr.Cyclic), frag(CYC_ARGS), REDUCE, frag((None, {"max_lr": 1.0})), BUILD), TypeError, "state"),
    # scales: the constructor's checks, and no state
    (stream(glob(scales.ExpRange), frag((-0.5,)), REDUCE), ValueError, r"gamma.*-0\.5"),
    (stream(glob(scales.Geometric), frag((NAN,)), REDUCE), ValueError, r"ratio.*nan"),
    (stream(glob(scales.Geometric), frag((-2.0,)), NEWOBJ), ValueError, r"ratio.*-2\.0"),
    (
        stream(glob(scales.ExpRange), frag(()), NEWOBJ, frag({"gamma": -1.0}), BUILD),
        TypeError,
        r"ExpRange.*'gamma': -1\.0",
    ),
    (stream(glob(scales.Flat), frag(()), NEWOBJ, frag({"gamma": 2.0}), BUILD), TypeError, r"Flat.*no state"),
    # a scale nested in a schedule
    (
        stream(
            glob(clr.Cyclic),
            b"(",
            frag(0.01),
            frag(0.1),
            frag(10),
            frag(None),
            frag("triangular"),
            frag(1.0),
            frag(None),
            frag("triangular"),
            frag(None),
            frag(None),
            glob(scales.ExpRange),
            frag((-0.9,)),
            REDUCE,
            b"t",
            REDUCE,
        ),
        ValueError,
        r"gamma.*-0\.9",
    ),
    (
        stream(
            glob(clr.Cyclic),
            b"(",
            frag(0.01),
            frag(0.1),
            frag(10),
            frag(None),
            frag("triangular"),
            frag(1.0),
            frag(None),
            frag("triangular"),
            frag(None),
            frag(None),
            glob(scales.Geometric),
            frag(()),
            NEWOBJ,
            frag({"ratio": -3.0}),
            BUILD,
            b"t",
            REDUCE,
        ),
        TypeError,
        r"Geometric.*'ratio': -3\.0",
    ),
    (
        stream(
            glob(clr.Cyclic),
            b"(",
            frag(0.01),
            frag(0.1),
            frag(10),
            frag(None),
            frag("triangular"),
            frag(1.0),
            frag(None),
            frag("triangular"),
            frag(None),
            frag(None),
            frag("not a scale"),
            b"t",
            REDUCE,
        ),
        TypeError,
        r"scale_fn.*'not a scale'",
    ),
    # compositions: a tampered piece, a piece that is no schedule, tampered boundaries
    (
        stream(
            glob(clr.Join),
            b"(",
            b"(",
            glob(clr.Constant),
            frag((0.1,)),
            REDUCE,
            glob(clr.Constant),
            frag((-0.2,)),
            REDUCE,
            b"t",
            frag((5,)),
            b"t",
            REDUCE,
        ),
        ValueError,
        r"lr.*-0\.2",
    ),
    (
        stream(
            glob(clr.Join),
            b"(",
            b"(",
            glob(clr.Constant),
            frag((0.1,)),
            REDUCE,
            frag(0.2),
            b"t",
            frag((5,)),
            b"t",
            REDUCE,
        ),
        TypeError,
        r"schedules\[1\].*0\.2",
    ),
    (
        stream(
            glob(clr.Join),
            b"(",
            b"(",
            glob(clr.Constant),
            frag((0.1,)),
            REDUCE,
            glob(clr.Constant),
            frag((0.2,)),
            REDUCE,
            b"t",
            frag((-5,)),
            b"t",
            REDUCE,
        ),
        ValueError,
        r"boundaries.*-5",
    ),
    (stream(glob(clr.Join), frag(()), NEWOBJ), TypeError, r"'schedules' and 'boundaries'"),
]


@pytest.mark.parametrize("load", loaders())
@pytest.mark.parametrize("pkl, exc, pattern", TAMPERED, ids=[f"case{i}" for i in range(len(TAMPERED))])
def test_tampered_streams_are_refused_when_loaded(load, pkl, exc, pattern):
    with pytest.raises(exc, match=pattern):
        load(pkl)


@pytest.mark.parametrize("pkl, exc, pattern", TAMPERED, ids=[f"case{i}" for i in range(len(TAMPERED))])
def test_tampered_streams_are_refused_inside_an_optimizer_state(pkl, exc, pattern):
    # {"param_groups": [{"lr": 0.1, "schedule": <the stream's object>}]}
    body = pkl[2:-1]
    wrapped = stream(b"}(", frag("param_groups"), b"](}(", frag("lr"), frag(0.1), frag("schedule"), body, b"ueu")
    assert set(opcodes(wrapped)) >= {"EMPTY_DICT", "EMPTY_LIST", "SETITEMS", "APPENDS"}
    for load in (pickle.loads, torch_load):
        with pytest.raises(exc, match=pattern):
            load(wrapped)


@pytest.mark.parametrize("cls", [Schedule, clr.schedules._WarmupDecay, Scale], ids=lambda c: c.__name__)
def test_base_classes_are_never_instances(cls):
    for pkl in (stream(glob(cls), frag(()), NEWOBJ), stream(glob(cls), frag(()), REDUCE)):
        with pytest.raises(TypeError, match=f"{cls.__name__} is a base class"):
            pickle.loads(pkl)
        with pytest.raises(pickle.UnpicklingError, match="Unsupported global"):
            torch_load(pkl)
    with pytest.raises(TypeError, match="base class"):
        cls()


def test_torch_rebuild_from_type_cannot_set_a_state():
    # an allowed torch helper that calls a constructor and then __setstate__
    pkl = stream(
        glob(torch._tensor._rebuild_from_type_v2),
        b"(",
        glob(clr.Constant),
        glob(clr.Constant),
        frag((0.1,)),
        frag({"lr_value": -1.0}),
        b"t",
        REDUCE,
    )
    for load in (pickle.loads, torch_load):
        with pytest.raises(TypeError, match=r"Constant.*'lr_value': -1\.0"):
            load(pkl)


# --------------------------------------------------- real checkpoints, tampered
def saved_checkpoint(sched) -> bytes:
    buf = io.BytesIO()
    torch.save(optimizer_state(sched), buf)
    return buf.getvalue()


def with_float(pkl: bytes, old: float, new: float) -> bytes:
    needle = b"G" + struct.pack(">d", old)
    assert pkl.count(needle) == 1
    return pkl.replace(needle, b"G" + struct.pack(">d", new))


@pytest.mark.parametrize(
    "sched, old, new, pattern",
    [
        (clr.Cyclic(1e-3, 6e-3, 2000), 1e-3, -5.0, r"base_lr.*-5\.0"),
        (clr.Cyclic(1e-3, 6e-3, 2000), 6e-3, NAN, r"max_lr.*nan"),
        (clr.Cyclic(1e-3, 6e-3, 2000, scale_fn=scales.ExpRange(0.999)), 0.999, -0.999, r"gamma.*-0\.999"),
        (clr.Cyclic(1e-3, 6e-3, 2000, scale_fn=scales.Geometric(0.7)), 0.7, NAN, r"ratio.*nan"),
        (
            clr.Join([clr.Warmup(0.0, 0.1, 500), clr.CosineRestarts(0.1, 1000, eta_min=1e-4)], [500]),
            1e-4,
            1e308,
            r"eta_min=1e\+308",
        ),
        (clr.OneCycle(0.1, 1000, div_factor=25.0), 25.0, 1e-320, r"div_factor"),
    ],
)
def test_a_byte_tampered_torch_checkpoint_is_refused(sched, old, new, pattern):
    pkl = data_pkl(saved_checkpoint(sched))
    assert torch_load(pkl)["param_groups"][0]["schedule"] == sched  # the untampered data loads
    bad = with_float(pkl, old, new)
    with pytest.raises((ValueError, OverflowError), match=pattern):
        torch_load(bad)
    with pytest.raises((ValueError, OverflowError), match=pattern):
        pickle.loads(bad)


# ----------------------------------------------- tampering by a hostile pickler
class Hostile(pickle.Pickler):
    """Pickles schedules and scales the way ``reduce(obj)`` says instead of their own way."""

    def __init__(self, file, reduce):
        super().__init__(file, protocol=2)
        self._reduce = reduce

    def reducer_override(self, obj):
        if isinstance(obj, (Schedule, Scale)):
            return self._reduce(obj)
        return NotImplemented


def hostile(obj, reduce) -> bytes:
    buf = io.BytesIO()
    Hostile(buf, reduce).dump(obj)
    return buf.getvalue()


def args_of(obj) -> tuple:
    return obj.__reduce__()[1]


def default_dataclass_pickling(obj):
    # what copyreg gives an object without __reduce__: NEWOBJ without arguments, then its fields as BUILD
    return copyreg.__newobj__, (type(obj),), fields_of(obj)


def newobj_with_arguments_then_state(obj):
    return copyreg.__newobj__, (type(obj), *args_of(obj)), fields_of(obj)


def fields_of(obj) -> dict:
    return {k: v for k, v in vars(obj).items() if not k.startswith("_")}


@pytest.mark.parametrize("s", EXAMPLES + SCALES, ids=IDS + [repr(sc) for sc in SCALES])
def test_the_state_path_is_refused_for_every_schedule_and_scale(s):
    for reduce, pattern in (
        (default_dataclass_pickling, "missing|pickled as a call of its constructor"),
        (newobj_with_arguments_then_state, "pickled as a call of its constructor"),
    ):
        pkl = hostile(optimizer_state(s), reduce)
        assert {"NEWOBJ", "BUILD"} <= opcodes(pkl)
        for load in (pickle.loads, torch_load):
            with pytest.raises(TypeError, match=pattern):
                load(pkl)


def outcome(fn):
    try:
        return ("ok", fn())
    except (TypeError, ValueError, OverflowError) as e:
        return (type(e), str(e))


JUNK = st.one_of(
    st.floats(),
    st.integers(-(2**70), 2**70),
    st.none(),
    st.booleans(),
    st.text(max_size=5),
    st.sampled_from([-0.0, -1.0, 5e-324, 1.7976931348623157e308, 2**63, -(2**63)]),
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(EXAMPLES), st.data())
def test_tampered_constructor_arguments_load_as_the_constructor_decides(s, data):
    """Oracle: the constructor called with the tampered arguments (same value, or same error)."""
    args = list(args_of(s))
    i = data.draw(st.integers(0, len(args) - 1), label="argument")
    if isinstance(s, clr.Join):
        args[i] = data.draw(st.one_of(JUNK, st.tuples(JUNK), st.tuples(JUNK, JUNK)), label="value")
    else:
        args[i] = data.draw(JUNK, label="value")
    args = tuple(args)
    as_called = outcome(lambda: type(s)(*args))
    pkl = hostile(optimizer_state(s), lambda obj: (type(obj), args if obj is s else args_of(obj)))
    for load in (pickle.loads, torch_load):
        got = outcome(lambda load=load: load(pkl)["param_groups"][0]["schedule"])
        if as_called[0] == "ok":
            assert got[0] == "ok"
            a, b = got[1], as_called[1]
            assert type(a) is type(b) and a == b and hash(a) == hash(b)
            # A legal schedule may overflow a double late (peak_decay > 1 grows each
            # cycle): then both raise the same OverflowError, and what is finite agrees.
            va, vb = outcome(lambda a=a: values(a)), outcome(lambda b=b: values(b))
            if va[0] == "ok":
                assert vb[0] == "ok"
                assert np.array_equal(va[1][0], vb[1][0])
                ma, mb = va[1][1], vb[1][1]
                assert (ma is None and mb is None) or np.array_equal(ma, mb, equal_nan=True)
                assert all(math.isfinite(v) for v in va[1][0])
            else:
                assert va == vb and va[0] is OverflowError
        else:
            assert got == as_called
