"""Per-coordinate features of a coordinate-wise learned optimizer (Li & Malik 2017b, section 3).

Every function here is elementwise over coordinates: arrays with a trailing coordinate axis
`[..., K]` (K coordinates, any K) and scalars for the objective. Nothing depends on the number
of parameters beyond that axis, so the same features serve a 48-48-10 net and a 1M-parameter
pytree (flatten the leaves, or apply leaf by leaf).

Observation features Psi (the policy's input; cheap, three per coordinate), from the objective
values f_t, f_{t-1}, the gradients g_t, g_{t-1} and the last two steps u_{t-1} = x_t - x_{t-1},
u_{t-2} = x_{t-1} - x_{t-2}:
    psi_1 = (f_t - f_{t-1}) / (|f_{t-1}| + TINY)        (0 at t = 0; the same for every coordinate)
    psi_2 = g_t / (|g_{t-1}| + 1)                         (g_{-1} := g_0)
    psi_3 = |u_{t-2}| / (|u_{t-1}| + 0.1)                 (0 for t < 2)
The paper divides by f_{t-1}; for the positive losses it trains on that is the same, and the
absolute value keeps the sign of psi_1 meaningful where a user's objective is negative. The
policy reads the last `observation_history` Psi vectors, newest first, zeros before the start,
and with `moments` (our addition, on by default) two more inputs from Adam's moment estimates
(`moment_inputs`):
    m_t = 0.9 m_{t-1} + 0.1 g_t,   v_t = 0.999 v_{t-1} + 0.001 g_t^2   (m_{-1} = v_{-1} = 0)
    s_t = sqrt(v_t / (1 - 0.999^{t+1})) + 1e-8
    (m_t / (1 - 0.9^{t+1})) / s_t,   g_t / s_t
The paper's policy is an LSTM, which can carry a running memory of the gradients; a
feed-forward policy on a few Psi vectors cannot, and these two scale-free inputs give it one in
a fixed form (Adam's step is the first one times its learning rate).
`observation_size = 3 * observation_history + 2 * moments` inputs per coordinate.

State features Phi (the C-step's state, training only), built on averages over the last
`average` (3) iterations, f̄_t, ḡ_t, x̄_t (fewer at the start), at stride `stride` (5):
    value i = 0..lags-1:     (f̄_{t-5i} - f̄_{t-5(i+1)}) / (|f̄_{t-5(i+1)}| + TINY)
    gradient i = 0..lags-1:  ḡ_{t-5i} / (|ḡ_{max(t-5(i+1), t mod 5)}| + 1)
    iterate i = 1..ratios:   |x̄_{t-5i} - x̄_{t-5(i+1)}| / (|x̄_t - x̄_{t-5}| + 0.1)
Entries that reach before t = 0 are zero. The paper's iterate features are "ratios of a
previous change in the averaged iterate to the current one"; we take the previous changes at
the same stride as the other features. The C-step's cost needs the raw gradient, so the state
of a coordinate is [g_t, Phi_t]: `state_size = 1 + 2 * lags + ratios` (61 with the paper's
25 lags and 10 ratios).

`History` is the fixed-size buffer Phi is computed from: the last `average` raw values and
the last `span = stride * lags + 1` averages, newest in slot 0.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

TINY = 1e-12  # guards the relative objective changes against a zero objective
MOMENT_DECAYS = (0.9, 0.999)  # Adam's defaults, for `moment_inputs`
MOMENT_EPSILON = 1e-8


@dataclasses.dataclass(frozen=True)
class CoordinateFeatureConfig:
    """Sizes of Phi and Psi (module docstring). Paper: 25 lags at stride 5 of 3-step averages,
    10 iterate ratios; `observation_history` (our choice) is how many Psi vectors the
    feed-forward policy reads, `moments` (our choice) whether it also reads Adam's moment
    inputs."""

    lags: int = 25
    stride: int = 5
    average: int = 3
    ratios: int = 10
    observation_history: int = 3
    moments: bool = True

    def __post_init__(self):
        for name in ("lags", "stride", "average", "ratios", "observation_history"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.moments, bool):
            raise ValueError(f"moments must be True or False, got {self.moments!r}")
        if self.ratios >= self.lags:
            raise ValueError(f"ratios ({self.ratios}) must be fewer than lags ({self.lags})")

    @property
    def span(self) -> int:
        return self.stride * self.lags + 1

    @property
    def state_size(self) -> int:
        return 1 + 2 * self.lags + self.ratios

    @property
    def observation_size(self) -> int:
        return 3 * self.observation_history + 2 * self.moments


def relative_change(value, previous_value, count) -> jax.Array:
    """psi_1 `[]` at step `count` (= t, int `[]`) from the values f_t, f_{t-1} `[]`."""
    return jnp.where(count >= 1, (value - previous_value) / (jnp.abs(previous_value) + TINY),
                     0.0).astype(jnp.result_type(value))


def normalised_gradient(gradient, previous_gradient) -> jax.Array:
    """psi_2 `[..., K]` from g_t and g_{t-1} (pass g_0 at t = 0)."""
    return gradient / (jnp.abs(previous_gradient) + 1.0)


def step_ratio(step, previous_step, count) -> jax.Array:
    """psi_3 `[..., K]` at step `count` (= t, int `[]`) from u_{t-1} and u_{t-2}."""
    return jnp.where(count >= 2, jnp.abs(previous_step) / (jnp.abs(step) + 0.1),
                     0.0).astype(step.dtype)


def observation_parts(value, previous_value, gradient, previous_gradient, step, previous_step,
                      count) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(psi_1, psi_2, psi_3), each `[..., K]`, at step `count` (= t, int `[]`): values `[]`,
    the rest `[..., K]`. At t = 0 pass previous_gradient = gradient (any value works for the
    others)."""
    relative = relative_change(value, previous_value, count).astype(gradient.dtype)
    return (jnp.broadcast_to(relative, gradient.shape),
            normalised_gradient(gradient, previous_gradient),
            step_ratio(step, previous_step, count))


