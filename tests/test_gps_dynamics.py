"""Dynamics fit with a GMM prior, and EM for the mixture."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from lopt import gps
from lopt.gps import controllers, dynamics, features, gmm

FEATURES = gps.FeatureConfig(history=1)
LAYOUT = FEATURES.layout(2)  # dX = 5, dU = 2, dZ = 3
DX, DU, DZ = LAYOUT.size, LAYOUT.dim, LAYOUT.observation_size
DYNAMICS = gps.DynamicsConfig(model="fitted", gmm_components=2, gmm_max_iterations=20,
                               gmm_max_points=1024)


def _samples(rng, horizon, num_samples, rows, offsets, noise):
    """Transitions with observations z = rows[t] [s; u] + offsets[t] + noise (N = 1)."""
    states = rng.normal(size=(num_samples, horizon, DX))
    actions = rng.normal(size=(num_samples, horizon, DU))
    inputs = np.concatenate([states, actions], axis=-1)
    observations = np.einsum("tij,stj->sti", rows, inputs) + offsets \
        + noise * rng.normal(size=(num_samples, horizon, rows.shape[1]))
    next_states = jax.vmap(jax.vmap(lambda s, u, z: features.next_state(LAYOUT, s, u, z)))(
        jnp.asarray(states), jnp.asarray(actions), jnp.asarray(observations))
    all_states = jnp.concatenate([jnp.asarray(states[:, :1]), next_states], axis=1)
    return controllers.Samples(all_states[None], jnp.asarray(actions)[None],
                               jnp.asarray(observations)[None],
                               jnp.zeros((1, num_samples, horizon + 1)))


def test_structured_and_full_fits_recover_a_known_linear_system():
    rng = np.random.default_rng(0)
    horizon, num_samples = 3, 400
    rows = rng.normal(size=(horizon, DZ, DX + DU))
    offsets = rng.normal(size=(horizon, DZ))
    with jax.enable_x64():
        samples = _samples(rng, horizon, num_samples, rows, offsets, noise=0.05)
        # Only t = 0 has independent inputs; later states are built from the previous step.
        structured, _ = dynamics.fit(DYNAMICS, LAYOUT, samples, jax.random.key(0))
        np.testing.assert_allclose(structured.matrix[0, 0], rows[0], atol=0.05)
        np.testing.assert_allclose(structured.offset[0, 0], offsets[0], atol=0.05)
        np.testing.assert_allclose(structured.covariance[0, 0], 0.05**2 * np.eye(DZ), atol=1e-3)
        full, _ = dynamics.fit(dataclasses.replace(DYNAMICS, structured=False), LAYOUT,
                               samples, jax.random.key(0))
        assert full.matrix.shape == (1, horizon, DX, DX + DU)
        want = dynamics.dense(LAYOUT, jax.tree.map(lambda x: x[0, 0], structured))
        np.testing.assert_allclose(full.matrix[0, 0], want.matrix, atol=0.05)
        np.testing.assert_allclose(full.offset[0, 0], want.offset, atol=0.05)


def test_em_increases_the_log_likelihood_monotonically_and_finds_the_clusters():
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0, 0.0], [6.0, 0.0, 1.0], [0.0, 6.0, -2.0]])
    points = np.concatenate([c + rng.normal(size=(300, 3)) * s
                             for c, s in zip(centres, (0.5, 1.0, 0.7), strict=True)])
    with jax.enable_x64():
        fit = gmm.fit(jnp.asarray(points), jax.random.key(3), num_components=3,
                      max_iterations=60, tolerance=1e-10, regularization=1e-6)
        trace = np.asarray(fit.objective)[: int(fit.num_iterations)]
    assert len(trace) >= 5
    assert np.all(np.diff(trace) >= -1e-9), trace
    found = np.asarray(fit.gmm.means)
    distances = np.linalg.norm(found[:, None] - centres[None], axis=-1)
    assert np.all(np.min(distances, axis=0) < 0.3)
    assert np.allclose(np.sort(np.exp(np.asarray(fit.gmm.log_weights))), 1 / 3, atol=0.02)
