"""The stages that improve the linear-Gaussian controllers: sample -> fit -> optimise.

Each training objective has its own time-varying linear-Gaussian controller, initialised to
tuned momentum (`initialisation`) and improved by the LQG under a KL trust region (`lqg`).
The stages are pure and jittable on their own; each takes only the settings parts it reads
(`lopt.gps.config`), so the outer loop's settings never reach a compiled program:

  initial_state   tuned momentum controllers                    -> LoopState `[N, ...]`
  sample_stage    rollouts of the current controllers           -> Samples `[N, S, ...]`
  fit_stage       cost expansion, dynamics (exact or GMM prior) -> Model `[N, ...]`
  optimise_stage  step-size adaptation, eta search, new controllers

The one outer loop that chains them (with or without a policy) is `lopt.gps.trainer`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from lopt import finite, parallel, progress
from lopt.gps import controllers as ctrl
from lopt.gps import cost as cost_lib
from lopt.gps import dynamics as dyn
from lopt.gps import exact_dynamics, initialisation, lqg
from lopt.gps import features as feats
from lopt.gps import gmm as gmm_lib
from lopt.gps.config import DynamicsConfig, LQGConfig, RolloutConfig


class Model(NamedTuple):
    """The local model of every objective: dynamics `[N, T, ...]`, cost `[N, T+1, ...]`,
    initial-state Gaussian `[N, ...]`, and the mixture fit (None with exact dynamics)."""

    dynamics: dyn.Dynamics
    cost: cost_lib.QuadraticCost
    initial: dyn.StateDistribution
    mixture: gmm_lib.GMMFit | None


class LoopState(NamedTuple):
    """What one iteration hands the next; leaves `[N, ...]`.

    controller: the current controllers `[N, T, ...]`.
    step_mult: multiplier of the KL bound `[N]`.
    previous_expected: expected cost of the previous controller under the previous model `[N]`
      (NaN before the first optimisation).
    predicted_expected: expected cost of the current controller under the previous model `[N]`.
    eta: the eta that gave the current controller `[N]` (NaN before the first optimisation);
      the next eta search starts from it (`lqg.optimise`).
    """

    controller: ctrl.Controller
    step_mult: jax.Array
    previous_expected: jax.Array
    predicted_expected: jax.Array
    eta: jax.Array


def initial_state(rollouts: RolloutConfig, features: feats.FeatureConfig, family, problems,
                  x0: jax.Array):
    """Tuned momentum controllers as a LoopState, and the momentum choices."""
    controller, choice = initialisation.initial_controllers(rollouts, features, family,
                                                            problems, x0)
    num = x0.shape[0]
    nan = jnp.full(num, jnp.nan, x0.dtype)
    return LoopState(controller, jnp.ones(num, x0.dtype), nan, nan, nan), choice


def sample_stage(rollouts: RolloutConfig, features: feats.FeatureConfig, family, problems, x0,
                 controller: ctrl.Controller, key) -> ctrl.Samples:
    """`rollouts.num_samples` noisy rollouts of each controller: Samples `[N, S, ...]`."""
    return ctrl.sample(family, features, problems, x0, controller, key, rollouts.num_samples)


def expand_cost(lqg_config: LQGConfig, family, layout, problems, samples: ctrl.Samples):
    """The cost expansion (`cost.expand`), early steps weighted by
    `LQGConfig.early_cost_weight`."""
    cost = cost_lib.expand(family, layout, problems, samples)
    if not lqg_config.early_cost_weight:
        return cost
    horizon = samples.actions.shape[2]
    weights = cost_lib.time_weights(horizon, lqg_config.early_cost_weight,
                                    lqg_config.early_cost_steps, cost.constant.dtype)
    return cost_lib.weighted(cost, weights)


def fit_stage(dynamics: DynamicsConfig, lqg_config: LQGConfig, features: feats.FeatureConfig,
              family, problems, samples: ctrl.Samples, key) -> Model:
    """The local model around the samples: the cost expansion, the dynamics (exact
    derivatives of f, or fitted with the GMM prior: `DynamicsConfig.model`) and the
    initial-state Gaussian."""
    layout = features.layout(family.dim)
    cost = expand_cost(lqg_config, family, layout, problems, samples)
    if dynamics.model == "fitted":
        local, mixture = dyn.fit(dynamics, layout, samples, key)
    else:
        local = exact_dynamics.linearise(family, features, problems, samples,
                                         dynamics.regularization)
        mixture = None
    initial = dyn.initial_distribution(samples, dynamics.regularization)
    return Model(local, cost, initial, mixture)


def _chunked(lqg_config: LQGConfig, function, inputs):
    """`function` over the leading (objective) axis of `inputs`: vmapped within chunks of
    `chunk_size` objectives and scanned over chunks, so each chunk's Riccati working set
    (a few `[n, n]` matrices per objective) stays in cache and a chunk's eta search stops
    when its own objectives have converged (one objective per chunk was fastest measured,
    docs/decisions.md). The objectives are split over all devices (`lopt.parallel`)."""
    return parallel.map_over_devices(function, inputs, batch_size=lqg_config.chunk_size)


def optimise_stage(lqg_config: LQGConfig, features: feats.FeatureConfig, family, model: Model,
                   state: LoopState, reference: ctrl.Controller | None = None):
    """Adapts the step multipliers and solves the LQG of every objective (vmapped).

    The KL trust region is around `reference` (`[N, T, ...]`): the current controllers by
    default, the linearised policy in mirror-descent GPS (`lopt.gps.train`). Returns (new
    LoopState, lqg.Solution without its controller (None: it is the new LoopState's, and a
    second copy of `[N, T, dU, dX]` gains is not kept), KL bound `[N]`, failed `[N]`): where
    the LQG gave a non-finite
    controller (its eta search found no pass that worked), the objective keeps `reference`
    (KL 0, expected cost as measured, a cold eta search next time) instead of passing NaN on
    to the samples and the policy.
    """
    reference = state.controller if reference is None else reference
    layout = features.layout(family.dim)

    def expected(inputs):
        return lqg.expected_cost(layout, *inputs)

    actual = _chunked(lqg_config, expected, (model.dynamics, model.cost, state.controller,
                                         *model.initial))
    adapted = lqg.adapt_step(lqg_config, state.step_mult, state.previous_expected,
                             state.predicted_expected, actual)
    step_mult = jnp.where(jnp.isnan(state.previous_expected), state.step_mult, adapted)
    kl_bound = lqg_config.kl_step * step_mult * reference.offset.shape[1]

    def solve(inputs):
        *inputs, number = inputs
        solution = lqg.optimise(lqg_config, layout, *inputs)
        progress.tick(number + 1)
        return solution

    solution = _chunked(lqg_config, solve, (model.dynamics, model.cost, reference, *model.initial,
                                        kl_bound, state.eta, jnp.arange(kl_bound.shape[0])))
    failed = ~finite.all_finite_per_row(solution.controller)

    def kept(fallback, new):  # fallback where the objective failed, else new
        return jnp.where(failed.reshape((-1,) + (1,) * (new.ndim - 1)), fallback, new)

    solution = solution._replace(
        controller=jax.tree.map(kept, reference, solution.controller),
        eta=kept(jnp.full_like(solution.eta, jnp.nan), solution.eta),
        kl=kept(jnp.zeros_like(solution.kl), solution.kl),
        expected_cost=kept(actual, solution.expected_cost))
    new_state = parallel.replicated(LoopState(solution.controller, step_mult, actual,
                                              solution.expected_cost, solution.eta))
    return new_state, solution._replace(controller=None), kl_bound, failed


def mean_cost(features: feats.FeatureConfig, family, problems, x0,
              controller: ctrl.Controller) -> jax.Array:
    """Mean f(x_t) over t = 1..T of the noiseless rollout of each controller: `[N]`."""
    def batched(*share):
        values = ctrl.mean_rollouts(family, features, *share).values
        return jnp.mean(values[:, 1:], axis=1)

    return parallel.over_devices(batched, problems, x0, controller)


def to_float64(leaf):
    """`leaf` as a JAX array, floating dtypes as float64 (call inside `jax.enable_x64()`)."""
    leaf = jnp.asarray(leaf)
    return leaf.astype(jnp.float64) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf
