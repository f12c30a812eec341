"""Rules scored by how well they imitate a teacher optimizer's steps: distillation into a formula.

A teacher (any optax optimizer, e.g. a GPS policy through `lopt.gps.as_optax`) runs on N
problems of a family for T steps (`demonstrate`), or trains N models on minibatches
(`demonstrate_minibatches`: their params flattened to coordinates). A rule is then replayed
on the teacher's own trajectory (teacher forcing): at step t its moments fold in the
teacher's gradient g_t, its `w` operands read the teacher's iterate x_t, and it proposes a
direction d_t. One scale per
rule, fitted in closed form over every step, problem and coordinate, matches its steps to the
teacher's s_t = x_{t+1} - x_t:

    alpha = max(0, -<d, s> / <d, d>)      (the rule's learning rate: step = -alpha · d)
    error = |s + alpha·d|² / |s|² = 1 - max(0, -<d, s>)² / (<d, d> |s|²)

summed over t < T, problems and coordinates. The error is 0 for a rule that reproduces the
teacher exactly and 1 for one that does no better than standing still (or points uphill);
the reward is -error. Optionally (`past_step`, an extension of the paper's language by one
of the policies' inputs) the teacher's previous step s_{t-1} joins the model with a fitted
momentum beta: steps -alpha·d_t + beta·s_{t-1}, which as an optimizer is the rule followed by
`optax.trace(decay=beta)` (heavy ball on the rule's direction). A rule with a non-finite
direction anywhere is a failure (reward -1).

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
import optax
from jax.flatten_util import ravel_pytree

from lopt import evaluation, objectives
from lopt import rules as rules_lib

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


def demonstrate_minibatches(opt, minibatch_loss, problems, params, num_steps: int,
                            key: jax.Array, coordinates=None) -> Demonstration:
    """The teacher `opt` (an optax optimizer; an `update` that takes `value=` gets the
    minibatch objective) training N models on stochastic objectives, e.g. networks on minibatches.

    `minibatch_loss(params, problem, key) -> scalar`: one problem's objective on the
    minibatch `key` draws; `problems` and the initial `params` (any pytree) have a leading
    axis N; problem n's step t draws its minibatch from `fold_in(split(key, N)[n], t)`. The
    demonstration's coordinates are each model's params flattened in pytree order
    (`jax.flatten_util.ravel_pytree`), all of them or those at the int indices `coordinates`
    [K] (rules act elementwise, so a subset of coordinates is replayed exactly as in the
    whole). A non-finite step is recorded, and applied, as a zero step. Shapes [T, N, K].
    """
    num_params = ravel_pytree(jax.tree.map(lambda leaf: leaf[0], params))[0].shape[0]
    if coordinates is not None:
        coordinates = np.asarray(coordinates)
        if coordinates.ndim != 1 or not np.issubdtype(coordinates.dtype, np.integer) or (
                coordinates.size and not 0 <= coordinates.min() <= coordinates.max()
                < num_params):
            raise ValueError(f"coordinates must be a 1-D array of indices into the "
                             f"{num_params} flattened parameters of a model, got "
                             f"{coordinates!r}")
    opt = optax.with_extra_args_support(opt)

    def one_model(problem, initial, model_key):
        flat, unravel = ravel_pytree(initial)
        keep = (lambda vector: vector) if coordinates is None else (
            lambda vector: vector[jnp.asarray(coordinates)])

        def step(carry, t):
            flat_params, state = carry
            model_params = unravel(flat_params)
            value, grads = jax.value_and_grad(minibatch_loss)(
                model_params, problem, jax.random.fold_in(model_key, t))
            updates, state = opt.update(grads, state, model_params, value=value)
            move = ravel_pytree(updates)[0].astype(flat_params.dtype)
            move = jnp.where(jnp.all(jnp.isfinite(move)), move, 0.0)
            return (flat_params + move, state), (keep(ravel_pytree(grads)[0]), keep(flat_params),
                                                 keep(move))

        _, recorded = jax.lax.scan(step, (flat, opt.init(initial)), jnp.arange(num_steps))
        return recorded

    num_models = jax.tree.leaves(params)[0].shape[0]
    gradients, iterates, steps = jax.jit(jax.vmap(one_model, out_axes=1))(
        problems, params, jax.random.split(key, num_models))
    return Demonstration(gradients, iterates, steps)


class Fit(NamedTuple):
    """Per rule [R]: the imitation error, the fitted scale alpha >= 0 (the rule's learning
    rate) and the fitted momentum beta in [0, MAX_MOMENTUM] (0 unless fitted with the past
    step); non-finite where the rule's direction is."""

    error: jax.Array
    scale: jax.Array
    momentum: jax.Array


