"""Multi-process scenarios for test_optim_distributed.py.

The test launches this file once per rank (``python _dist_helpers.py RANK WORLD PORT OUT``);
the ranks join one gloo process group on 127.0.0.1 and run every scenario in turn (one
launch pays torch's import time once). A scenario trains, for each fused optimizer of
``optim_registry`` (or each variant of its options), a clrfast copy and a copy under the
rule's reference + ``CyclicLR(cycle_momentum=True)`` of one model on rank-dependent data,
and returns what the test compares (weights, every state tensor, the lr and momentum or
beta1 the groups show).

Each rank saves ``OUT/rank{RANK}.pt``, ``{scenario: {"ok": result, "seconds": s} or {"error": traceback}}``,
after every scenario. Ranks meet in the TCP store after each one: when they all raised (the
same code fails the same way on every rank) the run goes on with the next scenario; when
they disagree or one does not arrive, collectives may be out of step, so the rank exits
non-zero and the launcher kills the others: nothing waits for a collective that never comes.
"""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path

import clrfast as clr
import torch
import torch.distributed as dist
import torch.nn.functional as F
from optim_registry import RULES
from torch import nn

HERE = Path(__file__).resolve()

STEPS = 20
# One cycle for both sides: clr.Cyclic(**CYCLIC) and CyclicLR(opt, **CYCLIC, cycle_momentum=True), which
# cycles momentum, or betas[0] where the optimizer has betas.
CYCLIC = dict(base_lr=1e-3, max_lr=1e-2, step_size_up=5, step_size_down=3, base_momentum=0.8, max_momentum=0.95)

try:
    from torch.distributed.tensor import DTensor
except ImportError:  # torch < 2.5 keeps it private
    from torch.distributed._tensor import DTensor


# --------------------------------------------------------------------------- launcher (test process)
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_env() -> dict:
    env = dict(os.environ)
    # Two ranks share few cores: one intra-op thread each keeps the run short and deterministic.
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", PYTHONUNBUFFERED="1")
    if sys.platform.startswith("linux") and os.path.exists("/sys/class/net/lo"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return env


def launch(out: Path, world: int = 2, timeout: float = 240.0) -> tuple[list, str | None]:
    """Runs every scenario on ``world`` gloo ranks.

    Returns (each rank's saved results, or None where a rank saved none; None when every
    rank exited cleanly, else a report with each rank's exit status and output, its
    traceback included). The run is bounded by ``timeout`` seconds: then, or as soon as a
    rank fails, the remaining ranks are killed.
    """
    for attempt in range(3):
        port = free_port()
        outdir = out / f"run{attempt}"
        outdir.mkdir(parents=True, exist_ok=True)
        procs, logs = [], []
        for rank in range(world):
            log = open(outdir / f"rank{rank}.log", "w+b")  # closed below
            logs.append(log)
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(HERE), str(rank), str(world), str(port), str(outdir)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=_child_env(),
                    cwd=str(HERE.parent),
                )
            )
        deadline = time.monotonic() + timeout
        failed = None
        while True:
            codes = [p.poll() for p in procs]
            if any(c not in (None, 0) for c in codes):
                failed = "a rank failed"
                break
            if all(c == 0 for c in codes):
                break
            if time.monotonic() > deadline:
                failed = f"timed out after {timeout:.0f} s"
                break
            time.sleep(0.05)
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        outputs = []
        for log in logs:
            log.seek(0)
            outputs.append(log.read().decode(errors="replace"))
            log.close()
        if failed is not None and attempt < 2 and any("ddress already in use" in o for o in outputs):
            continue  # another process took the port between free_port() and the bind
        results = [_load(outdir / f"rank{r}.pt") for r in range(world)]
        report = None
        if failed is not None:
            report = f"{failed}\n" + "\n".join(
                f"----- rank {r} (exit {p.returncode}) -----\n{o[-6000:]}"
                for r, (p, o) in enumerate(zip(procs, outputs))
            )
        return results, report
    raise AssertionError("unreachable")


def _load(path: Path):
    try:
        return torch.load(path)
    except Exception:  # missing, or cut short by a killed rank: the launch report says why
        return None


