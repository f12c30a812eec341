"""Coordinate-wise GPS, "convolutional GPS" (Li & Malik 2017b): a learned optimizer that acts
on each coordinate of a network alike, for networks of any size.

The policy mu(psi) maps each coordinate's observation features (`coordinate_features`, the
last few Psi vectors) to that coordinate's step; its parameters are shared by every
coordinate of every group, so it applies to any params pytree, any number of leaves and any
architecture (sharing within a group only would tie the optimizer to the architecture it was
trained on). The C-step works per coordinate group (`coordinate_groups`): the state of a
coordinate is s = [g, Phi] (`state_size`, 61 by default), and within a group the dynamics,
the cost expansion and the controller are tied (the same for every coordinate), so each
group's LQG has the state size of ONE coordinate whatever the network's size, with its own
KL weight eta. All of it reuses the GPS machinery: `dynamics.conditional_gaussian` fits the
tied models, `lqg.optimise` solves each group's LQG under its KL trust region, and
`policy.fit_network` is the S-step.

One iteration (mirror-descent GPS, on-policy):
1. sample: S rollouts of the policy's mean plus Gaussian noise (its variance) on each of the
   N training problems for T steps, on minibatch gradients; K coordinates per group are
   recorded (drawn with replacement), with their states, policy inputs, actions and the
   policy's mean actions, and per group a Hutchinson estimate of the mean Hessian diagonal.
2. fit: per group and time step, from the N S K recorded coordinates pooled: the dynamics
   s_{t+1} ~ N(F [s_t; u_t] + f, Sigma) (every row fitted: Phi's transitions are not linear),
   the policy's linearisation u ~ N(K s + k, sigma_pi^2 + residual) (the policy reads Psi,
   not s, so its linearisation is a regression, as in the paper), and the initial states.
3. C-step: per group, `lqg.optimise` from the linearised policy under a KL bound of
   `kl_step * T`. The cost of a step is the quadratic model of the objective's decrease,
   w_t (g u + h_t u^2 / 2), with g the coordinate's gradient (in the state), h_t the group's
   mean Hessian diagonal (clipped at 0) and w_t = (T - t) / T: the sum over steps is the area
   under the objective's curve up to constants, which is the meta-loss.
4. S-step: the policy is regressed on all recorded coordinates' (policy input, controller's
   mean action, controller's precision) triples (`policy.fit_network`), warm-started.
5. validation: the mean policy's area under the full-batch loss curve on the training
   problems; the best policy so far is kept, and a policy whose area is not finite is
   dropped (the next iteration starts from the best).
The first policy imitates `initial_optimizer` (SGD, or Adam where the policy reads the moment
inputs) with the rate (from `initial_rates`) of least area.
After the loop, `to_learned` makes the best policy the exported optimizer and chooses its
step-scale gain on the same problems (`lopt.gps.step_scale`): meta-training's second stage.

Shapes: N problems, S samples, T horizon, G groups, K recorded coordinates per group,
dX = state_size, dO = observation_size, dU = 1. Runs in float64 inside `jax.enable_x64()`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.flatten_util import ravel_pytree

from lopt import checkpoint, progress
from lopt.gps import coordinate_features as cf
from lopt.gps import coordinate_groups, coordinate_learned, lqg, step_scale, trajectory_opt
from lopt.gps import cost as cost_lib
from lopt.gps import dynamics as dyn
from lopt.gps import policy as policy_lib
from lopt.gps.config import LQGConfig
from lopt.gps.controllers import Controller, make_controller


@dataclasses.dataclass(frozen=True)
class CoordinateConfig:
    """Settings of coordinate-wise GPS (module docstring). Paper: horizon 400; the rest are
    our choices for a CPU (the paper's policy is an LSTM of 128 cells)."""

    features: cf.CoordinateFeatureConfig = cf.CoordinateFeatureConfig()
    horizon: int = 400
    num_samples: int = 4
    recorded: int = 64
    hidden: int = 16
    activation: str = "relu"  # cheap per coordinate (benchmarks/coordinate_optimizer.py)
    policy_steps: int = 2000
    imitation_steps: int = 2000
    batch_size: int = 256
    learning_rate: float = 3e-3
    initial_optimizer: str = "adam"  # imitated by the first policy: one of INITIAL_OPTIMIZERS
    initial_rates: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1)
    initial_std: float = 0.3  # exploration noise of the first policy, in units of its steps
    lqg: LQGConfig = LQGConfig()
    regularization: float = 1e-6  # ridge on the state-action covariance of every fit
    num_iterations: int = 5
    # meta-training's second stage (lopt.gps.step_scale.choose_gain): the grids it chooses the
    # step-scale gain from, and the scale's bound (within [1/bound, bound])
    scale_gains: tuple[float, ...] = (0.0, 0.01, 0.03, 0.1, 0.2, 0.5, 1.0, 2.0)
    scale_perturbations: tuple[float, ...] = (1 / 3, 1.0, 3.0)
    scale_bound: float = 3.0
    scale_decay: float = 0.9  # of the displacement the scale's cosine is taken with

    def __post_init__(self):
        if self.initial_optimizer not in INITIAL_OPTIMIZERS:
            raise ValueError(f"initial_optimizer must be one of {INITIAL_OPTIMIZERS}, got "
                             f"{self.initial_optimizer!r}")
        if (0.0 not in self.scale_gains or min(self.scale_gains) < 0
                or 1.0 not in self.scale_perturbations or min(self.scale_perturbations) <= 0
                or self.scale_bound < 1 or not 0 <= self.scale_decay < 1):
            raise ValueError("scale_gains must be non-negative and hold 0, scale_perturbations "
                             "positive and hold 1, scale_bound at least 1, scale_decay in "
                             f"[0, 1); got {self.scale_gains}, {self.scale_perturbations}, "
                             f"{self.scale_bound}, {self.scale_decay}")
        if self.initial_optimizer == "adam" and not self.features.moments:
            raise ValueError("initial_optimizer='adam' needs features with moments=True (the "
                             "policy must read Adam's moment inputs to imitate it)")


