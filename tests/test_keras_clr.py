"""clrfast.keras.CyclicLR (the reference CLR callback's form) and clrfast.keras.lr_find, per backend.

As in test_keras.py, each backend trains in its own subprocess (this file run as a script, with
KERAS_BACKEND set) and reports what it saw; this process checks it and never imports Keras.

The oracle for CyclicLR is the formula of the reference callback, bckenstler/CLR's
``clr_callback.py`` (``CyclicLR.clr()`` and the scale functions its ``__init__`` picks per mode,
MIT licence), written out below with the same operations in the same order and evaluated here
in float64 NumPy, independently of clrfast. Keras keeps the lr in a float32 variable, so the lr
each batch trains with must be ``float32`` of that number. The applied lr is also read off the
weights, as in test_keras.py: a bias-free Dense layer on one-hot inputs, trained on mean
absolute error against a far-away target, has gradient exactly ``e_j`` on batch ``j``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import clrfast as clr
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("jax", "torch", "tensorflow")
K = 12  # one-hot batches per epoch
TARGET = -1000.0


def sin_scale(x):
    # The custom scale of the reference callback's docstring.
    return 0.5 * (1 + np.sin(x * np.pi / 2.0))


# name -> CyclicLR keyword arguments; "scale" names a scale built in the child.
CONFIGS = {
    "triangular": {"base_lr": 0.01, "max_lr": 0.1, "step_size": 3.0, "mode": "triangular"},
    "triangular2": {"base_lr": 0.01, "max_lr": 0.1, "step_size": 2.5, "mode": "triangular2"},
    "exp_range": {"base_lr": 0.01, "max_lr": 0.1, "step_size": 4, "mode": "exp_range", "gamma": 0.9},
    "geometric_iterations": {
        "base_lr": 0.02,
        "max_lr": 0.08,
        "step_size": 3.0,
        "scale": "geometric",
        "scale_mode": "iterations",
    },
    "callable_cycle": {"base_lr": 0.01, "max_lr": 0.1, "step_size": 2.0, "scale": "sin", "scale_mode": "cycle"},
}
RESET = {"new_base_lr": 0.02, "new_max_lr": 0.2, "new_step_size": 5.0}
MOM = {"base_lr": 0.01, "max_lr": 0.1, "step_size": 3.0, "base_momentum": 0.8, "max_momentum": 0.95}
X_MOM = [1.0, -2.0, 0.5, 3.0, -1.0, 0.25, 2.0, -0.5, 1.5, -3.0]
# The seed's settings, evaluated without training over two cycles and a half.
LONG = {
    "seed": {"base_lr": 0.001, "max_lr": 0.006, "step_size": 2000.0, "mode": "triangular"},
    "seed_triangular2": {"base_lr": 0.001, "max_lr": 0.006, "step_size": 2000.0, "mode": "triangular2"},
    "seed_exp_range": {"base_lr": 0.001, "max_lr": 0.006, "step_size": 2000.0, "mode": "exp_range", "gamma": 0.99994},
    "odd_step": {"base_lr": 0.001, "max_lr": 0.006, "step_size": 7.3, "mode": "triangular2"},
    "callable": {"base_lr": 0.001, "max_lr": 0.006, "step_size": 500.0, "scale": "sin", "scale_mode": "cycle"},
}
LONG_ITERATIONS = 10_000
# lr_find on 0.5*w^2-like data: Dense(1) without bias, x = 1, y = 0, mse: loss w^2, gradient 2w.
FIND = {"start_lr": 1e-3, "end_lr": 30.0, "num_steps": 60, "smooth": 0.9, "batch_size": 4}

needs_keras = pytest.mark.skipif(importlib.util.find_spec("keras") is None, reason="keras is not installed")


# ------------------------------------------------------------------ the reference's formula
def reference_scale(cfg):
    """(scale_fn, scale_mode) as the reference's __init__ picks them."""
    scale = cfg.get("scale")
    if scale == "sin":
        return sin_scale, cfg["scale_mode"]
    if scale == "geometric":
        return (lambda x: 0.8 ** (x - 1)), cfg["scale_mode"]
    gamma = cfg.get("gamma", 1.0)
    return {
        "triangular": (lambda x: 1.0, "cycle"),
        "triangular2": (lambda x: 1 / (2.0 ** (x - 1)), "cycle"),
        "exp_range": (lambda x: gamma**x, "iterations"),
    }[cfg.get("mode", "triangular")]


