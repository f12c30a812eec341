"""The GPS outer loop: linear-Gaussian controllers and the neural policy, trained together.

Coupling: mirror-descent GPS (MD, Montgomery & Levine 2016), on-policy by default
(`LoopConfig.sampling="policy"`, MD section 4). Before the first iteration the policy imitates the
initial (tuned momentum) controllers for `PolicyConfig.imitation_steps`. One iteration is then

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
controllers). With `LoopConfig.train_policy=False` the same loop optimises the controllers
alone (sample, fit, optimise; `train_trajectories`).

Each stage is compiled once per (family, the settings parts it reads); the loop settings
(`LoopConfig`, e.g. the iteration count) are read only here, in Python, so changing them
recompiles nothing.

Why mirror descent rather than BADMM: the KL trust region around the linearised policy is
exactly the constraint the LQG already solves (`lqg.optimise` takes any reference controller),
so the coupling needs no dual variables or extra cost terms. Why on-policy sampling, exact
dynamics, and returning the best policy by a validation cost from fresh starts rather than
the last one: each was measured better on logistic regression (docs/decisions.md, "GPS
coupling and sampling").

The policy's whitening and action scale are fitted once, on samples of the initial (tuned
momentum) controllers, and kept fixed. Everything runs in float64 inside
`jax.enable_x64()`. After every iteration the loop state is written to `checkpoint_dir`
(when given); `run` resumes from it, and the randomness of iteration i is
`fold_in(key, i)`, so a killed and resumed run gives the same result as an uninterrupted one
(and a run resumed with a larger `num_iterations` continues the same run).
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
from absl import logging

from lopt import checkpoint, distributed, evaluation, objectives, parallel, progress
from lopt.gps import controllers as ctrl
from lopt.gps import features as feats
from lopt.gps import learned as learned_lib
from lopt.gps import policy as policy_lib
from lopt.gps import trajectory_opt
from lopt.gps.config import Config, PolicyConfig, RolloutConfig

CHECKPOINT = "checkpoint.npz"


class TrainState(NamedTuple):
    """The loop state between iterations: controllers and step sizes (`LoopState`, leaves
    `[N, ...]`), the policy, the best policy so far and its selection cost `[]` (the last
    three None when `LoopConfig.train_policy` is False)."""

    loop: trajectory_opt.LoopState
    policy: policy_lib.Policy | None
    best_policy: policy_lib.Policy | None
    best_cost: jax.Array | None


class Run(NamedTuple):
    """What `run` returns: the final TrainState, the training starts x0 `[N, dim]`, the mean
    training cost of the initial (tuned momentum) controllers, and one dict of scalar
    diagnostics per iteration."""

    state: TrainState
    x0: jax.Array
    initial_cost: float
    history: tuple


def initial_policy(features: feats.FeatureConfig, policy_config: PolicyConfig, family,
                   controller: ctrl.Controller, samples: ctrl.Samples, key: jax.Array,
                   imitation_steps: int) -> policy_lib.Policy:
    """A policy whitened on `samples` of the initial controllers `controller` and fitted to
    them for `imitation_steps` (0: not fitted)."""
    key_policy, key_fit = jax.random.split(key)
    layout = features.layout(family.dim)
    policy = policy_lib.init(key_policy, layout.size - layout.dim, family.dim,
                             policy_config.hidden, samples.states.dtype)
    data = policy_lib.targets(controller, samples)
    policy = policy_lib.normalise(layout, policy, data)
    if imitation_steps:
        policy, _ = _fit_policy(policy_config, layout, policy, data, key_fit, imitation_steps)
    return policy


def _fit_policy(policy_config: PolicyConfig, layout, policy: policy_lib.Policy,
                data: policy_lib.Targets, key, steps: int):
    return policy_lib.fit(layout, policy, data, key, steps=steps,
                          batch_size=policy_config.batch_size,
                          learning_rate=policy_config.learning_rate)


def policy_stage(features: feats.FeatureConfig, policy_config: PolicyConfig, family,
                 policy: policy_lib.Policy, controller: ctrl.Controller, samples: ctrl.Samples,
                 key):
    """S-step: `policy` fitted to `controller` `[N, T, ...]` at the samples; returns (policy,
    loss on all sampled states after fitting `[]`)."""
    layout = features.layout(family.dim)
    data = policy_lib.targets(controller, samples)
    return _fit_policy(policy_config, layout, policy, data, key, policy_config.steps)


def sample_policy(rollouts: RolloutConfig, features: feats.FeatureConfig, family, problems,
                  x0: jax.Array, policy: policy_lib.Policy, key: jax.Array) -> ctrl.Samples:
    """`num_samples` rollouts per objective of the policy's mean plus Gaussian noise of its
    variance (on-policy sampling, MD section 4): Samples `[N, S, ...]`."""
    layout = features.layout(family.dim)
    std = jnp.sqrt(policy.variance)

    def one_rollout(loss_fn, start, noise):  # noise [T, dU]
        state0, tracker0 = feats.start(features, loss_fn, start)

        def body(carry, noise_t):
            state, tracker = carry
            action = policy_lib.state_mean(layout, policy, state) + std * noise_t
            state, tracker, observation = feats.step(features, loss_fn, state, tracker, action)
            return (state, tracker), (state, action, observation, tracker.value)

        _, (states, actions, observations, values) = jax.lax.scan(body, (state0, tracker0),
                                                                  noise)
        return ctrl.Samples(jnp.concatenate([state0[None], states]), actions, observations,
                            jnp.concatenate([tracker0.value[None], values]))

    num = x0.shape[0]
    noise = jax.random.normal(key, (num, rollouts.num_samples, rollouts.horizon, family.dim),
                              x0.dtype)

    def one_objective(problem, start, noises):
        loss_fn = family.objective(problem)
        return jax.vmap(lambda n: one_rollout(loss_fn, start, n))(noises)

    return ctrl.in_chunks(one_objective, problems, x0, noise)


def linearise_stage(features: feats.FeatureConfig, family, policy: policy_lib.Policy,
                    samples: ctrl.Samples) -> ctrl.Controller:
    """The policy linearised at the samples `[N, S, ...]`: a Controller `[N, T, ...]`."""
    return policy_lib.linearise(features.layout(family.dim), policy, samples,
                                samples.actions.shape[2])


def policy_cost(features: feats.FeatureConfig, family, problems, x0: jax.Array,
                policy: policy_lib.Policy, num_steps: int):
    """Mean f(x_t) over t = 1..num_steps of the policy's own (noiseless) runs: `[N]`."""
    opt = learned_lib.predicted_step_descent(policy, features, family.dim)

    def batched(*share):
        curves = evaluation.batch_curves(opt, family, *share, num_steps)
        return jnp.mean(curves[:, 1:], axis=1)

    return parallel.over_devices(batched, problems, x0)


