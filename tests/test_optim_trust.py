"""Every fused optimizer under hostile and odd-but-legal input: a clear error that changes nothing, or its
reference's numbers (torch's optimizer, or lion_pytorch.Lion, see optim_registry)."""

import copy
import io
import pickle
import re

import pytest

torch = pytest.importorskip("torch")

import clrfast as clr  # noqa: E402
from clrfast.torch import CLRSGD  # noqa: E402
from optim_registry import RULES, UNLISTED, options, params, where  # noqa: E402

SCHED = clr.Cyclic(0.01, 0.1, step_size_up=5, step_size_down=3)
MOMENTUM_SCHED = clr.Cyclic(0.01, 0.1, step_size_up=5, step_size_down=3, base_momentum=0.8, max_momentum=0.9)
EVERY_RULE = pytest.mark.parametrize("rule", params())
FLAT = pytest.mark.parametrize("flat", [False, True], ids=["list", "flat"])
STATE_KEYS = [
    pytest.param(RULES[n], k, id=f"{n}-{k}", marks=RULES[n].marks) for n in RULES for k in RULES[n].state_keys
]


def _twins(shapes=((4, 3), (7,)), dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype).requires_grad_() for s in shapes]
    b = [p.detach().clone().requires_grad_() for p in a]
    return a, b


def _reference(rule, ps, over=None, base=None, cycle_momentum=False):
    """The reference optimizer driven by torch's CyclicLR over SCHED's cycle (and MOMENTUM_SCHED's momentum)."""
    opt = rule.make_reference(ps, 0.01, over, base)
    kw = dict(base_momentum=0.8, max_momentum=0.9) if cycle_momentum else {}
    sch = torch.optim.lr_scheduler.CyclicLR(
        opt, 0.01, 0.1, step_size_up=5, step_size_down=3, cycle_momentum=cycle_momentum, **kw
    )
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
    if sb is not None:
        sb.step()


def _assert_twins(a, oa, b, ob, what=""):
    """Bit-identical parameters and state tensors (NaN equal to NaN), the reference's state keys included."""
    for i, (p, q) in enumerate(zip(a, b)):
        assert torch.equal(p.isnan(), q.isnan()) and torch.equal(p.nan_to_num(), q.nan_to_num()), f"{what}{i}"
        sa, sb = oa.state.get(p, {}), ob.state.get(q, {})
        for k, v in sb.items():
            assert torch.equal(sa[k].nan_to_num(), v.nan_to_num()), f"{what}{i}: state[{k!r}]"


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
@pytest.mark.parametrize("rule, key", STATE_KEYS)
def test_a_state_tensor_of_the_wrong_size_is_refused_at_load(rule, key, size):
    a, _ = _twins(((3,),))
    opt = rule.make(a, SCHED)
    a[0].grad = torch.ones(3)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    assert key in sd["state"][0]
    sd["state"][0][key] = torch.zeros(size if size != 3 else (3, 1))
    snap = _snapshot(opt)
    with pytest.raises(ValueError, match=rf"param_groups\[0\] parameter 0: state\['{key}'\] has shape"):
        opt.load_state_dict(sd)
    _assert_unchanged(opt, snap)


@pytest.mark.parametrize("rule, key", STATE_KEYS)
def test_a_state_tensor_replaced_in_state_is_checked_at_the_step(rule, key):
    a, _ = _twins(((5,),))
    opt = rule.make(a, SCHED)
    a[0].grad = torch.ones(5)
    opt.step()
    opt.state[a[0]][key] = torch.zeros(2)
    snap = _snapshot(opt)
    with pytest.raises(ValueError, match=rf"state\['{key}'\] has shape"):
        opt.step()
    _assert_unchanged(opt, snap)


@FLAT
@EVERY_RULE
def test_parameter_and_gradient_sizes_are_compared(rule, flat):
    a, _ = _twins(((8,),))
    opt = rule.make(a, SCHED, flat=flat)
    a[0].grad = torch.ones(8)
    opt.step()
    a[0].grad = torch.ones(8)
    a[0].grad.set_(torch.ones(1))
    snap = _snapshot(opt)
    with pytest.raises(ValueError, match=r"parameter 0: gradient shape \(1,\) differs from the parameter's \(8,\)"):
        opt.step()
    _assert_unchanged(opt, snap)


