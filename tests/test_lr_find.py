"""LR range test: sweep values, loss bookkeeping, restore, divergence, suggestion rule, schedules, plots."""

import math
import random
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import clrfast as clr  # noqa: E402
from clrfast.torch import CLRSGD, LRFindResult, lr_find  # noqa: E402
from clrfast.torch.lr_find import suggest  # noqa: E402


# ----------------------------------------------------------------------------- helpers
class Scalar(torch.nn.Module):
    """One float64 weight; the closures below make its loss a known function of the lr."""

    def __init__(self, w=1.0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([w], dtype=torch.float64))


def quad_closure(model, batch):
    # loss = 0.5 * c * w^2, gradient c * w; c comes with the batch.
    return 0.5 * batch * (model.w**2).sum()


def batches(n, c=1.0):
    return [torch.tensor(c, dtype=torch.float64)] * n


def sweep_lr(start, end, n, t, mode="exp"):
    f = t / (n - 1)
    return start * (end / start) ** f if mode == "exp" else start + (end - start) * f


def ema(xs, beta):
    out, avg = [], 0.0
    for i, x in enumerate(xs):
        avg = beta * avg + (1 - beta) * x
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def quad_oracle(start, end, n, beta, diverge, c_per_step, w0=1.0, mode="exp"):
    """Plain SGD on 0.5*c*w^2, computed with Python floats: (lrs, losses, smoothed, stop)."""
    w, avg, best = w0, 0.0, math.inf
    lrs, losses, smoothed = [], [], []
    for t in range(n):
        lr = sweep_lr(start, end, n, t, mode)
        cs = c_per_step(t)
        loss = sum(0.5 * c * w * w for c in cs) / len(cs)
        w = w - lr * (sum(c * w for c in cs) / len(cs))
        avg = beta * avg + (1 - beta) * loss
        s = avg / (1 - beta ** (t + 1))
        lrs.append(lr)
        losses.append(loss)
        smoothed.append(s)
        best = min(best, s)
        if s > diverge * best:
            return lrs, losses, smoothed, "diverged"
    return lrs, losses, smoothed, "end"


# ----------------------------------------------------------------------------- the sweep itself
@pytest.mark.parametrize("mode", ["exp", "linear"])
@pytest.mark.parametrize("kind", ["sgd", "clrsgd"])
def test_lrs_used_by_the_optimizer_follow_the_sweep(mode, kind):
    model = Scalar()
    if kind == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
    else:
        opt = CLRSGD(model.parameters(), clr.Constant(0.5))
    used = []
    opt.register_step_pre_hook(lambda o, a, k: used.append(float(o.param_groups[0]["lr"])))
    start, end, n = 1e-4, 1e-2, 25
    res = lr_find(
        model,
        None,
        batches(40),
        opt,
        closure=quad_closure,
        start_lr=start,
        end_lr=end,
        num_steps=n,
        mode=mode,
        progress=False,
    )
    expect = [sweep_lr(start, end, n, t, mode) for t in range(n)]
    assert res.stop_reason == "end"
    np.testing.assert_allclose(used, expect, rtol=1e-14)
    np.testing.assert_allclose(res.lrs, expect, rtol=1e-14)
    assert res.lrs[0] == start and res.lrs[-1] == pytest.approx(end, rel=1e-14)