def reference_lr(cfg, iterations):
    """The reference callback's clr() at ``iterations`` (its clr_iterations, a float)."""
    base, top, step = cfg["base_lr"], cfg["max_lr"], cfg["step_size"]
    scale_fn, scale_mode = reference_scale(cfg)
    it = float(iterations)
    cycle = np.floor(1 + it / (2 * step))
    x = np.abs(it / step - 2 * cycle + 1)
    arg = cycle if scale_mode == "cycle" else it
    return base + (top - base) * np.maximum(0, (1 - x)) * scale_fn(arg)


def reference_momentum(cfg, iterations):
    """The same wave for the momentum, inverse to the lr (clrfast's addition; the reference has none)."""
    base, top, step = cfg["base_momentum"], cfg["max_momentum"], cfg["step_size"]
    it = float(iterations)
    cycle = np.floor(1 + it / (2 * step))
    x = np.abs(it / step - 2 * cycle + 1)
    return top - (top - base) * np.maximum(0, (1 - x)) * 1.0


def f32(v):
    return float(np.float32(v))


def read(keras, v):
    """A variable or tensor as a NumPy array, for this test's own checks.

    Keras' convert_to_numpy warns on NumPy 2 for torch tensors and tensorflow variables; the
    test's reads are not what is under test (clrfast's own reads run with warnings as errors).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return np.asarray(keras.ops.convert_to_numpy(getattr(v, "value", v)))


# ------------------------------------------------------------------ child
def run_scenarios(backend: str) -> dict:
    import clrfast.keras as ck
    import keras

    assert keras.backend.backend() == backend
    # Every warning is an error, as in the parent's pytest run: the callbacks and lr_find must train without one.
    warnings.simplefilter("error")
    res: dict = {"errors": {}}
    eager = {"jit_compile": False} if backend == "jax" else {"run_eagerly": True} if backend == "tensorflow" else {}

    def error_of(fn):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - reported to the parent, which checks the type
            return [type(e).__name__, str(e)]
        return None

    def build(cfg):
        kw = {k: v for k, v in cfg.items() if k != "scale"}
        if cfg.get("scale") == "sin":
            kw["scale_fn"] = sin_scale
        elif cfg.get("scale") == "geometric":
            kw["scale_fn"] = clr.scales.Geometric(0.8)
        return ck.CyclicLR(**kw)

    def dense(n_in, **compile_kw):
        model = keras.Sequential(
            [keras.Input((n_in,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")]
        )
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mean_absolute_error", **compile_kw)
        return model

    def weights(model):
        return [float(w) for w in read(keras, model.weights[0]).ravel()]

    class Probe(keras.callbacks.Callback):
        """Reads the optimizer's lr before each batch: the value that batch trains with."""

        def __init__(self):
            super().__init__()
            self.seen = []

        def on_train_batch_begin(self, batch, logs=None):
            self.seen.append(float(read(keras, self.model.optimizer.learning_rate)))

    onehot, target = np.eye(K, dtype=np.float32), np.full((K, 1), TARGET, np.float32)
    fit = {"batch_size": 1, "shuffle": False, "verbose": 0}
    for name, cfg in CONFIGS.items():
        cb, model = build(cfg), dense(K)
        # One configuration trains without the probe: the weights alone show the applied lrs.
        extra = [] if name == "triangular" else [Probe()]
        h1 = model.fit(onehot, target, epochs=2, callbacks=[cb, *extra], **fit)
        h2 = model.fit(onehot, target, epochs=1, callbacks=[cb, *extra], **fit)  # continues the cycle
        cb._reset(**RESET)
        h3 = model.fit(onehot, target, epochs=1, callbacks=[cb, *extra], **fit)  # a new cycle, new bounds
        res[name] = {
            "weights": weights(model),
            "probe": extra[0].seen if extra else None,
            "history": {k: [float(v) for v in vs] for k, vs in cb.history.items()},
            "epoch_logs": [h.history.get("learning_rate") for h in (h1, h2, h3)],
            "epoch_loss": [[float(read(keras, v)) for v in h.history["loss"]] for h in (h1, h2, h3)],
        }

    # The seed's values, and a callable scale, over many iterations (no training needed).
    long = {}
    for name, cfg in LONG.items():
        cb = build(cfg)
        values = []
        for it in range(LONG_ITERATIONS):
            cb.clr_iterations = float(it)
            values.append(cb.clr())
        long[name] = values
    res["long"] = long
    res["defaults"] = {k: getattr(ck.CyclicLR(), k) for k in ("base_lr", "max_lr", "step_size", "mode", "gamma")}
    res["defaults"]["scale_mode"] = ck.CyclicLR().scale_mode

    # Momentum cycling on SGD, where Keras reads it (eagerly on jax and tensorflow).
    x_mom, y_mom = np.array(X_MOM, np.float32)[:, None], np.full((len(X_MOM), 1), TARGET, np.float32)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.5), loss="mean_absolute_error", **eager)
    cb = ck.CyclicLR(**MOM)
    model.fit(x_mom, y_mom, epochs=2, callbacks=[cb], **fit)
    res["momentum"] = {"weight": weights(model)[0], "history": cb.history["momentum"], "lr": cb.history["lr"]}

    errs = res["errors"]

    def fit_with(cb, model=None):
        model = model or dense(1)
        model.fit(x_mom, y_mom, epochs=1, callbacks=[cb], **fit)

    def schedule_model():
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(ck.Schedule(clr.Constant(0.1))), loss="mse")
        return model

    errs["schedule_lr"] = error_of(lambda: fit_with(ck.CyclicLR(), schedule_model()))
    errs["steps_per_execution"] = error_of(lambda: fit_with(ck.CyclicLR(), dense(1, steps_per_execution=2)))
    errs["mode"] = error_of(lambda: ck.CyclicLR(mode="cosine"))
    errs["scale_mode"] = error_of(lambda: ck.CyclicLR(scale_fn=sin_scale, scale_mode="epoch"))
    errs["scale_fn"] = error_of(lambda: ck.CyclicLR(scale_fn=0.5))
    errs["half_momentum"] = error_of(lambda: ck.CyclicLR(base_momentum=0.8))
    errs["step_size"] = error_of(lambda: ck.CyclicLR(step_size=0))
    errs["reset_max_lr"] = error_of(lambda: ck.CyclicLR()._reset(new_max_lr=-1.0))
    if backend == "jax":
        mom_model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        mom_model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")  # jitted
        errs["momentum_jit"] = error_of(lambda: fit_with(ck.CyclicLR(**MOM), mom_model))

    res["lr_find"] = run_lr_find(keras, ck, error_of)
    return res


