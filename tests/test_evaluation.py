"""Evaluation harness and margin of victory."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt import evaluation, objectives


def test_run_equals_numpy_gradient_descent():
    family = objectives.quadratic(dim=5)
    problems = family.sample(jax.random.key(0), 3)
    x0 = family.init(jax.random.key(1), 3)
    curves = evaluation.run(optax.sgd(0.4), family, problems, 12, x0=x0)
    assert curves.shape == (3, 13)
    for p in range(3):
        matrix, vector = np.asarray(problems["matrix"][p]), np.asarray(problems["vector"][p])
        x, values = np.asarray(x0[p]), []
        for _ in range(13):
            values.append(0.5 * x @ matrix @ x - vector @ x)
            x = x - 0.4 * (matrix @ x - vector)
        np.testing.assert_allclose(curves[p], values, rtol=1e-5, atol=1e-6)


def test_run_from_key_is_deterministic_and_compiles_once():
    family = objectives.logistic_regression()
    problems = family.sample(jax.random.key(0), 4)
    opt = optax.sgd(0.1)
    first = evaluation.run(opt, family, problems, 5, jax.random.key(2))
    cache_size = evaluation._compiled_trajectories._cache_size()
    second = evaluation.run(opt, family, family.sample(jax.random.key(9), 4), 5, jax.random.key(2))
    assert evaluation._compiled_trajectories._cache_size() == cache_size, "no recompilation"
    np.testing.assert_allclose(first[:, 0], jax.vmap(family.loss)(
        problems, family.init(jax.random.key(2), 4)), rtol=1e-6)
    assert not np.allclose(first, second)


def _numpy_gradient_descent(problems, x0, learning_rate, num_steps):
    """Curves [P, num_steps + 1] of x <- x - lr (A x - b) on 0.5 x'Ax - b'x, in NumPy."""
    curves = []
    for p in range(x0.shape[0]):
        matrix, vector = np.asarray(problems["matrix"][p]), np.asarray(problems["vector"][p])
        x, values = np.asarray(x0[p], np.float64), []
        for _ in range(num_steps + 1):
            values.append(0.5 * x @ matrix @ x - vector @ x)
            x = x - learning_rate * (matrix @ x - vector)
        curves.append(values)
    return np.array(curves)


def test_fresh_optimizers_of_one_kind_compile_once_and_keep_their_own_numbers():
    family = objectives.quadratic(dim=5)
    problems = family.sample(jax.random.key(3), 3)
    x0 = family.init(jax.random.key(4), 3)
    evaluation.run(optax.sgd(0.05), family, problems, 7, x0=x0)
    cache_size = evaluation._compiled_trajectories._cache_size()
    for rate in (0.1, 0.1, 0.3):  # fresh objects, the same rate twice
        curves = evaluation.run(optax.sgd(rate), family, problems, 7, x0=x0)
        np.testing.assert_allclose(curves, _numpy_gradient_descent(problems, x0, rate, 7),
                                   rtol=1e-5, atol=1e-6)
    assert evaluation._compiled_trajectories._cache_size() == cache_size
    evaluation.run(optax.sgd(0.1, momentum=0.9), family, problems, 7, x0=x0)
    assert evaluation._compiled_trajectories._cache_size() == cache_size + 1  # another kind


def test_an_optimizer_branching_on_its_float_in_python_still_runs():
    def gradient_descent(learning_rate):
        def update(grads, state, params=None):
            del params
            if learning_rate > 1.0:  # a Python branch: the rate cannot be traced
                raise ValueError("too large")
            return jax.tree.map(lambda g: -learning_rate * g, grads), state
        return optax.GradientTransformation(lambda params: optax.EmptyState(), update)

    family = objectives.quadratic(dim=5)
    problems = family.sample(jax.random.key(3), 2)
    x0 = family.init(jax.random.key(4), 2)
    curves = evaluation.run(gradient_descent(0.2), family, problems, 6, x0=x0)
    np.testing.assert_allclose(curves, _numpy_gradient_descent(problems, x0, 0.2, 6),
                               rtol=1e-5, atol=1e-6)


def test_diverging_optimizer_never_produces_non_finite_curves():
    family = objectives.rosenbrock()
    problems = family.sample(jax.random.key(0), 2)
    curves, iterates = evaluation.run(optax.sgd(1e3), family, problems, 30, jax.random.key(1),
                                      return_iterates=True)
    assert np.all(np.isfinite(curves)) and np.all(np.isfinite(iterates))
    assert iterates.shape == (2, 31, 2)


def test_margin_of_victory_exact_values():
    curves = {  # two problems, three iterations
        "a": np.array([[1.0, 0.5, 0.2], [1.0, 0.9, 0.1]]),
        "b": np.array([[1.0, 0.4, 0.3], [1.0, 0.8, 0.4]]),
        "c": np.array([[1.0, 0.6, 0.25], [1.0, 0.7, 0.3]]),
    }
    per_problem = evaluation.margin_of_victory(curves, per_problem=True)
    np.testing.assert_allclose(per_problem["a"], [[0, -0.1, 0.05], [0, -0.2, 0.2]])
    np.testing.assert_allclose(per_problem["b"], [[0, 0.1, -0.1], [0, -0.1, -0.3]])
    np.testing.assert_allclose(per_problem["c"], [[0, -0.2, -0.05], [0, 0.1, -0.2]])
    mean = evaluation.margin_of_victory(curves)
    np.testing.assert_allclose(mean["a"], [0, -0.15, 0.125])
    positive = np.stack([per_problem[k] > 0 for k in curves]).sum(axis=0)
    assert positive.max() <= 1, "at most one algorithm wins each (problem, iteration)"


def test_margin_of_victory_on_random_curves_has_single_winner():
    rng = np.random.default_rng(0)
    curves = {name: rng.normal(size=(20, 30)) for name in "abcde"}
    margins = evaluation.margin_of_victory(curves, per_problem=True)
    stacked = np.stack(list(margins.values()))
    assert np.all((stacked > 0).sum(axis=0) == 1)
    best = np.stack(list(curves.values())).argmin(axis=0)
    np.testing.assert_array_equal(stacked.argmax(axis=0), best)


def test_margin_of_victory_treats_nan_as_worst():
    margins = evaluation.margin_of_victory(
        {"a": np.array([[np.nan]]), "b": np.array([[1.0]]), "c": np.array([[2.0]])},
        per_problem=True)
    assert margins["b"][0, 0] == 1.0 and margins["a"][0, 0] == -np.inf


def test_bad_inputs_raise_clear_errors():
    family = objectives.logistic_regression()
    problems = family.sample(jax.random.key(0), 3)
    with pytest.raises(ValueError, match="num_steps must be a positive integer"):
        evaluation.run(optax.sgd(0.1), family, problems, 0, jax.random.key(0))
    with pytest.raises(ValueError, match=r"x0 must have shape \[num_problems, dim\] = \[3, 4\]"):
        evaluation.run(optax.sgd(0.1), family, problems, 5, x0=jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match="share one leading axis"):
        evaluation.run(optax.sgd(0.1), family, {"inputs": problems["inputs"],
                       "labels": problems["labels"][:2]}, 5, jax.random.key(0))
    with pytest.raises(ValueError, match="at least two algorithms"):
        evaluation.margin_of_victory({"a": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="one shape"):
        evaluation.margin_of_victory({"a": np.zeros((2, 3)), "b": np.zeros((2, 4))})
