"""The per-step check of a cached plan (``_core.StepCheck``), against each rule's reference (optim_registry).

Each test first runs a few steps, so the plan is cached and later steps go through the C++
check, then changes something between steps the way user code can. The check is the engine's,
shared by every rule: what depends on a rule's state runs on every rule, the rest on CLRSGD.
Every test runs twice: with the guard (torch's TensorGuards, one C++ call over every tensor)
deciding the layouts, and with the per-tensor reads alone, as on a torch without that guard.
"""

import gc
import re
import weakref

import pytest

torch = pytest.importorskip("torch")

import clrfast as clr  # noqa: E402
from clrfast.torch import CLRSGD, _plan  # noqa: E402
from optim_registry import RULES, params, where  # noqa: E402

SGD = RULES["CLRSGD"]
LR = 0.05


@pytest.fixture(autouse=True, params=["guard", "per-tensor"])
def guard(request, monkeypatch):
    """Which check decides the layouts: the guard where this torch has one, else the per-tensor reads."""
    if request.param == "per-tensor":
        monkeypatch.setattr(_plan, "_TENSOR_GUARDS", None)
    else:
        assert _plan._TENSOR_GUARDS is not None  # this torch's TensorGuards passed the probe
    return request.param


def bits(t):
    t = t.detach().resolve_neg()  # the values, whatever view bit they are read through
    return t.view({torch.float32: torch.int32, torch.float64: torch.int64}[t.dtype])


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(bits(a), bits(b))


