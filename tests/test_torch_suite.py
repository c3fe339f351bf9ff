"""Checks from torch's own scheduler tests (test/optim/test_lrscheduler.py), run on torch and the drop-ins.

Each test takes the scheduler module as a parameter, so the same assertions hold for
``torch.optim.lr_scheduler`` and ``clrfast.torch``: a check that torch itself fails would be a
mistake in the test, one that only clrfast fails a difference from torch.
"""

from __future__ import annotations

import copy
import gc
import io
import math
import pickle
import types
import warnings
import weakref

import pytest

torch = pytest.importorskip("torch")

import clrfast.torch as ct  # noqa: E402
from torch.optim import lr_scheduler as L  # noqa: E402

MODULES = pytest.mark.parametrize("M", [L, ct], ids=["torch", "clrfast"])
pytestmark = pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")


def two_group_sgd(lr_tensor=True):
    """torch's test optimizer: two groups, the second with a tensor lr."""
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), torch.nn.Conv2d(1, 1, 1))
    second = torch.tensor(0.5) if lr_tensor else 0.5
    return torch.optim.SGD([{"params": net[0].parameters()}, {"params": net[1].parameters(), "lr": second}], lr=0.05)


def same(a, b) -> bool:
    """torch's TestCase.assertEqual for the values a scheduler holds: tensors by value, containers deep."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


@MODULES
def test_cosine_restarts_state_dict_round_trip_compares_every_attribute(M):
    # torch's test_CosineAnnealingWarmRestarts_lr_state_dict / _check_scheduler_state_dict.
    opt = two_group_sgd()
    sched = M.CosineAnnealingWarmRestarts(opt, T_0=10, T_mult=2)
    for _ in range(10):
        opt.step()
        sched.step()
    copy_ = M.CosineAnnealingWarmRestarts(opt, T_0=100)
    copy_.load_state_dict(sched.state_dict())
    for key in sched.__dict__:
        if key != "optimizer":
            assert same(sched.__dict__[key], copy_.__dict__[key]), key
    assert same(sched.get_last_lr(), copy_.get_last_lr())


@MODULES
@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("CyclicLR", dict(base_lr=0.01, max_lr=0.1, step_size_up=4, mode="triangular2")),
        ("OneCycleLR", dict(max_lr=0.1, total_steps=50)),
    ],
)
def test_state_dict_round_trip_compares_every_attribute(M, name, kwargs):
    opt = two_group_sgd(lr_tensor=False)
    sched = getattr(M, name)(opt, **kwargs)
    for _ in range(13):
        opt.step()
        sched.step()
    other = {
        "CyclicLR": dict(base_lr=0.5, max_lr=0.9, step_size_up=40),
        "OneCycleLR": dict(max_lr=1.0, total_steps=500, three_phase=True),
    }[name]
    copy_ = getattr(M, name)(two_group_sgd(lr_tensor=False), **other)
    copy_.load_state_dict(sched.state_dict())
    for key in sched.__dict__:
        if key not in ("optimizer", "_scale_fn_ref"):  # torch's exp_range partial has no value equality
            assert same(sched.__dict__[key], copy_.__dict__[key]), key


@MODULES
@pytest.mark.parametrize(
    "make",
    [
        lambda M, o: M.CyclicLR(o, base_lr=0.01, max_lr=0.1),
        lambda M, o: M.OneCycleLR(o, max_lr=0.01, total_steps=10, anneal_strategy="linear"),
        lambda M, o: M.CosineAnnealingWarmRestarts(o, T_0=20),
    ],
    ids=["CyclicLR", "OneCycleLR", "CosineAnnealingWarmRestarts"],
)
@pytest.mark.parametrize("weights_only", [True, False])
def test_state_dict_survives_torch_save_and_load(M, make, weights_only):
    # torch's test_lr_scheduler_state_dict_load: the state is plain data torch.load accepts.
    opt = two_group_sgd()
    state = make(M, opt).state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=weights_only)
    assert same(loaded, state)
    again = make(M, opt)
    again.load_state_dict(loaded)
    assert same(again.state_dict(), state)


@MODULES
@pytest.mark.parametrize(
    "make",
    [
        lambda M, o: M.CyclicLR(o, base_lr=0.01, max_lr=0.1),
        lambda M, o: M.OneCycleLR(o, max_lr=0.01, total_steps=10),
        lambda M, o: M.CosineAnnealingWarmRestarts(o, T_0=20),
    ],
    ids=["CyclicLR", "OneCycleLR", "CosineAnnealingWarmRestarts"],
)
def test_resume_from_an_optimizer_checkpoint(M, make):
    # torch's test_lr_scheduler_checkpoint: last_epoch=0 on a loaded optimizer gives the same lr.
    model = torch.nn.Linear(3, 3)
    opt = torch.optim.AdamW(model.parameters())
    sched = make(M, opt)
    opt.step()
    sched.step()
    opt2 = torch.optim.AdamW(model.parameters())
    opt2.load_state_dict(opt.state_dict())
    resumed = type(sched)(opt2, **_ctor_kwargs(sched), last_epoch=0)
    assert resumed.get_last_lr()[0] == opt.param_groups[0]["lr"]


def _ctor_kwargs(sched):
    name = type(sched).__name__
    return {
        "CyclicLR": dict(base_lr=0.01, max_lr=0.1),
        "OneCycleLR": dict(max_lr=0.01, total_steps=10),
        "CosineAnnealingWarmRestarts": dict(T_0=20),
    }[name]


@MODULES
def test_cyclic_tensor_arguments_are_copied(M):
    # torch's test_constant_initial_params_cyclelr.
    lr, max_lr = torch.as_tensor(0.1), torch.as_tensor(0.2)
    base_m, max_m = torch.as_tensor(0.8), torch.as_tensor(0.9)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.randn(1))], lr=lr)
    sched = M.CyclicLR(opt, base_lr=lr, max_lr=max_lr, base_momentum=base_m, max_momentum=max_m)
    original = copy.deepcopy(opt.param_groups)
    for i in range(2):
        for t in (lr, max_lr, base_m, max_m):
            t.multiply_(0.5)
        opt.step()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sched.step(i)
        for group, before in zip(opt.param_groups, original):
            assert same(group["initial_lr"], before["initial_lr"])
            assert same(sched.base_lrs, [0.1]) and same(sched.max_lrs, [0.2])
            assert same(group["max_momentum"], 0.9) and same(group["base_momentum"], 0.8)


@MODULES
def test_onecycle_tensor_arguments_are_copied(M):
    # torch's test_constant_initial_params_onecyclelr.
    lr, base_m, max_m = torch.as_tensor(0.1), torch.as_tensor(0.85), torch.as_tensor(0.95)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.randn(1))], lr=lr)
    sched = M.OneCycleLR(opt, max_lr=lr, total_steps=10, base_momentum=base_m, max_momentum=max_m)
    original = copy.deepcopy(opt.param_groups)
    for i in range(2):
        for t in (lr, base_m, max_m):
            t.multiply_(0.5)
        opt.step()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sched.step(i)
        for group, before in zip(opt.param_groups, original):
            for key in ("initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum"):
                assert same(group[key], before[key]), key


@MODULES
def test_cosine_restarts_initial_lr_is_constant_and_not_aliased(M):
    # torch's test_constant_initial_lr.
    lr = torch.as_tensor(0.1)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.randn(1))], lr=lr)
    sched = M.CosineAnnealingWarmRestarts(opt, T_0=20)
    original = copy.deepcopy(opt.param_groups)
    for i in range(2):
        opt.step()
        sched.step(i)
        lr.multiply_(0.1)
        for group, before in zip(opt.param_groups, original):
            assert same(group["initial_lr"], before["initial_lr"])
            assert same(sched.base_lrs, [0.1])
            assert sched.base_lrs[0] is not group["initial_lr"]


@MODULES
def test_cyclic_triangular_values_with_a_tensor_lr_group(M):
    # torch's test_cycle_lr_triangular_mode (with the tensor-lr second group).
    opt = two_group_sgd()
    sched = M.CyclicLR(
        opt,
        base_lr=[1, 2],
        max_lr=[5, 6],
        step_size_up=4,
        cycle_momentum=True,
        base_momentum=[1, 2],
        max_momentum=[5, 6],
    )
    lr0 = [1, 2, 3, 4, 5, 4, 3, 2, 1, 2, 3]
    for t in range(len(lr0)):
        assert opt.param_groups[0]["lr"] == lr0[t]
        assert float(opt.param_groups[1]["lr"]) == lr0[t] + 1
        assert opt.param_groups[0]["momentum"] == 6 - lr0[t]
        opt.step()
        sched.step()


@MODULES
@pytest.mark.parametrize(
    "T_mult, epochs, T_curs, T_is",
    [
        (1, [0, 1, 2, 3, 4, 5, 12, 27, 3, 4, 5, 6, 13], [1, 2, 3, 4, 5, 2, 7, 3, 4, 5, 6, 3], [10] * 12),
        (
            2,
            [0, 1, 2, 3, 4, 5, 25, 32, 33, 34, 80, 81, 3],
            [1, 2, 3, 4, 5, 15, 2, 3, 4, 10, 11, 3],
            [10, 10, 10, 10, 10, 20, 40, 40, 40, 80, 80, 10],
        ),
        (
            3,
            [0, 0.1, 0.2, 0.3, 1.3, 2.3, 17.5, 18.5, 19.5, 29.5, 30.5, 31.5, 50],
            [0.1, 0.2, 0.3, 1.3, 2.3, 7.5, 8.5, 9.5, 19.5, 20.5, 21.5, 10],
            [10, 10, 10, 10, 10, 30, 30, 30, 30, 30, 30, 90],
        ),
    ],
)
def test_cosine_restarts_interleaved_epochs(M, T_mult, epochs, T_curs, T_is):
    # torch's test_CosineAnnealingWarmRestarts_lr3 (targets to 1e-5, as torch's test).
    eta_min = 1e-10
    opt = two_group_sgd()
    sched = M.CosineAnnealingWarmRestarts(opt, T_0=10, T_mult=T_mult, eta_min=eta_min)
    targets = [0.05] + [eta_min + (0.05 - eta_min) * (1 + math.cos(math.pi * c / i)) / 2 for c, i in zip(T_curs, T_is)]
    for epoch, want in zip(epochs, targets):
        sched.step(epoch)
        assert opt.param_groups[0]["lr"] == pytest.approx(want, abs=1e-5)


@MODULES
def test_cosine_restarts_T_cur_reset(M):
    # torch's test_CosineAnnealingWarmRestarts_T_cur_reset: T_cur is plain, writable state.
    sched = M.CosineAnnealingWarmRestarts(two_group_sgd(), T_0=4)
    for epoch in (7, 8, 9):
        sched.T_cur = epoch
        sched.step()
        assert sched.T_cur == (epoch + 1) % sched.T_0


@MODULES
def test_cyclic_state_dict_is_picklable_and_keeps_callable_objects(M):
    # torch's test_cycle_lr_state_dict_picklable and test_cycle_lr_scale_fn_restored_from_state_dict.
    opt = torch.optim.Adam(torch.nn.Linear(2, 2).parameters())
    sched = M.CyclicLR(opt, base_lr=1, max_lr=5, cycle_momentum=False)
    assert isinstance(sched._scale_fn_ref, types.FunctionType)
    state = sched.state_dict()
    assert "_scale_fn_ref" not in state and state["_scale_fn_custom"] is None
    pickle.dumps(state)

    class ScaleFn:
        def __init__(self):
            self.x = 0.5

        def __call__(self, _):
            return self.x

    fn = ScaleFn()
    state = M.CyclicLR(opt, base_lr=1, max_lr=5, cycle_momentum=False, scale_fn=fn).state_dict()
    assert state["_scale_fn_custom"] == fn.__dict__
    pickle.dumps(state)
    restored = M.CyclicLR(opt, base_lr=1, max_lr=5, cycle_momentum=False)
    restored.load_state_dict(
        M.CyclicLR(opt, base_lr=1, max_lr=5, cycle_momentum=False, mode="triangular2").state_dict()
    )
    assert restored.mode == "triangular2" and restored._scale_fn_custom is None


@MODULES
def test_cyclic_is_collected_without_a_cycle(M):
    # torch's test_cycle_lr_removed_after_out_of_scope.
    gc.disable()
    try:
        opt = torch.optim.Adam(torch.nn.Linear(2, 2).parameters())
        ref = weakref.ref(M.CyclicLR(opt, base_lr=1, max_lr=5, cycle_momentum=False))
        assert ref() is None
    finally:
        gc.enable()