MAX_MOMENTUM = 0.99


def _best_fit(dd, ds, dp, pp, ps, ss, past_step: bool) -> Fit:
    """The (alpha, beta) of least |s + alpha·d - beta·p|² over alpha >= 0 and beta in
    [0, MAX_MOMENTUM] (beta = 0 without `past_step`), from the inner products of the rule's
    directions d, the teacher's steps s and its previous steps p. The error is a convex
    quadratic, so its minimum on the box is the unconstrained one if feasible, else the least
    of the minima along the box's edges, each a one-dimensional fit clipped to its edge."""
    safe = lambda denominator: jnp.where(denominator > 0, denominator, 1.0)
    fitted_scale = lambda target: jnp.where(dd > 0, jnp.maximum(-target / safe(dd), 0.0), 0.0)
    zero = jnp.zeros_like(dd)
    candidates = [(fitted_scale(ds), zero)]
    if past_step:
        top = jnp.full_like(dd, MAX_MOMENTUM)
        determinant = dd * pp - dp * dp
        alpha = (dp * ps - ds * pp) / safe(determinant)
        beta = (dd * ps - dp * ds) / safe(determinant)
        inside = (determinant > 0) & (alpha >= 0) & (beta >= 0) & (beta <= MAX_MOMENTUM)
        candidates += [
            (zero, jnp.where(pp > 0, jnp.clip(ps / safe(pp), 0.0, MAX_MOMENTUM), 0.0)),
            (fitted_scale(ds - MAX_MOMENTUM * dp), top),
            (jnp.where(inside, alpha, 0.0), jnp.where(inside, beta, 0.0)),
        ]
    alphas, betas = (jnp.stack([jnp.broadcast_to(value, dd.shape) for value in values])
                     for values in zip(*candidates, strict=True))
    errors = _error(alphas, betas, dd, ds, dp, pp, ps, ss)
    best = jnp.argmin(errors, axis=0)
    pick = lambda values: jnp.take_along_axis(values, best[None], axis=0)[0]
    return Fit(jnp.minimum(pick(errors), 1.0), pick(alphas), pick(betas))


def _error(alpha, beta, dd, ds, dp, pp, ps, ss):
    """|s + alpha·d - beta·p|² / |s|² from the inner products (at least 0)."""
    residual = (ss + alpha ** 2 * dd + beta ** 2 * pp + 2 * alpha * ds - 2 * beta * ps
                - 2 * alpha * beta * dp)
    return jnp.maximum(residual / ss, 0.0)


