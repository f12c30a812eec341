"""A learned policy distilled into a readable rule (`--which=distill`).

The teacher is the logistic-regression GPS policy (`lto`'s: trained in OUT/lto_logistic, or
the shipped one with `use_pretrained`). It runs on the first `demo_problems` training problems
for `lto`'s number of steps; a search (regularized evolution over the paper's language at
depth 2, warm-started from adam, powersign (addsign needs depth 3) and every single operand
but noise, in OUT/distill/search, resumable) then rewards each rule by minus its imitation
error on that demonstration (`lopt.search.imitation`: the rule replayed on the policy's own
trajectory, one scale per rule fitted in closed form). Reported:
  imitation errors of the distilled rule (the search's best) and of the trivial baseline, the
    best single operand of the language with its own fitted scale, on the demonstration and
    on a demonstration on the unseen test problems;
  the test: the policy, the distilled rule at its fitted scale (nothing tuned), the same rule
    with its learning rate tuned like the baselines' (`lto_vs_rules.tune_rules`), and the
    baselines of `lto_vs_rules`, on `lto`'s unseen test problems from the same initial
    iterates: margin of victory (OUT/distill/margin_of_victory.png) and mean objectives.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np

from experiments.common import LEARNED, tuned_baseline_curves, write_comparison
from experiments.reproduction import lto, lto_vs_rules
from experiments.reproduction.nos import run_or_resume
from experiments.reproduction.report import Report
from lopt import evaluation, gps, objectives, rules
from lopt.rules.expression import OPERANDS
from lopt.search import driver, evaluator, imitation, strategies
from lopt.search.space import SearchSpace

FAMILY = "logistic_regression"
DISTILLED, DISTILLED_TUNED = "distilled_rule", "distilled_rule_tuned"


@dataclasses.dataclass(frozen=True)
class Scale:
    """demo_problems: training problems the policy is demonstrated on; budget, batch_size,
    population_size: the search's."""

    demo_problems: int
    budget: int
    batch_size: int
    population_size: int


SCALES = {"smoke": Scale(4, 20, 10, 20), "cpu": Scale(64, 3000, 100, 200)}
SCALES["paper"] = SCALES["cpu"]


def _imitation_scores(texts, task):
    """Scores of the rules `texts` on the imitation task (reward = -error, learning_rate =
    the fitted scale)."""
    config = evaluator.EvaluatorConfig(chunk_size=len(texts))
    return evaluator.evaluate([rules.parse(text) for text in texts], task, config,
                              jax.random.key(0))


