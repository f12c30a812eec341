"""LQG under a KL trust region, for one objective (vmap over objectives outside).

Following LA section 3.1, the new controller p minimises E_p[sum_t c_t] subject to
sum_t E_p[KL(p(u_t|s_t) || p_ref(u_t|s_t))] <= epsilon. For a dual variable eta its
Lagrangian is solved in closed form by a maximum-entropy LQR on the modified cost
    c_t(s, u) / eta - log p_ref(u | s),
whose backward pass (`backward_pass`, a reverse `lax.scan`) gives K_t = -Q_uu^{-1} Q_us,
k_t = -Q_uu^{-1} q_u and Sigma_t = Q_uu^{-1}. The forward pass (`forward_pass`) propagates the
state Gaussians through the fitted dynamics and gives each step's expected cost and its
closed-form KL to the reference (`kl_divergence` is the same KL from given marginals). Both
passes use the known part of the dynamics as index shifts (`dynamics.KnownMaps`), so each
step is one product with [dY + 2 dU, dX] factors plus copies (see their docstrings).
`optimise` finds eta by a bracketing search in log(eta) inside jit: Illinois regula falsi on
log KL - log epsilon, falling back to bisection where the pass failed, carrying the best
solution so far (no final re-solve); from a guess of eta (the previous GPS iteration's) it
first steps outward until the root is bracketed. A fixed cap on evaluations and a mask make
vmapped results identical to unbatched ones. When Q_uu is not positive definite the pass is
marked as failed and counts as "KL too large", so the search raises eta and repeats the pass
(as eta grows, -log p_ref dominates and Q_uu tends to the reference precision, which is
positive definite). `adapt_step` is the step-size rule of LA's reference code.

Specification: `riccati_step` and `forward_step` are one step of each pass in its plain dense
form (full-state model F `[dX, n]`, joint Gaussians `[n, n]`, no structure used), and
`dense_backward_pass`, `dense_forward_pass` scan them with the arguments and results of
`backward_pass`, `forward_pass`; the fast passes are tested against them.

Work per eta: everything that does not depend on eta is computed once per search (`expand`,
`reference_terms`): the recursion runs on eta Q so that eta only scales the reference's
`[dU, ...]` rows, and the cost's share of the value Hessian, carried back through the known
shift, is accumulated once, so the search's passes never read the `[n, n]` cost Hessians (nor
compute the cost: the chosen controller's takes one more forward pass). Each pass is then a
few small products per step and the two `[dX, dX]` updates (the value Hessian's product term
and the state covariance), written so that XLA's CPU backend neither transposes a `[dX, dX]`
matrix nor forms mostly-zero ones (`expanded_backward_pass`, `expanded_forward_pass`).

Reference controller: usually the previous controller; part 2 passes the linearised policy
(mirror-descent GPS) and may add a quadratic coupling term to the cost (`cost.add`).

Shapes for one objective: dynamics leaves `[T, ...]`, cost leaves `[T+1, ...]` (over the
leading k <= n coordinates of [s; u], padded here: `cost.embedded`), controllers
`[T, ...]`, n = dX + dU; `kl_divergence` takes state-action means `[T+1, n]` and covariances
`[T+1, n, n]`.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from lopt.gps import cost as cost_lib
from lopt.gps import dynamics as dyn
from lopt.gps import features as feats
from lopt.gps import small_linalg
from lopt.gps.config import LQGConfig
from lopt.gps.controllers import Controller, from_precision


def _symmetric(matrix):
    return 0.5 * (matrix + matrix.T)


class Expansion(NamedTuple):
    """A QuadraticCost in the form both passes read (`expand`): the Hessians `[T+1, n, n]` as
    given (each step of a pass with the cost reads its state block in place; the passes only
    use it in symmetric forms), the symmetrised action rows `[T, dU, n]`, the gradient
    `[T, n]` and constant `[T]` of steps t < T, and the last step's state gradient `[dX]` and
    constant `[]`. With the dynamics also the cost's share of the value Hessian that each
    backward step reads (`_value_reads` of C_{t+1} carried back through the known maps):
    value_embedded `[T, dY, dX]` and value_rows `[T, dU, n]` (else None)."""

    hessian: jax.Array
    action_rows: jax.Array
    gradient: jax.Array
    constant: jax.Array
    final_gradient: jax.Array
    final_constant: jax.Array
    value_embedded: jax.Array | None = None
    value_rows: jax.Array | None = None


def expand(layout: feats.StateLayout, cost: cost_lib.QuadraticCost,
           dynamics: dyn.Dynamics | None = None) -> Expansion:
    """`cost` `[T+1, ...]` as an Expansion (its eta-independent parts, split by step); pass
    `dynamics` for the backward pass's value terms.

    The backward pass carries W with V = (W + W^T) / 2 (`expanded_backward_pass`); W is the
    sum of a part that only the cost feeds, W_C = (J^T W_C' J)_ss + C_ss, and a part the eta
    dependent products feed. Both are linear and each step reads only a few slices of V
    (`_value_reads`), so the slices of W_C are computed here, once per eta search, and the
    search's passes never read the cost Hessians.
    """
    size = layout.size
    cost = cost_lib.embedded(cost, size + layout.dim)
    hessian = cost.hessian
    horizon = hessian.shape[0] - 1
    action_rows = 0.5 * (hessian[:-1, size:] + jnp.swapaxes(hessian[:-1, :, size:], -1, -2))
    expansion = Expansion(hessian, action_rows, cost.gradient[:-1], cost.constant[:-1],
                          cost.gradient[-1, :size], cost.constant[-1])
    if dynamics is None:
        return expansion
    maps = dyn.known_maps(layout, dynamics)
    num_outputs = dynamics.offset.shape[-1]

    def step(accumulated, t):  # W_C of step t + 1 -> reads, W_C of step t
        reads = _value_reads(layout, maps, accumulated, num_outputs)
        return _shifted(layout, maps, accumulated) + _state_block(layout, expansion, t), reads

    _, (embedded, rows) = jax.lax.scan(step, _state_block(layout, expansion, horizon),
                                       jnp.arange(horizon), reverse=True)
    return expansion._replace(value_embedded=embedded, value_rows=rows)


def _value_reads(layout: feats.StateLayout, maps: dyn.KnownMaps, unsymmetric: jax.Array,
                 num_outputs: int):
    """What a backward step reads of the next value Hessian V = (W + W^T) / 2, from W
    `[dX, dX]` (linear in W): E^T V `[dY, dX]` and (J^T V J)_u. `[dU, n]`."""
    size = layout.size
    embedded = 0.5 * (dyn.embed_transpose(maps, unsymmetric, num_outputs)
                      + dyn.embed_transpose(maps, unsymmetric.T, num_outputs))
    rows = 0.5 * (
        dyn.pick(dyn.pick(unsymmetric, maps.shift[size:], axis=0), maps.shift, axis=1)
        + dyn.pick(dyn.pick(unsymmetric, maps.shift, axis=0), maps.shift[size:], axis=1).T)
    return embedded, rows


def _shifted(layout: feats.StateLayout, maps: dyn.KnownMaps, matrix: jax.Array) -> jax.Array:
    """(J^T M J)_ss `[dX, dX]` of M `[dX, dX]`: an index shift."""
    shift = maps.shift[: layout.size]
    return dyn.pick(dyn.pick(matrix, shift, axis=0), shift, axis=1)


def _state_block(layout: feats.StateLayout, expansion: Expansion, t) -> jax.Array:
    """The state block `[dX, dX]` of step t's cost Hessian (a slice, fused into its user)."""
    hessian_t = jax.lax.dynamic_index_in_dim(expansion.hessian, t, keepdims=False)
    return hessian_t[: layout.size, : layout.size]


class ReferenceTerms(NamedTuple):
    """The eta-independent terms of -log p_ref in the backward pass (`reference_terms`), with
    P the reference precision: the Hessian rows [-P K_ref, P] `[T, dU, n]`, P K_ref
    `[T, dU, dX]` and the gradient [K_ref^T P k_ref; -P k_ref] `[T, n]`."""

    rows: jax.Array
    weighted_gain: jax.Array
    gradient: jax.Array


def reference_terms(reference: Controller) -> ReferenceTerms:
    """The ReferenceTerms of a reference controller (leaves `[T, ...]`)."""
    weighted_gain = reference.precision @ reference.gain  # P K_ref [T, dU, dX]
    weighted_offset = jnp.einsum("tuv,tv->tu", reference.precision, reference.offset)
    return ReferenceTerms(
        jnp.concatenate([-weighted_gain, reference.precision], axis=-1), weighted_gain,
        jnp.concatenate([jnp.einsum("tus,tu->ts", weighted_gain, reference.offset),
                         -weighted_offset], axis=-1))


def riccati_step(value_hessian: jax.Array, value_gradient: jax.Array, dynamics_t: dyn.Dynamics,
                 cost_hessian: jax.Array, cost_gradient: jax.Array, reference_t: Controller,
                 eta: jax.Array):
    """One dense step of the Riccati recursion for c_t / eta - log p_ref (the specification of
    `expanded_backward_pass`'s step; no structure used).

    With z = [s; u] `[n]`, S = [-K_ref, I] `[dU, n]` and P = Sigma_ref^{-1}, the Q-function of
    step t is 1/2 z^T Q z + q^T z + const with
        Q = C / eta + S^T P S + F^T V F,   q = c / eta - S^T P k_ref + F^T (V f + v),
    its minimiser u = K s + k with K = -Q_uu^{-1} Q_us, k = -Q_uu^{-1} q_u, and the new
    controller's covariance is Q_uu^{-1} (maximum entropy). The value of step t is
    V' = Q_ss + Q_us^T K, v' = q_s + Q_us^T k. The dynamics' noise only shifts the constant.

    Args:
      value_hessian: V `[dX, dX]` of the value of s_{t+1}.
      value_gradient: v `[dX]`.
      dynamics_t: the full-state model of step t: F `[dX, n]`, f `[dX]`, noise `[dX, dX]`.
      cost_hessian: C `[n, n]` (only its symmetric part counts).
      cost_gradient: c `[n]`.
      reference_t: p_ref of step t (Controller leaves without the T axis).
      eta: the dual variable `[]`.

    Returns:
      ((V' `[dX, dX]`, v' `[dX]`), (K `[dU, dX]`, k `[dU]`, Q_uu `[dU, dU]`)).
    """
    size = value_hessian.shape[0]
    matrix, offset, _ = dynamics_t
    selector = jnp.concatenate([-reference_t.gain, jnp.eye(reference_t.offset.shape[0],
                                                           dtype=matrix.dtype)], axis=1)
    hessian = (_symmetric(cost_hessian) / eta + selector.T @ reference_t.precision @ selector
               + matrix.T @ value_hessian @ matrix)
    gradient = (cost_gradient / eta - selector.T @ reference_t.precision @ reference_t.offset
                + matrix.T @ (value_hessian @ offset + value_gradient))
    q_uu, q_us, q_u = hessian[size:, size:], hessian[size:, :size], gradient[size:]
    cholesky = jnp.linalg.cholesky(q_uu)  # NaN where Q_uu is not positive definite
    solved = jax.scipy.linalg.cho_solve((cholesky, True), jnp.concatenate(
        [q_us, q_u[:, None]], axis=1))
    gain, offset_u = -solved[:, :size], -solved[:, size]
    value = (_symmetric(hessian[:size, :size] + q_us.T @ gain), gradient[:size] + q_us.T @ offset_u)
    return value, (gain, offset_u, q_uu)


def dense_backward_pass(layout: feats.StateLayout, dynamics: dyn.Dynamics,
                        cost: cost_lib.QuadraticCost, reference: Controller, eta: jax.Array):
    """`backward_pass` by the dense `riccati_step` (the specification): same arguments and
    results. A structured model is first written as the full one `[T, dX, n]`
    (`dynamics.dense`); the recursion starts from V = C_T,ss / eta, v = c_T,s / eta."""
    size = layout.size
    dynamics = jax.vmap(lambda dynamics_t: dyn.dense(layout, dynamics_t))(dynamics)
    cost = cost_lib.embedded(cost, size + layout.dim)
    final = (_symmetric(cost.hessian[-1, :size, :size]) / eta, cost.gradient[-1, :size] / eta)

    def step(value, inputs):
        return riccati_step(*value, *inputs, eta)

    _, (gains, offsets, q_uu) = jax.lax.scan(
        step, final, (dynamics, cost.hessian[:-1], cost.gradient[:-1], reference), reverse=True)
    cholesky = jnp.linalg.cholesky(q_uu)
    ok = jnp.all(jnp.isfinite(cholesky)) & jnp.all(jnp.isfinite(offsets))
    return from_precision(gains, offsets, cholesky, q_uu), ok


def forward_step(mean: jax.Array, covariance: jax.Array, dynamics_t: dyn.Dynamics,
                 controller_t: Controller):
    """One dense step of the state Gaussian under a linear-Gaussian controller (the
    specification of `expanded_forward_pass`'s step).

    With s ~ N(mu, Sigma) and u | s ~ N(K s + k, Sigma_u), z = [s; u] ~ N(mu_z, Sigma_z):
        mu_z = [mu; K mu + k],   Sigma_z = [[Sigma, Sigma K^T], [K Sigma, K Sigma K^T + Sigma_u]],
    and s' = F z + f + noise ~ N(F mu_z + f, F Sigma_z F^T + noise).

    Args:
      mean: mu `[dX]`.
      covariance: Sigma `[dX, dX]`.
      dynamics_t: the full-state model of step t: F `[dX, n]`, f `[dX]`, noise `[dX, dX]`.
      controller_t: the controller of step t (Controller leaves without the T axis).

    Returns:
      ((next mean `[dX]`, next covariance `[dX, dX]`), (mu_z `[n]`, Sigma_z `[n, n]`)).
    """
    matrix, offset, noise = dynamics_t
    gain = controller_t.gain
    joint_mean = jnp.concatenate([mean, gain @ mean + controller_t.offset])
    joint_covariance = jnp.block([[covariance, covariance @ gain.T],
                                  [gain @ covariance,
                                   gain @ covariance @ gain.T + controller_t.covariance]])
    next_state = (matrix @ joint_mean + offset,
                  _symmetric(matrix @ joint_covariance @ matrix.T + noise))
    return next_state, (joint_mean, joint_covariance)


def dense_forward_pass(layout: feats.StateLayout, dynamics: dyn.Dynamics,
                       controller: Controller, cost: cost_lib.QuadraticCost,
                       initial_mean: jax.Array, initial_covariance: jax.Array,
                       reference: Controller | None = None):
    """`forward_pass` by the dense `forward_step` (the specification): same arguments and
    results. The state-action marginals `[T+1, n]`, `[T+1, n, n]` (no action at T) give
    E[c_t] = 1/2 mu_z^T C mu_z + 1/2 tr(C Sigma_z) + c^T mu_z + c_0 and the KL
    (`kl_divergence`)."""
    dim = layout.dim
    dynamics = jax.vmap(lambda dynamics_t: dyn.dense(layout, dynamics_t))(dynamics)
    cost = cost_lib.embedded(cost, layout.size + dim)

    def step(state, inputs):
        return forward_step(*state, *inputs)

    (final_mean, final_covariance), (means, covariances) = jax.lax.scan(
        step, (initial_mean, initial_covariance), (dynamics, controller))
    means = jnp.concatenate([means, jnp.pad(final_mean, (0, dim))[None]])
    covariances = jnp.concatenate(
        [covariances, jnp.pad(final_covariance, ((0, dim), (0, dim)))[None]])
    costs = (0.5 * jnp.einsum("ti,tij,tj->t", means, cost.hessian, means)
             + 0.5 * jnp.einsum("tij,tji->t", cost.hessian, covariances)
             + jnp.einsum("ti,ti->t", cost.gradient, means) + cost.constant)
    kls = (jnp.zeros(controller.offset.shape[:1], means.dtype) if reference is None
           else kl_divergence(layout, controller, reference, means, covariances))
    return costs, kls


def backward_pass(layout: feats.StateLayout, dynamics: dyn.Dynamics, cost: cost_lib.QuadraticCost,
                  reference: Controller, eta: jax.Array):
    """Riccati recursion for cost/eta - log p_ref. Returns (Controller `[T, ...]`, ok `[]`);
    ok is False where some Q_uu was not positive definite. See `expanded_backward_pass`."""
    return expanded_backward_pass(layout, dynamics, expand(layout, cost, dynamics), reference,
                                  reference_terms(reference), eta)


def expanded_backward_pass(layout: feats.StateLayout, dynamics: dyn.Dynamics,
                           expansion: Expansion, reference: Controller, terms: ReferenceTerms,
                           eta: jax.Array):
    """`backward_pass` from the eta-independent `expansion` (`expand` with the dynamics) and
    `terms` of its cost and reference (computed once per eta search).

    The recursion runs on eta Q and eta V (the cost plus eta times the reference's term), so
    the cost enters unscaled and eta multiplies only the reference's `[dU, ...]` rows; the
    gains are unchanged and Q_uu = (eta Q)_uu / eta. With s_{t+1} = J [s; u] + E (G [s; u] + g)
    (`dynamics.KnownMaps`; full model: J = 0, E = I) and the (scaled) value V, v of s_{t+1},
    the Q-function's Hessian is
        J^T V J + A G + G^T A^T + C + eta S^T P S,   A^T = E^T V J + 1/2 (E^T V E) G,
    with S = [-K_ref, I] and P the reference precision. J^T V J is V with shifted indices (no
    FLOPs). Only the action rows of Q are formed; the new value Hessian
        V' = Q_ss - Q_us^T Q_uu^{-1} Q_us = (J^T V J)_ss + L^T R + R^T L + C_ss
    takes a single product of [dY + 2 dU, dX] factors: L = [A_s^T; eta/2 P K_ref; -1/2 B],
    R = [G_s; K_ref; B], B = chol(Q_uu)^{-1} Q_us. The recursion carries W with
    V = (W + W^T) / 2 instead of V, W' = (J^T W J)_ss + 2 L^T R + C_ss, so no step transposes a
    [dX, dX] matrix (the [dY + dU, dX] slices of V it reads are symmetrised instead), and of W
    only the part the products feed, W_P' = (J^T W_P J)_ss + 2 L^T R: the cost's part is
    eta-independent and its slices come with the expansion (`expand`), so no pass reads the
    cost Hessians.
    """
    maps = dyn.known_maps(layout, dynamics)
    size = layout.size
    num_outputs = dynamics.offset.shape[-1]

    def step(carry, inputs):
        unsymmetric, value_gradient = carry  # W_P [dX, dX], v [dX]
        ((matrix, offset, _), action_hessian, gradient_t, cost_embedded, cost_rows,
         reference_rows, weighted_gain, reference_gradient, reference_gain) = inputs
        embedded, shifted_rows = _value_reads(layout, maps, unsymmetric, num_outputs)
        embedded = embedded + cost_embedded  # E^T V [dY, dX]
        shifted_rows = shifted_rows + cost_rows  # (J^T V J)_u. [dU, n]
        inner = dyn.embed_transpose(maps, embedded.T, num_outputs)  # E^T V E [dY, dY]
        half = dyn.pick(embedded, maps.shift, axis=1) + 0.5 * inner @ matrix  # A^T [dY, n]
        next_gradient = offset @ embedded + value_gradient  # V f + v, f = E offset
        q_gradient = (dyn.pick(next_gradient, maps.shift, axis=0)
                      + dyn.embed_transpose(maps, next_gradient, num_outputs) @ matrix
                      + gradient_t + eta * reference_gradient)
        # Products are written [m, k] @ [k, n] with a materialised left factor (transposes
        # concatenated, not a transposed concatenation): XLA then hands them to its fast
        # small-matrix kernels instead of a transposed-operand contraction (4x faster here).
        action_factor = jnp.concatenate([half[:, size:].T, matrix[:, size:].T], axis=1)
        action_rows = (  # Q_u. [dU, n]
            shifted_rows + action_factor @ jnp.concatenate([matrix, half])
            + action_hessian + eta * reference_rows)
        q_uu, q_us = _symmetric(action_rows[:, size:]), action_rows[:, :size]
        cholesky = small_linalg.cholesky(q_uu)
        whitened = small_linalg.solve_lower(
            cholesky, jnp.concatenate([q_us, q_gradient[size:, None]], axis=1))
        solved = small_linalg.solve_lower_transposed(cholesky, whitened)
        gain, offset_u = -solved[:, :size], -solved[:, size]
        whitened_us = whitened[:, :size]
        left = jnp.concatenate([half[:, :size].T, (0.5 * eta) * weighted_gain.T,
                                -0.5 * whitened_us.T], axis=1)  # L^T [dX, dY + 2 dU]
        right = jnp.concatenate([matrix[:, :size], reference_gain, whitened_us])
        low_rank = left @ right  # [dX, dX]
        unsymmetric = _shifted(layout, maps, unsymmetric) + 2.0 * low_rank
        value_gradient = q_gradient[:size] + offset_u @ q_us
        return (unsymmetric, value_gradient), (gain, offset_u, cholesky, q_uu)

    inputs = (dynamics, expansion.action_rows, expansion.gradient, expansion.value_embedded,
              expansion.value_rows, *terms, reference.gain)
    final = (jnp.zeros((size, size), expansion.hessian.dtype), expansion.final_gradient)
    _, (gains, offsets, cholesky, scaled_precision) = jax.lax.scan(step, final, inputs,
                                                                   reverse=True)
    ok = jnp.all(jnp.isfinite(cholesky)) & jnp.all(jnp.isfinite(offsets))
    return from_precision(gains, offsets, cholesky / jnp.sqrt(eta), scaled_precision / eta), ok


def forward_pass(layout: feats.StateLayout, dynamics: dyn.Dynamics, controller: Controller,
                 cost: cost_lib.QuadraticCost, initial_mean: jax.Array,
                 initial_covariance: jax.Array, reference: Controller | None = None):
    """Expected cost `[T+1]` and KL to `reference` `[T]` (zeros without one) of each step,
    propagating the state Gaussians through the fitted dynamics (`expanded_forward_pass`)."""
    return expanded_forward_pass(layout, dynamics, controller, expand(layout, cost),
                                 initial_mean, initial_covariance, reference)


def expanded_forward_pass(layout: feats.StateLayout, dynamics: dyn.Dynamics,
                          controller: Controller, expansion: Expansion, initial_mean: jax.Array,
                          initial_covariance: jax.Array, reference: Controller | None = None,
                          with_cost: bool = True):
    """`forward_pass` with the cost given as its `Expansion`. With `with_cost=False` the
    costs are None and `expansion` is not read: the eta search needs only the KL, so its
    passes do not stream the cost Hessians (the chosen controller's cost takes one more pass).

    The joint state-action covariances are never formed: with H = [K; K - K_ref; G^] Sigma
    (G^ = G_s + G_u K, one [2 dU + dY, dX] x [dX, dX] product), the next state covariance is
        Sigma' = J Sigma_joint J^T + Y + Y^T,   Y = X_u Y_u + E Y_z,
    where J Sigma_joint J^T without its action rows is Sigma with shifted indices, X_u places
    the action rows, and Y_u, Y_z `[dU, dX]`, `[dY, dX]` come from H by small products.
    """
    maps = dyn.known_maps(layout, dynamics)
    size = layout.size
    horizon, dim = controller.offset.shape
    checked = controller if reference is None else reference

    def step(carry, inputs):
        mean, covariance = carry
        dynamics_t, controller_t, reference_t, t, action_rows, gradient_t, constant_t = inputs
        matrix, offset, noise = dynamics_t
        gain = controller_t.gain
        state_matrix, action_matrix = matrix[:, :size], matrix[:, size:]
        closed_loop = state_matrix + action_matrix @ gain  # G^ [dY, dX]
        gain_gap = gain - reference_t.gain
        factor = jnp.concatenate([gain, gain_gap, closed_loop])  # F [2 dU + dY, dX]
        products = factor @ covariance  # F Sigma
        gain_cov, closed_cov = products[:dim], products[2 * dim :]
        # F Sigma F^T in one small product (its K, gap and G^ blocks are all used), and the
        # action noise's share [I; G_u] Sigma_u [I; G_u]^T.
        second = products @ jnp.concatenate([gain.T, gain_gap.T, closed_loop.T], axis=1)
        noise_factor = jnp.concatenate([jnp.eye(dim, dtype=matrix.dtype), action_matrix])
        action_noise = (noise_factor @ controller_t.covariance) @ noise_factor.T
        observation_rows = slice(2 * dim, None)
        action_mean = gain @ mean + controller_t.offset
        action_cov = _symmetric(second[:dim, :dim] + controller_t.covariance)
        observation_mean = closed_loop @ mean + action_matrix @ controller_t.offset + offset
        observation_cov = (second[observation_rows, observation_rows]
                           + action_noise[dim:, dim:] + noise)
        observation_action = second[observation_rows, :dim] + action_noise[dim:, :dim]
        rows_action = (dyn.pick(gain_cov, maps.state_source, axis=1)
                       + 0.5 * dyn.pick(action_cov, maps.action_source, axis=1))
        rows_observation = (dyn.pick(closed_cov, maps.state_source, axis=1)
                            + dyn.pick(observation_action, maps.action_source, axis=1)
                            + 0.5 * dyn.pick(observation_cov, maps.embed, axis=1))
        shifted = dyn.pick(dyn.pick(covariance, maps.state_source, axis=0), maps.state_source,
                           axis=1)
        next_cov = _add_placed(maps, shifted, rows_action, rows_observation)
        next_mean = (dyn.pick(mean, maps.state_source, axis=0)
                     + dyn.pick(action_mean, maps.action_source, axis=0)
                     + dyn.pick(observation_mean, maps.embed, axis=0))
        mean_gap = gain_gap @ mean + controller_t.offset - reference_t.offset
        step_kl = _kl(controller_t, reference_t, mean_gap,
                      jnp.sum(reference_t.precision * second[dim : 2 * dim, dim : 2 * dim]))
        if not with_cost:
            return (next_mean, next_cov), step_kl
        cross, action_hessian = action_rows[:, :size], action_rows[:, size:]
        state_hessian = _state_block(layout, expansion, t)
        trace = (jnp.sum(state_hessian * covariance) + 2.0 * jnp.sum(cross * gain_cov)
                 + jnp.sum(action_hessian * action_cov))
        joint_mean = jnp.concatenate([mean, action_mean])
        step_cost = (0.5 * (mean @ state_hessian @ mean + action_mean @ action_hessian
                            @ action_mean + trace)
                     + action_mean @ cross @ mean + gradient_t @ joint_mean + constant_t)
        return (next_mean, next_cov), (step_cost, step_kl)

    if with_cost:
        inputs = (dynamics, controller, checked, jnp.arange(horizon), expansion.action_rows,
                  expansion.gradient, expansion.constant)
    else:
        inputs = (dynamics, controller, checked, *(None,) * 4)
    (mean, covariance), outputs = jax.lax.scan(step, (initial_mean, initial_covariance), inputs)
    if not with_cost:
        return None, outputs
    costs, kls = outputs
    final_hessian = _state_block(layout, expansion, horizon)
    final_cost = (0.5 * mean @ final_hessian @ mean + 0.5 * jnp.sum(final_hessian * covariance)
                  + expansion.final_gradient @ mean + expansion.final_constant)
    return jnp.concatenate([costs, final_cost[None]]), kls


def _add_placed(maps: dyn.KnownMaps, matrix: jax.Array, action_part: jax.Array,
                observation_part: jax.Array) -> jax.Array:
    """matrix + Y + Y^T `[dX, dX]` for Y = X_u A + E B, A `[dU, dX]`, B `[dY, dX]` (X_u, E the
    known maps placing action and observation rows).

    Y is non-zero only in the rows that take an action or observation entry; each run of such
    rows is added as a row block and a column block of `matrix` (updated in place), so no
    [dX, dX] Y is formed.
    """
    num_actions, num_outputs = action_part.shape[0], observation_part.shape[0]
    stacked = jnp.concatenate([action_part, observation_part])  # [dU + dY, dX]
    from_action = maps.action_source < num_actions
    from_observation = maps.embed < num_outputs
    both = from_action & from_observation
    index = np.where(from_action, maps.action_source,
                     np.where(from_observation, num_actions + maps.embed,
                              num_actions + num_outputs))
    touched = np.flatnonzero(from_action | from_observation)
    starts = touched[np.flatnonzero(np.diff(touched, prepend=-2) != 1)]
    stops = touched[np.flatnonzero(np.diff(touched, append=touched[-1] + 2) != 1)] + 1
    for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
        rows = dyn.pick(stacked, index[start:stop], axis=0)  # Y[start:stop] [k, dX]
        if np.any(both[start:stop]):  # rows taking both an action and an observation entry
            rows = rows + dyn.pick(observation_part, maps.embed[start:stop], axis=0) * (
                jnp.asarray(both[start:stop], matrix.dtype)[:, None])
        block = matrix[start:stop] + rows
        matrix = jax.lax.dynamic_update_slice(matrix, block, (start, 0))
        columns = matrix[:, start:stop] + rows.T
        matrix = jax.lax.dynamic_update_slice(matrix, columns, (0, start))
    return matrix


def _log_det(cholesky):
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(cholesky, axis1=-2, axis2=-1)), axis=-1)


