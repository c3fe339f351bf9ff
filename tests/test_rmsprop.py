"""CLRRMSprop against torch.optim.RMSprop (+ torch's schedulers), bit for bit.

torch's own optimizer is the oracle throughout: parameters and state (``square_avg``,
``momentum_buffer``, ``grad_avg``, ``step``) are compared exactly after every run. The
reduced-precision oracle is torch's RMSprop run in float32 on float32 copies, rounded once.
"""

import copy
import io
import itertools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import clrfast as clr  # noqa: E402
from clrfast.torch import CLRRMSprop  # noqa: E402
from clrfast.torch._sqrt import torch_sqrt_routines  # noqa: E402
from torch.overrides import TorchFunctionMode  # noqa: E402

# Parity with torch needs torch's own vector sqrt (MKL builds); elsewhere the kernel's IEEE sqrt
# is a last-ulp away, which these tests would report as a difference.
needs_torch_sqrt = pytest.mark.skipif(
    torch_sqrt_routines()[0] == 0, reason="torch without MKL: its sqrt is not reproduced exactly"
)

# (0,) and () are the empty and the scalar parameter.
SHAPES = [(37,), (64, 3), (1000,), (5, 1, 3, 3), (0,), ()]
LR, BASE, TOP = 1e-2, 1e-3, 6e-3
MOMENTA = dict(base_momentum=0.85, max_momentum=0.95)


def _params(dtype=torch.float32, seed=1, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64).to(dtype).requires_grad_() for s in shapes]


def _grads(ps, t):
    g = torch.Generator().manual_seed(1000 + t)
    return [torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) for p in ps]


def _set(a, b, t, skip=()):
    for i, (p, q, g) in enumerate(zip(a, b, _grads(a, t))):
        if not p.requires_grad:
            continue
        p.grad = None if i in skip else g.clone()
        q.grad = None if i in skip else g.clone()


def _step(a, oa, b, ob, sb, t, skip=()):
    _set(a, b, t, skip)
    oa.step()
    ob.step()
    if sb is not None:
        sb.step()


def _bits(x, y) -> bool:
    return x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)


def _same(a, oa, b, ob):
    for i, (p, q) in enumerate(zip(a, b)):
        assert _bits(p.detach(), q.detach()), f"parameter {i} {tuple(p.shape)}"
        sa, sb = oa.state.get(p, {}), ob.state.get(q, {})
        assert sa.keys() == sb.keys(), (i, sorted(sa), sorted(sb))
        for k in sb:
            assert _bits(sa[k], sb[k]), f"parameter {i} {tuple(p.shape)}: state[{k!r}]"


def _group_view(opt, gi=0):
    g = opt.param_groups[gi]
    return g["lr"], g["momentum"]


def _ieee_sqrt(x):
    if x.dtype == torch.float32:
        return x.double().sqrt().float()
    assert x.dtype == torch.float64
    return torch.from_numpy(np.asarray(np.sqrt(x.numpy())))  # a 0-d root is a NumPy scalar


