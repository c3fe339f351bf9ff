"""CLRAdamW / CLRAdam under torch.distributed: FSDP2, DDP, ZeroRedundancyOptimizer and distributed checkpoints.

Every comparison is bit for bit (``torch.equal``) against ``torch.optim.AdamW`` / ``Adam``
(``foreach=False``) driven by ``torch.optim.lr_scheduler.CyclicLR`` with ``cycle_momentum=True``
(which cycles ``betas[0]``), or against a twin run: weights, local shards, ``exp_avg``,
``exp_avg_sq``, ``max_exp_avg_sq``, the per-parameter ``step`` tensors and the ``lr`` and
``betas`` the groups show after every step.

The multi-rank tests share one launch of 2 gloo ranks on 127.0.0.1, made with
``_dist_helpers.launch`` (bounded in time, a failing rank's traceback becomes the assertion
message, the other ranks are killed rather than left waiting in a collective). The ranks run
this file as a script, with this file's scenarios in place of the helpers' own. The
single-process checkpoint tests need no process group.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch is built without torch.distributed (gloo)", allow_module_level=True)

import _dist_helpers as helpers  # noqa: E402
import clrfast as clr  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.distributed.checkpoint as dcp  # noqa: E402
from clrfast.torch import CLRAdam, CLRAdamW  # noqa: E402
from clrfast.torch._sqrt import torch_sqrt_routines  # noqa: E402
from torch.distributed.checkpoint.state_dict import (  # noqa: E402
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

# Parity with torch needs torch's own vector sqrt (MKL builds); elsewhere the kernel's IEEE sqrt
# is a last-ulp away, which these tests would report as a difference.
pytestmark = pytest.mark.skipif(
    torch_sqrt_routines()[0] == 0, reason="torch without MKL: its sqrt is not reproduced exactly"
)

STEPS = helpers.STEPS
# One cycle for both sides: clr.Cyclic(**CYCLE) and CyclicLR(opt, **CYCLE, cycle_momentum=True), beta1 0.95 -> 0.8.
CYCLE = dict(base_lr=1e-3, max_lr=1e-2, step_size_up=5, step_size_down=3, base_momentum=0.8, max_momentum=0.95)
PAIRS = {"adamw": (CLRAdamW, torch.optim.AdamW), "adam": (CLRAdam, torch.optim.Adam)}
MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


# --------------------------------------------------------------------------- shared pieces
def _clr_opt(rule: str, params, **kw):
    return PAIRS[rule][0](params, clr.Cyclic(**CYCLE), **kw)


def _torch_opt(rule: str, params, **kw):
    opt = PAIRS[rule][1](params, lr=CYCLE["base_lr"], foreach=False, **kw)
    return opt, torch.optim.lr_scheduler.CyclicLR(opt, cycle_momentum=True, **CYCLE)


def _shown(opt) -> tuple:
    """The lr and betas a group shows: the values of its next update."""
    g = opt.param_groups[0]
    return (float(g["lr"]), tuple(float(b) for b in g["betas"]))


def _moments(opt, params, gather=None) -> dict:
    """Per state key, the tensors of ``params`` (gathered DTensors when ``gather``); per-parameter step too."""
    out = {}
    for k in MOMENTS:
        ts = [opt.state[p][k] for p in params if k in opt.state[p]]
        if ts:
            out[k] = gather(ts) if gather else helpers._clone(ts)
    out["step"] = helpers._clone(opt.state[p]["step"] for p in params)
    return out


# --------------------------------------------------------------------------- scenarios (ranks)
FSDP2_VARIANTS = {
    # name: (rule, zero_grad(set_to_none=...), optimizer keywords)
    "adamw": ("adamw", True, dict()),
    "adamw-amsgrad-kept-grads": ("adamw", False, dict(amsgrad=True, weight_decay=0.05)),
    "adamw-maximize-eps-beta2": ("adamw", True, dict(maximize=True, eps=1e-6, betas=(0.9, 0.99))),
    "adam-l2-amsgrad": ("adam", True, dict(weight_decay=1e-2, amsgrad=True)),
}


def scenario_fsdp2(rank: int, world: int, out: Path) -> dict:
    """FSDP2 (fully_shard, CPU mesh): CLRAdamW / CLRAdam vs AdamW / Adam + CyclicLR(cycle_momentum=True)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor

    mesh = init_device_mesh("cpu", (world,))
    base = helpers._model()
    results = {}
    for name, (rule, set_to_none, kw) in FSDP2_VARIANTS.items():
        a, b = helpers._fsdp2(base, mesh), helpers._fsdp2(base, mesh)
        opt = _clr_opt(rule, a.parameters(), **kw)
        ref, sch = _torch_opt(rule, b.parameters(), **kw)
        shown = [(_shown(opt), _shown(ref))]
        for t in range(STEPS):
            helpers._train_step(a, opt, rank, t, set_to_none)
            helpers._train_step(b, ref, rank, t, set_to_none)
            sch.step()
            shown.append((_shown(opt), _shown(ref)))
        pa, pb = list(a.parameters()), list(b.parameters())
        results[name] = dict(
            init=helpers._clone(base.parameters()),
            local_numel=[p.to_local().numel() for p in pa],
            # torch keeps the moments as DTensors and the step as a plain 0-d tensor: so must clrfast
            types=[
                [type(o.state[p][k]).__name__ for k in sorted(o.state[p])] + [isinstance(p, DTensor)]
                for o, ps in ((opt, pa), (ref, pb))
                for p in ps
            ],
            clr=helpers._full(pa),
            ref=helpers._full(pb),
            clr_local=helpers._clone(p.to_local() for p in pa),
            ref_local=helpers._clone(p.to_local() for p in pb),
            clr_state=_moments(opt, pa, helpers._full),
            ref_state=_moments(ref, pb, helpers._full),
            clr_state_local=_moments(opt, pa, lambda ts: helpers._clone(t.to_local() for t in ts)),
            ref_state_local=_moments(ref, pb, lambda ts: helpers._clone(t.to_local() for t in ts)),
            shown=shown,
            step=opt.param_groups[0]["step"],
        )
    try:  # flat=True cannot hold DTensor shards: a clear error, not a wrong model
        CLRAdamW(helpers._fsdp2(base, mesh).parameters(), clr.Cyclic(**CYCLE), flat=True)
        results["flat_error"] = None
    except Exception as e:
        results["flat_error"] = f"{type(e).__name__}: {e}"
    return results