def _kl(controller: Controller, reference: Controller, mean_gap: jax.Array,
        covariance_term: jax.Array) -> jax.Array:
    """KL(p || p_ref) averaged over states, from the mean gap E[(K - K_ref) s + k - k_ref]
    `[..., dU]` and tr(P_ref (K - K_ref) Sigma_s (K - K_ref)^T) `[...]` (any leading axes)."""
    dim = controller.offset.shape[-1]
    return 0.5 * (
        jnp.einsum("...ij,...ji->...", reference.precision, controller.covariance) - dim
        + _log_det(reference.cholesky) - _log_det(controller.cholesky)
        + jnp.einsum("...i,...ij,...j->...", mean_gap, reference.precision, mean_gap)
        + covariance_term
    )


def kl_divergence(layout: feats.StateLayout, controller: Controller, reference: Controller,
                  means: jax.Array, covariances: jax.Array) -> jax.Array:
    """E_{s_t}[KL(p(.|s_t) || p_ref(.|s_t))] `[T]` for state-action marginals `[T+1, ...]`."""
    horizon = controller.offset.shape[0]
    state_means = means[:horizon, : layout.size]
    state_covs = covariances[:horizon, : layout.size, : layout.size]
    gain_gap = controller.gain - reference.gain
    mean_gap = jnp.einsum("tus,ts->tu", gain_gap, state_means) + controller.offset \
        - reference.offset
    weighted_gain = reference.precision @ gain_gap  # [T, dU, dX]
    return _kl(controller, reference, mean_gap,
               jnp.einsum("tus,tsr,tur->t", weighted_gain, state_covs, gain_gap))


