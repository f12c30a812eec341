"""Quadratic expansion of the cost around sampled trajectories (LM section 4).

The cost of a state is the objective value at its iterate, c(s_t) = f(x_t), for t = 0..T.
Its expansion uses the exact gradient and Hessian of f (`jax.grad`, `jax.hessian`) at each
sampled iterate, written in absolute coordinates,
    c(s, u) ~= 1/2 [s; u]^T H_t [s; u] + g_t^T [s; u] + c_t,
and averaged over the samples (as in LA's reference code). Only the iterate block of H_t and
g_t is non-zero; the action and the history enter the cost only through the dynamics. The
last step t = T has no action: its action block is zero and unused.

Extra quadratic terms (e.g. a policy coupling in part 2) are added with `add`.
Shapes: QuadraticCost leaves are `[N, T+1, k, k]`, `[N, T+1, k]`, `[N, T+1]`: a cost over the
leading k <= n coordinates of z = [s; u] (n = dX + dU), zero on the rest. `expand` gives
k = dim, the iterate block (a full `[n, n]` Hessian per objective and step would be 5.2 GB
at 900 logistic objectives, all of it zeros but 16 entries); the LQG pads one objective at a
time (`embedded`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from lopt import parallel
from lopt.gps import features as feats
from lopt.gps.controllers import Samples


class QuadraticCost(NamedTuple):
    """1/2 z^T hessian z + gradient^T z + constant in the leading k coordinates of z = [s; u]
    (zero on the rest); shapes in the module doc."""

    hessian: jax.Array
    gradient: jax.Array
    constant: jax.Array


def add(first: QuadraticCost, second: QuadraticCost) -> QuadraticCost:
    """The sum of two quadratic costs of equal shapes."""
    return QuadraticCost(*jax.tree.map(jnp.add, tuple(first), tuple(second)))


def embedded(cost: QuadraticCost, size: int) -> QuadraticCost:
    """`cost` over its leading k coordinates as the same cost over `size` >= k coordinates
    (zero-padded Hessian and gradient); any leading axes."""
    pad = size - cost.gradient.shape[-1]
    if pad < 0:
        raise ValueError(f"a cost over {cost.gradient.shape[-1]} coordinates does not fit in "
                         f"{size}")
    if pad == 0:
        return cost
    leading = [(0, 0)] * (cost.gradient.ndim - 1)
    return QuadraticCost(jnp.pad(cost.hessian, leading + [(0, pad), (0, pad)]),
                         jnp.pad(cost.gradient, leading + [(0, pad)]), cost.constant)


def expand(family, layout: feats.StateLayout, problems, samples: Samples) -> QuadraticCost:
    """Expansion of f(x_t) for every objective and time step from Samples `[N, S, ...]`, over
    the iterate block (k = dim; `embedded` pads it to z = [s; u])."""

    def at_point(problem, x):
        value, gradient = jax.value_and_grad(family.loss, argnums=1)(problem, x)
        hessian = jax.hessian(family.loss, argnums=1)(problem, x)
        hx = hessian @ x
        return hessian, gradient - hx, value - gradient @ x + 0.5 * x @ hx

    def one_objective(problem, iterates):  # iterates [S, T+1, dim]
        per_point = jax.vmap(jax.vmap(lambda x: at_point(problem, x)))(iterates)
        return jax.tree.map(lambda a: jnp.mean(a, axis=0), per_point)

    iterates = feats.iterate(layout, samples.states)
    # Objectives one at a time, as in `exact_dynamics.linearise`: vmapping them as well holds
    # every point's Hessian intermediates at once. Split over all devices.
    return QuadraticCost(*parallel.map_over_devices(one_objective, problems, iterates))


def time_weights(horizon: int, early_weight: float, early_steps: int, dtype) -> jax.Array:
    """Weights `[horizon + 1]` of the cost of f(x_t): 1 + early_weight for t = 1..early_steps,
    1 elsewhere (`Config.early_cost_weight`)."""
    t = jnp.arange(horizon + 1)
    return 1.0 + early_weight * ((t >= 1) & (t <= early_steps)).astype(dtype)


def weighted(cost: QuadraticCost, weights: jax.Array) -> QuadraticCost:
    """`cost` `[N, T+1, ...]` with time step t scaled by `weights[t]`."""
    return QuadraticCost(cost.hessian * weights[:, None, None], cost.gradient * weights[:, None],
                         cost.constant * weights)