def _fsdp2_adamw(init, mesh):
    m = helpers._fsdp2(init, mesh)
    return m, CLRAdamW(m.parameters(), clr.Cyclic(**CYCLE), weight_decay=0.05, amsgrad=True)


def scenario_fsdp2_dcp(rank: int, world: int, out: Path) -> dict:
    """FSDP2 + torch.distributed.checkpoint on 2 ranks.

    A is first asked for its state dict before any step (DCP's initialising step) and trains
    K steps beside a twin that never met DCP; A is saved with dcp.save; B (other weights)
    loads it through the templates of get_model_state_dict / get_optimizer_state_dict; A, B
    and the twin train N more.
    """
    from torch.distributed.device_mesh import init_device_mesh

    k, n = 6, 8
    mesh = init_device_mesh("cpu", (world,))
    a, opt_a = _fsdp2_adamw(helpers._model(), mesh)
    tw, opt_tw = _fsdp2_adamw(helpers._model(), mesh)
    before = helpers._full(a.parameters())
    get_optimizer_state_dict(a, opt_a)
    fresh = dict(
        weights=helpers._full(a.parameters()),
        before=before,
        shown=_shown(opt_a),
        expected=_shown(opt_tw),
        group_step=opt_a.param_groups[0]["step"],
        steps=[float(opt_a.state[p]["step"]) for p in a.parameters()],
        grads=[p.grad is None for p in a.parameters()],
    )
    for t in range(k):
        for m, o in ((a, opt_a), (tw, opt_tw)):
            helpers._train_step(m, o, rank, t)
    path = out / "fsdp2-adam-dcp"
    dcp.save({"model": get_model_state_dict(a), "optim": get_optimizer_state_dict(a, opt_a)}, checkpoint_id=path)
    b, opt_b = _fsdp2_adamw(helpers._other_init(), mesh)
    state = {"model": get_model_state_dict(b), "optim": get_optimizer_state_dict(b, opt_b)}
    template = {fqn: sorted(v) for fqn, v in state["optim"]["state"].items()}
    dcp.load(state, checkpoint_id=path)
    set_model_state_dict(b, state["model"])
    set_optimizer_state_dict(b, opt_b, state["optim"])
    runs = ((a, opt_a), (b, opt_b), (tw, opt_tw))

    def snapshot():
        return dict(
            weights=[helpers._full(m.parameters()) for m, _ in runs],
            state=[_moments(o, list(m.parameters()), helpers._full) for m, o in runs],
            steps=[o.param_groups[0]["step"] for _, o in runs],
            shown=[_shown(o) for _, o in runs],
        )

    loaded = snapshot()
    for t in range(k, k + n):
        for m, o in runs:
            helpers._train_step(m, o, rank, t)
    return dict(
        fresh=fresh,
        template=template,
        names=sorted(name for name, _ in a.named_parameters()),
        loaded=loaded,
        end=snapshot(),
        k=k,
        n=n,
    )


