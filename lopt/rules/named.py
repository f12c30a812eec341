"""PowerSign and AddSign as optax optimizers, with the sign-decay schedules of the paper.

From Bello et al. (2017), in the extended version that introduces "internal decay" of the
sign term (arXiv:1709.07417, section 5): with m the EMA of g (decay b1; its sign is all that
is used, so no bias correction is needed) and a decay d(t) ∈ [0, 1],

    PowerSign: Δw = −lr · base^{d(t)·sign(g)·sign(m)} · g
    AddSign:   Δw = −lr · (α + d(t)·sign(g)·sign(m)) · g

Decays, with t the number of updates before this one (0 on the first) clipped to T steps:

    linear:  d(t) = 1 − t/T
    cosine:  d(t) = 0.5·(1 + cos(2π·n·t/T))          (n periods; n = 0.5 ends at 0)
    restart: d(t) = 0.5·(1 + cos(π·((n·t) mod T)/T)) (n restarts, each going from 1 to 0)

Without a decay d(t) = 1, and PowerSign with base e is `LIBRARY["powersign"]`, AddSign with
α = 1 is `LIBRARY["addsign"]`.

Learning rates: the direction is g scaled by a factor between 1/base and base (PowerSign) or
α − 1 and α + 1 (AddSign), so the rates that suit SGD suit these, not Adam's: the population
evaluator's sweep over 1e-5..10 chose 1.0 for PowerSign on the digits ConvNet, 0.01 to 0.1
for Adam (README, Table 1 analogue).

Every setting may be an `optax.inject_hyperparams` hyperparameter under `jit` (a traced
scalar); a sign decay passed that way is the value d of the current step, which
`inject_hyperparams` computes from a schedule with its own step count.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt.rules.semantics import update_moment


class SignAgreementState(NamedTuple):
    """count: int32 number of updates so far (None unless the sign decay is a schedule);
    momentum: EMA of g."""

    count: jax.Array | None
    momentum: Any


def linear_sign_decay(decay_steps: int) -> optax.Schedule:
    """d(t) = 1 − min(t, T)/T.

    Example:
      >>> linear_sign_decay(100)(50)
      Array(0.5, dtype=float32)
    """
    _check_steps(decay_steps)
    return lambda count: 1.0 - _fraction(count, decay_steps)


def cosine_sign_decay(decay_steps: int, num_periods: float = 0.5) -> optax.Schedule:
    """d(t) = 0.5·(1 + cos(2π·n·min(t, T)/T)), n = `num_periods` (the paper's cyclical decay)."""
    _check_steps(decay_steps)
    return lambda count: (
        0.5 * (1 + jnp.cos(2 * jnp.pi * num_periods * _fraction(count, decay_steps)))
    )


def restart_sign_decay(decay_steps: int, num_periods: float = 1) -> optax.Schedule:
    """d(t) = 0.5·(1 + cos(π·((n·min(t, T)) mod T)/T)), n = `num_periods` restarts."""
    _check_steps(decay_steps)
    return lambda count: (
        0.5 * (1 + jnp.cos(jnp.pi * jnp.mod(num_periods * _fraction(count, decay_steps), 1.0)))
    )


def _check_steps(decay_steps: int) -> None:
    if not decay_steps >= 1:
        raise ValueError(f"decay_steps must be a positive number of steps, got {decay_steps}")


def _fraction(count, decay_steps: int) -> jax.Array:
    return jnp.minimum(jnp.asarray(count, jnp.float32), decay_steps) / decay_steps


def scale_by_sign_agreement(
    scale: Callable[[jax.Array], jax.Array],
    b1: float = 0.9,
    sign_decay: optax.Schedule | float | None = None,
) -> optax.GradientTransformation:
    """Scales g by scale(d(t)·sign(g)·sign(m)), m the EMA of g with decay `b1`.

    Args:
      scale: elementwise map of the decayed sign agreement a ∈ [−1, 1] to a factor.
      b1: decay of the gradient EMA.
      sign_decay: schedule d(t) of the update count, a fixed d (a scalar, e.g. the value
        `optax.inject_hyperparams` computed for this step), or None for d = 1.

    Returns:
      A `GradientTransformation` with state `SignAgreementState`.
    """

    scheduled = callable(sign_decay)

    def init_fn(params):
        count = jnp.zeros([], jnp.int32) if scheduled else None
        return SignAgreementState(count, optax.tree.zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        momentum = update_moment(updates, state.momentum, b1, 1)
        count, decay = None, 1.0 if sign_decay is None else sign_decay
        if scheduled:
            count, decay = optax.safe_increment(state.count), sign_decay(state.count)

        def direction(g, m):
            agreement = jnp.sign(g) * jnp.sign(m).astype(g.dtype)
            return scale(jnp.asarray(decay, g.dtype) * agreement) * g

        directions = jax.tree.map(direction, updates, momentum)
        return directions, SignAgreementState(count, momentum)

    return optax.GradientTransformation(init_fn, update_fn)


def powersign(
    learning_rate: optax.ScalarOrSchedule,
    base: float = math.e,
    b1: float = 0.9,
    sign_decay: optax.Schedule | float | None = None,
) -> optax.GradientTransformation:
    """PowerSign: Δw = −lr · base^{d(t)·sign(g)·sign(m)} · g (see the module docstring).

    Args:
      learning_rate: a float or an optax schedule; SGD's rates, not Adam's (module docstring).
      base: α > 0 (the paper uses e or 2).
      b1: decay of the gradient EMA m.
      sign_decay: None, a schedule such as `linear_sign_decay(num_steps)`, or a fixed d.

    Returns:
      An optax `GradientTransformation`.

    Example:
      >>> opt = powersign(0.1, sign_decay=cosine_sign_decay(10_000))
      >>> tuned = optax.inject_hyperparams(powersign)(learning_rate=0.1, base=2.0)
    """
    # A Python float's logarithm in float64 (exactly 1 for e); a traced base's in its dtype.
    log_base = math.log(base) if isinstance(base, (int, float)) else jnp.log(base)
    return optax.chain(
        scale_by_sign_agreement(lambda agreement: jnp.exp(log_base * agreement), b1, sign_decay),
        optax.scale_by_learning_rate(learning_rate),
    )


def addsign(
    learning_rate: optax.ScalarOrSchedule,
    alpha: float = 1.0,
    b1: float = 0.9,
    sign_decay: optax.Schedule | float | None = None,
) -> optax.GradientTransformation:
    """AddSign: Δw = −lr · (α + d(t)·sign(g)·sign(m)) · g (see the module docstring).

    Args:
      learning_rate: a float or an optax schedule; SGD's rates, not Adam's (module docstring).
      alpha: the constant α (the paper uses 1 or 2).
      b1: decay of the gradient EMA m.
      sign_decay: None, a schedule such as `restart_sign_decay(num_steps, 4)`, or a fixed d.

    Returns:
      An optax `GradientTransformation`.

    Example:
      >>> opt = addsign(0.1, alpha=2.0)
    """
    return optax.chain(
        scale_by_sign_agreement(lambda agreement: alpha + agreement, b1, sign_decay),
        optax.scale_by_learning_rate(learning_rate),
    )
