"""CLRSGD under hostile and odd-but-legal input: a clear error that changes nothing, or torch's numbers."""

import copy
import io
import pickle

import pytest

torch = pytest.importorskip("torch")

import clrfast as clr  # noqa: E402
from clrfast.torch import CLRSGD  # noqa: E402

SCHED = clr.Cyclic(0.01, 0.1, step_size_up=5, step_size_down=3)


def _twins(shapes=((4, 3), (7,)), dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype).requires_grad_() for s in shapes]
    b = [p.detach().clone().requires_grad_() for p in a]
    return a, b


def _torch(ps, **kw):
    opt = torch.optim.SGD(ps, lr=0.01, **kw)
    sch = torch.optim.lr_scheduler.CyclicLR(opt, 0.01, 0.1, step_size_up=5, step_size_down=3, cycle_momentum=False)
    return opt, sch


def _grads(ps, t):
    g = torch.Generator().manual_seed(100 + t)
    return [torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) for p in ps]


def _step_both(a, oa, b, ob, sb, t):
    for p, q, g in zip(a, b, _grads(a, t)):
        p.grad = g.clone()
        q.grad = g.clone()
    oa.step()
    ob.step()
    sb.step()


def _snapshot(opt):
    """Everything a failing call must leave alone: params (values and storage), grads, state, groups."""
    params = [p for g in opt.param_groups for p in g["params"]]
    return dict(
        values=[p.detach().clone() for p in params],
        ptrs=[p.data_ptr() for p in params],
        grads=[
            None
            if p.grad is None
            else (p.grad.data_ptr() if p.grad.layout == torch.strided else id(p.grad), p.grad.detach().clone())
            for p in params
        ],
        state={
            id(p): {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in opt.state[p].items()}
            for p in params
            if p in opt.state
        },
        groups=[{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups],
        ngroups=len(opt.param_groups),
    )


def _assert_unchanged(opt, snap):
    now = _snapshot(opt)
    assert now["ngroups"] == snap["ngroups"] and now["groups"] == snap["groups"]
    assert now["ptrs"] == snap["ptrs"]
    for x, y in zip(now["values"], snap["values"]):
        assert torch.equal(x, y)
    for x, y in zip(now["grads"], snap["grads"]):
        assert (x is None) == (y is None)
        if x is not None:
            assert x[0] == y[0] and torch.equal(x[1].to_dense(), y[1].to_dense())
    assert now["state"].keys() == snap["state"].keys()
    for k in now["state"]:
        assert now["state"][k].keys() == snap["state"][k].keys()
        for key, v in now["state"][k].items():
            assert torch.equal(v, snap["state"][k][key]) if isinstance(v, torch.Tensor) else v == snap["state"][k][key]


# ----------------------------------------------------------------------------- nothing unchecked reaches the kernel
@pytest.mark.parametrize("size", [3, 2, 0])
def test_momentum_buffer_of_the_wrong_size_is_refused_at_load(size):
    a, _ = _twins(((3,),))
    opt = CLRSGD(a, SCHED, momentum=0.9)
    a[0].grad = torch.ones(3)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][0]["momentum_buffer"] = torch.zeros(size if size != 3 else (3, 1))
    snap = _snapshot(opt)
    with pytest.raises(ValueError, match=r"param_groups\[0\] parameter 0: state\['momentum_buffer'\] has shape"):
        opt.load_state_dict(sd)
    _assert_unchanged(opt, snap)


def test_momentum_buffer_replaced_in_state_is_checked_at_the_step():
    a, _ = _twins(((5,),))
    opt = CLRSGD(a, SCHED, momentum=0.9)
    a[0].grad = torch.ones(5)
    opt.step()
    opt.state[a[0]]["momentum_buffer"] = torch.zeros(2)
    snap = _snapshot(opt)
    with pytest.raises(ValueError, match="has shape"):
        opt.step()
    _assert_unchanged(opt, snap)


@pytest.mark.parametrize("flat", [False, True])
def test_parameter_and_gradient_sizes_are_compared(flat):
    a, _ = _twins(((8,),))
    opt = CLRSGD(a, SCHED, momentum=0.9, flat=flat)
    a[0].grad = torch.ones(8)
    opt.step()
    a[0].grad = torch.ones(8)
    a[0].grad.set_(torch.ones(1))
    snap = _snapshot(opt)
    with pytest.raises(ValueError, match=r"parameter 0: gradient shape \(1,\) differs from the parameter's \(8,\)"):
        opt.step()
    _assert_unchanged(opt, snap)


