"""The search loop: ask a strategy for rules, score them, tell it the rewards; resumable.

    config = SearchConfig.preset("smoke")
    result = run(config, jax.random.key(0), out="runs/smoke")
    result.top[0]["simplified"]                 # best rule found, simplified

Each iteration asks the strategy for its `batch_size` rules (`lopt.search.strategies`), scores
them on the task, or on a suite of tasks through a funnel (`lopt.search.suite`), with the
population evaluator (`lopt.search.evaluate`, one fixed evaluation key for the whole search so
that a rule's reward does not depend on when it was sampled, a fingerprint cache so that a rule
is trained once however often it is sampled, and degenerate rules pruned untrained), and tells
the strategy the rewards. The budget counts sampled rules (cache hits included, as in
the paper's Figure 4) and is rounded up to whole iterations. Each iteration's progress line
gives the cache-hit and pruning rates so far (`sampling_summary`).

Files in `out`:
  config.json     the run's identity (`run_identity`: every setting, the key's data and a
                  fingerprint of the task's data), written when it starts
  results.jsonl   one JSON object per sampled rule: rule (as sampled), simplified
                  (`lopt.rules.simplify`: the same update, for reports), fingerprint, score
                  (the reward), learning_rate (chosen on the first suite task), diverged,
                  pruned (degenerate: scored untrained), cache_hit (its fingerprint was scored
                  before: earlier, earlier in its batch, or Adam's for the normalisation),
                  iteration (appended as each iteration finishes), stage (how far it went:
                  "pruned", "proxy" or "full"), proxy_score, task_scores and learning_rates
                  ({suite task name: value}; see `lopt.search.suite.BatchScores`); null for
                  a value not computed
  checkpoint.npz  every `checkpoint_every` iterations (`lopt.checkpoint`: atomic, no pickle):
                  the next iteration, the driver's PRNG key, the strategy state (controller
                  parameters and optimiser state for PPO) and the score caches

`run(..., resume=True)` continues from the checkpoint: the iterations after it are recomputed
(deterministically: same key, same cache) and their rows, already in results.jsonl, are not
written again, so the file ends exactly as an uninterrupted run's would. An incomplete last
iteration of rows (a run killed while writing) is cut off and rewritten.

With several processes (`lopt.distributed`) every process runs this loop with the same keys,
the evaluator splits each chunk of members over all processes' devices and gathers the scores
onto every process, and only process 0 checks and writes `out`; a resume reads process 0's
files.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from lopt import checkpoint, distributed, progress, user_code
from lopt import rules as rules_lib
from lopt.search import strategies, suite, tasks
from lopt.search.evaluator import EvaluatorConfig
from lopt.search.ppo import PPOConfig
from lopt.search.space import SearchSpace

BASELINES = ("sgd", "momentum", "adam", "rmsprop")
RESULTS, CHECKPOINT, CONFIG = "results.jsonl", "checkpoint.npz", "config.json"


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Everything that determines a search's results.

    strategy: a strategy of `lopt.search.strategies` (`PPOSearch`, `Evolution`, `RandomSearch`)
      with its settings: the `SearchSpace` it searches (depth, vocabulary subsets, constraint
      switches) and `batch_size`, the rules per iteration, are its fields; `space` and
      `batch_size` here read them.
    task: a name of `lopt.search.tasks.TASKS`, "module:attribute" naming your own, or a task
      object (the protocol of `lopt.search.tasks`); or a tuple of them, a suite: rewards are
      then Adam-normalised suite scores (`lopt.search.suite`; a suite of one without a proxy
      keeps raw scores); data_dir for the `tasks.CIFAR10_TASKS`.
    proxy: None, or the funnel's first stage (`lopt.search.suite.Proxy`): every new rule is
      scored on the proxy and only the best fraction goes on to `task` with `evaluator`.
    budget: number of sampled rules (rounded up to whole batches).
    evaluator: the full scoring protocol (its chunk padding keeps a search to one compiled
      program; degenerate rules pruned untrained, except in the paper preset).
    full_seeds: evaluation keys the full stage scores each rule under (their mean is its
      score; `lopt.search.suite`); each costs a full-stage training.
    checkpoint_every: iterations between checkpoints.
    top_k: distinct rules in `SearchResult.top`.
    """

    strategy: strategies.Strategy = strategies.PPOSearch()
    task: Any = "digits_mlp"
    proxy: suite.Proxy | None = None
    data_dir: str | None = None
    budget: int = 2000
    evaluator: EvaluatorConfig = EvaluatorConfig(chunk_size=50, prune=True)
    full_seeds: int = 1
    checkpoint_every: int = 5
    top_k: int = 10

    def __post_init__(self):
        if not isinstance(self.strategy, strategies.Strategy):
            raise ValueError("SearchConfig.strategy must be a lopt.search.strategies.Strategy "
                             "(PPOSearch, Evolution, RandomSearch or your own subclass), got "
                             f"{self.strategy!r}")
        if isinstance(self.task, list):
            object.__setattr__(self, "task", tuple(self.task))  # hashable
        if self.task == ():
            raise ValueError("SearchConfig.task: a suite needs at least one task")
        for task in self.suite:
            if not isinstance(task, str):
                tasks.check_task(task)
            elif task not in tasks.TASKS and not user_code.is_spec(task):
                raise ValueError(f"unknown task {task!r}; valid: {', '.join(tasks.TASKS)}, "
                                 "'module:attribute' or a task object")
        names = [task for task in self.suite if isinstance(task, str)]
        if len(set(names)) < len(names):
            raise ValueError(f"SearchConfig.task: a suite's tasks must be distinct, got {names}")
        if self.proxy is not None and not isinstance(self.proxy, suite.Proxy):
            raise ValueError(f"SearchConfig.proxy must be None or a lopt.search.suite.Proxy, "
                             f"got {self.proxy!r}")
        for name in ("budget", "full_seeds", "checkpoint_every", "top_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"SearchConfig.{name} must be a positive integer, got {value!r}")

    @property
    def space(self) -> SearchSpace:
        return self.strategy.space

    @property
    def batch_size(self) -> int:
        return self.strategy.batch_size

    @property
    def suite(self) -> tuple:
        """The suite's tasks (names or objects); one task is a suite of one."""
        return self.task if isinstance(self.task, tuple) else (self.task,)

    @property
    def task_name(self) -> str:
        """The task's name, or the suite's names joined by "+" (for reports)."""
        return "+".join(task if isinstance(task, str) else task.name for task in self.suite)

    @property
    def num_iterations(self) -> int:
        return math.ceil(self.budget / self.batch_size)

    @classmethod
    def preset(cls, name: str, **overrides) -> SearchConfig:
        """A named preset (see PRESETS) with fields replaced by `overrides`."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)


# 1e-4 to 1e-1, half a decade apart (rounded: 3e-4, 3e-3, 3e-2 between the decades).
HALF_DECADE_LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
# The controller's learning rate: the paper's 1e-5 (with TRPO and ~10^4 samples) barely moves
# the controller within the few thousand samples of a CPU budget. With normalised advantages,
# 1e-3 collapses onto adam-like rules within ~500 samples on digits_mlp (fewer than 500 distinct
# rules in 3000 samples); 2e-4 learns by ~2000 samples and keeps exploring longer
# (benchmarks/search.py compares PPO with random search at equal budgets).
_CPU_PPO = PPOConfig(learning_rate=2e-4, normalize_advantages=True)
# A 2-core CPU, a suite of three children and a funnel (lopt.search.suite): every new rule
# is scored on a short digits-MLP proxy (3 rates, 1 + 2 epochs), the best 4% of each
# batch's (about 7 of 200) on the digits MLP, the digits ConvNet and the character LSTM
# with a sweep of 7 rates half a decade apart (a decade apart, a rule that is Adam times a
# constant would win by sitting between Adam's grid points); regularized evolution
# warm-started from adam, powersign and addsign.
_CPU_SUITE = SearchConfig(
    strategy=strategies.Evolution(space=SearchSpace(depth=2), batch_size=200,
                                  population_size=400),
    task=("digits_mlp", "digits_convnet", "stdlib_lstm_lm"),
    proxy=suite.Proxy(
        task="digits_mlp",
        evaluator=EvaluatorConfig(learning_rates=(1e-3, 1e-2, 1e-1), final_epochs=2,
                                  chunk_size=200, prune=True),
        promote_fraction=0.04),
    budget=20000, checkpoint_every=5,
    evaluator=EvaluatorConfig(learning_rates=HALF_DECADE_LEARNING_RATES, chunk_size=4,
                              prune=True))

PRESETS = {
    # Seconds: a quadratic child, 40 rules; for tests and trying the pipeline.
    "smoke": SearchConfig(
        strategy=strategies.PPOSearch(batch_size=10, ppo=_CPU_PPO), task="quadratic", budget=40,
        checkpoint_every=1, top_k=5,
        evaluator=EvaluatorConfig(learning_rates=(1e-3, 1e-2, 1e-1), steps_per_epoch=20,
                                  final_epochs=1, chunk_size=10, prune=True)),
    # A 2-core CPU: digits MLP with the paper's sweep (7 rates, 1 epoch each, 5 final epochs).
    "cpu": SearchConfig(
        strategy=strategies.PPOSearch(space=SearchSpace(depth=2), batch_size=50, ppo=_CPU_PPO),
        task="digits_mlp", budget=2000),
    "cpu_suite": _CPU_SUITE,
    # As cpu_suite, for rules of depth 3 and a full stage less prone to the winner's curse:
    # the population opens with adam, powersign, addsign and the rest of the paper's Table 1,
    # mutations that make a node live redraw it, and the best 2% of each batch's (about 3 of
    # 200) are scored under three evaluation keys, one rule per compiled call (no padding: the
    # character LSTM is most of the cost).
    "cpu_suite_depth3": dataclasses.replace(
        _CPU_SUITE,
        strategy=strategies.Evolution(
            space=SearchSpace(depth=3), batch_size=200, population_size=400,
            warm_start=("adam", "powersign", "addsign") + tuple(
                name for name in rules_lib.TABLE_1 if name != "powersign"),
            redraw_activated=True),
        proxy=dataclasses.replace(_CPU_SUITE.proxy, promote_fraction=0.02), full_seeds=3,
        evaluator=dataclasses.replace(_CPU_SUITE.evaluator, chunk_size=1)),
    # Section 4: CIFAR-10 ConvNet child, depth-3 rules, the paper's controller optimiser.
    "paper": SearchConfig(
        strategy=strategies.PPOSearch(space=SearchSpace(depth=3), batch_size=100),
        task="cifar10_convnet", budget=10000,
        evaluator=EvaluatorConfig(chunk_size=100)),  # every candidate trained, as in the paper
}


def run_identity(config: SearchConfig, key: jax.Array) -> dict[str, Any]:
    """The identity of a search (`lopt.checkpoint.identity`): the config's fields, each task's
    (`tasks.identity`: name, class, model, parameter shapes; the proxy's too), the key and a
    fingerprint of the tasks' data; `resume` refuses a directory of any other."""
    described = [tasks.identity(tasks.get(task, data_dir=config.data_dir))
                 for task in config.suite]
    settings = {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}
    if isinstance(config.task, tuple):
        settings["task"] = [fields for fields, _ in described]
        data = [task_data for _, task_data in described]
    else:
        (settings["task"], data), = described
    if config.full_seeds == 1:
        del settings["full_seeds"]  # so that runs from before the field keep their identities
    if config.proxy is None:
        del settings["proxy"]  # so that single-task runs keep their identities
    else:
        proxy_fields, proxy_data = tasks.identity(tasks.get(config.proxy.task,
                                                            data_dir=config.data_dir))
        settings["proxy"] = {"task": proxy_fields, "evaluator": config.proxy.evaluator,
                             "promote_fraction": config.proxy.promote_fraction}
        data = [data, proxy_data]
    return checkpoint.identity(settings, key, data=data)


class SearchResult(NamedTuple):
    """top: the best distinct rules (result rows, best first); baselines: {name: row} for
    sgd/momentum/adam/rmsprop; rows: every result row in sampling order; seconds: wall time of
    this call (start-up and compilation included); evaluator_seconds: the part of it spent
    scoring; run_seconds, run_evaluator_seconds: the same for the whole run up to its last
    iteration, over every call that resumed it (a killed call counts up to its last
    checkpoint; NaN if a checkpoint did not record them); iteration_seconds: [num iterations
    run, 2] wall and evaluator seconds of each
    iteration of this call."""

    top: list[dict]
    baselines: dict[str, dict]
    rows: list[dict]
    seconds: float
    evaluator_seconds: float
    run_seconds: float
    run_evaluator_seconds: float
    iteration_seconds: np.ndarray


def check_output(out: str, identity: dict[str, Any], resume: bool) -> None:
    """Raises ValueError for an unwritable directory, an existing run without `resume`, or a
    directory of a different run than `identity` (`run_identity`), naming the differing
    fields. With several processes, process 0 checks and every process raises."""
    distributed.from_writer(lambda: _check_output(out, identity, resume) or b"")


def _check_output(out: str, identity: dict[str, Any], resume: bool) -> None:
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot create output directory {out!r}: {error}") from error
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"output directory {out!r} is not writable")
    if not resume:
        if os.path.exists(os.path.join(out, RESULTS)):
            raise ValueError(f"{out!r} already holds a search; resume it or use a new directory")
        return
    if os.path.exists(os.path.join(out, CONFIG)):
        with open(os.path.join(out, CONFIG)) as file:
            saved = json.load(file)
        checkpoint.check_identity(saved, identity, f"the search in {out!r}")


def _restore_rows(path: str, batch_size: int) -> list[dict]:
    """Rows of complete iterations in results.jsonl; process 0 cuts off anything after them."""
    lines = distributed.writer_file(path).split(b"\n")
    rows = [json.loads(line) for line in lines[:-1]]  # the part after the last newline is partial
    counts: dict[int, int] = {}
    for row in rows:
        counts[row["iteration"]] = counts.get(row["iteration"], 0) + 1
    complete = [row for row in rows if counts[row["iteration"]] == batch_size]
    if distributed.is_writer() and os.path.exists(path):
        with open(path, "w") as file:
            file.writelines(json.dumps(row) + "\n" for row in complete)
    return complete


def _checkpoint_tree(state, key: jax.Array) -> dict:
    return {"strategy_state": state, "key": key}


def _append(path: str, rows: list[dict]) -> None:
    """Appends rows to a JSON-lines file in one write, flushed to disk."""
    with open(path, "a") as file:
        file.write("".join(json.dumps(row) + "\n" for row in rows))
        file.flush()
        os.fsync(file.fileno())


def _rows(rules: list[rules_lib.Rule], scores: suite.BatchScores, task_names: tuple[str, ...],
          known: set[str], iteration: int) -> list[dict]:
    """Result rows of one batch; `known`: the fingerprints scored before it. None stands for
    NaN: a learning rate of a candidate that diverged at every rate of the sweep, was pruned
    or did not reach the full stage, a score not computed."""
    number = lambda value: None if np.isnan(value) else float(value)
    rows = []
    for index, (rule, fingerprint) in enumerate(zip(rules, map(str, scores.fingerprint),
                                                    strict=True)):
        rows.append({
            "rule": str(rule), "simplified": str(rules_lib.simplify(rule)),
            "fingerprint": fingerprint, "score": float(scores.reward[index]),
            "learning_rate": number(scores.learning_rates[index, 0]),
            "diverged": bool(scores.diverged[index]), "pruned": bool(scores.pruned[index]),
            "cache_hit": fingerprint in known, "iteration": iteration,
            "stage": str(scores.stage[index]),
            "proxy_score": number(scores.proxy_score[index]),
            "task_scores": dict(zip(task_names, map(number, scores.task_scores[index]),
                                    strict=True)),
            "learning_rates": dict(zip(task_names, map(number, scores.learning_rates[index]),
                                       strict=True))})
        known = known | {fingerprint}
    return rows


def sampling_summary(rows: list[dict]) -> dict[str, int]:
    """{"sampled", "cache_hits", "pruned", "trained", "promoted"} counts of result rows;
    trained rules are the new fingerprints that were not pruned, promoted ones the new
    fingerprints that reached the full stage (all trained ones without a proxy)."""
    new = [row for row in rows if not row["cache_hit"]]
    return {"sampled": len(rows), "cache_hits": len(rows) - len(new),
            "pruned": sum(row["pruned"] for row in rows),
            "trained": sum(not row["pruned"] for row in new),
            "promoted": sum(row["stage"] == "full" for row in new)}


def iteration_stage(iteration: int, num_iterations: int) -> str:
    """The progress-stage label (`lopt.progress`) of scoring iteration `iteration`'s rules."""
    return f"search iteration {iteration + 1}/{num_iterations}: scoring"


def plan(config) -> dict[str, float]:
    """{progress-stage label: share} of `run`: every iteration's scoring alike."""
    return {iteration_stage(i, config.num_iterations): 1.0 for i in range(config.num_iterations)}


def run(config: SearchConfig, key: jax.Array, *, out: str | None = None,
        resume: bool = False, max_iterations: int | None = None) -> SearchResult:
    """Runs (or with `resume`, continues) a search; writes the files of the module docstring
    into `out` when given (checkpoints and resume need `out`).

    Args:
      config: the search's settings (`SearchConfig.preset(name)` for the presets).
      key: PRNG key; with the config it determines every result.
      out: output directory (created if missing).
      resume: continue from `out`'s checkpoint (a fresh start if there is none).
      max_iterations: stop after this many iterations of this call, as if killed there (no
        extra checkpoint, no baselines); a later `resume` finishes the run.

    Returns:
      SearchResult.

    Raises:
      ValueError: bad output directory, or a resume directory of a different config.
    """
    if resume and out is None:
        raise ValueError("resume needs an output directory")
    identity = None  # only runs with files have an identity to check and record
    writes = out is not None and distributed.is_writer()
    if out is not None:
        identity = run_identity(config, key)
        check_output(out, identity, resume)
    if writes:
        checkpoint.write_atomically(os.path.join(out, CONFIG),
                                    json.dumps(identity, indent=1).encode())
    start_time = time.time()
    strategy, space = config.strategy, config.space
    init_key, eval_key, key = jax.random.split(key, 3)
    state, caches, first_iteration = strategy.init(init_key), {}, 0
    earlier_seconds = [0.0, 0.0]  # [wall, evaluator] of the calls before this one
    results_path = os.path.join(out, RESULTS) if out else None
    checkpoint_path = os.path.join(out, CHECKPOINT) if out else None
    rows = _restore_rows(results_path, config.batch_size) if resume else []
    saved_checkpoint = distributed.writer_file(checkpoint_path) if resume else b""
    if saved_checkpoint:
        saved, metadata = checkpoint.load(checkpoint_path, _checkpoint_tree(state, key),
                                          identity=identity, contents=saved_checkpoint)
        state = jax.tree.map(jnp.asarray, saved["strategy_state"])
        if "caches" not in metadata:
            raise ValueError(f"the checkpoint in {out!r} was written by an older lopt (one "
                             "score cache, not one per stage and task); start a new run")
        key, caches = saved["key"], metadata["caches"]
        first_iteration = metadata["next_iteration"]
        earlier_seconds = metadata.get("seconds", [math.nan, math.nan])
        logging.info("Resuming at iteration %d of %d", first_iteration, config.num_iterations)
    written = len(rows) // config.batch_size
    with progress.stage("search: scoring adam on every stage's task (normalisation)"):
        scoring = suite.prepare(config.suite, config.evaluator, config.proxy, eval_key, caches,
                                depth=space.depth, data_dir=config.data_dir,
                                seeds=config.full_seeds)

    timings = []
    last_iteration = config.num_iterations
    if max_iterations is not None:
        last_iteration = min(last_iteration, first_iteration + max_iterations)
    for iteration in range(first_iteration, last_iteration):
        iteration_start = time.time()
        key, ask_key = jax.random.split(key)
        tokens = strategy.ask(ask_key, state)
        codes = space.full_codes(tokens)
        evaluate_start = time.time()
        known = _seen(caches, scoring)
        with progress.stage(iteration_stage(iteration, config.num_iterations)):
            scores = suite.score(codes, scoring, caches)
        evaluate_seconds = time.time() - evaluate_start
        state = strategy.tell(state, tokens, jnp.asarray(scores.reward, jnp.float32))
        if iteration >= written:
            sampled = [space.to_rule(row) for row in np.asarray(tokens)]
            new_rows = _rows(sampled, scores, scoring.task_names, known, iteration)
            rows.extend(new_rows)
            if writes:
                _append(results_path, new_rows)
        done = iteration + 1
        timings.append((time.time() - iteration_start, evaluate_seconds))
        run_seconds = [earlier_seconds[0] + time.time() - start_time,
                       earlier_seconds[1] + sum(seconds for _, seconds in timings)]
        if writes and (done % config.checkpoint_every == 0 or done == config.num_iterations):
            checkpoint.save(checkpoint_path, _checkpoint_tree(state, key), identity=identity,
                            metadata={"next_iteration": done, "caches": caches,
                                      "seconds": run_seconds})
        elapsed = time.time() - start_time
        rate = (done - first_iteration) * config.batch_size / elapsed
        remaining = (config.num_iterations - done) * config.batch_size / max(rate, 1e-9)
        summary = sampling_summary(rows)
        logging.info("iteration %d/%d: mean reward %.4f, best so far %.4f, %.2f rules/s, "
                     "ETA %.0fs; so far %.0f%% cache hits, %.0f%% pruned, %d promoted; this "
                     "iteration %.1fs, %.0f%% of it outside the evaluator",
                     done, config.num_iterations, float(np.mean(scores.reward)),
                     _best_score(rows), rate, remaining,
                     100 * summary["cache_hits"] / summary["sampled"],
                     100 * summary["pruned"] / summary["sampled"], summary["promoted"],
                     timings[-1][0], 100 * (1 - evaluate_seconds / timings[-1][0]))

    top = top_rules(rows, config.top_k)
    if not timings:
        run_seconds = earlier_seconds
    timings = np.array(timings).reshape(-1, 2)
    baselines = ({} if last_iteration < config.num_iterations
                 else _score_baselines(config, scoring, caches))
    return SearchResult(top, baselines, rows, time.time() - start_time, timings[:, 1].sum(),
                        *run_seconds, timings)


def _seen(caches: dict, scoring: suite.Scoring) -> set[str]:
    """The fingerprints scored so far: those in the first stage's cache."""
    stage, task = (("proxy", scoring.proxy_task) if scoring.proxy
                   else ("full", scoring.tasks[0]))
    return set(caches.get(suite.cache_name(stage, task.name), {}))


def _best_score(rows: list[dict]) -> float:
    """The best score of a row that reached the full stage (NaN if none has yet)."""
    return max((row["score"] for row in rows if row["stage"] == "full"), default=math.nan)


def _score_baselines(config: SearchConfig, scoring: suite.Scoring, caches: dict
                     ) -> dict[str, dict]:
    """sgd, momentum, adam, rmsprop under the search's full protocol (same keys and caches)."""
    named = [rules_lib.LIBRARY[name] for name in BASELINES]
    codes = rules_lib.encode(named, config.space.depth)
    known = _seen(caches, scoring)
    scores = suite.score(codes, scoring, caches, promote_all=True)
    rows = _rows(named, scores, scoring.task_names, known, -1)
    return dict(zip(BASELINES, rows, strict=True))


def top_rules(rows: list[dict], top_k: int) -> list[dict]:
    """The `top_k` best rows that reached the full stage, with distinct fingerprints (first
    sample of each), best first."""
    distinct = {}
    for row in rows:
        if row["stage"] == "full":
            distinct.setdefault(row["fingerprint"], row)
    return sorted(distinct.values(), key=lambda row: -row["score"])[:top_k]
