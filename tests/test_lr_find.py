"""LR range test: sweep values, loss bookkeeping, restore, divergence, suggestion rule, schedules, plots."""

import math
import random

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
    return 0.5 * batch * (model.w ** 2).sum()


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
    opt.register_step_post_hook(lambda o, a, k: used.append(float(o.param_groups[0]["lr"])))
    start, end, n = 1e-4, 1e-2, 25
    res = lr_find(model, None, batches(40), opt, closure=quad_closure, start_lr=start, end_lr=end,
                  num_steps=n, mode=mode, progress=False)
    expect = [sweep_lr(start, end, n, t, mode) for t in range(n)]
    assert res.stop_reason == "end"
    np.testing.assert_allclose(used, expect, rtol=1e-14)
    np.testing.assert_allclose(res.lrs, expect, rtol=1e-14)
    assert res.lrs[0] == start and res.lrs[-1] == pytest.approx(end, rel=1e-14)


def test_losses_smoothing_and_divergence_match_a_python_oracle():
    model = Scalar(1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    start, end, n, beta, div = 1e-3, 30.0, 80, 0.9, 4.0
    res = lr_find(model, None, batches(100), opt, closure=quad_closure, start_lr=start, end_lr=end,
                  num_steps=n, smooth=beta, diverge=div, progress=False)
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
    res = lr_find(model, None, data, opt, closure=quad_closure, start_lr=1e-3, end_lr=0.3, num_steps=20,
                  accumulation_steps=2, smooth=0.5, progress=False)
    lrs, losses, smoothed, stop = quad_oracle(1e-3, 0.3, 20, 0.5, 4.0,
                                              lambda t: cs[(2 * t) % 4:(2 * t) % 4 + 2])
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
    res = lr_find(model, None, batches(50), torch.optim.SGD(model.parameters(), lr=0.1), closure=closure,
                  start_lr=1e-4, end_lr=1e-2, num_steps=40, progress=False)
    assert res.stop_reason == "nan"
    assert len(res.losses) == 15 and np.isfinite(res.losses).all()
    assert res.diverged_lr == pytest.approx(sweep_lr(1e-4, 1e-2, 40, 15), rel=1e-13)
    assert torch.equal(model.w.detach(), before)


# ----------------------------------------------------------------------------- restoring state
def _net():
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                               torch.nn.Dropout(0.2), torch.nn.Linear(8, 2))


def _data(n=16):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 4, generator=g), torch.randint(0, 2, (8,), generator=g)) for _ in range(n)]


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype, k
        elif isinstance(a[k], dict):
            _assert_same_state(a[k], b[k])
        elif isinstance(a[k], list):
            assert len(a[k]) == len(b[k])
            for x, y in zip(a[k], b[k]):
                _assert_same_state(x, y) if isinstance(x, dict) else (x == y)
        else:
            assert a[k] == b[k], k


@pytest.mark.parametrize("kind", ["adam", "clrsgd"])
def test_model_optimizer_and_rngs_are_restored_bit_for_bit(kind):
    import copy

    model = _net()
    if kind == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    else:
        opt = CLRSGD(model.parameters(), clr.Cyclic(1e-3, 1e-2, step_size_up=10), momentum=0.9)
    data = _data()
    loss_fn = torch.nn.functional.cross_entropy
    for x, y in data[:3]:  # give the optimizer some state to keep
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    model.eval()
    model_before = copy.deepcopy(model.state_dict())
    opt_before = copy.deepcopy(opt.state_dict())
    torch.manual_seed(11)
    np.random.seed(12)
    random.seed(13)
    rng_before = (torch.get_rng_state(), np.random.get_state(), random.getstate())

    res = lr_find(model, loss_fn, data, opt, start_lr=1e-4, end_lr=10, num_steps=30, progress=False)

    assert len(res.lrs) >= 10
    _assert_same_state(model.state_dict(), model_before)
    _assert_same_state(opt.state_dict(), opt_before)
    assert not model.training and not any(m.training for m in model.modules())
    assert torch.equal(torch.get_rng_state(), rng_before[0])
    np_state = np.random.get_state()
    assert np_state[0] == rng_before[1][0] and np.array_equal(np_state[1], rng_before[1][1])
    assert random.getstate() == rng_before[2]
    # The optimizer carries on exactly as before: same next update as an untouched twin.
    if kind == "clrsgd":
        assert opt.param_groups[0]["step"] == 3
        assert opt.param_groups[0]["schedule"] == clr.Cyclic(1e-3, 1e-2, step_size_up=10)


def test_state_is_restored_when_the_test_raises():
    model = Scalar(2.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    calls = {"n": 0}

    def closure(m, batch):
        calls["n"] += 1
        if calls["n"] == 12:
            raise RuntimeError("boom")
        return quad_closure(m, batch)

    with pytest.raises(RuntimeError, match="boom"):
        lr_find(model, None, batches(30), opt, closure=closure, start_lr=1e-3, end_lr=1.0, num_steps=20,
                progress=False)
    assert model.w.item() == 2.0
    assert opt.state_dict()["state"] == {}
    assert opt.param_groups[0]["lr"] == 0.1


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
    res = lr_find(model, None, batches(12), torch.optim.SGD(model.parameters(), lr=0.1), closure=quad_closure,
                  start_lr=1e-5, end_lr=1e-3, num_steps=30, progress=False)
    assert res.stop_reason == "end" and len(res.lrs) == 30
    res = lr_find(model, None, iter(batches(12)), torch.optim.SGD(model.parameters(), lr=0.1),
                  closure=quad_closure, start_lr=1e-5, end_lr=1e-3, num_steps=30, progress=False)
    assert res.stop_reason == "data" and len(res.lrs) == 12


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"num_steps": 5}, ValueError, "num_steps must be >= 10"),
    ({"start_lr": 1.0, "end_lr": 0.1}, ValueError, "end_lr must be > start_lr"),
    ({"diverge": 1.0}, ValueError, "diverge must be > 1"),
    ({"smooth": 1.0}, ValueError, "smooth must be <= 0.999"),
    ({"mode": "cos"}, ValueError, "mode must be one of"),
    ({"accumulation_steps": 0}, ValueError, "accumulation_steps must be >= 1"),
    ({"seeds": []}, ValueError, "seeds must not be empty"),
    ({"loss_fn": torch.nn.functional.mse_loss}, TypeError, "exactly one of loss_fn"),
    ({"optimizer": "sgd"}, TypeError, "optimizer must be a torch.optim.Optimizer"),
])
def test_bad_arguments(kwargs, exc, match):
    model = Scalar()
    args = {"loss_fn": None, "closure": quad_closure, "progress": False}
    args.update(kwargs)
    loss_fn = args.pop("loss_fn")
    with pytest.raises(exc, match=match):
        lr_find(model, loss_fn, batches(20), **args)
    assert model.w.item() == 1.0