def test_parameter_data_replaced_by_a_larger_tensor_is_refused():
    a, _ = _twins(((8,),))
    opt = CLRSGD(a, SCHED, momentum=0.9)
    a[0].grad = torch.ones(8)
    opt.step()
    a[0].data = torch.ones(100_000)
    snap = _snapshot(opt)
    with pytest.raises(ValueError, match="gradient shape"):
        opt.step()
    _assert_unchanged(opt, snap)


def test_resized_gradient_in_place_is_noticed():
    a, _ = _twins(((1000,),))
    opt = CLRSGD(a, SCHED, momentum=0.9)
    a[0].grad = torch.ones(1000)
    opt.step()
    a[0].grad.resize_(10)  # same object, same address, fewer elements
    with pytest.raises(ValueError, match="gradient shape"):
        opt.step()


@pytest.mark.parametrize("flat", [False, True])
def test_meta_parameters_are_a_clear_error(flat):
    p = torch.zeros(4, device="meta", requires_grad=True)
    with pytest.raises(ValueError, match=r"param_groups\[0\] parameter 0: CLRSGD runs on CPU and CUDA tensors"):
        CLRSGD([p], SCHED, flat=flat)


def test_unsupported_dtypes_and_sparse_gradients_name_the_parameter():
    with pytest.raises(TypeError, match=r"param_groups\[0\] parameter 1: .* got torch.complex64"):
        CLRSGD([torch.zeros(2, requires_grad=True), torch.zeros(2, dtype=torch.complex64, requires_grad=True)], SCHED)
    e = torch.nn.Embedding(10, 3, sparse=True)
    opt = CLRSGD(e.parameters(), SCHED, momentum=0.9)
    e(torch.tensor([1, 2])).sum().backward()
    snap = _snapshot(opt)
    with pytest.raises(ValueError, match="parameter 0: sparse gradients are not supported"):
        opt.step()
    _assert_unchanged(opt, snap)


@pytest.mark.parametrize("flat", [False, True])
def test_tied_parameters_are_refused_and_duplicates_kept_once(flat):
    w = torch.randn(6, 4)
    p1 = torch.nn.Parameter(w)
    p2 = torch.nn.Parameter(w)  # another Parameter over the same storage
    with pytest.raises(ValueError, match="share memory"):
        CLRSGD([p1, p2], SCHED, flat=flat)
    half = torch.nn.Parameter(w[:3])
    with pytest.raises(ValueError, match="share memory"):
        CLRSGD([{"params": [p1]}, {"params": [half]}], SCHED, flat=flat)
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter group"):
        CLRSGD([{"params": [p1]}, {"params": [p1]}], SCHED, flat=flat)
    # torch warns and keeps both (its step then updates p1 twice); clrfast keeps one
    with pytest.warns(UserWarning, match="a parameter group with duplicate parameters"):
        opt = CLRSGD([p1, p1], SCHED, flat=flat)
    assert len(opt.param_groups[0]["params"]) == 1 and opt.param_groups[0]["params"][0] is p1


# ----------------------------------------------------------------------------- all or nothing
@pytest.mark.parametrize("dampening", [0.0, 0.5])
def test_a_failed_first_step_creates_no_buffer(dampening):
    (a0, a1), (b0, b1) = _twins(((3,), (2,)))
    oa = CLRSGD([a0, a1], clr.Constant(0.1), momentum=0.9, dampening=dampening)
    ob = torch.optim.SGD([b0, b1], lr=0.1, momentum=0.9, dampening=dampening)
    a0.grad = torch.ones(3)
    a1.grad = torch.ones(2)
    a1.grad.set_(torch.ones(1))  # the parameter after a0 is refused
    with pytest.raises(ValueError, match="parameter 1: gradient shape"):
        oa.step()
    assert a0 not in oa.state or "momentum_buffer" not in oa.state[a0]
    assert oa.param_groups[0]["step"] == 0
    a1.grad = None
    b0.grad, b1.grad = torch.ones(3), None
    for _ in range(3):
        oa.step()
        ob.step()
    assert torch.equal(a0, b0) and torch.equal(oa.state[a0]["momentum_buffer"], ob.state[b0]["momentum_buffer"])


