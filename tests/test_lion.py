"""CLRLion against the lion-pytorch package's Lion (its default update_fn), bit for bit.

The oracle is the package itself: each test runs ``lion_pytorch.Lion`` side by side on copies of
the same parameters (torch's schedulers driving it where CLRLion follows a clrfast schedule) and
compares parameters, ``exp_avg`` and gradients by their bits, a NaN (whatever its payload)
matching a NaN. bfloat16/float16 parameters are compared with the package's ``update_fn`` run on
float32 copies and rounded once, the kernel's precision rule.
"""

import copy
import functools
import io

import pytest

torch = pytest.importorskip("torch")
lion_pytorch = pytest.importorskip("lion_pytorch")

import clrfast as clr  # noqa: E402
from clrfast.torch import CLRLion  # noqa: E402

Lion = lion_pytorch.Lion
update_fn = lion_pytorch.lion_pytorch.update_fn  # the package's per-tensor update (its default path)

NAN, INF = float("nan"), float("inf")
_BITS = {
    torch.float64: torch.int64,
    torch.float32: torch.int32,
    torch.bfloat16: torch.int16,
    torch.float16: torch.int16,
}

# (shape, layout): "T" makes the parameter a transposed view (not one dense run: the Python path
# in list mode; flat mode lays it out anew). Sizes around the vector widths and their tails.
SHAPES = [
    ((0,), ""),
    ((), ""),
    ((1,), ""),
    ((7,), ""),
    ((8,), ""),
    ((17,), ""),
    ((5, 3), ""),
    ((33, 65), ""),
    ((2, 0, 3), ""),
    ((4, 6), "T"),
    ((3,), ""),  # never has a gradient
    ((9,), ""),  # has a gradient on even steps only
]
TRANSPOSED, NEVER, SOMETIMES = 9, 10, 11


# --------------------------------------------------------------------------- helpers
def same_bits(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Same dtype, shape and bits (signed zeros told apart); NaN matches NaN whatever its payload."""
    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    nx, ny = x.isnan(), y.isnan()
    if not torch.equal(nx, ny):
        return False
    bx = x.detach().contiguous().view(_BITS[x.dtype])
    by = y.detach().contiguous().view(_BITS[y.dtype])
    return torch.equal(torch.where(nx, 0, bx), torch.where(ny, 0, by))


def values(specs, dtype, seed=0):
    """Parameter values for (shape, layout) specs; a "T" one is a transposed view."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for shape, layout in specs:
        if layout == "T":
            v = torch.randn(shape[::-1], generator=gen, dtype=torch.float64).to(dtype).t()
        else:
            v = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
        out.append(v)
    return out


def twins(vals):
    """Two lists of leaf parameters holding the same values in the same layout."""
    a = [torch.nn.Parameter(v.clone()) for v in vals]
    b = [torch.nn.Parameter(v.clone()) for v in vals]
    assert all(p.stride() == v.stride() for p, v in zip(a, vals))
    return a, b


def gradients(params, t, seed=1, present=None):
    gen = torch.Generator().manual_seed(seed * 7919 + t)
    out = []
    for i, p in enumerate(params):
        g = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype)
        out.append(g if present is None or present(i, t) else None)
    return out


def set_grads(params, grads, scale=1.0):
    """Gives each parameter a gradient laid out as the parameter is (as autograd makes them)."""
    for p, g in zip(params, grads):
        p.grad = None if g is None else torch.empty_like(p.detach()).copy_(g * scale if scale != 1.0 else g)


def default_present(i, t):
    return i != NEVER and (i != SOMETIMES or t % 2 == 0)


def run(pairs, steps, start=0, present=default_present):
    """Steps every (parameters, optimizer) pair on the same gradients (those of steps start, start+1, ...)."""
    for t in range(start, start + steps):
        grads = gradients(pairs[0][0], t, present=present)
        for params, opt in pairs:
            set_grads(params, grads)
            opt.step()


def assert_same(ours, opt, ref, ref_opt, grads=True):
    """Parameters, state (keys and exp_avg) and gradients of the two runs agree bit for bit."""
    for i, (p, q) in enumerate(zip(ours, ref)):
        assert same_bits(p.detach(), q.detach()), f"parameter {i}: {(p.detach() - q.detach()).abs().max()}"
        sa, sb = opt.state.get(p, {}), ref_opt.state.get(q, {})
        assert set(sa) == set(sb), f"parameter {i}: state keys {set(sa)} vs {set(sb)}"
        if "exp_avg" in sb:
            assert same_bits(sa["exp_avg"], sb["exp_avg"]), f"parameter {i}: exp_avg"
        if grads:
            assert (p.grad is None) == (q.grad is None), f"parameter {i}: gradient presence"
            if p.grad is not None:
                assert same_bits(p.grad, q.grad), f"parameter {i}: gradient"


def assert_groups_match(opt, ref_opt):
    for g, r in zip(opt.param_groups, ref_opt.param_groups):
        assert g["lr"] == r["lr"], (g["lr"], r["lr"])
        assert tuple(g["betas"]) == tuple(r["betas"]), (g["betas"], r["betas"])


