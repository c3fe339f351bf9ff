"""Multi-process scenarios for test_optim_distributed.py.

The test launches this file once per rank (``python _dist_helpers.py RANK WORLD PORT OUT``);
the ranks join one gloo process group on 127.0.0.1 and run every scenario in turn (one
launch pays torch's import time once). A scenario trains a CLRSGD copy and a
``torch.optim.SGD`` + ``CyclicLR`` copy of one model on rank-dependent data and returns
what the test compares (weights, momentum buffers, the hyperparameters the groups show).

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
from clrfast.torch import CLRSGD
from torch import nn

HERE = Path(__file__).resolve()

STEPS = 20
# One cycle shape for both sides: clr.Cyclic(**CYCLIC) and CyclicLR(opt, **CYCLIC, cycle_momentum=True).
CYCLIC = dict(base_lr=0.01, max_lr=0.1, step_size_up=5, step_size_down=3, base_momentum=0.8, max_momentum=0.9)
WEIGHT_DECAY = 1e-2


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


def _batch(rank: int, t: int):
    g = torch.Generator().manual_seed(1000 * rank + t)
    return torch.randn(8, 6, generator=g), torch.randn(8, 1, generator=g)


def _train_step(model, opt, rank: int, t: int, set_to_none: bool = True) -> None:
    opt.zero_grad(set_to_none=set_to_none)
    x, y = _batch(rank, t)
    F.mse_loss(model(x), y).backward()
    opt.step()


def _torch_ref(params, **kw):
    opt = torch.optim.SGD(params, lr=CYCLIC["base_lr"], momentum=CYCLIC["max_momentum"], **kw)
    return opt, torch.optim.lr_scheduler.CyclicLR(opt, cycle_momentum=True, **CYCLIC)


def _shown(opt) -> tuple:
    g = opt.param_groups[0]
    return (float(g["lr"]), float(g["momentum"]))


def _clone(ts) -> list:
    return [t.detach().clone() for t in ts]


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


def _other_init():
    """The same architecture as ``_model()`` with other weights."""

    m = _model()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
    return m


def _full(ts) -> list:
    return [t.full_tensor() for t in ts]


FSDP2_VARIANTS = {
    # name: (zero_grad(set_to_none=...), optimizer keywords)
    "weight-decay": (True, dict(weight_decay=WEIGHT_DECAY)),
    "nesterov-kept-grads": (False, dict(weight_decay=WEIGHT_DECAY, nesterov=True)),
    "dampening-maximize": (True, dict(dampening=0.25, maximize=True)),
}


def scenario_fsdp2(rank: int, world: int, out: Path) -> dict:
    """FSDP2 (fully_shard, CPU mesh): CLRSGD vs SGD + CyclicLR(cycle_momentum=True)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor

    mesh = init_device_mesh("cpu", (world,))
    base = _model()
    results = {}
    for name, (set_to_none, kw) in FSDP2_VARIANTS.items():
        a, b = _fsdp2(base, mesh), _fsdp2(base, mesh)
        opt = CLRSGD(a.parameters(), clr.Cyclic(**CYCLIC), **kw)
        ref, sch = _torch_ref(b.parameters(), **kw)
        shown = [(_shown(opt), _shown(ref))]
        for t in range(STEPS):
            _train_step(a, opt, rank, t, set_to_none)
            _train_step(b, ref, rank, t, set_to_none)
            sch.step()
            shown.append((_shown(opt), _shown(ref)))
        pa, pb = list(a.parameters()), list(b.parameters())
        results[name] = dict(
            init=_clone(base.parameters()),
            dtensor=[isinstance(p, DTensor) and isinstance(opt.state[p]["momentum_buffer"], DTensor) for p in pa],
            local_numel=[p.to_local().numel() for p in pa],
            clr=_full(pa),
            ref=_full(pb),
            clr_local=_clone(p.to_local() for p in pa),
            ref_local=_clone(p.to_local() for p in pb),
            clr_buf=_full(opt.state[p]["momentum_buffer"] for p in pa),
            ref_buf=_full(ref.state[p]["momentum_buffer"] for p in pb),
            shown=shown,
            step=opt.param_groups[0]["step"],
        )
    try:  # flat=True cannot hold DTensor shards: a clear error, not a wrong model
        CLRSGD(_fsdp2(base, mesh).parameters(), clr.Cyclic(**CYCLIC), flat=True)
        results["flat_error"] = None
    except Exception as e:
        results["flat_error"] = f"{type(e).__name__}: {e}"
    return results


def _dcp_api():
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import state_dict as api

    return dcp, api


def _fsdp2_clrsgd(init, mesh):
    m = _fsdp2(init, mesh)
    return m, CLRSGD(m.parameters(), clr.Cyclic(**CYCLIC), weight_decay=WEIGHT_DECAY, dampening=0.25)


