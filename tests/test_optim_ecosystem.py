"""CLRSGD inside the training loops of Lightning and transformers, against torch.optim.SGD in the same loops.

What a group shows after k applied updates is lr(k) and momentum(k), the values the next update
uses; loggers that read the group (Lightning's ``LearningRateMonitor``) or a scheduler
(transformers' ``Trainer``) must therefore report the values that are applied, and a value written
into the group by other code (Lightning's lr finder, a transformers scheduler) must be applied. The
oracle everywhere is torch's own ``SGD`` (+ torch's scheduler) run through the same loop, plus the
schedule's own values and a plain training loop.
"""

import copy
import math
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import clrfast as clr  # noqa: E402
from clrfast.torch import CLRSGD, CLRAdamW  # noqa: E402
from optim_registry import params  # noqa: E402
from torch import nn  # noqa: E402

# A cycle of 5 steps (3 up, 2 down) whose height halves each cycle; momentum mirrors the lr.
CYCLE = dict(base_lr=0.01, max_lr=0.1, step_size_up=3, step_size_down=2, mode="triangular2")
MOMENTA = dict(base_momentum=0.8, max_momentum=0.95)


def _schedule():
    return clr.Cyclic(**CYCLE, **MOMENTA)


def _torch_cyclic(opt):
    return torch.optim.lr_scheduler.CyclicLR(opt, **CYCLE, cycle_momentum=True, **MOMENTA)