DDP_VARIANTS = {
    # name: (flat, gradient_as_bucket_view, zero_grad(set_to_none=...), optimizer keywords)
    "list": (False, False, True, dict()),
    "list-bucket-view-amsgrad": (False, True, False, dict(amsgrad=True, weight_decay=0.05)),
    "flat-maximize": (True, False, False, dict(maximize=True, eps=1e-6)),
    "flat-bucket-view-amsgrad": (True, True, True, dict(amsgrad=True)),
}


def scenario_ddp(rank: int, world: int, out: Path) -> dict:
    """DDP: CLRAdamW (list and flat, with and without gradient bucket views) vs AdamW + CyclicLR."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    base = helpers._model()
    results = {}
    for name, (flat, bucket_view, set_to_none, kw) in DDP_VARIANTS.items():
        a = DDP(copy.deepcopy(base), gradient_as_bucket_view=bucket_view)
        b = DDP(copy.deepcopy(base), gradient_as_bucket_view=bucket_view)
        opt = _clr_opt("adamw", a.parameters(), flat=flat, **kw)
        ref, sch = _torch_opt("adamw", b.parameters(), **kw)
        shown = [(_shown(opt), _shown(ref))]
        for t in range(STEPS):
            helpers._train_step(a, opt, rank, t, set_to_none)
            helpers._train_step(b, ref, rank, t, set_to_none)
            sch.step()
            shown.append((_shown(opt), _shown(ref)))
        pa, pb = list(a.parameters()), list(b.parameters())
        results[name] = dict(
            init=helpers._clone(base.parameters()),
            clr=helpers._clone(pa),
            ref=helpers._clone(pb),
            clr_state=_moments(opt, pa),
            ref_state=_moments(ref, pb),
            shown=shown,
            step=opt.param_groups[0]["step"],
        )
    return results


ZERO_VARIANTS = {
    # name: (flat, parameters_as_bucket_view, optimizer keywords)
    "list": (False, False, dict()),
    "list-bucket-view-amsgrad": (False, True, dict(amsgrad=True, weight_decay=0.05)),
    "flat": (True, False, dict(eps=1e-6)),
}


def _local_state(zero, params) -> dict:
    """ZeRO's local optimizer state, by index of the parameter in the model."""
    index = {id(p): i for i, p in enumerate(params)}
    return {
        index[id(p)]: {k: v.clone() for k, v in zero.optim.state[p].items()}
        for g in zero.optim.param_groups
        for p in g["params"]
    }


