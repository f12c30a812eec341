"""Scoring rules on a suite of child tasks against tuned Adam, through a funnel of stages.

A search over a suite (`SearchConfig.task` a tuple of tasks) or with a `Proxy` rewards a rule
with Adam-normalised scores, so that no task dominates by its scale:

    normalised_t(rule) = (reward_t(rule) - floor_t) / (reward_t(adam) - floor_t)

reward_t is the evaluator's reward on task t (validation accuracy; the negated objective for
data-free tasks) under the stage's protocol and evaluation key, each rule with its own
learning rate from the sweep, Adam included; floor_t is the failure reward
(`lopt.search.evaluator.failure_reward`: chance accuracy, or the negated initial objective).
Adam scores exactly 1 on every task, a rule that trains nothing (or diverges) 0, one that ends
worse than that a negative score (not clipped: on data-free tasks it is unbounded, so keep them
out of suites meant for real searches). A rule's suite score is the mean of its normalised
scores over the suite. One task without a proxy (a suite of one included) keeps the paper's
reward, the raw validation accuracy.

The funnel (after Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"):
  stage "proxy": every candidate new to the search is scored on the proxy task with the
    proxy's cheaper protocol (fewer learning rates and epochs), normalised as above;
  promotion: of the batch's candidates trained on the proxy for the first time (distinct
    fingerprints, not diverged, proxy score above 0), the best
    ceil(promote_fraction x their number) by proxy score are promoted (ties: the earlier in
    the batch);
  stage "full": promoted candidates are scored on every suite task with the full protocol
    (`SearchConfig.evaluator`); their reward is the suite score. With `seeds` S > 1
    (`SearchConfig.full_seeds`) each task is scored under S evaluation keys, each normalised
    against Adam under the same key, and the task's score is their mean: one key's spread
    (a few percent per child) is larger than the gains a search looks for, so a search
    scored on one key breeds from its luckiest draws.
A candidate that stops at the proxy is rewarded its proxy score, on the same Adam-normalised
scale as a suite score (a strategy compares the two directly: the proxy drives most of the
search, the suite decides what is reported); a degenerate one (pruned, `EvaluatorConfig.prune`)
gets 0 untrained (stage "pruned"). A fingerprint keeps the stage it
reached: a candidate sampled again is a cache hit with its first reward. Without a proxy every
candidate goes to the full stage.

Each (stage, task) has its own score cache, {fingerprint: row} as in `lopt.search.evaluate`,
held in one dict by `cache_name`; whether a fingerprint was promoted is whether the first
suite task's cache holds it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import numpy as np

from lopt import rules as rules_lib
from lopt import user_code
from lopt.search import tasks as tasks_lib
from lopt.search.evaluator import EvaluatorConfig, evaluate, failure_reward

STAGES = ("pruned", "proxy", "full")
_PROXY_KEY = 1  # folded into the search's evaluation key for the proxy stage
_FULL_SEEDS_KEY = 2  # folded in, then the seed index, for the full stage's seeds after the first


@dataclasses.dataclass(frozen=True)
class Proxy:
    """Stage 1 of the funnel.

    task: the proxy child (a name of `lopt.search.tasks.TASKS`, "module:attribute" or a task
      object); usually a suite task under a cheaper protocol.
    evaluator: the proxy's protocol (fewer learning rates and epochs than the full one).
    promote_fraction: the share of each batch's newly proxy-trained candidates promoted to the
      full stage, in (0, 1].
    """

    task: Any = "digits_mlp"
    evaluator: EvaluatorConfig = EvaluatorConfig(
        learning_rates=(1e-4, 1e-3, 1e-2, 1e-1), final_epochs=2, chunk_size=50, prune=True)
    promote_fraction: float = 0.1

    def __post_init__(self):
        if not isinstance(self.task, str):
            tasks_lib.check_task(self.task)
        elif self.task not in tasks_lib.TASKS and not user_code.is_spec(self.task):
            raise ValueError(f"unknown proxy task {self.task!r}; valid: "
                             f"{', '.join(tasks_lib.TASKS)}, 'module:attribute' or a task object")
        if not isinstance(self.evaluator, EvaluatorConfig):
            raise ValueError(f"Proxy.evaluator must be an EvaluatorConfig, got "
                             f"{self.evaluator!r}")
        if (not isinstance(self.promote_fraction, (int, float))
                or not 0 < self.promote_fraction <= 1):
            raise ValueError(f"Proxy.promote_fraction must be in (0, 1], got "
                             f"{self.promote_fraction!r}")


class Reference(NamedTuple):
    """A task's normalisation: floor (the failure reward) and adam (Adam's reward); floats, or
    arrays that broadcast against the rewards (e.g. one per seed)."""

    floor: float
    adam: float


def normalise(rewards, reference: Reference) -> np.ndarray:
    """(rewards - floor) / (adam - floor): 1 for Adam, 0 at the failure reward."""
    return (np.asarray(rewards, np.float64) - reference.floor) / (reference.adam
                                                                  - reference.floor)


def promote(proxy_scores: np.ndarray, eligible: np.ndarray, fraction: float) -> np.ndarray:
    """bool [N]: the best ceil(fraction x eligible.sum()) eligible members by proxy score
    (ties: the lower index first)."""
    count = math.ceil(fraction * int(np.sum(eligible)))
    order = np.argsort(-np.where(eligible, proxy_scores, -np.inf), kind="stable")
    chosen = np.zeros(len(proxy_scores), bool)
    chosen[order[:count]] = True
    return chosen


class BatchScores(NamedTuple):
    """Scores of N candidates over T suite tasks (NumPy, leading axis N).

    reward: what the search maximises (the suite score, the proxy score, 0 when pruned; the
      raw validation accuracy for a single task without a proxy).
    stage: str [N], one of `STAGES`: how far each candidate went.
    proxy_score: the normalised proxy score (0 when pruned; NaN without a proxy).
    task_scores: [N, T] the score on each suite task, the mean over the full stage's seeds
      (normalised; raw for a single task without a proxy); NaN where the full stage was not
      reached.
    learning_rates: [N, T] the rate each suite task's sweep chose, under the first seed
      (NaN: not reached, or diverged at every rate).
    diverged: failed at the last stage reached (under any of the full stage's seeds).
    pruned: degenerate, scored untrained.
    fingerprint: str [N].
    """

    reward: np.ndarray
    stage: np.ndarray
    proxy_score: np.ndarray
    task_scores: np.ndarray
    learning_rates: np.ndarray
    diverged: np.ndarray
    pruned: np.ndarray
    fingerprint: np.ndarray


def cache_name(stage: str, task_name: str, seed: int = 0) -> str:
    """The key of a (stage, task, seed) score cache in a search's cache dict."""
    return f"{stage}:{task_name}" + (f"@{seed}" if seed else "")


@dataclasses.dataclass(frozen=True, eq=False)
class Scoring:
    """A search's resolved stages: suite tasks (objects), the full protocol, the optional
    proxy (task object, protocol, fraction), the references ({cache name: Reference}, empty
    for a single task without a proxy), the evaluation key and the full stage's number of
    seeds."""

    tasks: tuple
    evaluator: EvaluatorConfig
    proxy_task: Any
    proxy: Proxy | None
    references: dict
    key: jax.Array
    seeds: int = 1

    @property
    def normalised(self) -> bool:
        return bool(self.references)

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(task.name for task in self.tasks)

    def proxy_key(self) -> jax.Array:
        return jax.random.fold_in(self.key, _PROXY_KEY)

    def full_key(self, seed: int) -> jax.Array:
        """The full stage's evaluation key of seed 0, ..., seeds - 1 (seed 0: the search's)."""
        if seed == 0:
            return self.key
        return jax.random.fold_in(jax.random.fold_in(self.key, _FULL_SEEDS_KEY), seed)


def prepare(suite, evaluator: EvaluatorConfig, proxy: Proxy | None, key: jax.Array,
            caches: dict, *, depth: int, data_dir: str | None = None, seeds: int = 1
            ) -> Scoring:
    """Resolves the suite's tasks and computes each stage's reference (Adam's reward, added
    to the caches; Adam encoded at `depth`, the search space's, so that it shares the
    search's compiled programs), one per full-stage seed; ValueError if Adam does not beat
    the floor on a task (no normalisation)."""
    suite_tasks = tuple(tasks_lib.get(task, data_dir=data_dir) for task in suite)
    proxy_task = tasks_lib.get(proxy.task, data_dir=data_dir) if proxy else None
    names = [task.name for task in suite_tasks]
    if len(set(names)) < len(names):
        raise ValueError(f"the suite's tasks need distinct names, got {names}")
    scoring = Scoring(suite_tasks, evaluator, proxy_task, proxy, {}, key, seeds)
    if len(suite_tasks) == 1 and proxy is None:
        return scoring
    stages = [(cache_name("full", task.name, seed), task, evaluator, scoring.full_key(seed))
              for task in suite_tasks for seed in range(seeds)]
    if proxy:
        stages.append((cache_name("proxy", proxy_task.name), proxy_task, proxy.evaluator,
                       scoring.proxy_key()))
    adam = rules_lib.encode([rules_lib.LIBRARY["adam"]], depth)
    for name, task, config, stage_key in stages:
        reward = float(evaluate(adam, task, config, stage_key,
                                cache=caches.setdefault(name, {})).reward[0])
        floor = failure_reward(task, config, stage_key)
        if not reward > floor:
            raise ValueError(f"Adam scores {reward:.4g}, not above the failure reward "
                             f"{floor:.4g}, on {task.name} (score cache {name}): its "
                             f"normalisation is undefined (change the protocol or the task)")
        scoring.references[name] = Reference(floor, reward)
    return scoring


def score(codes, scoring: Scoring, caches: dict, *, promote_all: bool = False) -> BatchScores:
    """Scores candidates codes int32 [N, 5·D] through the stages (module docstring);
    `promote_all` sends every non-pruned candidate to the full stage (for baselines)."""
    num = codes.shape[0]
    reached = np.ones(num, bool)
    proxy_score = np.full(num, np.nan)
    if scoring.proxy is not None:
        name = cache_name("proxy", scoring.proxy_task.name)
        cache = caches.setdefault(name, {})
        known = set(cache)
        proxy = evaluate(codes, scoring.proxy_task, scoring.proxy.evaluator,
                         scoring.proxy_key(), cache=cache)
        proxy_score = normalise(proxy.reward, scoring.references[name])
        first = {}
        for index, fingerprint in enumerate(proxy.fingerprint):
            first.setdefault(fingerprint, index)
        eligible = np.zeros(num, bool)
        for fingerprint, index in first.items():
            eligible[index] = fingerprint not in known and not proxy.diverged[index]
        eligible &= ~proxy.pruned & (proxy_score > 0)
        chosen = (~proxy.pruned if promote_all
                  else promote(proxy_score, eligible, scoring.proxy.promote_fraction))
        promoted = set(caches.get(cache_name("full", scoring.tasks[0].name), {}))
        promoted |= set(proxy.fingerprint[chosen])
        reached = np.isin(proxy.fingerprint, list(promoted))
    task_scores = np.full((num, len(scoring.tasks)), np.nan)
    rates = np.full((num, len(scoring.tasks)), np.nan)
    full_diverged = np.zeros(num, bool)
    promoted_codes = codes[np.flatnonzero(reached)]
    for column, task in enumerate(scoring.tasks):
        if not reached.any():
            break
        per_seed = []
        for seed in range(scoring.seeds):
            name = cache_name("full", task.name, seed)
            full = evaluate(promoted_codes, task, scoring.evaluator, scoring.full_key(seed),
                            cache=caches.setdefault(name, {}))
            per_seed.append(normalise(full.reward, scoring.references[name])
                            if scoring.normalised else full.reward)
            full_diverged[reached] |= full.diverged
            if seed == 0:
                rates[reached, column] = full.learning_rate
                if scoring.proxy is None and column == 0:  # every candidate is trained here
                    proxy = full
        task_scores[reached, column] = np.mean(per_seed, axis=0)
    full_score = np.mean(np.where(reached[:, None], task_scores, 0.0), axis=1)
    reward = np.where(reached, full_score, proxy_score)
    stage = np.where(proxy.pruned, "pruned", np.where(reached, "full", "proxy"))
    diverged = np.where(reached, full_diverged, proxy.diverged)
    return BatchScores(reward, stage, proxy_score, task_scores, rates, diverged,
                       proxy.pruned, proxy.fingerprint)
