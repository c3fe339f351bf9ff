"""Per-call overhead of the pybind11 binding vs the same core functions bound with nanobind.

    python bench/bench_binding.py

Builds the nanobind twin (bench/nb_bench.cpp, CMake option CLRFAST_NANOBIND_BENCH) into
build/nb-bench on first use; needs `pip install nanobind pybind11 cmake ninja`. Both modules
call the same header-only functions, so the difference is the binding layer alone.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clrfast as clr  # noqa: E402
from _common import best_time, fmt_time, machine, table  # noqa: E402
from clrfast import _core  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build", "nb-bench")


def load_nanobind_twin():
    try:
        sys.path.insert(0, BUILD)
        return importlib.import_module("_nb_bench")
    except ImportError:
        pass
    import pybind11

    cmake = shutil.which("cmake") or "cmake"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    subprocess.run(
        [
            cmake,
            "-S",
            ROOT,
            "-B",
            BUILD,
            *generator,
            "-DCMAKE_BUILD_TYPE=Release",
            "-DCLRFAST_NANOBIND_BENCH=ON",
            "-DCLRFAST_CUDA=OFF",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run([cmake, "--build", BUILD, "--target", "_nb_bench"], check=True, stdout=subprocess.DEVNULL)
    importlib.invalidate_caches()
    return importlib.import_module("_nb_bench")


def main() -> int:
    nb = load_nanobind_twin()
    calls = 200_000
    pb_sched = clr.Cyclic(1e-3, 6e-3, step_size_up=2000)._core
    nb_sched = nb.cyclic(1e-3, 6e-3, 2000.0, 2000.0)
    assert pb_sched.lr(12345.0) == nb_sched.lr(12345.0)
    halving = _core.ScaleKind.triangular2  # the twin takes its integer code, 1

    cases = [
        ("Schedule.lr(t) -> float", lambda: pb_sched.lr(777.0), lambda: nb_sched.lr(777.0)),
        ("Schedule.at(t) -> (lr, momentum)", lambda: pb_sched.at(777.0), lambda: nb_sched.at(777.0)),
        (
            "cyclic_scale(kind, gamma, x)",
            lambda: _core.cyclic_scale(halving, 1.0, 3.0),
            lambda: nb.cyclic_scale(1, 1.0, 3.0),
        ),
    ]
    empty = best_time(lambda: None, number=calls)
    rows = []
    for label, pb_call, nb_call in cases:
        t_pb = best_time(pb_call, number=calls) - empty
        t_nb = best_time(nb_call, number=calls) - empty
        rows.append([label, fmt_time(t_pb), fmt_time(t_nb), f"{t_pb / t_nb:.2f}x"])
    print(f"Machine: {machine()}")
    print(f"Per call, minus the cost of calling an empty Python lambda ({fmt_time(empty)})")
    print(table(["call", "pybind11", "nanobind", "pybind11 / nanobind"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