@EVERY_RULE
def test_parameter_data_replaced_by_a_larger_tensor_is_refused(rule):
    a, _ = _twins(((8,),))
    opt = rule.make(a, SCHED)
    a[0].grad = torch.ones(8)
    opt.step()
    a[0].data = torch.ones(100_000)
    snap = _snapshot(opt)
    with pytest.raises(ValueError, match="gradient shape"):
        opt.step()
    _assert_unchanged(opt, snap)


@EVERY_RULE
def test_resized_gradient_in_place_is_noticed(rule):
    a, _ = _twins(((1000,),))
    opt = rule.make(a, SCHED)
    a[0].grad = torch.ones(1000)
    opt.step()
    a[0].grad.resize_(10)  # same object, same address, fewer elements
    snap = _snapshot(opt)
    with pytest.raises(ValueError, match="gradient shape"):
        opt.step()
    _assert_unchanged(opt, snap)


@FLAT
@EVERY_RULE
def test_meta_parameters_are_a_clear_error(rule, flat):
    p = torch.zeros(4, device="meta", requires_grad=True)
    with pytest.raises(ValueError, match=rf"param_groups\[0\] parameter 0: {rule.name} runs on CPU and CUDA tensors"):
        rule.make([p], SCHED, flat=flat)


@EVERY_RULE
def test_unsupported_dtypes_and_sparse_gradients_name_the_parameter(rule):
    with pytest.raises(TypeError, match=r"param_groups\[0\] parameter 1: .* got torch.complex64"):
        rule.make(
            [torch.zeros(2, requires_grad=True), torch.zeros(2, dtype=torch.complex64, requires_grad=True)], SCHED
        )
    with pytest.raises(TypeError, match=r"param_groups\[0\] parameter 0: .* got torch.int32"):
        rule.make([torch.zeros(3, dtype=torch.int32)], SCHED, flat=True)
    e = torch.nn.Embedding(10, 3, sparse=True)
    opt = rule.make(e.parameters(), SCHED)
    e(torch.tensor([1, 2])).sum().backward()
    snap = _snapshot(opt)
    with pytest.raises(ValueError, match="parameter 0: sparse gradients are not supported"):
        opt.step()
    _assert_unchanged(opt, snap)


@FLAT
@EVERY_RULE
def test_tied_parameters_are_refused_and_duplicates_kept_once(rule, flat):
    w = torch.randn(6, 4)
    p1 = torch.nn.Parameter(w)
    p2 = torch.nn.Parameter(w)  # another Parameter over the same storage
    with pytest.raises(ValueError, match="share memory"):
        rule.make([p1, p2], SCHED, flat=flat)
    half = torch.nn.Parameter(w[:3])
    with pytest.raises(ValueError, match="share memory"):
        rule.make([{"params": [p1]}, {"params": [half]}], SCHED, flat=flat)
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter group"):
        rule.make([{"params": [p1]}, {"params": [p1]}], SCHED, flat=flat)
    # torch warns and keeps both (its step then updates p1 twice); clrfast keeps one
    with pytest.warns(UserWarning, match="a parameter group with duplicate parameters"):
        opt = rule.make([p1, p1], SCHED, flat=flat)
    assert len(opt.param_groups[0]["params"]) == 1 and opt.param_groups[0]["params"][0] is p1


# ----------------------------------------------------------------------------- all or nothing
@pytest.mark.parametrize("rule, base", options())
def test_a_failed_first_step_creates_no_state(rule, base):
    (a0, a1), (b0, b1) = _twins(((3,), (2,)))
    oa = rule.make([a0, a1], clr.Constant(0.1), base=base)
    ob = rule.make_reference([b0, b1], 0.1, base=base)
    a0.grad = torch.ones(3)
    a1.grad = torch.ones(2)
    a1.grad.set_(torch.ones(1))  # the parameter after a0 is refused
    with pytest.raises(ValueError, match="parameter 1: gradient shape"):
        oa.step()
    assert not oa.state.get(a0) and not oa.state.get(a1)
    assert oa.param_groups[0]["step"] == 0
    a1.grad = None
    b0.grad, b1.grad = torch.ones(3), None
    for _ in range(3):
        oa.step()
        ob.step()
    _assert_twins([a0, a1], oa, [b0, b1], ob)
    assert not torch.equal(a0, _twins(((3,), (2,)))[0][0])  # the comparison is not between two untouched tensors


