"""The GPS outer loop: linear-Gaussian controllers and the neural policy, trained together.

Coupling: mirror-descent GPS (MD, Montgomery & Levine 2016), on-policy by default
(`Config.sampling="policy"`, MD section 4). Before the first iteration the policy imitates the
initial (tuned momentum) controllers for `imitation_steps`. One iteration is then

  sample    rollouts of the policy's mean plus Gaussian noise of its variance
  fit       the local model around those samples: cost expansion and dynamics, exact
            derivatives of f (`exact_dynamics`, default) or fitted with the GMM prior
  optimise  C-step: the LQG minimises the expected cost with a KL trust region around the
            policy linearised at its own samples (`policy.linearise`), giving p_i
  policy    S-step: the policy is trained to match p_i's mean actions at the sampled states
            under p_i's precisions (`lopt.gps.policy.fit`)

With `sampling="controllers"` (LA's and part 2's first loop) the samples come from the
controllers, the S-step runs first and the C-step's trust region is around the policy
linearised at the controllers' samples (`coupling="trajectory"`: around the previous
controllers).

Why mirror descent rather than BADMM: the KL trust region around the linearised policy is
exactly the constraint the LQG already solves (`lqg.optimise` takes any reference controller),
so the coupling needs no dual variables or extra cost terms. Why on-policy sampling, exact
dynamics, and returning the best policy by a validation cost from fresh starts rather than
the last one: each was measured better on logistic regression (docs/decisions.md, "GPS
coupling and sampling").

The policy's whitening and action scale are fitted once, on samples of the initial (tuned
momentum) controllers, and kept fixed. Everything runs in float64 inside
`jax.enable_x64()`. After every iteration the loop state is written to `checkpoint_dir`
(when given); `train` resumes from it, and the randomness of iteration i is
`fold_in(key, i)`, so a killed and resumed run gives the same result as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from lopt import checkpoint, evaluation, parallel, progress
from lopt.gps import controllers as ctrl
from lopt.gps import dynamics as dynamics_lib
from lopt.gps import exact_dynamics, trajectory_opt
from lopt.gps import features as features_lib
from lopt.gps import learned as learned_lib
from lopt.gps import policy as policy_lib
from lopt.gps.config import Config

CHECKPOINT = "checkpoint.npz"


class TrainState(NamedTuple):
    """The loop state between iterations: controllers and step sizes (`LoopState`, leaves
    `[N, ...]`), the policy, and the best policy so far (`train`) and its cost `[]` (what
    `train` returns)."""

    loop: trajectory_opt.LoopState
    policy: policy_lib.Policy
    best_policy: policy_lib.Policy
    best_cost: jax.Array


def initial_policy(config: Config, family, controller: ctrl.Controller, samples: ctrl.Samples,
                   key: jax.Array) -> policy_lib.Policy:
    """A policy whitened on `samples` of the initial controllers `controller` (and, with
    on-policy sampling, fitted to them for `imitation_steps`)."""
    key_policy, key_fit = jax.random.split(key)
    layout = config.features.layout(family.dim)
    policy = policy_lib.init(key_policy, layout.size - layout.dim, family.dim,
                             config.policy_hidden, samples.states.dtype)
    data = policy_lib.targets(controller, samples)
    policy = policy_lib.normalise(layout, policy, data)
    if config.sampling == "policy":
        policy, _ = _fit_policy(config, layout, policy, data, key_fit, config.imitation_steps)
    return policy


def initial_state(config: Config, family, problems, x0: jax.Array, key: jax.Array):
    """Tuned momentum controllers and the initial policy (`initial_policy`) with its cost,
    as two progress stages (`lopt.progress`)."""
    key_sample, key_policy = jax.random.split(key)
    (loop, _), _ = _timed(INITIAL_CONTROLLERS, len(config.momentum_step_sizes)
                          * len(config.momentum_decays), "grid points",
                          _jit_initial_controllers, config, family, problems, x0)
    with progress.stage(INITIAL_POLICY, config.imitation_steps, "steps"):
        samples = _sample_controllers(config, family, problems, x0, loop, key_sample)
        policy = jax.device_get(_jit_initial_policy(  # lopt.parallel.on_one_device
            config, family, *parallel.on_one_device((loop.controller, samples)), key_policy))
        cost = jnp.mean(_jit_policy_cost(config, family, problems, x0, policy))
    return TrainState(loop, policy, policy, cost)


def _state_shapes(config: Config, family, problems, x0: jax.Array, key: jax.Array):
    """The shapes and dtypes of `initial_state`'s TrainState (`jax.ShapeDtypeStruct`s)."""

    def build(problems, x0, key):
        loop, _ = trajectory_opt.initial_state(config, family, problems, x0)
        samples = trajectory_opt.sample_stage(config, family, problems, x0, loop, key)
        policy = initial_policy(config, family, loop.controller, samples, key)
        return TrainState(loop, policy, policy, jnp.zeros((), x0.dtype))

    return jax.eval_shape(build, problems, x0, key)


