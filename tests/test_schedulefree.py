"""CLRScheduleFreeAdamW / CLRScheduleFreeSGD against the schedulefree package, bit for bit.

The oracle is the package itself (``AdamWScheduleFree`` and ``SGDScheduleFree``, their
for-loop and foreach paths): every test runs it side by side on copies of the same
parameters and compares with ``torch.equal`` the parameters (in train mode: y; after
``eval()``: x), the state (``z``, ``exp_avg_sq``), the gradients the step leaves behind
(the package normalises them in place) and the package's group keys.
"""

import copy
import io
import itertools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
schedulefree = pytest.importorskip("schedulefree")
hypothesis = pytest.importorskip("hypothesis")

import clrfast as clr  # noqa: E402
from clrfast import _core  # noqa: E402
from clrfast.torch import CLRScheduleFreeAdamW, CLRScheduleFreeSGD  # noqa: E402
from clrfast.torch._sqrt import torch_sqrt_routines  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch.overrides import TorchFunctionMode  # noqa: E402

needs_torch_sqrt = pytest.mark.skipif(
    torch_sqrt_routines()[0] == 0, reason="torch without MKL: its sqrt is not reproduced exactly"
)

RULES = {
    "adamw": (schedulefree.AdamWScheduleFree, CLRScheduleFreeAdamW),
    "sgd": (schedulefree.SGDScheduleFree, CLRScheduleFreeSGD),
}
# Per rule: the package's defaults, then every option; beta1 0.3 / momentum 0.3 makes ATen's
# other lerp branch in train() (weight 0.7) and eval() (weight -2.33), lr=0 the package's
# ZeroDivisionError (ckp1 = 0), an int r and weight_lr_power the package's int powers.
OPTIONS = {
    "adamw": [
        dict(),
        dict(lr=1e-2, weight_decay=0.1, warmup_steps=5, r=1.0),
        dict(lr=3e-2, betas=(0.3, 0.9), eps=1e-3, weight_lr_power=0.0),
        dict(lr=1e-2, betas=(0.6, 0.5), r=2, weight_lr_power=1, warmup_steps=3, weight_decay=0.5),
        dict(lr=0.0, warmup_steps=2),
    ],
    "sgd": [
        dict(),
        dict(lr=0.5, weight_decay=0.1, warmup_steps=5, r=1.0),
        dict(lr=0.1, momentum=0.3, weight_lr_power=0.0),
        dict(lr=0.2, momentum=0.6, r=2, weight_lr_power=1, warmup_steps=3, weight_decay=0.5),
        dict(lr=0.0, warmup_steps=2),
    ],
}
GROUP_KEYS = ("k", "weight_sum", "lr_max", "scheduled_lr", "train_mode", "lr", "warmup_steps", "r", "weight_lr_power")
SCHEDULED_KEYS = tuple(k for k in GROUP_KEYS if k != "lr")  # a scheduled group shows the next update's lr
SHAPES = [(37,), (64, 3), (1000,), (5, 1, 3, 3), (0,), ()]


def _params(dtype=torch.float32, seed=1, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64).to(dtype).requires_grad_() for s in shapes]


def _clone(ps):
    return [p.detach().clone().requires_grad_() for p in ps]


def _feed(lists, t, skip=()):
    """The same fresh gradients for every parameter list (None for the indices in ``skip``)."""
    g = torch.Generator().manual_seed(1000 + t)
    grads = [torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) for p in lists[0]]
    for ps in lists:
        for i, (p, gr) in enumerate(zip(ps, grads)):
            p.grad = None if i in skip else gr.clone()


def _bits(x, y) -> bool:
    return x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)


def _same(ps, ref, qs, ours, grads=True, keys=GROUP_KEYS):
    for i, (p, q) in enumerate(zip(ps, qs)):
        assert _bits(p.detach(), q.detach()), f"parameter {i} {tuple(p.shape)}"
        if grads:
            assert (p.grad is None) == (q.grad is None), i
            if p.grad is not None:
                assert _bits(p.grad, q.grad), f"the gradient of parameter {i}"
        sa, sb = ref.state.get(p, {}), ours.state.get(q, {})
        assert set(sa) == set(sb), (i, sorted(sa), sorted(sb))
        for k in sa:
            assert _bits(sa[k], sb[k]), f"parameter {i}: state[{k!r}]"
    for ga, gb in zip(ref.param_groups, ours.param_groups):
        for k in keys:
            assert ga[k] == gb[k], (k, ga[k], gb[k])
        assert gb["step"] == gb["k"]


