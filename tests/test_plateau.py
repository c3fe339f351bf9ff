"""``clrfast.torch.ReduceLROnPlateau``: torch's plateau logic, reductions that multiply the schedule.

Oracles: torch's ``ReduceLROnPlateau`` over ``torch.optim.SGD`` (constant lrs: the same lrs, counters
and parameters, double for double); for a moving schedule, transformers' cosine lambda times the
peak with the reductions applied as repeated ``max(x * factor, min_lr)``, written into torch's SGD
before each step.
"""

from __future__ import annotations

import copy
import io
import math
import pickle

import clrfast as clr
import pytest
import torch
from clrfast.torch import CLRSGD, CLRAdamW, ReduceLROnPlateau, ScheduleLR
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

TorchPlateau = torch.optim.lr_scheduler.ReduceLROnPlateau
LRS = [0.1, 0.03, 1.0]
COUNTERS = ("best", "num_bad_epochs", "cooldown_counter", "last_epoch", "mode", "threshold_mode", "min_lrs")


def _params(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(5, generator=g, dtype=torch.float64)) for _ in range(n)]


def _grads(params, t):
    g = torch.Generator().manual_seed(100 + t)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)


def _fused(params, lrs=LRS, cls=CLRSGD, **kw):
    return cls([{"params": [p], "schedule": clr.Constant(lr)} for p, lr in zip(params, lrs)], lrs[0], **kw)


def _torch_sgd(params, lrs=LRS, **kw):
    return torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)], foreach=False, **kw)


def _epoch(t, metric, *sides):
    """One update and one plateau step on each (params, optimizer, plateau) side, in that order."""
    for params, opt, _ in sides:
        _grads(params, t)
        opt.step()
    for _, _, plateau in sides:
        plateau.step(metric)


def _lrs(opt):
    return [g["lr"] for g in opt.param_groups]


def _same_counters(a, b):
    for k in COUNTERS:
        x, y = getattr(a, k), getattr(b, k)
        assert x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y)), k


def _plain_data(x) -> bool:
    if isinstance(x, dict):
        return all(isinstance(k, str) and _plain_data(v) for k, v in x.items())
    if isinstance(x, (list, tuple)):
        return all(_plain_data(v) for v in x)
    return x is None or isinstance(x, (bool, int, float, str, torch.Tensor))


def _reload(sd):
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# --------------------------------------------------------------------------- constant schedules: torch's numbers
METRICS = st.lists(
    st.one_of(
        st.sampled_from([1.0, 0.9, 0.5, 0.49999, 2.0, float("nan"), float("inf"), -float("inf")]),
        st.floats(-10, 10),
    ),
    min_size=1,
    max_size=24,
)


@settings(max_examples=120, deadline=None)
@given(
    metrics=METRICS,
    mode=st.sampled_from(["min", "max"]),
    threshold_mode=st.sampled_from(["rel", "abs"]),
    threshold=st.sampled_from([0.0, 1e-4, 0.1]),
    patience=st.integers(0, 3),
    cooldown=st.integers(0, 2),
    factor=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1 / 3]),
    min_lr=st.one_of(
        st.sampled_from([0, 0.0, 1e-3, 0.05]),
        st.lists(st.sampled_from([0.0, 1e-4, 0.02, 0.5]), min_size=len(LRS), max_size=len(LRS)),
    ),
    eps=st.sampled_from([0.0, 1e-8, 1e-3, 0.05]),
)
def test_constant_schedules_give_torch_lrs_counters_and_parameters(
    metrics, mode, threshold_mode, threshold, patience, cooldown, factor, min_lr, eps
):
    kw = dict(
        mode=mode,
        factor=factor,
        patience=patience,
        threshold=threshold,
        threshold_mode=threshold_mode,
        cooldown=cooldown,
        min_lr=min_lr,
        eps=eps,
    )
    a, b = _params(), _params()
    oa, ob = _fused(a, momentum=0.9), _torch_sgd(b, momentum=0.9)
    pa, pb = ReduceLROnPlateau(oa, **kw), TorchPlateau(ob, **kw)
    for t, m in enumerate(metrics):
        _epoch(t, m, (a, oa, pa), (b, ob, pb))
        assert _lrs(oa) == _lrs(ob)
        assert pa.get_last_lr() == pb.get_last_lr()
        _same_counters(pa, pb)
    for p, q in zip(a, b):
        assert torch.equal(p, q)
    # the reduction counts explain the lrs: Scaled(Constant(lr), factor, min_lr, n) is the group's schedule
    for i, g in enumerate(oa.param_groups):
        assert g["schedule"].lr(0) == ob.param_groups[i]["lr"]
        assert pa.state_dict()["base_schedules"][i] == clr.Constant(LRS[i]).to_dict()


