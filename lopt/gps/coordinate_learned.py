"""A coordinate-wise learned optimizer (Li & Malik 2017b) as an optax transformation.

`CoordinateLearned` is what coordinate-wise GPS trains (`lopt.gps.coordinate_trainer`): one
policy shared by every coordinate, reading that coordinate's last few Psi vectors
(`lopt.gps.coordinate_features`). Its optax form works on any params pytree, of any size,
shape and floating dtype, leaf by leaf, elementwise: `update(grads, state, params,
value=loss)` returns the policy's mean step (updates are *added* to the params, as in optax).

State per leaf: the last gradient, the last two steps and the policy input `[..., dO]`, so an
update holds O(number of parameters * (dO + 3)) numbers, with dO = 3 * observation_history
(9 by default).
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


class CoordinatewiseState(NamedTuple):
    """count `[]` int32; the last objective value `[]`; per leaf (pytrees like the params):
    the last gradient, the last step u_{t-1}, the one before u_{t-2}, the policy input
    `[..., dO]`."""

    count: jax.Array
    value: jax.Array
    gradient: object
    step: object
    previous_step: object
    inputs: object


def coordinatewise_step_descent(policy: policy_lib.Policy, features: cf.CoordinateFeatureConfig
                                ) -> optax.GradientTransformationExtraArgs:
    """The policy as an optax transformation (module docstring); traceable in `policy`."""

    def init(params):
        leaves = jax.tree.leaves(params)
        if not leaves or not all(jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating)
                                 for leaf in leaves):
            raise ValueError("coordinate-wise step descent needs a pytree of floating-point "
                             f"arrays, got {jax.tree.map(lambda a: jnp.asarray(a).dtype, params)}")
        zeros = jax.tree.map(jnp.zeros_like, params)
        inputs = jax.tree.map(
            lambda leaf: jnp.zeros((*jnp.shape(leaf), features.observation_size),
                                   jnp.asarray(leaf).dtype), params)
        value_dtype = jnp.result_type(*leaves)
        return CoordinatewiseState(jnp.zeros([], jnp.int32), jnp.zeros([], value_dtype), zeros,
                                   zeros, zeros, inputs)

    def update(updates, state, params=None, *, value=None, **extra_args):
        del params, extra_args
        if value is None:
            raise ValueError("coordinate-wise step descent needs the objective value: call "
                             "update(grad, state, params, value=f(params))")
        value = jnp.asarray(value, state.value.dtype)

        def one_leaf(gradient, previous_gradient, step, previous_step, inputs):
            dtype = gradient.dtype
            previous_gradient = jnp.where(state.count == 0, gradient, previous_gradient)
            psi = cf.observation(value.astype(dtype), state.value.astype(dtype), gradient,
                                 previous_gradient, step, previous_step, state.count)
            inputs = cf.push_observation(inputs, psi)
            cast = jax.tree.map(lambda a: jnp.asarray(a, dtype), policy)
            return policy_lib.mean(cast, inputs)[..., 0], inputs

        results = jax.tree.map(one_leaf, updates, state.gradient, state.step,
                               state.previous_step, state.inputs)
        treedef = jax.tree.structure(updates)
        steps, inputs = (jax.tree.unflatten(treedef, part) for part in
                         zip(*treedef.flatten_up_to(results), strict=True))
        new_state = CoordinatewiseState(state.count + 1, value, updates, steps, state.step,
                                        inputs)
        return steps, new_state

    return optax.GradientTransformationExtraArgs(init, update)
