"""The two halves on the same problems: update rules searched on Li & Malik's objective
families against the GPS policy trained on them (`--which=lto_vs_rules`).

For each family (logistic regression, robust linear regression, the MLP classifier):
  the policy: the family's learned optimizer of `lto` (the one `lto_FAMILY` trains into
    OUT/lto_FAMILY, trained there if missing, or the shipped one with `use_pretrained`);
  the search: regularized evolution over the paper's language at depth 2 on a
    `lopt.search.tasks.FamilyTask` of the first `search_problems` training problems, rewarded
    by minus the mean objective over iterations 0..num_steps (each rule at the best rate of
    a sweep half a decade apart), in OUT/lto_vs_rules/FAMILY/search (resumable);
  the found rule: of the search's best `candidates` distinct rules, the one with the lowest
    mean objective once its learning rate is tuned like the baselines' (`tune_rules`: by the
    mean objective, on the problems the baselines are tuned on, on a quarter-decade grid);
    Adam is tuned the same way as a reference rule;
  the test: every algorithm on `lto`'s unseen test problems from the same initial iterates as
    lto_FAMILY's figure, the margin of victory among all of them (OUT/lto_vs_rules/
    FAMILY_margin_of_victory.png), and each one's mean objective; the policy against the
    found rule by the per-problem difference of mean objectives (a tie unless it exceeds two
    standard errors);
  the cost: seconds to obtain each learned optimizer on this machine (GPS training as
    recorded when it was trained; the search's wall time up to its last iteration, summed over
    the runs that resumed it, `SearchResult.run_seconds`).
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
from absl import logging

from experiments.common import LEARNED, tuned_baseline_curves, write_comparison
from experiments.reproduction import lto
from experiments.reproduction.nos import run_or_resume
from experiments.reproduction.report import Report
from lopt import baselines, evaluation, gps, objectives, rules
from lopt.search import driver, evaluator, strategies, tasks
from lopt.search.space import SearchSpace

FOUND = "searched_rule"
ADAM = "adam"
BASELINES = baselines.LINE_SEARCH_BASELINES
# The search's sweep: half a decade apart from 1e-3 to 10 (the baselines' own grid's range).
SEARCH_LEARNING_RATES = tuple(float(10 ** (k / 2)) for k in range(-6, 3))
# The found rule's and Adam's tuning grid: quarter decades from 1e-4 to 10, finer than the
# search's sweep so that the chosen rule is not favoured by where the sweep's points fall.
RULE_LEARNING_RATES = tuple(float(10 ** (k / 4)) for k in range(-16, 5))


@dataclasses.dataclass(frozen=True)
class Scale:
    """search_problems: training problems the search's child runs on; budget: rules sampled;
    batch_size, population_size: the evolution's; candidates: the search's best distinct
    rules whose learning rates are tuned; learning_rates: the search's sweep."""

    search_problems: int
    budget: int
    batch_size: int
    population_size: int
    candidates: int
    learning_rates: tuple[float, ...] = SEARCH_LEARNING_RATES


SCALES = {
    "smoke": Scale(4, 20, 10, 20, 2, (1e-2, 1e-1, 1.0)),
    "cpu": Scale(32, 1000, 100, 200, 5),
}
SCALES["paper"] = SCALES["cpu"]


def search_config(family_name: str, train, num_steps: int, scale: Scale,
                  key: jax.Array) -> driver.SearchConfig:
    """The search on `family_name`'s first `scale.search_problems` training problems, from
    initial iterates drawn with `key`."""
    family = objectives.get(family_name)
    problems = jax.tree.map(lambda leaf: leaf[:scale.search_problems], train)
    child = tasks.FamilyTask(f"{family_name}_family", family, problems,
                             family.init(key, scale.search_problems))
    return driver.SearchConfig(
        strategy=strategies.Evolution(space=SearchSpace(depth=2), batch_size=scale.batch_size,
                                      population_size=scale.population_size),
        task=child, budget=scale.budget, checkpoint_every=2, top_k=scale.candidates,
        evaluator=evaluator.EvaluatorConfig(
            learning_rates=scale.learning_rates, steps_per_epoch=num_steps, final_epochs=1,
            chunk_size=scale.batch_size, prune=True))