def outcome(run: tuple[list, str | None], name: str) -> list:
    """The per-rank results of scenario ``name``; AssertionError with every rank's traceback if it failed."""
    results, report = run
    problems, oks = [], []
    for rank, res in enumerate(results):
        if res is None or name not in res:
            problems.append(f"----- rank {rank}: no result -----")
        elif "error" in res[name]:
            problems.append(f"----- rank {rank} raised -----\n{res[name]['error']}")
        else:
            oks.append(res[name]["ok"])
    if problems:
        raise AssertionError(
            f"scenario {name!r} failed:\n" + "\n".join(problems) + (f"\n===== launch: {report}" if report else "")
        )
    return oks


# --------------------------------------------------------------------------- shared pieces (ranks)
def _model():
    torch.manual_seed(0)
    # Shapes chosen so 2 ranks get even shards (10 rows), uneven shards (3 rows: 2 + 1)
    # and an empty one (1 row: 1 + 0) under FSDP2's row sharding.
    return nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3), nn.Tanh(), nn.Linear(3, 1))


def _other_init():
    """The same architecture as ``_model()`` with other weights."""
    m = _model()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
    return m


def _batch(rank: int, t: int):
    g = torch.Generator().manual_seed(1000 * rank + t)
    return torch.randn(8, 6, generator=g), torch.randn(8, 1, generator=g)


def _train_step(model, opt, rank: int, t: int, set_to_none: bool = True) -> None:
    opt.zero_grad(set_to_none=set_to_none)
    x, y = _batch(rank, t)
    F.mse_loss(model(x), y).backward()
    opt.step()


def _clr(rule: str, params, flat: bool = False, base=None):
    return RULES[rule].make(params, clr.Cyclic(**CYCLIC), flat=flat, base=base)


def _ref(rule: str, params, base=None):
    """The rule's reference driven by CyclicLR(cycle_momentum=True): the same lr and momentum (beta1) each step."""
    opt = RULES[rule].make_reference(params, CYCLIC["base_lr"], base=base)
    return opt, torch.optim.lr_scheduler.CyclicLR(opt, cycle_momentum=True, **CYCLIC)


def _shown(rule: str, opt) -> tuple:
    """The lr and momentum (beta1) a group shows: the values of its next update."""
    return RULES[rule].shown(opt.param_groups[0])


def _clone(ts) -> list:
    return [t.detach().clone() for t in ts]


def _full(ts) -> list:
    """Whole tensors: DTensors gathered, plain ones (a per-parameter step) cloned."""
    return [t.full_tensor() if isinstance(t, DTensor) else t.detach().clone() for t in ts]


def _local(ts) -> list:
    return [t.to_local().clone() if isinstance(t, DTensor) else t.detach().clone() for t in ts]


def _state(opt, params, gather=_clone) -> dict:
    """Per state key, the tensors of ``params`` that hold it."""
    keys = sorted({k for p in params for k in opt.state.get(p, {})})
    return {k: gather([opt.state[p][k] for p in params if k in opt.state.get(p, {})]) for k in keys}


def _types(opt, params) -> list:
    """Per parameter, whether it is a DTensor and the type of each state entry."""
    return [[isinstance(p, DTensor)] + [type(opt.state[p][k]).__name__ for k in sorted(opt.state[p])] for p in params]


def _local_state(opt, params) -> dict:
    """A local optimizer's state (ZeRO's shard), by index of the parameter in the model."""
    index = {id(p): i for i, p in enumerate(params)}
    return {
        index[id(p)]: {k: v.clone() for k, v in opt.state[p].items()} for g in opt.param_groups for p in g["params"]
    }


def _side_by_side(rule, a, opt, b, ref, sch, rank, set_to_none=True) -> list:
    """STEPS steps of both; the (lr, momentum) both show before the first and after each."""
    shown = [(_shown(rule, opt), _shown(rule, ref))]
    for t in range(STEPS):
        _train_step(a, opt, rank, t, set_to_none)
        _train_step(b, ref, rank, t, set_to_none)
        sch.step()
        shown.append((_shown(rule, opt), _shown(rule, ref)))
    return shown