def expected_cost(layout: feats.StateLayout, dynamics: dyn.Dynamics,
                  cost: cost_lib.QuadraticCost, controller: Controller,
                  initial_mean: jax.Array, initial_covariance: jax.Array) -> jax.Array:
    """E[sum_t c_t] `[]` of `controller` under the local model (dynamics and cost)."""
    costs, _ = forward_pass(layout, dynamics, controller, cost, initial_mean,
                            initial_covariance)
    return jnp.sum(costs)


class Solution(NamedTuple):
    """Result for one objective: the new controller (leaves `[T, ...]`), eta `[]`, its total
    KL to the reference `[]`, its expected cost under the model `[]`, and the number of
    backward-forward passes the search ran `[]` (for FLOP accounting)."""

    controller: Controller
    eta: jax.Array
    kl: jax.Array
    expected_cost: jax.Array
    num_passes: jax.Array


class _EtaSearch(NamedTuple):
    """The loop state of `optimise`'s search in log eta (all `[]` but the Solutions).

    low, high: the bracket's ends; log eta_min and log eta_max until evaluated. The KL is too
      large at low (gap > 0) and within the bound at high.
    gap_low, gap_high: log KL - log epsilon at the ends (+inf, -inf until evaluated), as
      halved by the Illinois rule.
    known_low, known_high: whether that end has been evaluated.
    at_high: the Solution evaluated at high.
    best: the answer so far (returned when the loop stops).
    last_gap: the last evaluation's gap (NaN before the first): the first outward step's size.
    evaluations: passes run so far (int).
    expansions: outward steps taken before the root was bracketed (int).
    last_side: which end the last bracketed evaluation replaced: -1 low, 1 high, 0 none (int).
    done: converged, or the bound is inactive at eta_min or unreachable at eta_max.
    """

    low: jax.Array
    high: jax.Array
    gap_low: jax.Array
    gap_high: jax.Array
    known_low: jax.Array
    known_high: jax.Array
    at_high: Solution
    best: Solution
    last_gap: jax.Array
    evaluations: jax.Array
    expansions: jax.Array
    last_side: jax.Array
    done: jax.Array