def _pair(rule, kw, dtype=torch.float32, foreach=False, flat=False, shapes=SHAPES, **ours_kw):
    ref_cls, ours_cls = RULES[rule]
    ps = _params(dtype, shapes=shapes)
    qs = _clone(ps)
    return ps, ref_cls(ps, foreach=foreach, **kw), qs, ours_cls(qs, flat=flat, **kw, **ours_kw)


# ----------------------------------------------------------------------------- every option
@needs_torch_sqrt
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("foreach", [False, True], ids=["forloop", "foreach"])
@pytest.mark.parametrize("rule", ["adamw", "sgd"])
def test_every_option_matches_the_package_in_train_and_eval_mode(rule, foreach, dtype):
    for kw, flat in itertools.product(OPTIONS[rule], [False, True]):
        ps, ref, qs, ours = _pair(rule, kw, dtype, foreach, flat)
        ref.train()
        ours.train()
        for t in range(10):
            _feed([ps, qs], t, skip=(3,) if t % 3 == 1 else ())
            ref.step()
            ours.step()
            _same(ps, ref, qs, ours)
            if t in (2, 6):  # evaluate at x, then back to y
                ref.eval()
                ours.eval()
                _same(ps, ref, qs, ours)
                ref.train()
                ours.train()
                _same(ps, ref, qs, ours)
        ref.eval()
        ours.eval()
        _same(ps, ref, qs, ours)
        if flat:  # z starts as a copy of p inside the flat storage
            flat_z = ours._flat[0].state["z"]
            assert ours.state[qs[2]]["z"].untyped_storage().data_ptr() == flat_z.untyped_storage().data_ptr()


@pytest.mark.parametrize("rule", ["adamw", "sgd"])
def test_param_groups_with_their_own_values_and_a_group_without_gradients(rule):
    ref_cls, ours_cls = RULES[rule]
    ps, qs = _params(), None
    qs = _clone(ps)
    extra = dict(betas=(0.5, 0.9)) if rule == "adamw" else dict(momentum=0.5)

    def groups(x):
        return [
            dict(params=x[:2], lr=0.02, warmup_steps=4),
            dict(params=x[2:4], lr=0.01, weight_decay=0.2, r=0.5, **extra),
            dict(params=x[4:], weight_lr_power=0.5),
        ]

    ref, ours = ref_cls(groups(ps), lr=0.03), ours_cls(groups(qs), lr=0.03)
    ref.train()
    for t in range(8):
        _feed([ps, qs], t, skip=(0, 1) if t < 3 else ())  # group 0 has no gradient at first
        ref.step()
        ours.step()
        _same(ps, ref, qs, ours)
    ref.eval()
    ours.eval()
    _same(ps, ref, qs, ours)


@pytest.mark.parametrize("rule", ["adamw", "sgd"])
@pytest.mark.parametrize("flat", [False, True])
def test_transposed_parameters_take_the_packages_code(rule, flat):
    shapes = [(5, 3), (4, 6), (7,)]
    ps, ref, qs, ours = _pair(rule, dict(lr=1e-2, weight_decay=0.1, warmup_steps=2), flat=flat, shapes=shapes)
    t_ref, t_ours = torch.randn(6, 4).t().requires_grad_(), None
    t_ours = t_ref.detach().t().clone().t().requires_grad_()
    ref.add_param_group(dict(params=[t_ref]))
    ours.add_param_group(dict(params=[t_ours]))
    ref.train()
    gen = torch.Generator().manual_seed(5)
    for t in range(5):
        _feed([ps, qs], t)
        g = torch.randn(6, 4, generator=gen).t()
        t_ref.grad, t_ours.grad = g.clone(), g.clone()
        ref.step()
        ours.step()
        _same(ps + [t_ref], ref, qs + [t_ours], ours)
    ref.eval()
    ours.eval()
    _same(ps + [t_ref], ref, qs + [t_ours], ours)


