"""The CUDA step of every rule executed on the CPU (``_core.rule_step_emulated``): the device
kernels' code over their launch grid, block by block and thread by thread, every index checked,
against the CPU kernel with the IEEE root, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from clrfast import _core

pytestmark = pytest.mark.cuda_emulated

from rule_tables import DTYPES, OPTIONS, bits, make_rows, scalars, table  # noqa: E402


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
    # 5 accesses per element (the loads and stores of p and of the buffer, the load of g): row 0, two
    # full chunks, the tail
    assert st["accesses"] == 5 * (3 + 2 * chunk + (n - (last - 1) * chunk))


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
    empty = np.zeros((0, _core.rules[name]["width"]), np.int64)
    # the values the group shows before step 3, which the step applies
    at3 = _core.sgd_step(empty, sc, schedule=sched._core, next_step=3, momentum=sc[1])
    hyper = np.array(at3, dtype=np.float64)
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
    expect = _core.sgd_step(empty, sc, schedule=sched._core, next_step=4, momentum=sc[1])
    assert clock[0] == 4 and tuple(hyper) == tuple(expect)
    ref = [[x.clone() for x in row] for row in make_rows(name, torch.float32, [5000])]
    _core.sgd_step(table(name, ref), [at3[0], at3[1], *sc[2:]])
    assert bits(ref) == bits(ts)
