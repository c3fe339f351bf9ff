"""Every fused optimizer under torch.distributed: FSDP2, DDP, ZeroRedundancyOptimizer and distributed checkpoints.

Every comparison is bit for bit (``torch.equal``) against the rule's reference (``optim_registry``:
torch's for-loop optimizer or ``lion_pytorch.Lion``) driven by ``torch.optim.lr_scheduler.CyclicLR``
with ``cycle_momentum=True`` (which cycles ``momentum``, or ``betas[0]``), or against a twin run:
weights, local shards, every state tensor (per-parameter ``step`` counters included) and the
lr and momentum the groups show after every step.

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
from optim_registry import RULES, params  # noqa: E402
from torch.distributed.checkpoint.state_dict import (  # noqa: E402
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

# dcp.save/dcp.load without a process group warn that they assume a single process, which is
# the case the checkpoint tests set up on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")
STEPS = helpers.STEPS


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


def assert_same_state(mine: dict, theirs: dict, what: str) -> None:
    assert sorted(mine) == sorted(theirs), f"{what}: state keys {sorted(mine)} vs {sorted(theirs)}"
    for k in mine:
        assert_same(mine[k], theirs[k], f"{what}: {k}")


def assert_trained(weights, init, what: str) -> None:
    for i, (w, w0) in enumerate(zip(weights, init)):
        assert not torch.equal(w, w0), f"{what}[{i}] never moved: the comparison would prove nothing"


def assert_shown(shown, what: str) -> None:
    for t, (mine, theirs) in enumerate(shown):
        assert mine == theirs, f"{what}, after {t} steps: (lr, momentum) shown {mine}, reference {theirs}"
    momenta = {m for (_, m), _ in shown}
    assert len(momenta) > 2, f"{what}: the momentum never cycled ({momenta})"


def full_state_keys(rule) -> list:
    """The state keys of a parameter after an update with the rule's first option set."""
    return sorted(rule.state_keys + (("step",) if rule.step_state else ()))


def rule_of(variant: str):
    return RULES[variant.split("-")[0]]


def variants(table) -> list:
    return [pytest.param(name, id=name, marks=rule_of(name).marks) for name in table]


# =========================================================================== 2 gloo ranks
@pytest.fixture(scope="module")
def dist_run(tmp_path_factory):
    """One bounded launch of every multi-rank scenario; each test checks its own part."""
    return helpers.launch(tmp_path_factory.mktemp("dist"), world=2)


@pytest.mark.parametrize("variant", variants(helpers.FSDP2_VARIANTS))
def test_fsdp2_matches_the_reference_bit_for_bit(dist_run, variant):
    ranks = [r[variant] for r in helpers.outcome(dist_run, "fsdp2")]
    # The model's shapes give even shards, uneven shards and an empty local shard (rank 1).
    assert [0 in r["local_numel"] for r in ranks] == [False, True], [r["local_numel"] for r in ranks]
    for rank, r in enumerate(ranks):
        where = f"rank {rank}, {variant}"
        mine, theirs = r["types"]
        assert mine == theirs, f"{where}: parameter and state types {mine} vs the reference's {theirs}"
        assert all(t[0] for t in mine), f"{where}: parameters must stay DTensors"
        assert_same(r["clr"], r["ref"], f"{where}: gathered weights (clrfast vs reference + CyclicLR)")
        assert_same(r["clr_local"], r["ref_local"], f"{where}: local shards")
        assert_same_state(r["clr_state"], r["ref_state"], f"{where}: gathered state")
        assert_same_state(r["clr_state_local"], r["ref_state_local"], f"{where}: local state shards")
        assert all(float(s) == STEPS for s in r["clr_state"].get("step", [])), r["clr_state"].get("step")
        assert_trained(r["clr"], r["init"], f"{where}: weights")
        assert_shown(r["shown"], where)
        assert r["step"] == STEPS
    assert_same(ranks[0]["clr"], ranks[1]["clr"], f"{variant}: gathered weights, rank 0 vs rank 1")


def test_fsdp2_flat_mode_is_a_clear_error(dist_run):
    for r in helpers.outcome(dist_run, "fsdp2"):
        for rule in RULES:
            error = r[f"flat_error/{rule}"]
            assert error is not None and error.startswith("ValueError"), (rule, error)
            assert "DTensor" in error and "flat=False" in error, (rule, error)