def scenario_zero(rank: int, world: int, out: Path) -> dict:
    """ZeroRedundancyOptimizer(optimizer_class=CLRAdamW) over DDP vs DDP + AdamW + CyclicLR."""
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    base = helpers._model()
    results = {}
    for name, (flat, bucket_view, kw) in ZERO_VARIANTS.items():
        a = DDP(copy.deepcopy(base))
        b = DDP(copy.deepcopy(base))
        opt = ZeroRedundancyOptimizer(
            a.parameters(),
            optimizer_class=CLRAdamW,
            parameters_as_bucket_view=bucket_view,
            schedule=clr.Cyclic(**CYCLE),
            flat=flat,
            **kw,
        )
        ref, sch = _torch_opt("adamw", b.parameters(), **kw)
        shown = [(_shown(opt), _shown(ref))]
        local_shown = [_shown(opt.optim)]
        for t in range(STEPS):
            helpers._train_step(a, opt, rank, t)
            helpers._train_step(b, ref, rank, t)
            sch.step()
            shown.append((_shown(opt), _shown(ref)))
            local_shown.append(_shown(opt.optim))
        pb = list(b.parameters())
        local = _local_state(opt, list(a.parameters()))
        results[name] = dict(
            init=helpers._clone(base.parameters()),
            clr=helpers._clone(a.parameters()),
            ref=helpers._clone(pb),
            local=local,
            ref_state={i: {k: v.clone() for k, v in ref.state[pb[i]].items()} for i in local},
            shown=shown,
            local_shown=local_shown,
            steps=(opt.param_groups[0]["step"], opt.optim.param_groups[0]["step"]),
            local_numel=sum(p.numel() for g in opt.optim.param_groups for p in g["params"]),
        )
    return results


def scenario_zero_resume(rank: int, world: int, out: Path) -> dict:
    """ZeRO + CLRAdamW: consolidate_state_dict, torch.save, torch.load, load into a fresh ZeRO, continue."""
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    def build(model):
        m = DDP(model)
        return m, ZeroRedundancyOptimizer(
            m.parameters(), optimizer_class=CLRAdamW, schedule=clr.Cyclic(**CYCLE), amsgrad=True
        )

    k, n = 7, 9
    a, opt_a = build(helpers._model())
    for t in range(k):
        helpers._train_step(a, opt_a, rank, t)
    opt_a.consolidate_state_dict(to=0)
    path = out / "zero-adam-checkpoint.pt"
    if rank == 0:
        torch.save({"model": a.module.state_dict(), "optim": opt_a.state_dict()}, path)
    dist.barrier()
    try:
        ckpt = torch.load(path)  # torch's default, weights_only=True
        weights_only_error = None
    except Exception as e:
        weights_only_error = f"{type(e).__name__}: {e}"[:1500]
        ckpt = torch.load(path, weights_only=False)
    b, opt_b = build(helpers._other_init())
    b.module.load_state_dict(ckpt["model"])
    opt_b.load_state_dict(ckpt["optim"])
    runs = ((a, opt_a), (b, opt_b))

    def snapshot():
        return dict(
            weights=[helpers._clone(m.parameters()) for m, _ in runs],
            local=[_local_state(o, list(m.parameters())) for m, o in runs],
            shown=[(_shown(o), _shown(o.optim)) for _, o in runs],
            steps=[(o.param_groups[0]["step"], o.optim.param_groups[0]["step"]) for _, o in runs],
        )

    loaded = snapshot()
    for t in range(k, k + n):
        for m, o in runs:
            helpers._train_step(m, o, rank, t)
    return dict(loaded=loaded, end=snapshot(), k=k, n=n, weights_only_error=weights_only_error)


SCENARIOS = {
    "fsdp2": scenario_fsdp2,
    "fsdp2_dcp": scenario_fsdp2_dcp,
    "ddp": scenario_ddp,
    "zero": scenario_zero,
    "zero_resume": scenario_zero_resume,
}


# --------------------------------------------------------------------------- checks
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
        assert mine == theirs, f"{what}, after {t} steps: (lr, betas) shown {mine}, torch {theirs}"
    betas = {b for (_, b), _ in shown}
    assert len(betas) > 2, f"{what}: beta1 never cycled ({betas})"


# =========================================================================== 2 gloo ranks
@pytest.fixture(scope="module")
def dist_run(tmp_path_factory):
    """One bounded launch of this file's scenarios on 2 ranks; each test checks its own part."""
    # The helpers' launcher starts the file it names as each rank's script: name this one,
    # whose __main__ runs SCENARIOS through the helpers' rank loop.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(helpers, "HERE", Path(__file__).resolve())
        return helpers.launch(tmp_path_factory.mktemp("adam-dist"), world=2, timeout=150.0)