@pytest.fixture
def fallback_calls(monkeypatch):
    """Records the shapes of the parameters each call of the Python (non-kernel) update receives."""
    calls = []
    original = CLRLion._torch_update

    def spy(self, params, grads, states, h):
        calls.append([tuple(p.shape) for p in params])
        return original(self, params, grads, states, h)

    monkeypatch.setattr(CLRLion, "_torch_update", spy)
    return calls


# --------------------------------------------------------------------------- the update
BETAS = [(0.9, 0.99), (0.0, 0.99), (0.9, 1.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0), (0.5, 0.0)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("wd", [0.0, 0.25])
@pytest.mark.parametrize("betas", BETAS, ids=str)
@pytest.mark.parametrize("flat", [False, True], ids=["list", "flat"])
def test_bit_identical_to_lion_pytorch(dtype, wd, betas, flat, fallback_calls):
    ours, ref = twins(values(SHAPES, dtype))
    if flat:
        opt = CLRLion(ours, lr=1e-2, betas=betas, weight_decay=wd, flat=True)
    else:  # the lr as the second positional argument
        opt = CLRLion(ours, 1e-2, betas, wd)
    ref_opt = Lion(ref, lr=1e-2, betas=betas, weight_decay=wd)
    for t in range(8):
        grads = gradients(ours, t, present=default_present)
        set_grads(ours, grads)
        set_grads(ref, grads)
        opt.step()
        ref_opt.step()
        assert_same(ours, opt, ref, ref_opt)
        assert opt.param_groups[0]["step"] == t + 1
    assert NEVER not in [i for i, p in enumerate(ours) if p in opt.state]
    assert set(opt.state[ours[0]]) == {"exp_avg"}
    if flat:  # laid out anew in one storage: the kernel takes every parameter
        assert ours[TRANSPOSED].is_contiguous() and fallback_calls == []
    else:  # the transposed parameter, and it alone, takes the Python path
        assert not ours[TRANSPOSED].is_contiguous()
        assert fallback_calls == [[tuple(ours[TRANSPOSED].shape)]] * 8


def test_groups_with_their_own_hyperparameters():
    vals = values([((13, 7), ""), ((13,), ""), ((6, 4), "T"), ((40,), "")], torch.float32, seed=3)
    ours, ref = twins(vals)

    def spec(ps):
        return [{"params": ps[:2], "lr": 3e-3, "betas": (0.8, 0.9), "weight_decay": 0.1}, {"params": ps[2:]}]

    opt = CLRLion(spec(ours), 1e-2, weight_decay=0.5)
    ref_opt = Lion(spec(ref), lr=1e-2, weight_decay=0.5)
    for t in range(6):
        grads = gradients(ours, t)
        set_grads(ours, grads)
        set_grads(ref, grads)
        opt.step()
        ref_opt.step()
    assert_same(ours, opt, ref, ref_opt)
    assert [g["step"] for g in opt.param_groups] == [6, 6]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_large_parameters_split_across_threads(dtype, threads):
    ours, ref = twins(values([((100_003,), ""), ((65_537,), ""), ((3, 50_001), "")], dtype, seed=4))
    opt = CLRLion(ours, lr=1e-3, weight_decay=0.1, threads=threads)
    ref_opt = Lion(ref, lr=1e-3, weight_decay=0.1)
    for t in range(3):
        grads = gradients(ours, t)
        set_grads(ours, grads)
        set_grads(ref, grads)
        opt.step()
        ref_opt.step()
    assert_same(ours, opt, ref, ref_opt)


@pytest.mark.parametrize(
    "lr,wd", [(1.0, 1.0), (0.5, 3.0), (0.0, 0.5), (-0.0, 0.5)], ids=["decay-0", "decay-negative", "lr-0", "lr-minus-0"]
)
def test_decay_factors_of_zero_and_below_and_a_zero_lr(lr, wd):
    """1 - lr*wd = 0 makes signed zeros of every parameter, < 0 flips them; lr = 0 (written) moves nothing."""
    ours, ref = twins(values(SHAPES, torch.float32, seed=17))
    opt = CLRLion(ours, lr=lr, weight_decay=wd)
    ref_opt = Lion(ref, lr=1.0, weight_decay=wd)  # lion-pytorch's constructor wants lr > 0
    ref_opt.param_groups[0]["lr"] = lr
    run([(ours, opt), (ref, ref_opt)], 4)
    assert_same(ours, opt, ref, ref_opt)


def test_layouts_the_kernel_takes_or_leaves_to_the_python_path(fallback_calls):
    """channels_last is one dense run; a non-contiguous gradient or a state of another dtype is not."""
    gen = torch.Generator().manual_seed(18)
    vals = [
        torch.randn(2, 3, 4, 5, generator=gen).to(memory_format=torch.channels_last),
        torch.randn(4, 6, generator=gen),  # given a transposed gradient
        torch.randn(11, generator=gen),  # its state made float64 by hand
        torch.randn(9, generator=gen),
    ]
    ours, ref = twins(vals)
    opt, ref_opt = CLRLion(ours, lr=1e-2, weight_decay=0.1), Lion(ref, lr=1e-2, weight_decay=0.1)
    for t in range(5):
        grads = gradients(ours, t)
        set_grads(ours, grads)
        set_grads(ref, grads)
        for ps in (ours, ref):
            ps[1].grad = grads[1].t().contiguous().t()
        opt.step()
        ref_opt.step()
        if t == 1:
            for o, ps in ((opt, ours), (ref_opt, ref)):
                o.state[ps[2]]["exp_avg"] = o.state[ps[2]]["exp_avg"].double()
        assert_same(ours, opt, ref, ref_opt)
    assert ours[0].is_contiguous(memory_format=torch.channels_last)
    assert opt.state[ours[2]]["exp_avg"].dtype == torch.float64
    # from the third step the (11,) parameter's float64 state beside its float32 values is rehearsed on
    # copies before the step changes anything (FusedOptimizer._rehearse), then updated with the others
    assert fallback_calls == [[(4, 6)]] * 2 + [[(11,)], [(4, 6), (11,)]] * 3


def _closure(opt, params, x):
    opt.zero_grad()
    loss = (x @ params[0] + params[1]).square().sum()
    loss.backward()
    return loss


def test_a_closure_is_evaluated_with_grad_and_its_loss_returned():
    ours, ref = twins(values([((5, 3), ""), ((3,), "")], torch.float32, seed=19))
    opt, ref_opt = CLRLion(ours, lr=1e-2), Lion(ref, lr=1e-2)
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        losses = [o.step(functools.partial(_closure, o, ps, x)) for ps, o in ((ours, opt), (ref, ref_opt))]
        assert same_bits(losses[0].detach(), losses[1].detach())
    assert_same(ours, opt, ref, ref_opt)


# --------------------------------------------------------------------------- special values
def specials(dtype):
    fi = torch.finfo(dtype)
    return [0.0, -0.0, NAN, INF, -INF, fi.tiny / 4, -fi.tiny / 4, fi.max, -fi.max, 1.0, -1.0, 3.5]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("betas", [(0.9, 0.99), (0.0, 1.0), (1.0, 0.0), (0.5, 0.5)], ids=str)
@pytest.mark.parametrize("wd", [0.0, 0.1])
@pytest.mark.parametrize("path", ["list", "flat", "transposed"])
def test_zero_nan_inf_and_signed_zero_gradients(dtype, betas, wd, path):
    """sign() of a NaN is +0 in torch's CPU sgn_ (so the parameter does not move); inf*0 makes NaN moments."""
    sp = torch.tensor(specials(dtype), dtype=dtype)
    n = sp.numel() * 37  # a vector body and a tail
    gen = torch.Generator().manual_seed(7)
    start = torch.cat([sp, torch.randn(n - sp.numel(), generator=gen, dtype=torch.float64).to(dtype)])
    start = start[torch.randperm(n, generator=gen)]
    if path == "transposed":
        start = start.reshape(12, 37).t()  # the Python path
    ours, ref = twins([start, torch.randn(5, generator=gen, dtype=dtype)])
    opt = CLRLion(ours, lr=1e-2, betas=betas, weight_decay=wd, flat=path == "flat")
    ref_opt = Lion(ref, lr=1e-2, betas=betas, weight_decay=wd)
    for t in range(4):
        g = sp.repeat(37)[torch.randperm(n, generator=gen)].reshape(start.shape)
        if t == 3:
            g = torch.zeros_like(g)  # a zero gradient after NaN and inf moments
        grads = [g, torch.tensor([NAN, -0.0, 0.0, INF, -INF], dtype=dtype)]
        set_grads(ours, grads)
        set_grads(ref, grads)
        opt.step()
        ref_opt.step()
        assert_same(ours, opt, ref, ref_opt)
    assert opt.state[ours[0]]["exp_avg"].isnan().any()  # the NaN path was exercised


@pytest.mark.parametrize("flat", [False, True], ids=["list", "flat"])
def test_a_nan_or_zero_first_gradient_leaves_the_parameter_where_it_was(flat):
    start = torch.tensor([1.5, -0.0, 0.0, -2.0, 0.0, -0.0, 7.0])
    ours, ref = twins([start])
    opt, ref_opt = CLRLion(ours, lr=0.1, flat=flat), Lion(ref, lr=0.1)
    g = torch.tensor([NAN, NAN, NAN, 0.0, -0.0, 0.0, -0.0])
    set_grads(ours, [g])
    set_grads(ref, [g])
    opt.step()
    ref_opt.step()
    assert_same(ours, opt, ref, ref_opt)
    assert same_bits(ours[0].detach(), start)  # sign(NaN) = sign(+-0) = +0: no move, signed zeros kept


# --------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("flat", [False, True], ids=["list", "flat"])
@pytest.mark.parametrize("three_phase,anneal", [(False, "cos"), (True, "linear")])
def test_one_cycle_drives_lr_and_beta1_as_onecyclelr(flat, three_phase, anneal):
    total = 24
    kw = dict(pct_start=0.25, div_factor=20.0, final_div_factor=100.0, base_momentum=0.8, max_momentum=0.97)
    ours, ref = twins(values(SHAPES, torch.float32, seed=5))
    opt = CLRLion(
        ours,
        clr.OneCycle(2e-2, total, anneal=anneal, three_phase=three_phase, **kw),
        betas=(0.95, 0.98),
        weight_decay=0.1,
        flat=flat,
    )
    ref_opt = Lion(ref, lr=1e-4, betas=(0.95, 0.98), weight_decay=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        ref_opt, 2e-2, total_steps=total, anneal_strategy=anneal, three_phase=three_phase, **kw
    )
    assert_groups_match(opt, ref_opt)
    for t in range(total):
        grads = gradients(ours, t, present=default_present)
        set_grads(ours, grads)
        set_grads(ref, grads)
        opt.step()
        ref_opt.step()
        sched.step()
        assert_groups_match(opt, ref_opt)
        assert_same(ours, opt, ref, ref_opt)
    assert opt.param_groups[0]["step"] == total


def test_one_cycle_per_group_schedules_as_onecyclelr_with_a_list_of_max_lrs():
    ours, ref = twins(values([((13, 7), ""), ((13,), ""), ((3, 13), "")], torch.float64, seed=6))
    opt = CLRLion(
        [{"params": ours[:2]}, {"params": ours[2:], "schedule": clr.OneCycle(3e-3, 16), "weight_decay": 0.3}],
        clr.OneCycle(1e-2, 16),
    )
    ref_opt = Lion([{"params": ref[:2]}, {"params": ref[2:], "weight_decay": 0.3}], lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(ref_opt, [1e-2, 3e-3], total_steps=16)
    for t in range(15):
        grads = gradients(ours, t)
        set_grads(ours, grads)
        set_grads(ref, grads)
        opt.step()
        ref_opt.step()
        sched.step()
        assert_groups_match(opt, ref_opt)
    assert_same(ours, opt, ref, ref_opt)


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cyclic_with_momentum_cycling_as_cycliclr(mode, dtype):
    kw = dict(step_size_up=3, step_size_down=2, mode=mode, gamma=0.9 if mode == "exp_range" else 1.0)
    ours, ref = twins(values(SHAPES, dtype, seed=8))
    opt = CLRLion(ours, clr.Cyclic(1e-3, 1e-2, base_momentum=0.8, max_momentum=0.9, **kw), betas=(0.9, 0.95))
    ref_opt = Lion(ref, lr=1e-3, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.CyclicLR(
        ref_opt, 1e-3, 1e-2, cycle_momentum=True, base_momentum=0.8, max_momentum=0.9, **kw
    )
    assert_groups_match(opt, ref_opt)
    for t in range(22):
        grads = gradients(ours, t, present=default_present)
        set_grads(ours, grads)
        set_grads(ref, grads)
        opt.step()
        ref_opt.step()
        sched.step()
        assert_groups_match(opt, ref_opt)
        assert_same(ours, opt, ref, ref_opt)


def test_cyclic_without_momentum_keeps_beta1_as_cycliclr_without_cycle_momentum():
    ours, ref = twins(values(SHAPES, torch.float32, seed=9))
    opt = CLRLion(ours, clr.Cyclic(1e-3, 1e-2, 2), betas=(0.7, 0.9), weight_decay=0.2, flat=True)
    ref_opt = Lion(ref, lr=1e-3, betas=(0.7, 0.9), weight_decay=0.2)
    sched = torch.optim.lr_scheduler.CyclicLR(ref_opt, 1e-3, 1e-2, 2, cycle_momentum=False)
    for t in range(9):
        grads = gradients(ours, t, present=default_present)
        set_grads(ours, grads)
        set_grads(ref, grads)
        opt.step()
        ref_opt.step()
        sched.step()
        assert_groups_match(opt, ref_opt)
    assert opt.param_groups[0]["betas"] == (0.7, 0.9)
    assert_same(ours, opt, ref, ref_opt)


def test_warmup_cosine_sets_the_lr_of_each_update():
    schedule = clr.WarmupCosine(1e-2, 3, 12)
    ours, ref = twins(values(SHAPES, torch.float32, seed=10))
    opt = CLRLion(ours, schedule, betas=(0.9, 0.99), weight_decay=0.05)
    ref_opt = Lion(ref, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.05)
    for t in range(12):
        assert opt.param_groups[0]["lr"] == schedule.lr(t) and opt.param_groups[0]["betas"] == (0.9, 0.99)
        ref_opt.param_groups[0]["lr"] = schedule.lr(t)  # lion-pytorch applies what its group holds
        grads = gradients(ours, t, present=default_present)
        set_grads(ours, grads)
        set_grads(ref, grads)
        opt.step()
        ref_opt.step()
        assert_same(ours, opt, ref, ref_opt)


# --------------------------------------------------------------------------- state dicts
@pytest.mark.parametrize("flat", [False, True], ids=["list", "flat"])
def test_state_dicts_interchange_with_lion_pytorch_both_ways(flat):
    ours, ref = twins(values(SHAPES, torch.float32, seed=11))
    opt = CLRLion(ours, lr=2e-3, weight_decay=0.01, flat=flat)
    ref_opt = Lion(ref, lr=2e-3, weight_decay=0.01)
    run([(ours, opt), (ref, ref_opt)], 5)
    ours_sd, ref_sd = copy.deepcopy(opt.state_dict()), copy.deepcopy(ref_opt.state_dict())
    assert set(ours_sd["state"]) == set(ref_sd["state"])
    assert all(set(s) == {"exp_avg"} for s in ours_sd["state"].values())
    # each continues from the other's state
    opt.load_state_dict(ref_sd)
    ref_opt.load_state_dict(ours_sd)
    run([(ours, opt), (ref, ref_opt)], 5, start=5)
    assert_same(ours, opt, ref, ref_opt)
    # a fresh CLRLion from lion-pytorch's state, and a fresh Lion from CLRLion's, saved to a file
    c = [torch.nn.Parameter(p.detach().clone()) for p in ref]
    c_opt = CLRLion(c, lr=1.0, flat=flat)
    c_opt.load_state_dict(copy.deepcopy(ref_opt.state_dict()))
    blob = io.BytesIO()
    torch.save(opt.state_dict(), blob)
    blob.seek(0)
    d = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    d_opt = Lion(d, lr=1.0)
    d_opt.load_state_dict(torch.load(blob, weights_only=True))
    assert c_opt.param_groups[0]["lr"] == d_opt.param_groups[0]["lr"] == 2e-3
    run([(ours, opt), (ref, ref_opt), (c, c_opt), (d, d_opt)], 4, start=10)
    assert_same(ours, opt, ref, ref_opt)
    assert_same(c, c_opt, ref, ref_opt)
    assert_same(d, d_opt, ref, ref_opt)


@pytest.mark.parametrize("flat", [False, True], ids=["list", "flat"])
def test_scheduled_state_dicts_resume_exactly(flat):
    def schedule():
        return clr.OneCycle(1e-2, 20, base_momentum=0.85, max_momentum=0.95)

    ours, ref = twins(values(SHAPES, torch.float32, seed=12))
    opt = CLRLion(ours, schedule(), weight_decay=0.1, flat=flat)
    ref_opt = Lion(ref, lr=1e-3, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(ref_opt, 1e-2, total_steps=20)
    for t in range(8):
        run([(ours, opt), (ref, ref_opt)], 1, start=t)
        sched.step()
    # CLRLion's own state dict: schedule and clock come back with it
    c = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    c_opt = CLRLion(c, clr.Constant(1.0), flat=flat)
    c_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert c_opt.param_groups[0]["step"] == 8 and c_opt.param_groups[0]["schedule"] == schedule()
    assert_groups_match(c_opt, ref_opt)
    # lion-pytorch's (under OneCycleLR): its lr and betas are the next update's; the clock is set by hand
    d = [torch.nn.Parameter(p.detach().clone()) for p in ref]
    d_opt = CLRLion(d, schedule(), weight_decay=0.1, flat=flat)
    d_opt.load_state_dict(copy.deepcopy(ref_opt.state_dict()))
    assert "initial_lr" not in d_opt.param_groups[0]
    d_opt.param_groups[0]["step"] = 8
    assert_groups_match(d_opt, ref_opt)
    # a Lion from CLRLion's scheduled state dict, given the lr and betas the schedule shows
    e = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    e_opt = Lion(e, lr=1.0)
    e_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    for t in range(8, 19):
        e_opt.param_groups[0].update(lr=opt.param_groups[0]["lr"], betas=opt.param_groups[0]["betas"])
        run([(ours, opt), (ref, ref_opt), (c, c_opt), (d, d_opt), (e, e_opt)], 1, start=t)
        sched.step()
        for other in (c_opt, d_opt):
            assert_groups_match(other, ref_opt)
    for params, other in ((ours, opt), (c, c_opt), (d, d_opt), (e, e_opt)):
        assert_same(params, other, ref, ref_opt)
    assert c_opt.param_groups[0]["step"] == d_opt.param_groups[0]["step"] == 19


@pytest.mark.parametrize("flat", [False, True], ids=["list", "flat"])
def test_loading_an_older_state_dict_forgets_the_state_made_since(flat):
    ours, ref = twins(values(SHAPES, torch.float32, seed=20))
    opt, ref_opt = CLRLion(ours, lr=1e-2, flat=flat), Lion(ref, lr=1e-2)
    run([(ours, opt), (ref, ref_opt)], 2, present=lambda i, t: default_present(i, t) and i != 3)
    old = copy.deepcopy(ref_opt.state_dict())  # parameter 3 has no state yet
    assert 3 not in old["state"]
    run([(ours, opt), (ref, ref_opt)], 3, start=2)
    assert ours[3] in opt.state
    opt.load_state_dict(copy.deepcopy(old))
    ref_opt.load_state_dict(copy.deepcopy(old))
    assert ours[3] not in opt.state or not opt.state[ours[3]]
    run([(ours, opt), (ref, ref_opt)], 3, start=5)  # parameter 3 starts again from zeros
    assert_same(ours, opt, ref, ref_opt)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "args,kw,exc,match",
    [
        ((), dict(lr=-1e-3), ValueError, r"Invalid learning rate.*CLRLion\['lr'\]"),
        ((-1e-3,), dict(), ValueError, r"Invalid learning rate.*CLRLion\['lr'\]"),
        ((), dict(lr=NAN), ValueError, r"CLRLion\['lr'\]"),
        ((), dict(lr=INF), ValueError, r"CLRLion\['lr'\] must be finite"),
        ((), dict(lr="0.1"), TypeError, r"CLRLion\['lr'\] must be a real number"),
        (("0.1",), dict(), TypeError, r"schedule must be a clrfast schedule"),
        ((), dict(lr=True), TypeError, r"CLRLion\['lr'\]"),
        ((), dict(), TypeError, r"CLRLion needs a schedule"),
        ((clr.Constant(1e-3),), dict(lr=1e-3), ValueError, r"lr=0.001 and a schedule"),
        ((), dict(lr=1e-3, weight_decay=-0.1), ValueError, r"Invalid weight_decay value.*CLRLion\['weight_decay'\]"),
        ((1e-3, (0.9, 0.99), -0.1), dict(), ValueError, r"CLRLion\['weight_decay'\]"),
        ((), dict(lr=1e-3, weight_decay=NAN), ValueError, r"CLRLion\['weight_decay'\]"),
        ((), dict(lr=1e-3, weight_decay=INF), ValueError, r"CLRLion\['weight_decay'\] must be finite"),
        ((), dict(lr=1e-3, weight_decay="x"), TypeError, r"CLRLion\['weight_decay'\] must be a real number"),
        ((), dict(lr=1e-3, betas=(1.5, 0.99)), ValueError, r"beta parameter at index 0.*CLRLion\['betas'\]"),
        ((), dict(lr=1e-3, betas=(0.9, -0.1)), ValueError, r"beta parameter at index 1.*CLRLion\['betas'\]"),
        ((), dict(lr=1e-3, betas=(0.9, 1.0 + 1e-12)), ValueError, r"index 1"),
        ((), dict(lr=1e-3, betas=(NAN, 0.9)), ValueError, r"CLRLion\['betas'\]\[0\]"),
        ((), dict(lr=1e-3, betas=(0.9,)), TypeError, r"CLRLion\['betas'\] must be a pair"),
        ((), dict(lr=1e-3, betas=(0.9, 0.99, 0.999)), TypeError, r"CLRLion\['betas'\] must be a pair"),
        ((), dict(lr=1e-3, betas=0.9), TypeError, r"CLRLion\['betas'\] must be a pair"),
        ((), dict(lr=1e-3, betas="ab"), TypeError, r"CLRLion\['betas'\] must be a pair"),
        ((), dict(lr=1e-3, betas=("a", 0.9)), TypeError, r"CLRLion\['betas'\]\[0\]"),
        ((), dict(lr=1e-3, flat="yes"), TypeError, r"CLRLion\['flat'\]"),
        ((), dict(lr=1e-3, threads=0), ValueError, r"threads"),
    ],
)
def test_bad_hyperparameters_name_the_argument(args, kw, exc, match):
    with pytest.raises(exc, match=match):
        CLRLion([torch.nn.Parameter(torch.randn(3))], *args, **kw)


@pytest.mark.parametrize(
    "group,match",
    [
        ({"betas": (0.9, 2.0)}, r"param_groups\[1\]\['betas'\]"),
        ({"weight_decay": -1.0}, r"param_groups\[1\]\['weight_decay'\]"),
        ({"lr": -1.0}, r"param_groups\[1\]\['lr'\]"),
        ({"lr": "x"}, r"param_groups\[1\]\['lr'\]"),
    ],
)
def test_bad_group_hyperparameters_are_refused_before_anything_is_added(group, match):
    a, b = torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(4))
    with pytest.raises((ValueError, TypeError), match=match):
        CLRLion([{"params": [a]}, {"params": [b], **group}], lr=1e-3)
    opt = CLRLion([a], lr=1e-3)
    with pytest.raises((ValueError, TypeError), match=match):
        opt.add_param_group({"params": [b], **group})
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["params"] == [a]


BAD_WRITES = [
    ("lr", -1e-3, ValueError),
    ("lr", NAN, ValueError),
    ("lr", INF, ValueError),
    ("lr", "x", TypeError),
    ("lr", None, TypeError),
    ("lr", torch.tensor(-1.0), ValueError),
    ("betas", (0.9, 1.5), ValueError),
    ("betas", (-0.1, 0.9), ValueError),
    ("betas", (NAN, 0.9), ValueError),
    ("betas", (0.9, INF), ValueError),
    ("betas", (0.9,), TypeError),
    ("betas", (0.9, 0.99, 0.999), TypeError),
    ("betas", 0.9, TypeError),
    ("betas", "ab", TypeError),
    ("betas", ("a", 0.9), TypeError),
    ("weight_decay", -0.1, ValueError),
    ("weight_decay", NAN, ValueError),
    ("weight_decay", INF, ValueError),
    ("weight_decay", "x", TypeError),
    ("weight_decay", None, TypeError),
    ("step", -1, ValueError),
    ("step", 2.5, ValueError),
    ("step", "x", TypeError),
    ("schedule", "x", TypeError),
]


@pytest.mark.parametrize("key,value,exc", BAD_WRITES, ids=[f"{k}={v!r}" for k, v, _ in BAD_WRITES])
@pytest.mark.parametrize("flat", [False, True], ids=["list", "flat"])
def test_a_bad_written_value_fails_the_step_and_changes_nothing(key, value, exc, flat):
    vals = values([((5, 3), ""), ((4, 6), "T"), ((17,), ""), ((6,), "")], torch.float32, seed=13)
    ours, ref = twins(vals)

    def spec(ps):
        return [{"params": ps[:3]}, {"params": ps[3:], "weight_decay": 0.2}]

    opt = CLRLion(spec(ours), lr=1e-2, weight_decay=0.1, flat=flat)
    ref_opt = Lion(spec(ref), lr=1e-2, weight_decay=0.1)
    run([(ours, opt), (ref, ref_opt)], 2, present=None)
    grads = gradients(ours, 2)
    set_grads(ours, grads)
    set_grads(ref, grads)
    before = [p.detach().clone() for p in ours]
    grads_before = [p.grad.clone() for p in ours]
    state_before = [opt.state[p]["exp_avg"].clone() for p in ours]
    held = opt.param_groups[1][key]
    opt.param_groups[1][key] = value  # the second group: the first must not move either
    with pytest.raises(exc, match=rf"param_groups\[1\]\['{key}'\]"):
        opt.step()
    assert opt.param_groups[0]["step"] == 2 and opt.param_groups[1]["step"] == (value if key == "step" else 2)
    for i, p in enumerate(ours):
        assert same_bits(p.detach(), before[i]) and same_bits(p.grad, grads_before[i]), i
        assert same_bits(opt.state[p]["exp_avg"], state_before[i]), i
        assert set(opt.state[p]) == {"exp_avg"}
    # put back, the step is the one lion-pytorch makes
    opt.param_groups[1][key] = held
    opt.step()
    ref_opt.step()
    assert_same(ours, opt, ref, ref_opt)
    assert [g["step"] for g in opt.param_groups] == [3, 3]


def test_a_schedule_momentum_outside_lions_betas_is_refused_before_any_update():
    p = torch.nn.Parameter(torch.randn(5))
    before = p.detach().clone()
    with pytest.raises(ValueError, match=r"betas"):
        opt = CLRLion([p], clr.Cyclic(1e-3, 1e-2, 2, base_momentum=0.9, max_momentum=1.5))
        p.grad = torch.ones(5)
        opt.step()
    assert same_bits(p.detach(), before)


# --------------------------------------------------------------------------- GradScaler
@pytest.mark.parametrize("fused_unscale", [False, True], ids=["torch-unscale", "fused-unscale"])
@pytest.mark.parametrize("flat", [False, True], ids=["list", "flat"])
def test_gradscaler_trajectory_and_skipped_steps_keep_the_clock(fused_unscale, flat):
    kw = dict(base_momentum=0.85, max_momentum=0.95)
    ours, ref = twins(values(SHAPES, torch.float32, seed=14))
    opt = CLRLion(ours, clr.Cyclic(1e-3, 1e-2, 3, **kw), weight_decay=0.1, flat=flat)
    opt.fused_unscale = fused_unscale
    assert opt._step_supports_amp_scaling is fused_unscale
    ref_opt = Lion(ref, lr=1e-3, weight_decay=0.1)
    assert not getattr(ref_opt, "_step_supports_amp_scaling", False)  # GradScaler unscales for it
    sched = torch.optim.lr_scheduler.CyclicLR(ref_opt, 1e-3, 1e-2, 3, cycle_momentum=True, **kw)
    scalers = [torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2) for _ in range(2)]
    for s in scalers:
        s.scale(torch.ones(()))
    applied = 0
    for t in range(14):
        overflow, unscale_first = t in (3, 4, 9), t in (6, 9)
        grads = gradients(ours, t, present=default_present)
        scale = scalers[0].get_scale()
        assert scale == scalers[1].get_scale()
        set_grads(ours, grads, scale)
        set_grads(ref, grads, scale)
        if overflow:
            for ps in (ours, ref):
                ps[3].grad[2] = INF if t != 4 else NAN
        before = [p.detach().clone() for p in ours]
        state_before = {i: opt.state[p]["exp_avg"].clone() for i, p in enumerate(ours) if p in opt.state}
        for o, sc in ((opt, scalers[0]), (ref_opt, scalers[1])):
            if unscale_first:  # as for gradient clipping
                sc.unscale_(o)
            sc.step(o)
            sc.update()
        if overflow:
            assert all(same_bits(p.detach(), b) for p, b in zip(ours, before))
            assert all(same_bits(opt.state[ours[i]]["exp_avg"], s) for i, s in state_before.items())
        else:
            sched.step()  # the schedule's clock counts applied updates only
            applied += 1
            assert_same(ours, opt, ref, ref_opt)  # gradients included: the fused step unscales them in place
        assert opt.param_groups[0]["step"] == applied
        assert_groups_match(opt, ref_opt)
    assert applied == 11
    assert_same(ours, opt, ref, ref_opt, grads=False)


# --------------------------------------------------------------------------- bfloat16 / float16
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("wd,betas", [(0.0, (0.9, 0.99)), (0.2, (0.0, 1.0)), (0.05, (0.95, 0.9))], ids=str)
@pytest.mark.parametrize("flat", [False, True], ids=["list", "flat"])
def test_low_precision_is_updated_in_float32_and_rounded_once(dtype, wd, betas, flat):
    """Against the package's update_fn on float32 copies, rounded once (a transposed parameter included)."""
    specs = [((1,), ""), ((7,), ""), ((64,), ""), ((333,), ""), ((5, 3), ""), ((6, 4), "T"), ((), "")]
    ours = [torch.nn.Parameter(v) for v in values(specs, dtype, seed=15)]
    opt = CLRLion(ours, lr=1e-2, betas=betas, weight_decay=wd, flat=flat)
    moments = [torch.zeros_like(p.detach()) for p in ours]
    for t in range(5):
        grads = gradients(ours, t)
        expect = []
        for p, g, m in zip(ours, grads, moments):
            p32, m32 = p.detach().float(), m.float()
            update_fn(p32, g.float(), m32, 1e-2, wd, *betas)
            expect.append((p32.to(dtype), m32.to(dtype)))
        set_grads(ours, grads)
        opt.step()
        for i, (p, (want_p, want_m)) in enumerate(zip(ours, expect)):
            assert same_bits(p.detach(), want_p), f"step {t}, parameter {i}"
            assert same_bits(opt.state[p]["exp_avg"], want_m), f"step {t}, parameter {i}: exp_avg"
            assert opt.state[p]["exp_avg"].dtype == dtype
        moments = [m for _, m in expect]


def test_a_transposed_low_precision_parameter_follows_the_contiguous_ones_bits():
    w = values([((40, 30), "")], torch.bfloat16, seed=16)[0]
    a = torch.nn.Parameter(w.clone())
    b = torch.nn.Parameter(w.t().contiguous().t())  # same values, the Python path
    oa, ob = CLRLion([a], lr=1e-2, weight_decay=0.3), CLRLion([b], lr=1e-2, weight_decay=0.3)
    for t in range(5):
        (g,) = gradients([a], t)
        set_grads([a], [g])
        set_grads([b], [g])
        oa.step()
        ob.step()
    assert not b.is_contiguous()
    assert same_bits(a.detach(), b.detach())
    assert same_bits(oa.state[a]["exp_avg"], ob.state[b]["exp_avg"])


def test_a_float32_state_of_a_bfloat16_parameter_stays_float32_and_the_parameter_is_rounded_once():
    """As after model.to(torch.bfloat16) following a float32 step: the state keeps its dtype."""
    (w,) = values([((6, 5), "")], torch.float32, seed=21)
    p = torch.nn.Parameter(w.clone())
    opt = CLRLion([p], lr=1e-2, weight_decay=0.1)
    (g,) = gradients([p], 0)
    set_grads([p], [g])
    opt.step()
    p.data = p.data.to(torch.bfloat16)
    moment = opt.state[p]["exp_avg"].clone()
    for t in range(1, 4):
        (g,) = gradients([p], t)
        g = g.to(torch.bfloat16)
        want = p.detach().float()
        update_fn(want, g.float(), moment, 1e-2, 0.1, 0.9, 0.99)
        set_grads([p], [g])
        opt.step()
        assert opt.state[p]["exp_avg"].dtype == torch.float32
        assert same_bits(opt.state[p]["exp_avg"], moment)
        assert same_bits(p.detach(), want.to(torch.bfloat16))


def test_the_layout_comes_from_the_rule_declaration():
    from clrfast import _core

    layout = _core.rules["lion"]
    assert layout["slots"] == ("exp_avg",) and layout["step"] is False and layout["root"] is False
    assert CLRLion._state_keys == ("exp_avg",) and CLRLion._cols == layout["width"]