# ----------------------------------------------------------------------------- the mode protocol
@pytest.mark.parametrize("rule", ["adamw", "sgd"])
def test_a_step_in_eval_mode_makes_the_switch_train_makes(rule):
    ps, ref, qs, ours = _pair(rule, dict(lr=1e-2, warmup_steps=3))
    assert ours.param_groups[0]["train_mode"] is False  # the package's initial mode
    ref.train()
    for t in range(6):
        _feed([ps, qs], t)
        ref.step()
        ours.step()  # never switched by hand: the first step, and each after eval(), switches
        _same(ps, ref, qs, ours)
        ref.eval()
        ours.eval()
        _same(ps, ref, qs, ours)
        ref.train()
    assert ours.param_groups[0]["train_mode"] is False


@pytest.mark.parametrize("rule", ["adamw", "sgd"])
@pytest.mark.parametrize(
    "breakage",
    ["grad shape", "k", "step", "lr", "train_mode", "weight_sum", "warmup_steps", "beta1"],
)
def test_a_refused_step_in_eval_mode_changes_nothing(rule, breakage):
    ps, ref, qs, ours = _pair(rule, dict(lr=1e-2, weight_decay=0.1))
    for t in range(3):
        _feed([qs], t)
        ours.step()
    ours.eval()
    _feed([qs], 9)
    before = [q.detach().clone() for q in qs]
    grads = [q.grad.clone() for q in qs]
    state = copy.deepcopy({i: dict(ours.state[q]) for i, q in enumerate(qs)})
    group = ours.param_groups[0]
    kept = {k: v for k, v in group.items() if k != "params"}
    beta_key = "betas" if rule == "adamw" else "momentum"
    written = {
        "k": ("k", 2),
        "step": ("step", 2.5),
        "lr": ("lr", float("nan")),
        "train_mode": ("train_mode", "no"),
        "weight_sum": ("weight_sum", -1.0),
        "warmup_steps": ("warmup_steps", -3),
        "beta1": (beta_key, (0.0, 0.999) if rule == "adamw" else 1.0),
    }
    if breakage == "grad shape":
        qs[1].grad = qs[1].detach()  # a gradient in the parameter's memory
        grads[1] = qs[1].grad.clone()
    else:
        key, value = written[breakage]
        group[key] = value
        kept[key] = value
    with pytest.raises((ValueError, TypeError)):
        ours.step()
    for i, q in enumerate(qs):
        assert _bits(q.detach(), before[i]) and _bits(q.grad, grads[i])
        for k, v in state[i].items():
            assert _bits(ours.state[q][k], v)
    assert {k: v for k, v in group.items() if k != "params"} == kept


def test_the_k_step_message_names_both_keys():
    opt = CLRScheduleFreeSGD(_params(), lr=0.1)
    opt.param_groups[0]["k"] = 4
    _feed([opt.param_groups[0]["params"]], 0)
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['k'\] is 4 and param_groups\[0\]\['step'\] 0"):
        opt.step()


@pytest.mark.parametrize("rule", ["adamw", "sgd"])
def test_averaged_evaluates_at_x_and_returns_to_y(rule):
    ps, ref, qs, ours = _pair(rule, dict(lr=1e-2))
    ref.train()
    for t in range(4):
        _feed([ps, qs], t)
        ref.step()
        ours.step()
    with ours.averaged() as opt:
        assert opt is ours and ours.param_groups[0]["train_mode"] is False
        ref.eval()
        _same(ps, ref, qs, ours)
    assert ours.param_groups[0]["train_mode"] is True
    ref.train()
    _same(ps, ref, qs, ours)
    ours.eval()
    with ours.averaged():  # already at x: stays there
        pass
    assert ours.param_groups[0]["train_mode"] is False


