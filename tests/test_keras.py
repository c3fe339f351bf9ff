"""clrfast.keras on Keras 3's jax, torch and tensorflow backends.

Keras fixes its backend when first imported, so each backend trains in its own subprocess (this
file run as a script, with KERAS_BACKEND set) and reports the weights it reached. This process
checks them against the C++ core's values and NumPy replays of Keras' update rules, and never
imports Keras itself.

The applied learning rate is read off the weights: a bias-free Dense layer on one-hot inputs,
trained on mean absolute error against a far-away target, has gradient exactly ``e_j`` on batch
``j``, so plain SGD leaves ``w_j = -lr(j)`` exactly, one weight per batch.
"""

from __future__ import annotations

import importlib.util
import json
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
TARGET = -1000.0  # far below every prediction: the MAE gradient is exactly +x
LR_SCHEDULES = {  # name -> (schedule, num_steps): the cyclic table ends at 5, so later steps come from the host
    "cyclic": (clr.Cyclic(0.01, 0.1, step_size_up=4, mode="triangular2"), 5),
    "onecycle": (clr.OneCycle(0.1, total_steps=7), None),  # ends at step 7, held after
}
MOM = clr.Cyclic(0.01, 0.1, step_size_up=3, base_momentum=0.8, max_momentum=0.95)
X_MOM = [1.0, -2.0, 0.5, 3.0, -1.0, 0.25, 2.0, -0.5, 1.5, -3.0]
EPOCHS_MOM = 2
INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
# Tensors each backend holds as they are (jax without x64 has 32 bits at most).
TENSOR_DTYPES = {
    "jax": ("int8", "int16", "int32", "uint8", "uint16", "uint32"),
    "torch": INT_DTYPES,
    "tensorflow": INT_DTYPES,
}
DTYPE_STEPS = (2, 100)  # inside MOM's 3-step table, and past it (the host path); both fit int8

needs_keras = pytest.mark.skipif(importlib.util.find_spec("keras") is None, reason="keras is not installed")


def _lr(s, k):
    last = s.max_step
    return s.lr(k if last is None else min(k, last))


def _mom(s, k):
    last = s.max_step
    return s.momentum(k if last is None else min(k, last))