def _fit_policy(config: Config, layout, policy: policy_lib.Policy, data: policy_lib.Targets,
                key, steps: int):
    return policy_lib.fit(layout, policy, data, key, steps=steps,
                          batch_size=config.policy_batch_size,
                          learning_rate=config.policy_learning_rate)


def policy_stage(config: Config, family, policy: policy_lib.Policy,
                 controller: ctrl.Controller, samples: ctrl.Samples, key):
    """S-step: `policy` fitted to `controller` `[N, T, ...]` at the samples; returns (policy,
    loss on all sampled states after fitting `[]`)."""
    layout = config.features.layout(family.dim)
    data = policy_lib.targets(controller, samples)
    return _fit_policy(config, layout, policy, data, key, config.policy_steps)


def sample_policy(config: Config, family, problems, x0: jax.Array, policy: policy_lib.Policy,
                  key: jax.Array) -> ctrl.Samples:
    """`num_samples` rollouts per objective of the policy's mean plus Gaussian noise of its
    variance (on-policy sampling, MD section 4): Samples `[N, S, ...]`."""
    layout = config.features.layout(family.dim)
    std = jnp.sqrt(policy.variance)

    def one_rollout(loss_fn, start, noise):  # noise [T, dU]
        state0, tracker0 = features_lib.start(config.features, loss_fn, start)

        def body(carry, noise_t):
            state, tracker = carry
            action = policy_lib.state_mean(layout, policy, state) + std * noise_t
            state, tracker, observation = features_lib.step(config.features, loss_fn, state,
                                                            tracker, action)
            return (state, tracker), (state, action, observation, tracker.value)

        _, (states, actions, observations, values) = jax.lax.scan(body, (state0, tracker0),
                                                                  noise)
        return ctrl.Samples(jnp.concatenate([state0[None], states]), actions, observations,
                            jnp.concatenate([tracker0.value[None], values]))

    num = x0.shape[0]
    noise = jax.random.normal(key, (num, config.num_samples, config.horizon, family.dim),
                              x0.dtype)

    def one_objective(problem, start, noises):
        loss_fn = family.objective(problem)
        return jax.vmap(lambda n: one_rollout(loss_fn, start, n))(noises)

    return ctrl.in_chunks(one_objective, problems, x0, noise)


def fit_stage(config: Config, family, problems, samples: ctrl.Samples, key):
    """The local model (cost, dynamics, initial states) around the samples; the dynamics are
    exact derivatives of f or fitted with the GMM prior (`Config.dynamics_model`)."""
    if config.dynamics_model == "fitted":
        return trajectory_opt.fit_stage(config, family, problems, samples, key)
    layout = config.features.layout(family.dim)
    return trajectory_opt.Model(
        exact_dynamics.linearise(family, config.features, problems, samples,
                                 config.dynamics_regularization),
        trajectory_opt.expand_cost(config, family, layout, problems, samples),
        dynamics_lib.initial_distribution(samples, config.dynamics_regularization),
        None)


def optimise_stage(config: Config, family, model: trajectory_opt.Model, loop, reference,
                   samples: ctrl.Samples):
    """C-step: new controllers in the trust region of `reference` (None: the current
    controllers); the step size adapts to how the cost of `loop.controller` changed."""
    del samples
    return trajectory_opt.optimise_stage(config, family, model, loop, reference)


