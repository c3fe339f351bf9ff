"""Every value a step reads is checked before anything is written; tensor lrs and scheduled
momentum troughs follow torch bit for bit."""

import copy
import json
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import clrfast as clr  # noqa: E402
from clrfast.torch import CLRSGD, CLRAdam, CLRAdamW  # noqa: E402
from clrfast.torch._sqrt import torch_sqrt_routines  # noqa: E402
from optim_registry import RULES, params, where  # noqa: E402

SHAPES = [(37,), (64, 3), (1000,), (5, 1, 3, 3)]
CYCLIC = clr.Cyclic(0.01, 0.1, step_size_up=5, step_size_down=3, base_momentum=0.8, max_momentum=0.9)
ADAM_PAIRS = {"adamw": (CLRAdamW, torch.optim.AdamW), "adam": (CLRAdam, torch.optim.Adam)}
# Adam parity needs torch's own vector sqrt (MKL builds); elsewhere the kernel's IEEE sqrt is a last-ulp away.
needs_torch_sqrt = pytest.mark.skipif(
    torch_sqrt_routines()[0] == 0, reason="torch without MKL: its sqrt is not reproduced exactly"
)


def _params(dtype=torch.float32, seed=1, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64).to(dtype).requires_grad_() for s in shapes]


def _grads(ps, t):
    g = torch.Generator().manual_seed(1000 + t)
    return [torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) for p in ps]


def _set_grads(t, first, *others):
    """Gradients of step t on ``first``, and the same values on the twin models ``others``."""
    for i, g in enumerate(_grads(first, t)):
        for ps in (first, *others):
            ps[i].grad = g.clone()


def _same_value(x, y) -> bool:
    if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
        return (
            isinstance(x, torch.Tensor)
            and isinstance(y, torch.Tensor)
            and x.dtype == y.dtype
            and x.shape == y.shape
            and bool(((x == y) | (x.isnan() & y.isnan())).all())
        )  # a NaN lr is kept
    if isinstance(x, (tuple, list)):
        return type(x) is type(y) and len(x) == len(y) and all(_same_value(a, b) for a, b in zip(x, y))
    return type(x) is type(y) and (x == y or (x != x and y != y))


def _snapshot(opt):
    """Clones of everything a failing step must leave alone."""
    params = [p for g in opt.param_groups for p in g["params"]]
    return dict(
        values=[p.detach().clone() for p in params],
        grads=[None if p.grad is None else p.grad.clone() for p in params],
        state=[
            {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in opt.state[p].items()}
            if p in opt.state
            else None
            for p in params
        ],
        groups=[
            {k: v.clone() if isinstance(v, torch.Tensor) else copy.copy(v) for k, v in g.items() if k != "params"}
            for g in opt.param_groups
        ],
    )


def _assert_unchanged(opt, snap):
    now = _snapshot(opt)
    for x, y in zip(now["values"], snap["values"], strict=True):
        assert torch.equal(x, y)
    for x, y in zip(now["grads"], snap["grads"], strict=True):
        assert (x is None and y is None) or torch.equal(x, y)
    for x, y in zip(now["state"], snap["state"], strict=True):
        assert (x is None) == (y is None)
        if x is not None:
            assert x.keys() == y.keys() and all(_same_value(x[k], y[k]) for k in x)
    for x, y in zip(now["groups"], snap["groups"], strict=True):
        assert x.keys() == y.keys()
        for k in x:
            assert _same_value(x[k], y[k]), k


def _two_groups(rule):
    """An optimizer of two groups on a schedule with momentum (group 0 is valid in every test)."""
    a = _params(shapes=[(4, 3), (7,)])
    b = _params(shapes=[(5,), (2, 2)], seed=2)
    opt = rule.make([{"params": a}, {"params": b}], CYCLIC)
    return a + b, opt