INITIAL_OPTIMIZERS = ("sgd", "adam")


class CoordinateLayout(NamedTuple):
    """The LQG's view of one coordinate's state: `size` entries, one action, and no known part
    of the transitions (observation_size 0: every row of the next state is fitted)."""

    size: int
    dim: int = 1
    observation_size: int = 0


class Record(NamedTuple):
    """One rollout's record, over steps t = 0..T (the action at T is never taken):
    states `[T+1, G, K, dX]`, inputs `[T+1, G, K, dO]`, actions and means `[T+1, G, K]`,
    curvature `[T+1, G]`, values (minibatch objective) and losses (full batch) `[T+1]`."""

    states: jax.Array
    inputs: jax.Array
    actions: jax.Array
    means: jax.Array
    curvature: jax.Array
    values: jax.Array
    losses: jax.Array


def policy_step(policy: policy_lib.Policy, activation: str):
    """The policy's mean step for policy inputs `[..., dO]` (any leading axes): `[...]`."""
    def act(inputs, gradient):
        del gradient
        return policy_lib.mean(policy, inputs, activation)[..., 0]
    return act


def initial_step(config: CoordinateConfig, rate):
    """`config.initial_optimizer` at `rate` as an `act` of `rollout`: SGD's step, or Adam's
    (rate times the first moment input)."""
    if config.initial_optimizer == "sgd":
        return lambda inputs, gradient: -rate * gradient
    adam_input = 3 * config.features.observation_history  # m̂ / s, after the Psi vectors
    return lambda inputs, gradient: -rate * inputs[..., adam_input]