def test_multi_group_step_is_all_or_nothing():
    a, _ = _twins(((3,), (4,)))
    opt = CLRSGD([{"params": [a[0]]}, {"params": [a[1]]}], SCHED, momentum=0.9)
    a[0].grad = torch.ones(3)
    a[1].grad = torch.ones(4)
    opt.step()
    a[1].grad = torch.ones(4)
    a[1].grad.set_(torch.ones(2))
    snap = _snapshot(opt)
    with pytest.raises(ValueError, match=r"param_groups\[1\] parameter 0: gradient shape"):
        opt.step()
    _assert_unchanged(opt, snap)


def test_flat_constructor_that_fails_on_a_later_group_moves_nothing():
    a, _ = _twins(((3,), (4,)))
    for p in a:
        p.grad = torch.full(p.shape, 2.0)
    bad = [torch.zeros(2, requires_grad=True), torch.zeros(2, dtype=torch.float64, requires_grad=True)]
    ptrs = [(p.data_ptr(), p.grad.data_ptr()) for p in a]
    with pytest.raises(ValueError, match=r"param_groups\[1\]: flat=True needs one dtype"):
        CLRSGD([{"params": a}, {"params": bad}], SCHED, flat=True)
    assert [(p.data_ptr(), p.grad.data_ptr()) for p in a] == ptrs
    assert all(torch.equal(p.grad, torch.full(p.shape, 2.0)) for p in a)


def test_add_param_group_is_checked_before_anything_is_added():
    a, _ = _twins(((3,),))
    opt = CLRSGD(a, SCHED, momentum=0.9)
    snap = _snapshot(opt)
    with pytest.raises(TypeError, match=r"param_groups\[1\]\['schedule'\] must be a clrfast schedule"):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], "schedule": "bogus"})
    with pytest.raises(ValueError, match=r"param_groups\[1\] sets lr=0.5 but follows a schedule"):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], "lr": 0.5})
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter group"):
        opt.add_param_group({"params": [a[0]]})
    _assert_unchanged(opt, snap)


@pytest.mark.parametrize(
    "edit, exc, match",
    [
        (lambda g: g.update(step=2**70), ValueError, r"\['step'\] must be < 2\*\*53"),
        (lambda g: g.update(step=-1), ValueError, r"\['step'\] must be >= 0"),
        (lambda g: g.update(base_momentum="x"), TypeError, r"\['momentum'\] must be a real number"),
        (lambda g: g.update(momentum=float("nan")), ValueError, r"Invalid momentum value: nan \(.*\['momentum'\]"),
        (lambda g: g.update(schedule={"kind": "nope"}), ValueError, r"\['schedule'\]"),
        (lambda g: g.update(nesterov="yes"), TypeError, r"\['nesterov'\] must be a bool"),
    ],
)
def test_load_state_dict_checks_every_group_value(edit, exc, match):
    a, _ = _twins()
    opt = CLRSGD(a, clr.Constant(0.1), momentum=0.9)
    for p in a:
        p.grad = torch.ones(p.shape)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    edit(sd["param_groups"][0])
    snap = _snapshot(opt)
    with pytest.raises(exc, match=match):
        opt.load_state_dict(sd)
    _assert_unchanged(opt, snap)


# ----------------------------------------------------------------------------- same as torch on odd-but-legal input
def test_per_group_momentum_is_honoured():
    a, b = _twins(((3,), (4,)))
    oa = CLRSGD([{"params": [a[0]]}, {"params": [a[1]], "momentum": 0.9}], SCHED)
    ob, sb = _torch([{"params": [b[0]]}, {"params": [b[1]], "momentum": 0.9}])
    for t in range(20):
        _step_both(a, oa, b, ob, sb, t)
    assert oa.param_groups[1]["momentum"] == 0.9
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_transposed_parameters_match_torch():
    g = torch.Generator().manual_seed(3)
    base = torch.randn(5, 4, generator=g)
    a = [torch.nn.Parameter(base.clone().t()), torch.nn.Parameter(torch.randn(6, generator=g))]
    b = [torch.nn.Parameter(p.detach().clone().t().contiguous().t()) for p in a[:1]] + [
        torch.nn.Parameter(a[1].detach().clone())
    ]
    assert not a[0].is_contiguous()
    oa = CLRSGD(a, SCHED, momentum=0.9, weight_decay=1e-2, nesterov=True)
    ob, sb = _torch(b, momentum=0.9, weight_decay=1e-2, nesterov=True)
    for t in range(15):
        _step_both(a, oa, b, ob, sb, t)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_model_converted_to_float64_after_construction_matches_torch():
    torch.manual_seed(0)
    net_a = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    net_b = copy.deepcopy(net_a)
    oa = CLRSGD(net_a.parameters(), SCHED, momentum=0.9, weight_decay=1e-3)
    ob, sb = _torch(net_b.parameters(), momentum=0.9, weight_decay=1e-3)
    x = torch.randn(8, 4)
    for t in range(10):
        if t == 4:
            net_a.double()
            net_b.double()
            x = x.double()
        for net, opt in ((net_a, oa), (net_b, ob)):
            opt.zero_grad()
            net(x * (t + 1)).pow(2).mean().backward()
            opt.step()
        sb.step()
        for p, q in zip(net_a.parameters(), net_b.parameters()):
            assert torch.equal(p, q), t
    assert oa.state[net_a[0].weight]["momentum_buffer"].dtype == ob.state[net_b[0].weight]["momentum_buffer"].dtype