def test_validation_curve_is_recorded_every_val_every_steps():
    model = Scalar()
    seen = []

    def val_fn(m):
        assert not m.training
        seen.append(m.w.item())
        return 0.5 * m.w.item() ** 2

    res = lr_find(model, None, batches(30), torch.optim.SGD(model.parameters(), lr=0.1), closure=quad_closure,
                  start_lr=1e-3, end_lr=0.1, num_steps=12, val_fn=val_fn, val_every=3, progress=False)
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
    s = suggest(10 ** x, loss)
    assert s["lr_steep"] == pytest.approx(1e-3, rel=0.03)
    assert s["lr_min"] == pytest.approx(10 ** x_min, rel=0.03)
    assert s["max_lr"] == pytest.approx(10 ** x_min / 4, rel=0.03)  # lr_min/4 > lr_steep here
    assert s["base_lr"] == pytest.approx(s["max_lr"] / 4, rel=1e-15)


def test_suggestion_on_a_known_curve_steep_rule():
    # Steepest descent at x = -1.2, close to the minimum: then max_lr = lr_steep > lr_min/4.
    x = np.linspace(-5, 1, 601)
    loss = 1 - np.tanh(3 * (x + 1.2)) + 4 * np.maximum(0, x + 1) ** 2
    x_min = _bisect(lambda v: -3 / math.cosh(3 * (v + 1.2)) ** 2 + 8 * (v + 1), -1.0, 0.0)
    s = suggest(10 ** x, loss)
    assert s["lr_steep"] == pytest.approx(10 ** -1.2, rel=0.03)
    assert s["lr_min"] == pytest.approx(10 ** x_min, rel=0.03)
    assert s["max_lr"] == s["lr_steep"]
    assert s["max_lr"] > s["lr_min"] / 4


def test_suggestion_is_not_fooled_by_one_noisy_point_or_a_noisy_start():
    x = np.linspace(-6, 0, 301)
    loss = 1 - np.tanh(x + 3) + 4 * np.maximum(0, x + 0.5) ** 2
    loss[5] -= 0.5      # a spike in the first 10 %
    loss[120] -= 0.05   # one low point in the plateau-to-descent shoulder
    s = suggest(10 ** x, loss)
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
    res = lr_find(model, None, data, torch.optim.SGD(model.parameters(), lr=0.1),
                  closure=lambda m, c: 0.5 * ((m.w - c) ** 2).sum(), start_lr=1e-4, end_lr=100.0,
                  num_steps=200, smooth=smooth, progress=False)
    assert res.stop_reason == "diverged" and 1.0 < res.diverged_lr < 4.0
    assert 0.01 < res.lr_steep <= res.lr_min < 2.0
    assert 0.01 < res.max_lr < 1.0 and res.base_lr == pytest.approx(res.max_lr / 4, rel=1e-15)
    assert model.w.item() == 3.0


# ----------------------------------------------------------------------------- to_schedule and plot
def _result(max_lr=0.4, base_lr=0.1):
    lrs = np.geomspace(1e-4, 1.0, 20)
    return LRFindResult(lrs=lrs, losses=np.linspace(2, 1, 20), smoothed=np.linspace(2, 1, 20), val=None,
                        max_lr=max_lr, base_lr=base_lr, lr_min=1.0, lr_steep=0.4, stop_reason="end",
                        diverged_lr=None, start_lr=1e-4, end_lr=1.0, mode="exp")


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


@pytest.mark.parametrize("args, match", [
    (("triangular",), "needs step_size_up"),
    (("onecycle",), "needs total_steps"),
    (("cosine",), "needs step_size_up"),
    (("sgdr",), "policy must be one of"),
])
def test_to_schedule_errors(args, match):
    with pytest.raises(ValueError, match=match):
        _result().to_schedule(*args)


def test_plot_writes_a_png_with_band_and_validation(tmp_path):
    pytest.importorskip("matplotlib")
    data = _data(20)
    res = lr_find(_net(), torch.nn.functional.cross_entropy, Shuffled(data), start_lr=1e-3, end_lr=3.0,
                  num_steps=20, seeds=[0, 1], val_loader=data[:2], progress=False)
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
    lr_find(model, None, batches(20), closure=quad_closure, start_lr=1e-4, end_lr=1e-2, num_steps=15,
            progress=True)
    assert "lr_find" in capsys.readouterr().err
    lr_find(model, None, batches(20), closure=quad_closure, start_lr=1e-4, end_lr=1e-2, num_steps=15,
            progress=False)
    assert capsys.readouterr().err == ""
