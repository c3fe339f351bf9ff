"""The CUDA step of every rule executed on the CPU (``_core.rule_step_emulated``): the device
kernels' code over their launch grid, block by block and thread by thread, every index checked,
against the CPU kernel with the IEEE root, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from clrfast import _core

pytestmark = pytest.mark.cuda_emulated

DTYPES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.float16: 3}

# Option sets per rule, by scalar name: each exercises other variants.
OPTIONS = {
    "sgd": [
        dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.01, nesterov=1, maximize=0),
        dict(lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=0, maximize=1),
        dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.0, nesterov=0, maximize=0),
    ],
    "adam": [
        dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, decoupled=1, amsgrad=1, maximize=0),
        dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, decoupled=0, amsgrad=0, maximize=1),
        dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled=0, amsgrad=0, maximize=0),
    ],
    "rmsprop": [
        dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.01, momentum=0.9, centered=1, maximize=0),
        dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=0, maximize=1),
    ],
    "lion": [dict(lr=1e-4, beta1=0.9, beta2=0.99, weight_decay=0.1), dict(lr=1e-4, beta1=0.9, beta2=0.99)],
    "schedulefree_adamw": [
        dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01, ckp1=0.5, bias_correction2=0.9),
        dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, ckp1=0.5, bias_correction2=0.9),
    ],
    "schedulefree_sgd": [dict(lr=0.1, momentum=0.9, weight_decay=0.01, ckp1=0.5), dict(lr=0.1, momentum=0.9, ckp1=0.5)],
}


def scalars(name: str, opts: dict) -> list[float]:
    out = []
    for s in _core.rules[name]["scalars"]:
        out.append(float(opts.get(s, 1.0 if s == "lr_dtype" else 0.0)))
    return out


def make_rows(name: str, dtype: torch.dtype, lengths: list[int], seed: int = 0):
    """Tensors and the segment table of rows of these lengths (one parameter and counter each)."""
    lay = _core.rules[name]
    gen = torch.Generator().manual_seed(seed)
    tensors = []
    for n in lengths:
        p = torch.randn(n, generator=gen, dtype=torch.float64).to(dtype)
        g = torch.randn(n, generator=gen, dtype=torch.float64).to(dtype)
        slots = [torch.rand(n, generator=gen, dtype=torch.float64).to(dtype) for _ in lay["slots"]]
        tensors.append([p, g, *slots, torch.zeros((), dtype=torch.float32)])
    return tensors


def table(name: str, tensors, fresh: int = 0) -> np.ndarray:
    lay = _core.rules[name]
    cols = lay["cols"]
    t = np.zeros((len(tensors), lay["width"]), dtype=np.int64)
    for i, ts in enumerate(tensors):
        p, g, *slots, step = ts
        t[i, cols["p"]] = p.data_ptr()
        t[i, cols["g"]] = g.data_ptr()
        for k, s in enumerate(lay["slots"]):
            t[i, cols[s]] = slots[k].data_ptr()
        t[i, cols["n"]] = p.numel()
        t[i, cols["dtype"]] = DTYPES[p.dtype]
        t[i, cols["step"]] = step.data_ptr()
        t[i, cols["fresh"]] = fresh
    return t


def bits(ts) -> list[bytes]:
    return [x.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes() for row in ts for x in row]


def both(name, sc, lengths, dtype, fresh=0, inv_scale=1.0, store=False, seed=0, **emu):
    cpu = make_rows(name, dtype, lengths)
    dev = [[x.clone() for x in row] for row in cpu]
    _core.__dict__[name + "_step"](table(name, cpu, fresh), sc, inv_scale=inv_scale, store_grad=store)
    tab = table(name, dev, fresh)
    chunks = _core.cuda_chunk_table(tab[:, _core.rules[name]["cols"]["n"]].copy())
    st = _core.rule_step_emulated(name, tab, sc, chunks, inv_scale=inv_scale, store_grad=store, seed=seed, **emu)
    return cpu, dev, st, tab


LENGTHS = [0, 1, 4095, 4096, 4097, 9000, 300]


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_equals_cpu_kernel(name, dtype):
    assert set(OPTIONS) == set(_core.rules)
    for i, opts in enumerate(OPTIONS[name]):
        for fresh in (0, 1) if _core.rules[name]["fresh"] else (0,):
            cpu, dev, st, tab = both(name, scalars(name, opts), LENGTHS, dtype, fresh, 0.5, True, seed=i + 1)
            assert bits(cpu) == bits(dev), (opts, fresh)
            assert not st["skipped"]
            assert (tab[:, _core.rules[name]["cols"]["fresh"]] == 0).all()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_order_and_grid_stride(seed):
    sc = scalars("adam", OPTIONS["adam"][0])
    cpu, dev, st, _ = both("adam", sc, LENGTHS, torch.float32, seed=seed, max_blocks=3)
    assert st["blocks"] == 3
    assert bits(cpu) == bits(dev)


def test_found_inf_skips_everything():
    name = "adam"
    sc = scalars(name, OPTIONS[name][0])
    ts = make_rows(name, torch.float32, [5000, 3])
    before = bits(ts)
    tab = table(name, ts)
    clock = np.array([7], dtype=np.int64)
    inf = np.array([1.0], dtype=np.float32)
    scale = np.array([1024.0], dtype=np.float32)
    sched = _core.Schedule.constant(0.1) if hasattr(_core.Schedule, "constant") else None
    kw = dict(schedule=sched, clock=clock.ctypes.data, lr_index=0) if sched is not None else {}
    chunks = _core.cuda_chunk_table(tab[:, _core.rules[name]["cols"]["n"]].copy())
    st = _core.rule_step_emulated(
        name, tab, sc, chunks, grad_scale=scale.ctypes.data, found_inf=inf.ctypes.data, store_grad=True, **kw
    )
    assert st["skipped"] and bits(ts) == before and clock[0] == 7
    inf[0] = 0.0
    cpu = [[x.clone() for x in row] for row in ts]
    _core.adam_step(table(name, cpu), sc, inv_scale=1 / 1024.0, store_grad=True)
    st = _core.rule_step_emulated(
        name, tab, sc, chunks, grad_scale=scale.ctypes.data, found_inf=inf.ctypes.data, store_grad=True
    )
    assert not st["skipped"] and bits(ts) == bits(cpu)
    assert [float(r[-1]) for r in ts] == [1.0, 1.0]


def test_more_than_65535_segments():
    name = "sgd"
    sc = scalars(name, OPTIONS[name][0])
    cpu, dev, st, _ = both(name, sc, [1, 2, 0] * 22_000, torch.float32, seed=5)
    assert st["blocks"] == 44_000
    assert bits(cpu) == bits(dev)


def test_segment_over_2_31_elements_dry():
    name = "sgd"
    sc = scalars(name, OPTIONS[name][0])
    n = 2**31 + 4097 + 5
    cols = _core.rules[name]["cols"]
    tab = np.zeros((2, _core.rules[name]["width"]), dtype=np.int64)
    for i, m in enumerate([3, n]):
        tab[i, [cols["p"], cols["g"], cols["momentum_buffer"]]] = 1 << 40  # never dereferenced
        tab[i, cols["n"]] = m
    chunks = _core.cuda_chunk_table(tab[:, cols["n"]].copy())
    chunk = _core.cuda_geometry["chunk"]
    assert len(chunks) == 1 + -(-n // chunk)
    last = len(chunks) - 1
    edge = 1 + 2**31 // chunk  # the chunk that starts at element 2^31
    st = _core.rule_step_emulated(name, tab, sc, chunks, dry=True, only_blocks=[0, edge - 1, edge, last])
    # 4 accesses per element (p, g, the buffer's load and store): row 0, two full chunks, the tail
    assert st["accesses"] == 4 * (3 + 2 * chunk + (n - (last - 1) * chunk))


def test_bounds_are_checked():
    name = "sgd"
    sc = scalars(name, OPTIONS[name][0])
    ts = make_rows(name, torch.float32, [10])
    tab = table(name, ts)
    bad = np.array([[0, 1]], dtype=np.int32)  # a chunk past the row's end
    with pytest.raises(IndexError):
        _core.rule_step_emulated(name, tab, sc, bad)


def test_schedule_clock_and_next_values():
    import clrfast as clr

    name = "sgd"
    sched = clr.Cyclic(0.01, 0.1, step_size_up=4, base_momentum=0.8, max_momentum=0.9)
    sc = scalars(name, OPTIONS[name][0])
    clock = np.array([3], dtype=np.int64)
    hyper = np.zeros(2, dtype=np.float64)
    ts = make_rows(name, torch.float32, [5000])
    tab = table(name, ts)
    chunks = _core.cuda_chunk_table(tab[:, _core.rules[name]["cols"]["n"]].copy())
    _core.rule_step_emulated(
        name,
        tab,
        sc,
        chunks,
        schedule=sched._core,
        clock=clock.ctypes.data,
        lr_index=0,
        momentum_index=1,
        hyper_out=hyper.ctypes.data,
    )
    empty = np.zeros((0, _core.rules[name]["width"]), np.int64)
    expect = _core.sgd_step(empty, sc, schedule=sched._core, next_step=4, momentum=sc[1])
    assert clock[0] == 4 and tuple(hyper) == tuple(expect)
    # the step itself used the schedule's values at t = 3
    at3 = _core.sgd_step(empty, sc, schedule=sched._core, next_step=3, momentum=sc[1])
    ref = [[x.clone() for x in row] for row in make_rows(name, torch.float32, [5000])]
    _core.sgd_step(table(name, ref), [at3[0], at3[1], *sc[2:]])
    assert bits(ref) == bits(ts)
