"""A coordinate-wise learned optimizer (Li & Malik 2017b) as an optax transformation.

`CoordinateLearned` is what coordinate-wise GPS trains (`lopt.gps.coordinate_trainer`): one
policy shared by every coordinate, reading that coordinate's last few Psi vectors
(`lopt.gps.coordinate_features`). Its optax form works on any params pytree, of any size,
shape and floating dtype, leaf by leaf, elementwise: `update(grads, state, params,
value=loss)` returns the policy's mean step (updates are *added* to the params, as in optax),
times one scalar per run adapted from the cosine between the gradient and a decayed sum of the
policy's recent steps when the optimizer has a step-scale gain (`lopt.gps.step_scale`: that
sum is one more vector of state, and the cosine one more pass).

The leaves of each floating dtype are handled together as one flat vector (their
concatenation in pytree order), so a pytree of 200 leaves costs one fused pass per dtype, not
200, and compiles about as fast as a pytree of one leaf. State (H = observation_history):
psi_1, the same for every coordinate, once per step; per dtype (P_d: that dtype's number of
parameters), vectors `[P_d]`: the last gradient, the last step, H - 1 past psi_2 and H psi_3
(psi_3 of the next step is computed as soon as the step is), and with `features.moments`
Adam's two moment estimates, and with a step-scale gain the decayed sum of steps. An update
holds O(number of parameters * (2 H + 1 + 2 moments + 1 adapts)) numbers (9 per parameter
with the default features, 10 with a gain).

Speed: the policy is `lopt.gps.policy.mean` (the specification, which training uses);
`elementwise_mean` computes the same as one fused elementwise expression per dtype (hidden
units and inputs unrolled, psi_1 folded into the hidden biases), which on a CPU is several
times faster than the specification's small matrix products
(benchmarks/coordinate_optimizer.py).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt.gps import coordinate_features as cf
from lopt.gps import policy as policy_lib
from lopt.gps import step_scale


@dataclasses.dataclass(frozen=True)
class CoordinateLearned:
    """A trained coordinate-wise policy (whitening included), its feature sizes, the family
    it was trained on, its training history (one dict of scalars per GPS iteration) and its
    step-scale adaptation (`lopt.gps.step_scale`: gain, 0 for none; bound; decay)."""

    policy: policy_lib.Policy
    features: cf.CoordinateFeatureConfig
    family: str = ""
    history: tuple = ()
    activation: str = "relu"
    scale_gain: float = 0.0
    scale_bound: float = 3.0
    scale_decay: float = 0.9


class CoordinatewiseState(NamedTuple):
    """At step t (H = observation_history): count `[]` int32 (= t); f_{t-1} `[]`; psi_1 of
    steps t-1, ..., t-H+1 `[H - 1]`; the log step scale l_{t-1} `[]` float32
    (`lopt.gps.step_scale`); and tuples with one entry per floating dtype of the
    params (in order of first appearance), each entry `[P_d]`: g_{t-1}; u_{t-1}; `normalised`,
    a tuple of psi_2 of steps t-1, ..., t-H+1; `ratios`, a tuple of psi_3 of steps t, ...,
    t-H+1; `moments`, (m_{t-1}, v_{t-1}) with `features.moments`, else (); `displacement`,
    d_{t-1} of `lopt.gps.step_scale` where the step scale adapts, else ()."""

    count: jax.Array
    value: jax.Array
    relative: jax.Array
    log_scale: jax.Array
    gradient: tuple
    step: tuple
    normalised: tuple
    ratios: tuple
    moments: tuple
    displacement: tuple


def elementwise_mean(policy: policy_lib.Policy, inputs, activation: str) -> jax.Array:
    """`policy_lib.mean(policy, stack(inputs, -1), activation)[..., 0]` for a sequence of dO
    inputs, each an array of one common shape `[...]` or a scalar `[]` shared by every
    coordinate, as elementwise operations: `[...]`.

    Scalar inputs are folded into the hidden units' biases, the action scale into the output
    weights, and the whitening of the other inputs into their weights
    (clip((x - m) / s, -c, c) = clip(x, m - c s, m + c s) / s - m / s), so a coordinate costs
    one clip per array input and one multiply-add per (array input, hidden unit)."""
    act = policy_lib.ACTIVATIONS[activation]
    kernel = policy.network["Dense_0"]["kernel"]  # [dO, H]
    bias = policy.network["Dense_0"]["bias"]
    # [H] (the output bias cancels), times the action scale: a final multiply by the scale
    # would be the fused expression's root, and XLA then re-evaluates the whole expression in
    # each of its consumers (docs/decisions.md)
    output = policy.network["Dense_1"]["kernel"][:, 0] * policy.action_scale[0]
    clip = policy_lib.INPUT_CLIP
    mean, scale = policy.input_mean, policy.input_scale
    inverse = 1 / scale
    origin = jnp.clip(-mean / scale, -clip, clip)
    total = -(act(origin @ kernel + bias) @ output)
    hidden_bias, weighted = bias, []
    for i, value in enumerate(inputs):
        if jnp.ndim(value) == 0:
            whitened = jnp.clip((value - mean[i]) * inverse[i], -clip, clip)
            hidden_bias = hidden_bias + kernel[i] * whitened
        else:
            hidden_bias = hidden_bias - kernel[i] * (mean[i] * inverse[i])
            clipped = jnp.clip(value, mean[i] - clip * scale[i], mean[i] + clip * scale[i])
            weighted.append((clipped, kernel[i] * inverse[i]))
    for unit in range(kernel.shape[1]):
        hidden = hidden_bias[unit]
        for value, weight in weighted:
            hidden = hidden + weight[unit] * value
        total = total + output[unit] * act(hidden)
    return total


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
                                activation: str = "relu", scale_gain=0.0,
                                scale_bound: float = 3.0, scale_decay: float = 0.9
                                ) -> optax.GradientTransformationExtraArgs:
    """The policy as an optax transformation (module docstring), its steps times the
    adapted scale of `lopt.gps.step_scale` (`scale_gain` 0: the policy's steps as they are);
    traceable in `policy` and `scale_gain`. The state keeps the policy's own steps (its
    features are those of the policy alone)."""

    adapts = not (isinstance(scale_gain, (int, float)) and scale_gain == 0)

    history = features.observation_history

    def init(params):
        leaves = jax.tree.leaves(params)
        if not leaves or not all(jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating)
                                 for leaf in leaves):
            raise ValueError("coordinate-wise step descent needs a pytree of floating-point "
                             f"arrays, got {jax.tree.map(lambda a: jnp.asarray(a).dtype, params)}")
        flats = _flatten(leaves, _dtype_groups(leaves))
        zeros = lambda count: tuple(tuple(jnp.zeros_like(flat) for _ in range(count))  # noqa: E731
                                    for flat in flats)
        dtype = jnp.result_type(*leaves)
        return CoordinatewiseState(
            jnp.zeros([], jnp.int32), jnp.zeros([], dtype), jnp.zeros(history - 1, dtype),
            jnp.zeros([], jnp.float32), *zip(*zeros(2), strict=True), zeros(history - 1),
            zeros(history),
            zeros(2) if features.moments else tuple(() for _ in flats),
            tuple(jnp.zeros_like(flat) for flat in flats) if adapts else ())

    def update(updates, state, params=None, *, value=None, **extra_args):
        del params, extra_args
        if value is None:
            raise ValueError("coordinate-wise step descent needs the objective value: call "
                             "update(grad, state, params, value=f(params))")
        value = jnp.asarray(value, state.value.dtype)
        t = state.count
        relative = jnp.concatenate([cf.relative_change(value, state.value, t)[None],
                                    state.relative])  # psi_1 of steps t, ..., t-H+1

        def one_dtype(gradient, previous_gradient, last_step, normalised, ratios, moments):
            dtype = gradient.dtype
            previous_gradient = jnp.where(t == 0, gradient, previous_gradient)
            newest = cf.normalised_gradient(gradient, previous_gradient)  # psi_2 of step t
            inputs = []
            for lag, psi_2 in enumerate((newest, *normalised)):
                inputs += [relative[lag].astype(dtype), psi_2, ratios[lag]]
            if features.moments:
                *moments, moment_inputs = cf.moment_inputs(*moments, gradient, t)
                inputs += moment_inputs
            cast = jax.tree.map(lambda a: jnp.asarray(a, dtype), policy)
            step = elementwise_mean(cast, inputs, activation).astype(dtype)
            next_ratio = cf.step_ratio(step, last_step, t + 1)
            return (step, (newest, *normalised)[:history - 1], (next_ratio, *ratios)[:history],
                    tuple(moments))

        leaves, treedef = jax.tree.flatten(updates)
        groups = _dtype_groups(leaves)
        gradients = _flatten(leaves, groups)
        steps, normalised, ratios, moments = zip(*map(
            one_dtype, gradients, state.gradient, state.step, state.normalised, state.ratios,
            state.moments), strict=True)
        log_scale, taken, displacement = state.log_scale, steps, ()
        if adapts:
            log_scale = step_scale.next_log_scale(log_scale, gradients, state.displacement,
                                                  scale_gain, scale_bound)
            taken = tuple(jnp.exp(log_scale).astype(s.dtype) * s for s in steps)
            displacement = tuple(step_scale.next_displacement(d, s, scale_decay)
                                 for d, s in zip(state.displacement, steps, strict=True))
        new_state = CoordinatewiseState(t + 1, value, relative[:-1], log_scale, gradients,
                                        steps, normalised, ratios, moments, displacement)
        return _unflatten(taken, groups, leaves, treedef), new_state

    return optax.GradientTransformationExtraArgs(init, update)