def scenario_fsdp2_dcp_fresh(rank: int, world: int, out: Path) -> dict:
    """FSDP2: get_optimizer_state_dict on a never-stepped CLRSGD (DCP's initialising step), then training."""
    from torch.distributed.device_mesh import init_device_mesh

    _, api = _dcp_api()
    mesh = init_device_mesh("cpu", (world,))
    base = _model()
    a, opt_a = _fsdp2_clrsgd(base, mesh)
    tw, opt_t = _fsdp2_clrsgd(base, mesh)  # a twin that never meets DCP
    before = _full(a.parameters())
    api.get_optimizer_state_dict(a, opt_a)
    fresh = dict(
        weights=_full(a.parameters()),
        before=before,
        step=opt_a.param_groups[0]["step"],
        shown=_shown(opt_a),
        expected_shown=_shown(opt_t),
        grads=[p.grad is None for p in a.parameters()],
    )
    for t in range(STEPS):
        _train_step(a, opt_a, rank, t)
        _train_step(tw, opt_t, rank, t)
    return dict(
        fresh=fresh,
        weights=[_full(m.parameters()) for m in (a, tw)],
        bufs=[_full(o.state[p]["momentum_buffer"] for p in m.parameters()) for m, o in ((a, opt_a), (tw, opt_t))],
        steps=[o.param_groups[0]["step"] for o in (opt_a, opt_t)],
        shown=[_shown(o) for o in (opt_a, opt_t)],
    )


def scenario_fsdp2_dcp_resume(rank: int, world: int, out: Path) -> dict:
    """FSDP2 + torch.distributed.checkpoint on 2 ranks.

    A trains K steps and is saved with dcp.save; B (other weights) loads it through the
    template state dicts of get_model_state_dict / get_optimizer_state_dict; both train N more.
    """
    from torch.distributed.device_mesh import init_device_mesh

    dcp, api = _dcp_api()
    k, n = 6, 8
    mesh = init_device_mesh("cpu", (world,))
    a, opt_a = _fsdp2_clrsgd(_model(), mesh)
    for t in range(k):
        _train_step(a, opt_a, rank, t)
    path = out / "fsdp2-dcp"
    dcp.save(
        {"model": api.get_model_state_dict(a), "optim": api.get_optimizer_state_dict(a, opt_a)}, checkpoint_id=path
    )
    b, opt_b = _fsdp2_clrsgd(_other_init(), mesh)
    state = {"model": api.get_model_state_dict(b), "optim": api.get_optimizer_state_dict(b, opt_b)}
    template = sorted(fqn for fqn, v in state["optim"]["state"].items() if "momentum_buffer" in v)
    dcp.load(state, checkpoint_id=path)
    api.set_model_state_dict(b, state["model"])
    api.set_optimizer_state_dict(b, opt_b, state["optim"])

    def snapshot():
        return dict(
            weights=[_full(m.parameters()) for m in (a, b)],
            bufs=[_full(o.state[p]["momentum_buffer"] for p in m.parameters()) for m, o in ((a, opt_a), (b, opt_b))],
            steps=[o.param_groups[0]["step"] for o in (opt_a, opt_b)],
            shown=[_shown(o) for o in (opt_a, opt_b)],
        )

    loaded = snapshot()
    for t in range(k, k + n):
        _train_step(a, opt_a, rank, t)
        _train_step(b, opt_b, rank, t)
    return dict(
        template=template,
        names=sorted(name for name, _ in a.named_parameters()),
        loaded=loaded,
        end=snapshot(),
        k=k,
        n=n,
    )


DDP_VARIANTS = {
    # name: (flat, gradient_as_bucket_view, zero_grad(set_to_none=...), optimizer keywords)
    "list": (False, False, True, dict(weight_decay=WEIGHT_DECAY)),
    "list-bucket-view": (False, True, False, dict(weight_decay=WEIGHT_DECAY, nesterov=True)),
    "flat": (True, False, False, dict(weight_decay=WEIGHT_DECAY, dampening=0.25)),
    "flat-bucket-view": (True, True, True, dict(weight_decay=WEIGHT_DECAY)),
}