@pytest.mark.parametrize("rule", params())
def test_fsdp2_distributed_checkpoint_fresh_and_resume_are_bit_identical(dist_run, rule):
    for rank, r in enumerate(helpers.outcome(dist_run, "fsdp2_dcp")):
        r = r[rule.name]
        fresh = r["fresh"]
        # get_optimizer_state_dict before the first step runs DCP's zero-lr initialising step:
        assert_same(fresh["weights"], fresh["before"], f"rank {rank}: weights after DCP's initialising step")
        assert fresh["group_step"] == 0 and fresh["shown"] == fresh["expected"], fresh
        assert fresh["steps"] == [0.0] * len(fresh["steps"]), f"rank {rank}: per-parameter steps {fresh['steps']}"
        assert all(fresh["grads"]), f"rank {rank}: DCP's zero gradients must be cleared again"
        # B's template holds every state entry of every parameter: dcp.load fills only what it holds.
        assert r["template"] == {name: full_state_keys(rule) for name in r["names"]}, r["template"]
        for when in ("loaded", "end"):
            snap = r[when]
            a, b, twin = snap["weights"]
            assert_same(b, a, f"rank {rank}, {when}: weights, resumed B vs A")
            assert_same(a, twin, f"rank {rank}, {when}: weights, A vs the twin that never met DCP")
            sa, sb, st = snap["state"]
            assert_same_state(sb, sa, f"rank {rank}, {when}: state, B vs A")
            assert_same_state(sa, st, f"rank {rank}, {when}: state, A vs twin")
            assert all(x.any() for x in sa[rule.state_keys[0]]), "the state must be A's, not the template's zeros"
            assert len(set(snap["shown"])) == 1, snap["shown"]
        assert r["loaded"]["steps"] == [r["k"]] * 3
        assert r["end"]["steps"] == [r["k"] + r["n"]] * 3
        assert all(float(s) == r["k"] + r["n"] for s in r["end"]["state"][1].get("step", []))


@pytest.mark.parametrize("variant", variants(helpers.DDP_VARIANTS))
def test_ddp_matches_the_reference_bit_for_bit(dist_run, variant):
    ranks = [r[variant] for r in helpers.outcome(dist_run, "ddp")]
    for rank, r in enumerate(ranks):
        where = f"rank {rank}, {variant}"
        assert_same(r["clr"], r["ref"], f"{where}: weights (clrfast vs reference + CyclicLR)")
        assert_same_state(r["clr_state"], r["ref_state"], f"{where}: state")
        assert_trained(r["clr"], r["init"], f"{where}: weights")
        assert_shown(r["shown"], where)
        assert r["step"] == STEPS
    assert_same(ranks[0]["clr"], ranks[1]["clr"], f"{variant}: weights, rank 0 vs rank 1")


@pytest.mark.parametrize("variant", variants(helpers.ZERO_VARIANTS))
def test_zero_redundancy_optimizer_matches_ddp_and_the_reference(dist_run, variant):
    ranks = [r[variant] for r in helpers.outcome(dist_run, "zero")]
    total = sum(p.numel() for p in ranks[0]["init"])
    numels = [r["local_numel"] for r in ranks]
    assert sum(numels) == total and 0 not in numels, f"ZeRO partitions {total} elements as {numels}"
    for rank, r in enumerate(ranks):
        where = f"rank {rank}, {variant}"
        assert_same(r["clr"], r["ref"], f"{where}: weights (ZeRO + clrfast vs DDP + reference + CyclicLR)")
        assert_trained(r["clr"], r["init"], f"{where}: weights")
        assert r["local"], f"{where}: the local optimizer holds no state"
        for i, st in r["local"].items():
            assert sorted(st) == sorted(r["ref_state"][i]), (i, sorted(st), sorted(r["ref_state"][i]))
            for k in st:
                assert_same([st[k]], [r["ref_state"][i][k]], f"{where}: parameter {i} state[{k!r}]")
        # The wrapper's param_groups show torch's convention: after k steps, the values of step k.
        assert_shown(r["shown"], where)
        assert r["local_shown"] == [mine for mine, _ in r["shown"]]
        assert r["steps"] == (STEPS, STEPS)
    assert sorted([*ranks[0]["local"], *ranks[1]["local"]]) == list(range(len(ranks[0]["init"])))
    assert_same(ranks[0]["clr"], ranks[1]["clr"], f"{variant}: weights, rank 0 vs rank 1")


