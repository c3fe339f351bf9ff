"""The CUDA step of every rule on a GPU (``_core.rule_step_cuda``) against the CPU kernel with the IEEE
root, bit for bit: the same tables as tests/test_cuda_emulated.py, with device addresses, run on the
hardware. Skipped without a GPU and a CUDA build; tests/test_cuda_emulated.py runs the same kernel code
on the CPU in every CI run."""

from __future__ import annotations

import clrfast as clr
import numpy as np
import pytest
import torch
from clrfast import _core

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and getattr(_core, "cuda_built", False)), reason="needs a GPU and a CUDA build"
)

from optim_registry import device_twin, ieee_roots, params  # noqa: E402
from rule_tables import DTYPES, OPTIONS, bits, make_rows, scalars, table  # noqa: E402


@pytest.fixture(autouse=True)
def _ieee_roots(monkeypatch):
    ieee_roots(monkeypatch)  # the CPU twins root as the CUDA kernels do


LENGTHS = [0, 1, 4095, 4096, 4097, 9000, 300, 70_001]


class DeviceStep:
    """One rule's CUDA step over device tensors: the table, chunks, scalars and workspace on the device."""

    def __init__(self, name, rows, sc, fresh=0, schedule=None, clock=0, momentum=0.0):
        self.name = name
        tab = table(name, rows, fresh)
        n = tab[:, _core.rules[name]["cols"]["n"]].copy()
        self.rows = torch.from_numpy(tab).cuda()
        self.nrows = len(tab)
        self.chunks = torch.from_numpy(_core.cuda_chunk_table(n)).cuda()
        self.scalars = torch.tensor(sc, dtype=torch.float64, device="cuda")
        self.ws = torch.empty(_core.cuda_workspace_bytes(name, len(tab)), dtype=torch.uint8, device="cuda")
        self.sched = None
        if schedule is not None:
            raw = bytearray(_core.schedule_bytes(schedule._core))
            self.sched = torch.frombuffer(raw, dtype=torch.uint8).cuda()
        self.clock = torch.tensor([clock], dtype=torch.int64, device="cuda")
        # the values the group shows before the first step, which that step applies
        empty = np.zeros((0, _core.rules[name]["width"]), np.int64)
        shown = (0.0, 0.0)
        if schedule is not None:
            shown = _core.__dict__[name + "_step"](
                empty, sc, schedule=schedule._core, next_step=clock, momentum=momentum
            )
        self.hyper = torch.tensor(shown, dtype=torch.float64, device="cuda")

    def __call__(self, **kw):
        _core.rule_step_cuda(
            self.name,
            self.rows.data_ptr(),
            self.nrows,
            self.chunks.data_ptr(),
            len(self.chunks),
            self.scalars.data_ptr(),
            schedule=0 if self.sched is None else self.sched.data_ptr(),
            clock=self.clock.data_ptr(),
            hyper_out=self.hyper.data_ptr() if self.sched is not None else 0,
            workspace=self.ws.data_ptr(),
            stream=torch.cuda.current_stream().cuda_stream,
            **kw,
        )


def same(cpu_rows, dev_rows) -> bool:
    """Bit for bit, except that a NaN equals any NaN: x86 makes its NaNs negative, the GPU positive.

    (Rows of random state give NaNs: RMSprop's centered variance is negative where grad_avg**2
    exceeds square_avg, in torch as here.)
    """
    for x, y in zip((t for r in cpu_rows for t in r), (t for r in dev_rows for t in r)):
        y = y.cpu()
        if x.is_floating_point():
            nx, ny = torch.isnan(x), torch.isnan(y)
            if not torch.equal(nx, ny):
                return False
            x, y = x.masked_fill(nx, 0), y.masked_fill(ny, 0)
        if bits([[x]]) != bits([[y]]):
            return False
    return True


def on_device(rows):
    return [[x.cuda() for x in row] for row in rows]