@pytest.mark.parametrize("variant", list(FSDP2_VARIANTS))
def test_fsdp2_matches_torch_adam_cycliclr_bit_for_bit(dist_run, variant):
    ranks = [r[variant] for r in helpers.outcome(dist_run, "fsdp2")]
    # The model's shapes give even shards, uneven shards and an empty local shard (rank 1).
    assert [0 in r["local_numel"] for r in ranks] == [False, True], [r["local_numel"] for r in ranks]
    for rank, r in enumerate(ranks):
        where = f"rank {rank}, {variant}"
        half = len(r["types"]) // 2
        assert r["types"][:half] == r["types"][half:], f"{where}: state types {r['types']}"
        assert all(t[-1] for t in r["types"]), f"{where}: parameters must stay DTensors"
        assert_same(r["clr"], r["ref"], f"{where}: gathered weights (clrfast vs torch + CyclicLR)")
        assert_same(r["clr_local"], r["ref_local"], f"{where}: local shards")
        assert_same_state(r["clr_state"], r["ref_state"], f"{where}: gathered state")
        assert_same_state(r["clr_state_local"], r["ref_state_local"], f"{where}: local state shards")
        assert all(float(s) == STEPS for s in r["clr_state"]["step"]), r["clr_state"]["step"]
        assert ("max_exp_avg_sq" in r["clr_state"]) == ("amsgrad" in variant)
        assert_trained(r["clr"], r["init"], f"{where}: weights")
        assert_shown(r["shown"], where)
        assert r["step"] == STEPS
    assert_same(ranks[0]["clr"], ranks[1]["clr"], f"{variant}: gathered weights, rank 0 vs rank 1")


def test_fsdp2_flat_mode_is_a_clear_error(dist_run):
    for r in helpers.outcome(dist_run, "fsdp2"):
        assert r["flat_error"] is not None and r["flat_error"].startswith("ValueError"), r["flat_error"]
        assert "DTensor" in r["flat_error"] and "flat=False" in r["flat_error"], r["flat_error"]


def test_fsdp2_distributed_checkpoint_fresh_and_resume_are_bit_identical(dist_run):
    for rank, r in enumerate(helpers.outcome(dist_run, "fsdp2_dcp")):
        fresh = r["fresh"]
        # get_optimizer_state_dict before the first step runs DCP's zero-lr initialising step:
        assert_same(fresh["weights"], fresh["before"], f"rank {rank}: weights after DCP's initialising step")
        assert fresh["group_step"] == 0 and fresh["shown"] == fresh["expected"], fresh
        assert fresh["steps"] == [0.0] * len(fresh["steps"]), f"rank {rank}: per-parameter steps {fresh['steps']}"
        assert all(fresh["grads"]), f"rank {rank}: DCP's zero gradients must be cleared again"
        # B's template holds every state entry (moments and step) of every parameter.
        keys = sorted(("step", *MOMENTS))
        assert r["template"] == {name: keys for name in r["names"]}, r["template"]
        for when in ("loaded", "end"):
            snap = r[when]
            a, b, twin = snap["weights"]
            assert_same(b, a, f"rank {rank}, {when}: weights, resumed B vs A")
            assert_same(a, twin, f"rank {rank}, {when}: weights, A vs the twin that never met DCP")
            sa, sb, st = snap["state"]
            assert_same_state(sb, sa, f"rank {rank}, {when}: state, B vs A")
            assert_same_state(sa, st, f"rank {rank}, {when}: state, A vs twin")
            assert len(set(snap["shown"])) == 1, snap["shown"]
        assert r["loaded"]["steps"] == [r["k"]] * 3
        assert r["end"]["steps"] == [r["k"] + r["n"]] * 3
        assert all(float(s) == r["k"] + r["n"] for s in r["end"]["state"][1]["step"])


@pytest.mark.parametrize("variant", list(DDP_VARIANTS))
def test_ddp_matches_torch_adamw_cycliclr_bit_for_bit(dist_run, variant):
    ranks = [r[variant] for r in helpers.outcome(dist_run, "ddp")]
    for rank, r in enumerate(ranks):
        where = f"rank {rank}, {variant}"
        assert_same(r["clr"], r["ref"], f"{where}: weights (CLRAdamW vs AdamW + CyclicLR)")
        assert_same_state(r["clr_state"], r["ref_state"], f"{where}: state")
        assert_trained(r["clr"], r["init"], f"{where}: weights")
        assert_shown(r["shown"], where)
        assert r["step"] == STEPS
    assert_same(ranks[0]["clr"], ranks[1]["clr"], f"{variant}: weights, rank 0 vs rank 1")