def rollout(config: CoordinateConfig, family, problem, act, std, key: jax.Array,
            grouping=None) -> Record:
    """One trajectory on `problem` = (data, params) of `act(inputs [P, dO], gradient [P]) ->
    mean step [P]` plus N(0, std^2) noise, for T = config.horizon steps."""
    data, params = problem
    flat, unravel = ravel_pytree(params)
    groups = coordinate_groups.groups(params, grouping)
    key_pick, key_steps = jax.random.split(key)
    positions = coordinate_groups.pick(groups, key_pick, config.recorded)  # [G, K]
    features = config.features
    dtype = flat.dtype

    def value_and_grad(x, batch_key):
        return jax.value_and_grad(lambda y: family.minibatch_loss(unravel(y), data, batch_key))(x)

    def body(carry, inputs):
        x, previous_value, previous_gradient, steps, history, moments, phi_history = carry
        t, step_key = inputs
        key_batch, key_probe, key_noise = jax.random.split(step_key, 3)
        probe = jax.random.rademacher(key_probe, flat.shape, dtype)
        (value, gradient), (_, hessian_probe) = jax.jvp(
            lambda y: value_and_grad(y, key_batch), (x,), (probe,))
        previous_gradient = jnp.where(t == 0, gradient, previous_gradient)
        psi = cf.observation(value, previous_value, gradient, previous_gradient, steps[0],
                             steps[1], t)
        history = cf.push_observation(history, psi)
        observed = history
        if features.moments:
            *moments, moment_inputs = cf.moment_inputs(*moments, gradient, t)
            observed = jnp.concatenate([history, jnp.stack(moment_inputs, axis=-1)], axis=-1)
        recorded = positions.reshape(-1)
        phi_history = cf.push(phi_history, value, gradient[recorded], x[recorded])
        state = cf.state(features, phi_history).reshape(*positions.shape, -1)
        mean = act(observed, gradient)
        action = mean + std * jax.random.normal(key_noise, flat.shape, dtype)
        curvature = jnp.mean((probe * hessian_probe)[positions], axis=-1)
        loss = family.full_loss(unravel(x), data)
        record = Record(state, observed[positions], action[positions], mean[positions],
                        curvature, value, loss)
        return (x + action, value, gradient, jnp.stack([action, steps[0]]), history,
                tuple(moments), phi_history), record

    moments = (jnp.zeros_like(flat), jnp.zeros_like(flat)) if features.moments else ()
    start = (flat, jnp.zeros([], dtype), jnp.zeros_like(flat), jnp.zeros((2, *flat.shape), dtype),
             jnp.zeros((*flat.shape, 3 * features.observation_history), dtype), moments,
             cf.empty_history(features, positions.size, dtype))
    steps = config.horizon + 1
    _, record = jax.lax.scan(body, start, (jnp.arange(steps),
                                           jax.random.split(key_steps, steps)))
    return record


def sample(config: CoordinateConfig, family, problems, act, std, key: jax.Array,
           grouping=None) -> Record:
    """`num_samples` rollouts on each problem (leaves `[N, ...]`): Record `[N, S, ...]`."""
    num = jax.tree.leaves(problems)[0].shape[0]
    keys = jax.random.split(key, (num, config.num_samples))
    one = lambda problem, k: rollout(config, family, problem, act, std, k, grouping)  # noqa: E731
    return jax.vmap(lambda problem, ks: jax.vmap(lambda k: one(problem, k))(ks))(problems, keys)


def _pooled(array: jax.Array) -> jax.Array:
    """`[N, S, T', G, K, ...]` -> `[G, T', N S K, ...]`."""
    num, samples, steps, num_groups, recorded = array.shape[:5]
    moved = jnp.moveaxis(array, (3, 2), (0, 1))  # [G, T', N, S, K, ...]
    return moved.reshape(num_groups, steps, num * samples * recorded, *array.shape[5:])


class Models(NamedTuple):
    """What the C-step needs per group: dynamics (leaves `[G, T, ...]`), the policy's
    linearisation (Controller `[G, T, ...]`), the initial states' mean `[G, dX]` and
    covariance `[G, dX, dX]`, the cost (QuadraticCost `[G, T+1, ...]`)."""

    dynamics: dyn.Dynamics
    reference: Controller
    initial_mean: jax.Array
    initial_covariance: jax.Array
    cost: cost_lib.QuadraticCost