@pytest.fixture(autouse=True)
def _keep_global_rng():
    """The trainers seed the global generators; leave them as the next test expects them."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    threads = torch.get_num_threads()
    yield
    random.setstate(states[0])
    np.random.set_state(states[1])
    torch.set_rng_state(states[2])
    torch.set_num_threads(threads)


def _mlp(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).to(dtype)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=dtype))
    return net


def _data(n, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=dtype)
    y = torch.sin(x @ torch.tensor([1.0, -2.0, 0.5, 1.5], dtype=dtype)) + 0.1 * torch.randn(n, generator=g, dtype=dtype)
    return x, y


def _flat(params) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])


def _assert_bits(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape, what
    if not torch.equal(a, b):
        diff = (a - b).abs().max().item()
        raise AssertionError(f"{what}: not bit-identical (max |diff| {diff:.3e})")


# --------------------------------------------------------------------------- Lightning
def _lightning():
    try:
        import pytorch_lightning as pl
    except ImportError:
        pl = pytest.importorskip("lightning.pytorch")
    return pl


def _lightning_module(pl, make_optimizer, dtype):
    class Regressor(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _mlp(dtype)

        def forward(self, x):
            return self.net(x).squeeze(-1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.mse_loss(self(x), y)

        def configure_optimizers(self):
            return make_optimizer(self.parameters())

    return Regressor()


def _lightning_trainer(pl, tmp_path, steps, callbacks=(), logger=False):
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        max_steps=steps,
        logger=logger,
        callbacks=list(callbacks),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),
    )


def _loader(x, y, batch_size):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size, shuffle=False)


# Lightning warns that a loader without worker processes may be slow; the test's loader is
# in-memory and tiny, and workers would only slow it down.
_NO_WORKERS = "ignore:The 'train_dataloader' does not have many workers:UserWarning"
# Lightning's loader code uses a torch pytree API that torch deprecated (not ours to change).
_LEAFSPEC = r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning"


@pytest.mark.filterwarnings(_NO_WORKERS)
@pytest.mark.filterwarnings(_LEAFSPEC)
def test_lightning_lr_monitor_logs_the_applied_lr_and_momentum(tmp_path):
    pl = _lightning()
    steps, dtype = 12, torch.float64
    x, y = _data(8 * steps, dtype)

    class Capture(pl.loggers.Logger):
        def __init__(self):
            super().__init__()
            self.rows = []

        @property
        def name(self):
            return "capture"

        @property
        def version(self):
            return 0

        def log_hyperparams(self, params, *args, **kwargs):
            pass

        def log_metrics(self, metrics, step=None):
            self.rows.append((step, dict(metrics)))

    class Record(pl.Callback):
        """Parameters and gradients around each update, read from the real loop."""

        def __init__(self):
            self.before, self.grads, self.after = [], [], []

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            self.before.append(_flat(pl_module.parameters()).clone())
            self.grads.append(torch.cat([p.grad.reshape(-1) for p in pl_module.parameters()]).clone())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.after.append(_flat(pl_module.parameters()).clone())

    logger, record = Capture(), Record()
    monitor = pl.callbacks.LearningRateMonitor(logging_interval="step", log_momentum=True)
    module = _lightning_module(pl, lambda ps: CLRSGD(ps, _schedule()), dtype)
    initial = copy.deepcopy(module.net)
    trainer = _lightning_trainer(pl, tmp_path, steps, callbacks=[monitor, record], logger=logger)
    trainer.fit(module, _loader(x, y, 8))
    assert trainer.global_step == steps

    logged = {step: m for step, m in logger.rows if "lr-CLRSGD" in m}
    assert sorted(logged) == list(range(steps)), logger.rows  # one row before each update
    lrs = [logged[k]["lr-CLRSGD"] for k in range(steps)]
    moms = [logged[k]["lr-CLRSGD-momentum"] for k in range(steps)]

    # The schedule's values for update k, and torch's SGD + CyclicLR in a plain loop (the oracle).
    sched = _schedule()
    assert lrs == [sched.lr(k) for k in range(steps)]
    assert moms == [sched.momentum(k) for k in range(steps)]
    ref = copy.deepcopy(initial)
    opt = torch.optim.SGD(ref.parameters(), lr=0.01, momentum=0.9, foreach=False)
    cyc = _torch_cyclic(opt)
    torch_lrs, torch_moms, torch_after = [], [], []
    for xb, yb in _loader(x, y, 8):
        torch_lrs.append(opt.param_groups[0]["lr"])
        torch_moms.append(opt.param_groups[0]["momentum"])
        opt.zero_grad()
        nn.functional.mse_loss(ref(xb).squeeze(-1), yb).backward()
        opt.step()
        cyc.step()
        torch_after.append(_flat(ref.parameters()).clone())
    assert lrs == torch_lrs
    assert moms == torch_moms

    # The weight change of each update, rebuilt from the logged lr and momentum and the
    # gradient the loop computed: the logged values are the ones applied at that step.
    assert len(record.after) == steps
    buf = None
    for k in range(steps):
        g = record.grads[k]
        buf = g.clone() if buf is None else moms[k] * buf + g
        torch.testing.assert_close(
            record.after[k],
            record.before[k] - lrs[k] * buf,
            rtol=1e-12,
            atol=1e-15,
            msg=lambda m, k=k: f"update {k} did not apply the logged lr/momentum: {m}",
        )
        if k:
            _assert_bits(record.before[k], record.after[k - 1], f"weights between updates {k - 1} and {k}")

    # Lightning's loop and the plain torch loop: the same weights after every update.
    for k in range(steps):
        _assert_bits(record.after[k], torch_after[k], f"weights after update {k}")
    _assert_bits(_flat(module.parameters()), _flat(ref.parameters()), "trained weights")


@pytest.mark.filterwarnings(_NO_WORKERS)
@pytest.mark.filterwarnings(_LEAFSPEC)
def test_lightning_lr_find_applies_the_swept_lr(tmp_path):
    pl = _lightning()

    n = 30
    x, y = _data(8 * n)
    # The finder attaches its own torch scheduler: over a schedule that is refused before any
    # update, with what to do instead (schedule=None lets the finder set the lr).
    module = _lightning_module(pl, lambda ps: CLRSGD(ps, clr.Cyclic(**CYCLE), momentum=0.9), torch.float32)
    initial = _flat(module.parameters()).clone()
    trainer = _lightning_trainer(pl, tmp_path / "scheduled", n)
    with pytest.raises(RuntimeError, match=r"LRScheduler was attached.*schedule=None"):
        pl.tuner.Tuner(trainer).lr_find(
            module,
            train_dataloaders=_loader(x, y, 8),
            min_lr=1e-4,
            max_lr=0.5,
            num_training=n,
            early_stop_threshold=None,
            update_attr=False,
        )
    _assert_bits(_flat(module.parameters()), initial, "weights after the refused lr_find")
    runs = {}
    for name, make in [
        ("clrsgd-plain", lambda ps: CLRSGD(ps, 0.01, momentum=0.9)),
        ("torch", lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9, foreach=False)),
    ]:
        module = _lightning_module(pl, make, torch.float32)
        initial = _flat(module.parameters()).clone()
        trainer = _lightning_trainer(pl, tmp_path / name, n)
        finder = pl.tuner.Tuner(trainer).lr_find(
            module,
            train_dataloaders=_loader(x, y, 8),
            min_lr=1e-4,
            max_lr=0.5,
            num_training=n,
            early_stop_threshold=None,
            update_attr=False,
        )
        runs[name] = finder
        # lr_find restores the model and the optimizer it found.
        _assert_bits(_flat(module.parameters()), initial, f"{name}: weights after lr_find")
        if name.startswith("clrsgd"):
            (opt,) = trainer.optimizers
            assert isinstance(opt, CLRSGD)
            assert opt.param_groups[0]["step"] == 0 and not opt.state
            assert opt.param_groups[0]["lr"] == 0.01

    ref = runs["torch"]
    assert len(ref.results["lr"]) == n
    # A sweep of the lr: not the cyclic schedule's values.
    assert ref.results["lr"][0] == 1e-4 and ref.results["lr"][-1] > 0.4
    for name in ("clrsgd-plain",):
        got = runs[name]
        assert got.results["lr"] == ref.results["lr"], name
        loss, ref_loss = torch.tensor(got.results["loss"]), torch.tensor(ref.results["loss"])
        torch.testing.assert_close(loss, ref_loss, rtol=0, atol=0, equal_nan=True, msg=lambda m, n=name: f"{n}: {m}")
        assert got.suggestion() == ref.suggestion(), name
    assert ref.suggestion() is not None and 1e-4 < ref.suggestion() < 0.5


@pytest.mark.filterwarnings(_NO_WORKERS)
@pytest.mark.filterwarnings(_LEAFSPEC)
@pytest.mark.parametrize("hyper", [dict(weight_decay=0.01), dict(dampening=0.5)], ids=["weight_decay", "dampening"])
def test_lightning_warmup_from_zero_with_a_masked_first_batch(tmp_path, hyper):
    """A torch scheduler warming up from lr 0, and a first batch whose loss is masked out.

    The first update applies lr 0 to all-zero gradients: nothing moves, but torch's SGD stores
    the first momentum buffer (weight decay included) and the next update builds on it.
    """
    pl = _lightning()
    steps = 6
    x, y = _data(8 * steps)

    def configure(make):
        def configure_optimizers(ps):
            opt = make(ps)
            warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, k / 2))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": warmup, "interval": "step"}}

        return configure_optimizers

    weights = {}
    for name, make in [
        ("clrsgd", lambda ps: CLRSGD(ps, 0.1, momentum=0.9, **hyper)),
        ("torch", lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, foreach=False, **hyper)),
    ]:
        module = _lightning_module(pl, configure(make), torch.float32)
        step = module.training_step
        module.training_step = lambda batch, i, step=step: step(batch, i) * (0.0 if i == 0 else 1.0)
        trainer = _lightning_trainer(pl, tmp_path / name, steps)
        trainer.fit(module, _loader(x, y, 8))
        assert trainer.global_step == steps
        weights[name] = _flat(module.parameters())
    _assert_bits(weights["clrsgd"], weights["torch"], "trained weights")


# --------------------------------------------------------------------------- transformers
class _Pairs(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


class _TinyRegressor(nn.Module):
    """A model in transformers' calling convention: keyword inputs in, ``{'loss': ...}`` out."""

    def __init__(self):
        super().__init__()
        self.net = _mlp()
        self.seen = []  # the training batches, in the order the Trainer fed them

    def forward(self, x, labels=None):
        out = self.net(x).squeeze(-1)
        if self.training:
            self.seen.append((x.clone(), labels.clone()))
        return {"loss": nn.functional.mse_loss(out, labels), "logits": out}