# The stages, each compiled once per (settings parts it reads, family).
_initial_controllers = jax.jit(trajectory_opt.initial_state, static_argnums=(0, 1, 2))
_sample_controllers = jax.jit(trajectory_opt.sample_stage, static_argnums=(0, 1, 2))
_sample_policy = jax.jit(sample_policy, static_argnums=(0, 1, 2))
_fit = jax.jit(trajectory_opt.fit_stage, static_argnums=(0, 1, 2, 3))
_fit_policy_to = jax.jit(policy_stage, static_argnums=(0, 1, 2))
_linearise = jax.jit(linearise_stage, static_argnums=(0, 1))
_optimise = jax.jit(trajectory_opt.optimise_stage, static_argnums=(0, 1, 2))
_initial_policy = jax.jit(initial_policy, static_argnums=(0, 1, 2, 6))
_controller_cost = jax.jit(trajectory_opt.mean_cost, static_argnums=(0, 1))
_policy_cost = jax.jit(policy_cost, static_argnums=(0, 1, 5))


INITIAL_CONTROLLERS = "GPS initialisation: tuned momentum"
INITIAL_POLICY = "GPS initialisation: policy"


def iteration_prefix(index: int, num_iterations: int) -> str:
    return f"GPS iteration {index + 1}/{num_iterations}"