def test_batchnorm_statistics_recomputed_at_x():
    """The README recipe: BatchNorm's running statistics, recomputed at the averaged weights."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.ReLU(), torch.nn.Linear(6, 1))
    opt = CLRScheduleFreeAdamW(model.parameters(), lr=5e-2, warmup_steps=3)
    data = [torch.randn(32, 4, generator=torch.Generator().manual_seed(i)) for i in range(12)]
    model.train()
    for xb in data:
        opt.zero_grad()
        model(xb).square().mean().backward()
        opt.step()
    # the recipe
    with opt.averaged():
        bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # a cumulative average over the batches below
        with torch.no_grad():
            for xb in data[:8]:
                model(xb)
        model.eval()
        # independently: the batch statistics of the first layer's output at x
        w, b = model[0].weight.detach(), model[0].bias.detach()
        h = [xb @ w.T + b for xb in data[:8]]
        mean = torch.stack([x.mean(0) for x in h]).mean(0)
        var = torch.stack([x.var(0, unbiased=True) for x in h]).mean(0)
        torch.testing.assert_close(bns[0].running_mean, mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bns[0].running_var, var, rtol=1e-5, atol=1e-6)
    assert opt.param_groups[0]["train_mode"] is True


# ----------------------------------------------------------------------------- state dicts and resumes
@pytest.mark.parametrize("rule", ["adamw", "sgd"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_state_dicts_interchange_with_the_package_both_ways(rule, mode):
    ps, ref, qs, ours = _pair(rule, dict(lr=1e-2, weight_decay=0.05, warmup_steps=4))
    ref.train()
    for t in range(5):
        _feed([ps, qs], t)
        ref.step()
        ours.step()
    if mode == "eval":
        ref.eval()
        ours.eval()
    # swap: each continues from the other's state
    ref_sd, ours_sd = copy.deepcopy(ref.state_dict()), copy.deepcopy(ours.state_dict())
    ref.load_state_dict(ours_sd)
    ours.load_state_dict(ref_sd)
    _same(ps, ref, qs, ours)
    ref.train()
    for t in range(5, 10):
        _feed([ps, qs], t)
        ref.step()
        ours.step()
        _same(ps, ref, qs, ours)
    # into fresh optimizers, each from the other's dict
    ref2, ours2 = RULES[rule][0](ps, foreach=False, lr=1.0), RULES[rule][1](qs, lr=1.0)
    ref2.load_state_dict(copy.deepcopy(ours.state_dict()))
    ours2.load_state_dict(copy.deepcopy(ref.state_dict()))
    for t in range(10, 13):
        _feed([ps, qs], t)
        ref2.step()
        ours2.step()
        _same(ps, ref2, qs, ours2)


@pytest.mark.parametrize("rule", ["adamw", "sgd"])
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("flat", [False, True])
def test_a_checkpoint_taken_in_either_mode_resumes_bit_identically(rule, mode, flat):
    ps, ref, qs, ours = _pair(rule, dict(lr=1e-2, warmup_steps=3, r=0.5), flat=flat)
    for t in range(4):
        _feed([qs], t)
        ours.step()
    if mode == "eval":
        ours.eval()
    buf = io.BytesIO()
    torch.save(dict(params=[q.detach() for q in qs], opt=ours.state_dict()), buf)
    # the run goes on ...
    ours.train()
    for t in range(4, 8):
        _feed([qs], t)
        ours.step()
    ours.eval()
    # ... and a new process resumes from the file (no train() call needed)
    buf.seek(0)
    saved = torch.load(buf)
    rs = [p.clone().requires_grad_() for p in saved["params"]]
    resumed = RULES[rule][1](rs, lr=1.0, flat=not flat)
    resumed.load_state_dict(saved["opt"])
    assert resumed.param_groups[0]["train_mode"] is (mode == "train")
    for t in range(4, 8):
        _feed([rs], t)
        resumed.step()
    resumed.eval()
    _same(qs, ours, rs, resumed, grads=False)


@pytest.mark.parametrize("rule", ["adamw", "sgd"])
def test_copies_continue_bit_identically(rule):
    ps, ref, qs, ours = _pair(rule, dict(lr=1e-2), flat=True)
    ref.train()
    for t in range(3):
        _feed([ps, qs], t)
        ref.step()
        ours.step()
    qs2, ours2 = copy.deepcopy((qs, ours))
    for t in range(3, 6):
        _feed([ps, qs, qs2], t)
        ref.step()
        ours.step()
        ours2.step()
        _same(ps, ref, qs, ours)
        _same(ps, ref, qs2, ours2)


# ----------------------------------------------------------------------------- schedule=
def _triangle(t, base, top, half):
    cycle = math.floor(1 + t / (2 * half))
    x = abs(t / half - 2 * cycle + 1)
    return base + (top - base) * max(0.0, 1 - x)


@pytest.mark.parametrize("rule", ["adamw", "sgd"])
def test_a_schedule_replaces_the_warmup(rule):
    """lr(k) replaces lr * min(1, (k+1)/warmup_steps): the package fed lr(k) by hand is the oracle,
    and lr_max, the averaging weight and weight_sum are recomputed here from their definitions."""
    base, top, half = 1e-3, 1e-2, 3
    sched = clr.Cyclic(base, top, half)
    ps, ref, qs, ours = _pair(rule, dict(warmup_steps=0, r=1.0), schedule=sched)
    ref.train()
    lr_max, weight_sum = -1.0, 0.0
    for t in range(14):
        lr = sched.lr(t)
        assert lr == pytest.approx(_triangle(t, base, top, half), rel=1e-12)
        assert ours.param_groups[0]["lr"] == lr  # the group shows the next update's lr
        ref.param_groups[0]["lr"] = lr
        _feed([ps, qs], t)
        ref.step()
        ours.step()
        _same(ps, ref, qs, ours, keys=SCHEDULED_KEYS)
        lr_max = max(lr_max, lr)
        weight_sum += (t + 1) ** 1.0 * lr_max**2.0
        g = ours.param_groups[0]
        assert g["scheduled_lr"] == lr and g["lr_max"] == lr_max and g["weight_sum"] == weight_sum
    ref.eval()
    ours.eval()
    _same(ps, ref, qs, ours, keys=SCHEDULED_KEYS)
    # the schedule travels with the state dict and takes over after a load
    fresh = RULES[rule][1](_clone(qs), schedule=clr.Constant(1.0))
    fresh.load_state_dict(ours.state_dict())
    assert fresh.param_groups[0]["schedule"] == sched


def test_a_cosine_warmup_schedule():
    sched = clr.WarmupCosine(2e-2, warmup_steps=4, total_steps=12)
    ps, ref, qs, ours = _pair("adamw", dict(weight_decay=0.01), schedule=sched)
    ref.train()
    for t in range(12):
        ref.param_groups[0]["lr"] = sched.lr(t)
        _feed([ps, qs], t)
        ref.step()
        ours.step()
    _same(ps, ref, qs, ours, keys=SCHEDULED_KEYS)
    assert ours.param_groups[0]["lr_max"] == max(sched.lr(t) for t in range(12))


# ----------------------------------------------------------------------------- precision, GradScaler
class IEEESqrt(TorchFunctionMode):
    """The package's code with a correctly rounded float32 square root (the kernel's root of
    bfloat16/float16 math and of match_torch=False)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.sqrt_:
            x = args[0]
            assert x.dtype == torch.float32
            return x.copy_(x.double().sqrt().float())
        if func in (torch._foreach_sqrt, torch._foreach_sqrt_):
            raise AssertionError("the IEEE oracle runs the package's for-loop code")
        return func(*args, **kwargs)


