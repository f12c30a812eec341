"""Splitting optimizers into kind and numbers: round trips and what counts as one kind."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt import optimizer_kind


def _updates(opt, steps=3):
    params = {"w": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array(0.5)}
    state = opt.init(params)
    for step in range(steps):
        grads = jax.tree.map(lambda p, s=step: jnp.sin(p + s), params)
        updates, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


@pytest.mark.parametrize("make", [
    lambda: optax.adam(1e-2),
    lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1, momentum=0.9,
                                                                    nesterov=True)),
    lambda: optax.adamw(optax.linear_schedule(0.1, 0.01, 10), weight_decay=1e-3),
])
def test_rebuilt_optimizer_gives_the_original_updates(make):
    kind, numbers = optimizer_kind.split(make())
    original, rebuilt = _updates(make()), _updates(kind.rebuild(numbers))
    for got, want in zip(jax.tree.leaves(rebuilt), jax.tree.leaves(original), strict=True):
        np.testing.assert_array_equal(got, want)


def test_kinds_are_equal_exactly_when_only_the_numbers_differ():
    adam = optimizer_kind.split(optax.adam(1e-3))[0]
    assert adam == optimizer_kind.split(optax.adam(3e-1, b1=0.5))[0]
    assert hash(adam) == hash(optimizer_kind.split(optax.adam(3e-1, b1=0.5))[0])
    assert adam != optimizer_kind.split(optax.sgd(1e-3))[0]
    assert adam != optimizer_kind.split(optax.adam(1e-3, nesterov=True))[0]  # a bool is static


def test_rebuilding_with_traced_numbers_under_jit_changes_the_result():
    kind, numbers = optimizer_kind.split(optax.sgd(0.1))
    assert numbers == [-0.1]

    @jax.jit
    def step(numbers):
        opt = kind.rebuild(numbers)
        updates, _ = opt.update(jnp.ones(2), opt.init(jnp.zeros(2)))
        return updates

    np.testing.assert_allclose(step([-0.1]), [-0.1, -0.1])
    np.testing.assert_allclose(step([-0.7]), [-0.7, -0.7])
    assert step._cache_size() == 1
    with pytest.raises(ValueError, match="holds 1 numbers, got 2"):
        kind.rebuild([1.0, 2.0])


def test_a_self_referring_closure_is_rebuilt():
    def factory(rate):
        def power(x, n):
            return x if n == 1 else x * power(x, n - 1)

        def update(grads, state, params=None):
            return jax.tree.map(lambda g: -rate * power(g, 3), grads), state
        return optax.GradientTransformation(lambda params: optax.EmptyState(), update)

    kind, numbers = optimizer_kind.split(factory(0.5))
    assert numbers == [0.5]
    updates, _ = kind.rebuild([0.25]).update(jnp.array([2.0]), optax.EmptyState())
    np.testing.assert_allclose(updates, [-2.0])
