"""TF-Addons' CyclicalLearningRate against the reference CLR formula and clrfast, step by step.

The reference is the CLR callback's formula (bckenstler/CLR) in float64; Keras stores the lr it
sets as float32, so the lr a step trains with is float32 of it. TF-Addons computes the same
formula in the dtype of ``initial_learning_rate`` (float32 for a Python float). This script
counts the steps where the two float32 values differ and the largest relative difference, and
does the same for clrfast's ``Cyclic`` (float32 of the core's double).

TF-Addons no longer imports under Keras 3, so its ``cyclical_learning_rate.py`` is read from the
wheel and run as it is, with the two helpers it imports stubbed (a type alias and typeguard's
decorator, which only checks argument types)::

    pip download --no-deps tensorflow-addons==0.23.0 -d /tmp/tfa
    KERAS_BACKEND=tensorflow python bench/compare_tfa.py /tmp/tfa/tensorflow_addons-0.23.0-*.whl

The step is given as float32, as TF-Keras 2 optimizers pass ``tf.cast(iterations, float32)``.
"""

from __future__ import annotations

import sys
import types
import typing
import zipfile

import clrfast as clr
import numpy as np
import tensorflow as tf


def load_tfa(wheel: str):
    source = zipfile.ZipFile(wheel).read("tensorflow_addons/optimizers/cyclical_learning_rate.py")
    stubs = {name: types.ModuleType(name) for name in ("tensorflow_addons", "tensorflow_addons.utils")}
    for m in stubs.values():
        m.__path__ = []
    tfa_types = types.ModuleType("tensorflow_addons.utils.types")
    tfa_types.FloatTensorLike = typing.Union[tf.Tensor, float, np.floating]
    typeguard = types.ModuleType("typeguard")
    typeguard.typechecked = lambda f: f
    sys.modules.update(stubs)
    sys.modules.update({"tensorflow_addons.utils.types": tfa_types, "typeguard": typeguard})
    module = types.ModuleType("tfa_cyclical_learning_rate")
    exec(compile(source, "tensorflow_addons/optimizers/cyclical_learning_rate.py", "exec"), module.__dict__)
    return module


def reference(base, top, step_size, scale_fn, scale_mode, t):
    t = t.astype(np.float64)
    cycle = np.floor(1 + t / (2 * step_size))
    x = np.abs(t / step_size - 2 * cycle + 1)
    return base + (top - base) * np.maximum(0, 1 - x) * scale_fn(cycle if scale_mode == "cycle" else t)


def main(wheel: str) -> None:
    tfa = load_tfa(wheel)
    base, top, size, gamma = 0.001, 0.006, 2000, 0.99994
    cases = [
        (
            "triangular",
            tfa.TriangularCyclicalLearningRate(base, top, size),
            clr.Cyclic(base, top, size),
            (lambda x: 1.0, "cycle"),
        ),
        (
            "triangular2",
            tfa.Triangular2CyclicalLearningRate(base, top, size),
            clr.Cyclic(base, top, size, mode="triangular2"),
            (lambda x: 1 / (2.0 ** (x - 1)), "cycle"),
        ),
        (
            f"exp_range {gamma}",
            tfa.ExponentialCyclicalLearningRate(base, top, size, gamma=gamma),
            clr.Cyclic(base, top, size, mode="exp_range", gamma=gamma),
            (lambda x: gamma**x, "iterations"),
        ),
    ]
    ranges = [(0, 100_000), (1_000_000, 1_100_000), (10_000_000, 10_100_000), (2**24, 2**24 + 100_000)]
    print(f"base_lr={base}, max_lr={top}, step_size={size}; float32 values compared with float32(reference)")
    print(f"{'schedule':<20} {'steps':<22} {'TF-Addons differs':>18} {'max rel. diff.':>15} {'clrfast differs':>16}")
    for name, tfa_schedule, schedule, (scale_fn, scale_mode) in cases:
        for lo, hi in ranges if name == "triangular" else ranges[:1]:
            t = np.arange(lo, hi, dtype=np.int64)
            want = reference(base, top, size, scale_fn, scale_mode, t).astype(np.float32)
            got = tfa_schedule(tf.constant(t.astype(np.float32))).numpy()
            ours = schedule.lr_table(t).astype(np.float32)
            rel = np.max(np.abs(got.astype(np.float64) - want) / want)
            print(
                f"{name:<20} {f'{lo:,}..{hi - 1:,}':<22} {np.mean(got != want):>17.1%} {rel:>15.2g} "
                f"{int(np.sum(ours != want)):>16}"
            )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