# --------------------------------------------------------------------------- every value, checked first
# every rule's group values (step, schedule, lr), then each hyperparameter by its kind (optim_registry.Rule.hypers)
COMMON = [
    ("step", None, TypeError, r"\['step'\] must be an integer, got None"),
    ("step", "3", TypeError, r"\['step'\] must be an integer, got '3'"),
    ("step", 2.5, ValueError, r"\['step'\] must be a whole number, got 2.5"),
    ("step", np.float64(2.5), ValueError, r"\['step'\] must be a whole number, got (np.float64\()?2.5"),
    ("step", float("nan"), ValueError, r"\['step'\] must be a whole number, got nan"),
    ("step", -1, ValueError, r"\['step'\] must be >= 0, got -1"),
    ("step", True, TypeError, r"\['step'\] must be an integer, got True"),
    ("step", 2**60, ValueError, r"\['step'\] must be < 2\*\*53"),
    ("schedule", "x", TypeError, r"\['schedule'\] must be a clrfast schedule.*got 'x'"),
    ("schedule", {"kind": "constant", "lr": 0.1}, TypeError, r"\['schedule'\] must be a clrfast schedule"),
    ("lr", -1.0, ValueError, r"\['lr'\] must be >= 0.0, got -1.0"),
    ("lr", float("inf"), ValueError, r"\['lr'\] must be finite, got inf"),
    ("lr", "0.1", TypeError, r"\['lr'\] must be a real number"),
    ("lr", torch.tensor(-1.0), ValueError, r"Invalid learning rate: -1.0 \(param_groups\[1\]\['lr'\]"),
    ("lr", torch.tensor(float("nan")), ValueError, r"Invalid learning rate: nan"),
    ("lr", torch.tensor(float("inf")), ValueError, r"Invalid learning rate: inf"),
    ("lr", torch.tensor(1), TypeError, r"\['lr'\] must be a real number or a one-element float32"),
    ("lr", torch.tensor([0.1, 0.1]), TypeError, r"\['lr'\] must be a real number or a one-element"),
]
BY_KIND = {
    "nonneg": [
        (-0.5, ValueError, "must be finite and >= 0.0, got -0.5"),
        (float("nan"), ValueError, "must be finite"),
        (float("inf"), ValueError, "must be finite"),
        (None, TypeError, "must be a real number, got None"),
    ],
    "real": [(float("nan"), ValueError, "must be finite, got nan"), ("0.1", TypeError, "must be a real number")],
    "flag": [
        ("yes", TypeError, "must be a bool, got 'yes'"),
        (None, TypeError, "must be a bool, got None"),
        (2, TypeError, "must be a bool, got 2"),
    ],
    "betas": [
        ((0.9, 1.5), ValueError, r"must lie in \[0, 1"),
        ((0.9, float("nan")), ValueError, "must be finite"),
        (0.9, TypeError, "must be a pair"),
    ],
}
EXTRA = {  # a rule's own bounds
    "CLRAdamW": [("betas", (1.0, 0.999), ValueError, r"\['betas'\] must lie in \[0, 1\)")],
    "CLRAdam": [("betas", (0.9, 1.0), ValueError, r"\['betas'\] must lie in \[0, 1\)")],
}
CASES = [
    pytest.param(RULES[name], key, value, exc, match, id=f"{name}-{key}-{value!r}", marks=RULES[name].marks)
    for name in RULES
    for key, value, exc, match in COMMON
    + [
        (key, value, exc, rf"\['{key}'\] {match}")
        for key, kind in RULES[name].hypers.items()
        for value, exc, match in BY_KIND[kind]
    ]
    + EXTRA.get(name, [])
]