def run_lr_find(keras, ck, error_of) -> dict:
    out: dict = {}

    def variables(model):
        opt = model.optimizer
        vs = [*model.variables, *opt.variables, *model.metrics_variables]
        return [read(keras, v).tolist() for v in vs]

    # The sweep on a known curve.
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x, y = np.ones((64, 1), np.float32), np.zeros((64, 1), np.float32)
    before = variables(model)
    r = ck.lr_find(model, x, y, progress=False, **FIND)
    out["quadratic"] = {
        "lrs": r.lrs.tolist(),
        "losses": r.losses.tolist(),
        "smoothed": r.smoothed.tolist(),
        "stop": r.stop_reason,
        "diverged_lr": r.diverged_lr,
        "suggestion": [r.max_lr, r.base_lr, r.lr_min, r.lr_steep],
        "restored": variables(model) == before,
        "weight_after": float(read(keras, model.weights[0]).ravel()[0]),
    }

    # Restoring a trained model with BatchNorm, Dropout, Adam's slots and a metric; two seeds.
    rng = np.random.default_rng(5)
    xs = rng.normal(size=(96, 4)).astype(np.float32)
    ys = (xs @ np.array([1.0, -2.0, 0.5, 1.0], np.float32) > 0).astype(np.int32)
    keras.utils.set_random_seed(3)
    net = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(16),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(2),
        ]
    )
    net.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    net.fit(xs, ys, batch_size=16, epochs=1, verbose=0)
    before = variables(net)
    if keras.backend.backend() == "torch":
        import torch

        torch_rng = torch.get_rng_state()
    find = {"batch_size": 16, "start_lr": 1e-4, "end_lr": 1.0, "num_steps": 20, "progress": False}
    val = {"validation_data": (xs[:32], ys[:32]), "val_every": 5}
    r = ck.lr_find(net, xs, ys, seeds=[0, 1], **find, **val)
    out["net"] = {
        "restored": variables(net) == before,
        "torch_rng_restored": keras.backend.backend() != "torch" or bool(torch.equal(torch.get_rng_state(), torch_rng)),
        "n": len(r.lrs),
        "band_ok": r.band is not None and bool(np.all(r.band[0] <= r.smoothed) and np.all(r.smoothed <= r.band[1])),
        "runs_differ": not np.array_equal(r.runs[0]["losses"], r.runs[1]["losses"]),
        "seeds": r.seeds,
        "val_every_5": [bool(np.isfinite(v)) for v in r.val[:10]],
        "lrs": r.lrs.tolist(),
    }
    # (The same validation: on torch, each evaluate() draws from torch's RNG, which Dropout reads too.)
    again = ck.lr_find(net, xs, ys, seeds=[0], **find, **val)
    out["net"]["repeat_first_seed"] = np.allclose(again.runs[0]["losses"], r.runs[0]["losses"], rtol=0, atol=0)

    # An unbuilt optimizer is built, and left as a fresh one: iterations 0, zero slots.
    fresh = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    fresh.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="mse")
    w0 = variables(fresh)[: len(fresh.variables)]
    zeros = np.zeros((96, 2), np.float32)
    ck.lr_find(fresh, xs, zeros, batch_size=8, num_steps=15, start_lr=1e-4, end_lr=1e-1, progress=False)
    opt = fresh.optimizer
    out["fresh"] = {
        "weights_same": variables(fresh)[: len(fresh.variables)] == w0,
        "iterations": int(read(keras, opt.iterations)),
        "slots_zero": all(not np.any(read(keras, v)) for v in opt.variables if "momentum" in v.path),
        "n_slots": sum("momentum" in v.path for v in opt.variables),
    }

    # A test that raises midway still restores.
    calls = []

    def val_fn(m):
        calls.append(1)
        if len(calls) == 6:
            raise RuntimeError("validation failed")
        return 0.0

    before = variables(net)
    out["raised"] = error_of(
        lambda: ck.lr_find(net, xs, ys, batch_size=16, num_steps=20, val_fn=val_fn, progress=False)
    )
    out["restored_after_raise"] = variables(net) == before
    unc = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    out["uncompiled"] = error_of(lambda: ck.lr_find(unc, xs, ys))
    sched = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    sched.compile(optimizer=keras.optimizers.SGD(ck.Schedule(clr.Constant(0.1))), loss="mse")
    out["schedule_lr"] = error_of(lambda: ck.lr_find(sched, xs, ys))
    out["bad_num_steps"] = error_of(lambda: ck.lr_find(net, xs, ys, num_steps=3))
    out["not_arrays"] = error_of(lambda: ck.lr_find(net, (b for b in [xs]), ys))
    return out


