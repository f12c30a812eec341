"""The GPS settings that choose a branch of the loop: each one run, and checked against an
independent fact (a closed form, an equivalent run, or the returned optimizer's own runs)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt import evaluation, gps, objectives
from lopt.gps import trajectory_opt

FAMILY = objectives.logistic_regression()
SMOKE = gps.Config.preset("smoke", loop={"num_iterations": 1})
PROBLEMS = FAMILY.sample(jax.random.key(0), 4)  # as in test_gps_train: shared compilations
KEY = jax.random.key(1)


def test_early_cost_weight_scales_exactly_the_first_steps_of_the_lqg_cost():
    config = SMOKE.replace(lqg={"early_cost_weight": 2.0, "early_cost_steps": 3})
    layout = config.features.layout(FAMILY.dim)
    with jax.enable_x64():
        problems = jax.tree.map(lambda leaf: jnp.asarray(leaf, jnp.float64), PROBLEMS)
        x0 = FAMILY.init(jax.random.key(2), 4).astype(jnp.float64)
        loop, _ = trajectory_opt.initial_state(config.rollouts, config.features, FAMILY,
                                               problems, x0)
        samples = trajectory_opt.sample_stage(config.rollouts, config.features, FAMILY,
                                              problems, x0, loop.controller, jax.random.key(3))
        plain, weighted = (jax.tree.map(np.asarray, trajectory_opt.expand_cost(
            settings.lqg, FAMILY, layout, problems, samples)) for settings in (SMOKE, config))
    steps = np.arange(config.rollouts.horizon + 1)
    factor = np.where((steps >= 1) & (steps <= 3), 3.0, 1.0)
    np.testing.assert_allclose(weighted.constant, plain.constant * factor, rtol=1e-12)
    np.testing.assert_allclose(weighted.gradient, plain.gradient * factor[:, None], rtol=1e-12)
    np.testing.assert_allclose(weighted.hessian, plain.hessian * factor[:, None, None],
                               rtol=1e-12)
    assert np.any(plain.gradient[:, 1:4] != 0)  # the weighted steps carry a cost


def _history(learned):
    return [{k: v for k, v in record.items() if "seconds" not in k} for record in learned.history]


def test_several_starts_per_objective_train_as_the_objectives_repeated():
    config = SMOKE.replace(loop={"validation_steps": 0})
    starts = gps.train(FAMILY, PROBLEMS, config.replace(loop={"validation_steps": 0,
                                                              "starts_per_objective": 2}), KEY)
    repeated = jax.tree.map(lambda leaf: jnp.repeat(leaf, 2, axis=0), PROBLEMS)
    plain = gps.train(FAMILY, repeated, config, KEY)
    assert _history(starts) == _history(plain)
    for got, want in zip(jax.tree.leaves(starts.policy), jax.tree.leaves(plain.policy),
                         strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("settings", [
    {"loop": {"sampling": "controllers", "coupling": "mirror_descent"}},
    {"loop": {"sampling": "controllers", "coupling": "trajectory"}},
    {"dynamics": {"model": "fitted"}},
])
def test_each_branch_trains_and_returns_its_best_validated_policy(settings):
    config = SMOKE.replace(**settings)
    learned = gps.train(FAMILY, PROBLEMS, config, KEY)
    assert len(learned.history) == 1
    for record in learned.history:
        assert all(np.isfinite(value) for name, value in record.items() if name != "eta")
        assert 0 <= record["kl"] <= record["kl_bound"] * (1 + config.lqg.kl_tolerance) + 1e-9
    # The returned optimizer, run by the evaluation harness from the validation starts (the
    # trainer draws them from the first of its key's three parts), scores no worse than any
    # iteration's recorded validation cost.
    starts = FAMILY.init(jax.random.fold_in(jax.random.split(KEY, 3)[0], 1), 4)
    with jax.enable_x64():
        curves = evaluation.run(gps.as_optax(learned),
                                FAMILY, jax.tree.map(lambda a: jnp.asarray(a, jnp.float64),
                                                     PROBLEMS),
                                config.loop.validation_steps, x0=starts.astype(jnp.float64))
    validated = float(np.mean(np.asarray(curves)[:, 1:]))
    best_recorded = min(record["validation_cost"] for record in learned.history)
    assert validated <= best_recorded * (1 + 1e-9)