def test_torch_state_keys_are_all_kept():
    a, b = _params(), _params()
    pa, pb = ReduceLROnPlateau(_fused(a), patience=0), TorchPlateau(_torch_sgd(b), patience=0)
    for m in (1.0, 2.0, 3.0):
        pa.step(m)
        pb.step(m)
    sa, sb = pa.state_dict(), pb.state_dict()
    assert set(sa) == set(sb) | {"reductions", "base_schedules"}
    assert {k: sa[k] for k in sb} == sb
    assert sa["reductions"] == [2, 2, 2]


# --------------------------------------------------------------------------- a moving schedule
def _cosine(peak, w, n):
    optimization = pytest.importorskip("transformers.optimization")
    return lambda t: (
        peak
        * optimization._get_cosine_schedule_with_warmup_lr_lambda(
            t, num_warmup_steps=w, num_training_steps=n, num_cycles=0.5
        )
    )


# improves, then plateaus: with patience=1 and cooldown=1 it reduces several times
PLATEAU_METRICS = [1.0, 0.9, 0.9, 0.9, 0.8, 0.8, 0.8, 0.8, 0.7, 0.7, 0.7, 0.6, 0.6, 0.6, 0.6, 0.6]


@pytest.mark.parametrize("min_lr", [0.0, 2e-3])
def test_a_moving_schedule_is_reduced_from_the_next_update_on(min_lr):
    peak, w, total, per_epoch, factor = 0.1, 5, 3 * len(PLATEAU_METRICS), 3, 0.5
    sched = clr.WarmupCosine(peak, w, total)
    expected_lr = _cosine(peak, w, total)
    a, b = _params(2), _params(2)
    oa = CLRSGD(a, sched, momentum=0.9)
    ob = torch.optim.SGD(b, lr=0.0, momentum=0.9, foreach=False)
    plateau = ReduceLROnPlateau(oa, factor=factor, patience=1, cooldown=1, min_lr=min_lr, eps=0.0)
    # an independent count of the reductions: torch's plateau over a constant lr of 1
    counter = TorchPlateau(
        torch.optim.SGD([nn.Parameter(torch.ones(1))], lr=1.0), factor=0.5, patience=1, cooldown=1, eps=0.0
    )

    def reduced(k, n):
        lr = expected_lr(k)
        for _ in range(n):
            lr = max(lr * factor, min_lr)
        return lr

    n, k, events = 0, 0, 0
    for m in PLATEAU_METRICS:
        for _ in range(per_epoch):
            lr = reduced(k, n)
            assert oa.param_groups[0]["lr"] == lr == clr.Scaled(sched, factor, min_lr, n).lr(k)
            ob.param_groups[0]["lr"] = lr
            _grads(a, k)
            _grads(b, k)
            oa.step()
            ob.step()
            k += 1
        plateau.step(m)
        counter.step(m)
        if round(math.log2(1 / counter.optimizer.param_groups[0]["lr"])) > events:
            events += 1
            n += reduced(k, n) - reduced(k, n + 1) > 0  # torch's eps rule at the step the group shows
        assert plateau.reductions == [n]
    assert events == 4 and n == (4 if min_lr == 0 else 3)  # the last one: the lr already at min_lr
    for p, q in zip(a, b):
        assert torch.equal(p, q)


def test_a_reduction_that_changes_the_lr_by_eps_or_less_is_skipped():
    p = _params(1)
    opt = CLRSGD(p, clr.WarmupCosine(0.1, 4, 20))
    plateau = ReduceLROnPlateau(opt, patience=0, eps=1e-8)
    plateau.step(1.0)
    plateau.step(2.0)  # at step 0 the warmup's lr is 0: no reduction lowers it
    assert plateau.reductions == [0] and opt.param_groups[0]["schedule"] == clr.WarmupCosine(0.1, 4, 20)
    _grads(p, 0)
    opt.step()
    plateau.step(3.0)
    assert plateau.reductions == [1] and opt.param_groups[0]["lr"] == 0.1 * 0.25 * 0.1