def _pair(rule, shapes, flat=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    return a, rule.make(a, clr.Constant(LR), flat=flat), b, rule.make_reference(b, LR)


def _grads(ps, t):
    g = torch.Generator().manual_seed(1000 + t)
    return [torch.randn(p.shape, generator=g) for p in ps]


def _step(a, oa, b, ob, t, set_to_none=True):
    oa.zero_grad(set_to_none)
    ob.zero_grad(set_to_none)
    for p, q, g in zip(a, b, _grads(a, t)):
        if p.grad is None:
            p.grad, q.grad = g.clone(), g.clone()
        else:
            p.grad.add_(g)
            q.grad.add_(g)
    oa.step()
    ob.step()


def _assert_same(a, oa, b, ob):
    for p, q in zip(a, b):
        assert same(p, q), (p, q)
        for k, v in ob.state[q].items():
            if isinstance(v, torch.Tensor) and v.dim():
                assert same(oa.state[p][k], v), k


@pytest.mark.parametrize("rule", params())
@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("set_to_none", [True, False])
def test_a_training_loop_stays_on_torchs_numbers(rule, flat, set_to_none, guard):
    a, oa, b, ob = _pair(rule, [(5, 3), (3,), (4, 4), ()], flat=flat)
    for t in range(12):
        _step(a, oa, b, ob, t, set_to_none)
        _assert_same(a, oa, b, ob)
    check = oa._plans[0].check
    assert check is not None  # the cached plan's check ran
    assert check.guarded == (guard == "guard")  # and the guard, where there is one, never said no


@pytest.mark.parametrize("rule", params())
def test_the_plan_keeps_no_gradient_alive(rule):
    # the check remembers gradients weakly: last step's gradients are freed by zero_grad, not
    # kept through the next forward and backward
    a, oa, b, ob = _pair(rule, [(64,), (8, 8)])
    refs = []
    for t in range(3):
        _step(a, oa, b, ob, t)
        refs += [weakref.ref(p.grad) for p in a]  # the first step's were checked by the full path
    oa.zero_grad()
    gc.collect()
    assert all(r() is None for r in refs)


@pytest.mark.parametrize("flat", [False, True])
def test_a_new_gradient_with_another_layout_takes_torchs_code(flat):
    # legal in torch: a transposed gradient for a contiguous parameter
    a, oa, b, ob = _pair(SGD, [(4, 4), (3,)], flat=flat)
    for t in range(3):
        _step(a, oa, b, ob, t)
    g = torch.randn(4, 4).t()
    a[0].grad, b[0].grad = g.clone().t().contiguous().t(), g.clone().t().contiguous().t()
    assert not a[0].grad.is_contiguous()
    oa.step()
    ob.step()
    _assert_same(a, oa, b, ob)
    for t in range(3, 6):
        _step(a, oa, b, ob, t)
        _assert_same(a, oa, b, ob)


@pytest.mark.parametrize("flat", [False, True])
def test_a_new_gradient_over_memory_the_step_writes_is_refused(flat):
    a, oa, b, ob = _pair(SGD, [(6,), (6,)], flat=flat)
    for t in range(3):
        _step(a, oa, b, ob, t)
    before = [p.detach().clone() for p in a]
    buf = oa.state[a[1]]["momentum_buffer"].clone()
    a[0].grad = a[1].detach()  # the other parameter's memory, which the step writes
    with pytest.raises(ValueError, match="share memory"):
        oa.step()
    assert all(torch.equal(p, q) for p, q in zip(a, before))
    assert torch.equal(oa.state[a[1]]["momentum_buffer"], buf)
    assert oa.param_groups[0]["step"] == 3


def test_gradients_shared_by_two_parameters_are_read_like_torch():
    # reading one gradient tensor for two parameters is harmless; only memory the step writes must be apart
    a, oa, b, ob = _pair(SGD, [(6,), (6,)])
    for t in range(5):
        g = torch.randn(6)
        a[0].grad = a[1].grad = g.clone() if t != 2 else None  # one shared, then two apart: the guard's
        h = g.clone() if t != 2 else None  # objects are distinct when it is armed, shared after
        b[0].grad = b[1].grad = h
        if t == 2:
            a[0].grad, a[1].grad = g.clone(), g.clone()
            b[0].grad, b[1].grad = g.clone(), g.clone()
        oa.step()
        ob.step()
        _assert_same(a, oa, b, ob)
    assert not oa._plans[0].check.guarded  # it said no to the shared object; the per-tensor reads said yes


# A tensor of one of the step's rows changed between steps so that its memory no longer holds its
# values as the kernel reads them (a view bit), or its layout at the same address. clrfast is given
# the changed tensor, the reference a dense tensor with the same values: torch's fused Adam refuses
# the view bits and walks a transposed tensor's memory in its own order, where its for-loop takes
# both. ``when``: the step before which the change is made (0: before the plan is cached).
def _negative(t):
    return torch._neg_view(t.detach().neg())  # the same values, read through the negative bit


def _change_grad(how, p, q):
    g = p.grad
    if how == "negative view":
        p.grad = _negative(g)
    elif how == "imaginary part of a conjugate":  # a real view with the negative bit, strided
        p.grad = torch.complex(torch.zeros_like(g), g.neg()).conj().imag
    else:  # a zero tensor without memory
        p.grad = torch._efficientzerotensor(g.shape)
        q.grad = torch.zeros_like(g)


def _change_param(how, p, q):
    if how == "negative view":
        p.data = _negative(p.data)
    else:  # transposed in place
        p.data = p.data.t()
        q.data = q.data.t().contiguous()


def _change_state(how, st, ref, key):
    if how == "negative view":
        st[key] = _negative(st[key])
    elif how == "t_":
        st[key].t_()
        ref[key] = ref[key].t().contiguous()
    else:  # .data = a transposed view
        st[key].data = st[key].data.t()
        ref[key] = ref[key].t().contiguous()


def _run_with_change(rule, when, change):
    a, oa, b, ob = _pair(rule, [(4, 4), (5,)])
    for t in range(6):
        for p, q, g in zip(a, b, _grads(a, t)):
            p.grad, q.grad = g.clone(), g.clone()
        if t == when:
            change(a[0], b[0], oa.state[a[0]], ob.state[b[0]])
        oa.step()
        ob.step()
        _assert_same(a, oa, b, ob)


@pytest.mark.parametrize("rule", params())
@pytest.mark.parametrize("when", [0, 3])
@pytest.mark.parametrize("how", ["negative view", "imaginary part of a conjugate", "zero tensor"])
def test_a_gradient_read_through_a_view_bit_is_read_as_its_values(rule, when, how):
    _run_with_change(rule, when, lambda p, q, st, ref: _change_grad(how, p, q))


@pytest.mark.parametrize("rule", params())
@pytest.mark.parametrize("when", [0, 3])
@pytest.mark.parametrize("how", ["negative view", "transposed in place"])
def test_a_parameter_changed_at_its_address_is_updated_as_its_values(rule, when, how):
    _run_with_change(rule, when, lambda p, q, st, ref: _change_param(how, p, q))


@pytest.mark.parametrize("rule", params())
@pytest.mark.parametrize("how", ["negative view", "t_", "data = transposed view"])
def test_a_state_tensor_changed_at_its_address_is_updated_as_its_values(rule, how):
    key = rule.state_keys[0]
    _run_with_change(rule, 3, lambda p, q, st, ref: _change_state(how, st, ref, key))


@pytest.mark.parametrize("rule", where(lambda r: r.step_state))
@pytest.mark.parametrize("how", ["new negative view", "data = negative view"])
def test_a_step_counter_read_through_the_negative_bit_counts_on(rule, how):
    def change(p, q, st, ref):
        if how == "new negative view":
            st["step"] = _negative(st["step"])
        else:
            st["step"].data = _negative(st["step"].data)

    _run_with_change(rule, 3, change)
    # the counter's value advanced as the reference's did: checked by _assert_same's parameters


@pytest.mark.parametrize("flat", [False, True])
def test_a_zero_tensor_gradient_the_step_would_unscale_is_refused_before_anything_moves(flat):
    # GradScaler's own inf check refuses one first; a trainer handing over the scale directly
    # (the fused contract: grad_scale and found_inf set on the optimizer) reaches the step
    a = [torch.nn.Parameter(torch.ones(6)), torch.nn.Parameter(torch.ones(6))]
    opt = CLRSGD(a, clr.Constant(0.1), momentum=0.9, flat=flat)
    opt.fused_unscale = True
    opt.grad_scale, opt.found_inf = torch.tensor(4.0), torch.zeros(())
    for _ in range(2):
        for p in a:
            p.grad = torch.full((6,), 4.0)
        opt.step()
    before = [p.detach().clone() for p in a]
    a[0].grad = torch.full((6,), 4.0)
    a[1].grad = torch._efficientzerotensor(6)
    with pytest.raises(ValueError, match="parameter 1 is a zero tensor without memory"):
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(a, before))
    assert torch.equal(a[0].grad, torch.full((6,), 4.0))  # not unscaled
    assert opt.param_groups[0]["step"] == 2