def linearise_stage(config: Config, family, policy: policy_lib.Policy, samples: ctrl.Samples):
    return policy_lib.linearise(config.features.layout(family.dim), policy, samples,
                                config.horizon)


def policy_cost(config: Config, family, problems, x0: jax.Array, policy: policy_lib.Policy,
                num_steps: int | None = None):
    """Mean f(x_t) over t = 1..num_steps (default: the horizon T) of the policy's own
    (noiseless) runs: `[N]`."""
    opt = learned_lib.predicted_step_descent(policy, config.features, family.dim)

    def batched(*share):
        curves = evaluation.batch_curves(opt, family, *share, num_steps or config.horizon)
        return jnp.mean(curves[:, 1:], axis=1)

    return parallel.over_devices(batched, problems, x0)


def _jit(function):
    return jax.jit(function, static_argnums=(0, 1))


# The stages, each compiled once per (config, family).
_sample_controllers = _jit(trajectory_opt.sample_stage)
_sample_policy = _jit(sample_policy)
_fit = _jit(fit_stage)
_fit_policy_to = _jit(policy_stage)
_linearise = _jit(linearise_stage)
_optimise = _jit(optimise_stage)
_jit_initial_controllers = _jit(trajectory_opt.initial_state)
_jit_initial_policy = _jit(initial_policy)
_jit_controller_cost = _jit(trajectory_opt.mean_cost)
_jit_policy_cost = jax.jit(policy_cost, static_argnums=(0, 1, 5))


INITIAL_CONTROLLERS = "GPS initialisation: tuned momentum"
INITIAL_POLICY = "GPS initialisation: policy"


def iteration_prefix(index: int, num_iterations: int) -> str:
    return f"GPS iteration {index + 1}/{num_iterations}"


def plan(config: Config) -> dict[str, float]:
    """{progress-stage label: expected seconds} for `train` (`lopt.progress`): the stages'
    times on 1800 logistic-regression objectives on 2 cores (the job's ETA rescales them by
    the times measured as it runs, so only their ratios matter)."""
    shares = {INITIAL_CONTROLLERS: 19.0, INITIAL_POLICY: 20.0}
    for index in range(config.num_iterations):
        prefix = iteration_prefix(index, config.num_iterations)
        labels = stage_names(prefix)
        shares.update({labels["sample"]: 5.0, labels["fit"]: 8.0, labels["optimise"]: 30.0,
                       labels["policy"]: 5.0, f"{prefix}: evaluate": 1.0})
    return shares


def _timed(label: str, total: int | None, unit: str, function, *args):
    """`function(*args)` as the progress stage `label` (`lopt.progress`): (result, seconds)."""
    started = time.perf_counter()
    with progress.stage(label, total, unit):
        result = jax.block_until_ready(function(*args))
    return result, time.perf_counter() - started


def _s_step(config: Config, family, policy, controller, samples, key):
    """The jitted `policy_stage` on one device (`lopt.parallel.on_one_device`); the fitted
    policy comes back through the host, so split stages can take it."""
    return jax.device_get(_fit_policy_to(
        config, family, policy, *parallel.on_one_device((controller, samples)), key))


def stage_names(prefix: str) -> dict[str, str]:
    """Progress-stage labels of one iteration, by stage: sample, fit, optimise, policy."""
    return {name: f"{prefix}: {name}" for name in ("sample", "fit", "optimise", "policy")}


