"""Linear-Gaussian dynamics per objective and time step, fitted with a GMM prior.

Model (LA section 3.3): the regressed rows y_{t+1} ~ N(F_t [s_t; u_t] + f_t, Sigma_t).

* Full fit (`structured=False`): y = s_{t+1}, every row of the next state is regressed:
  F_t `[dX, dX+dU]`.
* Structured fit (`structured=True`, the default): most of s_{t+1} is a known linear function
  of (s_t, u_t) (the history shifts, x_{t+1} = x_t + u_t; `lopt.gps.features`). Only the
  observation z_{t+1} = [f(x_{t+1}) - f(x_t), new gradient] `[dZ = dim+1]` is unknown, so
  y = z and F_t is `[dZ, dX+dU]`; the next state is s_{t+1} = J [s_t; u_t] + E z_{t+1}, with
  J and E the known maps. `KnownMaps` holds J and E as static index maps (J moves the iterate
  and shifts the history, E writes the observation into its slots); `pick` and
  `embed_transpose` apply them as slices, never as dense matrices, so the LQG's backward and
  forward steps cost O((dX+dU)^2 (dZ+dU)) instead of O((dX+dU)^3) (`lopt.gps.lqg`).
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
import numpy as np

from lopt.gps import features as feats
from lopt.gps import gmm as gmm_lib
from lopt.gps import small_linalg
from lopt.gps.config import DynamicsConfig
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


class KnownMaps(NamedTuple):
    """The known part of s_{t+1} = J [s_t; u_t] + E y_{t+1} as static index maps (NumPy).

    shift `[n]`: column a of J is the unit vector e_{shift[a]} (a zero column where
    shift[a] = dX). embed `[dX]`: row r of E is e_{embed[r]}^T (a zero row where
    embed[r] = dY). state_source `[dX]` and action_source `[dX]`: row r of J picks state
    entry state_source[r] (none where = dX) plus action entry action_source[r] (none where
    = dU). Structured model: J shifts the history and moves the iterate, E writes the
    observation; full model: J = 0 and E = I.
    """

    shift: np.ndarray
    embed: np.ndarray
    state_source: np.ndarray
    action_source: np.ndarray


def known_maps(layout: feats.StateLayout, dynamics: Dynamics) -> KnownMaps:
    """The index maps of J and E for the model `dynamics` holds (structured or full)."""
    return _known_maps(layout, is_structured(layout, dynamics))


@functools.cache
def _known_maps(layout: feats.StateLayout, structured: bool) -> KnownMaps:
    size, dim = layout.size, layout.dim
    if structured:
        with jax.ensure_compile_time_eval():
            zero_observation = jnp.zeros(layout.observation_size)
            known = np.asarray(jax.vmap(lambda a: feats.next_state(
                layout, a[:size], a[size:], zero_observation), out_axes=1)(jnp.eye(size + dim)))
            embed = np.asarray(jax.vmap(lambda z: feats.next_state(
                layout, jnp.zeros(size), jnp.zeros(dim), z), out_axes=1)(
                    jnp.eye(layout.observation_size)))
    else:
        known = np.zeros((size, size + dim))
        embed = np.eye(size)
    shift = _unit_positions(known, axis=0)
    state_source = _unit_positions(known[:, :size], axis=1)
    action_source = _unit_positions(known[:, size:], axis=1)
    return KnownMaps(shift, _unit_positions(embed, axis=1), state_source, action_source)


def _unit_positions(matrix: np.ndarray, axis: int) -> np.ndarray:
    """Where the single 1 of each row (axis=1) or column (axis=0) of a 0/1 `matrix` is, or
    matrix.shape[axis] where there is none."""
    if not (np.isin(matrix, (0.0, 1.0)).all() and (matrix.sum(axis) <= 1).all()):
        raise ValueError("a known map of the state is not a partial selection")
    return np.where(matrix.any(axis), matrix.argmax(axis), matrix.shape[axis])


def pick(array: jax.Array, index: np.ndarray, axis: int) -> jax.Array:
    """`array` indexed by the static `index` along `axis`, zero where index is out of range.

    Built from slices of consecutive runs (a shift is a handful of copies, no FLOPs).
    """
    size = array.shape[axis]
    pieces = []
    for start, length in _runs(index, size):
        if start == size:
            shape = list(array.shape)
            shape[axis] = length
            pieces.append(jnp.zeros(shape, array.dtype))
        else:
            pieces.append(jax.lax.slice_in_dim(array, start, start + length, axis=axis))
    return pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, axis=axis)


def _runs(index: np.ndarray, size: int):
    """(start, length) of the maximal runs of consecutive entries of `index` (out-of-range
    entries form runs starting at `size`)."""
    runs = []
    for value in np.minimum(index, size).tolist():
        if runs:
            start, length = runs[-1]
            extends_zeros = value == size and start == size
            extends_slice = value < size and start < size and value == start + length
            if extends_zeros or extends_slice:
                runs[-1] = (start, length + 1)
                continue
        runs.append((value, 1))
    return runs


def embed_transpose(maps: KnownMaps, array: jax.Array, size: int) -> jax.Array:
    """E^T `array` `[size, ...]` for `array` `[dX, ...]`: row k sums the rows r with
    embed[r] = k.

    Each row group of E is contiguous (the value-change block, a gradient slot), so this is
    a few slice sums and copies; its FLOPs are row additions.
    """
    pieces = []  # (kind, start, stop): "sum" of rows, "copy" of rows, or "zero" rows
    for row in range(size):
        members = np.flatnonzero(maps.embed == row)
        if len(members) and members[-1] - members[0] + 1 != len(members):
            raise ValueError("a row group of the embedding E is not contiguous")
        if len(members) == 0:
            piece = ("zero", 0, 1)
        elif len(members) > 1:
            piece = ("sum", members[0], members[-1] + 1)
        else:
            piece = ("copy", members[0], members[0] + 1)
        last = pieces[-1] if pieces else None
        if last and piece[0] == last[0] != "sum" and (piece[0] == "zero"
                                                       or piece[1] == last[2]):
            pieces[-1] = (last[0], last[1], last[2] + piece[2] - piece[1])
        else:
            pieces.append(piece)
    arrays = []
    for kind, begin, stop in pieces:
        if kind == "zero":
            arrays.append(jnp.zeros((stop - begin, *array.shape[1:]), array.dtype))
        elif kind == "sum":
            arrays.append(jnp.sum(array[begin:stop], axis=0, keepdims=True))
        else:
            arrays.append(array[begin:stop])
    return arrays[0] if len(arrays) == 1 else jnp.concatenate(arrays, axis=0)


def dense(layout: feats.StateLayout, dynamics_t: Dynamics):
    """The full-state model of one time step: F `[dX, dX+dU]`, f `[dX]`, Sigma `[dX, dX]`."""
    if not is_structured(layout, dynamics_t):
        return dynamics_t
    matrix, offset, covariance = dynamics_t
    maps = known_maps(layout, dynamics_t)
    columns = np.flatnonzero(maps.shift < layout.size)
    known = np.zeros((layout.size, layout.size + layout.dim))
    known[maps.shift[columns], columns] = 1.0
    full = jnp.asarray(known, matrix.dtype) + pick(matrix, maps.embed, axis=0)
    noise = pick(pick(covariance, maps.embed, axis=0), maps.embed, axis=1)
    return Dynamics(full, pick(offset, maps.embed, axis=0), noise)


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
    matrix = small_linalg.cho_solve(small_linalg.cholesky(input_cov), cross).T
    offset = mean[outputs] - matrix @ mean[inputs]
    noise = covariance[outputs, outputs] - matrix @ cross
    noise = 0.5 * (noise + noise.T) + ridge * jnp.eye(noise.shape[0], dtype=points.dtype)
    return matrix, offset, noise


def transitions(layout: feats.StateLayout, samples: Samples, structured: bool) -> jax.Array:
    """Joint points [s_t; u_t; y_{t+1}] `[N, T, S, n + dY]` (time before samples)."""
    targets = samples.observations if structured else samples.states[:, :, 1:]
    points = jnp.concatenate([samples.states[:, :, :-1], samples.actions, targets], axis=-1)
    return jnp.swapaxes(points, 1, 2)


def fit_mixture(config: DynamicsConfig, points: jax.Array, key: jax.Array) -> gmm_lib.GMMFit:
    """The pooled mixture on at most `gmm_max_points` of the points `[N, T, S, D]`."""
    pooled = points.reshape(-1, points.shape[-1])
    key_subset, key_fit = jax.random.split(key)
    if pooled.shape[0] > config.gmm_max_points:
        chosen = jax.random.choice(key_subset, pooled.shape[0], (config.gmm_max_points,),
                                   replace=False)
        pooled = pooled[chosen]
    return gmm_lib.fit(pooled, key_fit, config.gmm_components, config.gmm_max_iterations,
                       config.gmm_tolerance, config.gmm_regularization)


def fit(config: DynamicsConfig, layout: feats.StateLayout, samples: Samples, key: jax.Array):
    """Fits the dynamics of every objective and time step.

    Args:
      config: the dynamics settings (`structured`, mixture and prior settings).
      layout: the state layout.
      samples: Samples with leaves `[N, S, ...]`.
      key: PRNG key (mixture initialisation and subset).

    Returns:
      (Dynamics with leaves `[N, T, ...]`, the mixture fit `gmm.GMMFit`).
    """
    points = transitions(layout, samples, config.structured)
    mixture = fit_mixture(config, points, key)
    whitened = gmm_lib.whiten(mixture.gmm)
    num_inputs = layout.size + layout.dim
    conditional = jax.vmap(lambda p, m, c: conditional_gaussian(
        p, num_inputs, m, c, config.prior_strength, config.regularization))

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
