"""clrfast demo: runs end to end (--fast), trains with CLRSGD exactly as SGD + the schedule would, repeats."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

import clrfast as clr  # noqa: E402
from clrfast import demo  # noqa: E402
from clrfast.cli import main  # noqa: E402

POLICY_NAMES = ["fixed", "triangular", "triangular2", "exp_range", "onecycle"]


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


def test_training_with_clrsgd_matches_torch_sgd_with_the_same_schedule(one_thread):
    cfg = demo.Config(iterations=30, eval_every=10, seeds=(0,), threads=1)
    data = demo.load_data()
    sched = clr.Cyclic(0.01, 0.1, step_size_up=10, base_momentum=0.8, max_momentum=0.9)
    steps, accs = demo.train(sched, 0, data, cfg)
    assert isinstance(demo.make_optimizer(demo.make_model(0).parameters(), sched, cfg), clr.torch.CLRSGD)

    # Reference: torch.optim.SGD, lr and momentum set from the schedule before every step.
    import torch.nn.functional as F

    xtr, ytr, xte, yte = data
    model = demo.make_model(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9, weight_decay=cfg.weight_decay, foreach=False)
    loader = demo.Batches(xtr, ytr, cfg.batch_size, generator=torch.Generator().manual_seed(0))
    ref, t = [], 0
    while t < 30:  # 21 batches a pass: the second pass draws a new order
        for xb, yb in loader:
            for g in opt.param_groups:
                g["lr"], g["momentum"] = sched.lr(t), sched.momentum(t)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            t += 1
            if t % 10 == 0:
                ref.append(demo.accuracy(model, xte, yte))
            if t == 30:
                break
    np.testing.assert_array_equal(steps, [10, 20, 30])
    np.testing.assert_array_equal(accs, ref)


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
