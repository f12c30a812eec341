"""On-policy sampling and the exact local dynamics of the GPS trainer."""

import jax
import jax.numpy as jnp
import numpy as np

from lopt import evaluation, gps, objectives
from lopt.gps import exact_dynamics, features, trainer

FAMILY = objectives.logistic_regression()
CONFIG = gps.Config.preset("smoke", rollouts={"num_samples": 3, "horizon": 6})
LAYOUT = CONFIG.features.layout(FAMILY.dim)


def _policy(seed=0):
    keys = jax.random.split(jax.random.key(seed), 2)
    fresh = gps.policy.init(keys[0], LAYOUT.size - LAYOUT.dim, FAMILY.dim, 8, jnp.float64)
    return fresh._replace(action_scale=jnp.full(FAMILY.dim, 0.3),
                          variance=jnp.full(FAMILY.dim, 1e-4))


def test_noiseless_policy_samples_are_the_exported_optimizers_runs():
    with jax.enable_x64():
        problems = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64),
                                FAMILY.sample(jax.random.key(0), 2))
        x0 = FAMILY.init(jax.random.key(1), 2).astype(jnp.float64)
        still = _policy()._replace(variance=jnp.zeros(FAMILY.dim))
        samples = trainer.sample_policy(CONFIG.rollouts, CONFIG.features, FAMILY, problems, x0,
                                        still, jax.random.key(2))
        assert samples.states.shape == (2, 3, 7, LAYOUT.size)
        opt = gps.learned.predicted_step_descent(still, CONFIG.features, FAMILY.dim)
        curves = evaluation.batch_curves(opt, FAMILY, problems, x0, CONFIG.rollouts.horizon)
        np.testing.assert_allclose(samples.values[:, 0], curves, rtol=1e-12)
        noisy = trainer.sample_policy(CONFIG.rollouts, CONFIG.features, FAMILY, problems, x0,
                                      _policy(), jax.random.key(2))
        assert not np.allclose(noisy.values[:, 0, 1:], curves[:, 1:])


def test_exact_dynamics_predict_the_next_observation_to_first_order():
    with jax.enable_x64():
        problems = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64),
                                FAMILY.sample(jax.random.key(3), 2))
        x0 = FAMILY.init(jax.random.key(4), 2).astype(jnp.float64)
        samples = trainer.sample_policy(CONFIG.rollouts, CONFIG.features, FAMILY, problems, x0,
                                        _policy(), jax.random.key(5))
        model = exact_dynamics.linearise(FAMILY, CONFIG.features, problems, samples, 1e-9)
        assert model.matrix.shape == (2, 6, LAYOUT.observation_size, LAYOUT.size + LAYOUT.dim)
        np.testing.assert_allclose(model.matrix[..., LAYOUT.dim:LAYOUT.size], 0.0)
        # A transition near the samples: the model's prediction is right to second order.
        state = jnp.mean(samples.states[0, :, 2], axis=0)
        action = jnp.mean(samples.actions[0, :, 2], axis=0) + 1e-3
        loss_fn = FAMILY.objective(jax.tree.map(lambda a: a[0], problems))
        tracker = features.Tracker(*jax.value_and_grad(loss_fn)(state[:LAYOUT.dim]))
        _, _, observation = features.step(CONFIG.features, loss_fn, state, tracker, action)
        predicted = model.matrix[0, 2] @ jnp.concatenate([state, action]) + model.offset[0, 2]
        np.testing.assert_allclose(predicted, observation, atol=1e-4)
        np.testing.assert_array_less(np.linalg.eigvalsh(model.covariance), 1e-3)