def _conditionals(points: jax.Array, policy_points: jax.Array, num_inputs: int, ridge: float):
    """`dynamics.conditional_gaussian` without a prior for every group and time step (leading
    axes `[G, T]`): of the dynamics' points (the last axis [s; u; s']) and of the policy's
    ([s; mu]). One (G, t) at a time (`lax.map`)."""
    def fit(pair):
        dynamics_points, action_points = pair
        zeros = lambda size: (jnp.zeros(size, points.dtype),  # noqa: E731
                              jnp.zeros((size, size), points.dtype))
        model = dyn.conditional_gaussian(dynamics_points, num_inputs + 1,
                                         *zeros(dynamics_points.shape[-1]), 0.0, ridge)
        linearised = dyn.conditional_gaussian(action_points, num_inputs,
                                              *zeros(action_points.shape[-1]), 0.0, ridge)
        return model, linearised

    leading = points.shape[:2]
    flat = lambda a: a.reshape(-1, *a.shape[2:])  # noqa: E731
    results = jax.lax.map(fit, (flat(points), flat(policy_points)))
    return jax.tree.map(lambda a: a.reshape(*leading, *a.shape[1:]), results)


def step_cost(curvature: jax.Array, state_size: int) -> cost_lib.QuadraticCost:
    """w_t (g u + h_t u^2 / 2) over z = [s; u] for curvature h `[G, T+1]` (module docstring);
    g is entry 0 of s. Leaves `[G, T+1, dX+1, dX+1]`, `[G, T+1, dX+1]`, `[G, T+1]`."""
    num_groups, steps = curvature.shape
    horizon = steps - 1
    weights = jnp.maximum(horizon - jnp.arange(steps), 0).astype(curvature.dtype) / horizon
    size = state_size + 1
    hessian = jnp.zeros((num_groups, steps, size, size), curvature.dtype)
    hessian = hessian.at[..., 0, state_size].set(weights).at[..., state_size, 0].set(weights)
    hessian = hessian.at[..., state_size, state_size].set(weights * jnp.maximum(curvature, 0.0))
    return cost_lib.QuadraticCost(hessian, jnp.zeros((num_groups, steps, size), curvature.dtype),
                                  jnp.zeros((num_groups, steps), curvature.dtype))


def fit_models(config: CoordinateConfig, record: Record, variance: jax.Array) -> Models:
    """The tied per-group models from a Record `[N, S, ...]` (module docstring, step 2)."""
    horizon = config.horizon
    states = _pooled(record.states)  # [G, T+1, M, dX]
    actions = _pooled(record.actions[..., None])[:, :horizon]
    means = _pooled(record.means[..., None])[:, :horizon]
    size = states.shape[-1]
    transitions = jnp.concatenate([states[:, :horizon], actions, states[:, 1:]], axis=-1)
    model, (gain, offset, residual) = _conditionals(
        transitions, jnp.concatenate([states[:, :horizon], means], axis=-1), size,
        config.regularization)
    dynamics = dyn.Dynamics(*model)
    reference = make_controller(gain, offset, residual + variance)
    initial = states[:, 0]
    mean = jnp.mean(initial, axis=1)
    centred = initial - mean[:, None]
    covariance = (jnp.einsum("gmi,gmj->gij", centred, centred) / initial.shape[1]
                  + config.regularization * jnp.eye(size, dtype=states.dtype))
    curvature = jnp.mean(record.curvature, axis=(0, 1)).T  # [G, T+1]
    return Models(dynamics, reference, mean, covariance, step_cost(curvature, size))


def c_step(config: CoordinateConfig, models: Models, eta_guess: jax.Array) -> lqg.Solution:
    """One LQG per group under a KL bound of kl_step * T (vmapped over groups)."""
    layout = CoordinateLayout(config.features.state_size)
    bound = jnp.asarray(config.lqg.kl_step * config.horizon, models.initial_mean.dtype)

    def one_group(dynamics, reference, mean, covariance, cost, eta):
        return lqg.optimise(config.lqg, layout, dynamics, cost, reference, mean, covariance,
                            bound, eta)

    return jax.vmap(one_group)(models.dynamics, models.reference, models.initial_mean,
                               models.initial_covariance, models.cost, eta_guess)