def _hf_train(tmp_path, make_optimizers, steps, max_grad_norm):
    """One transformers Trainer run; returns the model and the (global_step, learning_rate) it logged."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")

    logged = []

    class Capture(transformers.TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "learning_rate" in logs:
                logged.append((state.global_step, logs["learning_rate"]))

    model = _TinyRegressor()
    x, y = _data(8 * steps)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=steps,
        per_device_train_batch_size=8,
        learning_rate=0.1,
        max_grad_norm=max_grad_norm,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=_Pairs(x, y),
        optimizers=make_optimizers(model),
        callbacks=[Capture()],
    )
    trainer.train()
    assert trainer.state.global_step == steps
    assert [s for s, _ in logged] == list(range(1, steps + 1))
    return model, [lr for _, lr in logged]


def test_transformers_trainer_with_its_scheduler_matches_torch_sgd(tmp_path):
    transformers = pytest.importorskip("transformers")
    steps = 10

    def clrsgd(model):
        opt = CLRSGD(model.parameters(), 0.1, momentum=0.9)
        return opt, transformers.get_linear_schedule_with_warmup(opt, 2, steps)

    def sgd(model):
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, foreach=False)
        return opt, transformers.get_linear_schedule_with_warmup(opt, 2, steps)

    model, lrs = _hf_train(tmp_path / "clrsgd", clrsgd, steps, max_grad_norm=1.0)
    ref, ref_lrs = _hf_train(tmp_path / "torch", sgd, steps, max_grad_norm=1.0)
    assert len(model.seen) == len(ref.seen) == steps
    for (xa, ya), (xb, yb) in zip(model.seen, ref.seen):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)  # the same batches in the same order
    # The Trainer logs get_last_lr() between optimizer.step() and scheduler.step(): after s
    # updates it logs the lr update s-1 applied (the warm-up starts at 0), as for torch's SGD.
    warmup = [0.1 * (s / 2) if s < 2 else 0.1 * max(0.0, (steps - s) / (steps - 2)) for s in range(steps)]
    assert ref_lrs == warmup
    assert lrs == ref_lrs
    _assert_bits(_flat(model.parameters()), _flat(ref.parameters()), "trained weights")


def test_transformers_trainer_with_the_optimizers_scheduler_logs_the_schedule(tmp_path):
    steps = 10

    def clrsgd(model):
        opt = CLRSGD(model.parameters(), _schedule())
        return opt, opt.scheduler()

    def sgd(model):
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, foreach=False)
        return opt, _torch_cyclic(opt)

    # No clipping, so that the plain loop below is the whole update.
    model, lrs = _hf_train(tmp_path / "clrsgd", clrsgd, steps, max_grad_norm=0.0)
    ref, ref_lrs = _hf_train(tmp_path / "torch", sgd, steps, max_grad_norm=0.0)

    # Logged after s updates: lr(s-1), the lr update s-1 applied (the Trainer reads get_last_lr()
    # before it steps the scheduler), as torch's SGD + CyclicLR log it.
    sched = _schedule()
    assert lrs == [sched.lr(s) for s in range(steps)]
    assert lrs == ref_lrs
    _assert_bits(_flat(model.parameters()), _flat(ref.parameters()), "trained weights vs torch's SGD + CyclicLR")

    # A plain loop over the batches the Trainer fed, with CLRSGD and no scheduler.
    plain = _TinyRegressor()
    opt = CLRSGD(plain.parameters(), _schedule())
    assert len(model.seen) == steps
    for xb, yb in model.seen:
        opt.zero_grad()
        plain(xb, yb)["loss"].backward()
        opt.step()
    _assert_bits(_flat(model.parameters()), _flat(plain.parameters()), "trained weights vs a plain loop")


@pytest.mark.parametrize("rule", ["CLRSGD", "CLRAdamW"])
def test_transformers_trainer_default_scheduler_is_refused_before_the_first_update(tmp_path, rule):
    """With no scheduler given, the Trainer attaches its own LambdaLR over the schedule: refused, nothing trained."""
    make = {
        "CLRSGD": lambda ps: CLRSGD(ps, clr.Cyclic(**CYCLE), momentum=0.9),
        "CLRAdamW": lambda ps: CLRAdamW(ps, clr.WarmupCosine(1e-2, 5, 20)),
    }[rule]
    made = []

    def optimizers(model):
        made.append((model, make(model.parameters()), _flat(model.parameters()).clone()))
        return made[-1][1], None

    with pytest.raises(RuntimeError, match=r"LRScheduler was attached.*opt\.scheduler\(\)"):
        _hf_train(tmp_path, optimizers, 10, 1.0)
    ((model, opt, initial),) = made
    _assert_bits(_flat(model.parameters()), initial, "weights")
    assert opt.param_groups[0]["step"] == 0 and not opt.state


def test_transformers_trainer_trains_clradamw_at_its_warmup_cosine(tmp_path):
    """CLRAdamW + its scheduler() in the Trainer against torch's AdamW + transformers' own cosine factory."""
    transformers = pytest.importorskip("transformers")
    steps, peak, warmup = 10, 1e-2, 3

    def clradamw(model):
        opt = CLRAdamW(model.parameters(), clr.WarmupCosine(peak, warmup, steps), weight_decay=0.01)
        return opt, opt.scheduler()

    def adamw(model):
        opt = torch.optim.AdamW(model.parameters(), lr=peak, weight_decay=0.01, fused=True)
        return opt, transformers.get_cosine_schedule_with_warmup(opt, warmup, steps)

    model, lrs = _hf_train(tmp_path / "clradamw", clradamw, steps, max_grad_norm=1.0)
    ref, ref_lrs = _hf_train(tmp_path / "torch", adamw, steps, max_grad_norm=1.0)
    sched = clr.WarmupCosine(peak, warmup, steps)
    assert lrs == [sched.lr(s) for s in range(steps)]
    assert lrs == ref_lrs and lrs[0] == 0.0 and max(lrs) == peak
    _assert_bits(_flat(model.parameters()), _flat(ref.parameters()), "trained weights vs torch's AdamW")


@pytest.mark.parametrize("rule", params())
def test_torch_schedulers_over_a_schedule_are_refused_and_change_nothing(rule):
    cls = rule.cls
    attach = {
        "LambdaLR": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda k: 0.5),
        "LinearLR": lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=3),
    }
    for name, make in attach.items():
        p = nn.Parameter(torch.ones(4))
        opt = cls([p], clr.OneCycle(0.1, total_steps=10))
        make(opt)
        p.grad = torch.ones(4)
        with pytest.raises(RuntimeError, match="LRScheduler was attached"):
            opt.step()
        assert torch.equal(p.detach(), torch.ones(4)) and not opt.state, name
        assert opt.param_groups[0]["step"] == 0
    # the optimizer's own scheduler writes back what the groups show: no refusal, the schedule runs
    q = nn.Parameter(torch.ones(4))
    opt = cls([q], clr.OneCycle(0.1, total_steps=10))
    follow = opt.scheduler()
    assert "initial_lr" not in opt.param_groups[0]
    for k in range(5):
        q.grad = torch.ones(4)
        opt.step()
        follow.step()
        assert follow.get_last_lr() == [clr.OneCycle(0.1, total_steps=10).lr(k + 1)]


# --------------------------------------------------------------------------- Lightning precision plugins
def _clip_module(pl, make, clip_log):
    class Clipped(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _mlp()

        def forward(self, x):
            return self.net(x).squeeze(-1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.mse_loss(self(x), y)

        def configure_optimizers(self):
            return make(self.parameters())

        def on_before_optimizer_step(self, optimizer):
            clip_log.append(torch.cat([p.grad.reshape(-1) for p in self.parameters()]).norm().item())

    return Clipped()


PRECISION_PAIRS = {
    "CLRSGD": (
        lambda ps: CLRSGD(ps, _schedule(), weight_decay=1e-3),
        lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9, weight_decay=1e-3, foreach=False),
    ),
    "CLRAdamW": (
        # Lightning refuses gradient clipping with torch's fused AdamW: its for-loop is the reference
        lambda ps: CLRAdamW(ps, _schedule(), weight_decay=1e-2, reference="foreach"),
        lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=1e-2, foreach=False),
    ),
}


@pytest.mark.filterwarnings(_NO_WORKERS)
@pytest.mark.filterwarnings(_LEAFSPEC)
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("rule", PRECISION_PAIRS)
def test_lightning_mixed_precision_with_gradient_clipping_matches_torch(tmp_path, rule, precision):
    pl = _lightning()
    from pytorch_lightning.plugins.precision import MixedPrecision

    steps = 10
    x, y = _data(8 * steps)
    make, make_torch = PRECISION_PAIRS[rule]

    def with_torch_scheduler(ps):
        opt = make_torch(ps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": _torch_cyclic(opt), "interval": "step"}}

    weights, clipped = {}, {}
    for name, configure in (("clrfast", make), ("torch", with_torch_scheduler)):
        clipped[name] = []
        module = _clip_module(pl, configure, clipped[name])
        # Lightning turns the string "16-mixed" into bf16 on a CPU; its plugin runs float16 with a GradScaler
        # (a scale low enough that no step overflows: torch's scheduler would move on at a skipped one)
        amp = (
            {"precision": precision}
            if precision == "bf16-mixed"
            else {"plugins": [MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=256.0))]}
        )
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=steps,
            **amp,
            gradient_clip_val=0.05,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            default_root_dir=str(tmp_path / name),
        )
        trainer.fit(module, _loader(x, y, 8))
        weights[name] = _flat(module.parameters()).clone()
        if name == "clrfast":
            (opt,) = trainer.optimizers
            assert opt.param_groups[0]["step"] == steps
    assert clipped["clrfast"] == clipped["torch"]  # the same gradients reached the clipping
    _assert_bits(weights["clrfast"], weights["torch"], f"{rule} under {precision} with clipping")


@pytest.mark.filterwarnings(_NO_WORKERS)
@pytest.mark.filterwarnings(_LEAFSPEC)
@pytest.mark.parametrize("rule", PRECISION_PAIRS)
def test_lightning_16_mixed_skipped_steps_leave_the_clock_alone(tmp_path, rule):
    pl = _lightning()
    from pytorch_lightning.plugins.precision import MixedPrecision

    steps = 12
    x, y = _data(8 * steps)
    # A scale so large that the first updates overflow in float16: GradScaler skips them
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**22)
    module = _lightning_module(pl, PRECISION_PAIRS[rule][0], torch.float32)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        gradient_clip_val=1.0,
        plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(module, _loader(x, y, 8))
    (opt,) = trainer.optimizers
    skipped = round(math.log2(2.0**22 / scaler.get_scale()))
    assert 0 < skipped < steps
    assert opt.param_groups[0]["step"] == steps - skipped
    assert opt.param_groups[0]["lr"] == _schedule().lr(steps - skipped)


# --------------------------------------------------------------------------- ReduceLROnPlateau
# ReduceLROnPlateau leaves no 'initial_lr' in the groups and wraps no step: over a schedule its
# reductions would each hold for one update, then the schedule would override them. It is
# refused like the other torch schedulers; with schedule=None it drives the lr as torch's.
# Metrics with several plateaus: patience=1 reduces at the second epoch without improvement.
PLATEAU_METRICS = [1.0, 0.9, 0.9, 0.9, 0.8, 0.8, 0.8, 0.8, 0.7, 0.7, 0.7, 0.6, 0.6, 0.6, 0.6, 0.6]


def _plateau(opt):
    return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=1, cooldown=1, min_lr=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("rule", params())
def test_reduce_lr_on_plateau_without_a_schedule_matches_torch(rule, dtype):
    x, y = _data(8 * len(PLATEAU_METRICS), dtype)
    nets = {"clrfast": _mlp(dtype), "torch": _mlp(dtype)}
    opts = {
        "clrfast": rule.make(nets["clrfast"].parameters(), 1e-2),
        "torch": rule.make_reference(nets["torch"].parameters(), 1e-2),
    }
    plateaus = {name: _plateau(opt) for name, opt in opts.items()}
    lrs = {name: [] for name in nets}
    for epoch, metric in enumerate(PLATEAU_METRICS):
        for name, net in nets.items():
            for b in range(2):  # two updates an epoch at the epoch's lr
                xb, yb = x[8 * epoch + 4 * b :][:4], y[8 * epoch + 4 * b :][:4]
                opts[name].zero_grad()
                nn.functional.mse_loss(net(xb).squeeze(-1), yb).backward()
                opts[name].step()
            plateaus[name].step(metric)
            lrs[name].append(opts[name].param_groups[0]["lr"])
        _assert_bits(_flat(nets["clrfast"].parameters()), _flat(nets["torch"].parameters()), f"epoch {epoch}")
    assert lrs["clrfast"] == lrs["torch"]
    assert len(set(lrs["torch"])) == 5  # four reductions (the last one clamped at min_lr)
    assert plateaus["clrfast"].get_last_lr() == plateaus["torch"].get_last_lr()


@pytest.mark.parametrize("rule", params())
def test_reduce_lr_on_plateau_over_a_schedule_is_refused_and_changes_nothing(rule):
    cls = rule.cls
    refusal = r"ReduceLROnPlateau holds this CLR\w+;.*opt\.scheduler\(\).*schedule=None"
    # attached before the first step: the first step refuses
    p = nn.Parameter(torch.ones(4))
    opt = cls([p], clr.OneCycle(0.1, total_steps=10))
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0)
    assert "initial_lr" not in opt.param_groups[0]  # no mark in the group: found by the scheduler's reference
    p.grad = torch.ones(4)
    for _ in range(2):  # a retried step is refused again
        with pytest.raises(RuntimeError, match=refusal):
            opt.step()
    assert torch.equal(p.detach(), torch.ones(4)) and not opt.state and opt.param_groups[0]["step"] == 0
    # attached after the first step (its __dict__ made by state_dict()): refused at the step after it reduced
    p = nn.Parameter(torch.ones(4))
    opt = cls([p], clr.Constant(0.1))
    p.grad = torch.ones(4)
    opt.step()
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0)
    plateau.state_dict()
    for loss in (1.0, 2.0):
        p.grad = torch.ones(4)
        opt.step()
        plateau.step(loss)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    before, state = p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items()}
    p.grad = torch.ones(4)
    for _ in range(2):
        with pytest.raises(RuntimeError, match=refusal):
            opt.step()
    assert torch.equal(p.detach(), before) and opt.param_groups[0]["step"] == 3
    assert all(torch.equal(v, opt.state[p][k]) for k, v in state.items())
    # once it is gone (collected), the schedule runs again
    del plateau
    opt.step()
    assert opt.param_groups[0]["step"] == 4 and opt.param_groups[0]["lr"] == 0.1


def test_looking_for_a_plateau_scans_only_when_one_may_be_there(monkeypatch):
    """The referrer scan (a pass over the collector's objects) runs at the first step only when a
    ReduceLROnPlateau was made since the optimizer was, later only at a step whose lr other code lowered."""
    import clrfast.torch._follow as fused

    scans = []
    real = fused.gc.get_referrers
    monkeypatch.setattr(fused.gc, "get_referrers", lambda *objs: scans.append(1) or real(*objs))

    def step(opt, *params):
        for p in params:
            p.grad = torch.ones(4)
        opt.step()

    p, q = nn.Parameter(torch.ones(4)), nn.Parameter(torch.ones(4))
    opt = CLRSGD([{"params": [p]}, {"params": [q]}], _schedule())
    follow = opt.scheduler()  # writes back the groups' own values: not an lr write
    for _ in range(6):
        step(opt, p, q)
        follow.step()
    assert scans == []
    opt.param_groups[1]["lr"] = 0.5  # a single value written: applied once; not lowered, no look
    step(opt, p, q)
    assert scans == []
    opt.param_groups[1]["lr"] = 1e-4  # lowered: looked for (none), then applied once
    step(opt, p, q)
    assert len(scans) == 1 and opt.param_groups[1]["step"] == 8
    # a ReduceLROnPlateau made (for another optimizer) after this one: one look at the first step
    r = nn.Parameter(torch.ones(4))
    opt = CLRSGD([r], _schedule())
    other = torch.optim.lr_scheduler.ReduceLROnPlateau(torch.optim.SGD([nn.Parameter(torch.ones(1))], lr=0.1))
    for _ in range(3):
        step(opt, r)
    assert len(scans) == 2 and opt.param_groups[0]["step"] == 3 and other.optimizer is not opt


@pytest.mark.filterwarnings(_NO_WORKERS)
@pytest.mark.filterwarnings(_LEAFSPEC)
def test_lightning_reduce_lr_on_plateau_over_a_schedule_stops_with_the_message(tmp_path):
    pl = _lightning()
    made = []

    class Monitored(pl.LightningModule):
        def __init__(self, make):
            super().__init__()
            self.net, self.make = _mlp(), make

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = nn.functional.mse_loss(self.net(x).squeeze(-1), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            opt = self.make(self.parameters())
            made.append((opt, _flat(self.parameters()).clone()))
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
            return {
                "optimizer": opt,
                "lr_scheduler": {"scheduler": scheduler, "monitor": "train_loss", "interval": "step"},
            }

    x, y = _data(8 * 6)
    module = Monitored(lambda ps: CLRSGD(ps, _schedule()))
    with pytest.raises(RuntimeError, match=r"ReduceLROnPlateau holds this CLRSGD;.*opt\.scheduler\(\)"):
        _lightning_trainer(pl, tmp_path / "scheduled", 6).fit(module, _loader(x, y, 8))
    ((opt, initial),) = made
    _assert_bits(_flat(module.parameters()), initial, "weights")
    assert opt.param_groups[0]["step"] == 0 and not opt.state
    # with schedule=None the same configuration trains as torch's SGD does
    weights, lrs = {}, {}
    for name, make in (
        ("clrfast", lambda ps: CLRSGD(ps, 0.1, momentum=0.9)),
        ("torch", lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, foreach=False)),
    ):
        module = Monitored(make)
        trainer = _lightning_trainer(pl, tmp_path / name, 6)
        trainer.fit(module, _loader(x, y, 8))
        weights[name], lrs[name] = _flat(module.parameters()).clone(), trainer.optimizers[0].param_groups[0]["lr"]
    assert lrs["clrfast"] == lrs["torch"]
    _assert_bits(weights["clrfast"], weights["torch"], "weights trained with ReduceLROnPlateau")