def test_a_swapped_schedule_becomes_the_base_and_keeps_the_count():
    p = _params(1)
    opt = CLRAdamW(p, clr.Constant(0.1))
    plateau = ReduceLROnPlateau(opt, patience=0)
    for m in (1.0, 2.0, 3.0):
        _grads(p, 0)
        opt.step()
        plateau.step(m)
    assert plateau.reductions == [2]
    s2 = clr.WarmupCosine(0.05, 2, 50)
    opt.param_groups[0]["schedule"] = s2
    assert plateau.state_dict()["base_schedules"] == [s2.to_dict()]
    plateau.step(0.5)  # an improvement: no reduction, the count applies to s2 from here
    assert opt.param_groups[0]["schedule"] == clr.Scaled(s2, 0.1, 0, 2)
    assert opt.param_groups[0]["lr"] == clr.Scaled(s2, 0.1, 0, 2).lr(3)
    _grads(p, 1)
    opt.step()
    assert opt.param_groups[0]["lr"] == clr.Scaled(s2, 0.1, 0, 2).lr(4)
    assert plateau.reductions == [2] and plateau.base_schedules == [s2]


def test_plain_and_scheduled_groups_of_one_fused_optimizer():
    a, b = _params(2), _params(2)
    oa = CLRSGD([{"params": [a[0]], "schedule": None, "lr": 0.1}, {"params": [a[1]]}], clr.Constant(0.1))
    ob = _torch_sgd(b, [0.1, 0.1])
    pa, pb = ReduceLROnPlateau(oa, patience=0, min_lr=1e-3), TorchPlateau(ob, patience=0, min_lr=1e-3)
    for t, m in enumerate([1.0, 2.0, 3.0, 4.0]):
        _epoch(t, m, (a, oa, pa), (b, ob, pb))
        assert _lrs(oa) == _lrs(ob)
    assert oa.param_groups[0]["schedule"] is None and pa.reductions == [2, 2]
    for p, q in zip(a, b):
        assert torch.equal(p, q)


# --------------------------------------------------------------------------- torch optimizers under ScheduleLR
@pytest.mark.parametrize("make", ["sgd", "adamw"])
def test_schedule_lr_under_the_plateau_gives_the_fused_sequence(make):
    metrics = [1.0, 2.0, 2.0, 0.5, 3.0, 3.0, 3.0, 3.0]
    kw = dict(patience=1, factor=0.5, min_lr=[0.0, 0.01])
    a, b = _params(2), _params(2)
    scheds = [clr.Constant(0.1), clr.WarmupCosine(0.05, 3, 40)]
    if make == "sgd":
        oa = CLRSGD([{"params": [p], "schedule": s} for p, s in zip(a, scheds)], scheds[0])
        ob = torch.optim.SGD(b, lr=0.0, foreach=False)
    else:
        oa = CLRAdamW([{"params": [p], "schedule": s} for p, s in zip(a, scheds)], scheds[0])
        ob = torch.optim.AdamW(b, lr=0.0, fused=True)
    ob.param_groups[:] = [dict(ob.param_groups[0], params=[q]) for q in b]  # one group per parameter
    sb = ScheduleLR(ob, scheds)
    pa, pb = ReduceLROnPlateau(oa, **kw), ReduceLROnPlateau(ob, **kw)
    for t, m in enumerate(metrics):
        _grads(a, t)
        _grads(b, t)
        oa.step()
        ob.step()
        sb.step()
        pa.step(m)
        pb.step(m)
        assert _lrs(oa) == _lrs(ob) == sb.get_last_lr()
        assert pa.reductions == pb.reductions
        assert sb.schedules == [g["schedule"] for g in oa.param_groups]
    assert pb.reductions == [3, 3]
    for p, q in zip(a, b):
        assert torch.equal(p, q)
    # a ScheduleLR given in place of its optimizer stands for it
    assert ReduceLROnPlateau(sb).optimizer is ob