@pytest.mark.parametrize("warm", [False, True], ids=["first-step", "cached-plan"])
@pytest.mark.parametrize("rule, key, value, exc, match", CASES)
def test_a_bad_group_value_fails_the_step_before_anything_changes(rule, key, value, exc, match, warm):
    params, opt = _two_groups(rule)
    steps = 2 if warm else 0
    for t in range(steps):
        _set_grads(t, params)
        opt.step()
    group = opt.param_groups[1]  # group 0 is valid: a step must not update it before finding group 1 bad
    if key in ("lr", "momentum", "betas"):
        group["schedule"] = None  # a group applying its own values, as with schedule=None
    group[key] = value
    _set_grads(steps, params)
    snap = _snapshot(opt)
    with pytest.raises(exc, match=match) as info:
        opt.step()
    assert "param_groups[1]" in str(info.value)
    _assert_unchanged(opt, snap)


@pytest.mark.parametrize("warm", [False, True], ids=["load-then-step", "cached-plan"])
@pytest.mark.parametrize(
    "value, match",
    [
        (torch.tensor(-1.0), r"state\['step'\] must hold a whole number >= 0, got tensor\(-1\.\)"),
        (torch.tensor(2.5), r"state\['step'\] must hold a whole number >= 0, got tensor\(2\.5000\)"),
        (torch.tensor(float("nan")), r"state\['step'\] must hold a whole number >= 0, got tensor\(nan\)"),
        (torch.tensor(float("inf")), r"state\['step'\] must hold a whole number >= 0, got tensor\(inf\)"),
    ],
)
@pytest.mark.parametrize("rule", where(lambda r: r.step_state))
def test_a_bad_step_state_is_refused_before_anything_changes(rule, value, match, warm):
    params, opt = _two_groups(rule)
    _set_grads(0, params)
    opt.step()
    if warm:
        opt.state[params[3]]["step"] = value  # a direct write: the cached plan sees a new state tensor
    else:
        sd = copy.deepcopy(opt.state_dict())
        sd["state"][3]["step"] = value
        snap = _snapshot(opt)
        with pytest.raises(ValueError, match=r"param_groups\[1\] parameter 1: " + match):
            opt.load_state_dict(sd)
        _assert_unchanged(opt, snap)
        opt.state[params[3]]["step"] = value
    _set_grads(1, params)
    snap = _snapshot(opt)
    with pytest.raises(ValueError, match=r"param_groups\[1\] parameter 1: " + match):
        opt.step()
    _assert_unchanged(opt, snap)


# --------------------------------------------------------------------------- an integral float clock
@pytest.mark.parametrize("rule", params())
@pytest.mark.parametrize("clock", [np.float64(3), 3.0, np.int64(3)], ids=["np.float64", "float", "np.int64"])
def test_an_integral_float_clock_counts_as_that_integer(rule, clock):
    # What a resume through NumPy or JSON hands back: the same updates as the int clock, and an int clock after.
    a, b = _params(), _params()
    oa, ob = rule.make(a, CYCLIC), rule.make(b, CYCLIC)
    for t in range(3):
        _set_grads(t, a, b)
        oa.step()
        ob.step()
    oa.param_groups[0]["step"] = clock
    for t in range(3, 8):
        _set_grads(t, a, b)
        oa.step()
        ob.step()
        assert type(oa.param_groups[0]["step"]) is int and oa.param_groups[0]["step"] == ob.param_groups[0]["step"]
        assert oa.param_groups[0]["lr"] == ob.param_groups[0]["lr"]
    assert ob.param_groups[0]["step"] == 8
    assert all(torch.equal(p, q) for p, q in zip(a, b))


@pytest.mark.parametrize("rule", params())
def test_a_json_resumed_clock_loads_as_an_integer(rule):
    a, b = _params(), _params()
    oa, ob = rule.make(a, CYCLIC), rule.make(b, CYCLIC)
    for t in range(3):
        _set_grads(t, a, b)
        oa.step()
        ob.step()
    sd = oa.state_dict()
    sd["param_groups"][0]["step"] = json.loads(json.dumps(float(sd["param_groups"][0]["step"])))
    assert type(sd["param_groups"][0]["step"]) is float
    oa.load_state_dict(sd)
    assert type(oa.param_groups[0]["step"]) is int and oa.param_groups[0]["step"] == 3
    for t in range(3, 6):
        _set_grads(t, a, b)
        oa.step()
        ob.step()
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    sd["param_groups"][0]["step"] = 2.5
    snap = _snapshot(oa)
    with pytest.raises(ValueError, match=r"state_dict\['param_groups'\]\[0\]\['step'\] must be a whole number"):
        oa.load_state_dict(sd)
    _assert_unchanged(oa, snap)


