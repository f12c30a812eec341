"""Finiteness of pytrees: the one check every harness uses to reject a diverging step.

`all_finite(tree)` is a bool `[]`: every element of every leaf is finite (an empty tree is).
`all_finite_per_row(tree)` is a bool `[R]` for leaves sharing a leading axis of R rows (a
population's members, a batch of objectives): row r is finite where every leaf's row r is.
Both are jittable and vmappable.
"""

from typing import Any

import jax
import jax.numpy as jnp


def all_finite(tree: Any) -> jax.Array:
    """Whether every element of `tree` is finite: a bool `[]`."""
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(leaf)) for leaf in leaves], dtype=bool))


def all_finite_per_row(tree: Any) -> jax.Array:
    """Whether each row (leading index) of `tree`'s leaves is finite: a bool `[R]`."""
    leaves = jax.tree.leaves(tree)
    rows = leaves[0].shape[0]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf.reshape(rows, -1)), axis=1)
                              for leaf in leaves]), axis=0)
