"""The optimizer's state as an MDP state (Li & Malik 2017, section 5), in fixed-size buffers.

A state is one flat vector `[state_size]` laid out as

    [ iterate x (dim) | value changes (history) | gradients (history * dim) | steps (history*dim) ]

* iterate: the current iterate x_t. It enters the cost only; `policy_input` drops it.
* value changes: f(x_t) - f(x_{t-j}) for j = 1..history (the paper's "change in the objective
  value at the current iterate relative to the i-th most recent iterate", i = j + 1).
* gradients: with `current_gradient=True` (the default) the gradients at x_t, x_{t-1}, ...,
  x_{t-history+1}; with `current_gradient=False` the paper's literal choice, the gradients at
  x_{t-1}, ..., x_{t-history} (the i-th most recent iterates, i = 2..history+1).
* steps (only with `past_steps=True`): the actions u_{t-1}, ..., u_{t-history}.

History entries are zero until that many steps have been taken. The action is the step:
x_{t+1} = x_t + u_t.

Default feature set: the current gradient is included because a controller that is linear in
the state can then reproduce gradient descent with momentum (truncated to `history` terms),
which is what the initial controllers do (paper section 5); without it no linear controller
can take a gradient step on the gradient at the iterate it stands on.

State sizes with the defaults (history 25): `dim + history + history * dim`, i.e.
logistic and robust linear regression (dim 4): 129; MLP classifier (dim 12): 337;
Rosenbrock (dim 2): 77. `past_steps=True` adds `history * dim` (229 for dim 4).

Transitions are split into a known linear part and a small unknown part. Given the state s_t,
the action u_t and the *observation* z_{t+1} = [f(x_{t+1}) - f(x_t), new gradient]
(`observation_size = dim + 1`; the new gradient is the one at x_{t+1}, or at x_t without the
current gradient), `next_state(s_t, u_t, z_{t+1})` is linear in all three: the history
buffers shift by one slot, the newest value change is added to every value-change entry, the
new gradient (and step) enters slot 0 and the iterate moves by u_t. `lopt.gps.dynamics` uses
this to fit only the rows of the dynamics that are unknown.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp


class StateLayout(NamedTuple):
    """Where each part of the state lives; all entries are Python ints."""

    dim: int
    history: int
    past_steps: bool

    @property
    def size(self) -> int:
        return self.dim + self.history * (1 + self.dim * (2 if self.past_steps else 1))

    @property
    def observation_size(self) -> int:
        return self.dim + 1

    @property
    def value_changes(self) -> slice:
        return slice(self.dim, self.dim + self.history)

    @property
    def gradients(self) -> slice:
        start = self.dim + self.history
        return slice(start, start + self.history * self.dim)

    @property
    def steps(self) -> slice:
        start = self.dim + self.history * (1 + self.dim)
        return slice(start, self.size if self.past_steps else start)


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """Which features make up the state (module docstring). Paper: section 5, H = 25."""

    history: int = 25
    current_gradient: bool = True
    past_steps: bool = False

    def __post_init__(self):
        if not isinstance(self.history, int) or self.history < 1:
            raise ValueError(f"history must be a positive integer, got {self.history!r}")

    def layout(self, dim: int) -> StateLayout:
        return StateLayout(dim, self.history, self.past_steps)

    def state_size(self, dim: int) -> int:
        return self.layout(dim).size


def iterate(layout: StateLayout, state: jax.Array) -> jax.Array:
    """The iterate part `[..., dim]` of states `[..., state_size]`."""
    return state[..., : layout.dim]


def policy_input(layout: StateLayout, state: jax.Array) -> jax.Array:
    """States `[..., state_size]` without the iterate: `[..., state_size - dim]`."""
    return state[..., layout.dim :]


def _shift_in(buffer: jax.Array, newest: jax.Array) -> jax.Array:
    """Drops the oldest slot of `buffer` `[history, k]` and puts `newest` `[k]` in slot 0."""
    return jnp.concatenate([newest[None], buffer[:-1]], axis=0)


def next_state(
    layout: StateLayout, state: jax.Array, action: jax.Array, observation: jax.Array
) -> jax.Array:
    """The state after `action`, linear in (state `[dX]`, action `[dU]`, observation `[dZ]`).

    `observation = [f(x_{t+1}) - f(x_t), new gradient (dim)]`.
    """
    d, h = layout.dim, layout.history
    value_change, gradient = observation[0], observation[1:]
    old_changes = state[layout.value_changes]
    changes = value_change + jnp.concatenate([jnp.zeros_like(old_changes[:1]), old_changes[:-1]])
    gradients = _shift_in(state[layout.gradients].reshape(h, d), gradient)
    parts = [state[:d] + action, changes, gradients.reshape(-1)]
    if layout.past_steps:
        parts.append(_shift_in(state[layout.steps].reshape(h, d), action).reshape(-1))
    return jnp.concatenate(parts)


def initial_state(layout: StateLayout, x0: jax.Array, gradient: jax.Array) -> jax.Array:
    """The state `[dX]` at iterate `x0` `[dim]`: zero history; `gradient` in slot 0.

    Pass the gradient at `x0` with `current_gradient=True`, zeros otherwise.
    """
    state = jnp.zeros(layout.size, x0.dtype).at[: layout.dim].set(x0)
    return state.at[layout.gradients.start : layout.gradients.start + layout.dim].set(gradient)


class Tracker(NamedTuple):
    """What a rollout carries besides the state: f(x_t) `[]` and grad f(x_t) `[dim]`."""

    value: jax.Array
    gradient: jax.Array


def start(features: FeatureConfig, loss_fn, x0: jax.Array) -> tuple[jax.Array, Tracker]:
    """Initial state `[dX]` and tracker for `loss_fn: [dim] -> []` at `x0` `[dim]`."""
    value, gradient = jax.value_and_grad(loss_fn)(x0)
    slot0 = gradient if features.current_gradient else jnp.zeros_like(gradient)
    return initial_state(features.layout(x0.shape[-1]), x0, slot0), Tracker(value, gradient)


def step(
    features: FeatureConfig, loss_fn, state: jax.Array, tracker: Tracker, action: jax.Array
) -> tuple[jax.Array, Tracker, jax.Array]:
    """Takes `action` `[dim]`: returns (next state `[dX]`, next tracker, observation `[dZ]`)."""
    layout = features.layout(action.shape[-1])
    value, gradient = jax.value_and_grad(loss_fn)(iterate(layout, state) + action)
    newest = gradient if features.current_gradient else tracker.gradient
    observation = jnp.concatenate([(value - tracker.value)[None], newest])
    return next_state(layout, state, action, observation), Tracker(value, gradient), observation
