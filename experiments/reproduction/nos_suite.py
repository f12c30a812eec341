"""A rule search over a suite of children through a funnel (`lopt.search.suite`), its best
rules re-scored against tuned baselines on fresh seeds, on the suite and on held-out children
the search never saw, and shipped as `lopt.rules.DISCOVERED`.

Scores are Adam-normalised per seed and task, (reward - failure reward) / (Adam's reward -
failure reward) with every rule's learning rate chosen by the same sweep as Adam's, so Adam
scores 1 on every seed; a rule beats Adam on a task when its mean difference from 1 exceeds
two standard errors (over the fresh seeds) of that difference. Two stages, so the verdict is
not a winner's curse: the search's best distinct rules (not the rules it was given: baselines
and warm starts) are re-scored on selection seeds and ranked by their worst suite task (the
mean over the selection seeds of each task's score, then the least over tasks), so that a
rule chosen beats Adam on every child rather than on average; the best `REPORTED_RULES` of
them are scored on fresh seeds (from `FRESH_SEEDS_FROM`) that no choice has seen. The verdict on
the held-out children compares the first of them with Adam alone on more seeds (from
`VERDICT_SEEDS_FROM`), since a held-out child's per-seed spread can be many times the margin.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import jax
import numpy as np

from experiments.reproduction import nos
from experiments.reproduction.report import Report
from lopt import data, plotting, rules
from lopt.search import driver, evaluator, fingerprint, strategies, suite, tasks

REPORTED_RULES = 3
# Seeds 1000-1009 scored an earlier comparison whose results shaped how rules are now chosen
# (the worst-task ranking; docs/decisions.md, 2026-12-05), so the verdict's seeds start here.
FRESH_SEEDS_FROM = 3000
# The held-out verdict's seeds (docs/decisions.md, 2026-12-05, session 25): new ones again.
VERDICT_SEEDS_FROM = 4000
DISCOVERED_FILE = "discovered.json"
# The robustness check's sweep: quarter decades from 1e-3 to 1e-1, so that a rule that is
# Adam times a constant cannot win by sitting between the search sweep's grid points.
QUARTER_DECADE_LEARNING_RATES = tuple(float(10.0 ** (k / 4)) for k in range(-12, -3))


@dataclasses.dataclass(frozen=True)
class Scale:
    """search: the search's config; candidates: the search's best distinct rules re-scored on
    `selection_seeds`; fresh_seeds: seeds of the final comparison; held_out: names of
    `held_out_child`; verdict_seeds: seeds of the held-out verdict (the first rule against
    Adam alone); compare_budget, compare_seeds: the equal budget and the number of seeds
    of the evolution / PPO / random comparison (each a search like `search` but for its
    strategy and budget)."""

    search: driver.SearchConfig
    candidates: int
    selection_seeds: int
    fresh_seeds: int
    held_out: tuple[str, ...]
    verdict_seeds: int
    compare_budget: int
    compare_seeds: int


_SMOKE_SEARCH = driver.SearchConfig.preset(
    "smoke", task=("quadratic", "rosenbrock"), budget=40,
    strategy=strategies.Evolution(space=driver.PRESETS["smoke"].space, batch_size=10,
                                  population_size=20),
    proxy=suite.Proxy(task="quadratic", promote_fraction=0.3,
                      evaluator=driver.PRESETS["smoke"].evaluator))
SCALES = {
    "smoke": Scale(_SMOKE_SEARCH, 4, 1, 2, ("quadratic_20",), 3, 20, 1),
    "cpu": Scale(driver.PRESETS["cpu_suite_depth3"], 10, 5, 20,
                 ("digits_mlp_3x128", "digits_convnet_3x32", "stdlib_lstm_lm_2x96"), 60, 1000, 3),
}
SCALES["paper"] = SCALES["cpu"]


@functools.cache  # one object per child, so compiled programs are shared
def held_out_child(name: str):
    """Children no search of this experiment scores: a deeper and wider sibling of each `cpu`
    suite child (an MLP and a ConvNet on the digits, a two-layer character LSTM on the
    standard-library text), and (smoke) another quadratic."""
    if name == "digits_mlp_3x128":
        return tasks.SupervisedTask(name, tasks.MLP((128, 128, 128), 10), data.load_digits())
    if name == "digits_convnet_3x32":
        return tasks.SupervisedTask(name, tasks.ConvNet((32, 32, 32), 10), data.load_digits())
    if name == "stdlib_lstm_lm_2x96":
        text = tasks.stdlib_lstm_lm().dataset  # the suite child's text, vocabulary and split
        return tasks.SupervisedTask(name, tasks.LSTMLanguageModel(text.num_classes, 16, (96, 96)),
                                    text)
    if name == "quadratic_20":
        return tasks.quadratic(dim=20, seed=1)
    raise ValueError(f"unknown held-out child {name!r}")


def normalised_over_seeds(named: dict[str, rules.Rule], task, config, seeds,
                          cache_dir: str | None = None) -> np.ndarray:
    """[num_seeds, num_rules] Adam-normalised scores ("adam" must be in `named`); cache_dir as
    in `nos.score_over_seeds`."""
    raw = nos.score_over_seeds(named, task, config, seeds, cache_dir)["reward"]
    return normalise_rewards(raw, named, task, config, seeds)


def normalise_rewards(raw: np.ndarray, named: dict[str, rules.Rule], task, config, seeds
                      ) -> np.ndarray:
    """`raw` rewards [num_seeds, num_rules] of `named` on `task` (`nos.score_over_seeds`),
    Adam-normalised per seed."""
    floors = np.array([[evaluator.failure_reward(task, config, jax.random.key(seed))]
                       for seed in seeds])
    adam = raw[:, list(named).index("adam")][:, None]
    if np.any(adam <= floors):
        raise ValueError(f"Adam does not beat the failure reward on {task.name} for every seed "
                         f"of {list(seeds)}: no normalisation")
    return suite.normalise(raw, suite.Reference(floors, adam))  # per seed: rows broadcast


def _difference(scores: np.ndarray) -> tuple[float, float]:
    """Mean and standard error over seeds of (normalised score - 1), the margin over Adam."""
    margin = scores - 1.0
    return float(margin.mean()), float(margin.std(ddof=1) / np.sqrt(len(margin)))


def beats_adam(scores: np.ndarray) -> bool:
    """Whether normalised scores [num_seeds] exceed Adam's 1 by more than two standard errors
    of the difference."""
    mean, error = _difference(scores)
    return mean > 2 * error


def _cell(scores: np.ndarray) -> str:
    mean, error = _difference(scores)
    return f"{1 + mean:.4f} ± {error:.4f}"


def compare_strategies(settings: nos.Settings, scale: Scale, directory: str
                       ) -> tuple[str, str]:
    """Evolution, PPO and random search at an equal budget over seeds, on the search's suite
    and funnel; writes the progress figure and returns (markdown table, a sentence naming the
    winner). A strategy's score at a point is the best suite score (full stage, the search's
    own evaluation key) reached so far: a measure of the search, not of the rule's worth on
    fresh seeds."""
    base = scale.search
    ppo = driver.PRESETS["cpu"].strategy.ppo  # the CPU controller settings (see its preset)
    compared = {
        "evolution": base.strategy,
        "ppo": strategies.PPOSearch(space=base.space, batch_size=base.batch_size, ppo=ppo),
        "random": strategies.RandomSearch(space=base.space, batch_size=base.batch_size)}
    best_so_far = {}
    for name, strategy in compared.items():
        config = dataclasses.replace(base, strategy=strategy, budget=scale.compare_budget)
        curves = []
        for offset in range(scale.compare_seeds):
            result = nos.run_or_resume(config, settings.seed + 100 + offset, os.path.join(
                directory, "compare", f"{name}_seed{offset}"))
            scores = [row["score"] if row["stage"] == "full" else -np.inf
                      for row in result.rows]
            curves.append(np.maximum.accumulate(scores))
        best_so_far[name] = np.where(np.isinf(curves), np.nan, curves)
    plotting.plot_search_progress(
        best_so_far, os.path.join(directory, "strategies.png"),
        f"best suite score vs rules sampled ({scale.compare_seeds} seeds each)")
    points = [scale.compare_budget // 4, scale.compare_budget // 2, scale.compare_budget]
    lines = ["| strategy | " + " | ".join(f"best after {n} rules" for n in points) + " |",
             "|---" * (len(points) + 1) + "|"]

    def cell(values):  # a seed without a full-stage rule yet counts as no score (-)
        values = values[~np.isnan(values)]
        return f"{values.mean():.4f} ± {values.std():.4f}" if len(values) else "-"

    for name, curves in best_so_far.items():
        lines.append(f"| {name} | " + " | ".join(cell(curves[:, n - 1]) for n in points) + " |")
    final = {name: np.nan_to_num(curves[:, -1], nan=-np.inf).mean()
             for name, curves in best_so_far.items()}
    ranked = sorted(final, key=final.get, reverse=True)
    if np.isneginf(final[ranked[0]]):
        return "\n".join(lines) + "\n", "no strategy promoted a rule to the suite"
    spread = {name: np.nanstd(best_so_far[name][:, -1]) for name in ranked[:2]}
    summary = (f"{ranked[0]} reaches the best final suite score ({final[ranked[0]]:.4f} ± "
               f"{spread[ranked[0]]:.4f}, next {ranked[1]} {final[ranked[1]]:.4f} ± "
               f"{spread[ranked[1]]:.4f})")
    return "\n".join(lines) + "\n", summary


def new_rules(rows: list[dict], given: list[rules.Rule], count: int) -> list[dict]:
    """The best `count` distinct rules that reached the full stage (`driver.top_rules` of a
    search's result rows), leaving out any that computes the same update as a rule in `given`
    (the baselines and warm starts: rules the search was handed, not found)."""
    known = set(fingerprint.fingerprint_rules(given)) if given else set()
    return [row for row in driver.top_rules(rows, len(rows))
            if row["fingerprint"] not in known][:count]


def worst_task(scores: np.ndarray) -> np.ndarray:
    """Selection scores [num_rules] from normalised scores [num_seeds, num_rules, num_tasks]:
    each task's mean over seeds, then the least over tasks."""
    return scores.mean(axis=0).min(axis=-1)


def search(settings: nos.Settings, which: str, command: str) -> Report:
    """Runs (resumes) the suite search, re-scores and reports its rules, and with
    `settings.export_dir` writes `discovered.json` there."""
    scale = SCALES[settings.scale]
    config = scale.search
    directory = os.path.join(settings.out, which)
    result = nos.run_or_resume(config, settings.seed, os.path.join(directory, "search"))
    plotting.plot_reward_curve([row["score"] for row in result.rows],
                               os.path.join(directory, "reward_curve.png"),
                               f"{config.strategy.name} on {config.task_name} (funnel)")
    suite_tasks = {task: tasks.get(task, data_dir=settings.data_dir) for task in config.suite}
    # The search's protocol at its rule depth: the re-scoring reuses its compiled programs.
    protocol = dataclasses.replace(config.evaluator, depth=config.space.depth)
    cache_dir = os.path.join(directory, "scores_cache")

    def suite_scores(named, seeds, config=protocol):
        """[num_seeds, num_rules, num_suite_tasks] normalised scores under `config`."""
        return np.stack([normalised_over_seeds(named, task, config, seeds, cache_dir)
                         for task in suite_tasks.values()], axis=-1)

    baselines = {name: rules.LIBRARY[name] for name in nos.BASELINE_RULES}
    given = (list(baselines.values())
             + list(getattr(config.strategy, "warm_start_rules", ())))  # evolution's only
    found_rows = new_rules(result.rows, given, scale.candidates)
    candidates = {row["simplified"]: rules.parse(row["simplified"]) for row in found_rows}
    selection_seeds = [settings.seed + 2000 + k for k in range(scale.selection_seeds)]
    selection = worst_task(suite_scores(candidates | {"adam": baselines["adam"]},
                                        selection_seeds)[:, :len(candidates)])
    order = np.argsort(-selection, kind="stable")[:REPORTED_RULES]
    chosen = {list(candidates)[i]: list(candidates.values())[i] for i in order}
    named = chosen | baselines
    names = list(named)
    fresh_seeds = [settings.seed + FRESH_SEEDS_FROM + k for k in range(scale.fresh_seeds)]
    verdict_seeds = [settings.seed + VERDICT_SEEDS_FROM + k for k in range(scale.verdict_seeds)]
    per_task = suite_scores(named, fresh_seeds)                        # [S, R, T]
    aggregate = per_task.mean(axis=-1)                                 # [S, R]
    held_out = {name: normalised_over_seeds(named, held_out_child(name), protocol,
                                            fresh_seeds, cache_dir) for name in scale.held_out}
    search_scores = {row["simplified"]: row["score"] for row in found_rows}
    search_scores.update({name: result.baselines[name]["score"] for name in baselines})
    selection_scores = dict(zip(candidates, selection, strict=True))

    header = (["rule", "search score", f"selection: worst task ({len(selection_seeds)} seeds)",
               f"suite ({len(fresh_seeds)} fresh seeds)"] + list(suite_tasks)
              + [f"{name} (held out)" for name in held_out])
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for i, name in enumerate(names):
        label = name if name in baselines else f"`{name}`"
        selected = f"{selection_scores[name]:.4f}" if name in selection_scores else "-"
        cells = ([_cell(aggregate[:, i])] + [_cell(per_task[:, i, t])
                                             for t in range(len(suite_tasks))]
                 + [_cell(scores[:, i]) for scores in held_out.values()])
        lines.append(f"| {label} | {search_scores[name]:.4f} | {selected} | "
                     + " | ".join(cells) + " |")

    summary = driver.sampling_summary(result.rows)
    timing = ""
    if np.isfinite(result.run_seconds):
        outside = 1 - result.run_evaluator_seconds / result.run_seconds
        timing = (f" in {result.run_seconds / 60:.0f} min, {100 * outside:.0f}% of it outside "
                  "the evaluator")
    found = names[0] if chosen else None
    verdict_scores = {}  # held-out child -> the first rule's scores [num_verdict_seeds]
    if found is None:
        verdict = "The search found no rule that reached the full stage."
    else:
        mean, error = _difference(aggregate[:, 0])
        pair = {found: named[found], "adam": named["adam"]}
        verdict_scores = {name: normalised_over_seeds(pair, held_out_child(name), protocol,
                                                      verdict_seeds, cache_dir)[:, 0]
                          for name in scale.held_out}
        beaten = [name for name, scores in verdict_scores.items() if beats_adam(scores)]
        met = beats_adam(aggregate[:, 0]) and len(beaten) >= min(2, len(held_out))
        verdict = (f"{config.strategy.name.capitalize()} sampled {summary['sampled']} rules "
                   f"({summary['cache_hits']} cache hits, {summary['pruned']} pruned, "
                   f"{summary['trained']} trained on the proxy, {summary['promoted']} promoted "
                   f"to the suite){timing}. Its best new rule on the selection seeds (by its "
                   f"worst suite child), `{found}`, scores {1 + mean:.4f} ± {error:.4f} (Adam = 1; "
                   f"± one standard error over {len(fresh_seeds)} fresh seeds) on the suite, "
                   f"and, against Adam alone on {len(verdict_seeds)} further seeds ("
                   + ", ".join(f"{name} {_cell(scores)}"
                               for name, scores in verdict_scores.items())
                   + f"), beats it by more than two standard errors on {len(beaten)} of the "
                   f"{len(held_out)} held-out children"
                   + (f" ({', '.join(beaten)})" if beaten else "")
                   + ", which are other architectures (the digits ones see the data the "
                   "search saw): the bar (beyond two standard errors on the suite and on two "
                   f"held-out children) is **{'met' if met else 'not met'}**.")
    with open(os.path.join(directory, "scores.json"), "w") as file:
        json.dump({"rules": names, "suite_tasks": list(suite_tasks),
                   "per_task": per_task.tolist(),
                   "held_out": {name: scores.tolist() for name, scores in held_out.items()},
                   "fresh_seeds": fresh_seeds,
                   "held_out_verdict": {name: scores.tolist()
                                        for name, scores in verdict_scores.items()},
                   "verdict_seeds": verdict_seeds}, file)
    if settings.export_dir and chosen:
        _export(settings, command, list(suite_tasks), names, per_task, aggregate, held_out,
                verdict_scores, selection_scores, search_scores)
    if found is not None:
        fine = dataclasses.replace(protocol, learning_rates=QUARTER_DECADE_LEARNING_RATES)
        fine_scores = suite_scores(pair, fresh_seeds, fine)[:, 0].mean(axis=-1)
        verdict += (f" With its and Adam's learning rates tuned on quarter decades "
                    f"({fine.learning_rates[0]:g} … {fine.learning_rates[-1]:g}) instead, "
                    f"`{found}` scores {_cell(fine_scores)} on the suite"
                    + (" (still beyond two standard errors)." if beats_adam(fine_scores)
                       else " (no longer beyond two standard errors)."))
    comparison, winner = compare_strategies(settings, scale, directory)
    verdict += (f" At an equal budget of {scale.compare_budget} sampled rules over "
                f"{scale.compare_seeds} seeds, {winner}.")
    text = ("Scores: Adam-normalised, (validation accuracy − chance) / (Adam's − chance) per "
            "seed and task (negated objectives for data-free tasks), each rule with its own "
            f"learning rate from the sweep over {[f'{r:g}' for r in protocol.learning_rates]}"
            f" ({protocol.sweep_epochs} epoch each, then {protocol.final_epochs} epochs); "
            "mean ± standard error over seeds. Search score: the reward the search saw "
            "(its own evaluation key).\n\n" + "\n".join(lines) + "\n\n"
            f"Strategies at an equal budget (the suite, the funnel; mean ± std over "
            f"{scale.compare_seeds} seeds of the best suite score the search saw):\n\n"
            + comparison)
    return Report(which, "Rule search on a suite of children with a funnel, and transfer",
                  command, verdict, text, ("reward_curve.png", "strategies.png"))


def _export(settings, command, suite_names, names, per_task, aggregate, held_out,
            verdict_scores, selection_scores, search_scores) -> None:
    """Writes the chosen rules with provenance, best first in the order of the selection
    seeds (the fresh seeds never chose among them, so their fresh scores stay unbiased); the
    first carries its held-out verdict scores."""
    found = [i for i, name in enumerate(names) if name not in nos.BASELINE_RULES]
    entries = []
    for rank, i in enumerate(found, start=1):
        mean, error = _difference(aggregate[:, i])
        entries.append({
            "name": f"suite_{rank}", "rule": names[i],
            "scores": {"search": search_scores[names[i]],
                       "selection": float(selection_scores[names[i]]),
                       "suite_fresh": {"mean": 1 + mean, "standard_error": error},
                       "suite_tasks_fresh": {
                           task: float(per_task[:, i, t].mean())
                           for t, task in enumerate(suite_names)},
                       "held_out_fresh": {name: float(scores[:, i].mean())
                                          for name, scores in held_out.items()}}})
    entries[0]["scores"]["held_out_verdict"] = {
        name: {"mean": 1 + mean, "standard_error": error, "seeds": len(scores)}
        for name, scores in verdict_scores.items()
        for mean, error in [_difference(scores)]}
    provenance = {"command": f"{command} --export_pretrained", "seed": settings.seed,
                  "preset": next((name for name, config in driver.PRESETS.items()
                                  if config is SCALES[settings.scale].search), "smoke funnel"),
                  "suite": list(suite_names), "held_out": list(held_out),
                  "normalisation": "(reward - failure reward) / (adam's reward - failure "
                                   "reward), per seed and task; Adam = 1",
                  "rules": entries}
    os.makedirs(settings.export_dir, exist_ok=True)
    with open(os.path.join(settings.export_dir, DISCOVERED_FILE), "w") as file:
        json.dump(provenance, file, indent=1)
