"""Baselines against independent references: scikit-learn, exact quadratic minimisers, NumPy."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.linear_model import LogisticRegression

from lopt import baselines, evaluation, linesearch, objectives


def _first(problems):
    return jax.tree.map(lambda a: a[:1], problems)


def test_lbfgs_reaches_sklearn_logistic_regression_minimiser():
    family = objectives.logistic_regression()
    with jax.enable_x64():
        problems = _first(family.sample(jax.random.key(11), 1))
        _, iterates = evaluation.run(baselines.lbfgs(), family, problems, 60, x0=jnp.zeros((1, 4)),
                                     return_iterates=True)
        solution = np.asarray(iterates[0, -1])
    inputs, labels = np.asarray(problems["inputs"][0]), np.asarray(problems["labels"][0])
    reference = LogisticRegression(C=1.0 / (len(labels) * family.l2), tol=1e-12, max_iter=10_000)
    reference.fit(inputs, labels)
    np.testing.assert_allclose(solution[:3], reference.coef_[0], atol=1e-4)
    np.testing.assert_allclose(solution[3], reference.intercept_[0], atol=1e-4)


@pytest.fixture(scope="module")
def quadratic_problem():
    family = objectives.quadratic(dim=8, condition_number=100.0)
    with jax.enable_x64():
        problems = _first(family.sample(jax.random.key(3), 1))
        solution = np.linalg.solve(problems["matrix"][0], problems["vector"][0])
        minimum = float(family.loss(jax.tree.map(lambda a: a[0], problems), solution))
    return family, problems, minimum


@pytest.mark.parametrize("opt, max_steps", [
    (baselines.conjugate_gradient(restart_every=100, line_search="exact"), 8 + 5),
    (baselines.lbfgs(), 8 + 5),
    (baselines.conjugate_gradient(restart_every=8), 40),
], ids=["cg_exact_linesearch", "lbfgs", "cg_wolfe"])
def test_minimises_convex_quadratic(quadratic_problem, opt, max_steps):
    family, problems, minimum = quadratic_problem
    with jax.enable_x64():
        curve = np.asarray(evaluation.run(opt, family, problems, max_steps, x0=jnp.ones((1, 8))))[0]
    assert curve[-1] - minimum < 1e-6
    assert np.all(np.diff(curve) <= 1e-12), "line-search methods never go uphill"


def test_conjugate_gradient_direction_matches_polak_ribiere_by_hand():
    transform = baselines.scale_by_conjugate_gradient(restart_every=10)
    g0, g1 = jnp.array([1.0, 2.0]), jnp.array([-0.5, 1.0])
    state = transform.init(g0)
    d0, state = transform.update(g0, state)
    d1, _ = transform.update(g1, state)
    np.testing.assert_allclose(d0, -g0)
    beta = max(0.0, float(g1 @ (g1 - g0)) / float(g0 @ g0))
    np.testing.assert_allclose(d1, -g1 + beta * d0, rtol=1e-6)


def test_momentum_matches_numpy_heavy_ball(quadratic_problem):
    family, problems, _ = quadratic_problem
    matrix, vector = (np.asarray(problems[k][0], np.float32) for k in ("matrix", "vector"))
    x, velocity, values = np.ones(8, np.float32), np.zeros(8, np.float32), []
    for _ in range(20):
        velocity = 0.8 * velocity + (matrix @ x - vector)
        x = x - 0.3 * velocity
        values.append(0.5 * x @ matrix @ x - vector @ x)
    curves = evaluation.run(baselines.momentum(0.3, 0.8), family,
                            jax.tree.map(lambda a: a.astype(jnp.float32), problems), 20,
                            x0=jnp.ones((1, 8)))
    np.testing.assert_allclose(curves[0, 1:], values, rtol=1e-4, atol=1e-5)


def test_tune_picks_the_brute_force_best_learning_rate():
    family = objectives.quadratic(dim=4, condition_number=20.0)
    problems = family.sample(jax.random.key(0), 6)
    grid = [0.01, 0.1, 0.5, 1.0, 1.5, 2.5]
    result = baselines.tune(baselines.gradient_descent, {"learning_rate": grid}, family, problems,
                            15, key=jax.random.key(1))
    x0 = np.asarray(family.init(jax.random.key(1), 6), np.float64)
    matrices, vectors = np.asarray(problems["matrix"], np.float64), np.asarray(problems["vector"])
    brute = []
    for rate in grid:
        x = x0.copy()
        values = [np.einsum("pi,pij,pj->p", x, matrices, x) / 2 - np.sum(vectors * x, 1)]
        for _ in range(15):
            x = x - rate * (np.einsum("pij,pj->pi", matrices, x) - vectors)
            values.append(np.einsum("pi,pij,pj->p", x, matrices, x) / 2 - np.sum(vectors * x, 1))
        brute.append(np.mean(values))
    assert result.best["learning_rate"] == grid[int(np.argmin(brute))]
    np.testing.assert_allclose(result.scores, brute, rtol=1e-4)


def test_tune_two_hyperparameters_grid_shape():
    family = objectives.quadratic(dim=3)
    problems = family.sample(jax.random.key(0), 2)
    result = baselines.tune(baselines.momentum, {"learning_rate": [0.1, 0.5], "decay": [0.0, 0.5,
                            0.9]}, family, problems, 5, key=jax.random.key(1), criterion="final")
    assert result.scores.shape == (6,) and set(result.best) == {"learning_rate", "decay"}


def test_bad_names_and_settings_raise():
    with pytest.raises(ValueError, match="unknown baseline 'adam'; valid: gradient_descent"):
        baselines.get("adam")
    with pytest.raises(ValueError, match="line_search must be 'wolfe' or 'exact'"):
        baselines.conjugate_gradient(line_search="armijo")
    with pytest.raises(ValueError, match="criterion must be"):
        baselines.tune(baselines.gradient_descent, {"learning_rate": [0.1]},
                       objectives.quadratic(), None, 5, key=jax.random.key(0), criterion="best")


def test_baselines_are_optax_transformations():
    for name, factory in baselines.BASELINES.items():
        settings = {key: values[0] for key, values in baselines.DEFAULT_GRIDS[name].items()}
        assert isinstance(factory(**settings), optax.GradientTransformation), name
    for group in (baselines.LINE_SEARCH_BASELINES, baselines.PAPER_BASELINES):
        assert len(group) == 4 and set(group) <= set(baselines.BASELINES)


def test_fixed_step_conjugate_gradient_is_li_malik_table_1(quadratic_problem):
    """Table 1: step -gamma * (g_i + sum_j prod_k |g_k|^2 / |g_{k-1}|^2 g_j), as a NumPy sum."""
    family, problems, _ = quadratic_problem
    gamma, num_steps = 0.02, 6
    problem = jax.tree.map(lambda a: np.asarray(a[0], np.float64), problems)
    with jax.enable_x64():
        _, iterates = evaluation.run(baselines.fixed_step_conjugate_gradient(gamma), family,
                                     problems, num_steps, x0=jnp.ones((1, 8)),
                                     return_iterates=True)
    x, grads = np.ones(8), []
    for _ in range(num_steps):
        grads.append(problem["matrix"] @ x - problem["vector"])
        norms = [g @ g for g in grads]
        direction = sum(np.prod([norms[k] / norms[k - 1] for k in range(j + 1, len(grads))])
                        * grads[j] for j in range(len(grads)))
        x = x - gamma * direction
    np.testing.assert_allclose(np.asarray(iterates[0, -1]), x, rtol=1e-9)


def test_fixed_step_lbfgs_converges_without_value_or_objective(quadratic_problem):
    family, problems, minimum = quadratic_problem
    with jax.enable_x64():
        curve = np.asarray(evaluation.run(baselines.fixed_step_lbfgs(1.0), family, problems, 60,
                                          x0=jnp.ones((1, 8))))[0]
    assert curve[-1] - minimum < 1e-6
    transform = baselines.fixed_step_lbfgs(0.5)
    params = jnp.ones(3)
    updates, _ = transform.update(params, transform.init(params), params)  # no value, no value_fn
    assert updates.shape == (3,)


def _counted(fn, counts):
    """`fn` tallying its evaluations into the Counter `counts` as they run (inside jit,
    while_loop and scan alike): "derivative" for one with derivatives (grad, jvp, any order),
    "value" for a plain one."""

    @jax.custom_jvp
    def counted(x):
        jax.debug.callback(lambda: counts.update(["value"]))
        return fn(x)

    @counted.defjvp
    def counted_jvp(primals, tangents):
        jax.debug.callback(lambda: counts.update(["derivative"]))
        return jax.jvp(fn, primals, tangents)

    return counted


def _one_gradient(state):
    del state
    return {"derivative": 1}


def _gradient_and_wolfe_trials(max_trials):
    """One gradient, then one value-and-gradient per line-search trial: as many trials as the
    search's state reports, at most `max_trials`."""

    def expected(state):
        is_search = lambda node: isinstance(node, linesearch.WolfeLinesearchState)
        (search,) = [node for node in jax.tree.leaves(state, is_leaf=is_search)
                     if is_search(node)]
        assert 1 <= int(search.num_evaluations) <= max_trials
        return {"derivative": 1 + int(search.num_evaluations)}

    return expected


