"""Local dynamics from the objective's own derivatives instead of a GMM-prior regression.

The unknown part of a transition is the observation z_{t+1} = [f(x_t + u_t) - f(x_t),
grad f(x_t + u_t)] (`lopt.gps.features`), a deterministic function of the iterate x_t and the
step u_t alone. Its exact Jacobian is

    dz/dx = [g(x_t + u_t) - g(x_t); H(x_t + u_t)],   dz/du = [g(x_t + u_t); H(x_t + u_t)],

zero on the history part of the state (without the current gradient in the state, the
gradient part of z is g(x_t), with Jacobian [H(x_t), 0]). `linearise` averages these
Jacobians over the S samples of each objective and time step, sets the offset so that the
model passes through the mean sampled transition, and takes the noise covariance from the
residuals (plus a ridge). The result is a structured `lopt.gps.dynamics.Dynamics` (rows
dZ), used by the LQG exactly like the fitted one.

Why (our choice, `Config.dynamics_model="exact"`): the objective is differentiable, so the
local model needs no regression in a state of 129-337 dimensions from 20 samples, which is
where the fitted model was measured to mislead the LQG (predicted improvements that the
rollouts did not show) and the slowest stage of an iteration. LM fit the dynamics as unknown
(`"fitted"`, kept).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lopt import parallel
from lopt.gps import features as feats
from lopt.gps.controllers import Samples
from lopt.gps.dynamics import Dynamics


def _observation(loss_fn, current_gradient: bool, x: jax.Array, u: jax.Array) -> jax.Array:
    """z = [f(x + u) - f(x), grad f(x + u)] `[dim + 1]` (grad f(x) without the current
    gradient in the state)."""
    value, gradient = jax.value_and_grad(loss_fn)(x + u)
    value_before, gradient_before = jax.value_and_grad(loss_fn)(x)
    newest = gradient if current_gradient else gradient_before
    return jnp.concatenate([(value - value_before)[None], newest])


def linearise(family, features: feats.FeatureConfig, problems, samples: Samples,
              ridge: float) -> Dynamics:
    """Exact local dynamics of every objective and time step (module docstring).

    Args:
      family: the objective family; problems: its batched problem data `[N, ...]`.
      features: the state's feature set.
      samples: Samples `[N, S, ...]`.
      ridge: added to the diagonal of the noise covariance.

    Returns:
      Dynamics with leaves `[N, T, ...]` (matrix `[dZ, dX + dU]`).
    """
    dim = samples.actions.shape[-1]
    layout = features.layout(dim)
    size = layout.size

    def one_objective(problem, states, actions):  # [S, T+1, dX], [S, T, dU]
        observe = functools.partial(_observation, family.objective(problem),
                                    features.current_gradient)
        jacobians = jax.vmap(jax.vmap(jax.jacfwd(observe, argnums=(0, 1))))
        iterates = feats.iterate(layout, states[:, :-1])
        d_iterate, d_action = jacobians(iterates, actions)  # [S, T, dZ, dim] each
        d_iterate, d_action = jnp.mean(d_iterate, axis=0), jnp.mean(d_action, axis=0)
        horizon = actions.shape[1]
        matrix = jnp.zeros((horizon, dim + 1, size + dim), states.dtype)
        matrix = matrix.at[:, :, :dim].set(d_iterate).at[:, :, size:].set(d_action)
        inputs = jnp.concatenate([states[:, :-1], actions], axis=-1)  # [S, T, n]
        observations = jax.vmap(jax.vmap(observe))(
            iterates, actions)
        predicted = jnp.einsum("tzn,stn->stz", matrix, inputs)
        residuals = observations - predicted
        offset = jnp.mean(residuals, axis=0)
        centred = residuals - offset
        noise = jnp.einsum("sti,stj->tij", centred, centred) / centred.shape[0]
        noise = noise + ridge * jnp.eye(dim + 1, dtype=states.dtype)
        return Dynamics(matrix, offset, noise)

    # Objectives one at a time: the forward-over-reverse Jacobians of all S x T points of one
    # objective already vectorise well, and vmapping objectives too held every tangent's
    # intermediates at once (1.6 GB per 8 MLP objectives). Split over all devices.
    return parallel.map_over_devices(one_objective, problems, samples.states, samples.actions)