# --------------------------------------------------------------------------- scenarios (ranks)
def _fsdp2(base, mesh):
    """A copy of ``base`` with every Linear and the root under ``fully_shard``."""
    from torch.distributed.fsdp import fully_shard

    m = copy.deepcopy(base)
    for layer in m:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(m, mesh=mesh)
    return m


# Variants: the rule, then its options (None: the registry's first option set), from CLRSGD's and the
# Adam family's own distributed tests; the rules on the generic engine take one or two each.
FSDP2_VARIANTS = {
    # name: (rule, zero_grad(set_to_none=...), options)
    "CLRSGD-weight-decay": ("CLRSGD", True, dict(momentum=0.9, weight_decay=1e-2)),
    "CLRSGD-nesterov-kept-grads": ("CLRSGD", False, dict(momentum=0.9, weight_decay=1e-2, nesterov=True)),
    "CLRSGD-dampening-maximize": ("CLRSGD", True, dict(momentum=0.9, dampening=0.25, maximize=True)),
    "CLRAdamW": ("CLRAdamW", True, {}),
    "CLRAdamW-amsgrad-kept-grads": ("CLRAdamW", False, dict(amsgrad=True, weight_decay=0.05)),
    "CLRAdamW-maximize-eps-beta2": ("CLRAdamW", True, dict(maximize=True, eps=1e-6, betas=(0.9, 0.99))),
    "CLRAdam-l2-amsgrad": ("CLRAdam", True, dict(weight_decay=1e-2, amsgrad=True)),
    "CLRRMSprop-kept-grads": ("CLRRMSprop", False, None),
    "CLRLion": ("CLRLion", True, None),
}


def scenario_fsdp2(rank: int, world: int, out: Path) -> dict:
    """FSDP2 (fully_shard, CPU mesh): each rule vs its reference + CyclicLR(cycle_momentum=True)."""
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (world,))
    base = _model()
    results = {}
    for name, (rule, set_to_none, options) in FSDP2_VARIANTS.items():
        a, b = _fsdp2(base, mesh), _fsdp2(base, mesh)
        opt = _clr(rule, a.parameters(), base=options)
        ref, sch = _ref(rule, b.parameters(), options)
        shown = _side_by_side(rule, a, opt, b, ref, sch, rank, set_to_none)
        pa, pb = list(a.parameters()), list(b.parameters())
        results[name] = dict(
            init=_clone(base.parameters()),
            local_numel=[p.to_local().numel() for p in pa],
            # torch keeps per-element state as DTensors and a step as a plain 0-d tensor: so must clrfast
            types=(_types(opt, pa), _types(ref, pb)),
            clr=_full(pa),
            ref=_full(pb),
            clr_local=_local(pa),
            ref_local=_local(pb),
            clr_state=_state(opt, pa, _full),
            ref_state=_state(ref, pb, _full),
            clr_state_local=_state(opt, pa, _local),
            ref_state_local=_state(ref, pb, _local),
            shown=shown,
            step=opt.param_groups[0]["step"],
        )
    for rule in RULES:  # flat=True cannot hold DTensor shards: a clear error, not a wrong model
        try:
            _clr(rule, _fsdp2(base, mesh).parameters(), flat=True)
            results[f"flat_error/{rule}"] = None
        except Exception as e:
            results[f"flat_error/{rule}"] = f"{type(e).__name__}: {e}"
    return results


# The options of the checkpoint scenarios (default: the registry's first set). SGD's dampening: a zero
# buffer taken for history would give another first update than torch's.
CHECKPOINT_OPTIONS = {"CLRSGD": dict(momentum=0.9, weight_decay=1e-2, dampening=0.25)}