def test_a_plain_torch_optimizer_gets_torch_s_plateau_and_loads_torch_s_state():
    a, b = _params(), _params()
    oa, ob = _torch_sgd(a), _torch_sgd(b)
    pa, pb = ReduceLROnPlateau(oa, patience=1, cooldown=1), TorchPlateau(ob, patience=1, cooldown=1)
    for m in PLATEAU_METRICS[:8]:
        pa.step(m)
        pb.step(m)
    assert _lrs(oa) == _lrs(ob)
    # torch's own state, saved and loaded into clrfast's, continues as torch's does
    pc = ReduceLROnPlateau(oc := _torch_sgd(_params()), patience=1, cooldown=1)
    for g, h in zip(oc.param_groups, ob.param_groups):
        g["lr"] = h["lr"]
    pc.load_state_dict(_reload(pb.state_dict()))
    for m in PLATEAU_METRICS[8:]:
        pc.step(m)
        pb.step(m)
        assert _lrs(oc) == _lrs(ob)
        _same_counters(pc, pb)


# --------------------------------------------------------------------------- state dicts
def _run(opt, plateau, params, metrics, t0=0, sched_lr=None):
    lrs = []
    for t, m in enumerate(metrics, t0):
        for _ in range(2):
            _grads(params, t)
            opt.step()
            if sched_lr is not None:
                sched_lr.step()
        plateau.step(m)
        lrs.append(_lrs(opt))
    return lrs


@pytest.mark.parametrize("load_optimizer", [True, False])
def test_a_state_dict_round_trip_mid_run_continues_identically(load_optimizer):
    sched = clr.WarmupCosine(0.1, 4, 80)
    kw = dict(patience=1, cooldown=1, factor=0.5, min_lr=1e-3)
    a, b = _params(2), _params(2)
    oa = CLRSGD(a, sched, momentum=0.9)
    pa = ReduceLROnPlateau(oa, **kw)
    full = _run(oa, pa, a, PLATEAU_METRICS)
    ob = CLRSGD(b, sched, momentum=0.9)
    pb = ReduceLROnPlateau(ob, **kw)
    head = _run(ob, pb, b, PLATEAU_METRICS[:7])
    sd = pb.state_dict()
    assert _plain_data(sd) and pb.reductions == [2]
    saved_opt, saved = _reload(ob.state_dict()), _reload(sd)
    c = [nn.Parameter(p.detach().clone()) for p in b]
    oc = CLRSGD(c, sched, momentum=0.9)
    pc = ReduceLROnPlateau(oc, **kw)
    if load_optimizer:
        oc.load_state_dict(saved_opt)
    else:  # the momentum buffers and the clock by hand: the plateau's load alone re-wraps the schedule
        for p, q in zip(c, b):
            oc.state[p]["momentum_buffer"] = ob.state[q]["momentum_buffer"].clone()
        oc.param_groups[0]["step"] = ob.param_groups[0]["step"]
    pc.load_state_dict(saved)
    assert oc.param_groups[0]["schedule"] == clr.Scaled(sched, 0.5, 1e-3, 2)
    assert oc.param_groups[0]["lr"] == full[6][0]
    tail = _run(oc, pc, c, PLATEAU_METRICS[7:], t0=7)
    assert head + tail == full
    for p, q in zip(a, c):
        assert torch.equal(p, q)
    assert pc.state_dict() == pa.state_dict()


def test_a_schedule_lr_run_round_trips_with_its_plateau():
    sched = clr.WarmupCosine(0.1, 4, 80)
    kw = dict(patience=1, cooldown=1, factor=0.5)

    def build(params):
        opt = torch.optim.SGD(params, lr=0.0, momentum=0.9, foreach=False)
        s = ScheduleLR(opt, sched)
        return opt, s, ReduceLROnPlateau(opt, **kw)

    a, b = _params(1), _params(1)
    oa, sa, pa = build(a)
    full = _run(oa, pa, a, PLATEAU_METRICS, sched_lr=sa)
    ob, sb, pb = build(b)
    head = _run(ob, pb, b, PLATEAU_METRICS[:7], sched_lr=sb)
    saved = _reload({"opt": ob.state_dict(), "sched": sb.state_dict(), "plateau": pb.state_dict()})
    c = [nn.Parameter(p.detach().clone()) for p in b]
    oc, sc, pc = build(c)
    pc.load_state_dict(saved["plateau"])  # either order: the ScheduleLR's saved schedule is the same value
    oc.load_state_dict(saved["opt"])
    sc.load_state_dict(saved["sched"])
    tail = _run(oc, pc, c, PLATEAU_METRICS[7:], t0=7, sched_lr=sc)
    assert head + tail == full
    assert torch.equal(a[0], c[0])