# ------------------------------------------------------------------ child
def run_scenarios(backend: str, out: Path, load_path: str | None) -> dict:
    """Everything that needs Keras, on the backend this process was started with."""
    import clrfast.keras as ck
    import keras

    assert keras.backend.backend() == backend
    res: dict = {"errors": {}}
    # Where Keras reads a Python-float momentum at every step: jax unjitted, tensorflow eagerly.
    eager = {"jit_compile": False} if backend == "jax" else {"run_eagerly": True} if backend == "tensorflow" else {}

    def dense(n_in):
        layer = keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")
        return keras.Sequential([keras.Input((n_in,)), layer])

    def error_of(fn):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - reported to the parent, which checks the type
            return [type(e).__name__, str(e)]
        return None

    def weights(model):
        return [float(v) for v in np.asarray(model.get_weights()[0]).ravel()]

    onehot, y_onehot = np.eye(K, dtype=np.float32), np.full((K, 1), TARGET, np.float32)
    for name, (s, n) in LR_SCHEDULES.items():
        model = dense(K)
        model.compile(optimizer=keras.optimizers.SGD(ck.Schedule(s, num_steps=n)), loss="mean_absolute_error")
        model.fit(onehot, y_onehot, batch_size=1, epochs=2, shuffle=False, verbose=0)
        res[f"lr_{name}"] = weights(model)
        if name == "cyclic":
            path = out / f"{backend}.keras"
            model.save(path)
            res["saved"] = str(path)
            loaded = keras.saving.load_model(load_path or path)
            # A model saved under jax keeps jit_compile=True, which torch would honour with a slow torch.compile.
            loaded.jit_compile = backend == "jax"
            res["loaded_lr_config"] = loaded.optimizer.get_config()["learning_rate"]
            loaded.fit(onehot, y_onehot, batch_size=1, epochs=1, shuffle=False, verbose=0)
            res["lr_cyclic_reloaded"] = weights(loaded)

    sched = ck.Schedule(MOM, num_steps=3, dtype="float64" if backend == "torch" else "float32")
    ser = json.loads(json.dumps(keras.optimizers.schedules.serialize(sched)))
    back = keras.optimizers.schedules.deserialize(ser)
    res["serialized"] = ser
    res["roundtrip"] = {
        "type": type(back).__qualname__,
        "config_equal": back.get_config() == sched.get_config(),
        "schedule_equal": back.schedule == MOM,
    }
    res["direct_call"] = [float(keras.ops.convert_to_numpy(sched(k))) for k in (0, 2, 3, 40, 2**40)]
    res["direct_call_tensor"] = [
        float(keras.ops.convert_to_numpy(sched(keras.ops.convert_to_tensor(k)))) for k in (0, 2, 3, 40)
    ]
    res["errors"]["negative_step"] = error_of(lambda: sched(-1))
    res["errors"]["huge_step"] = error_of(lambda: sched(2**70))

    # Every integer dtype, as a NumPy scalar, a 0-d array and a backend tensor, and the optimizer's own
    # step variable (its dtype): each must read the same step as the plain int.
    iterations_dtype = keras.optimizers.SGD(0.1).iterations.dtype
    # The framework's own constructor: keras.ops.convert_to_tensor widens uint16/uint32 on torch.
    if backend == "torch":
        import torch

        as_tensor = torch.as_tensor
    elif backend == "tensorflow":
        import tensorflow as tf

        as_tensor = tf.constant
    else:
        import jax.numpy as jnp

        as_tensor = jnp.asarray
    by_dtype = {}
    for k in DTYPE_STEPS:
        steps = {f"variable:{iterations_dtype}/variable": keras.Variable(k, dtype=iterations_dtype, trainable=False)}
        for dt in INT_DTYPES:
            steps[f"{dt}/scalar"] = np.dtype(dt).type(k)
            steps[f"{dt}/array"] = np.array(k, dt)
            if dt in TENSOR_DTYPES[backend]:
                tensor = as_tensor(np.array(k, dt))
                assert getattr(tensor.dtype, "name", str(tensor.dtype).split(".")[-1]) == dt, (dt, tensor.dtype)
                steps[f"{dt}/tensor"] = tensor
        for key, step in steps.items():
            try:
                by_dtype[f"{key}/{k}"] = float(sched(step))
            except Exception as e:  # noqa: BLE001 - reported to the parent, which expects none
                by_dtype[f"{key}/{k}"] = [type(e).__name__, str(e)]
    res["by_dtype"] = by_dtype
    if backend == "jax":
        import jax

        # A uint32 count past int32, traced: the host callback gets the uint32 array itself.
        res["jit_uint32_max"] = float(jax.jit(sched)(np.uint32(2**32 - 1)))

    x_mom = np.array(X_MOM, np.float32)[:, None]
    y_mom = np.full_like(x_mom, TARGET)

    # A few training steps with every warning an error: the step must be read without one.
    strict_s, strict_n = LR_SCHEDULES["cyclic"]
    strict = dense(K)
    strict.compile(
        optimizer=keras.optimizers.SGD(ck.Schedule(strict_s, num_steps=strict_n)), loss="mean_absolute_error"
    )
    strict_mom = dense(1)
    strict_mom.compile(
        optimizer=keras.optimizers.SGD(ck.Schedule(MOM), momentum=0.5), loss="mean_absolute_error", **eager
    )

    def train_strictly():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            strict.fit(onehot, y_onehot, batch_size=1, epochs=1, shuffle=False, verbose=0)
            strict_mom.fit(
                x_mom,
                y_mom,
                batch_size=1,
                epochs=EPOCHS_MOM,
                shuffle=False,
                verbose=0,
                callbacks=[ck.MomentumScheduler(MOM)],
            )

    res["errors"]["strict_warnings"] = error_of(train_strictly)
    # Read back outside: Keras' own get_weights() warns on NumPy 2 (its Variable.__array__ takes no copy).
    res["lr_strict"] = weights(strict)
    res["sgd_strict"] = weights(strict_mom)[0]

    for key, opt in (
        ("sgd", keras.optimizers.SGD(ck.Schedule(MOM), momentum=0.5)),
        ("adam", keras.optimizers.Adam(ck.Schedule(MOM))),
        ("loss_scaled_sgd", keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(ck.Schedule(MOM), momentum=0.5))),
    ):
        model = dense(1)
        model.compile(optimizer=opt, loss="mean_absolute_error", **eager)
        model.fit(
            x_mom,
            y_mom,
            batch_size=1,
            epochs=EPOCHS_MOM,
            shuffle=False,
            verbose=0,
            callbacks=[ck.MomentumScheduler(MOM)],
        )
        res[f"{key}_cycled"] = weights(model)[0]

    def fit_with(opt, schedule=MOM, **compile_kw):
        model = dense(1)
        model.compile(optimizer=opt, loss="mean_absolute_error", **compile_kw)
        model.fit(x_mom, y_mom, batch_size=1, epochs=1, verbose=0, callbacks=[ck.MomentumScheduler(schedule)])

    errs = res["errors"]
    errs["sgd_momentum_0"] = error_of(lambda: fit_with(keras.optimizers.SGD(0.01), **eager))
    errs["adagrad"] = error_of(lambda: fit_with(keras.optimizers.Adagrad(0.01), **eager))
    errs["no_momentum"] = error_of(lambda: ck.MomentumScheduler(clr.Cyclic(0.01, 0.1)))
    errs["not_a_schedule"] = error_of(lambda: ck.Schedule(0.1))
    errs["steps_per_execution"] = error_of(
        lambda: fit_with(keras.optimizers.SGD(0.01, momentum=0.9), steps_per_execution=2, **eager)
    )
    if backend == "jax":
        errs["jit"] = error_of(lambda: fit_with(keras.optimizers.Adam(0.01)))

        # Why that is an error: set momentum per batch by hand under jit, and the step keeps the first value.
        class SetMomentum(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                self.model.optimizer.momentum = _mom(MOM, batch)

        model = dense(1)
        model.compile(optimizer=keras.optimizers.SGD(ck.Schedule(MOM), momentum=0.5), loss="mean_absolute_error")
        model.fit(x_mom, y_mom, batch_size=1, epochs=1, shuffle=False, verbose=0, callbacks=[SetMomentum()])
        res["sgd_jit_hand_set"] = weights(model)[0]
    return res


# ----------------------------------------------------------------- parent
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("keras")
    results = {}
    for backend in BACKENDS:
        if importlib.util.find_spec(backend) is None:
            continue
        load = results.get("jax", {}).get("saved")  # torch reloads the model jax saved
        env = dict(os.environ, KERAS_BACKEND=backend)
        cmd = [sys.executable, __file__, backend, str(out)] + ([load] if load and backend == "torch" else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
        assert proc.returncode == 0, f"{backend} run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        results[backend] = json.loads((out / f"{backend}.json").read_text())
    return results


@pytest.fixture(params=BACKENDS)
def run(request, runs):
    if importlib.util.find_spec("keras") is None or request.param not in runs:
        pytest.skip(f"keras with the {request.param} backend is not installed")
    return request.param, runs[request.param]


def _onehot_oracle(s, steps, w=None):
    w = np.zeros(K, np.float32) if w is None else np.array(w, np.float32)
    for k in steps:
        w[k % K] = np.float32(w[k % K] - np.float32(_lr(s, k)))
    return w


@needs_keras
@pytest.mark.parametrize("name", list(LR_SCHEDULES))
def test_fit_applies_float32_lr_of_each_iteration(run, name):
    _, res = run
    s, _ = LR_SCHEDULES[name]
    got = np.array(res[f"lr_{name}"], np.float32)
    np.testing.assert_array_equal(got, _onehot_oracle(s, range(2 * K)))
    # First epoch alone: w_j was -lr(j); the second epoch added -lr(K + j).
    assert not np.array_equal(got, _onehot_oracle(s, range(K)))


@needs_keras
def test_model_save_and_load_keep_schedule_and_its_clock(run):
    backend, res = run
    s, n = LR_SCHEDULES["cyclic"]
    cfg = res["loaded_lr_config"]
    assert cfg["registered_name"] == "clrfast>Schedule"
    assert cfg["config"] == {"schedule": s.to_dict(), "num_steps": n, "dtype": "float32"}
    assert clr.from_dict(cfg["config"]["schedule"]) == s
    # Training resumes at iteration 2K with the same schedule (torch loads the file jax wrote).
    trained = _onehot_oracle(s, range(2 * K))
    np.testing.assert_array_equal(
        np.array(res["lr_cyclic_reloaded"], np.float32), _onehot_oracle(s, range(2 * K, 3 * K), trained)
    )


@needs_keras
def test_serialize_deserialize_and_direct_calls(run):
    backend, res = run
    dtype = "float64" if backend == "torch" else "float32"
    assert res["serialized"]["config"] == {"schedule": MOM.to_dict(), "num_steps": 3, "dtype": dtype}
    assert res["roundtrip"] == {"type": "Schedule", "config_equal": True, "schedule_equal": True}
    cast = np.float64 if dtype == "float64" else np.float32
    # Steps 3 and up are past the 3-step table: computed by the core on the host.
    assert res["direct_call"] == [float(cast(MOM.lr(k))) for k in (0, 2, 3, 40, 2**40)]
    assert res["direct_call_tensor"] == [float(cast(MOM.lr(k))) for k in (0, 2, 3, 40)]
    assert res["errors"]["negative_step"] == ["ValueError", "step must be >= 0, got -1"]
    assert res["errors"]["huge_step"] == ["OverflowError", f"step must be <= {2**63 - 1}, got {2**70}"]


@needs_keras
def test_every_integer_dtype_reads_the_same_step(run):
    backend, res = run
    cast = np.float64 if backend == "torch" else np.float32
    got = res["by_dtype"]
    variable = {key.split("/")[0] for key in got if key.startswith("variable:")}
    assert len(variable) == 1 and variable <= {"variable:int32", "variable:int64"}, variable  # the step's dtype
    keys = [f"{next(iter(variable))}/variable"]
    for dt in INT_DTYPES:
        keys += [f"{dt}/scalar", f"{dt}/array"] + ([f"{dt}/tensor"] if dt in TENSOR_DTYPES[backend] else [])
    assert got == {f"{key}/{k}": float(cast(MOM.lr(k))) for key in keys for k in DTYPE_STEPS}
    # Both steps are tested: the table and the host path give different values.
    assert MOM.lr(DTYPE_STEPS[0]) != MOM.lr(DTYPE_STEPS[1])
    if backend == "jax":
        assert res["jit_uint32_max"] == float(np.float32(MOM.lr(2**32 - 1)))


@needs_keras
def test_training_reads_the_step_without_warnings(run):
    _, res = run
    assert res["errors"]["strict_warnings"] is None
    s, _ = LR_SCHEDULES["cyclic"]
    # One epoch of one-hot batches: w_j = -lr(j), the lr applied at step j, past the 5-step table too.
    np.testing.assert_array_equal(np.array(res["lr_strict"], np.float32), _onehot_oracle(s, range(K)))
    want = _sgd_oracle(lambda k: MOM.momentum(k), EPOCHS_MOM * len(X_MOM))
    assert res["sgd_strict"] == pytest.approx(want, rel=2e-5, abs=1e-7)


def _sgd_oracle(momentum_at, steps):
    w = v = 0.0
    for k in range(steps):
        g = X_MOM[k % len(X_MOM)]
        v = momentum_at(k) * v - float(np.float32(MOM.lr(k))) * g
        w += v
    return w


def _adam_oracle(beta1_at, steps, b2=0.999, eps=1e-7):
    w = m = v = 0.0
    for k in range(steps):
        g, b1, t = X_MOM[k % len(X_MOM)], beta1_at(k), k + 1
        m += (g - m) * (1 - b1)
        v += (g * g - v) * (1 - b2)
        alpha = float(np.float32(MOM.lr(k))) * np.sqrt(1 - b2**t) / (1 - b1**t)
        w -= alpha * m / (np.sqrt(v) + eps)
    return w


@needs_keras
def test_momentum_scheduler_cycles_sgd_momentum_and_adam_beta_1(run):
    _, res = run
    steps = EPOCHS_MOM * len(X_MOM)
    cycled = lambda k: MOM.momentum(k)  # noqa: E731
    for key, oracle, initial in (
        ("sgd", _sgd_oracle, 0.5),
        ("adam", _adam_oracle, 0.9),
        ("loss_scaled_sgd", _sgd_oracle, 0.5),
    ):  # the wrapped optimizer's momentum
        want = oracle(cycled, steps)
        assert res[f"{key}_cycled"] == pytest.approx(want, rel=2e-5, abs=1e-7), key
        # The check can fail: the optimizer's own, constant value lands far away.
        assert abs(oracle(lambda k, m=initial: m, steps) - want) > 1e-3 * abs(want), key


@needs_keras
def test_momentum_scheduler_refuses_what_it_cannot_do(run):
    backend, res = run
    errs = res["errors"]
    assert errs["sgd_momentum_0"][0] == "ValueError" and "momentum=0.0" in errs["sgd_momentum_0"][1]
    assert errs["adagrad"][0] == "TypeError" and "Adagrad has no momentum or beta_1" in errs["adagrad"][1]
    assert errs["no_momentum"][0] == "ValueError" and "defines no momentum" in errs["no_momentum"][1]
    assert errs["not_a_schedule"][0] == "TypeError" and "got 0.1" in errs["not_a_schedule"][1]
    assert errs["steps_per_execution"][0] == "ValueError" and "steps_per_execution" in errs["steps_per_execution"][1]
    if backend == "jax":
        assert errs["jit"][0] == "ValueError" and "jit_compile=False" in errs["jit"][1]
        # The refusal is needed: a hand-set momentum under jit stays at its first value, 0.95.
        first = MOM.momentum(0)
        assert res["sgd_jit_hand_set"] == pytest.approx(_sgd_oracle(lambda k: first, len(X_MOM)), rel=2e-5)
        assert abs(_sgd_oracle(lambda k: MOM.momentum(k), len(X_MOM)) - res["sgd_jit_hand_set"]) > 1e-4


# ----------------------------------------------------- imports, examples
def _python(code: str, env=None, timeout=120):
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, **(env or {})),
        cwd=ROOT,
    )


