"""Time-varying linear-Gaussian controllers and their rollouts on batches of objectives.

A controller for one objective is p(u_t | s_t) = N(K_t s_t + k_t, Sigma_t), t = 0..T-1.
A batch of controllers carries the leading axes `[num_objectives, T, ...]`; the functions
here work on one objective and are vmapped by the caller (or by `sample`). The action u_t is
the step: x_{t+1} = x_t + u_t (see `lopt.gps.features`).

Shapes, with N objectives, S samples per objective, horizon T, state size dX, action size dU
(= the family's dim) and observation size dZ = dU + 1:
  Controller.gain        [N, T, dU, dX]    K_t
  Controller.offset      [N, T, dU]        k_t
  Controller.covariance  [N, T, dU, dU]    Sigma_t
  Controller.cholesky    [N, T, dU, dU]    lower Cholesky factor of Sigma_t
  Controller.precision   [N, T, dU, dU]    Sigma_t^{-1}
  Samples.states         [N, S, T+1, dX]
  Samples.actions        [N, S, T, dU]
  Samples.observations   [N, S, T, dZ]     observation that produced states[..., t+1, :]
  Samples.values         [N, S, T+1]       f(x_t) along the trajectory (the cost, section 4)
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from lopt import parallel
from lopt.gps import features as feats
from lopt.gps import small_linalg


class Controller(NamedTuple):
    """Linear-Gaussian controller(s); shapes in the module docstring."""

    gain: jax.Array
    offset: jax.Array
    covariance: jax.Array
    cholesky: jax.Array
    precision: jax.Array


class Samples(NamedTuple):
    """Sampled trajectories; shapes in the module docstring."""

    states: jax.Array
    actions: jax.Array
    observations: jax.Array
    values: jax.Array


def _symmetric(matrix: jax.Array) -> jax.Array:
    return 0.5 * (matrix + jnp.swapaxes(matrix, -1, -2))


def make_controller(gain: jax.Array, offset: jax.Array, covariance: jax.Array) -> Controller:
    """Builds a Controller (any leading axes) from K `[..., dU, dX]`, k `[..., dU]`, Sigma."""
    covariance = _symmetric(covariance)
    cholesky = small_linalg.cholesky(covariance)
    eye = jnp.broadcast_to(jnp.eye(covariance.shape[-1], dtype=covariance.dtype), covariance.shape)
    precision = _symmetric(small_linalg.cho_solve(cholesky, eye))
    return Controller(gain, offset, covariance, cholesky, precision)


def from_precision(gain: jax.Array, offset: jax.Array, cholesky_of_precision: jax.Array,
                   precision: jax.Array) -> Controller:
    """Builds a Controller from K, k and the precision Sigma^{-1} with its lower Cholesky factor.

    This is how the LQG hands over Sigma = Q_uu^{-1} without a second factorisation.
    """
    eye = jnp.broadcast_to(jnp.eye(precision.shape[-1], dtype=precision.dtype), precision.shape)
    covariance = _symmetric(small_linalg.cho_solve(cholesky_of_precision, eye))
    return Controller(gain, offset, covariance, small_linalg.cholesky(covariance), precision)


def mean_action(controller_t: Controller, state: jax.Array) -> jax.Array:
    """K_t s + k_t for one time step: `[dU]` from a state `[dX]`."""
    return controller_t.gain @ state + controller_t.offset


def rollout(features: feats.FeatureConfig, loss_fn, x0: jax.Array, controller: Controller,
            noise: jax.Array) -> Samples:
    """One trajectory of one objective's controller (leaves `[T, ...]`).

    Args:
      features: the state's feature set.
      loss_fn: the objective `[dim] -> []`.
      x0: initial iterate `[dim]`.
      controller: one objective's controller, leaves with leading axis T.
      noise: standard-normal action noise `[T, dU]` (zeros for the mean trajectory).

    Returns:
      Samples without the N and S axes: states `[T+1, dX]`, actions `[T, dU]`,
      observations `[T, dZ]`, values `[T+1]`.
    """
    state0, tracker0 = feats.start(features, loss_fn, x0)

    def body(carry, inputs):
        state, tracker = carry
        controller_t, noise_t = inputs
        action = mean_action(controller_t, state) + controller_t.cholesky @ noise_t
        next_state, next_tracker, observation = feats.step(
            features, loss_fn, state, tracker, action
        )
        return (next_state, next_tracker), (next_state, action, observation, next_tracker.value)

    _, (states, actions, observations, values) = jax.lax.scan(
        body, (state0, tracker0), (controller, noise)
    )
    return Samples(
        jnp.concatenate([state0[None], states]),
        actions,
        observations,
        jnp.concatenate([tracker0.value[None], values]),
    )


def sample(family, features: feats.FeatureConfig, problems, x0: jax.Array,
           controller: Controller, key: jax.Array, num_samples: int) -> Samples:
    """`num_samples` noisy rollouts per objective, vmapped over objectives and samples.

    Args:
      family: an objective family (`lopt.objectives`).
      features: the state's feature set.
      problems: problem data, leaves with leading axis N.
      x0: initial iterates `[N, dim]` (every sample of an objective starts there).
      controller: Controller with leaves `[N, T, ...]`.
      key: PRNG key.
      num_samples: S.

    Returns:
      Samples with leaves `[N, S, ...]` (module docstring).
    """
    num_objectives, horizon, dim = controller.offset.shape
    chex.assert_shape(x0, (num_objectives, dim))
    chex.assert_shape(controller.gain, (num_objectives, horizon, dim,
                                        features.state_size(dim)))
    noise = jax.random.normal(
        key, (num_objectives, num_samples, horizon, dim), dtype=controller.offset.dtype
    )

    def one_objective(problem, start, ctrl, noises):
        loss_fn = family.objective(problem)
        return jax.vmap(lambda n: rollout(features, loss_fn, start, ctrl, n))(noises)

    return in_chunks(one_objective, problems, x0, controller, noise)


CHUNK = 64  # objectives per vmapped chunk of the rollouts (`in_chunks`)


def in_chunks(one_objective, *inputs):
    """`one_objective` over the leading (objective) axis of `inputs`: vmapped within chunks of
    CHUNK objectives, a `lax.map` over the chunks, split over all devices (`lopt.parallel`).
    One vmap over all objectives gave the same samples but held about twice their size in
    temporaries (time-major scan outputs, then transposed); chunks keep that to one chunk's."""
    return parallel.map_over_devices(one_objective, *inputs, batch_size=CHUNK)


def mean_rollouts(family, features: feats.FeatureConfig, problems, x0: jax.Array,
                  controller: Controller) -> Samples:
    """Noiseless rollouts (actions K s + k) of every objective: leaves `[N, ...]`."""

    def one_objective(problem, start, ctrl):
        noise = jnp.zeros_like(ctrl.offset)
        return rollout(features, family.objective(problem), start, ctrl, noise)

    return jax.vmap(one_objective)(problems, x0, controller)