def test_pickle_and_deepcopy_keep_the_plateau_and_its_optimizer_together():
    p = _params(1)
    opt = CLRSGD(p, clr.Constant(0.1))
    plateau = ReduceLROnPlateau(opt, patience=0)
    plateau.step(1.0)
    plateau.step(2.0)
    for twin in (copy.deepcopy(plateau), pickle.loads(pickle.dumps(plateau))):
        assert twin.optimizer is not opt and twin.reductions == [1]
        assert twin.optimizer.param_groups[0]["schedule"] == clr.Scaled(clr.Constant(0.1), 0.1, 0, 1)
        twin.step(3.0)
        assert twin.reductions == [2] and plateau.reductions == [1]


# --------------------------------------------------------------------------- the engine's refusal
def test_torch_s_plateau_and_its_subclasses_are_still_refused_over_a_schedule():
    class Sub(TorchPlateau):
        pass

    class Ours(ReduceLROnPlateau):
        pass

    for cls in (TorchPlateau, Sub):
        p = _params(1)
        opt = CLRSGD(p, clr.Constant(0.1))
        plateau = cls(opt)
        _grads(p, 0)
        with pytest.raises(RuntimeError, match=r"torch ReduceLROnPlateau holds.*clrfast\.torch\.ReduceLROnPlateau"):
            opt.step()
        del plateau
    for cls in (ReduceLROnPlateau, Ours):
        p = _params(1)
        opt = CLRSGD(p, clr.Constant(0.1))
        plateau = cls(opt, patience=0)
        plateau.state_dict()
        for t, m in enumerate((1.0, 2.0, 3.0)):
            _grads(p, t)
            opt.step()
            plateau.step(m)
        assert opt.param_groups[0]["lr"] == pytest.approx(1e-3) and opt.param_groups[0]["step"] == 3


def test_making_one_needs_no_referrer_scan(monkeypatch):
    import clrfast.torch._follow as follow

    scans = []
    real = follow.gc.get_referrers
    monkeypatch.setattr(follow.gc, "get_referrers", lambda *objs: scans.append(1) or real(*objs))
    p = _params(1)
    opt = CLRSGD(p, clr.Constant(0.1))
    plateau = ReduceLROnPlateau(opt, patience=0)
    for t, m in enumerate((1.0, 2.0, 3.0)):
        _grads(p, t)
        opt.step()
        plateau.step(m)  # reduced lrs are this optimizer's own writes: no lowered lr to look into
    assert scans == [] and plateau.reductions == [2]


# --------------------------------------------------------------------------- the CUDA branch, emulated
def test_a_reduction_on_the_cuda_branch_shows_and_applies_at_once():
    from test_cuda_branch import on_device

    a, b = _params(2), _params(2)
    sched = clr.WarmupCosine(0.1, 2, 30)
    oa, ob = CLRSGD(a, sched, momentum=0.9), CLRSGD(b, sched, momentum=0.9)
    on_device(oa)
    pa, pb = ReduceLROnPlateau(oa, patience=0), ReduceLROnPlateau(ob, patience=0)
    for t, m in enumerate([1.0, 2.0, 3.0, 0.5, 4.0]):
        _epoch(t, m, (a, oa, pa), (b, ob, pb))
        assert isinstance(oa.param_groups[0]["lr"], torch.Tensor)
        assert float(oa.param_groups[0]["lr"]) == ob.param_groups[0]["lr"]
    assert pa.reductions == pb.reductions == [3]
    for p, q in zip(a, b):
        assert torch.equal(p, q)