def make_iteration(config: Config, family, problems, x0: jax.Array):
    """One GPS iteration (module docstring) for these settings and training objectives:
    `iteration(state, key, prefix)` returns (new TrainState, diagnostics dict). Each stage
    runs as a progress stage labelled by `stage_names(prefix)`; the stage order follows
    `config.sampling` (on-policy: sample, fit, optimise, policy; controllers: sample, fit,
    policy, optimise)."""
    num = x0.shape[0]

    def sample(labels, state, key):
        if config.sampling == "policy":
            return _timed(labels["sample"], None, "", _sample_policy, config, family, problems,
                          x0, state.policy, key)
        return _timed(labels["sample"], None, "", _sample_controllers, config, family,
                      problems, x0, state.loop, key)

    def fit(labels, samples, key):
        return _timed(labels["fit"], None, "", _fit, config, family, problems, samples, key)

    def optimise(labels, model, loop, reference, samples):
        return _timed(labels["optimise"], num, "objectives", _optimise, config, family, model,
                      loop, reference, samples)

    def policy_step(labels, policy, controller, samples, key):
        return _timed(labels["policy"], config.policy_steps, "steps", _s_step, config, family,
                      policy, controller, samples, key)

    def iteration(state: TrainState, key: jax.Array, prefix: str = "GPS iteration"):
        key_sample, key_fit, key_policy = jax.random.split(key, 3)
        labels = stage_names(prefix)
        samples, sample_s = sample(labels, state, key_sample)
        model, fit_s = fit(labels, samples, key_fit)
        if config.sampling == "policy":  # the trust region is around the policy itself
            reference = _linearise(config, family, state.policy, samples)
            (loop, solution, kl_bound, failed), optimise_s = optimise(
                labels, model, state.loop._replace(controller=reference), reference, samples)
            del model, reference  # before the S-step: 0.9 GB on 1800 logistic objectives
            (policy, losses), policy_s = policy_step(labels, state.policy, loop.controller,
                                                     samples, key_policy)
        else:
            (policy, losses), policy_s = policy_step(labels, state.policy,
                                                     state.loop.controller, samples, key_policy)
            reference = None
            if config.coupling == "mirror_descent":
                reference = _linearise(config, family, policy, samples)
            (loop, solution, kl_bound, failed), optimise_s = optimise(
                labels, model, state.loop, reference, samples)
        record = {
            "sample_cost": float(jnp.mean(samples.values[:, :, 1:])),
            "policy_loss": float(losses),
            "kl": float(jnp.mean(solution.kl)),
            "kl_bound": float(jnp.mean(kl_bound)),
            "eta": float(jnp.nanmedian(solution.eta)),
            "failed_conditions": int(jnp.sum(failed)),
            "step_mult": float(jnp.mean(loop.step_mult)),
            "sample_seconds": sample_s,
            "fit_seconds": fit_s,
            "policy_seconds": policy_s,
            "optimise_seconds": optimise_s,
        }
        return state._replace(loop=loop, policy=policy), record

    return iteration


def run_identity(config: Config, family, train_problems, key: jax.Array) -> dict:
    """What `train`'s checkpoints must match to be resumed (`lopt.checkpoint.identity`): every
    setting, the family's class and fields, the key and a fingerprint of the problems."""
    fields = family if dataclasses.is_dataclass(family) else {}
    return checkpoint.identity({"gps": config, "family": fields,
                                "family_class": type(family).__name__},
                               key, data=train_problems)