class IEEESqrt(TorchFunctionMode):
    """torch's code, with every tensor square root correctly rounded (the kernel's root of
    bfloat16/float16 math and of ``match_torch=False``): a double root rounded to float32 is the
    correctly rounded float32 root, NumPy's double root is IEEE's."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.sqrt, torch.Tensor.sqrt):
            return _ieee_sqrt(args[0])
        if func is torch.Tensor.sqrt_:
            return args[0].copy_(_ieee_sqrt(args[0]))
        if func in (torch._foreach_sqrt, torch._foreach_sqrt_):
            raise AssertionError("the IEEE oracle runs torch's single-tensor code")
        return func(*args, **kwargs)


# ----------------------------------------------------------------------------- every option, plain lr
OPTION_GRID = list(itertools.product([False, True], [0.0, 0.9], [0.0, 0.1], [False, True]))
ALPHAS = [0.99, 0.3, 0.5, 0.0, 1.0]  # 0.3, 0.0: the lerp weight 1 - alpha >= 0.5 (ATen's other branch)


@needs_torch_sqrt
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("foreach", [False, True], ids=["forloop", "foreach"])
@pytest.mark.parametrize(
    "centered, momentum, weight_decay, maximize",
    OPTION_GRID,
    ids=[f"c{int(c)}-m{m}-wd{w}-max{int(x)}" for c, m, w, x in OPTION_GRID],
)
def test_every_option_matches_torch(dtype, foreach, centered, momentum, weight_decay, maximize):
    for alpha, flat in itertools.product(ALPHAS, [False, True]):
        if alpha in (0.0, 1.0) and flat:
            continue  # the edges once, in list mode
        if alpha == 0.0 and centered:
            continue  # grad_avg == grad: the centered variance is 0 up to rounding, its root NaN
        # alpha = 1 keeps square_avg at 0: a larger eps keeps the steps finite
        kw = dict(
            alpha=alpha,
            eps=1e-2 if alpha == 1.0 else 1e-8,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
            maximize=maximize,
        )
        a, b = _params(dtype), _params(dtype)
        oa = CLRRMSprop(a, LR, flat=flat, **kw)  # a float as the second argument is the lr
        ob = torch.optim.RMSprop(b, lr=LR, foreach=foreach, **kw)
        for t in range(12):
            # parameter 1 sometimes has no gradient: torch skips it and its step stays
            _step(a, oa, b, ob, None, t, skip=(1,) if t % 5 == 2 else ())
        _same(a, oa, b, ob)
        assert all(float(oa.state[p]["step"]) == float(ob.state[q]["step"]) for p, q in zip(a, b))
        assert oa.param_groups[0]["step"] == 12


@needs_torch_sqrt
@pytest.mark.parametrize("flat", [False, True])
def test_frozen_and_gradless_parameters_are_left_alone(flat):
    a, b = _params(), _params()
    a[2].requires_grad_(False)  # frozen: never a gradient
    b[2].requires_grad_(False)
    kw = dict(momentum=0.9, centered=True, weight_decay=1e-2)
    oa = CLRRMSprop(a, lr=LR, flat=flat, **kw)
    ob = torch.optim.RMSprop(b, lr=LR, foreach=False, **kw)
    frozen = a[2].detach().clone()
    for t in range(15):
        # parameter 0 only gets a gradient from step 6 on: its state starts then, as torch's
        _step(a, oa, b, ob, None, t, skip=(0,) if t < 6 else ((3,) if t % 4 == 1 else ()))
    _same(a, oa, b, ob)
    assert a[2] not in oa.state and torch.equal(a[2].detach(), frozen)
    assert float(oa.state[a[0]]["step"]) == 9.0 and float(oa.state[a[3]]["step"]) == float(ob.state[b[3]]["step"])


@needs_torch_sqrt
@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize(
    "kw",
    [dict(), dict(momentum=0.9, centered=True, weight_decay=0.1, maximize=True, alpha=0.3)],
    ids=["default", "all-options"],
)
def test_transposed_parameter_takes_torchs_path_and_matches(kw, flat):
    g = torch.Generator().manual_seed(5)
    w = torch.randn(6, 4, generator=g)
    a = [torch.nn.Parameter(w.clone().t()), torch.nn.Parameter(torch.randn(9, generator=g))]
    b = [torch.nn.Parameter(w.clone().t()), torch.nn.Parameter(a[1].detach().clone())]
    assert not a[0].is_contiguous()
    oa = CLRRMSprop(a, clr.Cyclic(BASE, TOP, step_size_up=4, **MOMENTA), flat=flat, **dict(kw, momentum=0.9))
    ob = torch.optim.RMSprop(b, lr=BASE, foreach=False, **dict(kw, momentum=0.9))
    sb = torch.optim.lr_scheduler.CyclicLR(ob, BASE, TOP, step_size_up=4, cycle_momentum=True, **MOMENTA)
    for t in range(20):
        _step(a, oa, b, ob, sb, t)
    _same(a, oa, b, ob)


KW_ALL = dict(momentum=0.9, centered=True, weight_decay=1e-2)


@needs_torch_sqrt
@pytest.mark.parametrize("foreach", [False, True], ids=["forloop", "foreach"])
def test_channels_last_and_mixed_dtypes_in_one_group_match_torch(foreach):
    # a channels-last weight is one dense run (the kernel's), its state keeps the layout as torch's
    g = torch.Generator().manual_seed(9)
    w = torch.randn(4, 3, 5, 5, generator=g).contiguous(memory_format=torch.channels_last)
    values = [w, torch.randn(11, generator=g, dtype=torch.float64), torch.randn(3, 2, generator=g)]
    a = [torch.nn.Parameter(v.clone(memory_format=torch.preserve_format)) for v in values]
    b = [torch.nn.Parameter(v.clone(memory_format=torch.preserve_format)) for v in values]
    assert not a[0].is_contiguous() and a[0].is_contiguous(memory_format=torch.channels_last)
    oa = CLRRMSprop(a, lr=LR, **KW_ALL)
    ob = torch.optim.RMSprop(b, lr=LR, foreach=foreach, **KW_ALL)
    for t in range(10):
        _set(a, b, t)
        for p, q in zip(a[:1], b[:1]):
            p.grad = p.grad.contiguous(memory_format=torch.channels_last)
            q.grad = q.grad.contiguous(memory_format=torch.channels_last)
        oa.step()
        ob.step()
    _same(a, oa, b, ob)
    assert oa.state[a[0]]["square_avg"].stride() == ob.state[b[0]]["square_avg"].stride()


@needs_torch_sqrt
@pytest.mark.parametrize("threads", [1, 2])
def test_large_parameters_split_across_threads_match_torch(threads):
    a = _params(shapes=[(300_001,), (70_003,)])
    b = _params(shapes=[(300_001,), (70_003,)])
    oa = CLRRMSprop(a, lr=LR, threads=threads, **KW_ALL)
    ob = torch.optim.RMSprop(b, lr=LR, foreach=False, **KW_ALL)
    for t in range(3):
        _step(a, oa, b, ob, None, t)
    _same(a, oa, b, ob)


@needs_torch_sqrt
@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("centered", [False, True])
def test_model_conversion_after_the_first_steps_follows_torch(flat, centered):
    # model.double() after two steps: float64 parameters and gradients, float32 state. torch computes
    # each update in the wider type; with centered=True its lerp_ refuses the mixed dtypes midway through
    # the step, and CLRRMSprop, which hands such parameters to torch's code, refuses it before anything changed
    torch.manual_seed(0)
    net_a = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    net_b = copy.deepcopy(net_a)
    kw = dict(momentum=0.9, centered=centered, weight_decay=1e-2)
    opt_a = CLRRMSprop(net_a.parameters(), clr.Cyclic(BASE, TOP, step_size_up=3, **MOMENTA), flat=flat, **kw)
    opt_b = torch.optim.RMSprop(net_b.parameters(), lr=BASE, foreach=False, **kw)
    sch_b = torch.optim.lr_scheduler.CyclicLR(opt_b, BASE, TOP, step_size_up=3, cycle_momentum=True, **MOMENTA)
    x = torch.randn(8, 4)
    for t in range(6):
        if t == 2:
            net_a.double()
            net_b.double()
            x = x.double()
        errors = []
        before = [p.detach().clone() for p in net_a.parameters()], copy.deepcopy(opt_a.state_dict())
        for net, opt in ((net_a, opt_a), (net_b, opt_b)):
            opt.zero_grad()
            net(x).pow(2).sum().backward()
            try:
                opt.step()
            except RuntimeError as e:
                errors.append(str(e))
        if centered and t >= 2:
            assert len(errors) == 2 and errors[0] == errors[1]
            assert all(torch.equal(p, q) for p, q in zip(net_a.parameters(), before[0]))
            after = opt_a.state_dict()
            assert (
                after["param_groups"] == before[1]["param_groups"]
                and after["state"].keys() == before[1]["state"].keys()
            )
            for k, st in before[1]["state"].items():
                assert all(torch.equal(v, after["state"][k][key]) for key, v in st.items()), k
            return
        assert not errors
        sch_b.step()
        _same(list(net_a.parameters()), opt_a, list(net_b.parameters()), opt_b)
    assert not centered


# ----------------------------------------------------------------------------- driven by a schedule
SCHEDULES = {
    "cyclic": (
        clr.Cyclic(BASE, TOP, step_size_up=20, step_size_down=13, **MOMENTA),
        lambda o: torch.optim.lr_scheduler.CyclicLR(
            o, BASE, TOP, step_size_up=20, step_size_down=13, cycle_momentum=True, **MOMENTA
        ),
    ),
    "cyclic-exp_range": (
        clr.Cyclic(BASE, TOP, step_size_up=15, mode="exp_range", gamma=0.995, **MOMENTA),
        lambda o: torch.optim.lr_scheduler.CyclicLR(
            o, BASE, TOP, step_size_up=15, mode="exp_range", gamma=0.995, cycle_momentum=True, **MOMENTA
        ),
    ),
    "onecycle": (
        clr.OneCycle(TOP, total_steps=240, **MOMENTA),
        lambda o: torch.optim.lr_scheduler.OneCycleLR(o, TOP, total_steps=240, **MOMENTA),
    ),
    "onecycle-linear-3phase": (
        clr.OneCycle(TOP, total_steps=240, anneal="linear", three_phase=True, **MOMENTA),
        lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o, TOP, total_steps=240, anneal_strategy="linear", three_phase=True, **MOMENTA
        ),
    ),
}
SCHED_OPTIONS = {
    "plain": dict(),
    "centered-wd": dict(centered=True, weight_decay=1e-2),
    "maximize-alpha0.3": dict(maximize=True, alpha=0.3, eps=1e-6),
}


@needs_torch_sqrt
@pytest.mark.parametrize("sched", SCHEDULES)
@pytest.mark.parametrize("foreach", [False, True], ids=["forloop", "foreach"])
@pytest.mark.parametrize("opts", SCHED_OPTIONS)
def test_schedule_matches_torch_scheduler_with_momentum_cycling(sched, foreach, opts):
    s, make = SCHEDULES[sched]
    kw = SCHED_OPTIONS[opts]
    a, b = _params(), _params()
    oa = CLRRMSprop(a, s, momentum=0.9, **kw)  # the schedule's momentum replaces the constant one
    ob = torch.optim.RMSprop(b, lr=TOP, momentum=0.9, foreach=foreach, **kw)
    sb = make(ob)
    assert _group_view(oa) == _group_view(ob)
    for t in range(240):
        _step(a, oa, b, ob, sb, t)
        # torch's convention: after a step the group shows the next step's values
        assert _group_view(oa) == _group_view(ob), t
    _same(a, oa, b, ob)
    assert oa.get_last_lr() == sb.get_last_lr()


@needs_torch_sqrt
@pytest.mark.parametrize("flat", [False, True])
def test_float64_schedule_matches_torch(flat):
    s, make = SCHEDULES["cyclic"]
    a, b = _params(torch.float64), _params(torch.float64)
    kw = dict(centered=True, weight_decay=1e-2, momentum=0.5)
    oa = CLRRMSprop(a, s, flat=flat, **kw)
    ob = torch.optim.RMSprop(b, lr=BASE, foreach=True, **kw)
    sb = make(ob)
    for t in range(100):
        _step(a, oa, b, ob, sb, t, skip=(3,) if t % 7 == 3 else ())
        assert _group_view(oa) == _group_view(ob)
    _same(a, oa, b, ob)


@needs_torch_sqrt
def test_a_schedule_without_momentum_keeps_the_groups_momentum():
    a, b = _params(), _params()
    oa = CLRRMSprop(a, clr.Cyclic(BASE, TOP, step_size_up=5), momentum=0.7, centered=True)
    ob = torch.optim.RMSprop(b, lr=BASE, momentum=0.7, centered=True, foreach=False)
    sb = torch.optim.lr_scheduler.CyclicLR(ob, BASE, TOP, step_size_up=5, cycle_momentum=False)
    for t in range(30):
        _step(a, oa, b, ob, sb, t)
        assert _group_view(oa) == _group_view(ob) and oa.param_groups[0]["momentum"] == 0.7
    _same(a, oa, b, ob)


@needs_torch_sqrt
def test_per_group_hyperparameters_match_torch():
    a, b = _params(), _params()

    def groups(ps):
        return [
            {"params": ps[:2], "centered": True, "alpha": 0.3},
            {"params": ps[2:4], "momentum": 0.0, "weight_decay": 0.1},
            {"params": ps[4:], "maximize": True},
        ]

    oa = CLRRMSprop(groups(a), lr=LR, momentum=0.9)
    ob = torch.optim.RMSprop(groups(b), lr=LR, momentum=0.9, foreach=True)
    for t in range(20):
        _step(a, oa, b, ob, None, t)
    _same(a, oa, b, ob)


# ----------------------------------------------------------------------------- tensor lr
@needs_torch_sqrt
@pytest.mark.parametrize("foreach", [False, True], ids=["forloop", "foreach"])
@pytest.mark.parametrize("lr_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_tensor_lr_matches_torch(foreach, lr_dtype, momentum):
    a, b = _params(), _params()
    la, lb = torch.tensor(0.01, dtype=lr_dtype), torch.tensor(0.01, dtype=lr_dtype)
    oa = CLRRMSprop(a, None, lr=la, momentum=momentum, centered=True)
    ob = torch.optim.RMSprop(b, lr=lb, momentum=momentum, centered=True, foreach=foreach)
    for t in range(20):
        if t == 10:  # a tensor lr changed in place is read at the next step, as torch reads it
            la.fill_(0.0037)
            lb.fill_(0.0037)
        _step(a, oa, b, ob, None, t)
    assert oa.param_groups[0]["lr"] is la
    _same(a, oa, b, ob)


# ----------------------------------------------------------------------------- state dicts
def _resume_from(saved, params, flat, schedule, **kw):
    ps = [p.detach().clone().requires_grad_() for p in params]
    opt = CLRRMSprop(
        ps, clr.Constant(1.0) if schedule is not None else None, lr=None if schedule else 1.0, flat=flat, **kw
    )
    opt.load_state_dict(saved)
    return ps, opt


@needs_torch_sqrt
@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("scheduled", [False, True], ids=["plain-lr", "cyclic"])
def test_state_dicts_interchange_with_torch_and_resume_exactly(flat, scheduled):
    s, make = SCHEDULES["cyclic"]
    kw = dict(momentum=0.9, centered=True, weight_decay=1e-2, alpha=0.9)
    a, b = _params(), _params()
    oa = CLRRMSprop(a, s if scheduled else None, lr=None if scheduled else LR, flat=flat, **kw)
    ob = torch.optim.RMSprop(b, lr=BASE if scheduled else LR, foreach=False, **kw)
    sb = make(ob) if scheduled else None
    for t in range(25):
        _step(a, oa, b, ob, sb, t, skip=(0,) if t < 3 else ())
    _same(a, oa, b, ob)
    # clrfast -> clrfast through torch.save / weights-only torch.load
    blob = io.BytesIO()
    torch.save(oa.state_dict(), blob)
    blob.seek(0)
    c, oc = _resume_from(torch.load(blob, weights_only=True), a, flat, s if scheduled else None)
    assert oc.param_groups[0]["step"] == 25
    assert oc.param_groups[0]["schedule"] == (s if scheduled else None)
    # clrfast -> torch
    d = [p.detach().clone().requires_grad_() for p in a]
    od = torch.optim.RMSprop(d, lr=1.0, foreach=False)
    od.load_state_dict(copy.deepcopy(oa.state_dict()))
    # torch -> clrfast: torch's groups carry no clock, so the resumed optimizer's is set first
    e = [p.detach().clone().requires_grad_() for p in b]
    oe = CLRRMSprop(e, s if scheduled else None, lr=None if scheduled else 1.0, flat=flat)
    oe.param_groups[0]["step"] = 25
    oe.load_state_dict(copy.deepcopy(ob.state_dict()))
    assert _group_view(oe) == _group_view(ob) == _group_view(oc)
    for opt in (oc, oe):
        assert {k: opt.param_groups[0][k] for k in ("alpha", "eps", "weight_decay", "centered", "maximize")} == {
            k: ob.param_groups[0][k] for k in ("alpha", "eps", "weight_decay", "centered", "maximize")
        }
    runs = [(a, oa), (c, oc), (d, od), (e, oe)]
    for t in range(25, 60):
        gs = _grads(a, t)
        for ps in (a, b, c, d, e):
            for p, g in zip(ps, gs):
                p.grad = g.clone()
        od.param_groups[0]["lr"], od.param_groups[0]["momentum"] = _group_view(ob)  # a scheduler's writes
        ob.step()
        if sb is not None:
            sb.step()
        for _, opt in runs:
            opt.step()
        for _, opt in runs:
            if opt is not od:
                assert _group_view(opt) == _group_view(ob), t
    for ps, opt in runs:
        _same(ps, opt, b, ob)


@needs_torch_sqrt
def test_torch_state_dict_with_missing_and_partial_state_loads():
    # a torch RMSprop whose parameters 0 and 2 never had a gradient: no state for them
    a, b = _params(), _params()
    ob = torch.optim.RMSprop(b, lr=LR, momentum=0.9, foreach=False)
    for t in range(4):
        _set(a, b, t, skip=(0, 2))
        ob.step()
    oa = CLRRMSprop(a, lr=1.0, momentum=0.9)
    with torch.no_grad():
        for p, q in zip(a, b):
            p.copy_(q)
    oa.load_state_dict(copy.deepcopy(ob.state_dict()))
    assert oa.param_groups[0]["lr"] == LR
    for t in range(4, 12):
        _step(a, oa, b, ob, None, t)
    _same(a, oa, b, ob)


# ----------------------------------------------------------------------------- bad hyperparameters
BAD = [
    dict(lr=-1.0),
    dict(lr=-1),
    dict(lr=float("nan")),
    dict(lr=float("-inf")),
    dict(lr=torch.tensor(-1.0)),
    dict(lr=torch.tensor(float("nan"))),
    dict(lr=torch.tensor([0.1, 0.2])),
    dict(eps=-1e-8),
    dict(eps=float("nan")),
    dict(momentum=-0.5),
    dict(momentum=float("nan")),
    dict(weight_decay=-1),
    dict(weight_decay=float("nan")),
    dict(alpha=-0.1),
    dict(alpha=float("nan")),
    dict(alpha=float("-inf")),
    # several at once: torch's order of checks decides which is reported
    dict(lr=-1.0, eps=-1.0, alpha=-1.0),
    dict(eps=-1.0, momentum=-1.0),
    dict(momentum=-1.0, weight_decay=-1.0),
    dict(weight_decay=-1.0, alpha=-1.0),
    dict(alpha=-1.0, eps=float("nan")),
]


def _raised(make):
    try:
        make()
    except Exception as e:  # noqa: BLE001 - the exception itself is what is compared
        return e
    raise AssertionError("no exception")


@pytest.mark.parametrize("kw", BAD, ids=[repr(k) for k in BAD])
def test_bad_hyperparameters_raise_torchs_exception(kw):
    kw = dict(dict(lr=LR), **kw)
    theirs = _raised(lambda: torch.optim.RMSprop([torch.zeros(3, requires_grad=True)], **kw))
    lr = kw.pop("lr")
    ours = _raised(lambda: CLRRMSprop([torch.zeros(3, requires_grad=True)], lr=lr, **kw))
    assert type(ours) is type(theirs)
    assert str(ours).startswith(str(theirs)), (str(ours), str(theirs))
    # the same value as a per-group value (add_param_group) is refused alike
    opt = CLRRMSprop([torch.zeros(3, requires_grad=True)], lr=LR)
    group = dict(kw, params=[torch.zeros(2, requires_grad=True)], lr=lr)
    ours = _raised(lambda: opt.add_param_group(group))
    assert type(ours) is type(theirs) and str(ours).startswith(str(theirs)), (str(ours), str(theirs))
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize(
    "kw",
    [dict(alpha="x"), dict(momentum=None), dict(eps="1e-8"), dict(weight_decay=[0.1])],
    ids=["alpha-str", "momentum-None", "eps-str", "wd-list"],
)
def test_non_numbers_raise_typeerror_as_torch(kw):
    theirs = _raised(lambda: torch.optim.RMSprop([torch.zeros(3, requires_grad=True)], lr=LR, **kw))
    ours = _raised(lambda: CLRRMSprop([torch.zeros(3, requires_grad=True)], lr=LR, **kw))
    assert type(ours) is type(theirs) is TypeError


# ----------------------------------------------------------------------------- all or nothing
def _snapshot(opt):
    params = [p for g in opt.param_groups for p in g["params"]]
    return dict(
        values=[p.detach().clone() for p in params],
        grads=[None if p.grad is None else p.grad.clone() for p in params],
        state={i: {k: v.clone() for k, v in opt.state[p].items()} for i, p in enumerate(params) if p in opt.state},
        groups=[{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups],
    )


def _assert_unchanged(opt, snap):
    now = _snapshot(opt)
    assert all(_bits(x, y) for x, y in zip(now["values"], snap["values"]))
    assert all((x is None and y is None) or _bits(x, y) for x, y in zip(now["grads"], snap["grads"]))
    assert now["state"].keys() == snap["state"].keys()
    for i in snap["state"]:
        assert now["state"][i].keys() == snap["state"][i].keys()
        assert all(_bits(now["state"][i][k], snap["state"][i][k]) for k in snap["state"][i])
    for g, h in zip(now["groups"], snap["groups"]):
        assert g.keys() == h.keys()
        for k in g:
            assert g[k] is h[k] or g[k] == h[k] or (isinstance(g[k], float) and math.isnan(g[k])), k


WRITES = [
    ("alpha", float("nan"), ValueError),
    ("alpha", "x", TypeError),
    ("alpha", -0.5, ValueError),
    ("alpha", float("inf"), ValueError),
    ("momentum", -1, ValueError),
    ("momentum", None, TypeError),
    ("eps", -1e-8, ValueError),
    ("eps", float("nan"), ValueError),
    ("weight_decay", float("nan"), ValueError),
    ("weight_decay", -0.1, ValueError),
    ("centered", "yes", TypeError),
    ("centered", None, TypeError),
    ("maximize", 2, TypeError),
    ("match_torch", None, TypeError),
    ("lr", -1.0, ValueError),
    ("lr", "0.1", TypeError),
    ("lr", torch.tensor(float("nan")), ValueError),
    ("step", 2.5, ValueError),
    ("step", -1, ValueError),
    ("schedule", "x", TypeError),
]


@needs_torch_sqrt
@pytest.mark.parametrize("warm", [False, True], ids=["first-step", "cached-plan"])
@pytest.mark.parametrize("key, value, exc", WRITES, ids=[f"{k}-{v!r}" for k, v, _ in WRITES])
def test_a_bad_written_value_fails_the_step_and_changes_nothing(key, value, exc, warm):
    a, b = _params(shapes=[(4, 3), (7,)]), _params(shapes=[(5,), ()], seed=2)
    a2, b2 = [p.detach().clone().requires_grad_() for p in a], [p.detach().clone().requires_grad_() for p in b]
    # group 0 is valid: it must not move either; group 1 has no schedule, so it holds an lr
    groups = lambda x, y: [{"params": x}, {"params": y, "schedule": None, "lr": LR}]  # noqa: E731
    s, make = SCHEDULES["cyclic"]
    kw = dict(momentum=0.9, centered=True, weight_decay=1e-2)
    opt = CLRRMSprop(groups(a, b), s, **kw)
    ref = torch.optim.RMSprop([{"params": a2}, {"params": b2, "lr": LR}], lr=BASE, foreach=False, **kw)
    sched = make(ref)
    sched.base_lrs[1], sched.max_lrs[1] = LR, LR  # group 1: a constant lr of its own
    sched.base_momentums[1] = sched.max_momentums[1] = 0.9
    for g in ref.param_groups[1:]:
        g["lr"], g["momentum"] = LR, 0.9
    mine, theirs = a + b, a2 + b2
    for t in range(2 if warm else 0):
        _step(mine, opt, theirs, ref, sched, t)
    _set(mine, theirs, 7)
    snap = _snapshot(opt)
    held = opt.param_groups[1][key]
    opt.param_groups[1][key] = value
    with pytest.raises(exc, match=rf"param_groups\[1\]\['{key}'\]|Invalid learning rate"):
        opt.step()
    with pytest.raises(exc):  # a second try fails alike: the first left nothing half done
        opt.step()
    opt.param_groups[1][key] = held
    snap["groups"][1][key] = held
    _assert_unchanged(opt, snap)
    assert opt.param_groups[0]["step"] == opt.param_groups[1]["step"] == (2 if warm else 0)
    # once the value is put back, the run goes on as torch's
    opt.step()
    ref.step()
    sched.step()
    _same(mine, opt, theirs, ref)
    assert _group_view(opt) == _group_view(ref)


# ----------------------------------------------------------------------------- GradScaler
@needs_torch_sqrt
@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("fused_unscale", [False, True], ids=["torch-unscale", "fused-unscale"])
def test_gradscaler_matches_torch_and_a_skipped_step_keeps_clock_and_state(fused_unscale, flat):
    s, make = SCHEDULES["cyclic"]
    kw = dict(centered=True, momentum=0.9, weight_decay=1e-3)
    a, b = _params(), _params()
    oa = CLRRMSprop(a, s, flat=flat, **kw)
    oa.fused_unscale = fused_unscale  # GradScaler unscales, or hands the scale to the step
    assert oa._step_supports_amp_scaling is fused_unscale
    ob = torch.optim.RMSprop(b, lr=BASE, foreach=False, **kw)
    sb = make(ob)
    sa, sr = (torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3) for _ in range(2))
    for sc in (sa, sr):
        sc.scale(torch.ones(()))  # initialises the scale, as scaling the first loss does
    applied = 0
    for t in range(14):
        gs = _grads(a, t)
        bad = t in (3, 8, 9)
        for p, q, g in zip(a, b, gs):
            p.grad = g * sa.get_scale()
            q.grad = g * sr.get_scale()
        if bad:
            a[1].grad[0, 0] = float("inf")
            b[1].grad[0, 0] = float("inf")
        before = _snapshot(oa) if bad else None
        sa.step(oa)
        sa.update()
        sr.step(ob)  # torch's RMSprop has no fused contract: GradScaler unscales it and skips it on inf
        sr.update()
        if bad:
            before["grads"] = [p.grad.clone() for p in a]  # GradScaler may unscale them; nothing else moves
            _assert_unchanged(oa, before)
        else:
            sb.step()
            applied += 1
        assert sa.get_scale() == sr.get_scale()
        assert oa.param_groups[0]["step"] == applied
        assert _group_view(oa) == _group_view(ob)
        _same(a, oa, b, ob)


# ----------------------------------------------------------------------------- reduced precision
def _lowp_oracle(p, g, state, lr, momentum, **kw):
    """One step of torch's RMSprop (single-tensor code) in float32 on float32 copies, IEEE roots,
    every result rounded once to the parameter's dtype."""
    pf = p.detach().float().clone().requires_grad_()
    pf.grad = g.float()
    o = torch.optim.RMSprop([pf], lr=lr, momentum=momentum, foreach=False, **kw)
    if state:
        o.state[pf] = {k: v.clone() if k == "step" else v.float() for k, v in state.items()}
    with IEEESqrt():
        o.step()
    return pf.detach().to(p.dtype), {k: v.clone() if k == "step" else v.to(p.dtype) for k, v in o.state[pf].items()}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "kw",
    [dict(), dict(centered=True, weight_decay=1e-2, alpha=0.3), dict(maximize=True, alpha=0.9, eps=1e-6)],
    ids=["default", "centered-wd", "maximize"],
)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_reduced_precision_against_float32_oracle(dtype, kw, momentum):
    shapes = [(1,), (15,), (17,), (1000,), (0,), ()]
    s = clr.Cyclic(BASE, TOP, step_size_up=7)
    ps = _params(dtype, shapes=shapes)
    opt = CLRRMSprop(ps, s, momentum=momentum, **kw)
    ref = [(p.detach().clone(), {}) for p in ps]
    for t in range(30):
        gs = _grads(ps, t)
        for p, g in zip(ps, gs):
            p.grad = g
        opt.step()
        ref = [_lowp_oracle(rp, g, rs, s.lr(t), momentum, **kw) for (rp, rs), g in zip(ref, gs)]
        for i, (p, (rp, rs)) in enumerate(zip(ps, ref)):
            assert _bits(p.detach(), rp), (t, i)
            assert opt.state[p].keys() == rs.keys()
            for k in rs:
                assert _bits(opt.state[p][k], rs[k]), (t, i, k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("foreach", [False, True], ids=["forloop", "foreach"])
def test_match_torch_false_is_torch_with_ieee_roots(dtype, foreach):
    kw = dict(momentum=0.9, centered=True, weight_decay=1e-2)
    a, b, c, d = (_params(dtype) for _ in range(4))
    oa = CLRRMSprop(a, lr=LR, match_torch=False, **kw)
    ob = torch.optim.RMSprop(b, lr=LR, foreach=False, **kw)
    oc = CLRRMSprop(c, lr=LR, **kw)
    od = torch.optim.RMSprop(d, lr=LR, foreach=foreach, **kw)
    for t in range(20):
        gs = _grads(a, t)
        for ps in (a, b, c, d):
            for p, g in zip(ps, gs):
                p.grad = g.clone()
        oa.step()
        with IEEESqrt():
            ob.step()
        oc.step()
        od.step()
    _same(a, oa, b, ob)
    if torch_sqrt_routines()[0 if dtype == torch.float32 else 1] != 0:
        _same(c, oc, d, od)
        if dtype == torch.float32:  # MKL's float32 root is not IEEE's on these values
            assert not all(torch.equal(x, y) for x, y in zip(a, c))