@EVERY_RULE
def test_multi_group_step_is_all_or_nothing(rule):
    a, _ = _twins(((3,), (4,)))
    opt = rule.make([{"params": [a[0]]}, {"params": [a[1]]}], SCHED)
    a[0].grad = torch.ones(3)
    a[1].grad = torch.ones(4)
    opt.step()
    a[1].grad = torch.ones(4)
    a[1].grad.set_(torch.ones(2))
    snap = _snapshot(opt)
    with pytest.raises(ValueError, match=r"param_groups\[1\] parameter 0: gradient shape"):
        opt.step()
    _assert_unchanged(opt, snap)


@EVERY_RULE
def test_flat_constructor_that_fails_on_a_later_group_moves_nothing(rule):
    a, _ = _twins(((3,), (4,)))
    for p in a:
        p.grad = torch.full(p.shape, 2.0)
    bad = [torch.zeros(2, requires_grad=True), torch.zeros(2, dtype=torch.float64, requires_grad=True)]
    ptrs = [(p.data_ptr(), p.grad.data_ptr()) for p in a]
    with pytest.raises(ValueError, match=r"param_groups\[1\]: flat=True needs one dtype"):
        rule.make([{"params": a}, {"params": bad}], SCHED, flat=True)
    assert [(p.data_ptr(), p.grad.data_ptr()) for p in a] == ptrs
    assert all(torch.equal(p.grad, torch.full(p.shape, 2.0)) for p in a)


@EVERY_RULE
def test_add_param_group_is_checked_before_anything_is_added(rule):
    a, _ = _twins(((3,),))
    opt = rule.make(a, SCHED)
    snap = _snapshot(opt)
    with pytest.raises(TypeError, match=r"param_groups\[1\]\['schedule'\] must be a clrfast schedule"):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], "schedule": "bogus"})
    with pytest.raises(ValueError, match=r"param_groups\[1\] sets lr=0.5 but follows a schedule"):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], "lr": 0.5})
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter group"):
        opt.add_param_group({"params": [a[0]]})
    key = next(iter(rule.hypers))
    with pytest.raises((TypeError, ValueError), match=rf"param_groups\[1\]\['{key}'\]"):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], key: "x"})
    _assert_unchanged(opt, snap)


LOAD_EDITS = [
    (lambda g: g.update(step=2**70), ValueError, r"\['step'\] must be < 2\*\*53"),
    (lambda g: g.update(step=-1), ValueError, r"\['step'\] must be >= 0"),
    (lambda g: g.update(schedule={"kind": "nope"}), ValueError, r"\['schedule'\]"),
    (lambda g: g.update(lr="fast"), TypeError, r"\['lr'\] must be a real number"),
]
BAD_LOADED = {"nonneg": float("nan"), "real": "x", "flag": "yes", "betas": 0.9}


@pytest.mark.parametrize("edit, exc, match", LOAD_EDITS)
@EVERY_RULE
def test_load_state_dict_checks_every_group_value(rule, edit, exc, match):
    a, _ = _twins()
    opt = rule.make(a, clr.Constant(0.1))
    for p in a:
        p.grad = torch.ones(p.shape)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    edit(sd["param_groups"][0])
    if match.startswith(r"\['lr'\]"):
        sd["param_groups"][0]["schedule"] = None
    snap = _snapshot(opt)
    with pytest.raises(exc, match=match):
        opt.load_state_dict(sd)
    _assert_unchanged(opt, snap)