@pytest.mark.parametrize("rule", params())
def test_zero_redundancy_optimizer_resume_is_bit_identical(dist_run, rule):
    for rank, r in enumerate(helpers.outcome(dist_run, "zero_resume")):
        r = r[rule.name]
        # ZeRO's consolidated state dict is built from its own param_groups, which mirror the local
        # optimizer's groups (schedules included); torch.load's default (weights_only=True) must read it.
        assert r["weights_only_error"] is None, f"rank {rank}: {r['weights_only_error']}"
        for when in ("loaded", "end"):
            snap = r[when]
            a, b = snap["weights"]
            assert_same(b, a, f"rank {rank}, {when}: weights, resumed B vs A")
            la, lb = snap["local"]
            assert la and sorted(la) == sorted(lb), (sorted(la), sorted(lb))
            for i in la:
                assert sorted(la[i]) == sorted(lb[i]) == full_state_keys(rule), (la[i].keys(), lb[i].keys())
                for k in la[i]:
                    assert_same([lb[i][k]], [la[i][k]], f"rank {rank}, {when}: parameter {i} state[{k!r}]")
            assert snap["shown"][0] == snap["shown"][1], snap["shown"]
        for t, (a, b) in enumerate(r["shown"]):
            assert a == b, f"rank {rank}, step {t}: A shows {a}, resumed B {b}"
        assert r["loaded"]["steps"] == [(r["k"], r["k"])] * 2
        assert r["end"]["steps"] == [(r["k"] + r["n"], r["k"] + r["n"])] * 2


# =========================================================================== checkpoints, one process
CYCLE = dict(base_lr=0.01, max_lr=0.1, step_size_up=4, step_size_down=3, base_momentum=0.8, max_momentum=0.9)
OPTIONS = helpers.CHECKPOINT_OPTIONS
MODES = pytest.mark.parametrize("flat", [False, True], ids=["list", "flat"])
EVERY_RULE = pytest.mark.parametrize("rule", params())

_net = helpers.small_net
_step = helpers.train_step
_weights = helpers.weights


def _opt(rule, model, flat: bool):
    return rule.make(model.parameters(), clr.Cyclic(**CYCLE), flat=flat, base=OPTIONS.get(rule.name))


def _state(model, opt) -> dict:
    return helpers._state(opt, list(model.parameters()))


def _clock(rule, opt) -> tuple:
    return (*rule.shown(opt.param_groups[0]), opt.param_groups[0]["step"])


def _names(model) -> list:
    return sorted(name for name, _ in model.named_parameters())


def _entries(osd) -> dict:
    """Per parameter name, the state keys an optimizer state dict holds (nested or flattened layout)."""
    if "state" in osd:
        return {name: sorted(v) for name, v in osd["state"].items()}
    out: dict = {}
    for key in osd:
        if key.startswith("state."):
            name, k = key[len("state.") :].rsplit(".", 1)
            out.setdefault(name, []).append(k)
    return {name: sorted(ks) for name, ks in out.items()}


@MODES
@EVERY_RULE
def test_dcp_get_optimizer_state_dict_on_a_fresh_optimizer_changes_nothing(rule, flat):
    a, twin, ref_model = _net(0), _net(0), _net(0)
    opt, opt_twin = _opt(rule, a, flat), _opt(rule, twin, flat)
    ref = rule.make_reference(ref_model.parameters(), CYCLE["base_lr"], base=OPTIONS.get(rule.name))
    sched = torch.optim.lr_scheduler.CyclicLR(ref, cycle_momentum=True, **CYCLE)
    before, shown = _weights(a), _clock(rule, opt)

    osd = get_optimizer_state_dict(a, opt)  # runs torch's zero-lr initialising step on a stateless optimizer

    assert_same(_weights(a), before, "weights after get_optimizer_state_dict")
    assert _clock(rule, opt) == shown == (CYCLE["base_lr"], CYCLE["max_momentum"], 0)
    assert all(p.grad is None for p in a.parameters())
    assert _entries(osd) == {name: full_state_keys(rule) for name in _names(a)}
    if rule.step_state:
        assert [float(v["step"]) for v in osd["state"].values()] == [0.0] * len(_names(a))
    assert osd["param_groups"][0]["step"] == 0
    for t in range(12):
        _step(a, opt, t)
        _step(twin, opt_twin, t)
        _step(ref_model, ref, t)
        sched.step()
        assert _clock(rule, opt) == _clock(rule, opt_twin), t
        assert _clock(rule, opt)[:2] == rule.shown(ref.param_groups[0]), t
    assert_same(_weights(a), _weights(twin), "weights vs the twin that never called it")
    assert_same_state(_state(a, opt), _state(twin, opt_twin), "state vs the twin")
    assert_same(_weights(a), _weights(ref_model), "weights vs the reference + CyclicLR")
    assert_same_state(_state(a, opt), _state(ref_model, ref), "state vs the reference + CyclicLR")


