"""CLRSGD under torch.distributed: FSDP2, DDP, ZeroRedundancyOptimizer and distributed checkpoints.

Every comparison is bit for bit (``torch.equal``) against ``torch.optim.SGD`` driven by
``torch.optim.lr_scheduler.CyclicLR`` (``cycle_momentum=True``), or against a twin run.

The multi-rank tests share one launch of 2 gloo ranks on 127.0.0.1 (see ``_dist_helpers``):
it is bounded in time, a failing rank's traceback becomes the assertion message, and the
remaining ranks are killed rather than left waiting in a collective. The checkpoint tests
run in this process; torch.distributed.checkpoint needs no process group for them.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch is built without torch.distributed (gloo)", allow_module_level=True)

import _dist_helpers as helpers  # noqa: E402
import clrfast as clr  # noqa: E402
import torch.distributed.checkpoint as dcp  # noqa: E402
from clrfast.torch import CLRSGD  # noqa: E402
from torch.distributed.checkpoint.state_dict import (  # noqa: E402
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")


def assert_same(xs, ys, what: str) -> None:
    """Bit-identical tensors, pairwise, with a message naming the first that differs."""
    xs, ys = list(xs), list(ys)
    assert len(xs) == len(ys), f"{what}: {len(xs)} tensors vs {len(ys)}"
    for i, (x, y) in enumerate(zip(xs, ys)):
        assert x.shape == y.shape and x.dtype == y.dtype, f"{what}[{i}]: {x.shape} {x.dtype} vs {y.shape} {y.dtype}"
        if not torch.equal(x, y):
            diff = (x.double() - y.double()).abs()
            raise AssertionError(
                f"{what}[{i}] differs: max |diff| {diff.max().item():.3e} at "
                f"{int((diff != 0).sum())} of {x.numel()} elements"
            )


def assert_trained(weights, init, what: str) -> None:
    for i, (w, w0) in enumerate(zip(weights, init)):
        assert not torch.equal(w, w0), f"{what}[{i}] never moved: the comparison would prove nothing"


# =========================================================================== 2 gloo ranks
@pytest.fixture(scope="module")
def dist_run(tmp_path_factory):
    """One bounded launch of every multi-rank scenario; each test checks its own part."""
    return helpers.launch(tmp_path_factory.mktemp("dist"), world=2)


@pytest.mark.parametrize("variant", list(helpers.FSDP2_VARIANTS))
def test_fsdp2_clrsgd_matches_torch_sgd_cycliclr_bit_for_bit(dist_run, variant):
    ranks = [r[variant] for r in helpers.outcome(dist_run, "fsdp2")]
    # The model's shapes give even shards, uneven shards and an empty local shard (rank 1).
    assert [0 in r["local_numel"] for r in ranks] == [False, True], [r["local_numel"] for r in ranks]
    for rank, r in enumerate(ranks):
        where = f"rank {rank}, {variant}"
        assert all(r["dtensor"]), f"{where}: parameters and momentum buffers must stay DTensors"
        assert_same(r["clr"], r["ref"], f"{where}: gathered weights (CLRSGD vs SGD + CyclicLR)")
        assert_same(r["clr_local"], r["ref_local"], f"{where}: local shards")
        assert_same(r["clr_buf"], r["ref_buf"], f"{where}: gathered momentum buffers")
        assert_trained(r["clr"], r["init"], f"{where}: weights")
        for t, (mine, theirs) in enumerate(r["shown"]):
            assert mine == theirs, f"{where}, after {t} steps: (lr, momentum) shown {mine}, torch {theirs}"
        assert r["step"] == helpers.STEPS
    assert_same(ranks[0]["clr"], ranks[1]["clr"], f"{variant}: gathered weights, rank 0 vs rank 1")


def test_fsdp2_flat_mode_is_a_clear_error(dist_run):
    for r in helpers.outcome(dist_run, "fsdp2"):
        assert r["flat_error"] is not None and r["flat_error"].startswith("ValueError"), r["flat_error"]
        assert "DTensor" in r["flat_error"] and "flat=False" in r["flat_error"], r["flat_error"]


def test_fsdp2_get_optimizer_state_dict_on_fresh_clrsgd_changes_nothing(dist_run):
    for rank, r in enumerate(helpers.outcome(dist_run, "fsdp2_dcp_fresh")):
        fresh = r["fresh"]
        # get_optimizer_state_dict before the first step runs DCP's zero-lr initialising step:
        assert_same(fresh["weights"], fresh["before"], f"rank {rank}: weights after DCP's initialising step")
        assert fresh["step"] == 0 and fresh["shown"] == fresh["expected_shown"], fresh
        assert all(fresh["grads"]), f"rank {rank}: DCP's zero gradients must be cleared again"
        a, twin = r["weights"]
        assert_same(a, twin, f"rank {rank}: weights, after the call vs a twin that never made it")
        assert_same(r["bufs"][0], r["bufs"][1], f"rank {rank}: momentum buffers vs the twin")
        assert r["steps"] == [helpers.STEPS, helpers.STEPS]
        assert r["shown"][0] == r["shown"][1]


def test_fsdp2_distributed_checkpoint_resume_is_bit_identical(dist_run):
    for rank, r in enumerate(helpers.outcome(dist_run, "fsdp2_dcp_resume")):
        # The template of the fresh optimizer B holds a momentum buffer for every parameter.
        assert r["template"] == r["names"], (r["template"], r["names"])
        for when in ("loaded", "end"):
            snap = r[when]
            a, b = snap["weights"]
            assert_same(b, a, f"rank {rank}, {when}: weights, resumed B vs A")
            ba, bb = snap["bufs"]
            assert all(x.any() for x in ba)
            assert_same(bb, ba, f"rank {rank}, {when}: momentum buffers, B vs A")
            assert snap["shown"][0] == snap["shown"][1], snap["shown"]
        assert r["loaded"]["steps"] == [r["k"], r["k"]]
        assert r["end"]["steps"] == [r["k"] + r["n"]] * 2


@pytest.mark.parametrize("variant", list(helpers.DDP_VARIANTS))
def test_ddp_clrsgd_matches_torch_sgd_cycliclr_bit_for_bit(dist_run, variant):
    ranks = [r[variant] for r in helpers.outcome(dist_run, "ddp")]
    for rank, r in enumerate(ranks):
        assert_same(r["clr"], r["ref"], f"rank {rank}, {variant}: weights (CLRSGD vs SGD + CyclicLR)")
        assert_same(r["clr_buf"], r["ref_buf"], f"rank {rank}, {variant}: momentum buffers")
        assert_trained(r["clr"], r["init"], f"rank {rank}, {variant}: weights")
        for t, (mine, theirs) in enumerate(r["shown"]):
            assert mine == theirs, f"rank {rank}, {variant}, after {t} steps: shown {mine}, torch {theirs}"
        assert r["step"] == helpers.STEPS
    assert_same(ranks[0]["clr"], ranks[1]["clr"], f"{variant}: weights, rank 0 vs rank 1")


@pytest.mark.parametrize("variant", list(helpers.ZERO_VARIANTS))
def test_zero_redundancy_optimizer_with_clrsgd_matches_ddp_torch_sgd(dist_run, variant):
    ranks = [r[variant] for r in helpers.outcome(dist_run, "zero")]
    total = sum(p.numel() for p in ranks[0]["init"])
    numels = [r["local_numel"] for r in ranks]
    assert sum(numels) == total and 0 not in numels, f"ZeRO partitions {total} elements as {numels}"
    for rank, r in enumerate(ranks):
        assert_same(r["clr"], r["ref"], f"rank {rank}, {variant}: weights (ZeRO + CLRSGD vs DDP + SGD + CyclicLR)")
        assert_trained(r["clr"], r["init"], f"rank {rank}, {variant}: weights")
        # The wrapper's param_groups show torch's convention: after k steps, the values of step k.
        for t, (mine, theirs) in enumerate(r["shown"]):
            assert mine == theirs, f"rank {rank}, {variant}, after {t} steps: wrapper shows {mine}, torch {theirs}"
        assert r["local_shown"] == [mine for mine, _ in r["shown"]]
        assert r["steps"] == (helpers.STEPS, helpers.STEPS)
    assert_same(ranks[0]["clr"], ranks[1]["clr"], f"{variant}: weights, rank 0 vs rank 1")


def test_zero_redundancy_optimizer_resume_is_bit_identical(dist_run):
    for rank, r in enumerate(helpers.outcome(dist_run, "zero_resume")):
        ba, bb = r["loaded"]["bufs"]
        assert ba and any(b.any() for b in ba)
        assert_same(bb, ba, f"rank {rank}: local momentum buffers after load_state_dict")
        assert r["loaded"]["shown"][0] == r["loaded"]["shown"][1]
        assert_same(r["b"], r["a"], f"rank {rank}: resumed weights")
        assert_same(r["bufs"][1], r["bufs"][0], f"rank {rank}: momentum buffers")
        for t, (a, b) in enumerate(r["shown"]):
            assert a == b, f"rank {rank}, step {t}: A shows {a}, resumed B {b}"
        assert r["steps"] == [(16, 16), (16, 16)]


def test_zero_redundancy_optimizer_checkpoint_loads_with_torch_load_defaults(dist_run):
    # ZeRO's consolidated state dict is built from its own param_groups, which mirror the
    # local CLRSGD's groups; torch.load's default (weights_only=True) must be able to read it.
    for rank, r in enumerate(helpers.outcome(dist_run, "zero_resume")):
        assert r["weights_only_error"] is None, f"rank {rank}: {r['weights_only_error']}"


# =========================================================================== checkpoints, one process
CYCLE = dict(base_lr=0.01, max_lr=0.1, step_size_up=4, step_size_down=3, base_momentum=0.8, max_momentum=0.9)
HYPER = dict(weight_decay=1e-2, dampening=0.25)
MODES = pytest.mark.parametrize("flat", [False, True], ids=["list", "flat"])


_net = helpers.small_net


def _clrsgd(model, flat: bool) -> CLRSGD:
    return CLRSGD(model.parameters(), clr.Cyclic(**CYCLE), flat=flat, **HYPER)


_step = helpers.train_step


_weights = helpers.weights


def _bufs(model, opt) -> list:
    return [opt.state[p]["momentum_buffer"].clone() for p in model.parameters()]


def _shown(opt) -> tuple:
    g = opt.param_groups[0]
    return (g["lr"], g["momentum"], g["step"])


def _names(model) -> list:
    return sorted(name for name, _ in model.named_parameters())


def _buffers_in(osd) -> list:
    """The parameter names an optimizer state dict holds a momentum buffer for (nested or flattened layout)."""
    if "state" in osd:
        return sorted(name for name, v in osd["state"].items() if "momentum_buffer" in v)
    suffix = ".momentum_buffer"
    return sorted(k[len("state.") : -len(suffix)] for k in osd if k.startswith("state.") and k.endswith(suffix))


@MODES
def test_dcp_get_optimizer_state_dict_on_fresh_clrsgd_changes_nothing(flat):
    a, twin, ref_model = _net(0), _net(0), _net(0)
    opt, opt_twin = _clrsgd(a, flat), _clrsgd(twin, flat)
    ref = torch.optim.SGD(ref_model.parameters(), lr=0.01, momentum=0.9, **HYPER)
    sched = torch.optim.lr_scheduler.CyclicLR(ref, cycle_momentum=True, **CYCLE)
    before, shown = _weights(a), _shown(opt)

    osd = get_optimizer_state_dict(a, opt)  # runs torch's zero-lr initialising step on a stateless optimizer

    assert_same(_weights(a), before, "weights after get_optimizer_state_dict")
    assert _shown(opt) == shown == (0.01, 0.9, 0)
    assert all(p.grad is None for p in a.parameters())
    assert _buffers_in(osd) == _names(a)
    assert osd["param_groups"][0]["step"] == 0
    for t in range(12):
        _step(a, opt, t)
        _step(twin, opt_twin, t)
        _step(ref_model, ref, t)
        sched.step()
        assert _shown(opt) == _shown(opt_twin), t
        assert _shown(opt)[:2] == (ref.param_groups[0]["lr"], ref.param_groups[0]["momentum"]), t
    assert_same(_weights(a), _weights(twin), "weights vs the twin that never called it")
    assert_same(_bufs(a, opt), _bufs(twin, opt_twin), "momentum buffers vs the twin")
    assert_same(_weights(a), _weights(ref_model), "weights vs SGD + CyclicLR")
    assert_same(_bufs(a, opt), _bufs(ref_model, ref), "momentum buffers vs SGD + CyclicLR")


def _dcp_resume(tmp_path, flat: bool, k: int, n: int = 8, options=None) -> None:
    """A trains k steps and is saved with dcp.save; a fresh B (other weights) loads it and goes on.

    B must then follow A's trajectory, which is (test above) the one of a twin that never met
    DCP. B is compared with that twin; A goes on too when it has stepped (k > 0).
    """
    a, twin = _net(0), _net(0)
    opt_a, opt_twin = _clrsgd(a, flat), _clrsgd(twin, flat)
    for t in range(k):
        _step(a, opt_a, t)
        _step(twin, opt_twin, t)
    ckpt = tmp_path / "ckpt"
    saved = {"model": get_model_state_dict(a), "optim": get_optimizer_state_dict(a, opt_a, options=options)}
    dcp.save(saved, checkpoint_id=ckpt)

    b = _net(1)
    opt_b = _clrsgd(b, flat)
    state = {"model": get_model_state_dict(b), "optim": get_optimizer_state_dict(b, opt_b, options=options)}
    # dcp.load fills only what the template holds: it must hold every momentum buffer.
    assert _buffers_in(state["optim"]) == _names(b)
    dcp.load(state, checkpoint_id=ckpt)
    set_model_state_dict(b, state["model"])
    set_optimizer_state_dict(b, opt_b, state["optim"], options=options)

    assert_same(_weights(b), _weights(a), "weights after loading")
    assert_same(_bufs(b, opt_b), _bufs(a, opt_a), "momentum buffers after loading")
    if k:
        assert all(buf.any() for buf in _bufs(b, opt_b)), "the buffers must be A's, not the template's zeros"
    assert _shown(opt_b) == _shown(opt_a) == _shown(opt_twin)
    assert opt_b.param_groups[0]["step"] == k
    going_on = [(b, opt_b), (twin, opt_twin)] + ([(a, opt_a)] if k else [])
    for t in range(k, k + n):
        for model, opt in going_on:
            _step(model, opt, t)
        assert _shown(opt_b) == _shown(opt_twin), t
    for model, opt in going_on[1:]:
        assert_same(_weights(b), _weights(model), "weights after resuming")
        assert_same(_bufs(b, opt_b), _bufs(model, opt), "momentum buffers after resuming")
        assert opt_b.param_groups[0]["step"] == opt.param_groups[0]["step"] == k + n


@MODES
@pytest.mark.parametrize("flatten", [False, True], ids=["nested", "flattened"])
def test_dcp_save_load_resume_is_bit_identical(tmp_path, flat, flatten):
    # flattened: StateDictOptions(flatten_optimizer_state_dict=True), one key per parameter and hyperparameter
    _dcp_resume(tmp_path, flat, k=6, options=StateDictOptions(flatten_optimizer_state_dict=flatten))


@MODES
def test_dcp_resume_from_checkpoint_taken_before_the_first_step(tmp_path, flat):
    # A checkpoint of a never-stepped optimizer (saved before training starts): its momentum
    # buffers come from DCP's initialising step and hold no history, so B's first update must
    # start them from the gradient (buf = grad), as A's and torch's first update do; with
    # dampening != 0 a zero buffer taken for history gives another number.
    _dcp_resume(tmp_path, flat, k=0)


@MODES
def test_torch_save_load_resume_is_bit_identical(tmp_path, flat):
    k, n = 6, 8
    a = _net(0)
    opt_a = _clrsgd(a, flat)
    for t in range(k):
        _step(a, opt_a, t)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": a.state_dict(), "optim": opt_a.state_dict()}, path)
    ckpt = torch.load(path)  # torch's default: weights_only=True

    b = _net(1)
    opt_b = _clrsgd(b, flat)
    b.load_state_dict(ckpt["model"])
    opt_b.load_state_dict(ckpt["optim"])
    assert_same(_weights(b), _weights(a), "weights after loading")
    assert_same(_bufs(b, opt_b), _bufs(a, opt_a), "momentum buffers after loading")
    assert _shown(opt_b) == _shown(opt_a)
    for t in range(k, k + n):
        _step(a, opt_a, t)
        _step(b, opt_b, t)
        assert _shown(opt_b) == _shown(opt_a), t
    assert_same(_weights(b), _weights(a), "weights after resuming")
    assert_same(_bufs(b, opt_b), _bufs(a, opt_a), "momentum buffers after resuming")
    assert opt_b.param_groups[0]["step"] == k + n