def test_losses_smoothing_and_divergence_match_a_python_oracle():
    model = Scalar(1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    start, end, n, beta, div = 1e-3, 30.0, 80, 0.9, 4.0
    res = lr_find(
        model,
        None,
        batches(100),
        opt,
        closure=quad_closure,
        start_lr=start,
        end_lr=end,
        num_steps=n,
        smooth=beta,
        diverge=div,
        progress=False,
    )
    lrs, losses, smoothed, stop = quad_oracle(start, end, n, beta, div, lambda t: [1.0])
    assert stop == res.stop_reason == "diverged"
    assert len(res.lrs) == len(lrs) < n
    np.testing.assert_allclose(res.lrs, lrs, rtol=1e-13)
    np.testing.assert_allclose(res.losses, losses, rtol=1e-10)
    np.testing.assert_allclose(res.smoothed, smoothed, rtol=1e-10)
    np.testing.assert_allclose(res.smoothed, ema(res.losses, beta), rtol=1e-12)
    assert res.diverged_lr == pytest.approx(lrs[-1], rel=1e-13)
    # SGD on 0.5*w^2 grows |w| only for lr > 2.
    assert res.diverged_lr > 2.0


def test_gradient_accumulation_averages_micro_batches():
    model = Scalar(1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cs = [1.0, 3.0, 0.5, 2.0]
    data = [torch.tensor(c, dtype=torch.float64) for c in cs] * 30
    res = lr_find(
        model,
        None,
        data,
        opt,
        closure=quad_closure,
        start_lr=1e-3,
        end_lr=0.3,
        num_steps=20,
        accumulation_steps=2,
        smooth=0.5,
        progress=False,
    )
    lrs, losses, smoothed, stop = quad_oracle(1e-3, 0.3, 20, 0.5, 4.0, lambda t: cs[(2 * t) % 4 : (2 * t) % 4 + 2])
    assert res.stop_reason == stop == "end"
    np.testing.assert_allclose(res.losses, losses, rtol=1e-12)
    np.testing.assert_allclose(res.smoothed, smoothed, rtol=1e-12)


def test_nan_loss_is_divergence_not_a_crash():
    model = Scalar()
    calls = {"n": 0}

    def closure(m, batch):
        calls["n"] += 1
        loss = quad_closure(m, batch)
        return loss * float("nan") if calls["n"] > 15 else loss

    before = model.w.detach().clone()
    res = lr_find(
        model,
        None,
        batches(50),
        torch.optim.SGD(model.parameters(), lr=0.1),
        closure=closure,
        start_lr=1e-4,
        end_lr=1e-2,
        num_steps=40,
        progress=False,
    )
    assert res.stop_reason == "nan"
    assert len(res.losses) == 15 and np.isfinite(res.losses).all()
    assert res.diverged_lr == pytest.approx(sweep_lr(1e-4, 1e-2, 40, 15), rel=1e-13)
    assert torch.equal(model.w.detach(), before)


def scripted(values):
    """A closure whose k-th loss is values[k] exactly; its gradient is zero, so only the script matters."""
    it = iter(values)
    return lambda m, batch: (m.w * 0.0).sum() + next(it)


DOWN_UP = [-1.0 - 0.25 * t for t in range(17)] + [-5.0 + 0.5 * k for k in range(1, 8)]  # -1 .. -5 .. -1.5
FLAT_UP = [-2.0] * 10 + [-2.0 + k for k in range(1, 21)]  # -2, then +1 a step
CROSSING = [1.0 - 0.25 * t for t in range(9)] + [-1.0 + 0.5 * k for k in range(1, 21)]  # 1 .. -1, then up
POSITIVE = [2.0] * 10 + [2.0 + k for k in range(1, 21)]


# Unsmoothed (smooth=0), so each stop can be read off the script by hand: it is the first step
# whose loss exceeds best + (diverge - 1)*|best|; a loss equal to that bound does not stop.
@pytest.mark.parametrize(
    "losses, diverge, n_recorded",
    [
        (DOWN_UP, 4.0, None),  # stays negative, best -5: the bound is +10, never reached
        (DOWN_UP, 1.5, 23),  # bound -5 + 2.5 = -2.5; -2.5 (step 21) does not stop, -2.0 (step 22) does
        (FLAT_UP, 4.0, 17),  # bound -2 + 6 = 4; 4 (step 15) does not stop, 5 (step 16) does
        (FLAT_UP, 1.5, 12),  # bound -2 + 1 = -1; -1 (step 10) does not stop, 0 (step 11) does
        (CROSSING, 4.0, 16),  # best -1 at step 8: bound 2; 2.0 (step 14) does not stop, 2.5 (step 15) does
        (POSITIVE, 4.0, 17),  # the usual rule: stops above 4*2 = 8, at 9 (step 16)
    ],
)
def test_divergence_is_judged_by_the_rise_above_the_best(losses, diverge, n_recorded):
    model = Scalar()
    n = len(losses)
    res = lr_find(
        model,
        None,
        batches(n),
        torch.optim.SGD(model.parameters(), lr=0.1),
        closure=scripted(losses),
        start_lr=1e-3,
        end_lr=1.0,
        num_steps=n,
        smooth=0.0,
        diverge=diverge,
        progress=False,
    )
    if n_recorded is None:
        assert res.stop_reason == "end" and res.diverged_lr is None
        n_recorded = n
    else:
        assert res.stop_reason == "diverged"
        assert res.diverged_lr == pytest.approx(sweep_lr(1e-3, 1.0, n, n_recorded - 1), rel=1e-14)
    assert res.losses.tolist() == losses[:n_recorded]
    assert res.smoothed.tolist() == losses[:n_recorded]


def test_smoothed_negative_losses_diverge_where_a_python_oracle_says():
    # A noisy log-likelihood-like curve: falls from -1 towards -4, then blows up.
    t = np.arange(60)
    losses = (-1 - 3 * np.tanh(t / 8) + 0.3 * (-1.0) ** t + np.where(t > 35, np.exp((t - 35) / 3.0), 0)).tolist()
    beta, div = 0.9, 2.5
    avg, best, stop_at = 0.0, math.inf, None
    for i, x in enumerate(losses):
        avg = beta * avg + (1 - beta) * x
        s = avg / (1 - beta ** (i + 1))
        best = min(best, s)
        if s - best > (div - 1) * abs(best):
            stop_at = i
            break
    assert stop_at is not None and 40 < stop_at < 59 and best < -3  # the script really dives, then diverges
    model = Scalar()
    res = lr_find(
        model,
        None,
        batches(60),
        torch.optim.SGD(model.parameters(), lr=0.1),
        closure=scripted(losses),
        start_lr=1e-3,
        end_lr=1.0,
        num_steps=60,
        smooth=beta,
        diverge=div,
        progress=False,
    )
    assert res.stop_reason == "diverged" and len(res.losses) == stop_at + 1
    np.testing.assert_allclose(res.smoothed, ema(losses[: stop_at + 1], beta), rtol=1e-12)


# ----------------------------------------------------------------------------- restoring state
def _net():
    torch.manual_seed(3)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(8, 2)
    )


def _data(n=16):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 4, generator=g), torch.randint(0, 2, (8,), generator=g)) for _ in range(n)]