def stage_names(prefix: str) -> dict[str, str]:
    """Progress-stage labels of one iteration, by stage: sample, fit, optimise, policy."""
    return {name: f"{prefix}: {name}" for name in ("sample", "fit", "optimise", "policy")}


def plan(config: Config) -> dict[str, float]:
    """{progress-stage label: expected seconds} for `run` (`lopt.progress`): the stages'
    times on 1800 logistic-regression objectives on 2 cores (the job's ETA rescales them by
    the times measured as it runs, so only their ratios matter)."""
    shares = {INITIAL_CONTROLLERS: 19.0}
    if config.loop.train_policy:
        shares[INITIAL_POLICY] = 20.0
    for index in range(config.loop.num_iterations):
        prefix = iteration_prefix(index, config.loop.num_iterations)
        labels = stage_names(prefix)
        shares.update({labels["sample"]: 5.0, labels["fit"]: 8.0, labels["optimise"]: 30.0,
                       f"{prefix}: evaluate": 1.0})
        if config.loop.train_policy:
            shares[labels["policy"]] = 5.0
    return shares


def _timed(label: str, total: int | None, unit: str, function, *args):
    """`function(*args)` as the progress stage `label` (`lopt.progress`): (result, seconds)."""
    started = time.perf_counter()
    with progress.stage(label, total, unit):
        result = jax.block_until_ready(function(*args))
    return result, time.perf_counter() - started


def _on_one_device(function, *args):
    """`function(*args)` with the array arguments on one device (`lopt.parallel.on_one_device`);
    the result comes back through the host, so stages split over devices can take it."""
    return jax.device_get(function(*parallel.on_one_device(args)))


def initial_state(config: Config, family, problems, x0: jax.Array, key: jax.Array) -> TrainState:
    """Tuned momentum controllers and, when a policy is trained, the initial policy
    (`initial_policy`, imitating them with on-policy sampling) and its training cost over the
    horizon, each as a progress stage (`lopt.progress`)."""
    key_sample, key_policy = jax.random.split(key)
    rollouts, features = config.rollouts, config.features
    (loop, _), _ = _timed(INITIAL_CONTROLLERS, len(rollouts.momentum_step_sizes)
                          * len(rollouts.momentum_decays), "grid points",
                          _initial_controllers, rollouts, features, family, problems, x0)
    if not config.loop.train_policy:
        return TrainState(loop, None, None, None)
    imitation_steps = config.policy.imitation_steps if config.loop.sampling == "policy" else 0
    with progress.stage(INITIAL_POLICY, imitation_steps, "steps"):
        samples = _sample_controllers(rollouts, features, family, problems, x0, loop.controller,
                                      key_sample)
        policy = _on_one_device(
            lambda controller, samples: _initial_policy(
                features, config.policy, family, controller, samples, key_policy,
                imitation_steps), loop.controller, samples)
        cost = jnp.mean(_policy_cost(features, family, problems, x0, policy, rollouts.horizon))
    return TrainState(loop, policy, policy, cost)


def _state_shapes(config: Config, family, problems, x0: jax.Array, key: jax.Array):
    """The shapes and dtypes of `initial_state`'s TrainState (`jax.ShapeDtypeStruct`s)."""

    def build(problems, x0, key):
        loop, _ = trajectory_opt.initial_state(config.rollouts, config.features, family,
                                               problems, x0)
        if not config.loop.train_policy:
            return TrainState(loop, None, None, None)
        samples = trajectory_opt.sample_stage(config.rollouts, config.features, family,
                                              problems, x0, loop.controller, key)
        policy = initial_policy(config.features, config.policy, family, loop.controller,
                                samples, key, 0)
        return TrainState(loop, policy, policy, jnp.zeros((), x0.dtype))

    return jax.eval_shape(build, problems, x0, key)


