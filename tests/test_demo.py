"""clrfast demo: runs end to end (--fast), trains with CLRSGD and CLRAdamW exactly as torch's SGD and AdamW + the
schedule would, with CLRScheduleFreeAdamW exactly as the schedulefree package would (evaluated at the average),
repeats."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

import clrfast as clr  # noqa: E402
from clrfast import demo  # noqa: E402
from clrfast.cli import main  # noqa: E402

POLICY_NAMES = ["fixed", "triangular", "triangular2", "exp_range", "onecycle", "adamw_onecycle", "schedulefree"]
SGD_POLICIES = POLICY_NAMES[:5]


@pytest.fixture
def one_thread():
    # As run_demo does: these tiny convolutions only lose time to thread hand-offs.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_demo_fast_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    threads = torch.get_num_threads()
    assert main(["demo", "--fast", "--quiet", "--out", str(out)]) == 0
    text, err = capsys.readouterr()
    assert err == ""  # --quiet: no progress bars
    summary = json.loads((out / "results.json").read_text())
    rows = summary["rows"]
    assert [r["policy"] for r in rows] == POLICY_NAMES
    for r in rows:
        line = next(x for x in text.splitlines() if x.startswith(r["policy"] + " "))
        assert f"{100 * r['acc_mean']:.2f} ± {100 * r['acc_std']:.2f} %" in line
        assert 0.5 < r["acc_mean"] <= 1.0  # far above chance (0.1) after 120 iterations
        assert len(r["iters_to_target"]) == 2  # --fast: two seeds, every policy
    assert [r["optimizer"] for r in rows] == ["CLRSGD"] * len(SGD_POLICIES) + ["CLRAdamW", "CLRScheduleFreeAdamW"]
    # The AdamW rows learn as well as the SGD rows do: every run, of every policy, clears the same floor
    # (with two seeds mean - std is the worse run; after these 120 iterations SGD runs end at 85-96 %, AdamW ~97 %).
    adamw, sf = rows[-2:]
    assert adamw["schedule"] == "0.00012 -> 0.003 -> 1.2e-09"
    assert sf["schedule"] == "0 -> 0.005 over 6, then constant"  # --fast: 5 % of 120 iterations
    assert all(r["acc_mean"] - r["acc_std"] > 0.8 for r in rows)
    for r in (adamw, sf):
        assert r["acc_mean"] >= min(r["acc_mean"] for r in rows[: len(SGD_POLICIES)])
    assert summary["config"]["adamw_max_lr"] == 3e-3 and summary["config"]["sf_lr"] == 5e-3
    rt = summary["range_test"]
    assert rt["base_lr"] == pytest.approx(rt["max_lr"] / 4, rel=1e-15)
    assert rt["lr_steep"] <= rt["lr_min"] and rt["max_lr"] == max(rt["lr_steep"], rt["lr_min"] / 4)
    assert f"max_lr={rt['max_lr']:.3g}" in text
    for name in ("range_test.png", "schedules.png", "accuracy.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 150_000
    assert torch.get_num_threads() == threads  # the demo's thread setting does not leak


def test_policies_come_from_the_range_test_bounds():
    r = type("R", (), {"base_lr": 0.02, "max_lr": 0.08})()
    r.to_schedule = lambda *a, **k: clr.torch.LRFindResult.to_schedule(r, *a, **k)
    cfg = demo.Config(iterations=400, cycles=4)
    p = demo.policies(r, cfg)
    assert list(p) == POLICY_NAMES
    assert p["fixed"] == clr.Constant(0.05)
    assert p["triangular"] == clr.Cyclic(0.02, 0.08, step_size_up=50)
    assert p["triangular2"] == clr.Cyclic(0.02, 0.08, step_size_up=50, mode="triangular2")
    assert p["exp_range"].gamma == pytest.approx(0.1 ** (1 / 400), rel=1e-15)
    assert p["onecycle"] == clr.OneCycle(0.08, 400, div_factor=4.0)
    # fastai's recipe, whatever the range test said: lr 3e-3/25 -> 3e-3 (at a quarter) -> 3e-3/25/1e5, cosine,
    # beta1 0.95 -> 0.85 -> 0.95.
    a = p["adamw_onecycle"]
    assert a == clr.OneCycle(
        3e-3,
        400,
        pct_start=0.25,
        div_factor=25,
        final_div_factor=1e5,
        base_momentum=0.85,
        max_momentum=0.95,
        anneal="cos",
    )
    peak = 99  # pct_start * T - 1
    assert a.lr(0) == pytest.approx(3e-3 / 25, rel=1e-12) and a.lr(peak) == pytest.approx(3e-3, rel=1e-12)
    assert a.lr(399) == pytest.approx(3e-3 / 25 / 1e5, rel=1e-12)
    assert a.momentum(0) == pytest.approx(0.95) and a.momentum(peak) == pytest.approx(0.85)
    assert a.momentum(399) == pytest.approx(0.95)
    assert np.argmax(a.lr_table(np.arange(400))) == peak
    assert p["schedulefree"] == clr.Warmup(0.0, 5e-3, 20)  # 5 % of the iterations, then constant
    assert demo.OPTIMIZERS == {"adamw_onecycle": "adamw", "schedulefree": "sf_adamw"}


def _train_reference(model, opt, data, cfg, before_step, measure) -> list:
    """The demo's training loop written out for a reference optimizer: ``before_step(t)`` sets the values of
    update t, ``measure()`` runs every ``cfg.eval_every`` updates; returns what it measured."""
    import torch.nn.functional as F

    xtr, ytr, _, _ = data
    loader = demo.Batches(xtr, ytr, cfg.batch_size, generator=torch.Generator().manual_seed(0))
    out, t = [], 0
    while t < cfg.iterations:  # 21 batches a pass: the second pass draws a new order
        for xb, yb in loader:
            before_step(t)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            t += 1
            if t % cfg.eval_every == 0:
                out.append(measure())
            if t == cfg.iterations:
                break
    return out


def test_training_with_clrsgd_matches_torch_sgd_with_the_same_schedule(one_thread):
    cfg = demo.Config(iterations=30, eval_every=10, seeds=(0,), threads=1)
    data = demo.load_data()
    sched = clr.Cyclic(0.01, 0.1, step_size_up=10, base_momentum=0.8, max_momentum=0.9)
    steps, accs = demo.train(sched, 0, data, cfg)
    assert isinstance(demo.make_optimizer(demo.make_model(0).parameters(), sched, cfg), clr.torch.CLRSGD)

    # Reference: torch.optim.SGD, lr and momentum set from the schedule before every step.
    _, _, xte, yte = data
    model = demo.make_model(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9, weight_decay=cfg.weight_decay, foreach=False)

    def set_values(t):
        for g in opt.param_groups:
            g["lr"], g["momentum"] = sched.lr(t), sched.momentum(t)

    ref = _train_reference(model, opt, data, cfg, set_values, lambda: demo.accuracy(model, xte, yte))
    np.testing.assert_array_equal(steps, [10, 20, 30])
    np.testing.assert_array_equal(accs, ref)


def test_training_with_clradamw_matches_torch_adamw_with_the_same_schedule(one_thread):
    cfg = demo.Config(iterations=30, eval_every=10, seeds=(0,), threads=1)
    r = type("R", (), {"base_lr": 0.02, "max_lr": 0.08})()
    r.to_schedule = lambda *a, **k: clr.torch.LRFindResult.to_schedule(r, *a, **k)
    sched = demo.policies(r, cfg)["adamw_onecycle"]  # the recipe over 30 steps: beta1 0.95 -> 0.85 -> 0.95
    data = demo.load_data()
    steps, accs = demo.train(sched, 0, data, cfg, rule="adamw")
    opt = demo.make_optimizer(demo.make_model(0).parameters(), sched, cfg, "adamw")
    assert isinstance(opt, clr.torch.CLRAdamW)
    assert opt.param_groups[0]["weight_decay"] == 1e-2 and opt.param_groups[0]["betas"] == (0.95, 0.999)

    # Reference: torch.optim.AdamW, lr and beta1 set from the schedule before every step.
    _, _, xte, yte = data
    model = demo.make_model(0)
    opt = torch.optim.AdamW(model.parameters(), lr=0.0, weight_decay=1e-2, fused=True)

    def set_values(t):
        for g in opt.param_groups:
            g["lr"], g["betas"] = sched.lr(t), (sched.momentum(t), 0.999)

    ref = _train_reference(model, opt, data, cfg, set_values, lambda: demo.accuracy(model, xte, yte))
    np.testing.assert_array_equal(steps, [10, 20, 30])
    np.testing.assert_array_equal(accs, ref)
    with pytest.raises(ValueError, match="rule must be"):
        demo.make_optimizer(demo.make_model(0).parameters(), sched, cfg, "lion")


def test_training_with_schedulefree_adamw_matches_the_package_evaluated_at_the_average(one_thread, monkeypatch):
    """The demo measures test accuracy at x (eval mode) and trains at y (train mode), as the package's recipe says."""
    schedulefree = pytest.importorskip("schedulefree")
    cfg = demo.Config(iterations=30, eval_every=10, seeds=(0,), threads=1)
    sched = clr.Warmup(0.0, cfg.sf_lr, 5)
    data = demo.load_data()
    made, seen = [], []
    make_optimizer, accuracy = demo.make_optimizer, demo.accuracy

    def spy_make(*a):
        made.append(make_optimizer(*a))
        return made[-1]

    def spy_accuracy(model, x, y):
        seen.append((made[-1].param_groups[0]["train_mode"], [p.detach().clone() for p in model.parameters()]))
        return accuracy(model, x, y)

    monkeypatch.setattr(demo, "make_optimizer", spy_make)
    monkeypatch.setattr(demo, "accuracy", spy_accuracy)
    steps, accs = demo.train(sched, 0, data, cfg, rule="sf_adamw")
    (opt,) = made
    assert isinstance(opt, clr.torch.CLRScheduleFreeAdamW)
    assert opt.param_groups[0]["weight_decay"] == 1e-2 and opt.param_groups[0]["betas"] == (0.9, 0.999)
    assert [mode for mode, _ in seen] == [False] * 3  # measured in eval mode
    assert opt.param_groups[0]["train_mode"] and opt.param_groups[0]["k"] == 30  # and back in train mode after

    # Reference: the package's AdamWScheduleFree, its lr set from the schedule before every step, eval() around
    # each measurement.
    _, _, xte, yte = data
    model = demo.make_model(0)
    ref_opt = schedulefree.AdamWScheduleFree(model.parameters(), lr=0.0, weight_decay=1e-2, foreach=False)
    ref_opt.train()
    at = []

    def set_lr(t):
        for g in ref_opt.param_groups:
            g["lr"] = sched.lr(t)

    def measure():
        ref_opt.eval()
        at.append([p.detach().clone() for p in model.parameters()])
        acc = accuracy(model, xte, yte)
        ref_opt.train()
        return acc

    ref = _train_reference(model, ref_opt, data, cfg, set_lr, measure)
    np.testing.assert_array_equal(steps, [10, 20, 30])
    np.testing.assert_array_equal(accs, ref)
    for (_, ours), theirs in zip(seen, at):
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert accs[-1] > 0.5  # far above chance after 30 steps


