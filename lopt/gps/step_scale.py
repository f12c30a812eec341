"""Step-scale adaptation for the coordinate-wise learned optimizer, and how meta-training
chooses its gain.

The coordinate-wise policy (`coordinate_learned`) is feed-forward on a few recent features,
so the size of its steps is, in effect, the learning rate that worked on the nets it was
trained on. A task that wants a third of that rate (a wider net, noisier minibatches) cannot be
told. One scalar per run fixes the scale: every step of the policy is multiplied by
s_t = exp(l_t), where

    d_t = decay * d_{t-1} + u_t                                  (d_{-1} = 0)
    c_t = -<g_t, d_{t-1}> / (||g_t|| ||d_{t-1}|| + TINY)        (0 at t = 0)
    l_t = clip(l_{t-1} + gain * c_t, -log(bound), log(bound)),   l_{-1} = 0,

u_t is the policy's step before scaling, d_t a decayed sum of them (the displacement over the
last 1 / (1 - decay) steps or so), g_t the gradient, inner product and norms over every
coordinate of the params pytree. c_t > 0 when the gradient still points along the recent
displacement (steps too short), c_t < 0 when it turned back (too long): a normalised
hypergradient step on the log of the scale (Baydin et al. 2018 adapt the rate itself by the
raw inner product with the last step, decay 0 here). The last step alone makes the scale
shrink where the area over a long run wants it kept (greedy rate adaptation's short-horizon
bias, Wu et al. 2018; docs/decisions.md), hence the decayed sum, decay 0.9 by default.
gain = 0 keeps s_t = 1: the policy alone. Adapting costs one more number per parameter
(d_t) and one more pass, to reduce the cosine.

`choose_gain` is the second stage of meta-training: on the training nets, the exported
optimizer with each gain of a grid is run with its steps multiplied by each of a few
perturbations (e.g. 1/3, 1, 3: a rate that is off either way must be recovered from); a
gain's criterion is its mean area relative to the unperturbed policy's (gain 0, perturbation
1) on the same net and seed, and the least wins. Nothing of the held-out tasks is seen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt.gps import network_family

TINY = 1e-30


def cosine(gradients: Sequence[jax.Array], steps: Sequence[jax.Array]) -> jax.Array:
    """c_t `[]` float32 (module docstring) from g_t and d_{t-1}, each given as arrays of any
    shapes (e.g. one flat vector per dtype) paired in order."""
    def total(first, second):
        return sum(jnp.sum(jnp.asarray(a, jnp.float32) * jnp.asarray(b, jnp.float32))
                   for a, b in zip(first, second, strict=True))

    norms = jnp.sqrt(total(gradients, gradients)) * jnp.sqrt(total(steps, steps))
    return -total(gradients, steps) / (norms + TINY)


def next_displacement(displacement: jax.Array, step: jax.Array, decay: float) -> jax.Array:
    """d_t from d_{t-1} and the policy's step u_t, both of one shape and dtype."""
    return (decay * displacement + step).astype(step.dtype)


def next_log_scale(log_scale, gradients, displacements, gain, bound: float) -> jax.Array:
    """l_t `[]` float32 from l_{t-1}, g_t and d_{t-1} (`cosine`); `gain` may be traced."""
    limit = float(np.log(bound))
    return jnp.clip(log_scale + gain * cosine(gradients, displacements), -limit, limit)


class GainChoice(NamedTuple):
    """What `choose_gain` measured: the chosen gain, each gain's criterion `[G]` and the
    areas `[G, S, N, R]` (gains, perturbations, problems, seeds)."""

    gain: float
    criteria: np.ndarray
    areas: np.ndarray


def choose_gain(optimizer: Callable[[jax.Array], optax.GradientTransformationExtraArgs],
                family, problems, gains: Sequence[float], perturbations: Sequence[float],
                steps: int, key: jax.Array, num_seeds: int = 2,
                eval_every: int = 10) -> GainChoice:
    """The gain of `gains` with the least criterion (module docstring).

    `optimizer(gain)` is the exported optimizer with that gain (`gain` a traced float32
    scalar, so one compilation serves the whole grid); `family` a `network_family`
    family and `problems` its (data, initial params), leaves `[N, ...]`, as meta-training
    holds them. Each run (`network_family.training_curve`) takes `steps` minibatch steps from
    the problem's initial params; its area is the mean full-batch loss every `eval_every`
    steps from step 0 (inf if any is not finite). `gains` must hold 0 and `perturbations` 1
    (the reference run).
    """
    if 0.0 not in gains or 1.0 not in perturbations:
        raise ValueError(f"choose_gain needs gain 0 and perturbation 1 (the policy alone) in "
                         f"its grids, got gains {list(gains)}, perturbations "
                         f"{list(perturbations)}")
    data, params = problems
    num_problems = jax.tree.leaves(params)[0].shape[0]
    seeds = jax.random.split(key, num_seeds)

    def area(gain, perturbation, data_one, params_one, seed):
        losses = network_family.training_curve(
            optax.chain(optimizer(gain), optax.scale(perturbation)),
            lambda p, k: family.minibatch_loss(p, data_one, k),
            lambda p: family.full_loss(p, data_one), params_one, seed, steps, eval_every)
        return jnp.where(jnp.all(jnp.isfinite(losses)), jnp.mean(losses), jnp.inf)

    over_seeds = jax.vmap(area, (None, None, None, None, 0))
    over_problems = jax.vmap(over_seeds, (None, None, 0, 0, None))
    grid = jnp.asarray([(g, p) for g in gains for p in perturbations], jnp.float32)
    areas = jax.jit(lambda: jax.lax.map(
        lambda pair: over_problems(pair[0], pair[1], data, params, seeds), grid))()
    areas = np.asarray(areas).reshape(len(gains), len(perturbations), num_problems, num_seeds)
    reference = areas[list(gains).index(0.0), list(perturbations).index(1.0)]
    if not np.all(np.isfinite(reference)):
        raise ValueError("choose_gain: the policy alone (gain 0, perturbation 1) diverges on "
                         "these problems, so no gain can be measured against it")
    criteria = np.mean(areas / reference, axis=(1, 2, 3))
    criteria = np.where(np.isfinite(criteria), criteria, np.inf)
    return GainChoice(float(gains[int(np.argmin(criteria))]), criteria, areas)