@EVERY_RULE
def test_load_state_dict_checks_every_hyperparameter(rule):
    a, _ = _twins()
    opt = rule.make(a, clr.Constant(0.1))
    for p in a:
        p.grad = torch.ones(p.shape)
    opt.step()
    for key, kind in rule.hypers.items():
        sd = copy.deepcopy(opt.state_dict())
        sd["param_groups"][0][key] = BAD_LOADED[kind]
        snap = _snapshot(opt)
        with pytest.raises((TypeError, ValueError), match=rf"state_dict\['param_groups'\]\[0\]\['{key}'\]"):
            opt.load_state_dict(sd)
        _assert_unchanged(opt, snap)


@pytest.mark.parametrize(
    "edit, exc, match",
    [
        (lambda g: g.update(base_momentum="x"), TypeError, r"\['momentum'\] must be a real number"),
        (lambda g: g.update(momentum=float("nan")), ValueError, r"Invalid momentum value: nan \(.*\['momentum'\]"),
        (lambda g: g.update(nesterov="yes"), TypeError, r"\['nesterov'\] must be a bool"),
    ],
)
def test_load_state_dict_checks_clrsgds_own_values(edit, exc, match):
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
@EVERY_RULE
def test_per_group_options_are_honoured(rule):
    # group 0 takes the class defaults, group 1 its own options
    a, b = _twins(((3,), (4,)))
    own = rule.options[1]
    oa = rule.make([{"params": [a[0]]}, {"params": [a[1]], **own}], SCHED, base={})
    ob, sb = _reference(rule, [{"params": [b[0]]}, {"params": [b[1]], **own}], base={})
    for t in range(20):
        _step_both(a, oa, b, ob, sb, t)
    assert all(oa.param_groups[1][k] == v for k, v in own.items())
    _assert_twins(a, oa, b, ob)


@EVERY_RULE
@pytest.mark.parametrize("grads", ["contiguous", "as the parameter"])
def test_transposed_parameters_match_the_reference(rule, grads):
    # torch's fused kernel (the Adam rules' default reference) walks memory and pairs elements by
    # address: right for gradients laid out as their parameter, wrong for contiguous ones beside a
    # transposed parameter, whose oracle is then its step on a contiguous copy of the parameter
    fused = bool(_reference(rule, [torch.nn.Parameter(torch.zeros(1))])[0].defaults.get("fused"))
    g = torch.Generator().manual_seed(3)
    base = torch.randn(5, 4, generator=g)
    a = [torch.nn.Parameter(base.clone().t()), torch.nn.Parameter(torch.randn(6, generator=g))]
    dense = fused and grads == "contiguous"
    b = [torch.nn.Parameter(a[0].detach().contiguous() if dense else a[0].detach().clone().t().contiguous().t())]
    b.append(torch.nn.Parameter(a[1].detach().clone()))
    assert not a[0].is_contiguous()
    oa = rule.make(a, SCHED)
    ob, sb = _reference(rule, b)
    for t in range(15):
        for p, q, gr in zip(a, b, _grads(a, t)):
            p.grad, q.grad = (torch.empty_like(x).copy_(gr) if grads != "contiguous" else gr.clone() for x in (p, q))
        oa.step()
        ob.step()
        if sb is not None:
            sb.step()
    _assert_twins(a, oa, b, ob)


# torch's Adam and RMSprop raise in the middle of a parameter's update when its state is float32 and the
# parameter float64 (lerp_/addcmul_ refuse the mix); clrfast hands such a parameter to torch's code, and
# the same error comes before anything changed
@EVERY_RULE
def test_model_converted_to_float64_after_construction_follows_the_reference(rule):
    torch.manual_seed(0)
    net_a = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    net_b = copy.deepcopy(net_a)
    oa = rule.make(net_a.parameters(), SCHED)
    ob, sb = _reference(rule, net_b.parameters())
    x = torch.randn(8, 4)
    for t in range(10):
        if t == 4:
            net_a.double()
            net_b.double()
            x = x.double()
        oa.zero_grad()
        ob.zero_grad()
        net_a(x * (t + 1)).pow(2).mean().backward()
        net_b(x * (t + 1)).pow(2).mean().backward()
        try:
            ob.step()
        except RuntimeError as e:  # the reference refuses the mix: the same error, and nothing changed
            snap = _snapshot(oa)
            with pytest.raises(RuntimeError, match=re.escape(str(e))):
                oa.step()
            _assert_unchanged(oa, snap)
            return
        oa.step()
        sb.step()
        _assert_twins(list(net_a.parameters()), oa, list(net_b.parameters()), ob, f"step {t}: ")
    key = rule.state_keys[0]
    assert oa.state[net_a[0].weight][key].dtype == ob.state[net_b[0].weight][key].dtype