def figure(settings: lto.Settings, which: str, command: str) -> Report:
    """The distillation of the logistic-regression policy (module docstring)."""
    family = objectives.get(FAMILY)
    sizes, scale = settings.sizes, SCALES[settings.scale]
    directory = os.path.join(settings.out, which)
    os.makedirs(directory, exist_ok=True)
    train, test, x0, key_tune, key_gps = lto.draw_problems(settings, family, FAMILY)
    learned, origin = lto.learned_optimizer(settings, os.path.join(settings.out, "lto_logistic"),
                                            family, FAMILY, train, key_gps,
                                            command.replace(which, "lto_logistic"))
    teacher, num_steps = gps.as_optax(learned), sizes.num_steps
    demo_problems = jax.tree.map(lambda leaf: leaf[:scale.demo_problems], train)
    task = imitation.imitation_task(
        f"{FAMILY}_policy", teacher, family, demo_problems, num_steps,
        family.init(jax.random.fold_in(key_tune, 2), scale.demo_problems))
    held_out = imitation.imitation_task(f"{FAMILY}_policy_test", teacher, family, test,
                                        num_steps, x0)
    operands = [text for text in OPERANDS if text != "noise"]
    config = driver.SearchConfig(
        strategy=strategies.Evolution(
            space=SearchSpace(depth=2), batch_size=scale.batch_size,
            population_size=scale.population_size,
            warm_start=("adam", "powersign", *operands)),
        task=task, budget=scale.budget, checkpoint_every=5, top_k=5,
        evaluator=evaluator.EvaluatorConfig(chunk_size=scale.batch_size, prune=True))
    result = run_or_resume(config, settings.seed, os.path.join(directory, "search"))
    distilled = result.top[0]["simplified"]
    on_demo = _imitation_scores([distilled, *operands], task)
    on_test = _imitation_scores([distilled, *operands], held_out)
    trivial = 1 + int(np.argmax(on_demo.reward[1:]))
    scale_fitted = float(on_demo.learning_rate[0])

    tune_problems = jax.tree.map(lambda leaf: leaf[:sizes.max_tune], train)
    curves, hyper = tuned_baseline_curves(list(lto_vs_rules.BASELINES), family, tune_problems,
                                          test, x0, num_steps, key_tune)
    tuned_rate = float(lto_vs_rules.tune_rules([distilled], family, tune_problems, num_steps,
                                               key_tune).learning_rate[0])
    for name, rate in ((DISTILLED, scale_fitted), (DISTILLED_TUNED, tuned_rate)):
        curves[name] = np.asarray(evaluation.run(
            lto_vs_rules.rule_optimizer(rules.parse(distilled), rate), family, test, num_steps,
            x0=x0))
        hyper[name] = {"learning_rate": rate}
    curves[LEARNED] = np.asarray(evaluation.run(teacher, family, test, num_steps, x0=x0))
    hyper[LEARNED] = {}
    margins = write_comparison(directory, curves, f"{FAMILY}, distilled")
    policy = float(np.mean(curves[LEARNED]))
    relative = {name: float(np.mean(curves[name])) / policy - 1
                for name in (DISTILLED, DISTILLED_TUNED)}

    rows = []
    for name, values in curves.items():
        settings_text = ", ".join(f"{k}={v:.4g}" for k, v in hyper[name].items()) or "-"
        rows.append(f"| {name} | {settings_text} | {np.mean(values):.6f} | "
                    f"{np.mean(values) / policy - 1:+.1%} | {np.mean(values[:, -1]):.6f} | "
                    f"{int(np.sum(margins[name][1:] > 0))} |")
    errors = (f"| `{distilled}` (distilled) | {-on_demo.reward[0]:.4f} | "
              f"{-on_test.reward[0]:.4f} | {scale_fitted:.4g} |\n"
              f"| `{operands[trivial - 1]}` (best single operand) | "
              f"{-on_demo.reward[trivial]:.4f} | {-on_test.reward[trivial]:.4f} | "
              f"{on_demo.learning_rate[trivial]:.4g} |\n")
    table = (f"Imitation error (1 - the share of the policy's squared step length the rule "
             f"explains at its fitted scale; 0 = exact, 1 = no better than standing still), on "
             f"the demonstration ({scale.demo_problems} training problems, {num_steps} steps) "
             f"and on a demonstration on the {sizes.num_test} test problems; the search sampled "
             f"{len(result.rows)} rules.\n\n"
             "| rule | error (demonstration) | error (test problems) | fitted scale |\n"
             "|---|---|---|---|\n" + errors + "\n"
             f"On the {sizes.num_test} test problems: mean objective over iterations "
             f"0-{num_steps}, relative to the policy's, and the iterations each is the best "
             "(margin of victory > 0).\n\n"
             "| algorithm | tuned | mean objective (all iterations) | vs policy | mean final "
             "objective | iterations best |\n" + "|---" * 6 + "|\n" + "\n".join(rows) + "\n")
    verdict = (f"The policy distils into `{distilled}`, with imitation error "
               f"{-on_demo.reward[0]:.3f} on its demonstration and {-on_test.reward[0]:.3f} on "
               f"the test problems, against {-on_demo.reward[trivial]:.3f} and "
               f"{-on_test.reward[trivial]:.3f} for the best single operand "
               f"`{operands[trivial - 1]}`. Run with its fitted scale, its mean objective is "
               f"{relative[DISTILLED]:+.1%} from the policy's ({relative[DISTILLED_TUNED]:+.1%} "
               f"with its learning rate tuned). Teacher: {origin}.")
    return Report(which, "A learned policy distilled into a rule", command, verdict, table,
                  ("margin_of_victory.png",))
