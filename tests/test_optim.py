"""CLRSGD against torch.optim.SGD + torch's schedulers, bit for bit."""

import copy
import io

import pytest

torch = pytest.importorskip("torch")

import clrfast as clr  # noqa: E402
from clrfast.torch import CLRSGD  # noqa: E402

SHAPES = [(37,), (64, 3), (1000,), (5, 1, 3, 3)]


def _params(dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64).to(dtype).requires_grad_() for s in SHAPES]


def _grads(ps, t):
    g = torch.Generator().manual_seed(1000 + t)
    return [torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) for p in ps]


def _run(ps, opt, steps, sched=None, start=0):
    for t in range(start, start + steps):
        for p, g in zip(ps, _grads(ps, t)):
            p.grad = g
        opt.step()
        if sched is not None:
            sched.step()


def _torch_pair(ps, cycle_momentum=False, foreach=False, **kw):
    opt = torch.optim.SGD(ps, lr=0.01, foreach=foreach, **kw)
    sch = torch.optim.lr_scheduler.CyclicLR(
        opt,
        0.01,
        0.1,
        step_size_up=20,
        step_size_down=13,
        cycle_momentum=cycle_momentum,
        base_momentum=0.8,
        max_momentum=0.9,
    )
    return opt, sch


CONFIGS = [
    dict(momentum=0.9, weight_decay=5e-4),
    dict(momentum=0.9, weight_decay=1e-2, nesterov=True),
    dict(momentum=0.5, dampening=0.3, maximize=True),
    dict(weight_decay=1e-3),
    dict(),
]


@pytest.mark.parametrize("kw", CONFIGS)
@pytest.mark.parametrize("foreach", [False, True])
def test_float32_bit_identical_to_torch_sgd_cycliclr(kw, foreach):
    a, b = _params(), _params()
    _run(a, CLRSGD(a, clr.Cyclic(0.01, 0.1, step_size_up=20, step_size_down=13), **kw), 2000)
    o, sc = _torch_pair(b, foreach=foreach, **kw)
    _run(b, o, 2000, sched=sc)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