def test_the_guard_is_used_only_where_it_refuses_what_the_check_must():
    class Lenient:  # a guard that passes every tensor: the probe must turn it down
        def __init__(self, *tensors, **kw):
            pass

        def check(self, *tensors):
            return True

    class Strided(Lenient):  # passes all but a change of strides
        def __init__(self, *tensors, **kw):
            self.strides = [t.stride() for t in tensors]

        def check(self, *tensors):
            return [t.stride() for t in tensors] == self.strides

    guards = pytest.importorskip("torch._C._dynamo.guards")
    real = guards.TensorGuards
    assert _plan._guards_type() is real
    for fake in (Lenient, Strided):
        guards.TensorGuards = fake
        try:
            assert _plan._guards_type() is None
        finally:
            guards.TensorGuards = real


@pytest.mark.parametrize("how", ["replace entry", "new dict", "delete"])
@pytest.mark.parametrize("flat", [False, True])
def test_state_changed_between_steps_is_followed(how, flat):
    a, oa, b, ob = _pair(SGD, [(5,), (2, 2)], flat=flat)
    for t in range(3):
        _step(a, oa, b, ob, t)
    for opt, p in ((oa, a[0]), (ob, b[0])):
        if how == "replace entry":
            opt.state[p]["momentum_buffer"] = torch.full_like(p, 0.5)
        elif how == "new dict":
            opt.state[p] = {"momentum_buffer": torch.full_like(p, -0.25)}
        else:
            del opt.state[p]
    for t in range(3, 6):
        _step(a, oa, b, ob, t)
        _assert_same(a, oa, b, ob)


def test_a_parameter_swapped_into_the_group_list_is_updated():
    a, oa, b, ob = _pair(SGD, [(5,), (3,)])
    for t in range(2):
        _step(a, oa, b, ob, t)
    new_a, new_b = torch.nn.Parameter(torch.ones(5)), torch.nn.Parameter(torch.ones(5))
    oa.param_groups[0]["params"][0] = new_a
    ob.param_groups[0]["params"][0] = new_b
    a[0], b[0] = new_a, new_b
    for t in range(2, 5):
        _step(a, oa, b, ob, t)
        _assert_same(a, oa, b, ob)