def optimise(config: LQGConfig, layout: feats.StateLayout, dynamics: dyn.Dynamics,
             cost: cost_lib.QuadraticCost, reference: Controller, initial_mean: jax.Array,
             initial_covariance: jax.Array, kl_bound: jax.Array,
             eta_guess: jax.Array | None = None) -> Solution:
    """The controller minimising the expected cost with total KL to `reference` ~ `kl_bound`.

    Searches log(eta) in [log eta_min, log eta_max], one pass per evaluation (a fixed cap of
    `eta_max_iterations` + 2). Without a finite `eta_guess` `[]` it evaluates eta_min, then
    eta_max, then runs Illinois regula falsi between them (module docstring). With one (the
    previous GPS iteration's eta) it starts there and, until the root is bracketed, steps
    log eta away from the evaluated side by max(|gap|, 1/2) * 2^k (k = steps taken so far;
    |gap| overshoots the root of log KL ~ -2 log eta, so the next step usually brackets
    it), clipped to the range, then runs the same regula falsi: typically 2-3 passes instead
    of 5-7. Either way, if the bound is inactive at eta_min that is the answer; if it cannot
    be met at eta_max, eta_max is used.
    """
    horizon, dim = reference.offset.shape
    size = layout.size + dim
    cost = cost_lib.embedded(cost, size)
    chex.assert_shape(cost.hessian, (horizon + 1, size, size))
    chex.assert_shape(dynamics.matrix, (horizon, None, size))
    chex.assert_shape(initial_mean, (layout.size,))
    dtype = initial_mean.dtype
    log_tolerance = jnp.log1p(config.kl_tolerance)

    expansion, terms = expand(layout, cost, dynamics), reference_terms(reference)

    def evaluate(log_eta):
        eta = jnp.exp(log_eta)
        controller, ok = expanded_backward_pass(layout, dynamics, expansion, reference, terms,
                                                eta)
        _, kls = expanded_forward_pass(layout, dynamics, controller, expansion, initial_mean,
                                       initial_covariance, reference, with_cost=False)
        kl = jnp.sum(kls)
        ok = ok & jnp.isfinite(kl)
        gap = jnp.log(jnp.maximum(kl, 1e-12 * kl_bound)) - jnp.log(kl_bound)
        solution = Solution(controller, eta, kl, jnp.zeros((), dtype), jnp.asarray(0))
        return jnp.where(ok, gap, jnp.inf), solution

    lowest, highest = jnp.log(jnp.asarray(config.eta_min, dtype)), jnp.log(
        jnp.asarray(config.eta_max, dtype))
    guess = jnp.nan if eta_guess is None else jnp.log(jnp.asarray(eta_guess, dtype))
    warm = jnp.isfinite(guess)
    # A cold search expands by an infinite step: from eta_min straight to eta_max.
    first = jnp.where(warm, jnp.clip(guess, lowest, highest), lowest)
    _, blank = jax.eval_shape(evaluate, lowest)
    blank = jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), blank)
    false, zero = jnp.asarray(False), jnp.asarray(0)
    start = _EtaSearch(low=lowest, high=highest, gap_low=jnp.asarray(jnp.inf, dtype),
                       gap_high=jnp.asarray(-jnp.inf, dtype), known_low=false, known_high=false,
                       at_high=blank, best=blank, last_gap=jnp.asarray(jnp.nan, dtype),
                       evaluations=zero, expansions=zero, last_side=zero, done=false)

    def cond(search: _EtaSearch):
        return (~search.done) & (search.evaluations < config.eta_max_iterations + 2)

    def body(search: _EtaSearch) -> _EtaSearch:
        low, high = search.low, search.high
        bracketed = search.known_low & search.known_high
        secant = high - search.gap_high * (high - low) / (search.gap_high - search.gap_low)
        width = high - low
        inside = jnp.isfinite(secant) & (secant > low + 1e-3 * width) & (
            secant < high - 1e-3 * width)
        step = jnp.where(warm, jnp.where(jnp.isfinite(search.last_gap),
                                         jnp.maximum(jnp.abs(search.last_gap), 0.5), 2.0)
                         * 2.0 ** search.expansions, jnp.inf)
        expanded = jnp.where(search.known_low, jnp.minimum(low + step, highest),
                             jnp.maximum(high - step, lowest))
        one_known = search.known_low | search.known_high
        candidate = jnp.where(
            bracketed, jnp.where(inside, secant, 0.5 * (low + high)),
            jnp.where(one_known, expanded, first))
        gap, at_candidate = evaluate(candidate)
        converged = jnp.abs(gap) <= log_tolerance
        too_large = gap > 0
        at_high = select(too_large, search.at_high, at_candidate)
        # Not bracketed yet: the last evaluation is the answer if its side cannot be left.
        inactive = ~too_large & (candidate <= lowest)
        unreachable = too_large & (candidate >= highest)
        return _EtaSearch(
            low=jnp.where(too_large, candidate, low),
            high=jnp.where(too_large, high, candidate),
            # Illinois: halve the retained end's gap when the same end is kept twice in a row.
            gap_low=jnp.where(too_large, gap, jnp.where(search.last_side == 1,
                                                        0.5 * search.gap_low, search.gap_low)),
            gap_high=jnp.where(too_large, jnp.where(search.last_side == -1,
                                                    0.5 * search.gap_high, search.gap_high), gap),
            known_low=search.known_low | too_large,
            known_high=search.known_high | ~too_large,
            at_high=at_high,
            best=select(converged | (~too_large & ~bracketed) | unreachable | ~search.known_high,
                         at_candidate, at_high),
            last_gap=gap,
            evaluations=search.evaluations + 1,
            expansions=jnp.where(one_known, search.expansions + 1, search.expansions),
            last_side=jnp.where(bracketed, jnp.where(too_large, -1, 1), 0),
            done=converged | ((inactive | unreachable) & ~bracketed))

    search = jax.lax.while_loop(cond, body, start)
    costs, _ = expanded_forward_pass(layout, dynamics, search.best.controller, expansion,
                                     initial_mean, initial_covariance)
    return search.best._replace(expected_cost=jnp.sum(costs), num_passes=search.evaluations)


def select(predicate, if_true, if_false):
    """The pytree `if_true` where the boolean `predicate` (broadcasting against every leaf)
    holds, else `if_false` (same structure); jittable."""
    return jax.tree.map(lambda a, b: jnp.where(predicate, a, b), if_true, if_false)


def adapt_step(config: LQGConfig, step_mult: jax.Array, previous: jax.Array, predicted: jax.Array,
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