def train(family, train_problems, config: Config, key: jax.Array, *, callback=None,
          checkpoint_dir: str | None = None) -> learned_lib.Learned:
    """Learns predicted step descent by GPS on `train_problems` (leaves `[N, ...]`).

    Args:
      family: the objective family (`lopt.objectives`).
      train_problems: batched problem data of the training objectives.
      config: every setting (`lopt.gps.Config`, e.g. `Config.preset("cpu")`).
      key: PRNG key; iteration i uses `fold_in(key, i)`.
      callback: called as `callback(iteration, record)` after each iteration.
      checkpoint_dir: where the loop state is written after each iteration; if it already
        holds a checkpoint of the same run, training resumes from it.

    Returns:
      A `Learned` (policy, features, dimension, history); `lopt.gps.as_optax` makes it an
      optimizer. The policy is the one with the lowest mean cost (noiseless runs) among the
      initial policy and the policy after each iteration: over `validation_steps` steps from
      fresh starts (one per objective), or with `validation_steps=0` over the horizon from
      the training starts. Runs in float64 inside
      `jax.enable_x64()` (the global setting is left alone).

    The per-objective stages are split over all devices (`lopt.parallel`); the S-step runs
    on the first device.
    """
    num = evaluation.num_problems(train_problems)
    identity = run_identity(config, family, train_problems, key)
    checkpoint_path = None if checkpoint_dir is None else os.path.join(checkpoint_dir, CHECKPOINT)
    with jax.enable_x64():
        problems = jax.tree.map(trajectory_opt.to_float64, train_problems)
        key_x0, key_state, key = jax.random.split(key, 3)
        starts = config.starts_per_objective
        if starts > 1:  # condition i * starts + j: objective i from start j
            problems = jax.tree.map(lambda leaf: jnp.repeat(leaf, starts, axis=0), problems)
        x0 = family.init(key_x0, num * starts).astype(jnp.float64)
        validation = None
        if config.validation_steps:  # fresh starts, one per training objective
            validation = (jax.tree.map(trajectory_opt.to_float64, train_problems),
                          family.init(jax.random.fold_in(key_x0, 1), num).astype(jnp.float64))
        if checkpoint_path is not None and os.path.exists(checkpoint_path):
            template = _state_shapes(config, family, problems, x0, key_state)
            state, saved = checkpoint.load(checkpoint_path, template, identity=identity)
            state = jax.tree.map(jnp.asarray, state)
            first, history = saved["next_iteration"], saved["history"]
            logging.info("GPS: resumed from %s at iteration %d", checkpoint_dir, first)
        else:
            state = initial_state(config, family, problems, x0, key_state)
            if validation is not None:
                state = state._replace(best_cost=jnp.mean(_jit_policy_cost(
                    config, family, *validation, state.policy, config.validation_steps)))
            first, history = 0, []
            logging.info("GPS: tuned momentum initialisation, mean training cost %.6f",
                         float(jnp.mean(_jit_controller_cost(config, family, problems, x0,
                                                             state.loop.controller))))
        iteration = make_iteration(config, family, problems, x0)
        for index in range(first, config.num_iterations):
            started = time.perf_counter()
            prefix = iteration_prefix(index, config.num_iterations)
            if config.sampling == "policy":  # unused: the iteration linearises the policy
                state = state._replace(loop=state.loop._replace(controller=None))
            state, record = iteration(state, jax.random.fold_in(key, index), prefix)
            with progress.stage(f"{prefix}: evaluate"):
                record = {
                    "iteration": index,
                    "controller_cost": float(jnp.mean(_jit_controller_cost(
                        config, family, problems, x0, state.loop.controller))),
                    "policy_cost": float(jnp.mean(_jit_policy_cost(config, family, problems,
                                                                   x0, state.policy))),
                    **record,
                }
                if validation is not None:
                    record["validation_cost"] = float(jnp.mean(_jit_policy_cost(
                        config, family, *validation, state.policy, config.validation_steps)))
            record["seconds"] = time.perf_counter() - started
            logging.info(
                "GPS iteration %d/%d: cost controllers %.6f, policy %.6f (samples %.6f); "
                "policy loss %.4f; KL %.3f / %.3f, median eta %.3g, step mult %.3f, %d failed "
                "LQG solves; sample %.1fs, fit %.1fs, policy %.1fs, optimise %.1fs", index + 1,
                config.num_iterations, record["controller_cost"], record["policy_cost"],
                record["sample_cost"], record["policy_loss"], record["kl"], record["kl_bound"],
                record["eta"], record["step_mult"], record["failed_conditions"],
                record["sample_seconds"],
                record["fit_seconds"], record["policy_seconds"], record["optimise_seconds"])
            selection_cost = record.get("validation_cost", record["policy_cost"])
            if selection_cost < float(state.best_cost):
                state = state._replace(best_policy=state.policy,
                                       best_cost=jnp.asarray(selection_cost))
            history.append(record)
            if checkpoint_path is not None:
                checkpoint.save(checkpoint_path, state, identity=identity,
                                metadata={"next_iteration": index + 1, "history": history})
            if callback is not None:
                callback(index, record)
        policy = jax.tree.map(np.asarray, state.best_policy)
    return learned_lib.Learned(policy, config.features, family.dim, family.name, tuple(history))