@pytest.mark.parametrize("variant", list(ZERO_VARIANTS))
def test_zero_redundancy_optimizer_with_clradamw_matches_ddp_torch_adamw(dist_run, variant):
    ranks = [r[variant] for r in helpers.outcome(dist_run, "zero")]
    total = sum(p.numel() for p in ranks[0]["init"])
    numels = [r["local_numel"] for r in ranks]
    assert sum(numels) == total and 0 not in numels, f"ZeRO partitions {total} elements as {numels}"
    for rank, r in enumerate(ranks):
        where = f"rank {rank}, {variant}"
        assert_same(r["clr"], r["ref"], f"{where}: weights (ZeRO + CLRAdamW vs DDP + AdamW + CyclicLR)")
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


def test_zero_redundancy_optimizer_resume_is_bit_identical(dist_run):
    for rank, r in enumerate(helpers.outcome(dist_run, "zero_resume")):
        # ZeRO's consolidated state dict must load with torch.load's default (weights_only=True).
        assert r["weights_only_error"] is None, f"rank {rank}: {r['weights_only_error']}"
        for when in ("loaded", "end"):
            snap = r[when]
            a, b = snap["weights"]
            assert_same(b, a, f"rank {rank}, {when}: weights, resumed B vs A")
            la, lb = snap["local"]
            assert la and sorted(la) == sorted(lb), (sorted(la), sorted(lb))
            for i in la:
                assert sorted(la[i]) == sorted(lb[i]) == sorted(("step", *MOMENTS)), (la[i].keys(), lb[i].keys())
                for k in la[i]:
                    assert_same([lb[i][k]], [la[i][k]], f"rank {rank}, {when}: parameter {i} state[{k!r}]")
            assert snap["shown"][0] == snap["shown"][1], snap["shown"]
        assert r["loaded"]["steps"] == [(r["k"], r["k"])] * 2
        assert r["end"]["steps"] == [(r["k"] + r["n"], r["k"] + r["n"])] * 2


# =========================================================================== checkpoints, one process
# dcp.save/dcp.load without a process group warn that they assume a single process, which is
# the case these tests set up on purpose.
SINGLE_PROCESS_DCP = pytest.mark.filterwarnings(
    "ignore:torch.distributed is disabled, unavailable or uninitialized:UserWarning"
)
MODES = pytest.mark.parametrize("flat", [False, True], ids=["list", "flat"])
HYPER = dict(weight_decay=0.05, amsgrad=True)


_net = helpers.small_net


def _clradamw(model, flat: bool) -> CLRAdamW:
    return CLRAdamW(model.parameters(), clr.Cyclic(**CYCLE), flat=flat, **HYPER)


_step = helpers.train_step


_weights = helpers.weights


def _state(model, opt) -> dict:
    return _moments(opt, list(model.parameters()))


def _clock(opt) -> tuple:
    return (*_shown(opt), opt.param_groups[0]["step"])


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
def test_dcp_get_optimizer_state_dict_on_fresh_clradamw_changes_nothing(flat):
    a, twin, ref_model = _net(0), _net(0), _net(0)
    opt, opt_twin = _clradamw(a, flat), _clradamw(twin, flat)
    ref, sched = _torch_opt("adamw", ref_model.parameters(), **HYPER)
    before, shown = _weights(a), _clock(opt)

    osd = get_optimizer_state_dict(a, opt)  # runs torch's zero-lr initialising step on a stateless optimizer

    assert_same(_weights(a), before, "weights after get_optimizer_state_dict")
    assert _clock(opt) == shown == (CYCLE["base_lr"], (CYCLE["max_momentum"], 0.999), 0)
    assert all(p.grad is None for p in a.parameters())
    assert _entries(osd) == {name: sorted(("step", *MOMENTS)) for name in _names(a)}
    assert [float(v["step"]) for v in osd["state"].values()] == [0.0] * len(_names(a))
    assert osd["param_groups"][0]["step"] == 0
    for t in range(12):
        _step(a, opt, t)
        _step(twin, opt_twin, t)
        _step(ref_model, ref, t)
        sched.step()
        assert _clock(opt) == _clock(opt_twin), t
        assert _shown(opt) == _shown(ref), t
    assert_same(_weights(a), _weights(twin), "weights vs the twin that never called it")
    assert_same_state(_state(a, opt), _state(twin, opt_twin), "state vs the twin")
    assert_same(_weights(a), _weights(ref_model), "weights vs AdamW + CyclicLR")
    assert_same_state(_state(a, opt), _state(ref_model, ref), "state vs AdamW + CyclicLR")