# --------------------------------------------------------------------------- tensor lrs, bit for bit
LR_DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


@needs_torch_sqrt
@pytest.mark.parametrize("pair", ADAM_PAIRS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lr_dtype", LR_DTYPES)
@pytest.mark.parametrize(
    "weight_decay, amsgrad, maximize", [(0.3, False, False), (0.0, False, False), (0.3, True, False), (0.1, True, True)]
)
@pytest.mark.parametrize("reference, path", [("foreach", dict(foreach=False)), ("fused", dict(fused=True))])
def test_tensor_lr_adam_bit_identical_to_torch(pair, dtype, lr_dtype, weight_decay, amsgrad, maximize, reference, path):
    # torch's for-loop derives 1 - lr*wd and lr/(1 - beta1**step) from a tensor lr with 0-d ops in its
    # dtype (double arithmetic differs from that in every element of a float64 model after 5 steps);
    # its fused kernel reads the tensor's value as a double.
    ours, theirs = ADAM_PAIRS[pair]
    a, b = _params(dtype), _params(dtype)
    kw = dict(weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize)
    oa = ours(a, None, lr=torch.tensor(1e-3, dtype=lr_dtype), reference=reference, **kw)
    ob = theirs(b, lr=torch.tensor(1e-3, dtype=lr_dtype), **path, **kw)
    for t in range(25):
        _set_grads(t, a, b)
        oa.step()
        ob.step()
    for p, q in zip(a, b):
        assert torch.equal(p, q)
        assert oa.state[p].keys() == ob.state[q].keys()
        assert all(torch.equal(oa.state[p][k], ob.state[q][k]) for k in ob.state[q])
    lr = oa.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and lr.dtype == lr_dtype


@needs_torch_sqrt
@pytest.mark.parametrize("lr_dtype", LR_DTYPES)
def test_tensor_lr_on_torchs_single_tensor_path_matches_too(lr_dtype):
    # a transposed parameter takes torch's own code inside the step; with the same lr tensor dtype
    g = torch.Generator().manual_seed(3)
    base = torch.randn(5, 4, generator=g, dtype=torch.float64)
    a = [base.clone().t().requires_grad_(), torch.randn(6, generator=g, dtype=torch.float64).requires_grad_()]
    b = [p.detach().clone().requires_grad_() for p in a]
    assert not a[0].is_contiguous()
    oa = CLRAdamW(a, None, lr=torch.tensor(3e-3, dtype=lr_dtype), weight_decay=0.3, reference="foreach")
    ob = torch.optim.AdamW(b, lr=torch.tensor(3e-3, dtype=lr_dtype), weight_decay=0.3, foreach=False)
    for t in range(10):
        _set_grads(t, a, b)
        oa.step()
        ob.step()
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_the_kernel_refuses_an_unknown_lr_dtype_code():
    from clrfast import _core

    s = torch.zeros(())
    table = np.array([[0, 0, 0, 0, 0, 0, 0, s.data_ptr(), 0]], dtype=np.int64)
    with pytest.raises(ValueError, match="lr_dtype: unknown dtype code 4"):
        _core.adam_step(table, [1e-3, 0.9, 0.999, 1e-8, 0.0, 1.0, 0.0, 0.0, 4.0, 0.0])
    assert float(s) == 0.0


def test_torchs_foreach_adam_refuses_a_tensor_lr_so_the_for_loop_is_the_reference():
    # torch 2.x's foreach=True Adam takes a tensor lr only with capturable=True, which needs CUDA-like
    # devices: on the CPU the for-loop path above is the only torch reference for a tensor lr.
    p = [torch.zeros(3, requires_grad=True)]
    with pytest.raises(ValueError, match="lr as a Tensor is not supported for capturable=False and foreach=True"):
        torch.optim.AdamW(p, lr=torch.tensor(1e-3), foreach=True)


@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("rule", where(lambda r: r.tensor_lr))
def test_a_tensor_lr_written_to_the_group_is_applied_as_torch_applies_it(rule, flat):
    # a float lr at construction, then torch-style tensors written to the group (as a tensor-lr scheduler does)
    a, b = _params(torch.float64), _params(torch.float64)
    oa = rule.make(a, None, lr=1e-3, flat=flat)
    ob = rule.make_reference(b, 1e-3)
    for t in range(12):
        lr = torch.tensor(1e-3 * (1 + t % 4), dtype=torch.float32)
        oa.param_groups[0]["lr"] = lr
        ob.param_groups[0]["lr"] = lr.clone()
        _set_grads(t, a, b)
        oa.step()
        ob.step()
    assert all(torch.equal(p, q) for p, q in zip(a, b))


SGD_CONFIGS = [
    dict(momentum=0.9, weight_decay=1e-2, nesterov=True),
    dict(momentum=0.5, dampening=0.3, maximize=True),
    dict(weight_decay=1e-3),
]


@pytest.mark.parametrize("kw", SGD_CONFIGS)
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lr_dtype", LR_DTYPES)
def test_tensor_lr_sgd_bit_identical_to_torch(kw, foreach, dtype, lr_dtype):
    a, b = _params(dtype), _params(dtype)
    oa = CLRSGD(a, None, lr=torch.tensor(0.0123, dtype=lr_dtype), **kw)
    ob = torch.optim.SGD(b, lr=torch.tensor(0.0123, dtype=lr_dtype), foreach=foreach, **kw)
    for t in range(25):
        _set_grads(t, a, b)
        oa.step()
        ob.step()
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    if kw.get("momentum"):
        assert all(torch.equal(oa.state[p]["momentum_buffer"], ob.state[q]["momentum_buffer"]) for p, q in zip(a, b))


# --------------------------------------------------------------------------- tensor lr validation, as torch's
def _torch_message(lr) -> str:
    with pytest.raises(ValueError) as info:
        torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=lr)
    return str(info.value)