@pytest.mark.parametrize("flat", [False, True])
def test_scheduled_momentum_matches_cycliclr_momentum(flat):
    a, b = _params(), _params()
    s = clr.Cyclic(0.01, 0.1, step_size_up=20, step_size_down=13, base_momentum=0.8, max_momentum=0.9)
    opt = CLRSGD(a, s, weight_decay=5e-4, flat=flat)
    topt, tsch = _torch_pair(b, cycle_momentum=True, momentum=0.9, weight_decay=5e-4)
    for t in range(300):
        for p, q, g in zip(a, b, _grads(a, t)):
            p.grad = g.clone()
            q.grad = g.clone()
        assert (opt.param_groups[0]["momentum"], opt.param_groups[0]["lr"]) == (
            topt.param_groups[0]["momentum"],
            topt.param_groups[0]["lr"],
        )
        opt.step()
        topt.step()
        tsch.step()
        # torch's convention: after a step the group shows the next step's values
        assert (opt.param_groups[0]["momentum"], opt.param_groups[0]["lr"]) == (
            topt.param_groups[0]["momentum"],
            topt.param_groups[0]["lr"],
        )
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_float64_bit_identical():
    a, b = _params(torch.float64), _params(torch.float64)
    kw = dict(momentum=0.9, weight_decay=5e-4, nesterov=True)
    _run(a, CLRSGD(a, clr.Cyclic(0.01, 0.1, step_size_up=20, step_size_down=13), **kw), 500)
    o, sc = _torch_pair(b, **kw)
    _run(b, o, 500, sched=sc)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def _lowp_oracle_step(p, g, buf, lr, m, wd, first):
    """Reduced-precision rule of torch's fused kernel: float32 math, one rounding on store.

    The float32 step is torch's own foreach SGD on upcast copies.
    """
    pf = p.detach().float().clone().requires_grad_()
    pf.grad = g.float()
    o = torch.optim.SGD([pf], lr=lr, momentum=m, weight_decay=wd, foreach=True)
    if not first:
        o.state[pf]["momentum_buffer"] = buf.float().clone()
    o.step()
    return pf.detach().to(p.dtype), o.state[pf]["momentum_buffer"].to(p.dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_rule(dtype):
    ps = _params(dtype)
    s = clr.Cyclic(0.01, 0.1, step_size_up=7)
    opt = CLRSGD(ps, s, momentum=0.9, weight_decay=5e-4)
    ref = [(p.detach().clone(), None) for p in ps]
    for t in range(50):
        gs = _grads(ps, t)
        for p, g in zip(ps, gs):
            p.grad = g
        opt.step()
        ref = [_lowp_oracle_step(rp, g, rb, s.lr(t), 0.9, 5e-4, t == 0) for (rp, rb), g in zip(ref, gs)]
        for p, (rp, rb) in zip(ps, ref):
            assert torch.equal(p.detach(), rp)
            assert torch.equal(opt.state[p]["momentum_buffer"], rb)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_matches_torch_fused_tail(dtype):
    # torch 2.13's CPU fused kernel only writes reduced-precision parameters in
    # its scalar tail (the last numel % 16 elements); compare those.
    n = 15  # all tail
    ps = [torch.randn(n, dtype=torch.float64).to(dtype).requires_grad_() for _ in range(40)]
    qs = [p.detach().clone().requires_grad_() for p in ps]
    opt = CLRSGD(ps, clr.Constant(0.05), momentum=0.9, weight_decay=1e-2)
    topt = torch.optim.SGD(qs, lr=0.05, momentum=0.9, weight_decay=1e-2, fused=True)
    # One step: later steps differ in rare last bits, because torch's scalar tail
    # contracts m*buf + g into one FMA where foreach rounds m*buf first.
    for _ in range(1):
        for p, q in zip(ps, qs):
            p.grad = torch.randn(n, dtype=torch.float64).to(dtype)
            q.grad = p.grad.clone()
        opt.step()
        topt.step()
    for p, q in zip(ps, qs):
        assert torch.equal(p.detach(), q.detach())
        assert torch.equal(opt.state[p]["momentum_buffer"], topt.state[q]["momentum_buffer"])


def test_flat_mode_matches_list_mode_and_rebinds_replaced_grads():
    a, b = _params(), _params()
    s = clr.Cyclic(0.01, 0.1, step_size_up=20)
    oa = CLRSGD(a, s, momentum=0.9, weight_decay=5e-4, flat=True)
    ob = torch.optim.SGD(b, lr=0.01, momentum=0.9, weight_decay=5e-4)
    sb = torch.optim.lr_scheduler.CyclicLR(ob, 0.01, 0.1, step_size_up=20, cycle_momentum=False)
    for t in range(60):
        gs = _grads(a, t)
        for p, q, g in zip(a, b, gs):
            if t % 3 == 0 or p.grad is None:
                p.grad = g.clone()  # replaced tensor: must be re-bound, not ignored
            else:
                p.grad.copy_(g)
            q.grad = g.clone()
        if t % 10 == 5:  # a parameter without gradient is skipped, as in torch
            a[1].grad = None
            b[1].grad = None
        oa.step()
        ob.step()
        sb.step()
        for x, y in zip(a, b):
            assert torch.equal(x, y)


def test_params_without_grad_are_skipped():
    a, b = _params(), _params()
    oa = CLRSGD(a, clr.Constant(0.1), momentum=0.9)
    ob = torch.optim.SGD(b, lr=0.1, momentum=0.9)
    for t in range(5):
        for i, (p, q, g) in enumerate(zip(a, b, _grads(a, t))):
            p.grad = g.clone() if (i + t) % 2 else None
            q.grad = p.grad
        oa.step()
        ob.step()
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert set(oa.state) == {p for p in a if p in oa.state and "momentum_buffer" in oa.state[p]}


@pytest.mark.parametrize("flat", [False, True])
def test_resume_mid_cycle_is_bit_identical(flat):
    s = clr.Cyclic(0.01, 0.1, step_size_up=20, base_momentum=0.8, max_momentum=0.9)
    a = _params()
    oa = CLRSGD(a, s, weight_decay=5e-4, flat=flat)
    _run(a, oa, 37)
    blob = io.BytesIO()
    torch.save({"p": [p.detach().clone() for p in a], "o": oa.state_dict()}, blob)
    _run(a, oa, 40, start=37)
    blob.seek(0)
    saved = torch.load(blob, weights_only=False)
    b = [p.clone().requires_grad_() for p in saved["p"]]
    ob = CLRSGD(b, clr.Constant(1.0), flat=flat)
    ob.load_state_dict(saved["o"])
    assert ob.param_groups[0]["schedule"] == s and ob.param_groups[0]["step"] == 37
    _run(b, ob, 40, start=37)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_torch_sgd_state_dict_round_trip():
    a, b = _params(), _params()
    ta = torch.optim.SGD(a, lr=0.05, momentum=0.9)
    _run(a, ta, 5)
    oa = CLRSGD(b, clr.Constant(0.05), momentum=0.9)
    with torch.no_grad():
        for p, q in zip(a, b):
            q.copy_(p)
    oa.load_state_dict(copy.deepcopy(ta.state_dict()))  # a live state_dict aliases the buffers
    for p, q in zip(a, b):
        assert torch.equal(oa.state[q]["momentum_buffer"], ta.state[p]["momentum_buffer"])
    _run(a, ta, 5, start=5)
    _run(b, oa, 5, start=5)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    back = torch.optim.SGD(_params(), lr=0.05, momentum=0.9)
    back.load_state_dict(oa.state_dict())
    assert all(
        torch.equal(back.state[p]["momentum_buffer"], oa.state[q]["momentum_buffer"])
        for p, q in zip(back.param_groups[0]["params"], b)
    )


def test_onecycle_past_total_steps_raises_and_changes_nothing():
    a = _params()
    opt = CLRSGD(a, clr.OneCycle(0.1, total_steps=3))
    _run(a, opt, 4)  # steps 0..total_steps are valid, as in torch
    before = [p.detach().clone() for p in a]
    for p, g in zip(a, _grads(a, 9)):
        p.grad = g
    with pytest.raises(ValueError, match="Tried to step 4 times"):
        opt.step()
    assert all(torch.equal(x, y) for x, y in zip(a, before))
    assert opt.param_groups[0]["step"] == 4


def test_lr_visible_and_get_last_lr():
    s = clr.Cyclic(0.01, 0.1, step_size_up=4)
    a = _params()
    opt = CLRSGD(a, s)
    assert opt.get_last_lr() == [s.lr(0)]
    _run(a, opt, 3)
    assert opt.get_last_lr() == [s.lr(3)] and opt.param_groups[0]["lr"] == s.lr(3)


def test_per_group_schedules():
    a, b = _params(), _params()
    s1, s2 = clr.Cyclic(0.01, 0.1, step_size_up=20, step_size_down=13), clr.Constant(0.03)
    opt = CLRSGD([{"params": a[:2]}, {"params": a[2:], "schedule": s2}], s1, momentum=0.9)
    to = torch.optim.SGD([{"params": b[:2]}, {"params": b[2:]}], lr=0.01, momentum=0.9)
    ts = torch.optim.lr_scheduler.CyclicLR(
        to, [0.01, 0.03], [0.1, 0.03], step_size_up=20, step_size_down=13, cycle_momentum=False
    )
    _run(a, opt, 50)
    _run(b, to, 50, sched=ts)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_bad_input():
    a = _params()
    with pytest.raises(TypeError, match="schedule"):
        CLRSGD(a, "0.1")
    with pytest.raises(ValueError, match="momentum"):
        CLRSGD(a, clr.Constant(0.1), momentum=-1)
    with pytest.raises(ValueError, match="Nesterov"):
        CLRSGD(a, clr.Constant(0.1), nesterov=True)
    with pytest.raises(ValueError, match="threads"):
        CLRSGD(a, clr.Constant(0.1), threads=0)
    e = torch.nn.Embedding(10, 3, sparse=True)
    opt = CLRSGD(e.parameters(), clr.Constant(0.1))
    e(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ValueError, match="sparse"):
        opt.step()
    q = torch.zeros(3, dtype=torch.int32)
    with pytest.raises(TypeError, match="int32"):
        CLRSGD([q], clr.Constant(0.1), flat=True)
    with pytest.raises(ValueError, match="one dtype"):
        CLRSGD(
            [torch.zeros(2, requires_grad=True), torch.zeros(2, dtype=torch.float64, requires_grad=True)],
            clr.Constant(0.1),
            flat=True,
        )


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_split_large_workload_exactly(threads):
    g = torch.Generator().manual_seed(0)
    a = [torch.randn(300_001, generator=g).requires_grad_(), torch.randn(70_003, generator=g).requires_grad_()]
    b = [p.detach().clone().requires_grad_() for p in a]
    oa = CLRSGD(a, clr.Constant(0.05), momentum=0.9, weight_decay=1e-3, threads=threads)
    ob = torch.optim.SGD(b, lr=0.05, momentum=0.9, weight_decay=1e-3)
    _run(a, oa, 3)
    _run(b, ob, 3)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_replaced_param_storage_is_followed_in_list_mode():
    a, b = _params(), _params()
    kw = dict(momentum=0.9, weight_decay=5e-4)
    opt_a = CLRSGD(a, clr.Cyclic(0.01, 0.1, step_size_up=20, step_size_down=13), **kw)
    opt_b, sch_b = _torch_pair(b, **kw)
    _run(a, opt_a, 5)
    _run(b, opt_b, 5, sched=sch_b)
    old = a[1].data
    for p in (a[1], b[1]):
        p.data = p.data.clone()  # new storage, as model.to()/.half() conversions do
    _run(a, opt_a, 5, start=5)
    _run(b, opt_b, 5, sched=sch_b, start=5)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(old, a[1].data)  # the update went to the new storage only


@pytest.mark.parametrize("flat", [False, True])
def test_model_conversion_after_construction_follows_torch(flat):
    # model.double() after the first step: new float64 parameters and gradients, float32 buffers
    # (torch keeps them and computes each update in the wider type); flat groups follow the
    # parameters out of their flat storage
    torch.manual_seed(0)
    net_a = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    net_b = copy.deepcopy(net_a)
    opt_a = CLRSGD(net_a.parameters(), clr.Cyclic(0.01, 0.1, step_size_up=20), momentum=0.9, flat=flat)
    opt_b = torch.optim.SGD(net_b.parameters(), lr=0.01, momentum=0.9, foreach=False)
    sch_b = torch.optim.lr_scheduler.CyclicLR(opt_b, 0.01, 0.1, step_size_up=20, cycle_momentum=False)
    x = torch.randn(8, 4)
    for t in range(6):
        if t == 2:
            net_a.double()
            net_b.double()
            x = x.double()
        for net, opt in ((net_a, opt_a), (net_b, opt_b)):
            opt.zero_grad()
            net(x).sum().backward()
            opt.step()
        sch_b.step()
        for p, q in zip(net_a.parameters(), net_b.parameters()):
            assert p.dtype == q.dtype and torch.equal(p, q), t
            assert torch.equal(opt_a.state[p]["momentum_buffer"], opt_b.state[q]["momentum_buffer"])


@pytest.mark.parametrize("zero", ["module_set_to_none", "optimizer", "module_zero"])
def test_flat_mode_follows_real_backward_with_any_zero_grad(zero):
    torch.manual_seed(0)
    net_a = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    net_b = copy.deepcopy(net_a)
    sched = clr.Cyclic(0.01, 0.1, step_size_up=7)
    opt_a = CLRSGD(net_a.parameters(), sched, momentum=0.9, weight_decay=1e-3, flat=True)
    opt_b = torch.optim.SGD(net_b.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-3)
    sch_b = torch.optim.lr_scheduler.CyclicLR(opt_b, 0.01, 0.1, step_size_up=7, cycle_momentum=False)
    for t in range(40):
        x = torch.randn(16, 6)
        for net, opt in ((net_a, opt_a), (net_b, opt_b)):
            if zero == "module_set_to_none":
                net.zero_grad(set_to_none=True)
            elif zero == "module_zero":
                net.zero_grad(set_to_none=False)
            else:
                opt.zero_grad()
            net(x).pow(2).mean().backward()
            opt.step()
        sch_b.step()
        for p, q in zip(net_a.parameters(), net_b.parameters()):
            assert torch.equal(p, q), (zero, t)