def test_nan_and_inf_gradients_propagate_as_in_torch():
    a, b = _twins(((6,),))
    oa = CLRSGD(a, SCHED, momentum=0.9, weight_decay=1e-2)
    ob, sb = _torch(b, momentum=0.9, weight_decay=1e-2)
    for t in range(4):
        g = _grads(a, t)[0]
        if t == 1:
            g[0], g[1] = float("nan"), float("inf")
        a[0].grad, b[0].grad = g.clone(), g.clone()
        oa.step()
        ob.step()
        sb.step()
    assert torch.equal(a[0].isnan(), b[0].isnan())
    assert torch.equal(a[0].nan_to_num(), b[0].nan_to_num())


def test_flat_mode_skips_parameters_without_gradients_after_zero_grad():
    torch.manual_seed(1)
    net_a = torch.nn.ModuleDict({"used": torch.nn.Linear(4, 2), "unused": torch.nn.Linear(4, 2)})
    net_b = copy.deepcopy(net_a)
    oa = CLRSGD(net_a.parameters(), SCHED, momentum=0.9, weight_decay=1e-2, flat=True)
    ob, sb = _torch(net_b.parameters(), momentum=0.9, weight_decay=1e-2)
    for t in range(12):
        x = torch.randn(5, 4)
        for net, opt in ((net_a, oa), (net_b, ob)):
            opt.zero_grad()
            head = "unused" if t < 2 else "used"  # the 'unused' layer gets gradients only at first
            net[head](x).pow(2).sum().backward()
            opt.step()
        sb.step()
        for p, q in zip(net_a.parameters(), net_b.parameters()):
            assert torch.equal(p, q), t


# ----------------------------------------------------------------------------- torch's optimizer protocol
@pytest.mark.parametrize("flat", [False, True])
def test_deepcopy_and_pickle_give_a_working_optimizer(flat):
    torch.manual_seed(2)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = CLRSGD(net.parameters(), SCHED, momentum=0.9, weight_decay=1e-3, flat=flat)
    x = torch.randn(6, 4)

    def train(net, opt, steps):
        for _ in range(steps):
            opt.zero_grad()
            net(x).pow(2).mean().backward()
            opt.step()

    train(net, opt, 3)
    net2, opt2 = copy.deepcopy((net, opt))
    blob = io.BytesIO()
    torch.save((net, opt), blob)
    blob.seek(0)
    net3, opt3 = torch.load(blob, weights_only=False)
    net4, opt4 = pickle.loads(pickle.dumps((net, opt)))
    train(net, opt, 5)
    for n, o in ((net2, opt2), (net3, opt3), (net4, opt4)):
        assert o.param_groups[0]["step"] == 3
        train(n, o, 5)
        for p, q in zip(net.parameters(), n.parameters()):
            assert torch.equal(p, q)
    deep = copy.deepcopy(opt)  # the optimizer alone: its own parameter copies
    deep.zero_grad()
    deep.step()


def test_add_param_group_shows_its_own_lr_and_is_flat_when_asked():
    a, _ = _twins(((3,),))
    opt = CLRSGD(a, SCHED, momentum=0.9, flat=True)
    new = torch.zeros(5, requires_grad=True)
    s2 = clr.Constant(0.25)
    opt.add_param_group({"params": [new], "schedule": s2})
    assert opt.param_groups[1]["lr"] == 0.25 and opt.param_groups[1]["flat"]
    assert 1 in opt._flat and new.data_ptr() == opt._flat[1].param.data_ptr()
    new.grad = torch.ones(5)
    a[0].grad = torch.ones(3)
    opt.step()
    assert torch.equal(new.detach(), torch.full((5,), -0.25))