def rule_optimizer(rule: rules.Rule, learning_rate, key: jax.Array | None = None):
    """`rule` as an optax optimizer (`lopt.rules.to_optax`; rules that draw noise or drop
    take the fixed key 0 unless `key` is given)."""
    return rules.to_optax(rule, learning_rate, key=jax.random.key(0) if key is None else key)


def tune_rules(texts: list[str], family, problems, num_steps: int, key: jax.Array):
    """Each rule's learning rate on RULE_LEARNING_RATES by the mean objective over iterations
    0..num_steps on `problems` from `family.init(key, P)`: the criterion and initial iterates
    `lopt.baselines.tune` uses, run by the population evaluator (one compiled program for
    every rule). Returns `lopt.search.evaluator.Scores`, reward = minus the mean objective."""
    count = evaluation.num_problems(problems)
    child = tasks.FamilyTask(f"{family.name}_tuning", family, problems, family.init(key, count))
    config = evaluator.EvaluatorConfig(learning_rates=RULE_LEARNING_RATES,
                                       steps_per_epoch=num_steps, final_epochs=1,
                                       chunk_size=len(texts))
    return evaluator.evaluate([rules.parse(text) for text in texts], child, config,
                              jax.random.key(0))


EXPERIMENT_OF_FAMILY = {family: which for which, family in lto.FAMILIES.items()}


def _gps_seconds(settings: lto.Settings, family_name: str) -> float | None:
    """GPS's recorded training time for the policy `lto.learned_optimizer` returns."""
    if settings.use_pretrained:
        path = os.path.join(gps.learned.PRETRAINED_DIR, family_name,
                            gps.learned.PROVENANCE_FILE)
        key = "training_seconds"
    else:
        path = os.path.join(settings.out, EXPERIMENT_OF_FAMILY[family_name], lto.TRAINING_FILE)
        key = "seconds"
    if not os.path.exists(path):
        return None
    with open(path) as file:
        return json.load(file)[key]


def policy_against_rule(curves: dict) -> tuple[float, float, str]:
    """(mean, standard error) over problems of the found rule's mean objective minus the
    policy's, and the verdict: which is better beyond two standard errors, or a tie."""
    difference = np.mean(curves[FOUND], axis=1) - np.mean(curves[LEARNED], axis=1)
    mean = float(difference.mean())
    error = float(difference.std(ddof=1) / np.sqrt(len(difference)))
    if mean > 2 * error:
        return mean, error, "the GPS policy is better"
    if mean < -2 * error:
        return mean, error, "the searched rule is better"
    return mean, error, "a tie within two standard errors"


def _family_rows(family_name: str, curves: dict, hyper: dict, margins: dict,
                 seconds: dict) -> list[str]:
    rows = []
    for name, values in curves.items():
        settings = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}=`{v}`"
                             for k, v in hyper[name].items()) or "-"
        cost = seconds.get(name)
        rows.append(f"| {family_name} | {name} | {settings} | {np.mean(values):.6f} | "
                    f"{np.mean(values[:, -1]):.6f} | {int(np.sum(margins[name][1:] > 0))} | "
                    f"{'-' if cost is None else f'{cost:.0f}'} |")
    return rows