def cpu_step(name, rows, sc, fresh=0, **kw):
    _core.__dict__[name + "_step"](table(name, rows, fresh), sc, **kw)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_equals_cpu_kernel(name, dtype):
    for i, opts in enumerate(OPTIONS[name]):
        for fresh in (0, 1) if _core.rules[name]["fresh"] else (0,):
            cpu = make_rows(name, dtype, LENGTHS, seed=i)
            dev = on_device(cpu)
            sc = scalars(name, opts)
            step = DeviceStep(name, dev, sc, fresh)
            for _ in range(3):  # fresh rows are initialised by the first step only
                cpu_step(name, cpu, sc, fresh, inv_scale=0.5, store_grad=True)
                step(inv_scale=0.5, store_grad=True)
                fresh = 0
            torch.cuda.synchronize()
            assert same(cpu, dev), (name, dtype, opts)
            assert (step.rows[:, _core.rules[name]["cols"]["fresh"]] == 0).all()


def test_found_inf_skips_everything_and_grad_scale_unscales():
    name = "adam"
    sc = scalars(name, OPTIONS[name][0])
    cpu = make_rows(name, torch.float32, [5000, 3])
    dev = on_device(cpu)
    before = bits(dev)
    step = DeviceStep(name, dev, sc)
    inf = torch.ones(1, device="cuda")
    scale = torch.full((1,), 1024.0, device="cuda")
    step(grad_scale=scale.data_ptr(), found_inf=inf.data_ptr(), store_grad=True)
    torch.cuda.synchronize()
    assert bits(dev) == before
    inf.zero_()
    step(grad_scale=scale.data_ptr(), found_inf=inf.data_ptr(), store_grad=True)
    cpu_step(name, cpu, sc, inv_scale=1 / 1024.0, store_grad=True)
    torch.cuda.synchronize()
    assert same(cpu, dev)


def test_schedule_clock_and_next_values_on_the_device():
    name = "sgd"
    sched = clr.Cyclic(0.01, 0.1, step_size_up=4, base_momentum=0.8, max_momentum=0.9)
    sc = scalars(name, OPTIONS[name][0])
    cpu = make_rows(name, torch.float32, [5000, 17])
    dev = on_device(cpu)
    step = DeviceStep(name, dev, sc, schedule=sched, clock=3, momentum=sc[1])
    empty = np.zeros((0, _core.rules[name]["width"]), np.int64)
    for t in range(3, 12):
        step(lr_index=0, momentum_index=1)
        lr, mom = _core.sgd_step(empty, sc, schedule=sched._core, next_step=t, momentum=sc[1])
        cpu_step(name, cpu, [lr, mom, *sc[2:]])
    torch.cuda.synchronize()
    assert int(step.clock) == 12
    assert tuple(step.hyper.cpu().tolist()) == tuple(
        _core.sgd_step(empty, sc, schedule=sched._core, next_step=12, momentum=sc[1])
    )
    assert same(cpu, dev)


def test_a_captured_step_replays_as_the_cpu_kernel_steps():
    # Graph capture: nothing in the step reads a host value that changes between steps
    name = "adam"
    sched = clr.OneCycle(1e-2, total_steps=50, cycle_momentum=True)
    sc = scalars(name, OPTIONS[name][0])
    cpu = make_rows(name, torch.float32, [100_000, 33, 4096])
    dev = on_device(cpu)
    kw = dict(lr_index=0, momentum_index=_core.rules[name]["scalars"].index("beta1"))
    step = DeviceStep(name, dev, sc, schedule=sched, clock=0, momentum=sc[kw["momentum_index"]])
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        step(**kw)  # a warm-up step outside the capture
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step(**kw)
    for _ in range(9):
        graph.replay()
    torch.cuda.synchronize()
    empty = np.zeros((0, _core.rules[name]["width"]), np.int64)
    for t in range(10):
        lr, b1 = _core.adam_step(empty, sc, schedule=sched._core, next_step=t, momentum=sc[kw["momentum_index"]])
        h = list(sc)
        h[0], h[kw["momentum_index"]] = lr, b1
        cpu_step(name, cpu, h)
    assert int(step.clock) == 10
    assert same(cpu, dev)


