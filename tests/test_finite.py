"""The shared finiteness checks against NumPy, on pytrees with inf and NaN planted."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt import finite


def _tree(seed, bad_rows=()):
    rng = np.random.default_rng(seed)
    tree = {"w": rng.normal(size=(4, 3, 2)), "b": rng.normal(size=(4,)),
            "nested": (rng.normal(size=(4, 5)).astype(np.float32),)}
    for row, value in bad_rows:
        tree["nested"][0][row, 2] = value
    return tree


@pytest.mark.parametrize("bad_rows", [(), ((1, np.inf),), ((0, np.nan), (3, -np.inf))])
def test_checks_agree_with_numpy(bad_rows):
    tree = _tree(0, bad_rows)
    leaves = jax.tree.leaves(tree)
    per_row = np.all([np.isfinite(leaf.reshape(4, -1)).all(axis=1) for leaf in leaves], axis=0)
    got = jax.jit(finite.all_finite_per_row)(jax.tree.map(jnp.asarray, tree))
    np.testing.assert_array_equal(got, per_row)
    assert bool(jax.jit(finite.all_finite)(tree)) == bool(per_row.all())
    assert bool(finite.all_finite({})) and bool(finite.all_finite({"w": jnp.ones(2), "b": []}))