def compare_family(settings: lto.Settings, family_name: str, command: str, directory: str):
    """One family: search, tune, test (module docstring). Returns (table rows, verdict
    sentence, figure name)."""
    family = objectives.get(family_name)
    sizes, scale = settings.sizes, SCALES[settings.scale]
    which = EXPERIMENT_OF_FAMILY[family_name]
    train, test, x0, key_tune, key_gps = lto.draw_problems(settings, family, family_name)
    learned, _ = lto.learned_optimizer(settings, os.path.join(settings.out, which), family,
                                       family_name, train, key_gps,
                                       command.replace("lto_vs_rules", which))
    family_dir = os.path.join(directory, family_name)
    os.makedirs(family_dir, exist_ok=True)
    num_steps = sizes.num_steps
    config = search_config(family_name, train, num_steps, scale,
                           jax.random.fold_in(key_tune, 1))
    result = run_or_resume(config, settings.seed, os.path.join(family_dir, "search"))
    search_seconds = result.run_seconds
    tune_problems = jax.tree.map(lambda leaf: leaf[:sizes.max_tune], train)
    texts = list(dict.fromkeys([ADAM] + [row["simplified"] for row in result.top]))
    scores = tune_rules(texts, family, tune_problems, num_steps, key_tune)
    rates = dict(zip(texts, scores.learning_rate.tolist(), strict=True))
    searched = [index for index, text in enumerate(texts) if text != ADAM] or [0]
    found = texts[max(searched, key=lambda index: scores.reward[index])]
    logging.info("%s: searched %d rules in %.0fs; tuned mean objectives: %s", family_name,
                 len(result.rows), search_seconds,
                 dict(zip(texts, (-scores.reward).round(6).tolist(), strict=True)))
    curves, hyper = tuned_baseline_curves(list(BASELINES), family, tune_problems, test, x0,
                                          num_steps, key_tune)
    for name, text in ((ADAM, ADAM), (FOUND, found)):
        rate = rates[text]
        curves[name] = np.asarray(evaluation.run(rule_optimizer(rules.parse(text), rate),
                                                 family, test, num_steps, x0=x0))
        hyper[name] = {"rule": text, "learning_rate": rate}
    curves[LEARNED] = np.asarray(evaluation.run(gps.as_optax(learned), family, test, num_steps,
                                                x0=x0))
    hyper[LEARNED] = {}
    margins = write_comparison(directory, curves, family_name, prefix=f"{family_name}_")
    seconds = {LEARNED: _gps_seconds(settings, family_name), FOUND: search_seconds}
    rows = _family_rows(family_name, curves, hyper, margins, seconds)
    mean, error, verdict = policy_against_rule(curves)
    best = min(curves, key=lambda name: np.mean(curves[name]))
    sentence = (f"On {family_name}, {verdict}: the searched rule `{found}`'s mean objective "
                f"minus the policy's is {mean:+.2e} ± {error:.1e} (standard error over "
                f"{sizes.num_test} test problems); the lowest mean objective of all is "
                f"{best}'s.")
    return rows, sentence, f"{family_name}_margin_of_victory.png"


def figure(settings: lto.Settings, which: str, command: str) -> Report:
    """The three families' comparisons (module docstring) in one report."""
    directory = os.path.join(settings.out, which)
    os.makedirs(directory, exist_ok=True)
    rows, sentences, figures = [], [], []
    for family_name in lto.FAMILIES.values():
        family_rows, sentence, figure_name = compare_family(settings, family_name, command,
                                                            directory)
        rows += family_rows
        sentences.append(sentence)
        figures.append(figure_name)
    scale = SCALES[settings.scale]
    sizes = settings.sizes
    table = (f"{sizes.num_test} unseen test problems per family, {sizes.num_steps} steps from "
             f"the same initial iterates; the search: evolution, {scale.budget} rules sampled "
             f"on {scale.search_problems} training problems; rules' learning rates and "
             "the baselines' hyperparameters tuned on the same training problems by the mean "
             "objective; seconds: to obtain the learned optimizer (GPS training, the search) on "
             "the machine that ran it.\n\n"
             "| family | algorithm | tuned | mean objective (all iterations) | mean final "
             "objective | iterations best | seconds |\n" + "|---" * 7 + "|\n"
             + "\n".join(rows) + "\n")
    return Report(which, "A neural policy or a searched formula on the same families",
                  command, " ".join(sentences), table, tuple(figures))