# ----------------------------------------------------------------- parent
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("keras_clr")
    procs = {}
    for backend in BACKENDS:  # independent runs: started together, they share the cores' idle time
        if importlib.util.find_spec("keras") is None or importlib.util.find_spec(backend) is None:
            continue
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
        cmd = [sys.executable, __file__, backend, str(out)]
        procs[backend] = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
        )
    results = {}
    try:
        for backend, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=300)
            assert proc.returncode == 0, f"{backend} run failed:\n{stdout[-3000:]}\n{stderr[-5000:]}"
            results[backend] = json.loads((out / f"{backend}.json").read_text())
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results


@pytest.fixture(params=BACKENDS)
def run(request, runs):
    if request.param not in runs:
        pytest.skip(f"keras with the {request.param} backend is not installed")
    return request.param, runs[request.param]


def _applied(cfg):
    """The lr of every batch of the three fits: 3K on one cycle, then K after _reset(**RESET)."""
    reset = {**cfg, "base_lr": RESET["new_base_lr"], "max_lr": RESET["new_max_lr"], "step_size": RESET["new_step_size"]}
    return [reference_lr(cfg, k) for k in range(3 * K)] + [reference_lr(reset, k) for k in range(K)]


@needs_keras
@pytest.mark.parametrize("name", list(CONFIGS))
def test_each_batch_trains_with_float32_of_the_reference_lr(run, name):
    _, res = run
    got = res[name]
    want = [f32(v) for v in _applied(CONFIGS[name])]
    assert got["history"]["lr"] == want  # read back from the optimizer's variable after each batch
    if got["probe"] is not None:
        assert got["probe"] == want  # and before each batch, by another callback
    # The weights: slot j took the lrs of batches j, j + K, j + 2K, j + 3K, in float32.
    w = np.zeros(K, np.float32)
    for k, lr in enumerate(want):
        w[k % K] = np.float32(w[k % K] - np.float32(lr))
    np.testing.assert_array_equal(np.array(got["weights"], np.float32), w)
    # The check can fail: the lrs really change from batch to batch.
    assert len(set(want)) > K // 2


