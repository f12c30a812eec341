"""Cholesky factorisation and triangular solves in plain `jnp`: no LAPACK call.

GPS factorises action-sized matrices (dU x dU, dU = the family's dimension, 2-12) for every
objective and time step, and, when it fits the dynamics, the covariances of a Gaussian
mixture over transitions and of each time step's inputs (tens to hundreds wide). Why (our choice):
jaxlib's CPU LAPACK kernels split a batch of matrices over XLA's intra-op thread pool and
wait for the pieces on a thread of that same pool, so two batched factorisations that XLA
runs side by side (two host devices of one process, or two independent operations of one
program) can each wait for a piece that no free thread is left to run. That wedge was seen
on a 2-core machine (GPS on 1800 logistic-regression objectives: both pool threads waiting
in a batched Cholesky, every other thread idle, for good); `--xla_cpu_multi_thread_eigen=false`
does not prevent it.

Matrices up to `UNROLL_LIMIT` wide are factorised and solved with the loops unrolled over
the (static) size: elementwise array operations over the leading axes, which also avoids a
kernel call per 4 x 4 matrix; tracing cost grows as n^2. Wider ones run the same recurrences
as a `lax.fori_loop` over columns (rows for the solves), each step a batched
matrix-vector product: tracing cost independent of n, n sequential steps.

Conventions as `jnp.linalg.cholesky`: the lower factor, read from the lower triangle, and
NaN where the matrix is not positive definite. Shapes: matrices `[..., n, n]`, right-hand
sides `[..., n, m]` with the same leading axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

UNROLL_LIMIT = 16


def _at(array: jax.Array, index, axis: int) -> jax.Array:
    return jax.lax.dynamic_index_in_dim(array, index, axis=axis, keepdims=False)


def _put(array: jax.Array, update: jax.Array, index, axis: int) -> jax.Array:
    return jax.lax.dynamic_update_index_in_dim(array, update, index, axis=axis)


def cholesky(matrix: jax.Array) -> jax.Array:
    """The lower Cholesky factor L (L L^T = matrix) `[..., n, n]`."""
    size = matrix.shape[-1]
    if size > UNROLL_LIMIT:
        rows = jnp.arange(size)

        def column(j, factor):  # columns j.. of `factor` are still zero
            residual = _at(matrix, j, -1) - jnp.einsum("...ik,...k->...i", factor,
                                                        _at(factor, j, -2))
            root = jnp.sqrt(_at(residual, j, -1))
            return _put(factor, jnp.where(rows >= j, residual / root[..., None], 0.0), j, -1)

        return jax.lax.fori_loop(0, size, column, jnp.zeros_like(matrix))
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


def _substitute(factor: jax.Array, rhs: jax.Array, transposed: bool) -> jax.Array:
    """X with L X = rhs (L^T X = rhs if `transposed`): forward (backward) substitution."""
    size = factor.shape[-1]
    # The coefficients of row i of the system: row i of L, or column i of L for L^T.
    if size > UNROLL_LIMIT:
        def row(step, solution):  # rows not solved yet are zero, so they drop out
            i = size - 1 - step if transposed else step
            coefficients = _at(factor, i, -1 if transposed else -2)
            total = _at(rhs, i, -2) - jnp.einsum("...k,...km->...m", coefficients, solution)
            return _put(solution, total / _at(coefficients, i, -1)[..., None], i, -2)

        return jax.lax.fori_loop(0, size, row, jnp.zeros_like(rhs))
    rows = [None] * size
    order = reversed(range(size)) if transposed else range(size)
    for i in order:
        solved = range(i + 1, size) if transposed else range(i)
        coefficients = factor[..., :, i] if transposed else factor[..., i, :]
        total = rhs[..., i, :] - sum(coefficients[..., k, None] * rows[k] for k in solved)
        rows[i] = total / factor[..., i, i, None]
    return jnp.stack(rows, axis=-2)


def solve_lower(factor: jax.Array, rhs: jax.Array) -> jax.Array:
    """X with L X = rhs, for the lower triangular `factor` L `[..., n, n]`, rhs `[..., n, m]`."""
    return _substitute(factor, rhs, transposed=False)


def solve_lower_transposed(factor: jax.Array, rhs: jax.Array) -> jax.Array:
    """X with L^T X = rhs, for the lower triangular `factor` L `[..., n, n]`."""
    return _substitute(factor, rhs, transposed=True)


def cho_solve(factor: jax.Array, rhs: jax.Array) -> jax.Array:
    """X with L L^T X = rhs, from the lower Cholesky factor L `[..., n, n]`."""
    return solve_lower_transposed(factor, solve_lower(factor, rhs))