def test_more_than_65535_segments_and_one_large_beside_many_small():
    name = "sgd"
    sc = scalars(name, OPTIONS[name][0])
    lengths = [1, 2, 0] * 22_000 + [3_000_000]
    cpu = make_rows(name, torch.float32, lengths)
    dev = on_device(cpu)
    DeviceStep(name, dev, sc)()
    cpu_step(name, cpu, sc)
    torch.cuda.synchronize()
    assert same(cpu, dev)


# ---------------------------------------------------------------------------- the front end
SHAPES = [(5000,), (3, 7), (4097,), (1,), (64, 65), (300_000,)]


def registry_twins(rule, over, device_b="cpu"):
    g = torch.Generator().manual_seed(0)
    a = [torch.randn(s, generator=g).cuda().requires_grad_() for s in SHAPES]
    b = [p.detach().to(device_b).requires_grad_() for p in a]
    over = {**over, **device_twin(rule)}
    sched = clr.Cyclic(1e-3, 5e-3, step_size_up=3, base_momentum=0.8, max_momentum=0.9)
    return a, b, rule.make(a, sched, base=over), rule.make(b, sched, base=over)


@pytest.mark.parametrize("rule", params())
def test_every_rule_on_the_gpu_equals_its_cpu_step(rule):
    for over in rule.options:
        a, b, oa, ob = registry_twins(rule, over)
        for t in range(6):
            g = torch.Generator().manual_seed(t)
            for p, q in zip(a, b):
                q.grad = torch.randn(q.shape, generator=g)
                p.grad = q.grad.cuda()
            oa.step()
            ob.step()
        for p, q in zip(a, b):
            assert torch.equal(p.detach().cpu(), q.detach()), (rule.name, over)
            for k, v in ob.state[q].items():
                assert torch.equal(oa.state[p][k].cpu(), v), (rule.name, over, k)
        assert oa.state_dict()["param_groups"][0]["step"] == 6


@pytest.mark.parametrize("rule", params())
def test_every_rule_under_a_real_grad_scaler(rule):
    # torch.amp.GradScaler hands fused optimizers grad_scale and found_inf on the device; an inf
    # gradient makes the device skip the step, clocks included
    a, b, oa, ob = registry_twins(rule, rule.options[0])
    sa, sb = torch.amp.GradScaler("cuda", init_scale=256.0), torch.amp.GradScaler("cpu", init_scale=256.0)
    for t in range(6):
        g = torch.Generator().manual_seed(t)
        for p, q in zip(a, b):
            x = torch.randn(q.shape, generator=g)
            if t == 3:
                x[0] = float("inf")
            q.grad = x * sb.get_scale()
            p.grad = q.grad.cuda()
        sa.scale(torch.ones((), device="cuda"))  # the scaler's scale exists once it has scaled something
        sb.scale(torch.ones(()))
        sa.step(oa)
        sb.step(ob)
        sa.update()
        sb.update()
    for p, q in zip(a, b):
        assert torch.equal(p.detach().cpu(), q.detach()), rule.name
    assert oa.state_dict()["param_groups"][0]["step"] == ob.state_dict()["param_groups"][0]["step"] == 5


@pytest.mark.parametrize("rule", params())
def test_every_rule_against_its_reference_on_the_gpu(rule):
    # torch's CUDA kernels round as they like (fma contraction, their own sqrt): reported as the
    # largest difference in ulps, bounded
    a, b, oa, _ = registry_twins(rule, rule.options[0], device_b="cuda")
    ref = rule.make_reference(b, 1e-3)
    sched = torch.optim.lr_scheduler.CyclicLR(
        ref, 1e-3, 5e-3, step_size_up=3, base_momentum=0.8, max_momentum=0.9, cycle_momentum=True
    )
    for t in range(6):
        g = torch.Generator().manual_seed(t)
        for p, q in zip(a, b):
            q.grad = torch.randn(q.shape, generator=g).cuda()
            p.grad = q.grad.clone()
        oa.step()
        ref.step()
        sched.step()
    worst = 0
    for p, q in zip(a, b):
        x, y = p.detach().view(torch.int32).long(), q.detach().view(torch.int32).long()
        worst = max(worst, int((x - y).abs().max()))
    print(f"{rule.name}: largest difference from {type(ref).__name__} on CUDA: {worst} ulp")
    assert worst <= 64, worst