# --------------------------------------------------------------------------- Lightning
@pytest.mark.filterwarnings("ignore:The 'train_dataloader' does not have many workers:UserWarning")
@pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning")
def test_lightning_passes_the_monitored_metric_and_the_lr_follows(tmp_path):
    try:
        import pytorch_lightning as pl
    except ImportError:
        pl = pytest.importorskip("lightning.pytorch")
    losses = [3.0, 2.0, 2.5, 2.5, 2.5, 1.0]
    seen = []

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = nn.functional.mse_loss(self.net(x).squeeze(-1), y)
            self.log("train_loss", losses[self.current_epoch])  # a scripted plateau
            return loss

        def on_train_epoch_start(self):
            seen.append(self.trainer.optimizers[0].param_groups[0]["lr"])

        def configure_optimizers(self):
            opt = CLRSGD(self.parameters(), clr.Constant(0.1))
            return {
                "optimizer": opt,
                "lr_scheduler": {"scheduler": ReduceLROnPlateau(opt, factor=0.5, patience=0), "monitor": "train_loss"},
            }

    x, y = torch.randn(8, 2), torch.randn(8)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=len(losses),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(Module(), loader)
    assert seen == [0.1, 0.1, 0.1, 0.05, 0.025, 0.0125]
    (opt,) = trainer.optimizers
    assert opt.param_groups[0]["step"] == 2 * len(losses)
    assert opt.param_groups[0]["schedule"] == clr.Scaled(clr.Constant(0.1), 0.5, 0, 3)


# --------------------------------------------------------------------------- bad input, all or nothing
@pytest.mark.parametrize(
    "kw, error, match",
    [
        (dict(factor=1.0), ValueError, r"^Factor should be < 1\.0\.$"),
        (dict(factor=-0.5), ValueError, r"factor must be >= 0.0, got -0.5"),
        (dict(factor="0.1"), TypeError, r"factor must be a real number"),
        (dict(mode="avg"), ValueError, r"^mode avg is unknown!$"),
        (dict(threshold_mode="pct"), ValueError, r"^threshold mode pct is unknown!$"),
        (dict(min_lr=[0.0]), ValueError, r"^expected 2 min_lrs, got 1$"),
        (dict(min_lr=-1e-3), ValueError, r"min_lr must be >= 0.0, got -0.001"),
        (dict(min_lr=[0.0, float("nan")]), ValueError, r"min_lr\[1\] must be finite"),
        (dict(patience=-1), ValueError, r"patience must be >= 0, got -1"),
        (dict(patience=1.5), TypeError, r"patience must be an integer"),
        (dict(cooldown=-2), ValueError, r"cooldown must be >= 0, got -2"),
        (dict(eps=-1.0), ValueError, r"eps must be >= 0.0, got -1.0"),
        (dict(threshold=float("inf")), ValueError, r"threshold must be finite"),
    ],
)
def test_bad_arguments_are_named(kw, error, match):
    opt = _fused(_params(2), LRS[:2])
    with pytest.raises(error, match=match):
        ReduceLROnPlateau(opt, **kw)


def test_not_an_optimizer():
    with pytest.raises(TypeError, match="^list is not an Optimizer$"):
        ReduceLROnPlateau([])


def _snapshot(opt, plateau):
    return copy.deepcopy(
        (
            [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups],
            {k: v for k, v in plateau.__dict__.items()},
            plateau._written,
        )
    )


def test_a_step_that_raises_changes_nothing():
    p = _params(2)
    opt = _fused(p, LRS[:2])
    plateau = ReduceLROnPlateau(opt, patience=0, min_lr=[0.0, 0.0])
    plateau.step(1.0)
    before = _snapshot(opt, plateau)
    for bad, error in (("abc", ValueError), (None, TypeError), (torch.ones(2), (RuntimeError, ValueError, TypeError))):
        with pytest.raises(error):
            plateau.step(bad)
        assert _snapshot(opt, plateau) == before
    # a group added since, with a min_lr list: torch's error at the reduction, and nothing changed
    opt.add_param_group({"params": [nn.Parameter(torch.ones(2, dtype=torch.float64))]})
    before = _snapshot(opt, plateau)
    with pytest.raises(RuntimeError, match=r"The number of param groups in the `optimizer` \(3\) differs"):
        plateau.step(2.0)
    assert _snapshot(opt, plateau) == before
    plateau.min_lrs = [0.0, 0.0, 0.0]
    plateau.step(2.0)
    assert plateau.reductions == [1, 1, 1]


