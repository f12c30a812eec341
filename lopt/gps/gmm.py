"""Gaussian mixture fitted by EM: the prior for the dynamics fit (LM section 5, LA section 3.3).

Pure and jittable. EM runs in a `lax.while_loop` with a fixed cap, stopping once the
objective per point gains less than `tolerance`; under `vmap` every batch element gets the
result it would get alone. Components are initialised from a random partition of the points.

Every covariance carries the penalty -reg/2 tr(Sigma_k^{-1}) (an inverse-Wishart-type prior),
so its M-step is Sigma_k = (S_k + reg I) / N_k: always positive definite, even for points
confined to a subspace, and EM increases the penalised log-likelihood
    sum_m log sum_k pi_k N(x_m | mu_k, Sigma_k) - reg/2 sum_k tr(Sigma_k^{-1})
monotonically (`GMMFit.objective` records it per iteration, divided by the number of points).

Shapes: M points of dimension D, K components.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from lopt.gps import small_linalg


class GMM(NamedTuple):
    """log_weights `[K]`, means `[K, D]`, covariances `[K, D, D]`."""

    log_weights: jax.Array
    means: jax.Array
    covariances: jax.Array


class GMMFit(NamedTuple):
    """A fitted mixture, the penalised log-likelihood per point of every EM iteration
    `[max_iterations]` (NaN after the last one run) and the number of iterations run `[]`."""

    gmm: GMM
    objective: jax.Array
    num_iterations: jax.Array


class Whitened(NamedTuple):
    """A mixture with its inverse Cholesky factors W_k `[K, D, D]` (W Sigma W^T = I) and
    log-determinants `[K]`: factorised once, evaluated on many point sets."""

    gmm: GMM
    inverse_cholesky: jax.Array
    log_det: jax.Array


def whiten(gmm: GMM) -> Whitened:
    """Factorises every component covariance of `gmm`."""
    covariances = gmm.covariances
    cholesky = small_linalg.cholesky(covariances)
    eye = jnp.broadcast_to(jnp.eye(covariances.shape[-1], dtype=covariances.dtype),
                           covariances.shape)
    inverse = small_linalg.solve_lower(cholesky, eye)
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(cholesky, axis1=-2, axis2=-1)), axis=-1)
    return Whitened(gmm, inverse, log_det)


def log_joint(whitened_gmm: Whitened, points: jax.Array):
    """log pi_k + log N(x_m | mu_k, Sigma_k) `[M, K]` and tr(Sigma_k^{-1}) `[K]`.

    Whitening all components is one matrix product `[M, D] x [D, K D]` (2 K M D^2 FLOPs),
    laid out so that the squared norms reduce its output in place.
    """
    gmm, inverse, log_det = whitened_gmm
    num_components, dim, _ = inverse.shape
    stacked = jnp.transpose(inverse, (2, 0, 1)).reshape(dim, num_components * dim)  # W_k^T
    whitened = (points @ stacked).reshape(-1, num_components, dim) - jnp.einsum(
        "ked,kd->ke", inverse, gmm.means)
    log_density = -0.5 * (jnp.sum(whitened**2, -1) + dim * jnp.log(2 * jnp.pi) + log_det)
    return log_density + gmm.log_weights, jnp.sum(inverse**2, axis=(-2, -1))


def _m_step(points: jax.Array, responsibilities: jax.Array, regularization: float) -> GMM:
    """Maximiser of the penalised expected log-likelihood for responsibilities `[M, K]`."""
    counts = jnp.sum(responsibilities, axis=0) + 1e-10
    means = responsibilities.T @ points / counts[:, None]
    eye = jnp.eye(points.shape[-1], dtype=points.dtype)

    def covariance(inputs):
        weights, mean, count = inputs
        centred = points - mean
        scatter = (centred * weights[:, None]).T @ centred
        return (scatter + regularization * eye) / count

    covariances = jax.lax.map(covariance, (responsibilities.T, means, counts))
    covariances = 0.5 * (covariances + jnp.swapaxes(covariances, -1, -2))
    return GMM(jnp.log(counts / points.shape[0]), means, covariances)


def fit(points: jax.Array, key: jax.Array, num_components: int = 10, max_iterations: int = 50,
        tolerance: float = 1e-5, regularization: float = 1e-6) -> GMMFit:
    """EM for a K-component mixture on `points` `[M, D]`; see the module docstring."""
    num_points = points.shape[0]
    labels = jax.random.randint(key, (num_points,), 0, num_components)
    initial = _m_step(points, jax.nn.one_hot(labels, num_components, dtype=points.dtype),
                      regularization)
    trace = jnp.full(max_iterations, jnp.nan, points.dtype)

    def objective(log_joint_values, inverse_traces):
        log_likelihood = jnp.sum(jax.nn.logsumexp(log_joint_values, axis=1))
        return (log_likelihood - 0.5 * regularization * jnp.sum(inverse_traces)) / num_points

    def cond(carry):
        _, iteration, gain, _ = carry
        return (iteration < max_iterations) & (gain > tolerance)

    def body(carry):
        gmm, iteration, _, trace = carry
        values, inverse_traces = log_joint(whiten(gmm), points)
        current = objective(values, inverse_traces)
        responsibilities = jax.nn.softmax(values, axis=1)
        previous = jnp.where(iteration > 0, trace[jnp.maximum(iteration - 1, 0)], -jnp.inf)
        trace = trace.at[iteration].set(current)
        return _m_step(points, responsibilities, regularization), iteration + 1, \
            current - previous, trace

    start = (initial, jnp.asarray(0), jnp.asarray(jnp.inf, points.dtype), trace)
    gmm, iterations, _, trace = jax.lax.while_loop(cond, body, start)
    return GMMFit(gmm, trace, iterations)


def mean_responsibilities(whitened_gmm: Whitened, points: jax.Array) -> jax.Array:
    """Posterior component probabilities averaged over the points of each set.

    Args:
      whitened_gmm: the mixture, factorised.
      points: point sets `[B, S, D]`; all B*S points are whitened in one matrix product.

    Returns:
      weights `[B, K]`, each row summing to one.
    """
    num_sets, set_size, dim = points.shape
    values, _ = log_joint(whitened_gmm, points.reshape(num_sets * set_size, dim))
    return jnp.mean(jax.nn.softmax(values, axis=1).reshape(num_sets, set_size, -1), axis=1)


def mixed_moments(gmm: GMM, weights: jax.Array):
    """Mean and covariance of the mixture reweighted by `weights` `[B, K]`.

    mu0 = sum_k w_k mu_k `[B, D]` and sum_k w_k (Sigma_k + (mu_k - mu0)(mu_k - mu0)^T)
    `[B, D, D]` (the normal-inverse-Wishart prior of LA section 3.3), computed as one
    product with the components' second moments.
    """
    num_components, dim = gmm.means.shape
    second = gmm.covariances + jnp.einsum("kd,ke->kde", gmm.means, gmm.means)
    mean = weights @ gmm.means
    covariance = (weights @ second.reshape(num_components, dim * dim)).reshape(-1, dim, dim)
    return mean, covariance - jnp.einsum("bd,be->bde", mean, mean)