@EVERY_RULE
def test_nan_and_inf_gradients_propagate_as_in_the_reference(rule):
    a, b = _twins(((6,),))
    oa = rule.make(a, SCHED)
    ob, sb = _reference(rule, b)
    for t in range(4):
        g = _grads(a, t)[0]
        if t == 1:
            g[0], g[1] = float("nan"), float("inf")
        a[0].grad, b[0].grad = g.clone(), g.clone()
        oa.step()
        ob.step()
        sb.step()
    assert any(not t.isfinite().all() for t in (a[0], *oa.state[a[0]].values()) if t.dim())  # it got in
    _assert_twins(a, oa, b, ob)


@EVERY_RULE
def test_flat_mode_skips_parameters_without_gradients_after_zero_grad(rule):
    torch.manual_seed(1)
    net_a = torch.nn.ModuleDict({"used": torch.nn.Linear(4, 2), "unused": torch.nn.Linear(4, 2)})
    net_b = copy.deepcopy(net_a)
    oa = rule.make(net_a.parameters(), SCHED, flat=True)
    ob, sb = _reference(rule, net_b.parameters())
    for t in range(12):
        x = torch.randn(5, 4)
        for net, opt in ((net_a, oa), (net_b, ob)):
            opt.zero_grad()
            head = "unused" if t < 2 else "used"  # the 'unused' layer gets gradients only at first
            net[head](x).pow(2).sum().backward()
            opt.step()
        sb.step()
        _assert_twins(list(net_a.parameters()), oa, list(net_b.parameters()), ob, f"step {t}: ")


# ----------------------------------------------------------------------------- torch's optimizer protocol
@FLAT
@EVERY_RULE
def test_deepcopy_and_pickle_give_a_working_optimizer(rule, flat):
    torch.manual_seed(2)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = rule.make(net.parameters(), MOMENTUM_SCHED, flat=flat)
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
        _assert_twins(list(net.parameters()), opt, list(n.parameters()), o)
        assert o.param_groups[0]["step"] == 8 and o.param_groups[0]["flat"] == flat
        assert rule.shown(o.param_groups[0]) == rule.shown(opt.param_groups[0])
    deep = copy.deepcopy(opt)  # the optimizer alone: its own parameter copies
    deep.zero_grad()
    deep.step()


@FLAT
@pytest.mark.parametrize("fused_unscale", [False, True], ids=["torch-unscale", "fused-unscale"])
@EVERY_RULE
def test_gradscaler_skip_keeps_the_clock_and_matches_the_reference(rule, fused_unscale, flat):
    a, b = _twins(((37,), (64, 3), (5, 1, 3, 3)))
    oa = rule.make(a, SCHED, flat=flat)
    oa.fused_unscale = fused_unscale  # GradScaler unscales, or hands the scale to the step
    ob, sb = _reference(rule, b)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(torch.ones(()))  # initialises the scale, as scaling the first loss does
    applied = 0
    for t in range(12):
        gs = _grads(a, t)
        for p, g in zip(a, gs):
            p.grad = g * scaler.get_scale()
        bad = t in (3, 8)
        if bad:
            a[0].grad[0] = float("inf")
            before = [p.detach().clone() for p in a]
        scaler.step(oa)
        scaler.update()
        if bad:
            assert all(torch.equal(p, q) for p, q in zip(a, before))
        else:
            for q, g in zip(b, gs):
                q.grad = g.clone()
            ob.step()
            sb.step()
            applied += 1
        assert oa.param_groups[0]["step"] == applied
        assert oa.param_groups[0]["lr"] == ob.param_groups[0]["lr"]
    _assert_twins(a, oa, b, ob)