def _bits(t):
    # Compare floats by their bytes: torch.equal alone calls NaN != NaN and -0.0 == 0.0.
    t = t.detach().contiguous().reshape(-1)
    return t.view(torch.uint8) if t.is_floating_point() else t


def _assert_same(a, b, where="state"):
    """Equal structure and bit-equal tensors (same dtype, NaN equal to NaN), recursively."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape and a.device == b.device, where
        assert torch.equal(_bits(a), _bits(b)), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _grads(model):
    return [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]


def _rngs():
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def _assert_same_rngs(before):
    _assert_same(torch.get_rng_state(), before[0], "torch rng")
    now = np.random.get_state()
    assert now[0] == before[1][0] and np.array_equal(now[1], before[1][1]) and now[2:] == before[1][2:]
    assert random.getstate() == before[2]


@pytest.mark.parametrize(
    "a, b",
    [
        ({"params": [0, 1]}, {"params": [0, 2]}),
        ({"x": [torch.zeros(2)]}, {"x": [torch.tensor([0.0, -0.0])]}),
        ({"x": torch.zeros(2)}, {"x": torch.zeros(2, dtype=torch.float64)}),
        ({"x": (0.9, 0.999)}, {"x": (0.9, 0.99)}),
        ({"x": None}, {"x": torch.zeros(1)}),
        ({"x": 1}, {"y": 1}),
    ],
)
def test_the_state_comparison_can_fail(a, b):
    with pytest.raises(AssertionError):
        _assert_same(a, b)


@pytest.mark.parametrize("kind", ["adam", "clrsgd"])
def test_model_grads_optimizer_and_rngs_are_restored_bit_for_bit(kind):
    import copy

    def make_opt(m):
        if kind == "adam":
            return torch.optim.Adam(m.parameters(), lr=1e-3)
        return CLRSGD(m.parameters(), clr.Cyclic(1e-3, 1e-2, step_size_up=10), momentum=0.9)

    model = _net()
    opt = make_opt(model)
    data = _data()
    loss_fn = torch.nn.functional.cross_entropy
    for x, y in data[:3]:  # give the optimizer some state to keep, and leave the grads of the last batch
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    model[4].bias.grad = None  # one None among the tensors
    model.eval()
    model_before = copy.deepcopy(model.state_dict())
    opt_before = copy.deepcopy(opt.state_dict())
    grads_before = _grads(model)
    assert sum(g is not None for g in grads_before) == len(grads_before) - 1
    twin = copy.deepcopy(model)
    twin_opt = make_opt(twin)
    twin_opt.load_state_dict(copy.deepcopy(opt_before))
    torch.manual_seed(11)
    np.random.seed(12)
    random.seed(13)
    rng_before = _rngs()

    res = lr_find(model, loss_fn, data, opt, start_lr=1e-4, end_lr=10, num_steps=30, progress=False)

    assert len(res.lrs) >= 10
    _assert_same(model.state_dict(), model_before, "model")
    _assert_same(opt.state_dict(), opt_before, "optimizer")
    _assert_same(_grads(model), grads_before, "grads")
    assert not model.training and not any(m.training for m in model.modules())
    _assert_same_rngs(rng_before)
    if kind == "clrsgd":
        assert opt.param_groups[0]["step"] == 3
        assert opt.param_groups[0]["schedule"] == clr.Cyclic(1e-3, 1e-2, step_size_up=10)
    # The optimizer carries on exactly as before: the same next update as the untouched twin.
    for m, o in ((model, opt), (twin, twin_opt)):
        m.train()
        torch.manual_seed(5)  # the same dropout mask for both
        o.zero_grad()
        loss_fn(m(data[3][0]), data[3][1]).backward()
        o.step()
    _assert_same(model.state_dict(), twin.state_dict(), "after one more step")
    _assert_same(opt.state_dict(), twin_opt.state_dict(), "optimizer after one more step")


@pytest.mark.parametrize("fail_at", [None, 12])
def test_existing_grads_are_restored_bit_for_bit(fail_at):
    # The optimizer steps all but the last bias; backward still accumulates into that bias's .grad,
    # and the grad of a frozen weight must come back untouched too. The optimizer also steps a
    # temperature of the loss, outside the model: its value and grad come back as well.
    model = _net()
    model[1].weight.requires_grad_(False)
    temp = torch.nn.Parameter(torch.tensor(1.5))
    opt = torch.optim.SGD([p for n, p in model.named_parameters() if n != "4.bias"] + [temp], lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(7)
    for p in [*model.parameters(), temp]:
        p.grad = torch.randn(p.shape, dtype=p.dtype, generator=g)
    model[0].bias.grad = None
    model[1].weight.grad[0] = float("nan")  # NaN comes back as NaN, with its bits
    model[4].weight.grad = model[4].weight.grad.t().contiguous().t()  # a transposed layout comes back too
    grads_before = _grads(model)
    strides_before = [None if p.grad is None else p.grad.stride() for p in model.parameters()]
    temp_before = (temp.detach().clone(), temp.grad.clone())
    calls = {"n": 0}

    def loss_fn(out, y):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise RuntimeError("boom")
        return torch.nn.functional.cross_entropy(out / temp, y)

    kw = dict(start_lr=1e-4, end_lr=1.0, num_steps=15, seeds=[0, 1], progress=False)
    if fail_at is None:
        lr_find(model, loss_fn, _data(), opt, **kw)
        assert calls["n"] == 30  # both seeds ran to the end
    else:
        with pytest.raises(RuntimeError, match="boom"):
            lr_find(model, loss_fn, _data(), opt, **kw)
    _assert_same(_grads(model), grads_before, "grads")
    assert [None if p.grad is None else p.grad.stride() for p in model.parameters()] == strides_before
    _assert_same((temp.detach(), temp.grad), temp_before, "temperature")


def test_state_is_restored_when_the_test_raises():
    model = Scalar(2.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    calls = {"n": 0}

    def closure(m, batch):
        calls["n"] += 1
        if calls["n"] == 12:
            raise RuntimeError("boom")
        return quad_closure(m, batch)

    model.w.grad = torch.tensor([0.375], dtype=torch.float64)
    rng_before = _rngs()
    with pytest.raises(RuntimeError, match="boom"):
        lr_find(model, None, batches(30), opt, closure=closure, start_lr=1e-3, end_lr=1.0, num_steps=20, progress=False)
    assert calls["n"] == 12
    assert model.w.item() == 2.0
    assert model.w.grad.tolist() == [0.375]
    assert opt.state_dict()["state"] == {}
    assert opt.param_groups[0]["lr"] == 0.1
    _assert_same_rngs(rng_before)


# ----------------------------------------------------------------------------- loaders and arguments
def test_too_few_batches_is_a_clear_error():
    model = Scalar()
    with pytest.raises(ValueError, match="loader has 5 batches"):
        lr_find(model, None, batches(5), closure=quad_closure, progress=False)
    with pytest.raises(ValueError, match="accumulation_steps=3 that is 6 optimizer steps"):
        lr_find(model, None, batches(18), closure=quad_closure, accumulation_steps=3, progress=False)
    # A one-shot iterator has no length: the error comes when it runs dry.
    with pytest.raises(ValueError, match="recorded only 7 steps .*7 batches"):
        lr_find(model, None, iter(batches(7)), closure=quad_closure, progress=False)
    assert model.w.item() == 1.0


def test_short_reiterable_loader_is_cycled_and_one_shot_stops_with_data():
    model = Scalar()
    res = lr_find(
        model,
        None,
        batches(12),
        torch.optim.SGD(model.parameters(), lr=0.1),
        closure=quad_closure,
        start_lr=1e-5,
        end_lr=1e-3,
        num_steps=30,
        progress=False,
    )
    assert res.stop_reason == "end" and len(res.lrs) == 30
    res = lr_find(
        model,
        None,
        iter(batches(12)),
        torch.optim.SGD(model.parameters(), lr=0.1),
        closure=quad_closure,
        start_lr=1e-5,
        end_lr=1e-3,
        num_steps=30,
        progress=False,
    )
    assert res.stop_reason == "data" and len(res.lrs) == 12


@pytest.mark.parametrize(
    "kwargs, exc, message",
    [
        ({"num_steps": 5}, ValueError, "num_steps must be >= 10, got 5"),
        ({"num_steps": 20.0}, TypeError, "num_steps must be an integer, got 20.0"),
        ({"start_lr": 1.0, "end_lr": 0.1}, ValueError, "end_lr must be > start_lr"),
        ({"start_lr": 0.0}, ValueError, "start_lr must be > 0.0, got 0.0"),
        ({"start_lr": math.nan}, ValueError, "start_lr must be finite, got nan"),
        ({"end_lr": math.inf}, ValueError, "end_lr must be finite, got inf"),
        ({"diverge": 1.0}, ValueError, "diverge must be > 1.0, got 1.0"),
        ({"diverge": math.nan}, ValueError, "diverge must be finite, got nan"),
        ({"smooth": 1.0}, ValueError, "smooth must be <= 0.999, got 1.0"),
        ({"smooth": -0.5}, ValueError, "smooth must be >= 0.0, got -0.5"),
        ({"mode": "cos"}, ValueError, "mode must be one of"),
        ({"accumulation_steps": 0}, ValueError, "accumulation_steps must be >= 1, got 0"),
        ({"accumulation_steps": True}, TypeError, "accumulation_steps must be an integer, got True"),
        ({"val_every": 0}, ValueError, "val_every must be >= 1, got 0"),
        ({"min_div": 0}, ValueError, "min_div must be >= 1.0, got 0"),
        ({"min_div": 0.5}, ValueError, "min_div must be >= 1.0, got 0.5"),
        ({"min_div": math.nan}, ValueError, "min_div must be finite, got nan"),
        ({"min_div": "4"}, TypeError, "min_div must be a real number, got '4'"),
        ({"base_div": -1}, ValueError, "base_div must be >= 1.0, got -1"),
        ({"base_div": math.inf}, ValueError, "base_div must be finite, got inf"),
        ({"base_div": None}, TypeError, "base_div must be a real number, got None"),
        ({"seeds": []}, ValueError, "seeds must not be empty"),
        ({"seeds": 3}, TypeError, "seeds must be a sequence of integers, got 3"),
        ({"seeds": "01"}, TypeError, "seeds must be a sequence of integers, got '01'"),
        ({"seeds": [0, 1.5]}, TypeError, "seeds[1] must be an integer, got 1.5"),
        ({"seeds": [True]}, TypeError, "seeds[0] must be an integer, got True"),
        (
            {"seeds": [2**64]},
            ValueError,
            f"seeds[0] must be in [-2**63, 2**64 - 1] (what torch.manual_seed takes), got {2**64}",
        ),
        (
            {"seeds": [0, -(2**63) - 1]},
            ValueError,
            f"seeds[1] must be in [-2**63, 2**64 - 1] (what torch.manual_seed takes), got {-(2**63) - 1}",
        ),
        ({"loss_fn": torch.nn.functional.mse_loss}, TypeError, "give exactly one of loss_fn"),
        ({"optimizer": "sgd"}, TypeError, "optimizer must be a torch.optim.Optimizer"),
        ({"loader": 5}, TypeError, "loader must be iterable, got 5 of type int"),
        ({"device": "gpu0"}, ValueError, "device must name a torch device, got 'gpu0'"),
        ({"progress": "yes"}, TypeError, "progress must be True, False or None, got 'yes'"),
        ({"val_loader": 5}, TypeError, "val_loader must be iterable, got 5 of type int"),
        (
            {"val_loader": iter(batches(3))},
            ValueError,
            "val_loader is read at every validation, so it cannot be a one-shot iterator, got list_iterator",
        ),
    ],
)
def test_bad_arguments_are_named_with_their_value_and_change_nothing(kwargs, exc, message):
    model = Scalar()
    model.w.grad = torch.tensor([0.5], dtype=torch.float64)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    args = {"loss_fn": None, "loader": batches(20), "optimizer": opt, "closure": quad_closure, "progress": False}
    args.update(kwargs)
    loss_fn, loader = args.pop("loss_fn"), args.pop("loader")
    rng_before = _rngs()
    with pytest.raises(exc, match="^" + re.escape(message)):
        lr_find(model, loss_fn, loader, **args)
    assert model.w.tolist() == [1.0] and model.w.grad.tolist() == [0.5]
    assert opt.state_dict()["state"] == {} and opt.param_groups[0]["lr"] == 0.1
    _assert_same_rngs(rng_before)


@pytest.mark.parametrize(
    "kwargs, exc, message",
    [
        ({"min_div": 0}, ValueError, "min_div must be >= 1.0, got 0"),
        ({"min_div": math.nan}, ValueError, "min_div must be finite, got nan"),
        ({"base_div": -1}, ValueError, "base_div must be >= 1.0, got -1"),
        ({"base_div": 0.25}, ValueError, "base_div must be >= 1.0, got 0.25"),
    ],
)
def test_suggest_checks_its_divisors(kwargs, exc, message):
    x = np.linspace(-5, 0, 50)
    with pytest.raises(exc, match="^" + re.escape(message)):
        suggest(10**x, (x + 2) ** 2, **kwargs)


def test_divisors_of_one_are_accepted_and_give_the_bounds_themselves():
    # L = (x + 2)^2 on x = log10(lr): minimum at lr = 1e-2, descending all the way there.
    x = np.linspace(-5, 0, 51)
    s = suggest(10**x, (x + 2) ** 2, min_div=1, base_div=1)
    assert s["lr_min"] == pytest.approx(1e-2, rel=1e-12)
    assert s["max_lr"] == s["lr_min"] and s["base_lr"] == s["max_lr"]


def test_validation_curve_is_recorded_every_val_every_steps():
    model = Scalar()
    seen = []

    def val_fn(m):
        assert not m.training
        seen.append(m.w.item())
        return 0.5 * m.w.item() ** 2

    res = lr_find(
        model,
        None,
        batches(30),
        torch.optim.SGD(model.parameters(), lr=0.1),
        closure=quad_closure,
        start_lr=1e-3,
        end_lr=0.1,
        num_steps=12,
        val_fn=val_fn,
        val_every=3,
        progress=False,
    )
    assert len(seen) == 4
    assert np.isnan(res.val[[1, 2, 4, 5, 7, 8, 10, 11]]).all()
    np.testing.assert_allclose(res.val[[0, 3, 6, 9]], [0.5 * w * w for w in seen])
    # The validation loss after step t is the training loss recorded at step t + 1.
    np.testing.assert_allclose(res.val[[0, 3, 6, 9]], res.losses[[1, 4, 7, 10]], rtol=1e-12)
    assert model.training


# ----------------------------------------------------------------------------- seeds
class Shuffled:
    """Batches in an order drawn from torch's global RNG (as a DataLoader with shuffle=True)."""

    def __init__(self, data):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __iter__(self):
        for i in torch.randperm(len(self.data)).tolist():
            yield self.data[i]