BLOCK = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is blocked in this test", name=name)
sys.meta_path.insert(0, _Block())
"""


def test_missing_keras_names_the_extra():
    proc = _python(
        BLOCK.format(blocked={"keras"})
        + """
import clrfast
try:
    import clrfast.keras
except ImportError as e:
    print(e)
assert clrfast.Constant(0.1).lr(3) == 0.1
"""
    )
    assert proc.returncode == 0, proc.stderr
    assert "pip install 'clrfast[keras]'" in proc.stdout


@needs_keras
def test_missing_backend_says_set_keras_backend():
    proc = _python(
        BLOCK.format(blocked={"tensorflow"})
        + """
try:
    import clrfast.keras
except ImportError as e:
    print(e)
""",
        env={"KERAS_BACKEND": "tensorflow"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Keras could not load its backend") and "tensorflow" in proc.stdout
    assert "Set KERAS_BACKEND" in proc.stdout


@needs_keras
def test_keras_example_trains_digits():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "keras_digits.py")],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, KERAS_BACKEND="jax"),
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    acc = float(proc.stdout.strip().splitlines()[-1].split("test accuracy")[1].split()[0])
    assert acc >= 0.9, proc.stdout


if __name__ == "__main__":
    backend, out = sys.argv[1], Path(sys.argv[2])
    result = run_scenarios(backend, out, sys.argv[3] if len(sys.argv) > 3 else None)
    (out / f"{backend}.json").write_text(json.dumps(result))
