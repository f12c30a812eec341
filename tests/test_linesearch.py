"""The strong-Wolfe line search: conditions met, the line minimiser found, bounded under vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from lopt import linesearch, objectives


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


def _geman_mcclure_numpy(problems, points):
    """NumPy value and gradient of the robust-regression loss (c = 1) at points [P, K, dim]:
    f(w, b) = mean(r^2 / (1 + r^2)) with r = targets - inputs @ w - b."""
    inputs, targets = np.asarray(problems["inputs"]), np.asarray(problems["targets"])
    residual = targets[:, None] - np.einsum("pnd,pkd->pkn", inputs, points[..., :-1])
    residual -= points[..., -1:]
    values = np.mean(residual ** 2 / (1 + residual ** 2), axis=-1)
    weight = -2 * residual / (1 + residual ** 2) ** 2 / residual.shape[-1]  # df/dr / n
    grads = np.concatenate([np.einsum("pkn,pnd->pkd", weight, inputs),
                            weight.sum(-1, keepdims=True)], axis=-1)
    return values, grads


def test_strong_wolfe_under_vmap_on_robust_regression_checked_in_numpy():
    # Regression: optax's zoom search never finished on robust regression under vmap (60
    # problems x curvature constants, as `baselines.tune` runs it). Every member must stop
    # within max_steps at a step meeting the strong Wolfe conditions, checked on a NumPy copy
    # of the loss; steepest-descent and random descent directions, scaled over five decades,
    # make the search both grow the step and zoom.
    family = objectives.robust_linear_regression()
    max_steps, decrease, curvatures = 20, 1e-4, np.array([0.1, 0.5, 0.9])
    with jax.enable_x64():
        problems = jax.tree.map(np.asarray, family.sample(jax.random.key(0), 60))
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(60, family.dim))
    value0, grad0 = _geman_mcclure_numpy(problems, x0[:, None])
    random = rng.normal(size=x0.shape)
    random *= -np.sign(np.sum(random * grad0[:, 0], axis=1, keepdims=True))
    directions = np.where(np.arange(60)[:, None] % 2 == 0, -grad0[:, 0], random)
    directions *= 10.0 ** rng.uniform(-3, 2, size=(60, 1))

    def search(problem, x, direction, curvature):
        fn = lambda v: family.loss(problem, v)
        return _search(fn, x, direction, max_steps=max_steps, decrease=decrease,
                       curvature=curvature)[1]

    with jax.enable_x64():
        per_curvature = jax.vmap(search, (None, None, None, 0))
        states = jax.jit(jax.vmap(per_curvature, (0, 0, 0, None)))(problems, x0, directions,
                                                                    curvatures)
    steps, evaluations = np.asarray(states.step_size), np.asarray(states.num_evaluations)
    assert steps.shape == (60, 3) and np.all(np.asarray(states.found))
    assert np.all((evaluations >= 1) & (evaluations <= max_steps))
    assert evaluations.max() > 3  # some searches had to bracket and zoom
    points = x0[:, None] + steps[..., None] * directions[:, None]
    value, grad = _geman_mcclure_numpy(problems, points)
    slope0 = np.einsum("pkd,pd->pk", grad0, directions)
    slope = np.einsum("pkd,pd->pk", grad, directions)
    assert np.all(slope0 < 0) and np.all(steps > 0)
    assert np.all(value <= value0 + decrease * steps * slope0)
    assert np.all(np.abs(slope) <= curvatures * np.abs(slope0))