BAD_TENSOR_LRS = [torch.tensor(-1.0), torch.tensor(float("nan")), torch.tensor(-1e-3, dtype=torch.float64)]


@pytest.mark.parametrize("rule", params())
@pytest.mark.parametrize("lr", BAD_TENSOR_LRS, ids=["-1", "nan", "-1e-3-f64"])
def test_a_bad_tensor_lr_is_torchs_error_at_construction_load_and_step(rule, lr):
    message = re.escape(_torch_message(lr))
    with pytest.raises(ValueError, match=message):
        rule.make(_params(), None, lr=lr)
    with pytest.raises(ValueError, match=message):
        rule.make([{"params": _params(), "lr": lr}], None, lr=0.1)

    a = _params()
    opt = rule.make(a, None, lr=torch.tensor(0.01))
    _set_grads(0, a)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    sd["param_groups"][0]["lr"] = lr
    snap = _snapshot(opt)
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(sd)
    _assert_unchanged(opt, snap)

    opt.param_groups[0]["lr"] = lr
    _set_grads(1, a)
    snap = _snapshot(opt)
    with pytest.raises(ValueError, match=message):
        opt.step()
    _assert_unchanged(opt, snap)


# --------------------------------------------------------------------------- shared step counters
SHARED_SHAPES = [(4,), (3, 2), (5,)]