def test_seeds_give_a_band_and_repeat_exactly():
    data = _data(20)
    model = _net()
    kw = dict(start_lr=1e-3, end_lr=3.0, num_steps=25, seeds=[0, 1, 2], progress=False)
    res = lr_find(model, torch.nn.functional.cross_entropy, Shuffled(data), **kw)
    again = lr_find(model, torch.nn.functional.cross_entropy, Shuffled(data), **kw)
    assert len(res.runs) == 3 and [r["seed"] for r in res.runs] == [0, 1, 2]
    n = len(res.lrs)
    curves = np.array([r["smoothed"][:n] for r in res.runs])
    np.testing.assert_array_equal(res.smoothed, curves.mean(0))
    np.testing.assert_array_equal(res.band[0], curves.min(0))
    np.testing.assert_array_equal(res.band[1], curves.max(0))
    assert not np.array_equal(curves[0], curves[1])  # different batch orders
    np.testing.assert_array_equal(res.smoothed, again.smoothed)
    assert res.max_lr == again.max_lr


@pytest.mark.parametrize("seeds", [[-(2**63), 2**64 - 1], [7, 2**63]])
def test_seeds_across_torchs_whole_range_are_used(seeds):
    # Each run reads one pass in the order torch.randperm draws right after manual_seed(seed);
    # the oracle replays that order through plain SGD on 0.5*c*w^2.
    cs = [0.5 + 0.125 * i for i in range(12)]
    start, end, n = 1e-2, 0.5, 12
    model = Scalar()
    res = lr_find(
        model,
        None,
        Shuffled([torch.tensor(c, dtype=torch.float64) for c in cs]),
        torch.optim.SGD(model.parameters(), lr=0.1),
        closure=quad_closure,
        start_lr=start,
        end_lr=end,
        num_steps=n,
        seeds=seeds,
        progress=False,
    )
    assert res.seeds == seeds and [r["seed"] for r in res.runs] == seeds
    orders = []
    for seed, run in zip(seeds, res.runs):
        torch.manual_seed(seed)
        order = torch.randperm(12).tolist()
        orders.append(order)
        _, losses, _, _ = quad_oracle(start, end, n, 0.95, 4.0, lambda t, order=order: [cs[order[t]]])
        np.testing.assert_allclose(run["losses"], losses, rtol=1e-12)
    assert orders[0] != orders[1]