def scenario_fsdp2_dcp(rank: int, world: int, out: Path) -> dict:
    """FSDP2 + torch.distributed.checkpoint on 2 ranks, for every rule.

    A is first asked for its state dict before any step (DCP's initialising step) and trains
    K steps beside a twin that never met DCP; A is saved with dcp.save; B (other weights)
    loads it through the templates of get_model_state_dict / get_optimizer_state_dict; A, B
    and the twin train N more.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import state_dict as api
    from torch.distributed.device_mesh import init_device_mesh

    k, n = 6, 8
    mesh = init_device_mesh("cpu", (world,))
    results = {}
    for rule in RULES:
        options = CHECKPOINT_OPTIONS.get(rule)
        a, tw = _fsdp2(_model(), mesh), _fsdp2(_model(), mesh)
        opt_a, opt_tw = _clr(rule, a.parameters(), base=options), _clr(rule, tw.parameters(), base=options)
        before = _full(a.parameters())
        api.get_optimizer_state_dict(a, opt_a)
        fresh = dict(
            weights=_full(a.parameters()),
            before=before,
            shown=_shown(rule, opt_a),
            expected=_shown(rule, opt_tw),
            group_step=opt_a.param_groups[0]["step"],
            steps=[float(opt_a.state[p]["step"]) for p in a.parameters() if "step" in opt_a.state[p]],
            grads=[p.grad is None for p in a.parameters()],
        )
        for t in range(k):
            for m, o in ((a, opt_a), (tw, opt_tw)):
                _train_step(m, o, rank, t)
        path = out / f"fsdp2-dcp-{rule}"
        dcp.save(
            {"model": api.get_model_state_dict(a), "optim": api.get_optimizer_state_dict(a, opt_a)}, checkpoint_id=path
        )
        b = _fsdp2(_other_init(), mesh)
        opt_b = _clr(rule, b.parameters(), base=options)
        state = {"model": api.get_model_state_dict(b), "optim": api.get_optimizer_state_dict(b, opt_b)}
        template = {fqn: sorted(v) for fqn, v in state["optim"]["state"].items()}
        dcp.load(state, checkpoint_id=path)
        api.set_model_state_dict(b, state["model"])
        api.set_optimizer_state_dict(b, opt_b, state["optim"])
        runs = ((a, opt_a), (b, opt_b), (tw, opt_tw))

        def snapshot(runs=runs, rule=rule):
            return dict(
                weights=[_full(m.parameters()) for m, _ in runs],
                state=[_state(o, list(m.parameters()), _full) for m, o in runs],
                steps=[o.param_groups[0]["step"] for _, o in runs],
                shown=[_shown(rule, o) for _, o in runs],
            )

        loaded = snapshot()
        for t in range(k, k + n):
            for m, o in runs:
                _train_step(m, o, rank, t)
        results[rule] = dict(
            fresh=fresh,
            template=template,
            names=sorted(name for name, _ in a.named_parameters()),
            loaded=loaded,
            end=snapshot(),
            k=k,
            n=n,
        )
    return results


DDP_VARIANTS = {
    # name: (rule, flat, gradient_as_bucket_view, zero_grad(set_to_none=...), options)
    "CLRSGD-list": ("CLRSGD", False, False, True, dict(momentum=0.9, weight_decay=1e-2)),
    "CLRSGD-list-bucket-view": ("CLRSGD", False, True, False, dict(momentum=0.9, weight_decay=1e-2, nesterov=True)),
    "CLRSGD-flat": ("CLRSGD", True, False, False, dict(momentum=0.9, weight_decay=1e-2, dampening=0.25)),
    "CLRSGD-flat-bucket-view": ("CLRSGD", True, True, True, dict(momentum=0.9, weight_decay=1e-2)),
    "CLRAdamW-list": ("CLRAdamW", False, False, True, {}),
    "CLRAdamW-list-bucket-view-amsgrad": ("CLRAdamW", False, True, False, dict(amsgrad=True, weight_decay=0.05)),
    "CLRAdamW-flat-maximize": ("CLRAdamW", True, False, False, dict(maximize=True, eps=1e-6)),
    "CLRAdamW-flat-bucket-view-amsgrad": ("CLRAdamW", True, True, True, dict(amsgrad=True)),
    "CLRAdam-list-bucket-view": ("CLRAdam", False, True, True, None),
    "CLRRMSprop-list-bucket-view": ("CLRRMSprop", False, True, False, None),
    "CLRRMSprop-flat": ("CLRRMSprop", True, False, True, None),
    "CLRLion-list": ("CLRLion", False, False, True, None),
    "CLRLion-flat-bucket-view": ("CLRLion", True, True, False, None),
}


def scenario_ddp(rank: int, world: int, out: Path) -> dict:
    """DDP: each rule (list and flat, with and without gradient bucket views) vs its reference + CyclicLR."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    base = _model()
    results = {}
    for name, (rule, flat, bucket_view, set_to_none, options) in DDP_VARIANTS.items():
        a = DDP(copy.deepcopy(base), gradient_as_bucket_view=bucket_view)
        b = DDP(copy.deepcopy(base), gradient_as_bucket_view=bucket_view)
        opt = _clr(rule, a.parameters(), flat=flat, base=options)
        ref, sch = _ref(rule, b.parameters(), options)
        shown = _side_by_side(rule, a, opt, b, ref, sch, rank, set_to_none)
        pa, pb = list(a.parameters()), list(b.parameters())
        results[name] = dict(
            init=_clone(base.parameters()),
            clr=_clone(pa),
            ref=_clone(pb),
            clr_state=_state(opt, pa),
            ref_state=_state(ref, pb),
            shown=shown,
            step=opt.param_groups[0]["step"],
        )
    return results


