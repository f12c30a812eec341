"""Cholesky factorisation and triangular solves of small matrices in plain `jnp`.

GPS factorises action-sized matrices (dU x dU, dU = the family's dimension, 2-12) for every
objective and time step. These functions unroll the factorisation and the substitutions
over the (static) matrix size, so they are elementwise array operations over any leading
axes: no LAPACK call. Why (our choice): jaxlib's CPU LAPACK kernels split a batch of
matrices over XLA's intra-op thread pool and wait for the pieces on a thread of that same
pool, so two batched factorisations that XLA runs side by side can each wait for a piece
that no free thread is left to run. That wedge was seen on a 2-core machine (GPS on 1800
logistic-regression objectives: both pool threads waiting in a batched Cholesky, every other
thread idle, for good); `--xla_cpu_multi_thread_eigen=false` does not prevent it. The
unrolled forms also avoid a kernel call per 4 x 4 matrix.

Conventions as `jnp.linalg.cholesky`: the lower factor, read from the lower triangle, and
NaN where the matrix is not positive definite. Shapes: matrices `[..., n, n]`, right-hand
sides `[..., n, m]`; n is expected to be small (the cost of tracing grows as n^2).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cholesky(matrix: jax.Array) -> jax.Array:
    """The lower Cholesky factor L (L L^T = matrix) `[..., n, n]`."""
    size = matrix.shape[-1]
    columns = []  # columns[j]: entries j..n-1 of column j of L, each [...]
    for j in range(size):
        diagonal = matrix[..., j, j] - sum(columns[k][j - k] ** 2 for k in range(j))
        root = jnp.sqrt(diagonal)
        below = [(matrix[..., i, j] - sum(columns[k][i - k] * columns[k][j - k]
                                          for k in range(j))) / root
                 for i in range(j + 1, size)]
        columns.append([root, *below])
    zero = jnp.zeros_like(matrix[..., 0, 0])
    rows = [jnp.stack([columns[j][i - j] if j <= i else zero for j in range(size)], axis=-1)
            for i in range(size)]
    return jnp.stack(rows, axis=-2)


def solve_lower(factor: jax.Array, rhs: jax.Array) -> jax.Array:
    """X with L X = rhs, for the lower triangular `factor` L `[..., n, n]`, rhs `[..., n, m]`."""
    size = factor.shape[-1]
    rows = []
    for i in range(size):
        total = rhs[..., i, :] - sum(factor[..., i, k, None] * rows[k] for k in range(i))
        rows.append(total / factor[..., i, i, None])
    return jnp.stack(rows, axis=-2)


def solve_lower_transposed(factor: jax.Array, rhs: jax.Array) -> jax.Array:
    """X with L^T X = rhs, for the lower triangular `factor` L `[..., n, n]`."""
    size = factor.shape[-1]
    rows = [None] * size
    for i in reversed(range(size)):
        total = rhs[..., i, :] - sum(factor[..., k, i, None] * rows[k]
                                     for k in range(i + 1, size))
        rows[i] = total / factor[..., i, i, None]
    return jnp.stack(rows, axis=-2)


def cho_solve(factor: jax.Array, rhs: jax.Array) -> jax.Array:
    """X with L L^T X = rhs, from the lower Cholesky factor L `[..., n, n]`."""
    return solve_lower_transposed(factor, solve_lower(factor, rhs))
