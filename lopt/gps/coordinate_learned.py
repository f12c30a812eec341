"""A coordinate-wise learned optimizer (Li & Malik 2017b) as an optax transformation.

`CoordinateLearned` is what coordinate-wise GPS trains (`lopt.gps.coordinate_trainer`): one
policy shared by every coordinate, reading that coordinate's last few Psi vectors
(`lopt.gps.coordinate_features`). Its optax form works on any params pytree, of any size,
shape and floating dtype, leaf by leaf, elementwise: `update(grads, state, params,
value=loss)` returns the policy's mean step (updates are *added* to the params, as in optax).

The leaves of each floating dtype are handled together as one flat vector (their
concatenation in pytree order), so a pytree of 200 leaves costs one fused pass per dtype, not
200 (and compiles as fast as a pytree of one leaf). State per dtype (P_d: that dtype's number
of parameters): the last gradient and the last two steps `[P_d]`, and the policy input as dO
separate vectors `[P_d]` (so a step moves them without copying). An update holds
O(number of parameters * (dO + 3)) numbers, with dO = 3 * observation_history (9 by default).

Speed: the policy is `lopt.gps.policy.mean` (the specification, which training uses);
`elementwise_mean` computes the same as one fused elementwise expression per dtype (hidden
units and inputs unrolled), which on a CPU is several times faster than the specification's
small matrix products (benchmarks/coordinate_optimizer.py).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt.gps import coordinate_features as cf
from lopt.gps import policy as policy_lib


@dataclasses.dataclass(frozen=True)
class CoordinateLearned:
    """A trained coordinate-wise policy (whitening included), its feature sizes, the family
    it was trained on and its training history (one dict of scalars per GPS iteration)."""

    policy: policy_lib.Policy
    features: cf.CoordinateFeatureConfig
    family: str = ""
    history: tuple = ()
    activation: str = "relu"


class CoordinatewiseState(NamedTuple):
    """count `[]` int32; the last objective value `[]`; tuples with one entry per floating
    dtype of the params (in order of first appearance): the last gradient, the last step
    u_{t-1}, the one before u_{t-2} `[P_d]`, the policy input: a tuple of dO vectors `[P_d]`,
    newest first."""

    count: jax.Array
    value: jax.Array
    gradient: object
    step: object
    previous_step: object
    inputs: object


def elementwise_mean(policy: policy_lib.Policy, inputs, activation: str) -> jax.Array:
    """`policy_lib.mean(policy, stack(inputs, -1), activation)[..., 0]` for a sequence of dO
    input arrays of one shape, as elementwise operations: `[...]` of that shape."""
    act = policy_lib.ACTIVATIONS[activation]
    kernel = policy.network["Dense_0"]["kernel"]  # [dO, H]
    bias = policy.network["Dense_0"]["bias"]
    output = policy.network["Dense_1"]["kernel"][:, 0]  # [H]; the output bias cancels
    clip = policy_lib.INPUT_CLIP
    whitened = [jnp.clip((value - policy.input_mean[i]) / policy.input_scale[i], -clip, clip)
                for i, value in enumerate(inputs)]
    origin = jnp.clip(-policy.input_mean / policy.input_scale, -clip, clip)
    total = -(act(origin @ kernel + bias) @ output)
    for unit in range(kernel.shape[1]):
        hidden = bias[unit]
        for i, value in enumerate(whitened):
            hidden = hidden + kernel[i, unit] * value
        total = total + output[unit] * act(hidden)
    return policy.action_scale[0] * total


def _dtype_groups(leaves) -> list[list[int]]:
    """Indices of the leaves of each dtype, dtypes in order of first appearance."""
    groups: dict = {}
    for index, leaf in enumerate(leaves):
        groups.setdefault(jnp.asarray(leaf).dtype, []).append(index)
    return list(groups.values())


def _flatten(leaves, groups) -> tuple:
    return tuple(jnp.concatenate([jnp.ravel(leaves[i]) for i in group]) for group in groups)


def _unflatten(flats, groups, leaves, treedef):
    out = [None] * len(leaves)
    for flat, group in zip(flats, groups, strict=True):
        offset = 0
        for i in group:
            size = int(jnp.size(leaves[i]))
            out[i] = flat[offset:offset + size].reshape(jnp.shape(leaves[i]))
            offset += size
    return jax.tree.unflatten(treedef, out)


def coordinatewise_step_descent(policy: policy_lib.Policy, features: cf.CoordinateFeatureConfig,
                                activation: str = "relu"
                                ) -> optax.GradientTransformationExtraArgs:
    """The policy as an optax transformation (module docstring); traceable in `policy`."""

    def init(params):
        leaves = jax.tree.leaves(params)
        if not leaves or not all(jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating)
                                 for leaf in leaves):
            raise ValueError("coordinate-wise step descent needs a pytree of floating-point "
                             f"arrays, got {jax.tree.map(lambda a: jnp.asarray(a).dtype, params)}")
        flats = _flatten(leaves, _dtype_groups(leaves))
        zeros = lambda: tuple(jnp.zeros_like(flat) for flat in flats)  # noqa: E731
        inputs = tuple(tuple(jnp.zeros_like(flat) for _ in range(features.observation_size))
                       for flat in flats)
        return CoordinatewiseState(jnp.zeros([], jnp.int32), jnp.zeros([], jnp.result_type(
            *leaves)), zeros(), zeros(), zeros(), inputs)

    def update(updates, state, params=None, *, value=None, **extra_args):
        del params, extra_args
        if value is None:
            raise ValueError("coordinate-wise step descent needs the objective value: call "
                             "update(grad, state, params, value=f(params))")
        value = jnp.asarray(value, state.value.dtype)
        leaves, treedef = jax.tree.flatten(updates)
        groups = _dtype_groups(leaves)

        def one_dtype(gradient, previous_gradient, step, previous_step, inputs):
            dtype = gradient.dtype
            previous_gradient = jnp.where(state.count == 0, gradient, previous_gradient)
            psi = cf.observation_parts(value.astype(dtype), state.value.astype(dtype), gradient,
                                       previous_gradient, step, previous_step, state.count)
            inputs = (*psi, *inputs[:-3])
            cast = jax.tree.map(lambda a: jnp.asarray(a, dtype), policy)
            return elementwise_mean(cast, inputs, activation).astype(dtype), inputs

        gradients = _flatten(leaves, groups)
        steps, inputs = zip(*map(one_dtype, gradients, state.gradient, state.step,
                                 state.previous_step, state.inputs), strict=True)
        new_state = CoordinatewiseState(state.count + 1, value, gradients, tuple(steps),
                                        state.step, tuple(inputs))
        return _unflatten(steps, groups, leaves, treedef), new_state

    return optax.GradientTransformationExtraArgs(init, update)