def _rows(record: Record, controller: Controller, horizon: int):
    """All recorded (policy input `[M, dO]`, target action `[M, 1]`, precision `[M, 1, 1]`)."""
    inputs = _pooled(record.inputs)[:, :horizon]  # [G, T, M', dO]
    states = _pooled(record.states)[:, :horizon]
    actions = jnp.einsum("gtux,gtmx->gtmu", controller.gain, states) + controller.offset[:, :, None]
    precisions = jnp.broadcast_to(controller.precision[:, :, None], (*actions.shape, 1))
    return (inputs.reshape(-1, inputs.shape[-1]), actions.reshape(-1, 1),
            precisions.reshape(-1, 1, 1))


def _with_statistics(policy: policy_lib.Policy, inputs, actions) -> policy_lib.Policy:
    """`policy` whitened for `inputs` `[M, dO]`, its action scale the std of `actions`."""
    scale = jnp.std(inputs, axis=0)
    action_scale = jnp.std(actions, axis=0)
    return policy._replace(input_mean=jnp.mean(inputs, axis=0),
                           input_scale=jnp.where(scale > 0, scale, 1.0),
                           action_scale=jnp.where(action_scale > 0, action_scale, 1.0))


def s_step(config: CoordinateConfig, policy: policy_lib.Policy, rows, key: jax.Array,
           steps: int) -> policy_lib.Policy:
    """The policy regressed on `rows` (see `_rows`), warm-started; its variance from the
    precisions."""
    inputs, actions, precisions = rows
    scale = jnp.mean(precisions)
    network = policy_lib.fit_network(
        policy, lambda index: (inputs[index], actions[index], precisions[index]),
        inputs.shape[0], scale, key, steps=steps, batch_size=config.batch_size,
        learning_rate=config.learning_rate, activation=config.activation)
    return policy._replace(network=network, variance=1.0 / jnp.mean(precisions, axis=0)[0])


def area(config: CoordinateConfig, family, problems, policy: policy_lib.Policy,
         key: jax.Array, grouping=None) -> jax.Array:
    """The mean policy's mean full-batch loss over steps 0..T, averaged over problems `[]`."""
    record = sample(dataclasses.replace(config, num_samples=1), family, problems,
                    policy_step(policy, config.activation), 0.0, key, grouping)
    return jnp.mean(record.losses)


def initial_areas(config: CoordinateConfig, family, problems, key: jax.Array, grouping=None):
    """Mean full-batch loss over steps 0..T of `initial_optimizer` at each of `initial_rates`
    `[R]`; inf where it diverges (a NaN would win `argmin`)."""
    one = dataclasses.replace(config, num_samples=1)
    rates = jnp.asarray(config.initial_rates, jax.tree.leaves(problems)[0].dtype)
    areas = jax.lax.map(lambda rate: jnp.mean(sample(
        one, family, problems, initial_step(config, rate), 0.0, key, grouping).losses), rates)
    return jnp.where(jnp.isfinite(areas), areas, jnp.inf)


def initial_policy(config: CoordinateConfig, family, problems, rate, key: jax.Array,
                   grouping=None) -> policy_lib.Policy:
    """A policy imitating `initial_optimizer` at `rate`, with exploration noise `initial_std`
    times the std of its steps."""
    key_sample, key_init, key_fit = jax.random.split(key, 3)
    dtype = jax.tree.leaves(problems)[0].dtype
    record = sample(config, family, problems, initial_step(config, rate), 0.0, key_sample,
                    grouping)
    inputs = record.inputs[:, :, :config.horizon].reshape(-1, config.features.observation_size)
    actions = record.means[:, :, :config.horizon].reshape(-1, 1)
    policy = policy_lib.init(key_init, config.features.observation_size, 1, config.hidden,
                             dtype)
    policy = _with_statistics(policy, inputs, actions)
    precisions = jnp.ones((inputs.shape[0], 1, 1), dtype)
    policy = s_step(config, policy, (inputs, actions, precisions), key_fit,
                    config.imitation_steps)
    return policy._replace(variance=(config.initial_std * policy.action_scale) ** 2)