def test_match_torch_false_takes_the_ieee_root():
    ps, ref, qs, ours = _pair("adamw", dict(lr=1e-2, weight_decay=0.1), match_torch=False)
    ref.train()
    for t in range(6):
        _feed([ps, qs], t)
        with IEEESqrt():
            ref.step()
        ours.step()
        _same(ps, ref, qs, ours)


@pytest.mark.parametrize("rule", ["adamw", "sgd"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_is_updated_in_float32_and_rounded_once(rule, dtype):
    shapes = [(300,), (7, 5)]
    qs = _params(torch.float32, shapes=shapes)
    qs = [q.detach().to(dtype).requires_grad_() for q in qs]
    ps = [q.detach().float().requires_grad_() for q in qs]  # the package in float32 ...
    kw = dict(lr=1e-2, weight_decay=0.1, warmup_steps=2)
    ref, ours = RULES[rule][0](ps, foreach=False, **kw), RULES[rule][1](qs, **kw)
    ref.train()
    for t in range(5):
        _feed([qs], t)
        for p, q in zip(ps, qs):
            p.grad = q.grad.float()
        with IEEESqrt():
            ref.step()
        ours.step()
        for p, q in zip(ps, qs):  # ... rounded once to the parameter's dtype
            assert _bits(q.detach(), p.detach().to(dtype))
            for k in ref.state[p]:
                assert _bits(ours.state[q][k], ref.state[p][k].to(dtype))
            assert _bits(q.grad, p.grad.to(dtype))
            p.data = p.data.to(dtype).float()
            for k in ref.state[p]:
                ref.state[p][k] = ref.state[p][k].to(dtype).float()


@needs_torch_sqrt
@pytest.mark.parametrize("fused_unscale", [False, True])
def test_gradscaler_trajectory_and_skipped_steps(fused_unscale):
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(7, 13), torch.nn.Tanh(), torch.nn.Linear(13, 3))
    b = copy.deepcopy(a)
    ref = schedulefree.AdamWScheduleFree(a.parameters(), lr=1e-2, warmup_steps=3)
    ours = CLRScheduleFreeAdamW(b.parameters(), lr=1e-2, warmup_steps=3)
    ours.fused_unscale = fused_unscale
    ref.train()
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
    assert ours.param_groups[0]["k"] == ref.param_groups[0]["k"] == 8
    _same(list(a.parameters()), ref, list(b.parameters()), ours)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "rule,kw,exc,match",
    [
        ("adamw", dict(lr=-1e-3), ValueError, "Invalid learning rate"),
        ("adamw", dict(lr="x"), TypeError, r"CLRScheduleFreeAdamW\['lr'\]"),
        ("adamw", dict(betas=(0.0, 0.999)), ValueError, r"Invalid beta parameter at index 0.*eval\(\) divides"),
        ("adamw", dict(betas=(0.9, 1.0)), ValueError, r"Invalid beta parameter at index 1"),
        ("adamw", dict(betas=(1.5, 0.9)), ValueError, r"Invalid beta parameter at index 0"),
        ("adamw", dict(betas=0.9), TypeError, r"must be a pair"),
        ("adamw", dict(eps=-1.0), ValueError, "Invalid epsilon value"),
        ("adamw", dict(weight_decay=-0.1), ValueError, "Invalid weight_decay value"),
        ("adamw", dict(warmup_steps=-1), ValueError, r"\['warmup_steps'\] must be >= 0"),
        ("adamw", dict(warmup_steps=2.5), ValueError, r"\['warmup_steps'\] must be a whole number"),
        ("adamw", dict(r=float("nan")), ValueError, r"\['r'\] must be finite"),
        ("adamw", dict(weight_lr_power=-1.0), ValueError, r"\['weight_lr_power'\] must be >= 0"),
        ("adamw", dict(foreach="yes"), TypeError, r"\['foreach'\] must be a bool or None"),
        ("adamw", dict(schedule="cosine"), TypeError, "must be a clrfast schedule"),
        ("adamw", dict(schedule=clr.Constant(1e-3), lr=1e-3), ValueError, "the schedule sets the lr"),
        ("adamw", dict(schedule=clr.Constant(1e-3), warmup_steps=5), ValueError, "replaces the built-in warmup"),
        ("adamw", dict(schedule=clr.OneCycle(1e-2, 100)), ValueError, "defines a momentum"),
        ("sgd", dict(momentum=0.0), ValueError, "Momentum must be between 0 and 1 exclusive: 0.0"),
        ("sgd", dict(momentum=1.0), ValueError, "Momentum must be between 0 and 1 exclusive: 1.0"),
        ("sgd", dict(momentum=-0.5), ValueError, "Momentum must be between 0 and 1 exclusive"),
        ("sgd", dict(lr=-1.0), ValueError, "Invalid learning rate"),
        ("sgd", dict(weight_decay=-1.0), ValueError, "Invalid weight_decay value"),
        ("sgd", dict(schedule=clr.Cyclic(1e-3, 1e-2, 5, base_momentum=0.8, max_momentum=0.9)), ValueError, "momentum"),
    ],
)
def test_bad_input_names_the_argument(rule, kw, exc, match):
    with pytest.raises(exc, match=match):
        RULES[rule][1](_params(), **kw)


