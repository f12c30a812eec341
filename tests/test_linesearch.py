"""The strong-Wolfe line search: conditions met, the line minimiser found, bounded under vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from lopt import baselines, linesearch, objectives


def _rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def _search(fn, x, direction, **settings):
    transform = linesearch.scale_by_wolfe_linesearch(**settings)
    value, grad = jax.value_and_grad(fn)(x)
    update, state = transform.update(direction, transform.init(x), x, value=value, grad=grad,
                                     value_fn=fn)
    return update, state


@pytest.mark.parametrize("start, scale", [
    ([-1.2, 1.0, 0.5], 1.0),     # steepest descent: the first trial overshoots, zoom needed
    ([0.3, 0.1, 0.0], 1e-4),      # a tiny direction: the step has to grow by bracketing
    ([2.0, -1.0, 1.5], 1e-2),
])
@pytest.mark.parametrize("curvature", [0.1, 0.9])
def test_step_meets_the_strong_wolfe_conditions(start, scale, curvature):
    with jax.enable_x64():
        x = jnp.asarray(start)
        direction = -scale * jax.grad(_rosenbrock)(x)
        update, state = _search(_rosenbrock, x, direction, curvature=curvature)
        step = float(state.step_size)
        np.testing.assert_allclose(update, step * direction)
        slope0 = float(jax.grad(_rosenbrock)(x) @ direction)
        new_value = float(_rosenbrock(x + update))
        new_slope = float(jax.grad(_rosenbrock)(x + update) @ direction)
        assert bool(state.found)
        assert step > 0
        assert new_value <= float(_rosenbrock(x)) + 1e-4 * step * slope0
        assert abs(new_slope) <= curvature * abs(slope0)


def test_exact_on_a_quadratic_where_the_unit_step_is_the_minimiser():
    # f(x) = |x|^2 / 2 from x along d = -x: phi(a) = (1 - a)^2 |x|^2 / 2, minimised at a = 1,
    # which meets both conditions at the first evaluation.
    with jax.enable_x64():
        x = jnp.array([3.0, -4.0])
        update, state = _search(lambda v: 0.5 * v @ v, x, -x)
        np.testing.assert_allclose(update, -x)
        assert int(state.num_evaluations) == 1


def test_tight_curvature_finds_the_line_minimiser():
    # With c2 = 0.01 a strong-Wolfe step sits where phi' is 1% of phi'(0): on a strictly
    # convex objective that is next to the exact minimiser along the line (SciPy's bounded
    # scalar minimiser is the independent reference).
    with jax.enable_x64():
        family = objectives.logistic_regression()
        problem = jax.tree.map(lambda a: a[0], family.sample(jax.random.key(5), 1))
        fn = family.objective(problem)
        x = np.zeros(family.dim)
        direction = -np.asarray(jax.grad(fn)(x))
        phi = lambda a: float(fn(jnp.asarray(x + a * direction)))
        exact = scipy.optimize.minimize_scalar(phi, bounds=(0, 100), method="bounded",
                                               options={"xatol": 1e-10}).x
        _, state = _search(fn, jnp.asarray(x), jnp.asarray(direction), curvature=0.01)
        assert bool(state.found)
        np.testing.assert_allclose(float(state.step_size), exact, rtol=0.05)


def test_ascent_direction_takes_no_step_and_non_finite_values_are_too_long():
    with jax.enable_x64():
        x = jnp.array([0.5, 0.5])
        fn = lambda v: jnp.where(v[0] > 1.0, jnp.nan, jnp.sum(v ** 2))
        update, state = _search(fn, x, x)  # uphill
        np.testing.assert_array_equal(update, 0.0)
        assert not bool(state.found)
        # Downhill but the first trial lands where the objective is NaN: the search backs off.
        update, state = _search(fn, x, jnp.array([2.0, -3.0]))
        assert np.isfinite(float(fn(x + update))) and float(fn(x + update)) < float(fn(x))


def test_bounded_number_of_evaluations():
    with jax.enable_x64():
        x = jnp.array([-1.2, 1.0])
        _, state = _search(_rosenbrock, x, -jax.grad(_rosenbrock)(x), max_steps=3)
        assert int(state.num_evaluations) <= 3


def test_lbfgs_tuning_on_robust_regression_terminates():
    # Regression: with optax's zoom search this exact grid (two equal curvature constants,
    # 60 robust-regression problems, 40 steps) never finished; now it takes seconds.
    family = objectives.robust_linear_regression()
    problems = family.sample(jax.random.key(0), 60)
    with jax.enable_x64():
        result = baselines.tune(baselines.lbfgs, {"curvature": [0.5, 0.5]}, family, problems,
                                40, key=jax.random.key(1))
    assert np.all(np.isfinite(result.scores))
    assert result.scores[0] == result.scores[1]