def test_one_shot_loader_is_refused_for_several_seeds_and_left_unread():
    model = Scalar()
    gen = (torch.tensor(c, dtype=torch.float64) for c in [1.0] * 12)
    message = (
        "seeds=[0, 1] repeats the test, but loader is a one-shot iterator (generator) that the second seed "
        "would find empty"
    )
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        lr_find(model, None, gen, closure=quad_closure, seeds=[0, 1], progress=False)
    assert len(list(gen)) == 12
    # One seed reads it once, which is all it can give.
    gen = (torch.tensor(c, dtype=torch.float64) for c in [1.0] * 12)
    res = lr_find(
        model,
        None,
        gen,
        torch.optim.SGD(model.parameters(), lr=0.1),
        closure=quad_closure,
        start_lr=1e-5,
        end_lr=1e-3,
        num_steps=30,
        seeds=[0],
        progress=False,
    )
    assert res.stop_reason == "data" and len(res.lrs) == 12


def test_a_reiterable_loader_is_iterated_once_per_pass():
    class Counted:
        def __init__(self, data):
            self.data, self.passes = data, 0

        def __iter__(self):
            self.passes += 1
            return iter(self.data)

    loader = Counted(batches(12))
    model = Scalar()
    lr_find(
        model,
        None,
        loader,
        torch.optim.SGD(model.parameters(), lr=0.1),
        closure=quad_closure,
        start_lr=1e-5,
        end_lr=1e-3,
        num_steps=30,
        seeds=[0, 1],
        progress=False,
    )
    assert loader.passes == 2 * 3  # 30 steps from 12 batches: 12 + 12 + 6, for each seed


