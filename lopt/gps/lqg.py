"""LQG under a KL trust region, for one objective (vmap over objectives outside).

Following LA section 3.1, the new controller p minimises E_p[sum_t c_t] subject to
sum_t E_p[KL(p(u_t|s_t) || p_ref(u_t|s_t))] <= epsilon. For a dual variable eta its
Lagrangian is solved in closed form by a maximum-entropy LQR on the modified cost
    c_t(s, u) / eta - log p_ref(u | s),
whose backward pass (`backward_pass`, a reverse `lax.scan`) gives K_t = -Q_uu^{-1} Q_us,
k_t = -Q_uu^{-1} q_u and Sigma_t = Q_uu^{-1}. The forward pass (`forward_pass`) propagates the
state-action Gaussians through the fitted dynamics, which gives the closed-form KL
(`kl_divergence`) and the expected cost (`expected_cost`). `optimise` finds eta by a
bracketing search in log(eta) inside jit: Illinois regula falsi on log KL - log epsilon,
falling back to bisection where the pass failed, carrying the best solution so far (no
final re-solve); a fixed cap on evaluations and a mask make
vmapped results identical to unbatched ones. When Q_uu is not positive definite the pass is
marked as failed and counts as "KL too large", so the search raises eta and repeats the pass
(as eta grows, -log p_ref dominates and Q_uu tends to the reference precision, which is
positive definite). `adapt_step` is the step-size rule of LA's reference code.

Reference controller: usually the previous controller; part 2 passes the linearised policy
(mirror-descent GPS) and may add a quadratic coupling term to the cost (`cost.add`).

Shapes for one objective: dynamics leaves `[T, ...]`, cost leaves `[T+1, ...]`, controllers
`[T, ...]`, n = dX + dU, state-action means `[T+1, n]`, covariances `[T+1, n, n]` (the last
step's action block is zero).
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from lopt.gps import cost as cost_lib
from lopt.gps import dynamics as dyn
from lopt.gps import features as feats
from lopt.gps.config import Config
from lopt.gps.controllers import Controller, from_precision


def _symmetric(matrix):
    return 0.5 * (matrix + matrix.T)


def reference_cost(reference_t: Controller):
    """-log p_ref(u | s) up to a constant, as a quadratic in [s; u]: `[n, n]`, `[n]`."""
    dim = reference_t.offset.shape[0]
    selector = jnp.concatenate(
        [-reference_t.gain, jnp.eye(dim, dtype=reference_t.gain.dtype)], axis=1
    )  # u - K s = selector @ [s; u]
    weighted = reference_t.precision @ selector
    return selector.T @ weighted, -weighted.T @ reference_t.offset


def backward_pass(layout: feats.StateLayout, dynamics: dyn.Dynamics, cost: cost_lib.QuadraticCost,
                  reference: Controller, eta: jax.Array):
    """Riccati recursion for cost/eta - log p_ref. Returns (Controller `[T, ...]`, ok `[]`);
    ok is False where some Q_uu was not positive definite."""
    size = layout.size
    final_hessian = cost.hessian[-1, :size, :size] / eta
    final_gradient = cost.gradient[-1, :size] / eta

    def step(carry, inputs):
        value_hessian, value_gradient = carry
        dynamics_t, hessian_t, gradient_t, reference_t = inputs
        kl_hessian, kl_gradient = reference_cost(reference_t)
        next_hessian, next_gradient = dyn.pullback(layout, dynamics_t, value_hessian,
                                                   value_gradient)
        q_hessian = _symmetric(hessian_t / eta + kl_hessian + next_hessian)
        q_gradient = gradient_t / eta + kl_gradient + next_gradient
        q_uu = q_hessian[size:, size:]
        q_us = q_hessian[size:, :size]
        cholesky = jnp.linalg.cholesky(q_uu)
        solved = jax.scipy.linalg.cho_solve(
            (cholesky, True), jnp.concatenate([q_us, q_gradient[size:, None]], axis=1)
        )
        gain, offset = -solved[:, :size], -solved[:, size]
        value_hessian = _symmetric(q_hessian[:size, :size] + q_us.T @ gain)
        value_gradient = q_gradient[:size] + q_us.T @ offset
        return (value_hessian, value_gradient), (gain, offset, cholesky, q_uu)

    inputs = (dynamics, cost.hessian[:-1], cost.gradient[:-1], reference)
    _, (gains, offsets, cholesky, precision) = jax.lax.scan(
        step, (final_hessian, final_gradient), inputs, reverse=True
    )
    ok = jnp.all(jnp.isfinite(cholesky)) & jnp.all(jnp.isfinite(offsets))
    return from_precision(gains, offsets, cholesky, precision), ok


def forward_pass(layout: feats.StateLayout, dynamics: dyn.Dynamics, controller: Controller,
                 initial_mean: jax.Array, initial_covariance: jax.Array):
    """State-action Gaussians under `controller` and the fitted dynamics.

    Returns means `[T+1, n]` and covariances `[T+1, n, n]`; at t = T the action block is 0.
    """

    def joint(mean, covariance, controller_t):
        action_mean = controller_t.gain @ mean + controller_t.offset
        cross = controller_t.gain @ covariance  # [dU, dX]
        action_cov = cross @ controller_t.gain.T + controller_t.covariance
        joint_mean = jnp.concatenate([mean, action_mean])
        joint_cov = jnp.block([[covariance, cross.T], [cross, action_cov]])
        return joint_mean, joint_cov

    def step(carry, inputs):
        mean, covariance = carry
        dynamics_t, controller_t = inputs
        joint_mean, joint_cov = joint(mean, covariance, controller_t)
        return dyn.pushforward(layout, dynamics_t, joint_mean, joint_cov), (joint_mean, joint_cov)

    (final_mean, final_cov), (means, covariances) = jax.lax.scan(
        step, (initial_mean, initial_covariance), (dynamics, controller)
    )
    dim = layout.dim
    final_mean = jnp.concatenate([final_mean, jnp.zeros(dim, final_mean.dtype)])
    final_cov = jnp.pad(final_cov, ((0, dim), (0, dim)))
    return (jnp.concatenate([means, final_mean[None]]),
            jnp.concatenate([covariances, final_cov[None]]))


def _log_det(cholesky):
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(cholesky, axis1=-2, axis2=-1)), axis=-1)


def kl_divergence(layout: feats.StateLayout, controller: Controller, reference: Controller,
                  means: jax.Array, covariances: jax.Array) -> jax.Array:
    """E_{s_t}[KL(p(.|s_t) || p_ref(.|s_t))] `[T]` for state-action marginals `[T+1, ...]`."""
    horizon, dim = controller.offset.shape
    state_means = means[:horizon, : layout.size]
    state_covs = covariances[:horizon, : layout.size, : layout.size]
    gain_gap = controller.gain - reference.gain
    mean_gap = jnp.einsum("tus,ts->tu", gain_gap, state_means) + controller.offset \
        - reference.offset
    weighted_gain = reference.precision @ gain_gap  # [T, dU, dX]
    return 0.5 * (
        jnp.einsum("tij,tji->t", reference.precision, controller.covariance) - dim
        + _log_det(reference.cholesky) - _log_det(controller.cholesky)
        + jnp.einsum("ti,tij,tj->t", mean_gap, reference.precision, mean_gap)
        + jnp.einsum("tus,tsr,tur->t", weighted_gain, state_covs, gain_gap)
    )


def expected_cost(layout: feats.StateLayout, dynamics: dyn.Dynamics,
                  cost: cost_lib.QuadraticCost, controller: Controller,
                  initial_mean: jax.Array, initial_covariance: jax.Array) -> jax.Array:
    """E[sum_t c_t] `[]` of `controller` under the local model (dynamics and cost)."""
    means, covariances = forward_pass(layout, dynamics, controller, initial_mean,
                                      initial_covariance)
    return cost_lib.expected(cost, means, covariances)


class Solution(NamedTuple):
    """Result for one objective: the new controller (leaves `[T, ...]`), eta `[]`, its total
    KL to the reference `[]`, its expected cost under the model `[]`, and the number of
    backward-forward passes the search ran `[]` (for FLOP accounting)."""

    controller: Controller
    eta: jax.Array
    kl: jax.Array
    expected_cost: jax.Array
    num_passes: jax.Array


def optimise(config: Config, layout: feats.StateLayout, dynamics: dyn.Dynamics,
             cost: cost_lib.QuadraticCost, reference: Controller, initial_mean: jax.Array,
             initial_covariance: jax.Array, kl_bound: jax.Array) -> Solution:
    """The controller minimising the expected cost with total KL to `reference` ~ `kl_bound`.

    Searches log(eta) in [log eta_min, log eta_max] (module docstring). If the bound is
    inactive at eta_min that is the answer; if it cannot be met at eta_max, eta_max is used.
    """
    horizon, dim = reference.offset.shape
    size = layout.size + dim
    chex.assert_shape(cost.hessian, (horizon + 1, size, size))
    chex.assert_shape(dynamics.matrix, (horizon, None, size))
    chex.assert_shape(initial_mean, (layout.size,))
    dtype = initial_mean.dtype
    log_tolerance = jnp.log1p(config.kl_tolerance)

    def evaluate(log_eta):
        eta = jnp.exp(log_eta)
        controller, ok = backward_pass(layout, dynamics, cost, reference, eta)
        means, covariances = forward_pass(layout, dynamics, controller, initial_mean,
                                          initial_covariance)
        kl = jnp.sum(kl_divergence(layout, controller, reference, means, covariances))
        ok = ok & jnp.isfinite(kl)
        gap = jnp.log(jnp.maximum(kl, 1e-12 * kl_bound)) - jnp.log(kl_bound)
        solution = Solution(controller, eta, kl, cost_lib.expected(cost, means, covariances),
                            jnp.asarray(0))
        return jnp.where(ok, gap, jnp.inf), solution

    low, high = jnp.log(jnp.asarray(config.eta_min, dtype)), jnp.log(
        jnp.asarray(config.eta_max, dtype))
    (gap_low, at_low), (gap_high, at_high) = evaluate(low), evaluate(high)
    inactive = gap_low <= log_tolerance
    unreachable = gap_high >= 0
    start = (low, high, gap_low, gap_high, at_high, _select(inactive, at_low, at_high),
             jnp.asarray(0), jnp.asarray(0), inactive | unreachable)

    def cond(carry):
        *_, iteration, _, done = carry
        return (~done) & (iteration < config.eta_max_iterations)

    def body(carry):
        low, high, gap_low, gap_high, at_high, _, iteration, last_side, _ = carry
        secant = high - gap_high * (high - low) / (gap_high - gap_low)
        width = high - low
        inside = jnp.isfinite(secant) & (secant > low + 1e-3 * width) & (
            secant < high - 1e-3 * width)
        candidate = jnp.where(inside, secant, 0.5 * (low + high))
        gap, at_candidate = evaluate(candidate)
        converged = jnp.abs(gap) <= log_tolerance
        too_large = gap > 0
        # Illinois: halve the retained end's gap when the same end is kept twice in a row.
        side = jnp.where(too_large, -1, 1)
        gap_low = jnp.where(too_large, gap, jnp.where(last_side == 1, 0.5 * gap_low, gap_low))
        gap_high = jnp.where(too_large, jnp.where(last_side == -1, 0.5 * gap_high, gap_high), gap)
        low = jnp.where(too_large, candidate, low)
        high = jnp.where(too_large, high, candidate)
        at_high = _select(too_large, at_high, at_candidate)
        best = _select(converged, at_candidate, at_high)
        return low, high, gap_low, gap_high, at_high, best, iteration + 1, side, converged

    *_, best, iterations, _, _ = jax.lax.while_loop(cond, body, start)
    return best._replace(num_passes=iterations + 2)


def _select(predicate, if_true, if_false):
    return jax.tree.map(lambda a, b: jnp.where(predicate, a, b), if_true, if_false)


def adapt_step(config: Config, step_mult: jax.Array, previous: jax.Array, predicted: jax.Array,
               actual: jax.Array) -> jax.Array:
    """New step multiplier from the expected costs of the previous controller and of the new
    one predicted with the old model and measured with the new model (any equal shapes).

    mult = predicted_gain / (2 max(1e-4, predicted_gain - actual_gain)), clipped to [0.1, 5],
    times the old multiplier, clipped to [min_step_mult, max_step_mult].
    """
    predicted_gain = previous - predicted
    actual_gain = previous - actual
    mult = predicted_gain / (2.0 * jnp.maximum(1e-4, predicted_gain - actual_gain))
    mult = jnp.clip(jnp.nan_to_num(mult, nan=0.1), 0.1, 5.0)
    return jnp.clip(mult * step_mult, config.min_step_mult, config.max_step_mult)
