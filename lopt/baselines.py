"""Hand-engineered baselines of Li & Malik (2017) as optax transformations, and their tuning.

All of them run in the same harness (`lopt.evaluation.run`). Sign convention: the returned
updates are *added* to the parameters (`optax.apply_updates`). Conjugate gradient and L-BFGS
come in two forms:

* with line searches (`conjugate_gradient`, `lbfgs`; `lopt.linesearch`), the strong form and
  our default (`LINE_SEARCH_BASELINES`). They are `GradientTransformationExtraArgs`: their
  `update` takes `value`, `grad` and `value_fn` keyword arguments (as `optax.lbfgs`), and one
  iteration may evaluate the objective several times;
* with a fixed, tuned step (`fixed_step_conjugate_gradient`, `fixed_step_lbfgs`), one gradient
  per iteration like the learned optimizer. This is the conjugate gradient of Li & Malik's
  Table 1 (Fletcher-Reeves directions times a step size gamma); their text tunes every
  baseline's hyperparameters and reports CG and L-BFGS diverging on the MLP classifier, which a
  line search would prevent, so we read both as fixed-step methods (`PAPER_BASELINES`).

`tune` grid-searches hyperparameters on training problems: the whole grid x problems x steps
is one compiled program (vmap over grid points and problems, scan over steps). The criterion
is the mean objective over all iterations (area under the curve, the default, because the
margin of victory compares algorithms at every iteration) or the mean final objective.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt import evaluation, linesearch, parallel


def gradient_descent(learning_rate: float) -> optax.GradientTransformation:
    """x <- x - learning_rate * grad."""
    return optax.sgd(learning_rate)


def momentum(learning_rate: float, decay: float = 0.9) -> optax.GradientTransformation:
    """Heavy-ball momentum: v <- decay * v + grad; x <- x - learning_rate * v."""
    return optax.sgd(learning_rate, momentum=decay)


class ConjugateGradientState(NamedTuple):
    """State of `scale_by_conjugate_gradient`.

    count: steps taken, int32 scalar; the direction restarts at -grad when
      `count % restart_every == 0`.
    previous_grad: the gradient at the previous step (params-shaped).
    previous_direction: the previous search direction (params-shaped, a descent direction).
    """

    count: jax.Array
    previous_grad: optax.Updates
    previous_direction: optax.Updates


CONJUGATE_GRADIENT_FORMULAS = ("polak_ribiere_plus", "fletcher_reeves")


def scale_by_conjugate_gradient(
    restart_every: int | None, formula: str = "polak_ribiere_plus"
) -> optax.GradientTransformation:
    """Nonlinear conjugate-gradient directions.

    d_k = -g_k + beta_k d_{k-1} with
      polak_ribiere_plus: beta_k = max(0, g_k.(g_k - g_{k-1}) / |g_{k-1}|^2),
      fletcher_reeves:    beta_k = |g_k|^2 / |g_{k-1}|^2 (Li & Malik, Table 1),
    restarted to d_k = -g_k every `restart_every` steps and whenever d_k is not a descent
    direction (d_k . g_k >= 0). Chain with a line search or a step size to get a step.

    Args:
      restart_every: restart period in steps (commonly the dimension of the problem); None
        restarts only at the first step and on non-descent directions.
      formula: one of CONJUGATE_GRADIENT_FORMULAS.

    Returns:
      A transformation mapping gradients to descent directions.
    """
    if restart_every is not None and restart_every < 1:
        raise ValueError(f"restart_every must be >= 1 or None, got {restart_every}")
    if formula not in CONJUGATE_GRADIENT_FORMULAS:
        raise ValueError(f"formula must be one of {CONJUGATE_GRADIENT_FORMULAS}, got {formula!r}")

    def init(params):
        zeros = optax.tree.zeros_like(params)
        return ConjugateGradientState(jnp.zeros([], jnp.int32), zeros, zeros)

    def update(grad, state, params=None):
        del params
        previous_norm = optax.tree.vdot(state.previous_grad, state.previous_grad)
        if formula == "fletcher_reeves":
            numerator = optax.tree.vdot(grad, grad)
        else:
            numerator = optax.tree.vdot(grad, optax.tree.sub(grad, state.previous_grad))
        beta = jnp.maximum(numerator / jnp.where(previous_norm > 0, previous_norm, 1), 0.0)
        direction = optax.tree.add_scale(optax.tree.scale(-1.0, grad), beta,
                                         state.previous_direction)
        period = state.count if restart_every is None else state.count % restart_every
        restart = (period == 0) | (optax.tree.vdot(direction, grad) >= 0)
        direction = optax.tree.where(restart, optax.tree.scale(-1.0, grad), direction)
        return direction, ConjugateGradientState(state.count + 1, grad, direction)

    return optax.GradientTransformation(init, update)


def conjugate_gradient(
    restart_every: int = 10,
    line_search: str = "wolfe",
    curvature: float = 0.1,
    max_linesearch_steps: int = 20,
) -> optax.GradientTransformationExtraArgs:
    """Nonlinear conjugate gradient (Polak-Ribiere+, restarts) with a line search.

    Args:
      restart_every: restart the direction at -grad every this many steps.
      line_search: "wolfe" (`lopt.linesearch.scale_by_wolfe_linesearch`, the strong Wolfe
        conditions) or "exact" (Newton on the step length; exact on quadratics).
      curvature: the strong-Wolfe curvature constant c2 ("wolfe" only); CG wants it small.
      max_linesearch_steps: cap on line-search evaluations ("wolfe" only).

    Returns:
      A GradientTransformationExtraArgs; `update` needs `value`, `grad`, `value_fn`.
    """
    if line_search == "wolfe":
        search = linesearch.scale_by_wolfe_linesearch(max_linesearch_steps, curvature=curvature)
    elif line_search == "exact":
        search = linesearch.scale_by_exact_linesearch()
    else:
        raise ValueError(f"line_search must be 'wolfe' or 'exact', got {line_search!r}")
    return optax.chain(scale_by_conjugate_gradient(restart_every), search)


def lbfgs(
    memory_size: int = 10, curvature: float = 0.9, max_linesearch_steps: int = 20
) -> optax.GradientTransformationExtraArgs:
    """L-BFGS (`optax.lbfgs` directions) with a line search under the strong Wolfe conditions.

    Args:
      memory_size: number of past (step, gradient change) pairs kept.
      curvature: the strong-Wolfe curvature constant c2 (0.9 is the usual quasi-Newton value).
      max_linesearch_steps: cap on line-search evaluations per step.
    """
    return optax.lbfgs(
        memory_size=memory_size,
        linesearch=linesearch.scale_by_wolfe_linesearch(max_linesearch_steps,
                                                        curvature=curvature),
    )


def fixed_step_conjugate_gradient(learning_rate: float) -> optax.GradientTransformation:
    """Li & Malik's Table 1 conjugate gradient: x <- x + learning_rate * d, with d the
    Fletcher-Reeves direction (`scale_by_conjugate_gradient`, no periodic restarts)."""
    return optax.chain(scale_by_conjugate_gradient(None, "fletcher_reeves"),
                       optax.scale(learning_rate))


def fixed_step_lbfgs(learning_rate: float, memory_size: int = 10) -> optax.GradientTransformation:
    """L-BFGS directions (`optax.lbfgs`) times a fixed step `learning_rate`, no line search."""
    return optax.lbfgs(learning_rate, memory_size=memory_size, linesearch=None)


BASELINES: dict[str, Callable[..., optax.GradientTransformation]] = {
    "gradient_descent": gradient_descent,
    "momentum": momentum,
    "conjugate_gradient": conjugate_gradient,
    "lbfgs": lbfgs,
    "fixed_step_conjugate_gradient": fixed_step_conjugate_gradient,
    "fixed_step_lbfgs": fixed_step_lbfgs,
}
# The four algorithms a learned optimizer is compared with (module docstring).
LINE_SEARCH_BASELINES = ("gradient_descent", "momentum", "conjugate_gradient", "lbfgs")
PAPER_BASELINES = ("gradient_descent", "momentum", "fixed_step_conjugate_gradient",
                   "fixed_step_lbfgs")

# Default tuning grids: learning rates one third of a decade apart, the usual momentum decays,
# and the strong-Wolfe curvature constant for the line-search methods.
_LEARNING_RATES = tuple(np.logspace(-3, 1, 13).tolist())
DEFAULT_GRIDS: dict[str, dict[str, Sequence[float]]] = {
    "gradient_descent": {"learning_rate": _LEARNING_RATES},
    "momentum": {
        "learning_rate": _LEARNING_RATES,
        "decay": [0.5, 0.7, 0.8, 0.9, 0.95, 0.99],
    },
    "conjugate_gradient": {"curvature": [0.01, 0.1, 0.4]},
    "lbfgs": {"curvature": [0.1, 0.5, 0.9]},
    "fixed_step_conjugate_gradient": {"learning_rate": _LEARNING_RATES},
    "fixed_step_lbfgs": {"learning_rate": _LEARNING_RATES},
}


def get(name: str) -> Callable[..., optax.GradientTransformation]:
    """Returns the baseline factory called `name` (a key of BASELINES)."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; valid: {', '.join(BASELINES)}")
    return BASELINES[name]