def scenario_ddp(rank: int, world: int, out: Path) -> dict:
    """DDP: CLRSGD (list and flat, with and without gradient bucket views) vs SGD + CyclicLR."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    base = _model()
    results = {}
    for name, (flat, bucket_view, set_to_none, kw) in DDP_VARIANTS.items():
        a = DDP(copy.deepcopy(base), gradient_as_bucket_view=bucket_view)
        b = DDP(copy.deepcopy(base), gradient_as_bucket_view=bucket_view)
        opt = CLRSGD(a.parameters(), clr.Cyclic(**CYCLIC), flat=flat, **kw)
        ref, sch = _torch_ref(b.parameters(), **kw)
        shown = [(_shown(opt), _shown(ref))]
        for t in range(STEPS):
            _train_step(a, opt, rank, t, set_to_none)
            _train_step(b, ref, rank, t, set_to_none)
            sch.step()
            shown.append((_shown(opt), _shown(ref)))
        pa, pb = list(a.parameters()), list(b.parameters())
        results[name] = dict(
            init=_clone(base.parameters()),
            clr=_clone(pa),
            ref=_clone(pb),
            clr_buf=_clone(opt.state[p]["momentum_buffer"] for p in pa),
            ref_buf=_clone(ref.state[p]["momentum_buffer"] for p in pb),
            shown=shown,
            step=opt.param_groups[0]["step"],
        )
    return results


ZERO_VARIANTS = {
    # name: (flat, parameters_as_bucket_view)
    "list": (False, False),
    "list-bucket-view": (False, True),
    "flat": (True, False),
}


def scenario_zero(rank: int, world: int, out: Path) -> dict:
    """ZeroRedundancyOptimizer(optimizer_class=CLRSGD) over DDP vs DDP + SGD + CyclicLR."""
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    base = _model()
    results = {}
    for name, (flat, bucket_view) in ZERO_VARIANTS.items():
        a = DDP(copy.deepcopy(base))
        b = DDP(copy.deepcopy(base))
        opt = ZeroRedundancyOptimizer(
            a.parameters(),
            optimizer_class=CLRSGD,
            parameters_as_bucket_view=bucket_view,
            schedule=clr.Cyclic(**CYCLIC),
            weight_decay=WEIGHT_DECAY,
            dampening=0.25,
            flat=flat,
        )
        ref, sch = _torch_ref(b.parameters(), weight_decay=WEIGHT_DECAY, dampening=0.25)
        shown = [(_shown(opt), _shown(ref))]
        local_shown = [_shown(opt.optim)]
        for t in range(STEPS):
            _train_step(a, opt, rank, t)
            _train_step(b, ref, rank, t)
            sch.step()
            shown.append((_shown(opt), _shown(ref)))
            local_shown.append(_shown(opt.optim))
        results[name] = dict(
            init=_clone(base.parameters()),
            clr=_clone(a.parameters()),
            ref=_clone(b.parameters()),
            shown=shown,
            local_shown=local_shown,
            steps=(opt.param_groups[0]["step"], opt.optim.param_groups[0]["step"]),
            local_numel=sum(p.numel() for g in opt.optim.param_groups for p in g["params"]),
        )
    return results


def scenario_zero_resume(rank: int, world: int, out: Path) -> dict:
    """ZeRO + CLRSGD: consolidate_state_dict, torch.save, torch.load, load into a fresh ZeRO, continue."""
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    def build(model):
        m = DDP(model)
        return m, ZeroRedundancyOptimizer(
            m.parameters(),
            optimizer_class=CLRSGD,
            schedule=clr.Cyclic(**CYCLIC),
            weight_decay=WEIGHT_DECAY,
            dampening=0.25,
        )

    k, n = 7, 9
    a, opt_a = build(_model())
    for t in range(k):
        _train_step(a, opt_a, rank, t)
    opt_a.consolidate_state_dict(to=0)
    path = out / "zero-checkpoint.pt"
    if rank == 0:
        torch.save({"model": a.module.state_dict(), "optim": opt_a.state_dict()}, path)
    dist.barrier()
    try:
        torch.load(path)  # torch's default, weights_only=True
        weights_only_error = None
    except Exception as e:
        weights_only_error = f"{type(e).__name__}: {e}"[:1500]
    ckpt = torch.load(path, weights_only=False)
    b, opt_b = build(_other_init())
    b.module.load_state_dict(ckpt["model"])
    opt_b.load_state_dict(ckpt["optim"])

    def bufs(o):
        return _clone(o.optim.state[p]["momentum_buffer"] for g in o.optim.param_groups for p in g["params"])

    loaded = dict(bufs=(bufs(opt_a), bufs(opt_b)), shown=(_shown(opt_a), _shown(opt_b)))
    shown = []
    for t in range(k, k + n):
        _train_step(a, opt_a, rank, t)
        _train_step(b, opt_b, rank, t)
        shown.append((_shown(opt_a), _shown(opt_b)))
    return dict(
        a=_clone(a.parameters()),
        b=_clone(b.parameters()),
        shown=shown,
        loaded=loaded,
        steps=[(o.param_groups[0]["step"], o.optim.param_groups[0]["step"]) for o in (opt_a, opt_b)],
        bufs=(bufs(opt_a), bufs(opt_b)),
        weights_only_error=weights_only_error,
    )


SCENARIOS = {
    "fsdp2": scenario_fsdp2,
    "fsdp2_dcp_fresh": scenario_fsdp2_dcp_fresh,
    "fsdp2_dcp_resume": scenario_fsdp2_dcp_resume,
    "ddp": scenario_ddp,
    "zero": scenario_zero,
    "zero_resume": scenario_zero_resume,
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
