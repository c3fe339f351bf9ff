"""JAX + optax: one-cycle learning rate and momentum on scikit-learn's digits (nothing downloaded).

    python examples/optax_digits.py

An MLP written in plain JAX on the 8x8 digits (1347 training and 450 test images), trained with
optax.sgd under jax.jit. clrfast.optax turns the clrfast schedule into optax schedules for the
learning rate and, through optax.inject_hyperparams, for the momentum. A few seconds on one CPU.
"""

import argparse

import clrfast as clr
import clrfast.optax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def init_mlp(key, sizes):
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        key, sub = jax.random.split(key)
        params.append((jax.random.normal(sub, (n_in, n_out)) * jnp.sqrt(2.0 / n_in), jnp.zeros(n_out)))
    return params


def logits(params, x):
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return x @ w + b


def loss_fn(params, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits(params, x), y).mean()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target, test_size=0.25, random_state=0)

    # One cycle over the whole run; the momentum runs 0.95 -> 0.85 -> 0.95 against the lr.
    s = clr.OneCycle(max_lr=0.2, total_steps=args.steps)
    tx = optax.inject_hyperparams(optax.sgd)(
        learning_rate=clrfast.optax.schedule(s), momentum=clrfast.optax.momentum_schedule(s))

    params = init_mlp(jax.random.PRNGKey(0), [64, 128, 10])
    state = tx.init(params)

    @jax.jit
    def step(params, state, xb, yb):
        loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    rng = np.random.default_rng(0)
    seen = []
    for k in range(args.steps):
        idx = rng.integers(0, len(x_train), args.batch_size)
        params, state, loss = step(params, state, x_train[idx], y_train[idx])
        if k in (0, args.steps // 3, args.steps - 1):
            # The values the update at count k used, next to the core's own.
            hp = state.hyperparams
            seen.append(f"step {k}: lr {float(hp['learning_rate']):.4g} (core {s.lr(k):.4g}), "
                        f"momentum {float(hp['momentum']):.4g} (core {s.momentum(k):.4g}), loss {float(loss):.3f}")
    print("\n".join(seen))
    acc = float((jnp.argmax(logits(params, x_test), -1) == y_test).mean())
    print(f"test accuracy {acc:.4f}")


if __name__ == "__main__":
    main()