def make_iteration(config: Config, family, problems, x0: jax.Array):
    """One GPS iteration (module docstring) for these settings and training objectives:
    `iteration(state, key, prefix)` returns (new TrainState, diagnostics dict). Each stage
    runs as a progress stage labelled by `stage_names(prefix)`; the stage order follows
    `config.loop` (on-policy: sample, fit, optimise, policy; controllers: sample, fit,
    policy, optimise; trajectories only: sample, fit, optimise)."""
    loop_config, features, num = config.loop, config.features, x0.shape[0]

    def sample(labels, state, key):
        if loop_config.sampling == "policy":
            return _timed(labels["sample"], None, "", _sample_policy, config.rollouts, features,
                          family, problems, x0, state.policy, key)
        return _timed(labels["sample"], None, "", _sample_controllers, config.rollouts,
                      features, family, problems, x0, state.loop.controller, key)

    def fit(labels, samples, key):
        return _timed(labels["fit"], None, "", _fit, config.dynamics, config.lqg, features,
                      family, problems, samples, key)

    def optimise(labels, model, loop, reference):
        return _timed(labels["optimise"], num, "objectives", _optimise, config.lqg, features,
                      family, model, loop, reference)

    def policy_step(labels, policy, controller, samples, key):
        fit_policy = lambda controller, samples: _fit_policy_to(
            features, config.policy, family, policy, controller, samples, key)
        return _timed(labels["policy"], config.policy.steps, "steps", _on_one_device,
                      fit_policy, controller, samples)

    def iteration(state: TrainState, key: jax.Array, prefix: str = "GPS iteration"):
        key_sample, key_fit, key_policy = jax.random.split(key, 3)
        labels = stage_names(prefix)
        samples, sample_s = sample(labels, state, key_sample)
        model, fit_s = fit(labels, samples, key_fit)
        policy, record = state.policy, {}
        if loop_config.sampling == "policy":  # the trust region is around the policy itself
            reference = _linearise(features, family, state.policy, samples)
            (loop, solution, kl_bound, failed), optimise_s = optimise(
                labels, model, state.loop._replace(controller=reference), reference)
            del model, reference  # before the S-step: 0.9 GB on 1800 logistic objectives
            (policy, loss), record["policy_seconds"] = policy_step(
                labels, state.policy, loop.controller, samples, key_policy)
            record["policy_loss"] = float(loss)
        else:
            if loop_config.train_policy:
                (policy, loss), record["policy_seconds"] = policy_step(
                    labels, state.policy, state.loop.controller, samples, key_policy)
                record["policy_loss"] = float(loss)
            reference = None
            if loop_config.coupling == "mirror_descent":
                reference = _linearise(features, family, policy, samples)
            (loop, solution, kl_bound, failed), optimise_s = optimise(
                labels, model, state.loop, reference)
        record.update({
            "sample_cost": float(jnp.mean(samples.values[:, :, 1:])),
            "kl": float(jnp.mean(solution.kl)),
            "kl_bound": float(jnp.mean(kl_bound)),
            "eta": float(jnp.nanmedian(solution.eta)),
            "num_passes": int(jnp.max(solution.num_passes)),
            "failed_conditions": int(jnp.sum(failed)),
            "step_mult": float(jnp.mean(loop.step_mult)),
            "sample_seconds": sample_s,
            "fit_seconds": fit_s,
            "optimise_seconds": optimise_s,
        })
        return state._replace(loop=loop, policy=policy), record

    return iteration


def run_identity(config: Config, family, train_problems, key: jax.Array) -> dict:
    """What `run`'s checkpoints must match to be resumed (`lopt.checkpoint.identity`): every
    setting but the iteration count (a longer run continues a shorter one exactly), the
    family's class and settings (`lopt.objectives.settings`), the key and a fingerprint of
    the problems."""
    identity = checkpoint.identity({"gps": config, "family": objectives.settings(family)},
                                   key, data=train_problems)
    del identity["gps.loop.num_iterations"]
    return identity