# ----------------------------------------------------------------------------- the suggestion rule
def _bisect(f, a, b):
    for _ in range(200):
        m = 0.5 * (a + b)
        a, b = (m, b) if f(a) * f(m) > 0 else (a, m)
    return 0.5 * (a + b)


def test_suggestion_on_a_known_curve_min_rule():
    # L(x) = 1 - tanh(x + 3) + 4*max(0, x + 1)^2 with x = log10(lr): steepest descent at x = -3,
    # minimum where sech^2(x + 3) = 8(x + 1).
    x = np.linspace(-7, 1, 801)
    loss = 1 - np.tanh(x + 3) + 4 * np.maximum(0, x + 1) ** 2
    x_min = _bisect(lambda v: -1 / math.cosh(v + 3) ** 2 + 8 * (v + 1), -1.0, 0.0)
    s = suggest(10**x, loss)
    assert s["lr_steep"] == pytest.approx(1e-3, rel=0.03)
    assert s["lr_min"] == pytest.approx(10**x_min, rel=0.03)
    assert s["max_lr"] == pytest.approx(10**x_min / 4, rel=0.03)  # lr_min/4 > lr_steep here
    assert s["base_lr"] == pytest.approx(s["max_lr"] / 4, rel=1e-15)


def test_suggestion_on_a_known_curve_steep_rule():
    # Steepest descent at x = -1.2, close to the minimum: then max_lr = lr_steep > lr_min/4.
    x = np.linspace(-5, 1, 601)
    loss = 1 - np.tanh(3 * (x + 1.2)) + 4 * np.maximum(0, x + 1) ** 2
    x_min = _bisect(lambda v: -3 / math.cosh(3 * (v + 1.2)) ** 2 + 8 * (v + 1), -1.0, 0.0)
    s = suggest(10**x, loss)
    assert s["lr_steep"] == pytest.approx(10**-1.2, rel=0.03)
    assert s["lr_min"] == pytest.approx(10**x_min, rel=0.03)
    assert s["max_lr"] == s["lr_steep"]
    assert s["max_lr"] > s["lr_min"] / 4