def _dcp_resume(rule, tmp_path, flat: bool, k: int, n: int = 8, options=None) -> None:
    """A trains k steps and is saved with dcp.save; a fresh B (other weights) loads it and goes on.

    B must then follow the trajectory of a twin that never met DCP (which, by the test above,
    is the reference's), and A's when A stepped (k > 0).
    """
    a, twin = _net(0), _net(0)
    opt_a, opt_twin = _opt(rule, a, flat), _opt(rule, twin, flat)
    for t in range(k):
        _step(a, opt_a, t)
        _step(twin, opt_twin, t)
    ckpt = tmp_path / "ckpt"
    saved = {"model": get_model_state_dict(a), "optim": get_optimizer_state_dict(a, opt_a, options=options)}
    dcp.save(saved, checkpoint_id=ckpt)

    b = _net(1)
    opt_b = _opt(rule, b, flat)
    state = {"model": get_model_state_dict(b), "optim": get_optimizer_state_dict(b, opt_b, options=options)}
    # dcp.load fills only what the template holds: it must hold every state entry of every parameter.
    assert _entries(state["optim"]) == {name: full_state_keys(rule) for name in _names(b)}
    dcp.load(state, checkpoint_id=ckpt)
    set_model_state_dict(b, state["model"])
    set_optimizer_state_dict(b, opt_b, state["optim"], options=options)

    assert_same(_weights(b), _weights(a), "weights after loading")
    assert_same_state(_state(b, opt_b), _state(a, opt_a), "state after loading")
    assert _clock(rule, opt_b) == _clock(rule, opt_a) == _clock(rule, opt_twin)
    assert opt_b.param_groups[0]["step"] == k
    assert all(float(s) == k for s in _state(b, opt_b).get("step", []))
    if k:
        first = rule.state_keys[0]
        assert all(m.any() for m in _state(b, opt_b)[first]), "the state must be A's, not the template's zeros"
    going_on = [(b, opt_b), (twin, opt_twin)] + ([(a, opt_a)] if k else [])
    for t in range(k, k + n):
        for model, opt in going_on:
            _step(model, opt, t)
        assert _clock(rule, opt_b) == _clock(rule, opt_twin), t
    for model, opt in going_on[1:]:
        assert_same(_weights(b), _weights(model), "weights after resuming")
        assert_same_state(_state(b, opt_b), _state(model, opt), "state after resuming")
        assert _clock(rule, opt_b) == _clock(rule, opt)
    assert opt_b.param_groups[0]["step"] == k + n
    assert all(float(s) == k + n for s in _state(b, opt_b).get("step", []))


@MODES
@pytest.mark.parametrize("flatten", [False, True], ids=["nested", "flattened"])
@EVERY_RULE
def test_dcp_save_load_resume_is_bit_identical(rule, tmp_path, flat, flatten):
    # flattened: StateDictOptions(flatten_optimizer_state_dict=True), one key per parameter and state entry
    _dcp_resume(rule, tmp_path, flat, k=6, options=StateDictOptions(flatten_optimizer_state_dict=flatten))


@MODES
@EVERY_RULE
def test_dcp_resume_from_checkpoint_taken_before_the_first_step(rule, tmp_path, flat):
    # A checkpoint of a never-stepped optimizer (saved before training starts): its state comes
    # from DCP's initialising step and holds no history, so B's first update must be the
    # reference's first update (SGD's buffer starts from the gradient, Adam's bias correction
    # uses step 1), as A's is.
    _dcp_resume(rule, tmp_path, flat, k=0)


@MODES
@EVERY_RULE
def test_torch_save_load_resume_is_bit_identical(rule, tmp_path, flat):
    k, n = 6, 8
    a = _net(0)
    opt_a = _opt(rule, a, flat)
    for t in range(k):
        _step(a, opt_a, t)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": a.state_dict(), "optim": opt_a.state_dict()}, path)
    ckpt = torch.load(path)  # torch's default: weights_only=True

    b = _net(1)
    opt_b = _opt(rule, b, flat)
    b.load_state_dict(ckpt["model"])
    opt_b.load_state_dict(ckpt["optim"])
    assert_same(_weights(b), _weights(a), "weights after loading")
    assert_same_state(_state(b, opt_b), _state(a, opt_a), "state after loading")
    assert _clock(rule, opt_b) == _clock(rule, opt_a)
    for t in range(k, k + n):
        _step(a, opt_a, t)
        _step(b, opt_b, t)
        assert _clock(rule, opt_b) == _clock(rule, opt_a), t
    assert_same(_weights(b), _weights(a), "weights after resuming")
    assert_same_state(_state(b, opt_b), _state(a, opt_a), "state after resuming")
    assert opt_b.param_groups[0]["step"] == k + n