def observation(value, previous_value, gradient, previous_gradient, step, previous_step,
                count):
    """Psi `[..., K, 3]` (`observation_parts` stacked)."""
    return jnp.stack(observation_parts(value, previous_value, gradient, previous_gradient, step,
                                       previous_step, count), axis=-1)


def moment_inputs(first, second, gradient, count):
    """Adam's moment estimates after g_t `[..., K]` at step `count` (= t, int `[]`) from
    m_{t-1}, v_{t-1} (zeros at t = 0): (m_t, v_t, (m̂_t / s_t, g_t / s_t)) (module docstring)."""
    decay_first, decay_second = MOMENT_DECAYS
    first = decay_first * first + (1 - decay_first) * gradient
    second = decay_second * second + (1 - decay_second) * gradient * gradient
    power = jnp.asarray(count + 1, gradient.dtype)
    scale = jnp.sqrt(second / (1 - decay_second ** power)) + MOMENT_EPSILON
    return first, second, (first / (1 - decay_first ** power) / scale, gradient / scale)


def push_observation(history: jax.Array, newest: jax.Array) -> jax.Array:
    """The policy input `[..., K, 3 * H]` after Psi_t `[..., K, 3]` arrives (newest first)."""
    return jnp.concatenate([newest, history[..., :-3]], axis=-1)


class History(NamedTuple):
    """Phi's buffers for K coordinates: steps seen `[]` int32, raw values `[A]`, gradients
    and iterates `[A, K]`, averaged values `[span]`, gradients and iterates `[span, K]`."""

    count: jax.Array
    values: jax.Array
    gradients: jax.Array
    iterates: jax.Array
    mean_values: jax.Array
    mean_gradients: jax.Array
    mean_iterates: jax.Array


def empty_history(config: CoordinateFeatureConfig, num_coordinates: int, dtype) -> History:
    a, s, k = config.average, config.span, num_coordinates
    return History(jnp.zeros([], jnp.int32), jnp.zeros(a, dtype), jnp.zeros((a, k), dtype),
                   jnp.zeros((a, k), dtype), jnp.zeros(s, dtype), jnp.zeros((s, k), dtype),
                   jnp.zeros((s, k), dtype))


def _shift_in(buffer: jax.Array, newest: jax.Array) -> jax.Array:
    return jnp.concatenate([newest[None], buffer[:-1]], axis=0)


def push(history: History, value, gradient, iterate) -> History:
    """Records f_t `[]`, g_t `[K]` and x_t `[K]` (t = history.count)."""
    values = _shift_in(history.values, value)
    gradients = _shift_in(history.gradients, gradient)
    iterates = _shift_in(history.iterates, iterate)
    seen = jnp.minimum(history.count + 1, values.shape[0])
    weights = (jnp.arange(values.shape[0]) < seen).astype(values.dtype) / seen
    return History(history.count + 1, values, gradients, iterates,
                   _shift_in(history.mean_values, weights @ values),
                   _shift_in(history.mean_gradients, weights @ gradients),
                   _shift_in(history.mean_iterates, weights @ iterates))


def state(config: CoordinateFeatureConfig, history: History) -> jax.Array:
    """[g_t, Phi_t] `[K, state_size]` after `push` of step t (module docstring)."""
    t = history.count - 1
    stride, lags = config.stride, config.lags
    near = jnp.arange(lags) * stride  # slot of t - 5i
    far = near + stride  # slot of t - 5(i+1)
    f = history.mean_values
    value = jnp.where(far <= t, (f[near] - f[far]) / (jnp.abs(f[far]) + TINY), 0.0)
    g = history.mean_gradients
    base = jnp.minimum(far, t - t % stride)  # slot of max(t - 5(i+1), t mod 5)
    gradient = jnp.where((near <= t)[:, None], g[near] / (jnp.abs(g[base]) + 1.0), 0.0)
    x = history.mean_iterates
    later = jnp.arange(1, config.ratios + 1) * stride
    current = jnp.where(stride <= t, jnp.abs(x[0] - x[stride]), 0.0)
    iterate = jnp.where((later + stride <= t)[:, None],
                        jnp.abs(x[later] - x[later + stride]) / (current + 0.1), 0.0)
    k = history.gradients.shape[-1]
    return jnp.concatenate([history.gradients[0][:, None],
                            jnp.broadcast_to(value, (k, lags)).astype(g.dtype),
                            gradient.T, iterate.T], axis=-1)
