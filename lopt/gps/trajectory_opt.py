"""The trajectory-only GPS loop: sample -> fit -> optimise, for every training objective.

No neural policy yet (that is part 2): each training objective has its own time-varying
linear-Gaussian controller, initialised to tuned momentum (`initialisation`) and improved by
the LQG under a KL trust region against its previous self (`lqg`). One GPS iteration is three
pure stages, each jittable on its own (the benchmark times them separately):

  sample_stage    rollouts of the current controllers           -> Samples `[N, S, ...]`
  fit_stage       cost expansion, dynamics (GMM prior), s_0     -> Model `[N, ...]`
  optimise_stage  step-size adaptation, eta search, new controllers

`iteration` chains them; `run` is the Python loop over iterations (float64 inside
`jax.enable_x64()`, never switched on globally), logging mean cost, KL, eta and step size.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
from absl import logging

from lopt import finite, parallel, progress
from lopt.gps import controllers as ctrl
from lopt.gps import cost as cost_lib
from lopt.gps import dynamics as dyn
from lopt.gps import gmm as gmm_lib
from lopt.gps import initialisation, lqg
from lopt.gps.config import Config


class Model(NamedTuple):
    """The local model of every objective: dynamics `[N, T, ...]`, cost `[N, T+1, ...]`,
    initial-state Gaussian `[N, ...]`, and the mixture fit (for diagnostics)."""

    dynamics: dyn.Dynamics
    cost: cost_lib.QuadraticCost
    initial: dyn.StateDistribution
    mixture: gmm_lib.GMMFit


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


class Metrics(NamedTuple):
    """Per-iteration diagnostics: sample_cost `[]` (mean f(x_t) over objectives, samples and
    t = 1..T), and per objective `[N]`: eta, kl, kl_bound, step_mult, expected_cost (new
    controller under the model), num_passes (LQG passes in the eta search)."""

    sample_cost: jax.Array
    eta: jax.Array
    kl: jax.Array
    kl_bound: jax.Array
    step_mult: jax.Array
    expected_cost: jax.Array
    num_passes: jax.Array


def initial_state(config: Config, family, problems, x0: jax.Array):
    """Tuned momentum controllers as a LoopState, and the momentum choices."""
    controller, choice = initialisation.initial_controllers(config, family, problems, x0)
    num = x0.shape[0]
    nan = jnp.full(num, jnp.nan, x0.dtype)
    return LoopState(controller, jnp.ones(num, x0.dtype), nan, nan, nan), choice


def sample_stage(config: Config, family, problems, x0, state: LoopState, key) -> ctrl.Samples:
    return ctrl.sample(family, config.features, problems, x0, state.controller, key,
                       config.num_samples)


def expand_cost(config: Config, family, layout, problems, samples: ctrl.Samples):
    """The cost expansion (`cost.expand`), early steps weighted by `Config.early_cost_weight`."""
    cost = cost_lib.expand(family, layout, problems, samples)
    if not config.early_cost_weight:
        return cost
    weights = cost_lib.time_weights(config.horizon, config.early_cost_weight,
                                    config.early_cost_steps, cost.constant.dtype)
    return cost_lib.weighted(cost, weights)


def fit_stage(config: Config, family, problems, samples: ctrl.Samples, key) -> Model:
    layout = config.features.layout(family.dim)
    cost = expand_cost(config, family, layout, problems, samples)
    dynamics, mixture = dyn.fit(config, layout, samples, key)
    initial = dyn.initial_distribution(samples, config.dynamics_regularization)
    return Model(dynamics, cost, initial, mixture)


def _chunked(config: Config, function, inputs):
    """`function` over the leading (objective) axis of `inputs`: vmapped within chunks of
    `lqg_batch_size` objectives and scanned over chunks, so each chunk's Riccati working set
    (a few `[n, n]` matrices per objective) stays in cache and a chunk's eta search stops
    when its own objectives have converged (one objective per chunk was fastest measured,
    docs/decisions.md). The objectives are split over all devices (`lopt.parallel`)."""
    return parallel.map_over_devices(function, inputs, batch_size=config.lqg_batch_size)


def optimise_stage(config: Config, family, model: Model, state: LoopState,
                   reference: ctrl.Controller | None = None):
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
    layout = config.features.layout(family.dim)

    def expected(inputs):
        return lqg.expected_cost(layout, *inputs)

    actual = _chunked(config, expected, (model.dynamics, model.cost, state.controller,
                                         *model.initial))
    adapted = lqg.adapt_step(config, state.step_mult, state.previous_expected,
                             state.predicted_expected, actual)
    step_mult = jnp.where(jnp.isnan(state.previous_expected), state.step_mult, adapted)
    kl_bound = config.kl_step * step_mult * config.horizon

    def solve(inputs):
        *inputs, number = inputs
        solution = lqg.optimise(config, layout, *inputs)
        progress.tick(number + 1)
        return solution

    solution = _chunked(config, solve, (model.dynamics, model.cost, reference, *model.initial,
                                        kl_bound, state.eta, jnp.arange(kl_bound.shape[0])))
    failed = ~finite.all_finite_per_row(solution.controller)

    def kept(fallback, new):  # fallback where the objective failed, else new
        return jnp.where(failed.reshape((-1,) + (1,) * (new.ndim - 1)), fallback, new)

    solution = solution._replace(
        controller=jax.tree.map(kept, reference, solution.controller),
        eta=kept(jnp.full_like(solution.eta, jnp.nan), solution.eta),
        kl=kept(jnp.zeros_like(solution.kl), solution.kl),
        expected_cost=kept(actual, solution.expected_cost))
    new_state = LoopState(solution.controller, step_mult, actual, solution.expected_cost,
                          solution.eta)
    return new_state, solution._replace(controller=None), kl_bound, failed


def iteration(config: Config, family, problems, x0, state: LoopState, key):
    """One GPS iteration: returns (new LoopState, Metrics)."""
    key_sample, key_fit = jax.random.split(key)
    samples = sample_stage(config, family, problems, x0, state, key_sample)
    model = fit_stage(config, family, problems, samples, key_fit)
    new_state, solution, kl_bound, _ = optimise_stage(config, family, model, state)
    metrics = Metrics(jnp.mean(samples.values[:, :, 1:]), solution.eta, solution.kl, kl_bound,
                      new_state.step_mult, solution.expected_cost, solution.num_passes)
    return new_state, metrics


def mean_cost(config: Config, family, problems, x0, controller: ctrl.Controller) -> jax.Array:
    """Mean f(x_t) over t = 1..T of the noiseless rollout of each controller: `[N]`."""
    def batched(*share):
        values = ctrl.mean_rollouts(family, config.features, *share).values
        return jnp.mean(values[:, 1:], axis=1)

    return parallel.over_devices(batched, problems, x0, controller)


class Result(NamedTuple):
    """What `run` returns: the final LoopState, the initial iterates `[N, dim]`, the momentum
    choices, and one dict of scalar diagnostics per iteration (`history`)."""

    state: LoopState
    x0: jax.Array
    momentum: initialisation.MomentumChoice
    history: list


_jit_iteration = jax.jit(iteration, static_argnums=(0, 1))
_jit_initial_state = jax.jit(initial_state, static_argnums=(0, 1))
_jit_mean_cost = jax.jit(mean_cost, static_argnums=(0, 1))


def to_float64(leaf):
    """`leaf` as a JAX array, floating dtypes as float64 (call inside `jax.enable_x64()`)."""
    leaf = jnp.asarray(leaf)
    return leaf.astype(jnp.float64) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf


def run(family, problems, config: Config, key: jax.Array, *, num_iterations: int | None = None,
        callback=None) -> Result:
    """Trajectory-only GPS on the training objectives `problems` (leaves `[N, ...]`).

    Runs in float64 (inside `jax.enable_x64()`; the global setting is left alone). Initial
    iterates come from `family.init`. `callback(iteration, record)` is called after each
    iteration with that iteration's diagnostics dict.
    """
    num_iterations = config.num_iterations if num_iterations is None else num_iterations
    if not isinstance(num_iterations, int) or num_iterations < 0:
        raise ValueError(f"num_iterations must be a non-negative integer, got {num_iterations!r}")
    with jax.enable_x64():
        problems = jax.tree.map(to_float64, problems)
        key_init, key = jax.random.split(key)
        num = jax.tree.leaves(problems)[0].shape[0]
        x0 = family.init(key_init, num).astype(jnp.float64)
        state, momentum = _jit_initial_state(config, family, problems, x0)
        initial_cost = float(jnp.mean(_jit_mean_cost(config, family, problems, x0,
                                                     state.controller)))
        logging.info("GPS trajectories: momentum initialisation, mean cost %.6f", initial_cost)
        history = []
        for index in range(num_iterations):
            started = time.perf_counter()
            state, metrics = _jit_iteration(config, family, problems, x0, state,
                                            jax.random.fold_in(key, index))
            controller_cost = _jit_mean_cost(config, family, problems, x0, state.controller)
            record = {
                "iteration": index,
                "sample_cost": float(metrics.sample_cost),
                "controller_cost": float(jnp.mean(controller_cost)),
                "kl": float(jnp.mean(metrics.kl)),
                "kl_bound": float(jnp.mean(metrics.kl_bound)),
                "eta": float(jnp.nanmedian(metrics.eta)),
                "step_mult": float(jnp.mean(metrics.step_mult)),
                "num_passes": int(jnp.max(metrics.num_passes)),
                "seconds": time.perf_counter() - started,
            }
            record["momentum_cost"] = initial_cost
            logging.info(
                "GPS trajectories: iteration %d, sample cost %.6f, controller cost %.6f "
                "(momentum %.6f), KL %.3f / %.3f, median eta %.3g, step mult %.3f, %.1fs",
                index, record["sample_cost"], record["controller_cost"], initial_cost,
                record["kl"], record["kl_bound"], record["eta"], record["step_mult"],
                record["seconds"])
            history.append(record)
            if callback is not None:
                callback(index, record)
        return Result(state, x0, momentum, history)