def test_suggestion_is_not_fooled_by_one_noisy_point_or_a_noisy_start():
    x = np.linspace(-6, 0, 301)
    loss = 1 - np.tanh(x + 3) + 4 * np.maximum(0, x + 0.5) ** 2
    loss[5] -= 0.5  # a spike in the first 10 %
    loss[120] -= 0.05  # one low point in the plateau-to-descent shoulder
    s = suggest(10**x, loss)
    assert s["lr_steep"] == pytest.approx(1e-3, rel=0.05)


def test_suggest_rejects_bad_curves():
    with pytest.raises(ValueError, match="same length"):
        suggest([1e-3, 1e-2], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="all finite"):
        suggest([1e-3, 1e-2, 1e-1], [1.0, np.nan, 3.0])
    with pytest.raises(ValueError, match="increasing"):
        suggest([1e-3, 1e-3, 1e-1], [1.0, 2.0, 3.0])


@pytest.mark.parametrize("smooth", [0.9, 0.95, 0.98])
def test_end_to_end_suggestion_on_a_noisy_quadratic(smooth):
    # SGD on 0.5*(w - c)^2 with targets c = +1, -1, +1, ...: w_{t+1} = (1 - lr) w_t + lr c_t.
    # It settles for lr < 2 (loss floor 2/(2 - lr)^2 per +1 batch, rising with lr) and diverges
    # for lr > 2, so the suggestion must lie below 2 and the test must stop near it.
    model = Scalar(3.0)
    data = [torch.tensor(c, dtype=torch.float64) for c in [1.0, -1.0] * 150]
    res = lr_find(
        model,
        None,
        data,
        torch.optim.SGD(model.parameters(), lr=0.1),
        closure=lambda m, c: 0.5 * ((m.w - c) ** 2).sum(),
        start_lr=1e-4,
        end_lr=100.0,
        num_steps=200,
        smooth=smooth,
        progress=False,
    )
    assert res.stop_reason == "diverged" and 1.0 < res.diverged_lr < 4.0
    assert 0.01 < res.lr_steep <= res.lr_min < 2.0
    assert 0.01 < res.max_lr < 1.0 and res.base_lr == pytest.approx(res.max_lr / 4, rel=1e-15)
    assert model.w.item() == 3.0