ZERO_VARIANTS = {
    # name: (rule, flat, parameters_as_bucket_view, options)
    "CLRSGD-list": ("CLRSGD", False, False, dict(momentum=0.9, weight_decay=1e-2, dampening=0.25)),
    "CLRSGD-list-bucket-view": ("CLRSGD", False, True, dict(momentum=0.9, weight_decay=1e-2, dampening=0.25)),
    "CLRSGD-flat": ("CLRSGD", True, False, dict(momentum=0.9, weight_decay=1e-2, dampening=0.25)),
    "CLRAdamW-list": ("CLRAdamW", False, False, {}),
    "CLRAdamW-list-bucket-view-amsgrad": ("CLRAdamW", False, True, dict(amsgrad=True, weight_decay=0.05)),
    "CLRAdamW-flat": ("CLRAdamW", True, False, dict(eps=1e-6)),
    "CLRAdam-list": ("CLRAdam", False, False, None),
    "CLRRMSprop-list-bucket-view": ("CLRRMSprop", False, True, None),
    "CLRRMSprop-flat": ("CLRRMSprop", True, False, None),
    "CLRLion-list": ("CLRLion", False, False, None),
    "CLRLion-flat": ("CLRLion", True, False, None),
}


def _zero(rule: str, params, flat: bool = False, bucket_view: bool = False, options=None):
    from torch.distributed.optim import ZeroRedundancyOptimizer

    return ZeroRedundancyOptimizer(
        params,
        optimizer_class=RULES[rule].cls,
        parameters_as_bucket_view=bucket_view,
        schedule=clr.Cyclic(**CYCLIC),
        flat=flat,
        **RULES[rule].kwargs(base=options),
    )