def _shared_step_state(rule=RULES["CLRAdamW"]):
    """The reference's state after one step, its parameters' state then made to share one step tensor."""
    ps = _params(shapes=SHARED_SHAPES)
    opt = rule.make_reference(ps, 1e-3)
    _set_grads(0, ps)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    shared = sd["state"][0]["step"]
    for st in sd["state"].values():
        st["step"] = shared
    return sd


def test_torch_counts_a_shared_step_once_per_parameter():
    # the reason such a state is refused below: torch's count is no parameter's number of updates
    sd = _shared_step_state()
    ps = _params(shapes=SHARED_SHAPES)
    opt = torch.optim.AdamW(ps, lr=1e-3, foreach=False)
    opt.load_state_dict(sd)
    for t in range(1, 4):
        _set_grads(t, ps)
        opt.step()
    assert all(float(opt.state[p]["step"]) == 10.0 for p in ps)


@pytest.mark.parametrize("rule", where(lambda r: r.step_state))
def test_a_state_dict_sharing_one_step_tensor_is_refused(rule):
    sd = _shared_step_state(rule)
    ps = _params(shapes=SHARED_SHAPES)
    opt = rule.make(ps, None, lr=1e-3)
    _set_grads(0, ps)
    opt.step()
    snap = _snapshot(opt)
    with pytest.raises(
        ValueError,
        match=r"state_dict\['state'\]\[0\] and state_dict\['state'\]\[1\] share one "
        r"state\['step'\] tensor",
    ):
        opt.load_state_dict(sd)
    _assert_unchanged(opt, snap)
    # the same state with a counter of its own per parameter loads, and then counts as torch does
    for st in sd["state"].values():
        st["step"] = st["step"].clone()
    opt.load_state_dict(copy.deepcopy(sd))  # torch's load keeps the step tensors it is given
    ref = _params(shapes=SHARED_SHAPES)
    ropt = rule.make_reference(ref, 1e-3)
    ropt.load_state_dict(copy.deepcopy(sd))
    with torch.no_grad():
        for p, q in zip(ps, ref):
            p.copy_(q)
    for t in range(1, 4):
        _set_grads(t, ps, ref)
        opt.step()
        ropt.step()
    assert all(float(opt.state[p]["step"]) == 4.0 for p in ps)
    assert all(torch.equal(p, q) for p, q in zip(ps, ref))


@pytest.mark.parametrize("how", ["same-object", "view", "across-groups"])
@pytest.mark.parametrize("rule", where(lambda r: r.step_state))
def test_a_step_counter_shared_by_a_direct_write_fails_the_step(rule, how):
    a = _params(shapes=[(4,), (3, 2)])
    b = _params(shapes=[(5,)], seed=3)
    opt = rule.make([{"params": a}, {"params": b}], clr.Constant(1e-3))
    for t in range(2):
        _set_grads(t, a + b)
        opt.step()
    first = opt.state[a[0]]["step"]
    victim = b[0] if how == "across-groups" else a[1]
    opt.state[victim]["step"] = first.view(()) if how == "view" else first
    _set_grads(2, a + b)
    snap = _snapshot(opt)
    other = r"param_groups\[1\] parameter 0" if how == "across-groups" else r"param_groups\[0\] parameter 1"
    with pytest.raises(ValueError, match=r"param_groups\[0\] parameter 0 and " + other + r" share one state\['step'\]"):
        opt.step()
    _assert_unchanged(opt, snap)