def _gradient_and_three_newton_steps(state):
    # One gradient; phi' and phi'' at each of the 3 Newton steps (one second-order forward
    # evaluation each); one plain value to check that the step decreased f.
    del state
    return {"derivative": 1 + 3, "value": 1}


@pytest.mark.parametrize("opt, expected", [
    (baselines.gradient_descent(0.01), _one_gradient),
    (baselines.momentum(0.01), _one_gradient),
    (baselines.fixed_step_conjugate_gradient(0.01), _one_gradient),
    (baselines.fixed_step_lbfgs(0.1), _one_gradient),
    (baselines.lbfgs(max_linesearch_steps=3), _gradient_and_wolfe_trials(3)),
    (baselines.conjugate_gradient(restart_every=8), _gradient_and_wolfe_trials(20)),
    (baselines.conjugate_gradient(line_search="exact"), _gradient_and_three_newton_steps),
], ids=["gradient_descent", "momentum", "fixed_step_conjugate_gradient", "fixed_step_lbfgs",
        "lbfgs", "cg_wolfe", "cg_exact_linesearch"])
def test_objective_evaluations_per_step_are_the_documented_ones(quadratic_problem, opt,
                                                                 expected):
    """Counts, as it runs, what one harness step evaluates (`lopt.evaluation`: f and its
    gradient at x, then `update(grad, state, x, value=, grad=, value_fn=f)`). On this problem
    L-BFGS's first search and every CG search take several trials, so the line-search counts
    differ from one."""
    family, problems, _ = quadratic_problem
    counts = collections.Counter()
    with jax.enable_x64():
        objective = _counted(family.objective(jax.tree.map(lambda a: a[0], problems)), counts)
        opt = optax.with_extra_args_support(opt)

        @jax.jit
        def step(x, state):
            value, grad = jax.value_and_grad(objective)(x)
            updates, state = opt.update(grad, state, x, value=value, grad=grad,
                                        value_fn=objective)
            return optax.apply_updates(x, updates), state

        x = jnp.ones(8)
        state = opt.init(x)
        for index in range(8):
            counts.clear()
            x, state = jax.block_until_ready(step(x, state))
            jax.effects_barrier()
            assert counts == expected(state), f"step {index}"