def test_a_schedule_without_momentum_and_the_default_lr_are_accepted():
    opt = CLRScheduleFreeAdamW(_params(), 0.0025, schedule=clr.OneCycle(1e-2, 100, cycle_momentum=False))
    assert opt.param_groups[0]["lr"] == clr.OneCycle(1e-2, 100, cycle_momentum=False).lr(0)


def test_a_loaded_state_dict_is_checked_before_anything_changes():
    opt = CLRScheduleFreeSGD(_params(), lr=0.1)
    _feed([opt.param_groups[0]["params"]], 0)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    sd["param_groups"][0]["k"] = 2.5
    with pytest.raises(ValueError, match=r"must be a whole number, got 2.5"):
        opt.load_state_dict(sd)
    sd["param_groups"][0]["k"] = 1
    sd["param_groups"][0]["momentum"] = 1.0
    with pytest.raises(ValueError, match="Momentum must be between 0 and 1 exclusive"):
        opt.load_state_dict(sd)
    assert opt.param_groups[0]["k"] == 1 and opt.param_groups[0]["momentum"] == 0.9


def test_state_of_another_dtype_is_refused_at_the_step_and_cast_at_a_load():
    ps, ref, qs, ours = _pair("adamw", dict(lr=1e-2), shapes=[(5,), (3, 2)])
    ref.train()
    for t in range(2):
        _feed([ps, qs], t)
        ref.step()
        ours.step()
    for q in qs:
        q.data = q.data.double()  # model.to(float64) leaves the state in float32
    _feed([qs], 2)
    before = [q.detach().clone() for q in qs]
    with pytest.raises(TypeError, match=r"state\['z'\] is torch.float32, the parameter torch.float64"):
        ours.step()
    assert all(_bits(q.detach(), b) for q, b in zip(qs, before)) and ours.param_groups[0]["k"] == 2
    fresh = CLRScheduleFreeAdamW(qs, lr=1.0)
    fresh.load_state_dict(ref.state_dict())  # torch's load casts the state to the parameters' dtype
    assert fresh.state[qs[0]]["z"].dtype == torch.float64
    fresh.step()
    assert fresh.param_groups[0]["k"] == 3