@functools.partial(jax.jit, static_argnames="past_step")
def imitation(codes: jax.Array, demonstration: Demonstration, member_keys: jax.Array,
              past_step: bool = False, constants: tuple | None = None) -> Fit:
    """The `Fit` of R rules, codes int32 [R, 5·D] (module docstring), with member_keys [R]
    for the rules' random draws. With `past_step`, each rule's steps are modelled as
    -alpha·d_t + beta·s_{t-1}, the teacher's previous step (zero at t = 0) added with a
    fitted momentum: as an optimizer, the rule followed by `optax.trace(decay=beta)`. With
    `constants` (scales [R], momenta [R]), e.g. fitted on another demonstration, nothing is
    fitted: the errors are at those constants (and may exceed 1)."""
    num_rules = codes.shape[0]
    broadcast = lambda tree: jax.tree.map(
        lambda leaf: jnp.broadcast_to(leaf, (num_rules, *leaf.shape)), tree)
    inner = lambda left, right: jnp.sum(left * right, axis=(1, 2))

    def step(carry, inputs):
        state, keys, previous_step, sums = carry
        gradient, iterate, teacher_step = inputs
        state, moments, _ = rules_lib.advance(state, gradient)
        step_keys, keys = jax.vmap(jax.random.split, out_axes=1)(keys)
        directions = rules_lib.interpret(codes, broadcast(moments), broadcast(iterate),
                                         step_keys)
        sums = (sums[0] + inner(directions, directions), sums[1] + inner(directions, teacher_step),
                sums[2] + (inner(directions, previous_step) if past_step else 0.0))
        return (state, keys, teacher_step, sums), None

    steps = demonstration.steps
    state = rules_lib.init_state(demonstration.gradients[0])
    zeros = jnp.zeros(num_rules, steps.dtype)
    (_, _, _, (dd, ds, dp)), _ = jax.lax.scan(
        step, (state, member_keys, jnp.zeros_like(steps[0]), (zeros, zeros, zeros)),
        (demonstration.gradients, demonstration.iterates, steps))
    ss = jnp.sum(steps ** 2)
    pp, ps = jnp.sum(steps[:-1] ** 2), jnp.sum(steps[:-1] * steps[1:])
    if constants is None:
        fit = _best_fit(dd, ds, dp, pp, ps, ss, past_step)
    else:
        scale, momentum = (jnp.asarray(value, dd.dtype) for value in constants)
        fit = Fit(_error(scale, momentum, dd, ds, dp, pp, ps, ss), scale, momentum)
    finite = jnp.isfinite(dd + ds + dp)
    return Fit(*(jnp.where(finite, value, jnp.nan) for value in fit))


@dataclasses.dataclass(frozen=True, eq=False)
class ImitationTask:
    """A search child whose reward is -imitation error of `demonstration`.

    With `past_step` each rule is fitted with the teacher's previous step as well (`imitation`).
    The search scores rules with `score_rules`, not by training, so the training protocol's
    settings do not apply; `init` gives the demonstration's first iterates [N, dim] (what
    `lopt.search.tasks.identity` reads, with `identity_extra`). `failure_reward` (-1) is
    what a pruned or non-finite rule gets: no better than standing still.
    """

    name: str
    demonstration: Demonstration
    past_step: bool = False
    has_data = False
    failure_reward = FAILURE_REWARD

    def init(self, key: jax.Array) -> jax.Array:
        del key
        return self.demonstration.iterates[0]

    def identity_extra(self) -> tuple[dict, tuple]:
        """What `lopt.search.tasks.identity` adds: how rules are fitted and what they imitate,
        so a resume on another teacher or fit is refused."""
        return {"past_step": self.past_step}, (self.demonstration,)

    def fit(self, codes: jax.Array, chunk: int, key: jax.Array, constants=None) -> Fit:
        """`imitation` of codes [R, 5·D] (at `constants`, NumPy (scales [R], momenta [R]),
        if given) as NumPy arrays, in padded chunks of `chunk` rules (one compiled program
        serves every call); rule r draws from fold_in(key, r)."""
        num_rules, parts = codes.shape[0], []
        for start in range(0, num_rules, chunk):
            take = np.minimum(np.arange(start, start + chunk), num_rules - 1)
            keys = jax.vmap(functools.partial(jax.random.fold_in, key))(jnp.asarray(take))
            fixed = None if constants is None else tuple(np.asarray(c)[take] for c in constants)
            fit = imitation(codes[take], self.demonstration, keys, self.past_step, fixed)
            parts.append([np.asarray(value)[:min(chunk, num_rules - start)] for value in fit])
        return Fit(*(np.concatenate(values) for values in zip(*parts, strict=True)))

    def score_rules(self, codes: jax.Array, config, key: jax.Array) -> dict[str, np.ndarray]:
        """Rows of `lopt.search.evaluator.Scores` fields for codes [R, 5·D]: reward = -error,
        learning_rate = the fitted scale, train_loss = the error (`fit` in chunks of
        `config.chunk_size`; the fitted momentum is `fit`'s)."""
        num_rules = codes.shape[0]
        fit = self.fit(codes, config.chunk_size, key)
        error = fit.error.astype(np.float64)
        failed = ~np.isfinite(error)
        reward = np.where(failed, self.failure_reward, -error)
        return {"reward": reward, "val_accuracy": reward,
                "learning_rate": np.where(failed, math.nan, fit.scale),
                "train_loss": error, "diverged": failed, "best_val_accuracy": reward,
                "pruned": np.zeros(num_rules, bool)}