def scenario_zero(rank: int, world: int, out: Path) -> dict:
    """ZeroRedundancyOptimizer(optimizer_class=each rule) over DDP vs DDP + its reference + CyclicLR."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    base = _model()
    results = {}
    for name, (rule, flat, bucket_view, options) in ZERO_VARIANTS.items():
        a = DDP(copy.deepcopy(base))
        b = DDP(copy.deepcopy(base))
        opt = _zero(rule, a.parameters(), flat, bucket_view, options)
        ref, sch = _ref(rule, b.parameters(), options)
        shown = [(_shown(rule, opt), _shown(rule, ref))]
        local_shown = [_shown(rule, opt.optim)]
        for t in range(STEPS):
            _train_step(a, opt, rank, t)
            _train_step(b, ref, rank, t)
            sch.step()
            shown.append((_shown(rule, opt), _shown(rule, ref)))
            local_shown.append(_shown(rule, opt.optim))
        pb = list(b.parameters())
        local = _local_state(opt.optim, list(a.parameters()))
        results[name] = dict(
            init=_clone(base.parameters()),
            clr=_clone(a.parameters()),
            ref=_clone(pb),
            local=local,
            ref_state={i: {k: v.clone() for k, v in ref.state[pb[i]].items()} for i in local},
            shown=shown,
            local_shown=local_shown,
            steps=(opt.param_groups[0]["step"], opt.optim.param_groups[0]["step"]),
            local_numel=sum(p.numel() for g in opt.optim.param_groups for p in g["params"]),
        )
    return results


def scenario_zero_resume(rank: int, world: int, out: Path) -> dict:
    """ZeRO + each rule: consolidate_state_dict, torch.save, torch.load, load into a fresh ZeRO, continue."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    k, n = 7, 9
    results = {}
    for rule in RULES:
        options = CHECKPOINT_OPTIONS.get(rule)
        a = DDP(_model())
        opt_a = _zero(rule, a.parameters(), options=options)
        for t in range(k):
            _train_step(a, opt_a, rank, t)
        opt_a.consolidate_state_dict(to=0)
        path = out / f"zero-checkpoint-{rule}.pt"
        if rank == 0:
            torch.save({"model": a.module.state_dict(), "optim": opt_a.state_dict()}, path)
        dist.barrier()
        try:
            ckpt = torch.load(path)  # torch's default, weights_only=True
            weights_only_error = None
        except Exception as e:
            weights_only_error = f"{type(e).__name__}: {e}"[:1500]
            ckpt = torch.load(path, weights_only=False)
        b = DDP(_other_init())
        opt_b = _zero(rule, b.parameters(), options=options)
        b.module.load_state_dict(ckpt["model"])
        opt_b.load_state_dict(ckpt["optim"])
        runs = ((a, opt_a), (b, opt_b))

        def snapshot(runs=runs, rule=rule):
            return dict(
                weights=[_clone(m.parameters()) for m, _ in runs],
                local=[_local_state(o.optim, list(m.parameters())) for m, o in runs],
                shown=[(_shown(rule, o), _shown(rule, o.optim)) for _, o in runs],
                steps=[(o.param_groups[0]["step"], o.optim.param_groups[0]["step"]) for _, o in runs],
            )

        loaded = snapshot()
        shown = []
        for t in range(k, k + n):
            for m, o in runs:
                _train_step(m, o, rank, t)
            shown.append(tuple(_shown(rule, o) for _, o in runs))
        results[rule] = dict(
            loaded=loaded, end=snapshot(), shown=shown, k=k, n=n, weights_only_error=weights_only_error
        )
    return results


# The schedule-free rules step in train() mode only and have no scheduled momentum, so they are not in
# the registry's CyclicLR scenarios: their reference is the schedulefree package (for-loop path).
SCHEDULEFREE_VARIANTS = {
    # name: (rule, wrapper, flat, options)
    "adamw-ddp": ("adamw", "ddp", False, dict(lr=1e-2, weight_decay=0.1, warmup_steps=5, r=1.0)),
    "adamw-ddp-flat": ("adamw", "ddp", True, dict(lr=1e-2, betas=(0.6, 0.5), warmup_steps=3, weight_lr_power=1)),
    "adamw-fsdp2": ("adamw", "fsdp2", False, dict(lr=1e-2, weight_decay=0.1, warmup_steps=5, r=1.0)),
    "sgd-ddp": ("sgd", "ddp", False, dict(lr=0.5, weight_decay=0.1, warmup_steps=5)),
    "sgd-ddp-flat": ("sgd", "ddp", True, dict(lr=0.2, momentum=0.6, r=2, warmup_steps=3)),
    "sgd-fsdp2": ("sgd", "fsdp2", False, dict(lr=0.5, weight_decay=0.1, warmup_steps=5)),
}


def schedulefree_pair(rule: str):
    """(the package's class, clrfast's) for ``rule``."""
    import schedulefree
    from clrfast.torch import CLRScheduleFreeAdamW, CLRScheduleFreeSGD

    return {
        "adamw": (schedulefree.AdamWScheduleFree, CLRScheduleFreeAdamW),
        "sgd": (schedulefree.SGDScheduleFree, CLRScheduleFreeSGD),
    }[rule]