def _log(index: int, num_iterations: int, record: dict) -> None:
    policy = ""
    if "policy_cost" in record:
        policy = (f", policy {record['policy_cost']:.6f} (loss {record['policy_loss']:.4f}, "
                  f"{record['policy_seconds']:.1f}s)")
    logging.info(
        "GPS iteration %d/%d: cost controllers %.6f%s, samples %.6f; KL %.3f / %.3f, median "
        "eta %.3g, step mult %.3f, %d failed LQG solves; sample %.1fs, fit %.1fs, optimise "
        "%.1fs", index + 1, num_iterations, record["controller_cost"], policy,
        record["sample_cost"], record["kl"], record["kl_bound"], record["eta"],
        record["step_mult"], record["failed_conditions"], record["sample_seconds"],
        record["fit_seconds"], record["optimise_seconds"])


def run(family, train_problems, config: Config, key: jax.Array, *, callback=None,
        checkpoint_dir: str | None = None) -> Run:
    """The GPS loop (module docstring) on `train_problems` (leaves `[N, ...]`): a policy and
    the controllers, or (`LoopConfig.train_policy=False`) the controllers alone.

    Args:
      family: the objective family (`lopt.objectives`; your own: a `lopt.objectives.Family`
        subclass, checked by `lopt.objectives.check_family` before any work).
      train_problems: batched problem data of the training objectives.
      config: every setting (`lopt.gps.Config`, e.g. `Config.preset("cpu")`).
      key: PRNG key; iteration i uses `fold_in(key, i)`.
      callback: called as `callback(iteration, record)` after each iteration.
      checkpoint_dir: where the loop state is written after each iteration; if it already
        holds a checkpoint of the same run (`run_identity`), the run resumes from it.

    Returns:
      A `Run`. Its best policy is the one with the lowest mean cost (noiseless runs) among
      the initial policy and the policy after each iteration: over `validation_steps` steps
      from fresh starts (one per objective), or with `validation_steps=0` over the horizon
      from the training starts. Runs in float64 inside `jax.enable_x64()` (the global
      setting is left alone). The per-objective stages are split over all devices
      (`lopt.parallel`); the S-step runs on the first device. With several processes
      (`lopt.distributed`) the split stages span every process's devices, each process
      runs the S-step on its own copy of the samples (the same steps everywhere), and only
      process 0 writes the checkpoint (a resume reads process 0's).
    """
    objectives.check_family(family)
    loop_config, features = config.loop, config.features
    num = evaluation.num_problems(train_problems)
    identity = run_identity(config, family, train_problems, key)
    checkpoint_path = None if checkpoint_dir is None else os.path.join(checkpoint_dir, CHECKPOINT)
    with jax.enable_x64():
        problems = jax.tree.map(trajectory_opt.to_float64, train_problems)
        key_x0, key_state, key = jax.random.split(key, 3)
        starts = loop_config.starts_per_objective
        if starts > 1:  # condition i * starts + j: objective i from start j
            problems = jax.tree.map(lambda leaf: jnp.repeat(leaf, starts, axis=0), problems)
        x0 = family.init(key_x0, num * starts).astype(jnp.float64)
        validation = None
        if loop_config.train_policy and loop_config.validation_steps:  # fresh starts
            validation = (jax.tree.map(trajectory_opt.to_float64, train_problems),
                          family.init(jax.random.fold_in(key_x0, 1), num).astype(jnp.float64))
        saved_checkpoint = b""
        if checkpoint_path is not None:  # process 0's file, on every process
            saved_checkpoint = distributed.writer_file(checkpoint_path)
        if saved_checkpoint:
            template = _state_shapes(config, family, problems, x0, key_state)
            state, saved = checkpoint.load(checkpoint_path, template, identity=identity,
                                           contents=saved_checkpoint)
            state = jax.tree.map(jnp.asarray, state)
            first, history = saved["next_iteration"], saved["history"]
            initial_cost = saved["initial_cost"]
            logging.info("GPS: resumed from %s at iteration %d", checkpoint_dir, first)
        else:
            state = initial_state(config, family, problems, x0, key_state)
            if validation is not None:
                state = state._replace(best_cost=jnp.mean(_policy_cost(
                    features, family, *validation, state.policy, loop_config.validation_steps)))
            first, history = 0, []
            initial_cost = float(jnp.mean(_controller_cost(features, family, problems, x0,
                                                           state.loop.controller)))
            logging.info("GPS: tuned momentum initialisation, mean training cost %.6f",
                         initial_cost)
        iteration = make_iteration(config, family, problems, x0)
        for index in range(first, loop_config.num_iterations):
            started = time.perf_counter()
            prefix = iteration_prefix(index, loop_config.num_iterations)
            if loop_config.sampling == "policy":  # unused: the iteration linearises the policy
                state = state._replace(loop=state.loop._replace(controller=None))
            state, record = iteration(state, jax.random.fold_in(key, index), prefix)
            with progress.stage(f"{prefix}: evaluate"):
                record = {"iteration": index, "controller_cost": float(jnp.mean(
                    _controller_cost(features, family, problems, x0, state.loop.controller))),
                    **record}
                if loop_config.train_policy:
                    record["policy_cost"] = float(jnp.mean(_policy_cost(
                        features, family, problems, x0, state.policy, config.rollouts.horizon)))
                if validation is not None:
                    record["validation_cost"] = float(jnp.mean(_policy_cost(
                        features, family, *validation, state.policy,
                        loop_config.validation_steps)))
            record["seconds"] = time.perf_counter() - started
            _log(index, loop_config.num_iterations, record)
            if loop_config.train_policy:
                selection_cost = record.get("validation_cost", record["policy_cost"])
                if selection_cost < float(state.best_cost):
                    state = state._replace(best_policy=state.policy,
                                           best_cost=jnp.asarray(selection_cost))
            history.append(record)
            if checkpoint_path is not None:
                # Every leaf whole for the file: a collective with several processes. The loop
                # keeps `state` as it is (a process-local copy would recompile iteration 2).
                saved_state = distributed.gather(state)
                if distributed.is_writer():
                    checkpoint.save(checkpoint_path, saved_state, identity=identity,
                                    metadata={"next_iteration": index + 1, "history": history,
                                              "initial_cost": initial_cost})
            if callback is not None:
                callback(index, record)
        return Run(state, x0, initial_cost, tuple(history))


