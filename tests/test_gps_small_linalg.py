"""Cholesky and triangular solves without LAPACK (unrolled and looped forms) against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.gps import small_linalg


def _positive_definite(rng, batch, size):
    factors = rng.normal(size=(*batch, size, size))
    return factors @ np.swapaxes(factors, -1, -2) + 0.1 * np.eye(size)


@pytest.mark.parametrize("size", [1, 4, 7, small_linalg.UNROLL_LIMIT + 1, 40])
def test_factor_and_solves_match_numpy(size):
    rng = np.random.default_rng(size)
    matrices = _positive_definite(rng, (3, 2), size)
    rhs = rng.normal(size=(3, 2, size, 5))
    with jax.enable_x64():
        factor = np.asarray(small_linalg.cholesky(jnp.asarray(matrices)))
        np.testing.assert_allclose(factor, np.linalg.cholesky(matrices), rtol=1e-10, atol=1e-12)
        lower = np.asarray(small_linalg.solve_lower(jnp.asarray(factor), jnp.asarray(rhs)))
        upper = np.asarray(small_linalg.solve_lower_transposed(jnp.asarray(factor),
                                                               jnp.asarray(rhs)))
        both = np.asarray(small_linalg.cho_solve(jnp.asarray(factor), jnp.asarray(rhs)))
    np.testing.assert_allclose(factor @ lower, rhs, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(np.swapaxes(factor, -1, -2) @ upper, rhs, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(both, np.linalg.solve(matrices, rhs), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("size", [2, small_linalg.UNROLL_LIMIT + 1])
def test_a_matrix_that_is_not_positive_definite_gives_nan_as_jnp_does(size):
    indefinite = jnp.eye(size).at[0, 1].set(2.0).at[1, 0].set(2.0)  # eigenvalue -1
    assert np.isnan(small_linalg.cholesky(indefinite)).any()
    assert np.isnan(jnp.linalg.cholesky(indefinite)).any()