def test_a_gradient_shared_by_two_parameters_is_refused():
    a, b = torch.zeros(4, requires_grad=True), torch.zeros(4, requires_grad=True)
    opt = CLRScheduleFreeSGD([a, b], lr=0.1)
    a.grad = b.grad = torch.ones(4)  # the step normalises gradients in place: it would write this one twice
    with pytest.raises(ValueError, match="share memory"):
        opt.step()
    assert torch.equal(a.grad, torch.ones(4)) and opt.param_groups[0]["k"] == 0


def test_the_layout_comes_from_the_rule_declarations():
    a, s = _core.rules["schedulefree_adamw"], _core.rules["schedulefree_sgd"]
    assert a["slots"] == ("z", "exp_avg_sq") and s["slots"] == ("z",)
    assert a["step"] is False and s["step"] is False and a["root"] is True and s["root"] is False
    assert a["grad_out"] is True and s["grad_out"] is True
    assert a["scalars"] == ("lr", "beta1", "beta2", "eps", "weight_decay", "ckp1", "bias_correction2")
    assert CLRScheduleFreeAdamW._state_keys == ("z", "exp_avg_sq") and CLRScheduleFreeAdamW._writes_grads


def test_compiled_step_matches_the_package():
    ps, ref, qs, ours = _pair("sgd", dict(lr=0.1, weight_decay=0.1), shapes=[(37,), (8, 3)])
    ref.train()
    step = torch.compile(ours.step, backend="eager")
    for t in range(4):
        _feed([ps, qs], t)
        ref.step()
        step()
        _same(ps, ref, qs, ours)


# ----------------------------------------------------------------------------- random runs
@needs_torch_sqrt
@settings(max_examples=20, deadline=None)
@given(
    ops=st.lists(
        st.sampled_from(["step", "step", "step", "eval", "train", "lr", "zero_grad", "reload ours", "reload ref"]),
        min_size=1,
        max_size=14,
    ),
    rule=st.sampled_from(["adamw", "sgd"]),
    flat=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    lr=st.floats(1e-3, 0.1),
)
def test_random_runs_stay_bit_identical(ops, rule, flat, dtype, lr):
    """Steps (ours switches itself where the package needs train()), mode switches, lr writes,
    zero_grad and state-dict reloads in either direction, side by side."""
    ps, ref, qs, ours = _pair(rule, dict(lr=lr, warmup_steps=2, weight_decay=0.01), dtype, flat=flat, shapes=SHAPES[:4])
    rng = np.random.default_rng(0)
    for t, op in enumerate(ops):
        if op == "step":
            _feed([ps, qs], t)
            ref.train()
            ref.step()
            ours.step()
        elif op in ("eval", "train"):
            getattr(ref, op)()
            getattr(ours, op)()
        elif op == "lr":
            value = float(rng.uniform(0.0, 0.1))
            ref.param_groups[0]["lr"] = ours.param_groups[0]["lr"] = value
        elif op == "zero_grad":
            ref.zero_grad()
            ours.zero_grad()
        else:
            sd = copy.deepcopy(ours.state_dict() if op == "reload ours" else ref.state_dict())
            ref.load_state_dict(copy.deepcopy(sd))
            ours.load_state_dict(sd)
        _same(ps, ref, qs, ours)
