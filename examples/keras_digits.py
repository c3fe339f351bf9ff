"""Keras 3: triangular CLR with cyclical momentum on scikit-learn's digits (nothing downloaded).

    KERAS_BACKEND=torch python examples/keras_digits.py     # or jax (the default here)

An MLP on the 8x8 digits: 1347 training and 450 test images. The learning rate comes from
clrfast.keras.Schedule inside the optimizer, on every backend and under jit. The momentum comes
from the MomentumScheduler callback on torch (whose train step runs eagerly); on jax it would
need jit_compile=False, a much slower eager step, so here jax keeps a fixed momentum (cycle it
with clrfast.optax instead: examples/optax_digits.py). A few seconds on one CPU core.
"""

import argparse
import os
import tempfile

os.environ.setdefault("KERAS_BACKEND", "jax")  # Keras reads it once, at import

import clrfast as clr  # noqa: E402
import clrfast.keras  # noqa: E402  (also registers clrfast.keras.Schedule for load_model)
import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target, test_size=0.25, random_state=0)
    steps_per_epoch = -(-len(x_train) // args.batch_size)

    # Smith's triangular policy, half a cycle = 2 epochs; momentum mirrors the lr.
    s = clr.Cyclic(base_lr=0.01, max_lr=0.1, step_size_up=2 * steps_per_epoch,
                   base_momentum=0.85, max_momentum=0.95)

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    optimizer = keras.optimizers.SGD(learning_rate=clrfast.keras.Schedule(s), momentum=0.9)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    eager = not model.jit_compile  # torch's default; jax compiles the step unless told not to
    callbacks = [clrfast.keras.MomentumScheduler(s)] if eager else []
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs, verbose=0, callbacks=callbacks)

    k = int(model.optimizer.iterations)
    print(f"backend {keras.backend.backend()}: {k} iterations, next lr {s.lr(k):.4g}, "
          f"momentum {model.optimizer.momentum:.4g}")

    # The schedule is saved with the model and restored by load_model.
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "digits.keras")
        model.save(path)
        model = keras.saving.load_model(path)
    _, acc = model.evaluate(x_test, y_test, verbose=0)
    print(f"reloaded schedule: {model.optimizer.get_config()['learning_rate']['config']['schedule']['type']}")
    print(f"test accuracy {acc:.4f}")


if __name__ == "__main__":
    main()
