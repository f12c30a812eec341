"""Spreading independent per-item work (objectives, grid points) over every local device.

`over_devices(batched, *inputs)` runs `batched` — a function of arrays with a leading item
axis that returns arrays with the same leading axis, e.g. `jax.vmap(f)` or
`lambda x: jax.lax.map(f, x)` — on each device's share of the items, with `jax.shard_map` on
a one-axis mesh of `jax.devices()`. With one device it is `batched(*inputs)`. The item count
is padded to a multiple of the device count by repeating the last item (so padded work stays
finite) and the padding is dropped from the outputs. Items must not interact: each output
row depends on its input row only, so the result does not depend on the number of devices
(up to floating-point round-off where XLA vectorises a different batch size differently).
`map_over_devices(function, *inputs)` is the common case: `map_in_batches` over the items.

On a CPU a process has one device unless XLA_FLAGS sets
`--xla_force_host_platform_device_count`; the GPS binaries set one per core, the search
binaries leave it at one (docs/decisions.md). When several processes run
(`lopt.distributed`), `jax.devices()` spans all of them and the outputs of `over_devices` are
gathered onto every process inside the computation (an all-gather), so every process holds
the whole result (arrays replicated over all devices: NumPy conversion and further JAX work
see the whole value; `on_one_device` takes the copy on this process's first device).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "items"


def _padded(leaf: jax.Array, count: int) -> jax.Array:
    missing = count - leaf.shape[0]
    if not missing:
        return leaf
    return jnp.concatenate([leaf, jnp.repeat(leaf[-1:], missing, axis=0)])


def over_devices(batched, *inputs):
    """`batched(*inputs)` with the leading axis of every input leaf split over all devices
    (module docstring); every input leaf must have the same leading size."""
    devices = jax.devices()
    if len(devices) == 1:
        return batched(*inputs)
    count = jax.tree.leaves(inputs)[0].shape[0]
    padded = -(-count // len(devices)) * len(devices)
    inputs = jax.tree.map(lambda leaf: _padded(leaf, padded), inputs)
    mesh = Mesh(np.array(devices), (AXIS,))
    several_processes = jax.process_count() > 1

    def run_share(*share):
        outputs = batched(*share)
        if several_processes:  # every process gets the whole result (module docstring)
            outputs = jax.tree.map(lambda leaf: jax.lax.all_gather(leaf, AXIS, tiled=True),
                                   outputs)
        return outputs

    outputs = jax.shard_map(run_share, mesh=mesh, in_specs=P(AXIS),
                            out_specs=P() if several_processes else P(AXIS),
                            check_vma=False)(*inputs)
    return jax.tree.map(lambda leaf: leaf[:count], outputs)


def map_in_batches(function, *inputs, batch_size: int | None = None):
    """`function(*item)` for every item along the leading axis of `inputs` (stacked like
    `jax.vmap(function)(*inputs)`), vmapped within batches of `batch_size` items (default 1)
    and looped over the batches.

    Unlike `lax.map(..., batch_size=)`, which handles a remainder batch separately and then
    concatenates (a copy of every output), each batch writes into the preallocated outputs in
    place; when the batch size does not divide the item count, the last batch is the last
    `batch_size` items, recomputing a few (items are independent, so the results are the
    same)."""
    count = jax.tree.leaves(inputs)[0].shape[0]
    size = min(batch_size or 1, count)
    batched = jax.vmap(function)
    take = lambda start: jax.tree.map(
        lambda leaf: jax.lax.dynamic_slice_in_dim(leaf, start, size), inputs)
    shapes = jax.eval_shape(lambda: batched(*take(0)))
    outputs = jax.tree.map(lambda s: jnp.zeros((count, *s.shape[1:]), s.dtype), shapes)

    def body(index, outputs):
        start = index * size if count % size == 0 else jnp.minimum(index * size, count - size)
        return jax.tree.map(lambda out, new: jax.lax.dynamic_update_slice_in_dim(
            out, new, start, 0), outputs, batched(*take(start)))

    return jax.lax.fori_loop(0, -(-count // size), body, outputs)


def map_over_devices(function, *inputs, batch_size: int | None = None):
    """`function(*item)` for every item along the leading axis of `inputs`: `map_in_batches`
    on each device's share (`over_devices`)."""
    return over_devices(
        lambda *share: map_in_batches(function, *share, batch_size=batch_size), *inputs)


def replicated(tree):
    """`tree` with every leaf replicated over all devices (inside `jit`, a sharding
    constraint; with one device, `tree` itself). For the outputs of a jitted loop body that
    come back as its inputs: XLA's sharding propagation may otherwise split some of them over
    the devices, and an input whose sharding differs from the first call's compiles the
    body again."""
    devices = jax.devices()
    if len(devices) == 1:
        return tree
    sharding = NamedSharding(Mesh(np.array(devices), (AXIS,)), P())
    return jax.lax.with_sharding_constraint(tree, sharding)


def on_one_device(tree):
    """`tree` with every array on this process's first device: for work that is not split
    over devices (the S-step's minibatches), so it does not read a split array across
    devices; with several processes each runs it on its own copy. Hand a result of such work
    back to split work through the host (`jax.device_get`, for small results): JAX refuses
    to mix arrays placed on one device with arrays split over all.

    A replicated array already has a copy there, which is used as it is. An array split over
    this process's CPU devices is assembled in NumPy memory and handed to the device without
    a further copy (`_assembled_on_host`): JAX's own copy between CPU devices runs at about a
    tenth of NumPy's speed (docs/decisions.md)."""
    first = jax.local_devices()[0]

    def move(leaf):
        if not isinstance(leaf, jax.Array):
            return jax.device_put(leaf, first)
        if leaf.is_fully_replicated:
            for shard in leaf.addressable_shards:
                if shard.device == first:
                    return shard.data
        if not leaf.is_fully_addressable:  # split over several processes
            return jax.device_put(np.asarray(leaf), first)
        if first.platform == "cpu" and len(leaf.devices()) > 1:
            return jax.device_put(_assembled_on_host(leaf), first)
        return jax.device_put(leaf, first)

    return jax.tree.map(move, tree)


_HOST_ALIGNMENT = 64  # bytes: XLA's CPU client adopts host buffers aligned so, without a copy


def _assembled_on_host(leaf: jax.Array) -> np.ndarray:
    """The whole value of `leaf` (split over this process's CPU devices) in a new NumPy array
    whose data is `_HOST_ALIGNMENT`-aligned, so `jax.device_put` to a CPU device adopts it."""
    size = leaf.size * leaf.dtype.itemsize
    raw = np.empty(size + _HOST_ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % _HOST_ALIGNMENT
    whole = raw[start:start + size].view(leaf.dtype).reshape(leaf.shape)
    for shard in leaf.addressable_shards:
        if shard.replica_id == 0:
            whole[shard.index] = np.asarray(shard.data)
    return whole