@needs_keras
@pytest.mark.parametrize("name", list(CONFIGS))
def test_history_is_the_references_and_keras_history_gets_the_lr(run, name):
    _, res = run
    got = res[name]
    hist = got["history"]
    n = 4 * K
    assert set(hist) >= {"lr", "iterations", "loss"}
    assert hist["iterations"] == [float(i) for i in range(1, n + 1)]  # counts on across fits and _reset
    assert len(hist["loss"]) == n
    lrs = hist["lr"]
    # Each epoch's History logs hold the lr of its last batch.
    assert got["epoch_logs"] == [[lrs[K - 1], lrs[2 * K - 1]], [lrs[3 * K - 1]], [lrs[4 * K - 1]]]
    # The batch logs are Keras' running means over the epoch: the epoch's loss is the last one.
    assert hist["loss"][K - 1] == pytest.approx(got["epoch_loss"][0][0], rel=1e-6)


@needs_keras
def test_clrfast_values_equal_the_reference_formula_over_the_seeds_settings(run):
    _, res = run
    for name, cfg in LONG.items():
        got = np.array(res["long"][name])
        want = np.array([reference_lr(cfg, k) for k in range(LONG_ITERATIONS)])
        # Doubles: the core's x = 1 + t/total - cycle and the reference's |t/step - 2*cycle + 1| round apart.
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0, err_msg=name)
        # What Keras stores, float32, is the same number.
        np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32), err_msg=name)
        assert got.max() > got.min()
    assert res["defaults"] == {
        "base_lr": 0.001,
        "max_lr": 0.006,
        "step_size": 2000.0,
        "mode": "triangular",
        "gamma": 1.0,
        "scale_mode": "cycle",
    }


@needs_keras
def test_momentum_cycles_inverse_to_the_lr(run):
    _, res = run
    n = 2 * len(X_MOM)
    got = res["momentum"]
    # history["momentum"] holds the momentum each batch trained with, as "lr" does.
    np.testing.assert_allclose(got["history"], [reference_momentum(MOM, k) for k in range(n)], rtol=1e-14)
    assert got["lr"] == [f32(reference_lr(MOM, k)) for k in range(n)]
    # Keras SGD: v = m*v - lr*g, w += v (MAE's gradient is x itself).
    w = v = 0.0
    for k in range(n):
        v = reference_momentum(MOM, k) * v - f32(reference_lr(MOM, k)) * X_MOM[k % len(X_MOM)]
        w += v
    assert got["weight"] == pytest.approx(w, rel=2e-5)
    w_const = v = 0.0
    for k in range(n):
        v = 0.5 * v - f32(reference_lr(MOM, k)) * X_MOM[k % len(X_MOM)]
        w_const += v
    assert abs(w_const - w) > 1e-3 * abs(w)  # the check can fail: a constant momentum lands elsewhere


@needs_keras
def test_what_cyclic_lr_refuses(run):
    backend, res = run
    e = res["errors"]
    assert e["schedule_lr"][0] == "TypeError" and "float learning_rate" in e["schedule_lr"][1]
    # (torch's Keras refuses it itself, at compile.)
    assert e["steps_per_execution"][0] == "ValueError" and "steps_per_execution" in e["steps_per_execution"][1]
    if backend != "torch":
        assert "CyclicLR needs steps_per_execution=1" in e["steps_per_execution"][1]
    assert e["mode"] == ["ValueError", "mode must be one of 'triangular', 'triangular2', 'exp_range'; got 'cosine'"]
    assert e["scale_mode"] == ["ValueError", "scale_mode must be one of 'cycle', 'iterations'; got 'epoch'"]
    assert e["scale_fn"] == ["TypeError", "scale_fn must be a clrfast scale or a callable, got 0.5"]
    assert e["half_momentum"][0] == "ValueError" and "base_momentum and max_momentum" in e["half_momentum"][1]
    assert e["step_size"] == ["ValueError", "step_size_up must be > 0.0, got 0"]
    assert e["reset_max_lr"] == ["ValueError", "max_lr must be >= 0.0, got -1.0"]
    if backend == "jax":
        assert e["momentum_jit"][0] == "ValueError" and "jit_compile=False" in e["momentum_jit"][1]


