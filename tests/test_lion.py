"""CLRLion against the lion-pytorch package's Lion (its default update_fn), bit for bit.

The oracle is the package itself: every test runs ``lion_pytorch.Lion`` side by side on a copy
of the same model and compares parameters and ``exp_avg`` with ``torch.equal``.
"""

import copy

import lion_pytorch
import pytest

torch = pytest.importorskip("torch")
import clrfast as clr  # noqa: E402
from clrfast.torch import CLRLion  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

Lion = lion_pytorch.Lion


def model(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(7, 13), torch.nn.Tanh(), torch.nn.Linear(13, 3)).to(dtype)


def train(pairs, steps, dtype, schedulers=(), seed=1, make_grad=None):
    """Steps every (module, optimizer) pair on the same batches; schedulers step after each."""
    gen = torch.Generator().manual_seed(seed)
    for t in range(steps):
        x = torch.randn(16, 7, generator=gen, dtype=dtype)
        y = torch.randn(16, 3, generator=gen, dtype=dtype)
        for m, opt in pairs:
            opt.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            if make_grad is not None:
                for i, p in enumerate(m.parameters()):
                    p.grad = make_grad(t, i, p)
            opt.step()
        for s in schedulers:
            s.step()


def assert_same(ma, oa, mb, ob):
    for p, q in zip(ma.parameters(), mb.parameters()):
        assert torch.equal(p, q), (p - q).abs().max()
        sa, sb = oa.state.get(p, {}), ob.state.get(q, {})
        assert set(sa) == set(sb)
        if "exp_avg" in sa:
            assert torch.equal(sa["exp_avg"], sb["exp_avg"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("wd", [0.0, 0.1])
@pytest.mark.parametrize("betas", [(0.9, 0.99), (0.0, 0.5), (0.95, 1.0), (0.3, 0.0)])
@pytest.mark.parametrize("flat", [False, True])
def test_matches_lion_pytorch(dtype, wd, betas, flat):
    a = model(dtype)
    b = copy.deepcopy(a)
    ref = Lion(a.parameters(), lr=3e-3, betas=betas, weight_decay=wd)
    ours = CLRLion(b.parameters(), lr=3e-3, betas=betas, weight_decay=wd, flat=flat)
    train([(a, ref), (b, ours)], 12, dtype)
    assert_same(a, ref, b, ours)


@pytest.mark.parametrize("flat", [False, True])
def test_odd_shapes_transposed_and_gradless_parameters(flat):
    torch.manual_seed(0)
    shapes = [(0,), (), (5, 3), (4, 6), (1,)]
    ps = [torch.randn(s, requires_grad=True) for s in shapes]
    ps[3] = torch.randn(6, 4).t().requires_grad_()  # transposed: the Python reference path
    qs = [p.detach().clone().requires_grad_() for p in ps]
    qs[3] = ps[3].detach().t().clone().t().requires_grad_()
    ref = Lion(ps, lr=1e-2, weight_decay=0.05)
    ours = CLRLion(qs, lr=1e-2, weight_decay=0.05, flat=flat)
    gen = torch.Generator().manual_seed(3)
    for t in range(6):
        for i, (p, q) in enumerate(zip(ps, qs)):
            if i == 4 and t % 2:  # a parameter without a gradient on some steps
                p.grad = q.grad = None
                continue
            g = torch.randn(p.shape, generator=gen)
            p.grad = g.clone() if i != 3 else g.t().clone().t()
            q.grad = g.clone() if i != 3 else g.t().clone().t()
        ref.step()
        ours.step()
    for p, q in zip(ps, qs):
        assert torch.equal(p, q)
        if p in ref.state:
            assert torch.equal(ref.state[p]["exp_avg"], ours.state[q]["exp_avg"])
    assert qs[3].is_contiguous() == flat  # flat storage lays it out anew


def test_special_gradients_zero_nan_inf_signed_zero():
    specials = torch.tensor([0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e-45, -1e-45, 3.0] * 40)
    p = torch.randn(specials.numel(), requires_grad=True)
    q = p.detach().clone().requires_grad_()
    ref, ours = Lion([p], lr=1e-2, weight_decay=0.1), CLRLion([q], lr=1e-2, weight_decay=0.1)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        g = specials[torch.randperm(specials.numel(), generator=gen)]
        p.grad, q.grad = g.clone(), g.clone()
        ref.step()
        ours.step()
        # NaN (the sign of a NaN update is 0 in torch's sgn_, an inf moment makes one) compares equal here
        assert torch.equal(p.isnan(), q.isnan()) and torch.equal(p.nan_to_num(), q.nan_to_num())
        m, n = ref.state[p]["exp_avg"], ours.state[q]["exp_avg"]
        assert torch.equal(m.isnan(), n.isnan()) and torch.equal(m.nan_to_num(), n.nan_to_num())
        assert torch.equal(torch.signbit(p), torch.signbit(q))


@pytest.mark.parametrize("flat", [False, True])
def test_one_cycle_drives_lr_and_beta1_as_torchs_scheduler(flat):
    a = model()
    b = copy.deepcopy(a)
    ref = Lion(a.parameters(), lr=1e-4, betas=(0.95, 0.99), weight_decay=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(ref, 1e-3, total_steps=30, base_momentum=0.85, max_momentum=0.95)
    ours = CLRLion(
        b.parameters(),
        clr.OneCycle(1e-3, 30, base_momentum=0.85, max_momentum=0.95),
        betas=(0.95, 0.99),
        weight_decay=0.1,
        flat=flat,
    )
    for _ in range(29):
        train([(a, ref), (b, ours)], 1, torch.float32)
        sched.step()
        assert ours.param_groups[0]["lr"] == ref.param_groups[0]["lr"]
        assert ours.param_groups[0]["betas"] == ref.param_groups[0]["betas"]
        assert_same(a, ref, b, ours)


def test_cyclic_with_momentum_cycling_as_cycliclr():
    a = model(torch.float64)
    b = copy.deepcopy(a)
    ref = Lion(a.parameters(), lr=1e-4, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.CyclicLR(ref, 1e-4, 1e-3, 4, base_momentum=0.8, max_momentum=0.9)
    ours = CLRLion(b.parameters(), clr.Cyclic(1e-4, 1e-3, 4, base_momentum=0.8, max_momentum=0.9))
    train([(a, ref), (b, ours)], 20, torch.float64, schedulers=[sched])
    assert_same(a, ref, b, ours)
    assert ours.param_groups[0]["betas"] == ref.param_groups[0]["betas"]


def test_state_dicts_interchange_with_lion_pytorch_both_ways():
    a = model()
    b = copy.deepcopy(a)
    ref = Lion(a.parameters(), lr=2e-3, weight_decay=0.01)
    ours = CLRLion(b.parameters(), lr=2e-3, weight_decay=0.01)
    train([(a, ref), (b, ours)], 5, torch.float32)
    # swap: each continues from the other's state
    ref_sd, ours_sd = copy.deepcopy(ref.state_dict()), copy.deepcopy(ours.state_dict())
    ref.load_state_dict(ours_sd)
    ours.load_state_dict(ref_sd)
    train([(a, ref), (b, ours)], 5, torch.float32, seed=2)
    assert_same(a, ref, b, ours)
    c = copy.deepcopy(b)
    resumed = CLRLion(c.parameters(), lr=2e-3, weight_decay=0.01)
    resumed.load_state_dict(copy.deepcopy(ours.state_dict()))  # as from a file: its own tensors
    train([(b, ours), (c, resumed)], 4, torch.float32, seed=4)
    assert_same(b, ours, c, resumed)


@pytest.mark.parametrize(
    "kw,exc,match",
    [
        (dict(lr=-1e-3), ValueError, "Invalid learning rate"),
        (dict(lr=float("nan")), ValueError, "Invalid learning rate"),
        (dict(lr=1e-3, weight_decay=-0.1), ValueError, "Invalid weight_decay value"),
        (dict(lr=1e-3, betas=(1.5, 0.99)), ValueError, r"Invalid beta parameter at index 0"),
        (dict(lr=1e-3, betas=(0.9, -0.1)), ValueError, r"Invalid beta parameter at index 1"),
        (dict(lr=1e-3, betas=(0.9,)), TypeError, r"CLRLion\['betas'\] must be a pair"),
        (dict(lr=1e-3, betas=("a", 0.9)), TypeError, r"CLRLion\['betas'\]\[0\]"),
        (dict(lr="x"), TypeError, r"CLRLion\['lr'\]"),
        (dict(lr=1e-3, weight_decay=float("inf")), ValueError, r"CLRLion\['weight_decay'\] must be finite"),
    ],
)
def test_bad_hyperparameters_name_the_argument(kw, exc, match):
    with pytest.raises(exc, match=match):
        CLRLion(model().parameters(), **kw)


@pytest.mark.parametrize(
    "key,value,exc",
    [
        ("betas", (0.9, 2.0), ValueError),
        ("betas", 0.9, TypeError),
        ("weight_decay", -1.0, ValueError),
        ("weight_decay", "x", TypeError),
        ("lr", float("nan"), ValueError),
        ("step", 2.5, ValueError),
    ],
)
def test_a_bad_written_value_fails_the_step_and_changes_nothing(key, value, exc):
    m = model()
    opt = CLRLion(m.parameters(), lr=1e-3, weight_decay=0.1)
    train([(m, opt)], 2, torch.float32)
    before = [p.detach().clone() for p in m.parameters()]
    grads = [p.grad.clone() for p in m.parameters()]
    state = copy.deepcopy({i: dict(opt.state[p]) for i, p in enumerate(m.parameters())})
    opt.param_groups[0][key] = value
    with pytest.raises(exc):
        opt.step()
    assert opt.param_groups[0]["step"] == (value if key == "step" else 2)
    for i, p in enumerate(m.parameters()):
        assert torch.equal(p, before[i]) and torch.equal(p.grad, grads[i])
        assert torch.equal(opt.state[p]["exp_avg"], state[i]["exp_avg"])


@pytest.mark.parametrize("fused_unscale", [False, True])
def test_gradscaler_trajectory_and_skipped_steps(fused_unscale):
    a = model()
    b = copy.deepcopy(a)
    ref = Lion(a.parameters(), lr=1e-3, weight_decay=0.1)
    ours = CLRLion(b.parameters(), clr.Cyclic(1e-4, 1e-3, 3), weight_decay=0.1)
    ours.fused_unscale = fused_unscale
    ref_sched = torch.optim.lr_scheduler.CyclicLR(ref, 1e-4, 1e-3, 3, cycle_momentum=False)
    scalers = [torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2) for _ in range(2)]
    gen = torch.Generator().manual_seed(0)
    for t in range(10):
        x, y = torch.randn(8, 7, generator=gen), torch.randn(8, 3, generator=gen)
        for m, opt, sc in ((a, ref, scalers[0]), (b, ours, scalers[1])):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(m(x), y) * (float("inf") if t in (3, 7) else 1.0)
            sc.scale(loss).backward()
            sc.step(opt)
            sc.update()
        if t not in (3, 7):
            ref_sched.step()  # the schedule's clock counts applied updates only
    assert ours.param_groups[0]["step"] == 8
    assert ours.param_groups[0]["lr"] == ref.param_groups[0]["lr"]
    assert_same(a, ref, b, ours)


def test_bfloat16_is_updated_in_float32_and_rounded_once():
    torch.manual_seed(0)
    p32 = torch.randn(300)
    q = p32.to(torch.bfloat16).requires_grad_()
    oracle_p = q.detach().float()
    oracle_m = torch.zeros(300)
    ours = CLRLion([q], lr=1e-2, weight_decay=0.2)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        g = torch.randn(300, generator=gen).to(torch.bfloat16)
        q.grad = g.clone()
        ours.step()
        # the package's update on float32 copies, then one rounding to bfloat16 (the kernel's precision rule)
        lion_pytorch.lion_pytorch.update_fn(oracle_p, g.float(), oracle_m, 1e-2, 0.2, 0.9, 0.99)
        assert torch.equal(q.detach(), oracle_p.to(torch.bfloat16))
        assert torch.equal(ours.state[q]["exp_avg"], oracle_m.to(torch.bfloat16))
        oracle_p = oracle_p.to(torch.bfloat16).float()
        oracle_m = oracle_m.to(torch.bfloat16).float()


@settings(max_examples=25, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("step"), st.booleans()),
            st.tuples(st.just("lr"), st.floats(0.0, 1e-2)),
            st.tuples(st.just("betas"), st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0))),
            st.tuples(st.just("wd"), st.floats(0.0, 1.0)),
            st.tuples(st.just("zero_grad"), st.booleans()),
            st.tuples(st.just("reload"), st.booleans()),
        ),
        min_size=1,
        max_size=12,
    ),
    flat=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_random_runs_stay_bit_identical(ops, flat, dtype):
    """Steps, values written into the groups, zero_grad modes and state-dict reloads, side by side."""
    a = model(dtype)
    b = copy.deepcopy(a)
    ref = Lion(a.parameters(), lr=1e-3)
    ours = CLRLion(b.parameters(), lr=1e-3, flat=flat)
    gen = torch.Generator().manual_seed(0)
    for op, arg in ops:
        if op == "step":
            x, y = torch.randn(4, 7, generator=gen, dtype=dtype), torch.randn(4, 3, generator=gen, dtype=dtype)
            for m, opt in ((a, ref), (b, ours)):
                if arg:  # accumulate onto the gradients left from before
                    torch.nn.functional.mse_loss(m(x), y).backward()
                else:
                    opt.zero_grad()
                    torch.nn.functional.mse_loss(m(x), y).backward()
                opt.step()
        elif op in ("lr", "betas"):
            for opt in (ref, ours):
                opt.param_groups[0][op] = arg
        elif op == "wd":
            for opt in (ref, ours):
                opt.param_groups[0]["weight_decay"] = arg
        elif op == "zero_grad":
            ref.zero_grad(set_to_none=arg)
            ours.zero_grad(set_to_none=arg)
        else:
            sd = copy.deepcopy(ref.state_dict() if arg else ours.state_dict())
            ref.load_state_dict(copy.deepcopy(sd))
            ours.load_state_dict(sd)
        assert_same(a, ref, b, ours)
        for p, q in zip(a.parameters(), b.parameters()):
            assert (p.grad is None) == (q.grad is None)
            if p.grad is not None:
                assert torch.equal(p.grad, q.grad)


def test_the_layout_comes_from_the_rule_declaration():
    from clrfast import _core

    layout = _core.rules["lion"]
    assert layout["slots"] == ("exp_avg",) and layout["step"] is False and layout["root"] is False
    assert CLRLion._state_keys == ("exp_avg",) and CLRLion._cols == layout["width"]
