"""Scoring a population of candidate update rules on a child task, in one compiled program.

The protocol of Bello et al. (2017, section 4.3), per candidate:
  1. sweep: train a fresh child with each learning rate of `config.learning_rates` (paper:
     10^i, i = -5..1) for `sweep_epochs` epochs;
  2. final: train a fresh child with the best of those learning rates (highest validation
     accuracy; lowest loss for data-free tasks) for `final_epochs` epochs;
  3. reward = validation accuracy of the final child (negated final objective for data-free
     tasks).
A task with a `score_rules(codes, config, key)` method (`lopt.search.imitation.ImitationTask`)
replaces this protocol: it returns the rows itself (fingerprints, cache and pruning as below).
For a task with `reward_over_run` (`lopt.search.tasks.FamilyTask`) a run's score, in the sweep
and the final run alike, is instead the mean of `task.accuracy` over every iterate the run
visited (iterates 0..T of T steps; with `validate_every_epoch`, each epoch's own iterates and
its last).

All candidates x learning rates of a chunk train together: `jax.vmap` over members, a
`jax.lax.scan` over steps, minibatches taken by index from device-resident arrays, the rules
run by the population interpreter (`lopt.rules.interpret`). Every chunk is padded to the full
`chunk_size` (repeating its first member), so the compiled program depends only on the
configuration and the rule depth: no population, whatever its size or how many of its members
the cache already knows, compiles anything after the first. Every member of an
evaluation starts from the same initial parameters and sees the same minibatch sequence
(common random numbers: differences in reward come from the rules).

A member whose loss or parameters become non-finite is frozen where it was (masked) and flagged
`diverged`; a candidate diverging in every sweep run or in its final run gets the failure
reward (`config.failure_reward`, default chance accuracy 1/num_classes, or the negated initial
objective for data-free tasks). The other members are unaffected.

Before any training, `lopt.search.fingerprint.probe` fingerprints the candidates (equal
fingerprints are trained once, and a cache keyed by them skips known ones) and finds the
degenerate ones (zero, constant, gradient-independent or non-finite on its probes): with
`config.prune` (off by default, as in the paper; on in the search presets but "paper") they get
the failure reward untrained and are flagged `pruned`.

The member axis is sharded over all devices with `jax.shard_map` on a one-axis mesh
("population"); each member's randomness is keyed by its position in the population, so
results do not depend on the number of devices or on the chunk size.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from lopt import distributed, finite
from lopt import rules as rules_lib
from lopt.search import fingerprint as fingerprint_lib

PAPER_LEARNING_RATES = tuple(10.0**i for i in range(-5, 2))
_ALL_MOMENTS = ("m", "v", "gamma")


@dataclasses.dataclass(frozen=True)
class EvaluatorConfig:
    """Settings of the scoring protocol (defaults: the paper's, section 4.3, on a CPU budget).

    learning_rates: the sweep (paper: 1e-5 ... 1e1, one decade apart).
    batch_size: minibatch size (paper: 100).
    steps_per_epoch: None = one pass over the training set (data tasks); data-free tasks
      need it set (default there: 100).
    sweep_epochs: epochs per learning rate in the sweep (paper: 1).
    final_epochs: epochs of the final run with the best learning rate (paper: 5).
    chunk_size: candidates per compiled call (bounds memory; the sweep trains
      chunk_size x len(learning_rates) children at once). Smaller populations are padded to
      it, so keep it near the population size of a search.
    eval_batch_size: validation examples per forward pass.
    depth: levels that lists of Rules are encoded to (padded with keep-left levels), so any
      population of the same size reuses one compiled program; 3 holds every rule of the
      paper's Table 1. Encoded arrays are used as given.
    failure_reward: reward of a diverged candidate; None = chance accuracy (data tasks) or
      the negated initial objective (data-free tasks).
    validate_every_epoch: also validate after every epoch of the final run, for
      `Scores.best_val_accuracy` (the paper's "Best Val"; costs one validation per epoch).
    prune: score degenerate candidates (`lopt.search.fingerprint.DEGENERACIES`) at the
      failure reward without training them (not in the paper).
    """

    learning_rates: tuple[float, ...] = PAPER_LEARNING_RATES
    batch_size: int = 100
    steps_per_epoch: int | None = None
    sweep_epochs: int = 1
    final_epochs: int = 5
    chunk_size: int = 32
    eval_batch_size: int = 512
    depth: int = 3
    failure_reward: float | None = None
    validate_every_epoch: bool = False
    prune: bool = False

    def __post_init__(self):
        for name in ("batch_size", "sweep_epochs", "final_epochs", "chunk_size",
                     "eval_batch_size", "depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"EvaluatorConfig.{name} must be a positive integer, got "
                                 f"{value!r}")
        if self.steps_per_epoch is not None and self.steps_per_epoch <= 0:
            raise ValueError(f"EvaluatorConfig.steps_per_epoch must be positive or None, got "
                             f"{self.steps_per_epoch!r}")
        if not self.learning_rates or min(self.learning_rates) <= 0:
            raise ValueError(f"EvaluatorConfig.learning_rates must be positive, got "
                             f"{self.learning_rates!r}")

    def epoch_steps(self, task) -> int:
        if self.steps_per_epoch is not None:
            return self.steps_per_epoch
        if not task.has_data:
            return 100
        return max(1, len(task.dataset.train.labels) // self.batch_size)


class Scores(NamedTuple):
    """Scores of N candidates (NumPy arrays with leading axis N).

    reward: what the search maximises (validation accuracy, or -objective without data).
    val_accuracy: validation accuracy of the final child (-objective without data).
    learning_rate: the learning rate chosen by the sweep.
    train_loss: mean training loss over the final run's last epoch.
    diverged: True if every sweep run or the final run became non-finite.
    best_val_accuracy: the best validation accuracy after any epoch of the final run with
      `EvaluatorConfig.validate_every_epoch` (the paper's "Best Val"), else `val_accuracy`.
    pruned: True for a degenerate candidate scored without training (reward: the failure
      reward; val_accuracy, learning_rate, train_loss, best_val_accuracy: NaN).
    fingerprint: the candidate's functional fingerprint (`lopt.search.fingerprint`).
    """

    reward: np.ndarray
    val_accuracy: np.ndarray
    learning_rate: np.ndarray
    train_loss: np.ndarray
    diverged: np.ndarray
    best_val_accuracy: np.ndarray
    pruned: np.ndarray
    fingerprint: np.ndarray


_CACHED = Scores._fields[:-1]  # a cache row holds every field but the fingerprint (its key)


def _member_keys(key: jax.Array, member_ids: jax.Array) -> jax.Array:
    return jax.vmap(partial(jax.random.fold_in, key))(member_ids)


def _train_members(task, codes, learning_rates, member_keys, init_params, batch_indices,
                   train_inputs, train_labels, validate):
    """Trains M children, one per (rule, learning rate), with the interpreter, validating
    them after each of V segments of steps.

    Args:
      codes: int32 [M, 5·D]; learning_rates: [M]; member_keys: [M] keys for drop/noise.
      init_params: one child's parameters (shared start).
      batch_indices: int32 [V, steps_per_segment, batch_size] (ignored by data-free tasks).
      train_inputs, train_labels: the training set on device (None for data-free tasks).
      validate: params with leading axis M -> validation scores [M].

    Returns:
      (validation scores after each segment [V, M] (with `task.reward_over_run`, the mean of
       `task.accuracy` over the segment's iterates and its last), diverged [M] bool, losses
       [V * steps_per_segment, M]).
    """
    num_members = codes.shape[0]
    params = jax.tree.map(lambda p: jnp.broadcast_to(p, (num_members, *p.shape)), init_params)
    state = jax.vmap(lambda p, k: rules_lib.init_state(p, _ALL_MOMENTS, k))(params, member_keys)

    if task.has_data:
        def member_loss(p, indices):
            return task.loss(p, train_inputs[indices], train_labels[indices])
    else:
        def member_loss(p, indices):
            return task.loss(p)
    loss_and_grad = jax.vmap(jax.value_and_grad(member_loss), in_axes=(0, None))
    over_run = getattr(task, "reward_over_run", False)

    def step(carry, indices):
        params, state, diverged = carry
        loss, grads = loss_and_grad(params, indices)
        visited = jax.vmap(task.accuracy)(params) if over_run else loss
        new_state, moments, step_keys = jax.vmap(rules_lib.advance)(state, grads)
        directions = rules_lib.interpret(codes, moments, params, step_keys)
        new_params = jax.tree.map(
            lambda p, d: p - learning_rates.reshape((-1,) + (1,) * (p.ndim - 1)).astype(p.dtype)
            * d, params, directions)
        diverged = diverged | ~finite.all_finite_per_row((loss, new_params))
        keep = lambda new, old: jnp.where(
            diverged.reshape((-1,) + (1,) * (new.ndim - 1)), old, new)
        # Only the parameters are frozen: a diverged member's optimizer state may go
        # non-finite, but its parameters (all that is scored) stay at their last finite value.
        params = jax.tree.map(keep, new_params, params)
        return (params, new_state, diverged), (loss, visited)

    def segment(carry, indices):
        carry, (losses, visited) = jax.lax.scan(step, carry, indices)
        last = validate(carry[0])
        if over_run:
            last = (visited.sum(axis=0) + last) / (visited.shape[0] + 1)
        return carry, (last, losses)

    carry = (params, state, jnp.zeros(num_members, bool))
    (_, _, diverged), (scores, losses) = jax.lax.scan(segment, carry, batch_indices)
    return scores, diverged, losses.reshape(-1, num_members)


def _validation_scores(task, params, val_inputs, val_labels, eval_batch_size):
    """Validation accuracy [M] of M children (negated objective for data-free tasks)."""
    if not task.has_data:
        return jax.vmap(task.accuracy)(params)
    num_batches = max(1, len(val_labels) // eval_batch_size)
    size = num_batches * eval_batch_size if len(val_labels) >= eval_batch_size else len(val_labels)
    inputs = val_inputs[:size].reshape(num_batches, -1, *val_inputs.shape[1:])
    labels = val_labels[:size].reshape(num_batches, -1, *val_labels.shape[1:])
    per_batch = jax.lax.map(
        lambda batch: jax.vmap(task.accuracy, in_axes=(0, None, None))(params, *batch),
        (inputs, labels))
    return per_batch.mean(axis=0)


def _score_members(task, eval_batch_size, codes, learning_rates, member_keys, init_params,
                   batch_indices, train_inputs, train_labels, val_inputs, val_labels):
    validate = partial(_validation_scores, task, val_inputs=val_inputs, val_labels=val_labels,
                       eval_batch_size=eval_batch_size)
    return _train_members(task, codes, learning_rates, member_keys, init_params, batch_indices,
                          train_inputs, train_labels, validate)


@partial(jax.jit, static_argnames=("task", "eval_batch_size", "mesh"))
def _score_members_sharded(task, eval_batch_size, mesh, codes, learning_rates, member_keys,
                           init_params, batch_indices, data):
    """`_score_members` with the member axis split over the mesh's "population" axis."""
    members, shared = P("population"), P()
    score = partial(_score_members, task, eval_batch_size)
    sharded = jax.shard_map(
        lambda c, lr, k, p, b, d: score(c, lr, k, p, b, *d),
        mesh=mesh,
        in_specs=(members, members, members, shared, shared, shared),
        out_specs=(P(None, "population"), members, P(None, "population")),
        check_vma=False,
    )
    return sharded(codes, learning_rates, member_keys, init_params, batch_indices, data)


def _batch_indices(key, num_examples, batch_size, steps_per_epoch, num_epochs, num_segments):
    """Minibatch indices [num_segments, num_epochs * steps_per_epoch / num_segments,
    batch_size]: a fresh permutation per epoch, cycled if an epoch asks for more examples
    than the training set has; validation follows each segment."""
    needed = steps_per_epoch * batch_size
    def epoch(k):
        order = jax.random.permutation(k, num_examples)
        return jnp.resize(order, (needed,)).reshape(steps_per_epoch, batch_size)
    per_epoch = jax.vmap(epoch)(jax.random.split(key, num_epochs))
    return per_epoch.reshape(num_segments, -1, batch_size)


def _mesh() -> Mesh:
    return Mesh(np.array(jax.devices()), ("population",))


def _pad(count: int, multiple: int) -> int:
    return int(math.ceil(count / multiple) * multiple)


@functools.lru_cache(maxsize=8)
def _device_data(task):
    """The task's (train inputs, train labels, validation inputs, validation labels) on device,
    moved once per task; four Nones for data-free tasks."""
    if not task.has_data:
        return (None,) * 4
    train, validation = task.dataset.train, task.dataset.validation
    return tuple(map(jnp.asarray, (train.inputs, train.labels, validation.inputs,
                                   validation.labels)))


def _run_stage(task, config, codes, learning_rates, key, init_params, num_epochs,
               chunk_members, num_segments=1):
    """Trains and validates members (codes [M, 5·D], learning_rates [M]) in chunks of equal
    shape, validating after each of `num_segments` equal parts of the run; returns NumPy
    (validation scores [num_segments, M], diverged [M], losses [num_steps, M])."""
    mesh = _mesh()
    steps = config.epoch_steps(task)
    num_examples = len(task.dataset.train.labels) if task.has_data else 1
    indices = _batch_indices(jax.random.fold_in(key, 0), num_examples, config.batch_size, steps,
                             num_epochs, num_segments)
    num_members = codes.shape[0]
    member_keys = _member_keys(jax.random.fold_in(key, 1), jnp.arange(num_members))
    chunk_members = _pad(chunk_members, mesh.size)
    outputs = []
    for start in range(0, num_members, chunk_members):
        stop = min(start + chunk_members, num_members)
        take = np.concatenate([np.arange(start, stop),
                               np.full(chunk_members - (stop - start), start)])
        result = _score_members_sharded(task, config.eval_batch_size, mesh, codes[take],
                                        learning_rates[take], member_keys[take], init_params,
                                        indices, _device_data(task))
        scores, diverged, losses = distributed.gather(result)
        outputs.append((scores[:, : stop - start], diverged[: stop - start],
                        losses[:, : stop - start]))
    scores, diverged, losses = zip(*outputs, strict=True)
    return (np.concatenate(scores, axis=1), np.concatenate(diverged),
            np.concatenate(losses, axis=1))


def failure_reward(task, config: EvaluatorConfig, key: jax.Array) -> float:
    """The reward of a failed (diverged or pruned) candidate under `config` and the evaluation
    key `key`: `config.failure_reward` if set, else the task's own `failure_reward` if it has
    one, else chance accuracy 1/num_classes (data tasks) or the negated objective at the
    child's initial parameters (data-free tasks)."""
    if config.failure_reward is not None:
        return float(config.failure_reward)
    if getattr(task, "failure_reward", None) is not None:
        return float(task.failure_reward)
    if task.has_data:
        return 1.0 / task.num_classes
    return float(task.accuracy(task.init(jax.random.fold_in(key, 0))))


def _score_unique(codes, task, config, key) -> dict[str, np.ndarray]:
    """The protocol on distinct candidates, codes [N, 5·D]: {field of `_CACHED`: [N]}."""
    num_rules, num_rates = codes.shape[0], len(config.learning_rates)
    rates = jnp.asarray(config.learning_rates, jnp.float32)
    init_params = task.init(jax.random.fold_in(key, 0))

    sweep_codes = jnp.repeat(codes, num_rates, axis=0)
    sweep_rates = jnp.tile(rates, num_rules)
    sweep_scores, sweep_diverged, _ = _run_stage(
        task, config, sweep_codes, sweep_rates, jax.random.fold_in(key, 1), init_params,
        config.sweep_epochs, config.chunk_size * num_rates)
    sweep_scores = np.where(sweep_diverged, -np.inf, sweep_scores[-1]).reshape(num_rules,
                                                                               num_rates)
    best = np.argmax(sweep_scores, axis=1)
    all_diverged = np.all(np.isneginf(sweep_scores), axis=1)
    chosen = np.asarray(config.learning_rates, np.float64)[best]

    per_epoch, diverged, losses = _run_stage(
        task, config, codes, jnp.asarray(chosen, jnp.float32), jax.random.fold_in(key, 2),
        init_params, config.final_epochs, config.chunk_size,
        config.final_epochs if config.validate_every_epoch else 1)
    scores = per_epoch[-1]
    failed = diverged | all_diverged
    reward = np.where(failed, failure_reward(task, config, key), scores)
    train_loss = losses[-config.epoch_steps(task):].mean(axis=0)
    return {"reward": reward.astype(np.float64), "val_accuracy": scores.astype(np.float64),
            "learning_rate": np.where(all_diverged, np.nan, chosen),
            "train_loss": train_loss.astype(np.float64), "diverged": failed,
            "best_val_accuracy": per_epoch.max(axis=0).astype(np.float64),
            "pruned": np.zeros(num_rules, bool)}


def _pruned_row(task, config, key) -> dict:
    """The cache row of a degenerate candidate: the failure reward, nothing trained."""
    return {"reward": failure_reward(task, config, key), "val_accuracy": math.nan,
            "learning_rate": math.nan, "train_loss": math.nan, "diverged": False,
            "best_val_accuracy": math.nan, "pruned": True}


def evaluate(rules, task, config: EvaluatorConfig = EvaluatorConfig(), key=None, *,
             cache: dict | None = None) -> Scores:
    """Scores candidate rules on a child task (see the module docstring for the protocol).

    Args:
      rules: a sequence of `lopt.rules.Rule`, or an encoded batch int32 [N, 5·D].
      task: a child task from `lopt.search.tasks`.
      config: the protocol's settings.
      key: PRNG key for the children's initialisation, minibatch order and rule randomness.
      cache: optional {fingerprint: {field of Scores but fingerprint: value}} dict;
        candidates whose fingerprint is in it are not trained again, and newly scored
        candidates are added to it. Candidates with equal fingerprints in one call are
        trained once.

    Returns:
      Scores with leading axis N, in the order of `rules`.

    Example:
      >>> task = lopt.search.tasks.digits_mlp()
      >>> scores = evaluate([parse("adam"), parse("g")], task, key=jax.random.key(0))
    """
    if key is None:
        raise ValueError("evaluate needs a PRNG key")
    if isinstance(rules, Sequence):
        codes = rules_lib.encode(list(rules), config.depth) if rules else jnp.zeros((0, 0))
    else:
        codes = jnp.asarray(rules)
    if codes.ndim != 2 or codes.shape[0] == 0 or codes.shape[1] % 5:
        raise ValueError(f"rules must be a non-empty list of Rules or an int array [N, 5·depth], "
                         f"got shape {codes.shape}")
    prints, degeneracy = fingerprint_lib.probe(codes)
    cache = {} if cache is None else cache
    first_index = {}
    for index, fingerprint in enumerate(prints):
        if fingerprint not in cache:
            first_index.setdefault(fingerprint, index)
    pruned = [p for p, i in first_index.items() if config.prune and degeneracy[i]]
    if pruned:
        row = _pruned_row(task, config, key)
        cache.update({fingerprint: dict(row) for fingerprint in pruned})
    pending = [p for p in first_index if p not in cache]
    if pending:
        unique = codes[np.array([first_index[p] for p in pending])]
        fresh = (task.score_rules(unique, config, key) if hasattr(task, "score_rules")
                 else _score_unique(unique, task, config, key))
        for row, fingerprint in enumerate(pending):
            cache[fingerprint] = {field: fresh[field][row].item() for field in _CACHED}
    return Scores(*(np.array([cache[p][field] for p in prints]) for field in _CACHED),
                  fingerprint=np.array(prints))