# --------------------------------------------------------------------------- nesterov through a momentum of 0
@pytest.mark.parametrize("up, down", [(20, None), (5, 5), (20, 13)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("flat", [False, True])
def test_nesterov_through_a_scheduled_momentum_trough_matches_torch(up, down, dtype, flat):
    # torch checks nesterov's momentum in its constructor only; at a momentum of 0 its step is plain SGD
    # (the momentum buffer is neither read nor written) and the buffer is used again once momentum returns
    a, b = _params(dtype), _params(dtype)
    sched = clr.Cyclic(0.01, 0.1, up, down, base_momentum=0.0, max_momentum=0.9)
    oa = CLRSGD(a, sched, momentum=0.9, nesterov=True, weight_decay=1e-3, flat=flat)
    ob = torch.optim.SGD(b, lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-3, foreach=False)
    sb = torch.optim.lr_scheduler.CyclicLR(
        ob, 0.01, 0.1, step_size_up=up, step_size_down=down, cycle_momentum=True, base_momentum=0.0, max_momentum=0.9
    )
    cycle = up + (down if down is not None else up)
    seen = []
    for t in range(3 * cycle + 4):
        assert oa.param_groups[0]["momentum"] == ob.param_groups[0]["momentum"], t
        seen.append(ob.param_groups[0]["momentum"])
        _set_grads(t, a, b)
        oa.step()
        ob.step()
        sb.step()
        for p, q in zip(a, b):
            assert torch.equal(p, q), t
            assert torch.equal(oa.state[p]["momentum_buffer"], ob.state[q]["momentum_buffer"]), t
    assert min(seen) < 1e-15  # the trough was crossed, 3 times
    if down != 13:
        assert seen.count(0.0) == 3


def _sgd_under_cycliclr(ps, make):
    opt = make(ps, lr=0.01, momentum=0.9, nesterov=True)
    sch = torch.optim.lr_scheduler.CyclicLR(
        opt, 0.01, 0.1, step_size_up=5, step_size_down=5, cycle_momentum=True, base_momentum=0.0, max_momentum=0.9
    )
    return opt, sch


def test_nesterov_trough_under_torchs_cycliclr_and_a_checkpoint_there():
    # schedule=None with torch's CyclicLR writing the momentum; a state saved at momentum 0 loads, as into torch
    makers = (lambda ps, **kw: CLRSGD(ps, None, **kw), lambda ps, **kw: torch.optim.SGD(ps, foreach=False, **kw))
    a, b = _params(), _params()
    (oa, sa), (ob, sb) = _sgd_under_cycliclr(a, makers[0]), _sgd_under_cycliclr(b, makers[1])
    for t in range(5):
        _set_grads(t, a, b)
        for o, s in ((oa, sa), (ob, sb)):
            o.step()
            s.step()
    assert oa.param_groups[0]["momentum"] == ob.param_groups[0]["momentum"] == 0.0
    saved = [(copy.deepcopy(o.state_dict()), s.state_dict()) for o, s in ((oa, sa), (ob, sb))]
    a2, b2 = [p.detach().clone().requires_grad_() for p in a], [p.detach().clone().requires_grad_() for p in b]
    resumed = [_sgd_under_cycliclr(ps, make) for ps, make in zip((a2, b2), makers)]
    for (o, s), (osd, ssd) in zip(resumed, saved):
        o.load_state_dict(osd)
        s.load_state_dict(ssd)
    (oa2, sa2), (ob2, sb2) = resumed
    assert oa2.param_groups[0]["momentum"] == 0.0
    seen = []
    for t in range(5, 40):
        seen.append(ob2.param_groups[0]["momentum"])
        _set_grads(t, a2, b2)
        for o, s in resumed:
            o.step()
            s.step()
        assert oa2.param_groups[0]["momentum"] == ob2.param_groups[0]["momentum"], t
    assert seen.count(0.0) == 4  # steps 5, 15, 25 and 35
    assert all(torch.equal(p, q) for p, q in zip(a2, b2))
    assert all(torch.equal(oa2.state[p]["momentum_buffer"], ob2.state[q]["momentum_buffer"]) for p, q in zip(a2, b2))


def test_nesterov_still_needs_a_momentum_at_construction():
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum and zero dampening"):
        CLRSGD(_params(), None, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum and zero dampening"):
        CLRSGD(_params(), clr.Constant(0.1), momentum=0.9, dampening=0.1, nesterov=True)