# ----------------------------------------------------------------------------- to_schedule and plot
def _result(max_lr=0.4, base_lr=0.1):
    lrs = np.geomspace(1e-4, 1.0, 20)
    return LRFindResult(
        lrs=lrs,
        losses=np.linspace(2, 1, 20),
        smoothed=np.linspace(2, 1, 20),
        val=None,
        max_lr=max_lr,
        base_lr=base_lr,
        lr_min=1.0,
        lr_steep=0.4,
        stop_reason="end",
        diverged_lr=None,
        start_lr=1e-4,
        end_lr=1.0,
        mode="exp",
    )


def test_to_schedule_builds_the_named_policies():
    r = _result()
    assert r.to_schedule("triangular", step_size_up=100) == clr.Cyclic(0.1, 0.4, step_size_up=100)
    assert r.to_schedule("triangular2", step_size_up=50) == clr.Cyclic(0.1, 0.4, 50, mode="triangular2")
    s = r.to_schedule("exp_range", step_size_up=50, total_steps=1000)
    assert s == clr.Cyclic(0.1, 0.4, 50, mode="exp_range", gamma=0.1 ** (1 / 1000))
    one = r.to_schedule("onecycle", total_steps=1000)
    assert one == clr.OneCycle(0.4, 1000, div_factor=4.0)
    assert one.lr(0) == pytest.approx(0.1, rel=1e-15) and one.lr(299) == pytest.approx(0.4, rel=1e-15)
    assert r.to_schedule("cosine", total_steps=500) == clr.CosineRestarts(0.4, T_0=500, eta_min=0.1)
    assert r.to_schedule("triangular", step_size_up=10, base_momentum=0.85, max_momentum=0.95).momentum(10) == 0.85


@pytest.mark.parametrize(
    "args, match",
    [
        (("triangular",), "needs step_size_up"),
        (("onecycle",), "needs total_steps"),
        (("cosine",), "needs step_size_up"),
        (("sgdr",), "policy must be one of"),
    ],
)
def test_to_schedule_errors(args, match):
    with pytest.raises(ValueError, match=match):
        _result().to_schedule(*args)


def test_plot_writes_a_png_with_band_and_validation(tmp_path):
    pytest.importorskip("matplotlib")
    data = _data(20)
    res = lr_find(
        _net(),
        torch.nn.functional.cross_entropy,
        Shuffled(data),
        start_lr=1e-3,
        end_lr=3.0,
        num_steps=20,
        seeds=[0, 1],
        val_loader=data[:2],
        progress=False,
    )
    path = tmp_path / "lr.png"
    fig = res.plot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"max_lr = {res.max_lr:.3g}" in labels and "spread over 2 seeds" in labels
    assert len(fig.axes) == 2  # validation on a second axis
    assert "max_lr=" in repr(res) and "over 2 seeds" in repr(res)


def test_progress_bar_on_request(capsys):
    pytest.importorskip("tqdm")
    model = Scalar()
    lr_find(model, None, batches(20), closure=quad_closure, start_lr=1e-4, end_lr=1e-2, num_steps=15, progress=True)
    assert "lr_find" in capsys.readouterr().err
    lr_find(model, None, batches(20), closure=quad_closure, start_lr=1e-4, end_lr=1e-2, num_steps=15, progress=False)
    assert capsys.readouterr().err == ""