@EVERY_RULE
def test_add_param_group_shows_its_own_lr_and_is_flat_when_asked(rule):
    (a,), (b,) = _twins(((3,),))
    opt = rule.make([a], SCHED, flat=True)
    new, twin = torch.zeros(5, requires_grad=True), torch.zeros(5, requires_grad=True)
    opt.add_param_group({"params": [new], "schedule": clr.Constant(0.25)})
    assert opt.param_groups[1]["lr"] == 0.25 and opt.param_groups[1]["flat"]
    assert 1 in opt._flat and new.data_ptr() == opt._flat[1].param.data_ptr()
    ref = rule.make_reference([twin], 0.25)
    for t in range(3):
        new.grad, twin.grad = torch.full((5,), 1.0 - t), torch.full((5,), 1.0 - t)
        a.grad = torch.ones(3)
        opt.step()
        ref.step()
    assert not torch.equal(new, torch.zeros(5))
    _assert_twins([new], opt, [twin], ref)


@EVERY_RULE
def test_param_groups_show_the_next_updates_values_as_torch(rule):
    a, b = _twins()
    oa = rule.make(a, MOMENTUM_SCHED)
    ob, sb = _reference(rule, b, cycle_momentum=True)
    seen = set()
    for t in range(12):
        assert [rule.shown(g) for g in oa.param_groups] == [rule.shown(g) for g in ob.param_groups], t
        assert oa.get_last_lr() == sb.get_last_lr()
        seen.add(rule.shown(oa.param_groups[0]))
        _step_both(a, oa, b, ob, sb, t)
    assert len(seen) > 5
    _assert_twins(a, oa, b, ob)