class TuneResult(NamedTuple):
    """What `tune` found.

    best: the best hyperparameters, {name: python float}.
    grid: every grid point, {name: [num_points] array}.
    scores: the criterion at every grid point, [num_points] (lower is better). Diverging runs
      score high because `lopt.evaluation` rejects non-finite steps.
    """

    best: dict[str, float]
    grid: dict[str, np.ndarray]
    scores: np.ndarray


@functools.partial(jax.jit, static_argnames=("factory", "family", "num_steps", "criterion"))
def _grid_scores(grid_values, train_problems, x0, *, factory, family, num_steps, criterion):
    """The criterion, averaged over problems, at every grid point `[G]`: one compiled program
    per (factory, family, steps, criterion, shapes), reused by every `tune` call."""

    def score(hyperparameters):
        curves = evaluation.batch_curves(factory(**hyperparameters), family, train_problems, x0,
                                         num_steps)
        per_problem = curves.mean(axis=1) if criterion == "auc" else curves[:, -1]
        return per_problem.mean()

    return parallel.over_devices(jax.vmap(score), grid_values)


def tune(
    factory: Callable[..., optax.GradientTransformation],
    grid: Mapping[str, Sequence[float]],
    family,
    train_problems,
    num_steps: int,
    *,
    key: jax.Array,
    criterion: str = "auc",
) -> TuneResult:
    """Grid-searches `factory`'s hyperparameters on training problems.

    Every point of the Cartesian product of `grid` is run on every training problem from the
    same initial iterates, in one compiled program vmapped over grid points and problems.

    Args:
      factory: builds an optax transformation from keyword hyperparameters; it is called with
        traced scalars, so hyperparameters must enter only the arithmetic.
      grid: {hyperparameter name: candidate values}.
      family: the objective family (see `lopt.objectives`).
      train_problems: batched problem data, leading axis = number of problems.
      num_steps: optimisation steps per run.
      key: PRNG key for the initial iterates.
      criterion: "auc" (mean objective over iterations 0..num_steps) or "final" (mean
        objective at the last iteration), averaged over problems.

    Returns:
      A TuneResult.
    """
    if criterion not in ("auc", "final"):
        raise ValueError(f"criterion must be 'auc' or 'final', got {criterion!r}")
    if not grid:
        raise ValueError("grid must name at least one hyperparameter")
    names = list(grid)
    points = np.array(list(itertools.product(*(grid[name] for name in names))), np.float64)
    grid_arrays = {name: points[:, i] for i, name in enumerate(names)}
    num_problems = evaluation.num_problems(train_problems)
    x0 = family.init(key, num_problems)
    grid_values = {name: jnp.asarray(values, x0.dtype) for name, values in grid_arrays.items()}
    scores = np.asarray(_grid_scores(grid_values, train_problems, x0, factory=factory,
                                     family=family, num_steps=num_steps, criterion=criterion))
    best_index = int(np.argmin(scores))
    best = {name: float(grid_arrays[name][best_index]) for name in names}
    return TuneResult(best, grid_arrays, scores)
