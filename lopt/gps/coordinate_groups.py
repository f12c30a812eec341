"""Coordinate groups of a params pytree (Li & Malik 2017b, "convolutional GPS").

A coordinate group is a set of coordinates on which the learned optimizer must act alike: by
default one group per leaf (a weight matrix, a bias vector); a user may pass `grouping`, a
function of the params pytree returning a pytree of the same structure whose leaves are group
ids (ints), to merge leaves (e.g. all biases together). Groups are numbered in the order of
their first leaf. Everything here reads only the leaves' shapes, so it runs at trace time.

Positions refer to `jax.flatten_util.ravel_pytree(params)`'s flat vector.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np


class Groups(NamedTuple):
    """positions `[G, max size]` (int, flat positions of each group's coordinates, padded
    with the group's first position), sizes `[G]` (int)."""

    positions: np.ndarray
    sizes: np.ndarray

    @property
    def count(self) -> int:
        return len(self.sizes)


def groups(params, grouping=None) -> Groups:
    """The coordinate groups of `params` (module docstring)."""
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError("the params pytree has no leaves")
    ids = list(range(len(leaves))) if grouping is None else jax.tree.leaves(grouping(params))
    if len(ids) != len(leaves):
        raise ValueError(f"grouping returned {len(ids)} group ids for {len(leaves)} leaves")
    order = list(dict.fromkeys(ids))
    members: dict = {group: [] for group in order}
    offset = 0
    for group, leaf in zip(ids, leaves, strict=True):
        size = int(np.prod(np.shape(leaf), dtype=np.int64))
        members[group].append(np.arange(offset, offset + size))
        offset += size
    flat = [np.concatenate(members[group]) for group in order]
    sizes = np.array([len(positions) for positions in flat])
    padded = np.stack([np.pad(positions, (0, sizes.max() - len(positions)), mode="edge")
                       for positions in flat])
    return Groups(padded, sizes)


def pick(groups: Groups, key: jax.Array, count: int) -> jax.Array:
    """`count` positions per group drawn uniformly with replacement: `[G, count]` int."""
    chosen = jax.random.randint(key, (groups.count, count), 0, groups.sizes[:, None])
    return jax.numpy.take_along_axis(jax.numpy.asarray(groups.positions), chosen, axis=1)