def scenario_schedulefree(rank: int, world: int, out: Path) -> dict:
    """DDP and FSDP2: each schedule-free rule vs the schedulefree package, in train mode, after eval()
    and after train() again."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.nn.parallel import DistributedDataParallel as DDP

    mesh = init_device_mesh("cpu", (world,))
    base = _model()
    results = {}
    for name, (rule, wrapper, flat, options) in SCHEDULEFREE_VARIANTS.items():
        ref_cls, cls = schedulefree_pair(rule)
        if wrapper == "ddp":
            a, b = DDP(copy.deepcopy(base)), DDP(copy.deepcopy(base))
        else:
            a, b = _fsdp2(base, mesh), _fsdp2(base, mesh)
        opt = cls(a.parameters(), flat=flat, **options)
        ref = ref_cls(b.parameters(), foreach=False, **options)
        ref.train()
        pa, pb = list(a.parameters()), list(b.parameters())
        snaps = {}
        for t in range(STEPS):
            _train_step(a, opt, rank, t)
            _train_step(b, ref, rank, t)
        snaps["train"] = (_full(pa), _full(pb), _state(opt, pa, _full), _state(ref, pb, _full))
        opt.eval()
        ref.eval()
        snaps["eval"] = (_full(pa), _full(pb), _state(opt, pa, _full), _state(ref, pb, _full))
        opt.train()
        ref.train()
        for t in range(STEPS, STEPS + 3):
            _train_step(a, opt, rank, t)
            _train_step(b, ref, rank, t)
        snaps["again"] = (_full(pa), _full(pb), _state(opt, pa, _full), _state(ref, pb, _full))
        keys = ("k", "weight_sum", "lr_max", "lr")
        results[name] = dict(
            init=_clone(base.parameters()),
            snaps=snaps,
            types=(_types(opt, pa), _types(ref, pb)),
            groups=([opt.param_groups[0][k] for k in keys], [ref.param_groups[0][k] for k in keys]),
        )
    return results


SCENARIOS = {
    "fsdp2": scenario_fsdp2,
    "fsdp2_dcp": scenario_fsdp2_dcp,
    "ddp": scenario_ddp,
    "zero": scenario_zero,
    "zero_resume": scenario_zero_resume,
    "schedulefree": scenario_schedulefree,
}


def _main(argv) -> None:
    rank, world, port, out = int(argv[0]), int(argv[1]), int(argv[2]), Path(argv[3])

    torch.set_num_threads(1)
    store = dist.TCPStore("127.0.0.1", port, world, is_master=rank == 0, timeout=timedelta(seconds=60))
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=timedelta(seconds=60))
    results = {}
    for name, fn in SCENARIOS.items():
        try:
            t0 = time.monotonic()
            results[name] = {"ok": fn(rank, world, out), "seconds": time.monotonic() - t0}
            status = "ok"
        except Exception:
            results[name] = {"error": traceback.format_exc()}
            status = "error"
        torch.save(results, out / f"rank{rank}.pt")
        keys = [f"done/{name}/{r}" for r in range(world)]
        store.set(keys[rank], status)
        try:
            # A rank that raised alone leaves the others waiting in a collective: do not wait long for them.
            store.wait(keys, timedelta(seconds=60 if status == "ok" else 15))
            statuses = [store.get(k).decode() for k in keys]
        except Exception:
            statuses = None
        if statuses is None or len(set(statuses)) > 1:
            print(
                f"rank {rank}: scenario {name!r} ended {statuses or 'unfinished on another rank'}; stopping",
                file=sys.stderr,
                flush=True,
            )
            if status == "error":
                print(results[name]["error"], file=sys.stderr, flush=True)
            os._exit(3)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    _main(sys.argv[1:])


# --------------------------------------------------------------------------- one-process checkpoint tests
def small_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))


def train_step(model, opt, t: int) -> None:
    """One step on a batch drawn from seed t: zero_grad, forward, backward, step."""
    g = torch.Generator().manual_seed(t)
    x, y = torch.randn(6, 5, generator=g), torch.randn(6, 3, generator=g)
    opt.zero_grad()
    F.mse_loss(model(x), y).backward()
    opt.step()


def weights(model) -> list:
    return [p.detach().clone() for p in model.parameters()]
