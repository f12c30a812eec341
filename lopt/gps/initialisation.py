"""Initial controllers: gradient descent with momentum, tuned on the objectives (LM section 5).

The mean action of the initial controller is the momentum step
    u_t = -step_size * sum_{j >= 0} decay^j g_{t-j},
written as a time-invariant linear function of the state: gain -step_size * decay^j on
gradient slot j (truncated to the `history` slots of the state), or, with `past_steps`, the
exact recursion u_t = decay * u_{t-1} - step_size * g_t (gain decay on step slot 0). By
default the one (step_size, decay) pair of a grid with the lowest mean final objective value
of noiseless rollouts over all objectives is chosen, which a single stationary policy can
imitate exactly; with `momentum_per_objective=True` (the paper's choice) each objective gets
its own best pair. The grid is evaluated with `lax.map` over batches of grid points and
`vmap` over objectives.
The covariance is `initial_action_std^2 I`, for exploration.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from lopt import parallel, progress
from lopt.gps import controllers as ctrl
from lopt.gps import features as feats
from lopt.gps.config import RolloutConfig


class MomentumChoice(NamedTuple):
    """The tuned momentum settings per objective: each leaf `[N]`."""

    step_size: jax.Array
    decay: jax.Array
    final_value: jax.Array


def momentum_gain(layout: feats.StateLayout, step_size: jax.Array, decay: jax.Array):
    """The gain `[dim, dX]` whose action K s is the momentum step (module docstring)."""
    dim, history = layout.dim, layout.history
    eye = jnp.eye(dim, dtype=jnp.result_type(step_size))
    if layout.past_steps:
        gradient_weights = jnp.zeros(history).at[0].set(1.0)
    else:
        gradient_weights = decay ** jnp.arange(history)
    gain = jnp.zeros((dim, layout.size), eye.dtype)
    gradient_block = -step_size * jnp.kron(gradient_weights[None, :], eye)
    gain = gain.at[:, layout.gradients].set(gradient_block)
    if layout.past_steps:
        gain = gain.at[:, layout.steps.start : layout.steps.start + dim].set(decay * eye)
    return gain


def momentum_controllers(layout: feats.StateLayout, horizon: int, step_size: jax.Array,
                         decay: jax.Array, action_std: float) -> ctrl.Controller:
    """Momentum controllers for `[N]` step sizes and decays: leaves `[N, T, ...]`."""
    gains = jax.vmap(lambda s, d: momentum_gain(layout, s, d))(step_size, decay)
    num = gains.shape[0]
    gains = jnp.broadcast_to(gains[:, None], (num, horizon, *gains.shape[1:]))
    offsets = jnp.zeros((num, horizon, layout.dim), gains.dtype)
    covariance = action_std**2 * jnp.broadcast_to(
        jnp.eye(layout.dim, dtype=gains.dtype), (num, horizon, layout.dim, layout.dim)
    )
    return ctrl.make_controller(gains, offsets, covariance)


def tune_momentum(rollouts: RolloutConfig, features: feats.FeatureConfig, family, problems,
                  x0: jax.Array) -> MomentumChoice:
    """Grid search of (step size, decay) per objective on noiseless rollouts; leaves `[N]`."""
    layout = features.layout(family.dim)
    dtype = x0.dtype
    sizes, decays = jnp.meshgrid(
        jnp.asarray(rollouts.momentum_step_sizes, dtype),
        jnp.asarray(rollouts.momentum_decays, dtype)
    )
    num = x0.shape[0]

    def final_values(grid_point):
        size, decay, number = grid_point
        controller = momentum_controllers(
            layout, rollouts.horizon, jnp.full(num, size), jnp.full(num, decay), 1.0
        )
        values = ctrl.mean_rollouts(family, features, problems, x0, controller).values
        progress.tick(number + 1)
        return jnp.where(jnp.isfinite(values[:, -1]), values[:, -1], jnp.inf)

    grid = (sizes.reshape(-1), decays.reshape(-1))
    finals = parallel.map_over_devices(final_values, (*grid, jnp.arange(sizes.size)))  # [G, N]
    if rollouts.momentum_per_objective:
        best = jnp.argmin(finals, axis=0)
    else:
        best = jnp.full(num, jnp.argmin(jnp.mean(finals, axis=1)))
    return MomentumChoice(grid[0][best], grid[1][best], finals[best, jnp.arange(num)])


def initial_controllers(rollouts: RolloutConfig, features: feats.FeatureConfig, family,
                        problems, x0: jax.Array):
    """Tuned momentum controllers `[N, T, ...]` with exploration noise, and the choices."""
    choice = tune_momentum(rollouts, features, family, problems, x0)
    layout = features.layout(family.dim)
    controller = momentum_controllers(
        layout, rollouts.horizon, choice.step_size, choice.decay, rollouts.initial_action_std
    )
    return controller, choice
