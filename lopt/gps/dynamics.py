"""Linear-Gaussian dynamics per objective and time step, fitted with a GMM prior.

Model (LA section 3.3): the regressed rows y_{t+1} ~ N(F_t [s_t; u_t] + f_t, Sigma_t).

* Full fit (`structured=False`): y = s_{t+1}, every row of the next state is regressed:
  F_t `[dX, dX+dU]`.
* Structured fit (`structured=True`, the default): most of s_{t+1} is a known linear function
  of (s_t, u_t) (the history shifts, x_{t+1} = x_t + u_t; `lopt.gps.features`). Only the
  observation z_{t+1} = [f(x_{t+1}) - f(x_t), new gradient] `[dZ = dim+1]` is unknown, so
  y = z and F_t is `[dZ, dX+dU]`; the next state is s_{t+1} = J [s_t; u_t] + E z_{t+1}, with
  J and E the known maps. `pullback` and `pushforward` apply J and E as the index shifts they
  are (linear functions and their transposes), never as dense matrices, so a backward or
  forward step costs O((dX+dU)^2 dZ) instead of O((dX+dU)^3).
The arrays say which model they hold: the regressed size dY is dZ or dX.

Fit: the prior is a Gaussian mixture over joint points [s_t; u_t; y_{t+1}] fitted ONCE per
GPS iteration on the transitions pooled over all training objectives and time steps (a
random subset of `gmm_max_points`). Pooled, not per objective: one objective has only
S*T = 800 transitions for a joint space of about 140 (structured) or 260 (full) dimensions,
far too few for ten full covariances, while the objectives of a family share the regimes the
mixture is meant to capture (large gradients early, small ones near a minimum); pooling also
costs the same as one fit per objective. For each objective and time step the S samples pick
a mixture-weighted normal-inverse-Wishart prior (`gmm.mean_responsibilities`,
`gmm.mixed_moments`), combined with their
empirical moments with weight `prior_strength` samples; the conditional Gaussian of y given
[s; u] gives F_t, f_t, Sigma_t. A ridge `dynamics_regularization` on the state-action block
keeps the solve well-posed with S = 20 samples in a state of a hundred or more dimensions.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from lopt.gps import features as feats
from lopt.gps import gmm as gmm_lib
from lopt.gps.config import Config
from lopt.gps.controllers import Samples


class Dynamics(NamedTuple):
    """y ~ N(matrix [s; u] + offset, covariance): matrix `[N, T, dY, dX+dU]`, offset
    `[N, T, dY]`, covariance `[N, T, dY, dY]`; dY = dZ (structured) or dX (full)."""

    matrix: jax.Array
    offset: jax.Array
    covariance: jax.Array


class StateDistribution(NamedTuple):
    """Gaussian over initial states: mean `[N, dX]`, covariance `[N, dX, dX]`."""

    mean: jax.Array
    covariance: jax.Array


def is_structured(layout: feats.StateLayout, dynamics: Dynamics) -> bool:
    return dynamics.offset.shape[-1] == layout.observation_size


# The known maps J: [s; u] -> s_next (observation zero) and E: z -> s_next (s, u zero), applied
# to the columns of a matrix, and their transposes.


def _known(layout: feats.StateLayout, state_action: jax.Array) -> jax.Array:
    zero = jnp.zeros(layout.observation_size, state_action.dtype)
    return feats.next_state(layout, state_action[: layout.size], state_action[layout.size :],
                            zero)


def _embed(layout: feats.StateLayout, observation: jax.Array) -> jax.Array:
    zero_state = jnp.zeros(layout.size, observation.dtype)
    return feats.next_state(layout, zero_state, jnp.zeros(layout.dim, observation.dtype),
                            observation)


def _columns(function, matrix: jax.Array) -> jax.Array:
    return jax.vmap(function, in_axes=1, out_axes=1)(matrix)


def _transposed(function, input_size: int, dtype):
    transpose = jax.linear_transpose(function, jnp.zeros(input_size, dtype))
    return lambda cotangent: transpose(cotangent)[0]


def known_maps(layout: feats.StateLayout, dtype):
    """(J, J^T, E, E^T) as functions on vectors; see the module docstring."""
    known = functools.partial(_known, layout)
    embed = functools.partial(_embed, layout)
    size = layout.size + layout.dim
    return (known, _transposed(known, size, dtype), embed,
            _transposed(embed, layout.observation_size, dtype))


def dense(layout: feats.StateLayout, dynamics_t: Dynamics):
    """The full-state model of one time step: F `[dX, dX+dU]`, f `[dX]`, Sigma `[dX, dX]`."""
    if not is_structured(layout, dynamics_t):
        return dynamics_t
    matrix, offset, covariance = dynamics_t
    known, _, embed, _ = known_maps(layout, matrix.dtype)
    size = layout.size + layout.dim
    full = _columns(known, jnp.eye(size, dtype=matrix.dtype)) + _columns(embed, matrix)
    noise = _columns(embed, _columns(embed, covariance).T)
    return Dynamics(full, embed(offset), noise)


def pullback(layout: feats.StateLayout, dynamics_t: Dynamics, value_hessian: jax.Array,
             value_gradient: jax.Array):
    """F^T V F `[n, n]` and F^T (V f + v) `[n]` for V `[dX, dX]` symmetric, v `[dX]`, n = dX+dU."""
    matrix, offset, _ = dynamics_t
    if not is_structured(layout, dynamics_t):
        weighted = value_hessian @ matrix
        return matrix.T @ weighted, matrix.T @ (value_hessian @ offset + value_gradient)
    _, known_t, embed, embed_t = known_maps(layout, matrix.dtype)
    v_e = _columns(embed_t, value_hessian).T  # V E [dX, dZ]
    jt_v_j = _columns(known_t, _columns(known_t, value_hessian).T)  # J^T V J [n, n]
    jt_v_e = _columns(known_t, v_e)  # [n, dZ]
    et_v_e = _columns(embed_t, v_e)  # [dZ, dZ]
    cross = jt_v_e @ matrix
    hessian = jt_v_j + cross + cross.T + matrix.T @ et_v_e @ matrix
    gradient_next = v_e @ offset + value_gradient  # V f + v, f = E offset
    return hessian, known_t(gradient_next) + matrix.T @ embed_t(gradient_next)


def pushforward(layout: feats.StateLayout, dynamics_t: Dynamics, mean: jax.Array,
                covariance: jax.Array):
    """Mean `[dX]` and covariance `[dX, dX]` of s_{t+1} for [s_t; u_t] ~ N(mean `[n]`, cov)."""
    matrix, offset, noise = dynamics_t
    if not is_structured(layout, dynamics_t):
        return matrix @ mean + offset, matrix @ covariance @ matrix.T + noise
    known, _, embed, _ = known_maps(layout, matrix.dtype)
    next_mean = known(mean) + embed(matrix @ mean + offset)
    j_cov = _columns(known, covariance)  # J Sigma [dX, n]
    j_cov_jt = _columns(known, j_cov.T)  # J Sigma J^T
    e_g_cov_jt = _columns(embed, (j_cov @ matrix.T).T)  # E G Sigma J^T [dX, dX]
    inner = matrix @ covariance @ matrix.T + noise  # [dZ, dZ]
    e_inner_et = _columns(embed, _columns(embed, inner).T)
    next_cov = j_cov_jt + e_g_cov_jt + e_g_cov_jt.T + e_inner_et
    return next_mean, 0.5 * (next_cov + next_cov.T)


def conditional_gaussian(points: jax.Array, num_inputs: int, prior_mean: jax.Array,
                         prior_covariance: jax.Array, strength: float, ridge: float):
    """Fits y | x from joint samples `[S, num_inputs + dY]` under a NIW prior.

    The posterior covariance is (S C + m Phi + S m/(S+m) d d^T) / (S + m), with C the
    empirical covariance, Phi `[D, D]` the prior covariance, d = empirical mean - prior mean
    and m = `strength`; the mean is the empirical mean (LA section 3.3). Returns F
    `[dY, num_inputs]`, f `[dY]` and the conditional covariance `[dY, dY]`.
    """
    num = points.shape[0]
    mean = jnp.mean(points, axis=0)
    centred = points - mean
    shift = mean - prior_mean
    covariance = (centred.T @ centred + strength * prior_covariance
                  + num * strength / (num + strength) * jnp.outer(shift, shift)) / (num + strength)
    inputs = slice(0, num_inputs)
    outputs = slice(num_inputs, points.shape[1])
    input_cov = covariance[inputs, inputs] + ridge * jnp.eye(num_inputs, dtype=points.dtype)
    cross = covariance[inputs, outputs]
    factor = jax.scipy.linalg.cho_factor(input_cov, lower=True)
    matrix = jax.scipy.linalg.cho_solve(factor, cross).T
    offset = mean[outputs] - matrix @ mean[inputs]
    noise = covariance[outputs, outputs] - matrix @ cross
    noise = 0.5 * (noise + noise.T) + ridge * jnp.eye(noise.shape[0], dtype=points.dtype)
    return matrix, offset, noise


def transitions(layout: feats.StateLayout, samples: Samples, structured: bool) -> jax.Array:
    """Joint points [s_t; u_t; y_{t+1}] `[N, T, S, n + dY]` (time before samples)."""
    targets = samples.observations if structured else samples.states[:, :, 1:]
    points = jnp.concatenate([samples.states[:, :, :-1], samples.actions, targets], axis=-1)
    return jnp.swapaxes(points, 1, 2)


def fit_mixture(config: Config, points: jax.Array, key: jax.Array) -> gmm_lib.GMMFit:
    """The pooled mixture on at most `gmm_max_points` of the points `[N, T, S, D]`."""
    pooled = points.reshape(-1, points.shape[-1])
    key_subset, key_fit = jax.random.split(key)
    if pooled.shape[0] > config.gmm_max_points:
        chosen = jax.random.choice(key_subset, pooled.shape[0], (config.gmm_max_points,),
                                   replace=False)
        pooled = pooled[chosen]
    return gmm_lib.fit(pooled, key_fit, config.gmm_components, config.gmm_max_iterations,
                       config.gmm_tolerance, config.gmm_regularization)


def fit(config: Config, layout: feats.StateLayout, samples: Samples, key: jax.Array):
    """Fits the dynamics of every objective and time step.

    Args:
      config: settings (`structured_dynamics`, mixture and prior settings).
      layout: the state layout.
      samples: Samples with leaves `[N, S, ...]`.
      key: PRNG key (mixture initialisation and subset).

    Returns:
      (Dynamics with leaves `[N, T, ...]`, the mixture fit `gmm.GMMFit`).
    """
    points = transitions(layout, samples, config.structured_dynamics)
    mixture = fit_mixture(config, points, key)
    whitened = gmm_lib.whiten(mixture.gmm)
    num_inputs = layout.size + layout.dim
    conditional = jax.vmap(lambda p, m, c: conditional_gaussian(
        p, num_inputs, m, c, config.prior_strength, config.dynamics_regularization))

    def one_objective(objective_points):  # [T, S, D]
        weights = gmm_lib.mean_responsibilities(whitened, objective_points)
        return conditional(objective_points, *gmm_lib.mixed_moments(mixture.gmm, weights))

    return Dynamics(*jax.lax.map(one_objective, points)), mixture


def initial_distribution(samples: Samples, ridge: float) -> StateDistribution:
    """Empirical Gaussian of the initial states `[N, S, dX]`, plus `ridge` on the diagonal."""
    initial = samples.states[:, :, 0]
    mean = jnp.mean(initial, axis=1)
    centred = initial - mean[:, None]
    covariance = jnp.einsum("nsi,nsj->nij", centred, centred) / initial.shape[1]
    return StateDistribution(mean, covariance + ridge * jnp.eye(initial.shape[-1]))
