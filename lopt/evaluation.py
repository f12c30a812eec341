"""Running optimizers over batches of objectives, and the margin of victory.

`run(opt, family, problems, num_steps, key)` is one jitted program: a `jax.vmap` over problems
of a `jax.lax.scan` over steps, compiled once per kind of optimizer (`optax.sgd(0.1)` and a
fresh `optax.sgd(0.2)` share it; `lopt.optimizer_kind`). Every step calls

    updates, state = opt.update(grad, state, x, value=f(x), grad=grad, value_fn=f)

so line-search methods and learned optimizers that need the objective work unchanged (plain
`GradientTransformation`s ignore the extra arguments). A step whose new iterate, value or
gradient is not finite is rejected: the iterate and optimizer state stay where they were, so
a diverging optimizer shows up as a stalled curve and never produces NaNs downstream.

Curves have shape [num_problems, num_steps + 1]; column 0 is the objective at the initial
iterate, column t the objective after t steps.

The margin of victory (Li & Malik 2017, section 6.1) of algorithm a on problem p at iteration
t is  min_{b != a} f_b(p, t) - f_a(p, t):  positive exactly when a is strictly the best.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt import finite as finite_lib
from lopt import optimizer_kind, parallel


def num_problems(problems) -> int:
    """The size of the leading (problem) axis of a batched problem pytree."""
    sizes = {leaf.shape[0] if jnp.ndim(leaf) else None for leaf in jax.tree.leaves(problems)}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"problem data must share one leading axis; got leading sizes {sizes}")
    return sizes.pop()


def trajectory(opt, loss_fn, x0: jax.Array, num_steps: int):
    """Runs `opt` on one objective; traceable (call inside jit/vmap).

    Args:
      opt: an optax GradientTransformation (with or without extra-args support).
      loss_fn: scalar objective of the flat iterate.
      x0: initial iterate [dim].
      num_steps: number of optimizer steps.

    Returns:
      (values [num_steps + 1], iterates [num_steps + 1, dim]).
    """
    opt = optax.with_extra_args_support(opt)
    value_and_grad = jax.value_and_grad(loss_fn)

    def step(carry, _):
        x, state, value, grad = carry
        updates, new_state = opt.update(grad, state, x, value=value, grad=grad, value_fn=loss_fn)
        new_x = optax.apply_updates(x, updates)
        new_value, new_grad = value_and_grad(new_x)
        finite = finite_lib.all_finite((new_value, new_x, new_grad))
        carry = optax.tree.where(finite, (new_x, new_state, new_value, new_grad), carry)
        return carry, (carry[2], carry[0])

    value0, grad0 = value_and_grad(x0)
    _, (values, iterates) = jax.lax.scan(
        step, (x0, opt.init(x0), value0, grad0), None, length=num_steps
    )
    return jnp.concatenate([value0[None], values]), jnp.concatenate([x0[None], iterates])


def batch_trajectories(opt, family, problems, x0: jax.Array, num_steps: int):
    """`trajectory` vmapped over problems; traceable.

    Args:
      problems: batched problem data (leading axis P); x0: initial iterates [P, dim].

    Returns:
      (values [P, num_steps + 1], iterates [P, num_steps + 1, dim]).
    """
    run_one = lambda problem, start: trajectory(opt, family.objective(problem), start, num_steps)
    return jax.vmap(run_one)(problems, x0)


def batch_curves(opt, family, problems, x0: jax.Array, num_steps: int) -> jax.Array:
    """Objective values [P, num_steps + 1] of `batch_trajectories`; traceable."""
    return batch_trajectories(opt, family, problems, x0, num_steps)[0]


def _trajectories_over_devices(opt, family, problems, x0, num_steps):
    """`batch_trajectories` with the problems split over all devices (`lopt.parallel`)."""
    return parallel.over_devices(
        lambda *share: batch_trajectories(opt, family, *share, num_steps), problems, x0)


@partial(jax.jit, static_argnames=("kind", "family", "num_steps"))
def _compiled_trajectories(kind, numbers, family, problems, x0, num_steps):
    """`_trajectories_over_devices` of the optimizer `kind.rebuild(numbers)`
    (`lopt.optimizer_kind`: one compilation per kind of optimizer, its floats and arrays
    traced)."""
    return _trajectories_over_devices(kind.rebuild(numbers), family, problems, x0, num_steps)


# For an optimizer whose numbers cannot be traced (one that branches on a float in Python):
# compiled per optimizer object.
_compiled_static_trajectories = jax.jit(_trajectories_over_devices,
                                        static_argnames=("opt", "family", "num_steps"))


def _check_inputs(family, problems, num_steps, key, x0):
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps <= 0:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    count = num_problems(problems)
    if x0 is None:
        if key is None:
            raise ValueError("pass a PRNG key (for the initial iterates) or x0")
        return family.init(key, count)
    x0 = jnp.asarray(x0)
    if x0.shape != (count, family.dim):
        raise ValueError(
            f"x0 must have shape [num_problems, dim] = [{count}, {family.dim}], got {x0.shape}"
        )
    return x0


def run(opt, family, problems, num_steps: int, key: jax.Array | None = None, *, x0=None,
        return_iterates: bool = False):
    """Runs `opt` on every problem of a batch from random (or given) initial iterates.

    Args:
      opt: an optax GradientTransformation.
      family: the objective family the problems belong to.
      problems: batched problem data from `family.sample`, leading axis P.
      num_steps: number of optimizer steps.
      key: PRNG key for the initial iterates `family.init(key, P)`; unused if `x0` is given.
      x0: optional initial iterates [P, dim].
      return_iterates: also return the iterates.

    Returns:
      Objective values [P, num_steps + 1], and iterates [P, num_steps + 1, dim] if asked.

    Example:
      >>> fam = lopt.objectives.logistic_regression()
      >>> problems = fam.sample(jax.random.key(0), 100)
      >>> curves = run(optax.sgd(0.5), fam, problems, 100, jax.random.key(1))  # [100, 101]
    """
    x0 = _check_inputs(family, problems, num_steps, key, x0)
    kind, numbers = optimizer_kind.split(opt)
    try:
        values, iterates = _compiled_trajectories(kind, numbers, family, problems, x0, num_steps)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerIntegerConversionError,
            jax.errors.TracerArrayConversionError):
        values, iterates = _compiled_static_trajectories(opt, family, problems, x0, num_steps)
    return (values, iterates) if return_iterates else values


def margin_of_victory(curves: Mapping[str, jax.Array], per_problem: bool = False):
    """The paper's margin of victory of each algorithm at each iteration.

    margin_a(p, t) = min_{b != a} f_b(p, t) - f_a(p, t); positive means a is strictly best on
    problem p at iteration t, so at most one algorithm is positive there. Non-finite objective
    values count as +inf (worst).

    Args:
      curves: {algorithm name: objective values [num_problems, num_steps + 1]}, at least two
        algorithms, all of one shape.
      per_problem: return the per-problem margins instead of their mean over problems.

    Returns:
      {name: mean margin [num_steps + 1]} or, with per_problem, {name: [num_problems,
      num_steps + 1]} (NumPy arrays).
    """
    if len(curves) < 2:
        raise ValueError(f"margin of victory needs at least two algorithms, got {list(curves)}")
    shapes = {name: np.shape(values) for name, values in curves.items()}
    if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 2:
        raise ValueError(f"curves must all have one shape [num_problems, num_steps + 1]: {shapes}")
    names = list(curves)
    stacked = np.stack([np.asarray(curves[name], np.float64) for name in names])
    stacked = np.where(np.isfinite(stacked), stacked, np.inf)
    others = np.where(np.eye(len(names), dtype=bool)[:, :, None, None], np.inf, stacked[None])
    margins = others.min(axis=1) - stacked
    return {name: margins[i] if per_problem else margins[i].mean(axis=0)
            for i, name in enumerate(names)}