# =========================================================================== schedule-free rules
# Outside the registry (no scheduled momentum, a train()/eval() protocol): the oracle is the
# schedulefree package's for-loop path on a copy of the same model.
SF_OPTIONS = {
    "adamw": dict(lr=1e-2, weight_decay=0.1, warmup_steps=3, r=1.0),
    "sgd": dict(lr=0.2, momentum=0.6, warmup_steps=3, weight_lr_power=1),
}
SF_RULES = pytest.mark.parametrize("sf", list(SF_OPTIONS))


@pytest.mark.parametrize("variant", list(helpers.SCHEDULEFREE_VARIANTS))
def test_schedulefree_under_ddp_and_fsdp2_matches_the_package(dist_run, variant):
    ranks = [r[variant] for r in helpers.outcome(dist_run, "schedulefree")]
    for rank, r in enumerate(ranks):
        where = f"rank {rank}, {variant}"
        mine, theirs = r["types"]
        assert mine == theirs, f"{where}: parameter and state types {mine} vs the package's {theirs}"
        for when, (clr_w, ref_w, clr_s, ref_s) in r["snaps"].items():
            assert_same(clr_w, ref_w, f"{where}, {when}: weights (clrfast vs schedulefree)")
            assert_same_state(clr_s, ref_s, f"{where}, {when}: state")
        assert_trained(r["snaps"]["again"][0], r["init"], f"{where}: weights")
        assert r["groups"][0] == r["groups"][1], f"{where}: k, weight_sum, lr_max, lr"
    assert_same(ranks[0]["snaps"]["eval"][0], ranks[1]["snaps"]["eval"][0], f"{variant}: x, rank 0 vs rank 1")


def _sf_pair(sf: str, seed: int, flat: bool):
    ref_cls, cls = helpers.schedulefree_pair(sf)
    model = _net(seed)
    return model, cls(model.parameters(), flat=flat, **SF_OPTIONS[sf]), ref_cls


@MODES
@SF_RULES
def test_schedulefree_dcp_initialising_step_changes_nothing(sf, flat):
    a, opt, ref_cls = _sf_pair(sf, 0, flat)
    ref_model = _net(0)
    ref = ref_cls(ref_model.parameters(), foreach=False, **SF_OPTIONS[sf])
    ref.train()
    before = _weights(a)
    osd = get_optimizer_state_dict(a, opt)  # torch's zero-lr initialising step on a stateless optimizer
    assert_same(_weights(a), before, "weights after get_optimizer_state_dict")
    assert all(p.grad is None for p in a.parameters())
    assert osd["param_groups"][0]["k"] == 0 and osd["param_groups"][0]["weight_sum"] == 0.0, osd["param_groups"]
    for t in range(8):
        _step(a, opt, t)
        _step(ref_model, ref, t)
    opt.eval()
    ref.eval()
    assert_same(_weights(a), _weights(ref_model), "x vs the package")
    assert_same_state(_state(a, opt), _state(ref_model, ref), "state vs the package")


@MODES
@SF_RULES
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_schedulefree_dcp_save_load_resume_in_either_mode(sf, mode, tmp_path, flat):
    k, n = 5, 6
    a, opt_a, _ = _sf_pair(sf, 0, flat)
    for t in range(k):
        _step(a, opt_a, t)
    if mode == "eval":
        opt_a.eval()
    dcp.save({"model": get_model_state_dict(a), "optim": get_optimizer_state_dict(a, opt_a)}, checkpoint_id=tmp_path)

    b, opt_b, _ = _sf_pair(sf, 1, not flat)
    state = {"model": get_model_state_dict(b), "optim": get_optimizer_state_dict(b, opt_b)}
    dcp.load(state, checkpoint_id=tmp_path)
    set_model_state_dict(b, state["model"])
    set_optimizer_state_dict(b, opt_b, state["optim"])
    assert_same(_weights(b), _weights(a), "weights after loading")
    assert_same_state(_state(b, opt_b), _state(a, opt_a), "state after loading")
    assert opt_b.param_groups[0]["train_mode"] is (mode == "train")
    for t in range(k, k + n):  # a step in eval mode switches back to train mode first, on both
        _step(a, opt_a, t)
        _step(b, opt_b, t)
    for opt in (opt_a, opt_b):
        opt.eval()
    assert_same(_weights(b), _weights(a), "x after resuming")
    assert_same_state(_state(b, opt_b), _state(a, opt_a), "state after resuming")
    keys = ("k", "weight_sum", "lr_max", "lr", "train_mode")
    assert [opt_b.param_groups[0][x] for x in keys] == [opt_a.param_groups[0][x] for x in keys]
