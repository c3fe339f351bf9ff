"""Multi-process scenarios for test_optim_distributed.py.

The test launches this file once per rank (``python _dist_helpers.py SCENARIO RANK WORLD PORT OUT``).
Each rank joins a gloo process group on 127.0.0.1, trains a CLRSGD copy and a
``torch.optim.SGD`` + ``CyclicLR`` copy of one model on rank-dependent data, and saves
what the test compares (weights, momentum buffers, the hyperparameters the groups show)
to ``OUT/rank{RANK}.pt``. A failing rank prints its traceback and exits non-zero; the
launcher then stops the other ranks, so nothing waits for a collective that never comes.
"""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

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


def launch(scenario: str, out: Path, world: int = 2, timeout: float = 150.0) -> list[dict]:
    """Runs ``scenario`` on ``world`` gloo ranks; returns each rank's saved results.

    Raises AssertionError carrying every failed rank's output (its traceback) when a rank
    fails or the run exceeds ``timeout`` seconds; the remaining ranks are killed first.
    """
    import torch

    for attempt in range(3):
        port = free_port()
        outdir = out / f"{scenario}-{attempt}"
        outdir.mkdir(parents=True, exist_ok=True)
        procs, logs = [], []
        for rank in range(world):
            log = open(outdir / f"rank{rank}.log", "w+b")  # noqa: SIM115 - closed below
            logs.append(log)
            procs.append(subprocess.Popen(
                [sys.executable, str(HERE), scenario, str(rank), str(world), str(port), str(outdir)],
                stdout=log, stderr=subprocess.STDOUT, env=_child_env(), cwd=str(HERE.parent),
            ))
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
        if failed is None:
            return [torch.load(outdir / f"rank{r}.pt") for r in range(world)]
        if attempt < 2 and any("ddress already in use" in o for o in outputs):
            continue  # another process took the port between free_port() and the bind
        report = "\n".join(f"----- rank {r} (exit {p.returncode}) -----\n{o[-6000:]}"
                           for r, (p, o) in enumerate(zip(procs, outputs)))
        raise AssertionError(f"distributed scenario {scenario!r}: {failed}\n{report}")
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- shared pieces (ranks)
def _model():
    import torch
    from torch import nn

    torch.manual_seed(0)
    # Shapes chosen so 2 ranks get even shards (10 rows), uneven shards (3 rows: 2 + 1)
    # and an empty one (1 row: 1 + 0) under FSDP2's row sharding.
    return nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3), nn.Tanh(), nn.Linear(3, 1))


def _batch(rank: int, t: int):
    import torch

    g = torch.Generator().manual_seed(1000 * rank + t)
    return torch.randn(8, 6, generator=g), torch.randn(8, 1, generator=g)


def _train_step(model, opt, rank: int, t: int, set_to_none: bool = True) -> None:
    import torch.nn.functional as F

    opt.zero_grad(set_to_none=set_to_none)
    x, y = _batch(rank, t)
    F.mse_loss(model(x), y).backward()
    opt.step()


def _torch_ref(params, **kw):
    import torch

    opt = torch.optim.SGD(params, lr=CYCLIC["base_lr"], momentum=CYCLIC["max_momentum"], **kw)
    return opt, torch.optim.lr_scheduler.CyclicLR(opt, cycle_momentum=True, **CYCLIC)


def _shown(opt) -> tuple:
    g = opt.param_groups[0]
    return (float(g["lr"]), float(g["momentum"]))


def _clone(ts) -> list:
    return [t.detach().clone() for t in ts]


# --------------------------------------------------------------------------- scenarios (ranks)
def scenario_fsdp2(rank: int, world: int) -> dict:
    """FSDP2 (fully_shard, CPU mesh): CLRSGD vs SGD + CyclicLR(cycle_momentum=True)."""
    import torch
    from torch import nn
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    import clrfast as clr
    from clrfast.torch import CLRSGD

    mesh = init_device_mesh("cpu", (world,))
    base = _model()
    init = _clone(base.parameters())
    models = []
    for _ in range(2):
        m = copy.deepcopy(base)
        for layer in m:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(m, mesh=mesh)
        models.append(m)
    a, b = models
    opt = CLRSGD(a.parameters(), clr.Cyclic(**CYCLIC), weight_decay=WEIGHT_DECAY)
    ref, sch = _torch_ref(b.parameters(), weight_decay=WEIGHT_DECAY)
    shown = [(_shown(opt), _shown(ref))]
    for t in range(STEPS):
        _train_step(a, opt, rank, t)
        _train_step(b, ref, rank, t)
        sch.step()
        shown.append((_shown(opt), _shown(ref)))
    pa, pb = list(a.parameters()), list(b.parameters())
    return dict(
        init=init,
        dtensor=[isinstance(p, DTensor) and isinstance(opt.state[p]["momentum_buffer"], DTensor) for p in pa],
        local_numel=[p.to_local().numel() for p in pa],
        clr=[p.full_tensor() for p in pa],
        ref=[p.full_tensor() for p in pb],
        clr_local=_clone(p.to_local() for p in pa),
        ref_local=_clone(p.to_local() for p in pb),
        clr_buf=[opt.state[p]["momentum_buffer"].full_tensor() for p in pa],
        ref_buf=[ref.state[p]["momentum_buffer"].full_tensor() for p in pb],
        shown=shown,
        step=opt.param_groups[0]["step"],
    )