class CoordinateState(NamedTuple):
    """The loop state: the current policy, the per-group etas `[G]` (NaN: no guess yet), the
    best policy so far and its area `[]`, and the number of finished iterations `[]`."""

    policy: policy_lib.Policy
    eta: jax.Array
    best: policy_lib.Policy
    best_area: jax.Array
    iteration: jax.Array


def iteration(config: CoordinateConfig, family, problems, state: CoordinateState,
              key: jax.Array, grouping=None):
    """One GPS iteration (module docstring): (new state, scalars for the log)."""
    key_sample, key_fit, key_area = jax.random.split(key, 3)
    record = sample(config, family, problems, policy_step(state.policy, config.activation),
                    jnp.sqrt(state.policy.variance[0]), key_sample, grouping)
    models = fit_models(config, record, state.policy.variance)
    solution = c_step(config, models, state.eta)
    rows = _rows(record, solution.controller, config.horizon)
    policy = s_step(config, state.policy, rows, key_fit, config.policy_steps)
    new_area = area(config, family, problems, policy, key_area, grouping)
    better = new_area < state.best_area
    best = lqg.select(better, policy, state.best)
    # A policy that diverges on the training problems (non-finite area) is discarded: the next
    # iteration starts again from the best one, with no eta guess.
    finite = jnp.isfinite(new_area)
    current = lqg.select(finite, policy, best)
    eta = jnp.where(finite, solution.eta, jnp.nan)
    new_state = CoordinateState(current, eta, best, jnp.where(better, new_area, state.best_area),
                                state.iteration + 1)
    return new_state, {"area": new_area, "sample_area": jnp.mean(record.losses),
                       "kl": jnp.mean(solution.kl), "eta": jnp.mean(jnp.log10(solution.eta))}


_iteration = jax.jit(iteration, static_argnums=(0, 1, 5))
_area = jax.jit(area, static_argnums=(0, 1, 5))
_initial_areas = jax.jit(initial_areas, static_argnums=(0, 1, 4))
_initial_policy = jax.jit(initial_policy, static_argnums=(0, 1, 5))


def run_identity(config: CoordinateConfig, family, problems, key: jax.Array) -> dict:
    """The identity of a `train` run: config (but `num_iterations`, so a longer run continues
    a finished one), family, key and problems (as float64, which `train` runs in)."""
    with jax.enable_x64():
        return checkpoint.identity(
            {"coordinate_gps": dataclasses.asdict(dataclasses.replace(config, num_iterations=0)),
             "family": repr(family)}, key, jax.tree.map(trajectory_opt.to_float64, problems))


def _initial_state(config, family, problems, key_rates, key_init, grouping):
    """(the loop state before the first iteration, the initial optimizer's areas at
    `initial_rates`)."""
    areas = _initial_areas(config, family, problems, key_rates, grouping)
    rate = jnp.asarray(config.initial_rates)[jnp.argmin(areas)]
    policy = _initial_policy(config, family, problems, rate, key_init, grouping)
    initial_area = _area(config, family, problems, policy, key_rates, grouping)
    num_groups = coordinate_groups.groups(jax.tree.map(lambda a: a[0], problems[1]),
                                          grouping).count
    state = CoordinateState(policy, jnp.full(num_groups, jnp.nan, jnp.float64), policy,
                            initial_area, jnp.zeros([], jnp.int32))
    return state, areas


def _logged_iteration(config, family, problems, state, key_loop, grouping, num_iterations):
    """Runs iteration number `state.iteration` and logs it: (new state, its record)."""
    index = int(state.iteration)
    began = time.time()
    state, scalars = _iteration(config, family, problems, state,
                                jax.random.fold_in(key_loop, index), grouping)
    record = {name: float(value) for name, value in scalars.items()}
    record["seconds"] = time.time() - began
    logging.info("coordinate GPS iteration %d/%d: area %.4f (sampled %.4f), KL %.3g, "
                 "log10 eta %.2f, %.0f s, ETA %.0f s", index + 1, num_iterations,
                 record["area"], record["sample_area"], record["kl"], record["eta"],
                 record["seconds"], (num_iterations - index - 1) * record["seconds"])
    return state, record