def test_a_group_added_with_a_default_min_lr_is_reduced_too():
    p = _params(1)
    opt = CLRSGD(p, clr.Constant(0.1))
    plateau = ReduceLROnPlateau(opt, patience=0, min_lr=1e-3)
    opt.add_param_group({"params": _params(1, seed=1), "schedule": clr.Constant(0.2)})
    plateau.step(1.0)
    plateau.step(2.0)
    assert _lrs(opt) == [0.1 * 0.1, 0.2 * 0.1] and plateau.min_lrs == [1e-3, 1e-3]


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(factor=1.5), ValueError, r"state_dict\['factor'\]: Factor should be < 1\.0"),
        (dict(mode="up"), ValueError, r"state_dict: mode up is unknown!"),
        (dict(threshold_mode=3), ValueError, r"state_dict: threshold mode 3 is unknown!"),
        (dict(min_lrs=[0.0]), ValueError, r"state_dict\['min_lrs'\] must be a list of 2"),
        (dict(min_lrs=[0.0, -1.0]), ValueError, r"state_dict\['min_lrs'\]\[1\] must be >= 0.0"),
        (dict(patience="1"), TypeError, r"state_dict\['patience'\] must be an integer"),
        (dict(num_bad_epochs=-1), ValueError, r"state_dict\['num_bad_epochs'\] must be >= 0"),
        (dict(cooldown_counter=0.5), TypeError, r"state_dict\['cooldown_counter'\] must be an integer"),
        (dict(best="low"), TypeError, r"state_dict\['best'\] must be a real number"),
        (dict(best=float("nan")), ValueError, r"state_dict\['best'\] must not be NaN"),
        (dict(reductions=[1]), ValueError, r"state_dict\['reductions'\] must be a list of 2"),
        (dict(reductions=[1, -1]), ValueError, r"state_dict\['reductions'\]\[1\] must be >= 0"),
        (dict(base_schedules=[None, None]), ValueError, r"state_dict\['base_schedules'\]\[0\] is None"),
        (dict(base_schedules=[{"type": "Nope"}, None]), ValueError, r"state_dict\['base_schedules'\]\[0\]:"),
        (dict(_last_lr=0.1), TypeError, r"state_dict\['_last_lr'\] must be a list"),
        (dict(optimizer=1), ValueError, r"keys ReduceLROnPlateau does not keep: 'optimizer'"),
    ],
)
def test_a_bad_state_dict_is_refused_and_changes_nothing(change, error, match):
    p = _params(2)
    opt = _fused(p, LRS[:2])
    plateau = ReduceLROnPlateau(opt, patience=0)
    plateau.step(1.0)
    plateau.step(2.0)
    sd = plateau.state_dict()
    sd["reductions"] = [3, 3]
    before = _snapshot(opt, plateau)
    with pytest.raises(error, match=match):
        plateau.load_state_dict({**sd, **change})
    assert _snapshot(opt, plateau) == before
    plateau.load_state_dict(sd)
    assert plateau.reductions == [3, 3] and opt.param_groups[0]["lr"] == clr.Scaled(clr.Constant(0.1), 0.1, 0, 3).lr(0)


def test_a_tensor_lr_is_filled_in_place_as_torch_does():
    a, b = _params(1), _params(1)
    oa = torch.optim.SGD(a, lr=torch.tensor(0.1, dtype=torch.float64))
    ob = torch.optim.SGD(b, lr=torch.tensor(0.1, dtype=torch.float64))
    lr = oa.param_groups[0]["lr"]
    pa, pb = ReduceLROnPlateau(oa, patience=0), TorchPlateau(ob, patience=0)
    for m in (1.0, 2.0, 3.0):
        pa.step(m)
        pb.step(m)
    assert oa.param_groups[0]["lr"] is lr and torch.equal(lr, ob.param_groups[0]["lr"])
    assert [float(x) for x in pa.get_last_lr()] == [float(x) for x in pb.get_last_lr()]


def test_torch_s_state_over_a_scheduled_group_keeps_the_reductions():
    p = _params(1)
    opt = CLRSGD(p, clr.Constant(0.1))
    plateau = ReduceLROnPlateau(opt, patience=0)
    for m in (1.0, 2.0):
        plateau.step(m)
    torch_state = TorchPlateau(torch.optim.SGD(_params(1), lr=0.1), patience=3).state_dict()
    plateau.load_state_dict(torch_state)
    assert plateau.reductions == [1] and plateau.patience == 3 and plateau.best == math.inf
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