# ------------------------------------------------------------------ lr_find
def _quadratic_oracle():
    """SGD on w^2 (w0 = 1) in float32 as Keras computes it, then the documented smoothing and stop."""
    start, end, n, beta = FIND["start_lr"], FIND["end_lr"], FIND["num_steps"], FIND["smooth"]
    w = np.float32(1.0)
    lrs, losses, smoothed, avg, best = [], [], [], 0.0, math.inf
    for t in range(n):
        lr = start * (end / start) ** (t / (n - 1))
        lrs.append(lr)
        losses.append(float(w * w))
        w = np.float32(w - np.float32(lr) * np.float32(2 * w))
        avg = beta * avg + (1 - beta) * losses[-1]
        smoothed.append(avg / (1 - beta ** (t + 1)))
        best = min(best, smoothed[-1])
        if smoothed[-1] > 4 * best:
            return lrs, losses, smoothed, "diverged"
    return lrs, losses, smoothed, "end"


@needs_keras
def test_lr_find_sweeps_smooths_and_stops_where_the_oracle_does(run):
    _, res = run
    got = res["lr_find"]["quadratic"]
    lrs, losses, smoothed, stop = _quadratic_oracle()
    assert got["stop"] == stop == "diverged" and len(got["lrs"]) == len(lrs) < FIND["num_steps"]
    np.testing.assert_allclose(got["lrs"], lrs, rtol=1e-14)
    np.testing.assert_allclose(got["losses"], losses, rtol=1e-5)
    np.testing.assert_allclose(got["smoothed"], smoothed, rtol=1e-5)
    assert got["diverged_lr"] == got["lrs"][-1] > 1.0  # SGD on w^2 diverges for lr > 1
    max_lr, base_lr, lr_min, lr_steep = got["suggestion"]
    assert max_lr == max(lr_steep, lr_min / 4) and base_lr == max_lr / 4
    assert got["restored"] and got["weight_after"] == 1.0


@needs_keras
def test_lr_find_restores_every_variable_and_repeats_with_seeds(run):
    _, res = run
    net = res["lr_find"]["net"]
    assert net["restored"] and net["torch_rng_restored"]
    assert net["n"] == 20 and net["seeds"] == [0, 1] and net["band_ok"] and net["runs_differ"]
    assert net["val_every_5"] == [True, False, False, False, False, True, False, False, False, False]
    sweep = clr.RangeSweep(1e-4, 1.0, 20)
    np.testing.assert_array_equal(net["lrs"], sweep.lr_table(20))
    assert net["repeat_first_seed"]  # a seed's run starts from the restored state: it repeats exactly
    fresh = res["lr_find"]["fresh"]
    assert fresh["weights_same"] and fresh["iterations"] == 0 and fresh["slots_zero"] and fresh["n_slots"] >= 1
    assert res["lr_find"]["raised"] == ["RuntimeError", "validation failed"]
    assert res["lr_find"]["restored_after_raise"]


@needs_keras
def test_lr_find_refuses_what_it_cannot_run(run):
    _, res = run
    out = res["lr_find"]
    assert out["uncompiled"][0] == "ValueError" and "must be compiled" in out["uncompiled"][1]
    assert out["schedule_lr"][0] == "TypeError" and "float learning_rate" in out["schedule_lr"][1]
    assert out["bad_num_steps"] == ["ValueError", "num_steps must be >= 10, got 3"]
    assert out["not_arrays"][0] == "TypeError" and "got generator (a dataset or generator" in out["not_arrays"][1]


if __name__ == "__main__":
    backend, out = sys.argv[1], Path(sys.argv[2])
    result = run_scenarios(backend)
    (out / f"{backend}.json").write_text(json.dumps(result))