def _dcp_resume(tmp_path, flat: bool, k: int, n: int = 8, options=None) -> None:
    """A trains k steps and is saved with dcp.save; a fresh B (other weights) loads it and goes on.

    B must then follow the trajectory of a twin that never met DCP, and of A when A stepped (k > 0).
    """
    a, twin = _net(0), _net(0)
    opt_a, opt_twin = _clradamw(a, flat), _clradamw(twin, flat)
    for t in range(k):
        _step(a, opt_a, t)
        _step(twin, opt_twin, t)
    ckpt = tmp_path / "ckpt"
    dcp.save(
        {"model": get_model_state_dict(a), "optim": get_optimizer_state_dict(a, opt_a, options=options)},
        checkpoint_id=ckpt,
    )

    b = _net(1)
    opt_b = _clradamw(b, flat)
    state = {"model": get_model_state_dict(b), "optim": get_optimizer_state_dict(b, opt_b, options=options)}
    # dcp.load fills only what the template holds: it must hold every state entry of every parameter.
    assert _entries(state["optim"]) == {name: sorted(("step", *MOMENTS)) for name in _names(b)}
    dcp.load(state, checkpoint_id=ckpt)
    set_model_state_dict(b, state["model"])
    set_optimizer_state_dict(b, opt_b, state["optim"], options=options)

    assert_same(_weights(b), _weights(a), "weights after loading")
    assert_same_state(_state(b, opt_b), _state(a, opt_a), "state after loading")
    assert _clock(opt_b) == _clock(opt_a) == _clock(opt_twin)
    assert all(float(s) == k for s in _state(b, opt_b)["step"]), _state(b, opt_b)["step"]
    if k:
        assert all(m.any() for m in _state(b, opt_b)["exp_avg"]), "the moments must be A's, not the template's zeros"
    going_on = [(b, opt_b), (twin, opt_twin)] + ([(a, opt_a)] if k else [])
    for t in range(k, k + n):
        for model, opt in going_on:
            _step(model, opt, t)
        assert _clock(opt_b) == _clock(opt_twin), t
    for model, opt in going_on[1:]:
        assert_same(_weights(b), _weights(model), "weights after resuming")
        assert_same_state(_state(b, opt_b), _state(model, opt), "state after resuming")
        assert _clock(opt_b) == _clock(opt)
    assert opt_b.param_groups[0]["step"] == k + n
    assert all(float(s) == k + n for s in _state(b, opt_b)["step"])


@SINGLE_PROCESS_DCP
@MODES
@pytest.mark.parametrize("flatten", [False, True], ids=["nested", "flattened"])
def test_dcp_save_load_resume_is_bit_identical(tmp_path, flat, flatten):
    # flattened: StateDictOptions(flatten_optimizer_state_dict=True), one key per parameter and state entry
    _dcp_resume(tmp_path, flat, k=6, options=StateDictOptions(flatten_optimizer_state_dict=flatten))


@SINGLE_PROCESS_DCP
@MODES
def test_dcp_resume_from_checkpoint_taken_before_the_first_step(tmp_path, flat):
    # The moments and steps of a never-stepped optimizer come from DCP's initialising step:
    # zeros and step 0, so B's first update is torch's first update (bias correction with s = 1).
    _dcp_resume(tmp_path, flat, k=0)


if __name__ == "__main__":  # one rank of the launch above
    helpers.SCENARIOS = SCENARIOS
    helpers._main(sys.argv[1:])
