"""Choosing among meta-training restarts by their areas on validation problems.

Coordinate-wise GPS from different keys (its exploration noise, its sampled rollouts) ends
at policies that train the held-out nets of `experiments.reproduce --which=lto_nets` very
differently (docs/decisions.md), although all of them fit their training nets alike. So
meta-training may run from several keys and keep the one that trains *validation* problems
best: fresh draws from the training family (other data sets and initial params), never a
held-out task. A candidate's criterion is the geometric mean, over validation problems and
seeds, of its area under the full-batch training-loss curve (`network_family.training_curve`:
the mean loss every `eval_every` steps from step 0), so that no single problem's loss scale
decides; a run that diverges makes its candidate's criterion inf, and the least criterion
wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt.gps import network_family


class RestartChoice(NamedTuple):
    """The chosen candidate's index, each candidate's criterion `[C]` and the areas
    `[C, N, R]` (candidates, validation problems, seeds; inf where a run diverged)."""

    index: int
    criteria: np.ndarray
    areas: np.ndarray


def choose_restart(candidates: Sequence[optax.GradientTransformationExtraArgs], family,
                   problems, steps: int, key: jax.Array, num_seeds: int = 2,
                   eval_every: int = 10) -> RestartChoice:
    """The candidate optimizer with the least criterion (module docstring) on `problems`
    (`(data, initial params)`, leaves `[N, ...]`, as `network_family` holds them) of `family`;
    each run takes `steps` minibatch steps, seed keys split from `key` (the same for every
    candidate)."""
    if not candidates:
        raise ValueError("choose_restart needs at least one candidate")
    if steps < eval_every or steps % eval_every:
        raise ValueError(f"steps ({steps}) must be a positive multiple of eval_every "
                         f"({eval_every})")
    data, params = problems
    seeds = jax.random.split(key, num_seeds)

    def areas_of(optimizer):
        def area(data_one, params_one, seed):
            losses = network_family.training_curve(
                optimizer, lambda p, k: family.minibatch_loss(p, data_one, k),
                lambda p: family.full_loss(p, data_one), params_one, seed, steps, eval_every)
            return jnp.where(jnp.all(jnp.isfinite(losses)), jnp.mean(losses), jnp.inf)

        over_seeds = jax.vmap(area, (None, None, 0))
        return np.asarray(jax.jit(jax.vmap(over_seeds, (0, 0, None)))(data, params, seeds))

    areas = np.stack([areas_of(candidate) for candidate in candidates])
    with np.errstate(divide="ignore"):
        criteria = np.exp(np.mean(np.log(areas), axis=(1, 2)))
    criteria = np.where(np.isfinite(criteria), criteria, np.inf)
    if not np.isfinite(criteria).any():
        raise ValueError("choose_restart: every candidate diverges on the validation problems")
    return RestartChoice(int(np.argmin(criteria)), criteria, areas)
