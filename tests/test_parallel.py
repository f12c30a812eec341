"""Per-item maps: batched loops give what a plain vmap gives, for any batch size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_on_devices

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


_ONE_DEVICE_SCRIPT = """
import json, jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from lopt import parallel
mesh = Mesh(np.array(jax.devices()), ("items",))
value = np.arange(6 * 3 * 2, dtype=np.float32).reshape(6, 3, 2)
split = jax.device_put(value, NamedSharding(mesh, P("items")))
columns = jax.device_put(value, NamedSharding(mesh, P(None, "items")))
whole = jax.device_put(value, NamedSharding(mesh, P()))
tree = {"split": split, "columns": columns, "whole": whole, "host": value,
        "elsewhere": jax.device_put(value, jax.devices()[2])}
moved = parallel.on_one_device(tree)
first = jax.devices()[0]
whole_copy = [s.data for s in whole.addressable_shards if s.device == first][0]
print(json.dumps({
    "placed": {k: [str(d) for d in v.devices()] for k, v in moved.items()},
    "equal": {k: bool(np.array_equal(np.asarray(v), value)) for k, v in moved.items()},
    "replicated_not_copied": moved["whole"].unsafe_buffer_pointer()
                             == whole_copy.unsafe_buffer_pointer(),
    "first": str(first)}))
"""


def test_on_one_device_gathers_split_arrays_onto_the_first_device():
    got = run_on_devices(_ONE_DEVICE_SCRIPT, 3)
    assert all(devices == [got["first"]] for devices in got["placed"].values()), got
    assert all(got["equal"].values()), got["equal"]
    assert got["replicated_not_copied"]
