"""Rules scored by how well they imitate a teacher optimizer's steps: distillation into a formula.

A teacher (any optax optimizer, e.g. a GPS policy through `lopt.gps.as_optax`) runs on N
problems of a family for T steps (`demonstrate`). A rule is then replayed on the teacher's own
trajectory (teacher forcing): at step t its moments fold in the teacher's gradient g_t, its
`w` operands read the teacher's iterate x_t, and it proposes a direction d_t. One scale per
rule, fitted in closed form over every step, problem and coordinate, matches its steps to the
teacher's s_t = x_{t+1} - x_t:

    alpha = max(0, -<d, s> / <d, d>)      (the rule's learning rate: step = -alpha · d)
    error = |s + alpha·d|² / |s|² = 1 - max(0, -<d, s>)² / (<d, d> |s|²)

summed over t < T, problems and coordinates. The error is 0 for a rule that reproduces the
teacher exactly and 1 for one that does no better than standing still (or points uphill);
the reward is -error. A rule with a non-finite direction anywhere is a failure (reward -1).

Moments depend only on the gradients, so they are computed once per step and shared by every
rule; the rules of a chunk run together through the population interpreter, so a new rule
compiles nothing. `ImitationTask` makes this a search child: `lopt.search.evaluate` (and so
the search driver, its cache and pruning) uses its `score_rules` in place of the training
protocol.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lopt import evaluation, objectives
from lopt import rules as rules_lib
from lopt.search import tasks

FAILURE_REWARD = -1.0


class Demonstration(NamedTuple):
    """A teacher's run on N problems for T steps (float arrays, time-major).

    gradients: [T, N, dim], the objective's gradient at x_t.
    iterates: [T, N, dim], x_t for t < T.
    steps: [T, N, dim], x_{t+1} - x_t.
    """

    gradients: jax.Array
    iterates: jax.Array
    steps: jax.Array


def demonstrate(opt, family: objectives.Family, problems, num_steps: int,
                x0: jax.Array) -> Demonstration:
    """The teacher `opt`'s trajectories on `problems` (leading axis N) from x0 [N, dim]
    (`lopt.evaluation.run`: a rejected non-finite step is a zero step)."""
    _, iterates = evaluation.run(opt, family, problems, num_steps, x0=x0, return_iterates=True)
    gradients = jax.vmap(jax.vmap(jax.grad(family.loss, argnums=1), in_axes=(None, 0)))(problems,
                                                                           iterates[:, :-1])
    steps = iterates[:, 1:] - iterates[:, :-1]
    time_major = lambda array: jnp.swapaxes(array, 0, 1)
    return Demonstration(time_major(gradients), time_major(iterates[:, :-1]), time_major(steps))


@jax.jit
def imitation(codes: jax.Array, demonstration: Demonstration, member_keys: jax.Array):
    """Imitation errors [R] and fitted scales [R] of R rules, codes int32 [R, 5·D] (module
    docstring), with member_keys [R] for the rules' random draws; non-finite where a rule's
    direction is."""
    num_rules = codes.shape[0]
    broadcast = lambda tree: jax.tree.map(
        lambda leaf: jnp.broadcast_to(leaf, (num_rules, *leaf.shape)), tree)

    def step(carry, inputs):
        state, keys, cross, square = carry
        gradient, iterate, teacher_step = inputs
        state, moments, _ = rules_lib.advance(state, gradient)
        step_keys, keys = jax.vmap(jax.random.split, out_axes=1)(keys)
        directions = rules_lib.interpret(codes, broadcast(moments), broadcast(iterate),
                                         step_keys)
        cross = cross + jnp.sum(directions * teacher_step, axis=(1, 2))
        square = square + jnp.sum(directions * directions, axis=(1, 2))
        return (state, keys, cross, square), None

    state = rules_lib.init_state(demonstration.gradients[0])
    zeros = jnp.zeros(num_rules, demonstration.steps.dtype)
    (_, _, cross, square), _ = jax.lax.scan(
        step, (state, member_keys, zeros, zeros),
        (demonstration.gradients, demonstration.iterates, demonstration.steps))
    teacher = jnp.sum(demonstration.steps ** 2)
    aligned = jnp.maximum(-cross, 0.0)
    fitted = square > 0
    safe_square = jnp.where(fitted, square, 1.0)
    error = jnp.where(fitted, 1.0 - aligned ** 2 / (safe_square * teacher), 1.0)
    scale = jnp.where(fitted, aligned / safe_square, 0.0)
    return jnp.where(jnp.isfinite(cross + square), error, jnp.nan), scale


@dataclasses.dataclass(frozen=True, eq=False)
class ImitationTask(tasks.FamilyTask):
    """A search child whose reward is -imitation error of a teacher's demonstration.

    As a `lopt.search.tasks.FamilyTask` it is the demonstration's problems from the teacher's
    starting iterates `start` [N, dim] (its `init`, `loss` and `accuracy`, for the task
    protocol); the search scores rules with `score_rules`, not by training, so the training
    protocol's settings do not apply. `failure_reward` (-1) is what a pruned or non-finite
    rule gets: no better than standing still.
    """

    demonstration: Demonstration
    failure_reward = FAILURE_REWARD

    def score_rules(self, codes: jax.Array, config, key: jax.Array) -> dict[str, np.ndarray]:
        """Rows of `lopt.search.evaluator.Scores` fields for codes [R, 5·D]: reward = -error,
        learning_rate = the fitted scale, train_loss = the error; chunks of
        `config.chunk_size` (padded, so one compiled program serves every call)."""
        num_rules, chunk = codes.shape[0], config.chunk_size
        errors, scales = [], []
        for start in range(0, num_rules, chunk):
            take = np.minimum(np.arange(start, start + chunk), num_rules - 1)
            keys = jax.vmap(functools.partial(jax.random.fold_in, key))(jnp.asarray(take))
            error, scale = imitation(codes[take], self.demonstration, keys)
            count = min(chunk, num_rules - start)
            errors.append(np.asarray(error)[:count])
            scales.append(np.asarray(scale)[:count])
        error = np.concatenate(errors).astype(np.float64)
        failed = ~np.isfinite(error)
        reward = np.where(failed, self.failure_reward, -error)
        return {"reward": reward, "val_accuracy": reward,
                "learning_rate": np.where(failed, math.nan, np.concatenate(scales)),
                "train_loss": error, "diverged": failed, "best_val_accuracy": reward,
                "pruned": np.zeros(num_rules, bool)}


def imitation_task(name: str, teacher, family: objectives.Family, problems, num_steps: int,
                   x0: jax.Array) -> ImitationTask:
    """The child that distils `teacher` (an optax optimizer) from its run on `problems`."""
    return ImitationTask(name, family, problems, x0,
                         demonstrate(teacher, family, problems, num_steps, x0))