@pytest.mark.parametrize("what", ["resize_", "set_", "t_", "data = view"])
def test_in_place_metadata_changes_of_a_gradient_are_seen(what):
    a, oa, b, ob = _pair(SGD, [(3, 3)])
    for t in range(2):
        _step(a, oa, b, ob, t)
    for p in (a[0], b[0]):
        g = p.grad
        if what == "resize_":
            g.resize_(9)
        elif what == "set_":
            g.set_(g.detach().reshape(9))
        elif what == "t_":
            g.t_()
        else:
            g.data = g.data.reshape(9)
    try:
        ob.step()
    except RuntimeError:
        with pytest.raises((ValueError, RuntimeError)):
            oa.step()
        return
    oa.step()
    _assert_same(a, oa, b, ob)


def test_a_step_with_a_changed_group_after_a_passing_one_changes_nothing():
    # group 0 passes the cached check, group 1 fails: nothing moves, group 0's clock included
    a = [torch.nn.Parameter(torch.ones(4)), torch.nn.Parameter(torch.ones(4))]
    opt = CLRSGD([{"params": [a[0]]}, {"params": [a[1]]}], clr.Constant(0.1), momentum=0.9)
    for _ in range(2):
        for p in a:
            p.grad = torch.ones(4)
        opt.step()
    a[0].grad = torch.ones(4)
    a[1].grad = torch.ones(4)
    a[1].grad.resize_(2, 2)  # the gradient's shape no longer matches its parameter
    before = [p.detach().clone() for p in a]
    with pytest.raises(ValueError):
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(a, before))
    assert [g["step"] for g in opt.param_groups] == [2, 2]


@pytest.mark.parametrize("rule", params())
@pytest.mark.parametrize("flat", [False, True])
def test_model_conversion_by_swapping_tensors_after_steps_works(rule, flat):
    # under swap_module_params_on_conversion, model.to() swaps parameters and gradients with
    # torch.utils.swap_tensors, which refuses tensors that something references weakly
    torch.manual_seed(0)
    net_a = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    net_b = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    net_b.load_state_dict(net_a.state_dict())
    oa = rule.make(net_a.parameters(), clr.Constant(LR), flat=flat)
    ob = rule.make_reference(net_b.parameters(), LR)
    x = torch.randn(8, 4)
    before = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        for t in range(5):
            if t == 3:
                net_a.double()  # the swap must not be refused
                net_b.double()
                x = x.double()
            net_a(x).sum().backward()
            net_b(x).sum().backward()
            try:
                ob.step()
            except RuntimeError as e:  # torch's Adam and RMSprop refuse float32 state with float64 gradients
                assert t == 3
                with pytest.raises(RuntimeError, match=re.escape(str(e))):
                    oa.step()
                return
            oa.step()
            for p, q in zip(net_a.parameters(), net_b.parameters()):
                assert same(p, q), t
    finally:
        torch.__future__.set_swap_module_params_on_conversion(before)


@pytest.mark.parametrize("flat", [False, True])
def test_a_gradient_shared_under_gradscaler_is_refused(flat):
    # GradScaler's fused path writes each gradient back unscaled: a gradient shared by two
    # parameters would be unscaled twice (torch does that too), by two threads at once here
    a = [torch.nn.Parameter(torch.ones(6)), torch.nn.Parameter(torch.ones(6))]
    opt = CLRSGD(a, clr.Constant(0.1), momentum=0.9, flat=flat)
    opt.fused_unscale = True
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    for _ in range(2):  # separate gradients: the plan is cached
        for p in a:
            p.grad = scaler.scale(torch.ones(6))
        scaler.step(opt)
        scaler.update()
    before = [p.detach().clone() for p in a]
    shared = scaler.scale(torch.ones(6))
    a[0].grad = a[1].grad = shared
    with pytest.raises(ValueError, match="share memory"):
        scaler.step(opt)
    assert all(torch.equal(p, q) for p, q in zip(a, before))
    assert torch.equal(shared, scaler.scale(torch.ones(6)))  # not unscaled
    assert opt.param_groups[0]["step"] == 2