def test_param_groups_show_the_next_updates_values_as_torch():
    s = clr.Cyclic(0.01, 0.1, step_size_up=5, step_size_down=3, base_momentum=0.8, max_momentum=0.9)
    a, b = _twins()
    oa = CLRSGD(a, s)
    ob = torch.optim.SGD(b, lr=0.01, momentum=0.9)
    sb = torch.optim.lr_scheduler.CyclicLR(
        ob, 0.01, 0.1, step_size_up=5, step_size_down=3, base_momentum=0.8, max_momentum=0.9
    )
    for t in range(12):
        assert [(g["lr"], g["momentum"]) for g in oa.param_groups] == [
            (g["lr"], g["momentum"]) for g in ob.param_groups
        ]
        assert oa.get_last_lr() == sb.get_last_lr()
        _step_both(a, oa, b, ob, sb, t)


def test_a_torch_scheduler_drives_clrsgd_without_a_schedule():
    a, b = _twins()
    oa = CLRSGD(a, 0.05, momentum=0.9, weight_decay=1e-3)
    ob = torch.optim.SGD(b, lr=0.05, momentum=0.9, weight_decay=1e-3)
    warm = lambda k: min(1.0, k / 4) * 0.5 ** (k // 6)  # noqa: E731  (the shape of transformers' factories)
    sa = torch.optim.lr_scheduler.LambdaLR(oa, warm)
    sb = torch.optim.lr_scheduler.LambdaLR(ob, warm)
    for t in range(20):
        _step_both(a, oa, b, ob, sb, t)
        sa.step()
        assert oa.param_groups[0]["lr"] == ob.param_groups[0]["lr"]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_a_write_to_a_scheduled_group_is_applied_to_the_next_update_only():
    a, b = _twins(((3,),))
    oa = CLRSGD(a, clr.Constant(0.1))
    a[0].grad = torch.ones(3)
    oa.param_groups[0]["lr"] = 0.5  # e.g. a warm-up hook of another library
    before = a[0].detach().clone()
    oa.step()
    assert torch.equal(a[0].detach(), before - 0.5)
    assert oa.param_groups[0]["lr"] == 0.1  # the schedule's value for the update after
    oa.step()
    assert torch.equal(a[0].detach(), before - 0.5 - 0.1)


def test_torch_sgd_state_dict_loads_into_a_scheduled_clrsgd():
    a, b = _twins()
    ob = torch.optim.SGD(b, lr=0.05, momentum=0.7)
    for p in b:
        p.grad = torch.ones(p.shape)
    ob.step()
    oa = CLRSGD(a, SCHED, momentum=0.9)
    oa.load_state_dict(ob.state_dict())
    g = oa.param_groups[0]
    # torch's values apply to the next update, then the schedule takes over
    assert g["momentum"] == 0.7 and g["step"] == 0 and g["lr"] == 0.05 and g["schedule"] == SCHED
    for p in a:
        p.grad = torch.zeros(p.shape)
    oa.step()
    assert g["lr"] == SCHED.lr(1)


def test_onecycle_groups_past_the_end_keep_showing_the_last_values():
    a, _ = _twins(((3,),))
    s = clr.OneCycle(0.1, total_steps=3)
    opt = CLRSGD(a, s, momentum=0.9)
    for _ in range(4):
        a[0].grad = torch.ones(3)
        opt.step()
    assert opt.param_groups[0]["step"] == 4
    assert opt.param_groups[0]["lr"] == s.lr(3)
    snap = _snapshot(opt)
    with pytest.raises(ValueError, match="Tried to step 4 times"):
        opt.step()
    _assert_unchanged(opt, snap)


def test_the_follow_scheduler_changes_nothing_and_reports_the_applied_lr():
    a, b = _twins()
    s = clr.Cyclic(0.01, 0.1, step_size_up=5, step_size_down=3, base_momentum=0.8, max_momentum=0.9)
    oa, ob = CLRSGD(a, s, weight_decay=1e-3), CLRSGD(b, s, weight_decay=1e-3)
    follow = oa.scheduler()
    for t in range(12):
        assert follow.get_last_lr() == [s.lr(t)]
        for p, q, g in zip(a, b, _grads(a, t)):
            p.grad, q.grad = g.clone(), g.clone()
        oa.step()
        follow.step()
        ob.step()
    assert all(torch.equal(x, y) for x, y in zip(a, b))
