"""Line searches for the line-search baselines (conjugate gradient, L-BFGS), as optax transforms.

Both are `GradientTransformationExtraArgs` mapping a descent direction d to alpha * d; their
`update(direction, state, params, *, value, grad, value_fn)` needs the objective value and
gradient at `params` and the objective itself (as `optax.scale_by_zoom_linesearch`).

`scale_by_wolfe_linesearch` is a bracketing-and-zoom search for a step meeting the strong
Wolfe conditions (Nocedal & Wright, Numerical Optimization, Algorithms 3.5 and 3.6). Its loop
stops after `max_steps` objective evaluations whatever the numbers do, so it also terminates
under `vmap` on populations of problems (optax's zoom search did not always: on robust linear
regression, 60 problems x 2 curvature constants, one member kept searching past its cap).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class WolfeLinesearchState(NamedTuple):
    """State of `scale_by_wolfe_linesearch`.

    step_size: the step length taken at the last update (scalar; 0 before the first).
    num_evaluations: objective evaluations the last search used (int32 scalar).
    found: whether the last search met the strong Wolfe conditions (bool scalar); if not,
      it took the best step with sufficient decrease it had seen (possibly 0).
    """

    step_size: jax.Array
    num_evaluations: jax.Array
    found: jax.Array


class _Search(NamedTuple):
    """Loop carry. `low` is the best step so far with sufficient decrease (0 at start);
    `high` the other end of the bracket once `bracketed`; `trial` the next step to try."""

    count: jax.Array
    done: jax.Array
    bracketed: jax.Array
    trial: jax.Array
    low: jax.Array
    value_low: jax.Array
    slope_low: jax.Array
    high: jax.Array
    value_high: jax.Array
    slope_high: jax.Array


def _interpolate(low, value_low, slope_low, high, value_high, slope_high):
    """Minimiser of the cubic through both ends (values and slopes), safeguarded to the inner
    80% of the bracket; the midpoint where the cubic has no usable minimiser."""
    d1 = slope_low + slope_high - 3 * (value_low - value_high) / (low - high)
    radicand = d1 * d1 - slope_low * slope_high
    d2 = jnp.sign(high - low) * jnp.sqrt(jnp.maximum(radicand, 0.0))
    cubic = high - (high - low) * (slope_high + d2 - d1) / (slope_high - slope_low + 2 * d2)
    left, right = jnp.minimum(low, high), jnp.maximum(low, high)
    margin = 0.1 * (right - left)
    usable = (radicand >= 0) & jnp.isfinite(cubic) & (cubic > left + margin)
    usable &= cubic < right - margin
    return jnp.where(usable, cubic, 0.5 * (low + high))


def scale_by_wolfe_linesearch(
    max_steps: int = 20,
    decrease: float = 1e-4,
    curvature: float = 0.9,
    initial_step: float = 1.0,
    expansion: float = 2.0,
) -> optax.GradientTransformationExtraArgs:
    """Scales a descent direction by a step meeting the strong Wolfe conditions.

    With phi(a) = f(x + a d): sufficient decrease phi(a) <= phi(0) + decrease * a * phi'(0)
    and curvature |phi'(a)| <= curvature * |phi'(0)|. The search tries `initial_step`, grows
    it by `expansion` until the minimum along d is bracketed, then shrinks the bracket by
    safeguarded cubic interpolation. Non-finite values count as too large a step. If no step
    meets both conditions within `max_steps` evaluations, the best step with sufficient
    decrease seen is taken (0 if none: the iterate stays put).

    Args:
      max_steps: cap on objective evaluations per search (>= 1).
      decrease: the sufficient-decrease constant c1, in (0, curvature).
      curvature: the curvature constant c2, in (decrease, 1); 0.9 suits quasi-Newton
        directions, about 0.1 conjugate-gradient ones.
      initial_step: the first step length tried.
      expansion: factor by which the step grows while bracketing (> 1).

    Returns:
      A GradientTransformationExtraArgs; `update` needs `value`, `grad` and `value_fn`.
      Hyperparameters may be traced scalars (as `lopt.baselines.tune` passes them).
    """
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    for name, number in (("decrease", decrease), ("curvature", curvature)):
        if isinstance(number, (int, float)) and not 0 < number < 1:
            raise ValueError(f"{name} must lie in (0, 1), got {number}")

    def init(params):
        dtype = jnp.result_type(*jax.tree.leaves(params)) if jax.tree.leaves(params) else float
        return WolfeLinesearchState(jnp.zeros([], dtype), jnp.zeros([], jnp.int32),
                                    jnp.zeros([], bool))

    def update(direction, state, params, *, value, grad, value_fn, **extra_args):
        del extra_args
        dtype = state.step_size.dtype
        value = jnp.asarray(value, dtype)
        slope0 = optax.tree.vdot(grad, direction).astype(dtype)

        def phi(step):
            point_value, point_grad = jax.value_and_grad(value_fn)(
                optax.tree.add_scale(params, step, direction))
            point_slope = optax.tree.vdot(point_grad, direction)
            finite = jnp.isfinite(point_value) & jnp.isfinite(point_slope)
            return (jnp.where(finite, point_value, jnp.inf).astype(dtype),
                    jnp.where(finite, point_slope, 0.0).astype(dtype))

        def body(search):
            step = search.trial
            step_value, step_slope = phi(step)
            too_long = (step_value > value + decrease * step * slope0)
            too_long |= step_value >= search.value_low
            flat = jnp.abs(step_slope) <= -curvature * slope0
            done = ~too_long & flat
            # Bracketing (N&W 3.5): a too-long step closes the bracket [low, step]; a step
            # past the minimum (slope >= 0) closes [step, low]; otherwise move low and grow.
            # Zoom (N&W 3.6): a too-long step replaces high; otherwise step becomes low and
            # high moves to the old low if the slope points away from high.
            swap = ~too_long & (step_slope * (search.high - search.low) >= 0)
            swap = jnp.where(search.bracketed, swap, ~too_long & (step_slope >= 0))
            move_low = ~too_long
            high, value_high, slope_high = [
                jnp.where(too_long, new, jnp.where(swap, old_low, old_high))
                for new, old_low, old_high in (
                    (step, search.low, search.high),
                    (step_value, search.value_low, search.value_high),
                    (step_slope, search.slope_low, search.slope_high))]
            low, value_low, slope_low = [
                jnp.where(move_low, new, old) for new, old in (
                    (step, search.low), (step_value, search.value_low),
                    (step_slope, search.slope_low))]
            bracketed = search.bracketed | too_long | swap
            next_trial = jnp.where(
                bracketed,
                _interpolate(low, value_low, slope_low, high, value_high, slope_high),
                expansion * step)
            return _Search(search.count + 1, done, bracketed, next_trial, low, value_low,
                           slope_low, high, value_high, slope_high)

        zero = jnp.zeros([], dtype)
        start = _Search(
            count=jnp.zeros([], jnp.int32), done=jnp.zeros([], bool),
            bracketed=jnp.zeros([], bool), trial=jnp.asarray(initial_step, dtype),
            low=zero, value_low=value, slope_low=slope0,
            high=zero, value_high=value, slope_high=slope0)
        # A direction that does not descend gets no search and no step.
        start = start._replace(done=~(slope0 < 0))
        final = jax.lax.while_loop(lambda s: ~s.done & (s.count < max_steps), body, start)
        # `done` means the last trial met both conditions; it was also made `low` then.
        step_size = final.low
        new_state = WolfeLinesearchState(step_size, final.count, final.done & (slope0 < 0))
        return optax.tree.scale(step_size, direction), new_state

    return optax.GradientTransformationExtraArgs(init, update)


def scale_by_exact_linesearch(num_newton_steps: int = 3) -> optax.GradientTransformationExtraArgs:
    """Scales a direction d by the step alpha minimising phi(alpha) = f(x + alpha d).

    Newton's method on phi from alpha = 0, with phi' and phi'' from forward-mode derivatives
    of `value_fn`; exact in one step on quadratics. A Newton step is skipped where phi'' <= 0
    or the result is not finite, and alpha falls back to 0 if it does not decrease f.

    Args:
      num_newton_steps: Newton iterations on alpha.

    Returns:
      A transformation whose `update(direction, state, params, *, value, grad, value_fn)`
      returns alpha * direction.
    """

    def init(params):
        del params
        return optax.EmptyState()

    def update(direction, state, params, *, value, grad=None, value_fn, **extra_args):
        del grad, extra_args

        def phi(alpha):
            return value_fn(optax.tree.add_scale(params, alpha, direction))

        def newton(alpha, _):
            slope = lambda a: jax.jvp(phi, (a,), (jnp.ones_like(a),))[1]
            first, second = jax.jvp(slope, (alpha,), (jnp.ones_like(alpha),))
            candidate = alpha - first / second
            ok = (second > 0) & jnp.isfinite(candidate)
            return jnp.where(ok, candidate, alpha), None

        zero = jnp.zeros([], jnp.result_type(value))
        alpha, _ = jax.lax.scan(newton, zero, None, length=num_newton_steps)
        alpha = jnp.where(phi(alpha) <= value, alpha, zero)
        return optax.tree.scale(alpha, direction), state

    return optax.GradientTransformationExtraArgs(init, update)