def test_adamw_applies_the_schedules_beta1(one_thread):
    """Read beta1 back from each update: exp_avg' = exp_avg + (1 - beta1) * (grad - exp_avg), in float64."""
    import torch.nn.functional as F

    n = 40
    sched = clr.OneCycle(3e-3, n, **demo.ADAMW_RECIPE)  # the lr (and beta1) turn at step 9
    xtr, ytr, _, _ = demo.load_data()
    model = demo.make_model(0).double()
    opt = demo.make_optimizer(model.parameters(), sched, demo.Config(), "adamw")
    loader = demo.Batches(xtr.double(), ytr, 64, generator=torch.Generator().manual_seed(0))
    p = model[0].weight
    applied = {}
    t = 0
    while t < n:
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            m0 = opt.state[p]["exp_avg"].clone() if t else torch.zeros_like(p)
            g = p.grad.clone()
            shown = opt.param_groups[0]["betas"][0]  # the group shows the value the next update uses
            opt.step()
            d = g - m0
            i = int(d.abs().argmax())
            applied[t] = (1 - float((opt.state[p]["exp_avg"] - m0).flatten()[i] / d.flatten()[i]), shown)
            t += 1
            if t == n:
                break
    for k in (0, 5, 9, 20, 39):
        assert applied[k][0] == pytest.approx(sched.momentum(k), abs=1e-9)
        assert applied[k][1] == sched.momentum(k)
    assert applied[0][0] == pytest.approx(0.95, abs=1e-9) and applied[9][0] == pytest.approx(0.85, abs=1e-9)
    assert applied[39][0] == pytest.approx(0.95, abs=1e-9)
    assert max(applied[k][0] for k in range(9)) <= 0.95 + 1e-9 and applied[5][0] < applied[2][0]


def test_training_is_reproducible(one_thread):
    cfg = demo.Config(iterations=20, eval_every=10, seeds=(0,), threads=1)
    data = demo.load_data()
    a = demo.train(clr.Constant(0.05), 3, data, cfg)
    b = demo.train(clr.Constant(0.05), 3, data, cfg)
    c = demo.train(clr.Constant(0.05), 4, data, cfg)
    np.testing.assert_array_equal(a[1], b[1])
    assert a[1][-1] > 0.2  # learning, not chance
    assert not np.array_equal(a[1], c[1])  # the seed sets the initialisation and the batch order


def test_config_from_args():
    import argparse

    p = argparse.ArgumentParser()
    demo.add_arguments(p)
    cfg = demo.config_from_args(p.parse_args([]))
    assert cfg == demo.Config()
    cfg = demo.config_from_args(p.parse_args(["--fast", "--seeds", "3", "--seed", "5"]))
    assert cfg.seeds == (5, 6, 7) and cfg.iterations == demo.FAST.iterations
    with pytest.raises(ValueError, match="--seeds must be >= 1"):
        demo.config_from_args(p.parse_args(["--seeds", "0"]))