DDP_VARIANTS = {
    # name: (flat, gradient_as_bucket_view, set_to_none, optimizer keywords)
    "list": (False, False, True, dict(weight_decay=WEIGHT_DECAY)),
    "list-bucket-view": (False, True, False, dict(weight_decay=WEIGHT_DECAY, nesterov=True)),
    "flat": (True, False, False, dict(weight_decay=WEIGHT_DECAY, dampening=0.25)),
    "flat-bucket-view": (True, True, True, dict(weight_decay=WEIGHT_DECAY)),
}


def scenario_ddp(rank: int, world: int) -> dict:
    """DDP: CLRSGD (list and flat, with and without gradient bucket views) vs SGD + CyclicLR."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    import clrfast as clr
    from clrfast.torch import CLRSGD

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
            init=_clone(base.parameters()), clr=_clone(pa), ref=_clone(pb),
            clr_buf=_clone(opt.state[p]["momentum_buffer"] for p in pa),
            ref_buf=_clone(ref.state[p]["momentum_buffer"] for p in pb),
            shown=shown, step=opt.param_groups[0]["step"],
        )
    return results


ZERO_VARIANTS = {
    # name: (flat, parameters_as_bucket_view)
    "list": (False, False),
    "list-bucket-view": (False, True),
    "flat": (True, False),
}


def scenario_zero(rank: int, world: int) -> dict:
    """ZeroRedundancyOptimizer(optimizer_class=CLRSGD) over DDP vs DDP + SGD + CyclicLR."""
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    import clrfast as clr
    from clrfast.torch import CLRSGD

    base = _model()
    results = {}
    for name, (flat, bucket_view) in ZERO_VARIANTS.items():
        a = DDP(copy.deepcopy(base))
        b = DDP(copy.deepcopy(base))
        opt = ZeroRedundancyOptimizer(
            a.parameters(), optimizer_class=CLRSGD, parameters_as_bucket_view=bucket_view,
            schedule=clr.Cyclic(**CYCLIC), weight_decay=WEIGHT_DECAY, dampening=0.25, flat=flat,
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
            init=_clone(base.parameters()), clr=_clone(a.parameters()), ref=_clone(b.parameters()),
            shown=shown, local_shown=local_shown, step=opt.param_groups[0]["step"],
            local_step=opt.optim.param_groups[0]["step"],
            local_numel=sum(p.numel() for g in opt.optim.param_groups for p in g["params"]),
        )
    return results


def scenario_zero_resume(rank: int, world: int, out: Path) -> dict:
    """ZeRO + CLRSGD: consolidate_state_dict, torch.save/torch.load, load into a fresh ZeRO, continue."""
    import torch
    import torch.distributed as dist
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    import clrfast as clr
    from clrfast.torch import CLRSGD

    def build(model):
        return ZeroRedundancyOptimizer(
            model.parameters(), optimizer_class=CLRSGD, schedule=clr.Cyclic(**CYCLIC),
            weight_decay=WEIGHT_DECAY, dampening=0.25,
        )

    k, n = 7, 9
    a = DDP(_model())
    opt_a = build(a)
    for t in range(k):
        _train_step(a, opt_a, rank, t)
    opt_a.consolidate_state_dict(to=0)
    path = out / "zero-optim.pt"
    if rank == 0:
        torch.save({"model": a.module.state_dict(), "optim": opt_a.state_dict()}, path)
    dist.barrier()
    ckpt = torch.load(path)  # torch's default: weights_only=True
    fresh = _model()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in fresh.parameters():  # same architecture, other weights
            p.normal_()
    b = DDP(fresh)
    opt_b = build(b)
    b.module.load_state_dict(ckpt["model"])
    opt_b.load_state_dict(ckpt["optim"])
    shown = []
    for t in range(k, k + n):
        _train_step(a, opt_a, rank, t)
        _train_step(b, opt_b, rank, t)
        shown.append((_shown(opt_a), _shown(opt_b)))
    return dict(
        a=_clone(a.parameters()), b=_clone(b.parameters()), shown=shown,
        steps=(opt_a.param_groups[0]["step"], opt_b.param_groups[0]["step"],
               opt_a.optim.param_groups[0]["step"], opt_b.optim.param_groups[0]["step"]),
        bufs_a=_clone(opt_a.optim.state[p]["momentum_buffer"] for g in opt_a.optim.param_groups for p in g["params"]),
        bufs_b=_clone(opt_b.optim.state[p]["momentum_buffer"] for g in opt_b.optim.param_groups for p in g["params"]),
    )


SCENARIOS = {"fsdp2": scenario_fsdp2, "ddp": scenario_ddp, "zero": scenario_zero, "zero_resume": scenario_zero_resume}


def _main(argv) -> None:
    scenario, rank, world, port, out = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), Path(argv[4])
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=timedelta(seconds=60)
    )
    try:
        fn = SCENARIOS[scenario]
        result = fn(rank, world, out) if scenario == "zero_resume" else fn(rank, world)
        torch.save(result, out / f"rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    _main(sys.argv[1:])