def train(family, problems, config: CoordinateConfig, key: jax.Array, *, grouping=None,
          checkpoint_path: str | None = None):
    """Coordinate-wise GPS on `problems` (leaves `[N, ...]`, e.g. `NetworkFamily.sample`).

    Returns (the best policy, a tuple of per-iteration dicts). With `checkpoint_path` the loop
    state is written after every iteration and a run with the same identity (config, key,
    problems) resumes from it; any other run is refused.
    """
    num_iterations = config.num_iterations
    config = dataclasses.replace(config, num_iterations=0)  # the stages never read it
    with jax.enable_x64():
        problems = jax.tree.map(trajectory_opt.to_float64, problems)
        key_rates, key_init, key_loop = jax.random.split(key, 3)
        identity = run_identity(config, family, problems, key) if checkpoint_path else None
        resuming = bool(checkpoint_path) and os.path.isfile(checkpoint_path)
        initial = functools.partial(_initial_state, config, family, problems, key_rates,
                                    key_init, grouping)
        if resuming:  # identity checked, from the template only (nothing computed first)
            state, metadata = checkpoint.load(checkpoint_path, jax.eval_shape(initial)[0],
                                              identity=identity)
            state = jax.tree.map(jnp.asarray, state)
            history = list(metadata["history"])
        else:
            started = time.time()
            imitated = config.initial_optimizer
            with progress.stage(f"initial policy (tuned {imitated}, imitated)"):
                state, areas = initial()
            if not np.isfinite(np.asarray(areas)).any():
                raise ValueError(f"coordinate GPS: {imitated} diverges on these problems at "
                                 f"every initial rate {list(config.initial_rates)}; pass "
                                 "smaller CoordinateConfig.initial_rates")
            logging.info("coordinate GPS: %s area %s at rates %s, imitation area %.4f (%.0f s)",
                         imitated, [round(float(a), 4) for a in areas],
                         list(config.initial_rates), state.best_area, time.time() - started)
            history = []
        with progress.stage("GPS iterations", num_iterations, "iterations") as stage:
            stage.update(int(state.iteration))
            while int(state.iteration) < num_iterations:
                # only the S-step's fit ticks (its steps, policy.fit_network)
                with progress.stage(f"iteration {int(state.iteration) + 1}/{num_iterations}",
                                    config.policy_steps, "S-step steps"):
                    state, record = _logged_iteration(config, family, problems, state,
                                                      key_loop, grouping, num_iterations)
                history.append(record)
                stage.update(int(state.iteration))
                if checkpoint_path:
                    checkpoint.save(checkpoint_path, state, identity=identity,
                                    metadata={"history": history})
        return state.best, tuple(history)


def to_learned(policy: policy_lib.Policy, history: tuple, family, problems,
               config: CoordinateConfig, key: jax.Array) -> coordinate_learned.CoordinateLearned:
    """Meta-training's second stage: the trained `policy` (and `history`, from `train`) as a
    float32 `CoordinateLearned` whose step-scale gain `step_scale.choose_gain` picked on the
    same `problems` from `config.scale_gains` (one compilation, seconds on the default
    nets)."""
    learned = coordinate_learned.CoordinateLearned(
        jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), policy), config.features,
        family.name, tuple(history), config.activation, scale_bound=config.scale_bound,
        scale_decay=config.scale_decay)

    def optimizer(gain):
        return coordinate_learned.coordinatewise_step_descent(
            learned.policy, learned.features, learned.activation, gain, learned.scale_bound,
            learned.scale_decay)

    with progress.stage("step-scale gain"):
        choice = step_scale.choose_gain(optimizer, family, problems, config.scale_gains,
                                        config.scale_perturbations, config.horizon, key)
    logging.info("step-scale gain %s chosen; criterion per gain %s", choice.gain,
                 dict(zip(config.scale_gains, np.round(choice.criteria, 4).tolist(),
                          strict=True)))
    return dataclasses.replace(learned, scale_gain=choice.gain)