@EVERY_RULE
def test_a_torch_scheduler_drives_the_optimizer_without_a_schedule(rule):
    a, b = _twins()
    oa = rule.make(a, 0.05)
    ob = rule.make_reference(b, 0.05)
    warm = lambda k: min(1.0, k / 4) * 0.5 ** (k // 6)  # noqa: E731  (the shape of transformers' factories)
    sa = torch.optim.lr_scheduler.LambdaLR(oa, warm)
    sb = torch.optim.lr_scheduler.LambdaLR(ob, warm)
    for t in range(20):
        _step_both(a, oa, b, ob, sb, t)
        sa.step()
        assert oa.param_groups[0]["lr"] == ob.param_groups[0]["lr"]
    _assert_twins(a, oa, b, ob)


@EVERY_RULE
def test_a_write_to_a_scheduled_group_is_applied_to_the_next_update_only(rule):
    a, b = _twins(((3,),))
    oa = rule.make(a, clr.Constant(0.1))
    ob = rule.make_reference(b, 0.5)
    oa.param_groups[0]["lr"] = 0.5  # e.g. a warm-up hook of another library
    for t in range(3):
        _step_both(a, oa, b, ob, None, t)
        assert oa.param_groups[0]["lr"] == 0.1  # the schedule's value for the update after
        ob.param_groups[0]["lr"] = 0.1
        _assert_twins(a, oa, b, ob, f"step {t}: ")


@EVERY_RULE
def test_a_reference_state_dict_loads_into_a_scheduled_optimizer(rule):
    a, b = _twins()
    ob = rule.make_reference(b, 0.05, base=rule.options[1])
    for p in b:
        p.grad = torch.ones(p.shape)
    ob.step()
    oa = rule.make(a, SCHED)
    with torch.no_grad():
        for p, q in zip(a, b):
            p.copy_(q)
    oa.load_state_dict(copy.deepcopy(ob.state_dict()))
    g = oa.param_groups[0]
    # the reference's values apply to the next update, then the schedule takes over
    assert g["step"] == 0 and g["lr"] == 0.05 and g["schedule"] == SCHED
    assert all(g[k] == v for k, v in ob.param_groups[0].items() if k in rule.hypers)
    _step_both(a, oa, b, ob, None, 0)
    _assert_twins(a, oa, b, ob)
    assert g["lr"] == SCHED.lr(1)


@EVERY_RULE
def test_a_reference_state_dict_saved_under_cycliclr_keeps_its_momentum(rule):
    # torch's CyclicLR(cycle_momentum=True) writes base_momentum and max_momentum into every group; the
    # saved momentum (beta1) is what the next update applies, as when torch loads it
    a, b = _twins()
    ob, sb = _reference(rule, b, cycle_momentum=True)
    for t in range(2):
        for q, g in zip(b, _grads(b, t)):
            q.grad = g
        ob.step()
        sb.step()
    saved = rule.momentum_of(ob.param_groups[0])
    assert saved not in (0.8, 0.9)  # mid-cycle
    oa = rule.make(a, SCHED)  # a schedule without momentum: the loaded value stays
    oa.load_state_dict(copy.deepcopy(ob.state_dict()))
    g = oa.param_groups[0]
    assert rule.momentum_of(g) == saved
    assert "momentum" in rule.hypers or "momentum" not in g  # no key the rule does not have


def test_a_clrfast_0_1_state_dict_keeps_its_constant_momentum():
    # clrfast 0.1 saved CLRSGD's constant momentum as 'base_momentum' beside the group's schedule
    a, b = _twins()
    old = CLRSGD(a, SCHED, momentum=0.9)
    sd = copy.deepcopy(old.state_dict())
    g = sd["param_groups"][0]
    del g["momentum"]
    g["base_momentum"] = 0.7
    opt = CLRSGD(b, SCHED, momentum=0.9)
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["momentum"] == 0.7 and "base_momentum" not in opt.param_groups[0]


@EVERY_RULE
def test_onecycle_groups_past_the_end_keep_showing_the_last_values(rule):
    a, _ = _twins(((3,),))
    s = clr.OneCycle(0.1, total_steps=3)
    opt = rule.make(a, s)
    for _ in range(4):
        a[0].grad = torch.ones(3)
        opt.step()
    assert opt.param_groups[0]["step"] == 4
    assert opt.param_groups[0]["lr"] == s.lr(3)
    snap = _snapshot(opt)
    with pytest.raises(ValueError, match="Tried to step 4 times"):
        opt.step()
    _assert_unchanged(opt, snap)


@EVERY_RULE
def test_the_follow_scheduler_changes_nothing_and_reports_the_applied_lr(rule):
    a, b = _twins()
    oa, ob = rule.make(a, MOMENTUM_SCHED), rule.make(b, MOMENTUM_SCHED)
    follow = oa.scheduler()
    for t in range(12):
        assert follow.get_last_lr() == [MOMENTUM_SCHED.lr(t)]
        for p, q, g in zip(a, b, _grads(a, t)):
            p.grad, q.grad = g.clone(), g.clone()
        oa.step()
        follow.step()
        ob.step()
    _assert_twins(a, oa, b, ob)


def test_the_registry_covers_every_fused_optimizer():
    import clrfast.torch as ct
    from clrfast.torch._fused import FusedOptimizer

    fused = {n for n in ct.__all__ if isinstance(getattr(ct, n), type) and issubclass(getattr(ct, n), FusedOptimizer)}
    assert fused - set(UNLISTED) == set(RULES)
    for rule in RULES.values():
        assert set(rule.state_keys) <= set(rule.cls._state_keys)
        assert rule.step_state == ("step" in rule.cls._scalar_keys)


@pytest.mark.parametrize("rule", where(lambda r: not r.tensor_lr))
def test_a_reference_without_tensor_lr_parity_really_differs(rule):
    # the registry's tensor_lr=False is a fact about the reference, not a skipped comparison
    (a,), (b,) = _twins(((64,),), dtype=torch.float64)  # the reference's float32 0-d ops show in a float64 model
    oa = rule.make([a], None, lr=torch.tensor(0.01, dtype=torch.float32), over=dict(weight_decay=0.3))
    ob = rule.make_reference([b], torch.tensor(0.01, dtype=torch.float32), over=dict(weight_decay=0.3))
    for t in range(5):
        _step_both([a], oa, [b], ob, None, t)
    assert not torch.equal(a, b)