def train(family, train_problems, config: Config, key: jax.Array, *, callback=None,
          checkpoint_dir: str | None = None) -> learned_lib.Learned:
    """Learns predicted step descent by GPS (`run`, same arguments) and returns a `Learned`
    (the best policy, features, dimension, history); `lopt.gps.as_optax` makes it an
    optimizer."""
    if not config.loop.train_policy:
        raise ValueError("lopt.gps.train needs Config.loop.train_policy=True; optimising the "
                         "controllers alone is lopt.gps.train_trajectories")
    result = run(family, train_problems, config, key, callback=callback,
                 checkpoint_dir=checkpoint_dir)
    policy = distributed.gather(result.state.best_policy)  # NumPy, whole on every process
    return learned_lib.Learned(policy, config.features, family.dim, family.name, result.history)


def train_trajectories(family, train_problems, config: Config, key: jax.Array, *,
                       callback=None, checkpoint_dir: str | None = None) -> Run:
    """Trajectory optimisation alone: `run` with `config`'s loop set to sample the
    controllers, couple them to their previous selves and train no policy."""
    config = config.replace(loop={"sampling": "controllers", "coupling": "trajectory",
                                  "train_policy": False})
    return run(family, train_problems, config, key, callback=callback,
               checkpoint_dir=checkpoint_dir)
