"""Per-item maps: batched loops give what a plain vmap gives, for any batch size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt import parallel


def _item(x, scale):
    return {"sum": jnp.sum(jnp.sin(x)) * scale, "doubled": 2.0 * x}


@pytest.mark.parametrize("batch_size", [None, 1, 3, 4, 7, 50])
def test_map_in_batches_equals_vmap(batch_size):
    x = jax.random.normal(jax.random.key(0), (7, 5))
    scale = jnp.arange(7.0)
    got = jax.jit(lambda x, s: parallel.map_in_batches(_item, x, s,
                                                       batch_size=batch_size))(x, scale)
    want = jax.vmap(_item)(x, scale)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6)


def test_map_in_batches_runs_each_item_once_when_the_batch_size_divides():
    calls = []

    def counted(x):
        jax.debug.callback(lambda value: calls.append(np.atleast_1d(value).copy()), x)
        return x

    jax.block_until_ready(parallel.map_in_batches(counted, jnp.arange(6.0), batch_size=2))
    assert sorted(np.concatenate(calls).tolist()) == [0, 1, 2, 3, 4, 5]
