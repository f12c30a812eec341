"""Learned optimizers distilled into readable rules (`--which=distill`).

Two teachers, each distilled the same way: the teacher runs on training problems, then two
searches (regularized evolution over the paper's language at depth 2, warm-started from adam,
powersign (addsign needs depth 3) and every single operand but noise, resumable) reward each
rule by minus its imitation error on that demonstration (`lopt.search.imitation`: the rule
replayed on the teacher's own trajectory), one with a scale per rule fitted in closed form
(in DIR/search), one with the teacher's previous step added at a fitted momentum as well
(`past_step`, in DIR/search_past_step).

1. The logistic-regression GPS policy (`lto`'s: trained in OUT/lto_logistic, or the shipped
   one with `use_pretrained`), demonstrated on the first `demo_problems` training problems
   for `lto`'s number of steps; DIR = OUT/distill. Test: the policy, the first distilled rule
   at its fitted scale (nothing tuned) and with its learning rate tuned like the baselines'
   (`lto_vs_rules.tune_rules`), the second at its fitted scale and momentum, and the
   baselines of `lto_vs_rules` on `lto`'s unseen test problems from the same initial
   iterates: margin of victory (OUT/distill/margin_of_victory.png) and mean objectives.
2. The coordinate-wise neural-net optimizer (`lto_nets`'s: trained in OUT/lto_nets, or the
   shipped one), demonstrated training its meta-training nets (`nets.training_run`) on
   minibatches for its meta-training horizon, on `net_coordinates` of each net's parameters
   drawn at random; DIR = OUT/distill/neural_nets. Test: the optimizer, the same three
   distilled optimizers and tuned Adam on `lto_nets`'s held-out tasks (same seeds): areas
   under the training-loss curves relative to tuned Adam's
   (OUT/distill/neural_nets_curves.png).

Both report the imitation errors of the distilled rules against the trivial baselines, the
best single operand of the language with its own fitted scale (and momentum), on the
demonstration and, at the constants fitted there, on a demonstration on unseen problems
(lto's test problems; nets drawn with the next seed).
"""

from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple

import jax
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from experiments.common import LEARNED, tuned_baseline_curves, write_comparison
from experiments.reproduction import lto, lto_vs_rules, nets
from experiments.reproduction.nos import run_or_resume
from experiments.reproduction.report import Report
from lopt import evaluation, gps, objectives, plotting, progress, rules
from lopt.rules.expression import OPERANDS
from lopt.search import driver, evaluator, imitation, strategies
from lopt.search.space import SearchSpace

FAMILY = "logistic_regression"
DISTILLED, DISTILLED_TUNED = "distilled_rule", "distilled_rule_tuned"
DISTILLED_PAST = "distilled_rule_past_step"
SEARCH_OPERANDS = tuple(text for text in OPERANDS if text != "noise")


@dataclasses.dataclass(frozen=True)
class Scale:
    """demo_problems: logistic-regression training problems the policy is demonstrated on;
    net_coordinates: parameters of each net in the neural-net optimizer's demonstration;
    budget, batch_size, population_size: each search's."""

    demo_problems: int
    net_coordinates: int
    budget: int
    batch_size: int
    population_size: int


SCALES = {"smoke": Scale(4, 64, 20, 10, 20), "cpu": Scale(64, 512, 3000, 100, 200)}
SCALES["paper"] = SCALES["cpu"]


SEARCH_DEPTH = 2


def _search(task: imitation.ImitationTask, scale: Scale, seed: int, directory: str):
    """The distillation search on `task` (module docstring), resumed from `directory`."""
    config = driver.SearchConfig(
        strategy=strategies.Evolution(
            space=SearchSpace(depth=SEARCH_DEPTH), batch_size=scale.batch_size,
            population_size=scale.population_size,
            warm_start=("adam", "powersign", *SEARCH_OPERANDS)),
        task=task, budget=scale.budget, checkpoint_every=5, top_k=5,
        evaluator=evaluator.EvaluatorConfig(chunk_size=scale.batch_size, prune=True))
    return run_or_resume(config, seed, directory)


class Distilled(NamedTuple):
    """A teacher distilled in both languages: the paper's (`rule`, fitted `scale`) and with
    the past step (`rule_past`, `scale_past`, `momentum_past`); `table` and `clause` report
    the imitation errors against the best single operands."""

    rule: str
    scale: float
    rule_past: str
    scale_past: float
    momentum_past: float
    table: str
    clause: str


def _fits(texts, task: imitation.ImitationTask, chunk: int, constants=None) -> imitation.Fit:
    """`task.fit` of the rules `texts` (encoded at the search's depth where they fit, so the
    search's compiled program serves)."""
    parsed = [rules.parse(text) for text in texts]
    depth = max(SEARCH_DEPTH, rules.encode(parsed).shape[1] // 5)
    return task.fit(rules.encode(parsed, depth), chunk, jax.random.key(0), constants)


def _distill(name: str, demonstration, held_out, scale: Scale, seed: int, directory: str,
             what: str) -> Distilled:
    """Both searches on `demonstration` (in `directory`/search and `directory`/search_past_step)
    and the errors of their best rules and of every single operand on `demonstration` and on
    `held_out` (a demonstration on unseen problems)."""
    rows, found, sampled = [], {}, {}
    for past_step, suffix, label in ((False, "", "paper's language"),
                                     (True, "_past_step", "with the past step")):
        task = imitation.ImitationTask(name, demonstration, past_step)
        result = _search(task, scale, seed, os.path.join(directory, "search" + suffix))
        distilled = result.top[0]["simplified"]
        texts = [distilled, *SEARCH_OPERANDS]
        on_demo = _fits(texts, task, scale.batch_size)
        on_test = _fits(texts, dataclasses.replace(task, demonstration=held_out),
                        scale.batch_size, (on_demo.scale, on_demo.momentum))
        trivial = 1 + int(np.nanargmin(on_demo.error[1:]))
        for index, kind in ((0, f"distilled, {label}"), (trivial, "best single operand")):
            rows.append(f"| `{texts[index]}` | {kind} | {on_demo.error[index]:.4f} | "
                        f"{on_test.error[index]:.4f} | {on_demo.scale[index]:.4g} | "
                        + (f"{on_demo.momentum[index]:.3f} |" if past_step else "- |"))
        found[past_step] = (distilled, on_demo, on_test, trivial)
        sampled[past_step] = len(result.rows)
    table = (f"Imitation error (the teacher's squared step length the rule leaves unexplained, "
             f"relative; 0 = exact, 1 = no better than standing still) at the scale, and the "
             f"momentum on the teacher's previous step where the language has it, fitted on "
             f"the demonstration; on {what}; each search sampled {sampled[False]} rules.\n\n"
             "| rule | language | error (demonstration) | error (unseen problems) | fitted "
             "scale | fitted momentum |\n|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    (rule, demo, test, trivial), (rule_past, demo_past, test_past, _) = found[False], found[True]
    operand = SEARCH_OPERANDS[trivial - 1]
    clause = (f"`{rule}`, with imitation error {demo.error[0]:.3f} on its demonstration and "
              f"{test.error[0]:.3f} on unseen problems, against {demo.error[trivial]:.3f} and "
              f"{test.error[trivial]:.3f} for the best single operand `{operand}`; with the "
              f"past step it distils into `{rule_past}` at momentum "
              f"{demo_past.momentum[0]:.2f}, error {demo_past.error[0]:.3f} and "
              f"{test_past.error[0]:.3f}")
    return Distilled(rule, float(demo.scale[0]), rule_past, float(demo_past.scale[0]),
                     float(demo_past.momentum[0]), table, clause)


def _with_momentum(rule_text: str, scale: float, momentum: float):
    """The rule at learning rate `scale` followed by heavy ball `optax.trace(momentum)`: the
    optimizer a past-step fit describes (`lopt.search.imitation.imitation`)."""
    return optax.chain(lto_vs_rules.rule_optimizer(rules.parse(rule_text), scale),
                       optax.trace(decay=momentum))


def _logistic_policy(settings: lto.Settings, which: str, command: str, scale: Scale):
    """Part 1 of the module docstring: (verdict, table, figures)."""
    family = objectives.get(FAMILY)
    sizes = settings.sizes
    directory = os.path.join(settings.out, which)
    train, test, x0, key_tune, key_gps = lto.draw_problems(settings, family, FAMILY)
    learned, origin = lto.learned_optimizer(settings, os.path.join(settings.out, "lto_logistic"),
                                            family, FAMILY, train, key_gps,
                                            command.replace(which, "lto_logistic"))
    teacher, num_steps = gps.as_optax(learned), sizes.num_steps
    demo_problems = jax.tree.map(lambda leaf: leaf[:scale.demo_problems], train)
    start = family.init(jax.random.fold_in(key_tune, 2), scale.demo_problems)
    distilled = _distill(
        f"{FAMILY}_policy", imitation.demonstrate(teacher, family, demo_problems, num_steps,
                                                  start),
        imitation.demonstrate(teacher, family, test, num_steps, x0), scale, settings.seed,
        directory, f"the demonstration ({scale.demo_problems} training problems, {num_steps} "
        f"steps) and on a demonstration on the {sizes.num_test} test problems")

    tune_problems = jax.tree.map(lambda leaf: leaf[:sizes.max_tune], train)
    curves, hyper = tuned_baseline_curves(list(lto_vs_rules.BASELINES), family, tune_problems,
                                          test, x0, num_steps, key_tune)
    tuned_rate = float(lto_vs_rules.tune_rules([distilled.rule], family, tune_problems,
                                               num_steps, key_tune).learning_rate[0])
    rule = rules.parse(distilled.rule)
    for name, rate in ((DISTILLED, distilled.scale), (DISTILLED_TUNED, tuned_rate)):
        curves[name] = np.asarray(evaluation.run(lto_vs_rules.rule_optimizer(rule, rate), family,
                                                 test, num_steps, x0=x0))
        hyper[name] = {"learning_rate": rate}
    curves[DISTILLED_PAST] = np.asarray(evaluation.run(
        _with_momentum(distilled.rule_past, distilled.scale_past, distilled.momentum_past),
        family, test, num_steps, x0=x0))
    hyper[DISTILLED_PAST] = {"learning_rate": distilled.scale_past,
                             "momentum": distilled.momentum_past}
    curves[LEARNED] = np.asarray(evaluation.run(teacher, family, test, num_steps, x0=x0))
    hyper[LEARNED] = {}
    margins = write_comparison(directory, curves, f"{FAMILY}, distilled")
    policy = float(np.mean(curves[LEARNED]))
    relative = {name: float(np.mean(curves[name])) / policy - 1
                for name in (DISTILLED, DISTILLED_TUNED, DISTILLED_PAST)}

    rows = []
    for name, values in curves.items():
        settings_text = ", ".join(f"{k}={v:.4g}" for k, v in hyper[name].items()) or "-"
        rows.append(f"| {name} | {settings_text} | {np.mean(values):.6f} | "
                    f"{np.mean(values) / policy - 1:+.1%} | {np.mean(values[:, -1]):.6f} | "
                    f"{int(np.sum(margins[name][1:] > 0))} |")
    table = (distilled.table + "\n"
             f"On the {sizes.num_test} test problems: mean objective over iterations "
             f"0-{num_steps}, relative to the policy's, and the iterations each is the best "
             "(margin of victory > 0).\n\n"
             "| algorithm | tuned | mean objective (all iterations) | vs policy | mean final "
             "objective | iterations best |\n" + "|---" * 6 + "|\n" + "\n".join(rows) + "\n")
    verdict = (f"The logistic-regression policy distils into {distilled.clause}. Run with its "
               f"fitted scale, the first rule's mean objective is {relative[DISTILLED]:+.1%} from "
               f"the policy's ({relative[DISTILLED_TUNED]:+.1%} with its learning rate tuned), "
               f"the second's, with its momentum, {relative[DISTILLED_PAST]:+.1%}. Teacher: "
               f"{origin}.")
    return verdict, table, ("margin_of_victory.png",)


def _network_demonstration(teacher, net_scale: nets.NetsScale, scale: Scale, seed: int):
    """The teacher training `nets.training_run(num_train, seed)`'s nets for the
    meta-training horizon, on `scale.net_coordinates` of their parameters (drawn with
    `seed`)."""
    family, (data, params), key = nets.training_run(net_scale.num_train, seed)
    num_params = ravel_pytree(jax.tree.map(lambda leaf: leaf[0], params))[0].shape[0]
    coordinates = jax.random.choice(jax.random.fold_in(key, 1), num_params,
                                    (min(scale.net_coordinates, num_params),), replace=False)
    return imitation.demonstrate_minibatches(teacher, family.minibatch_loss, data, params,
                                             net_scale.config.horizon, key, coordinates)


def _network_optimizer(settings, which: str, command: str, scale: Scale):
    """Part 2 of the module docstring: (verdict, table, figures)."""
    net_scale = nets.SCALES[settings.scale]
    directory = os.path.join(settings.out, which)
    learned, origin = nets.learned_optimizer(settings, os.path.join(settings.out, "lto_nets"),
                                             net_scale, command.replace(which, "lto_nets"))
    teacher = gps.as_optax(learned)
    horizon = net_scale.config.horizon
    with progress.stage("demonstrations"):
        demonstrations = [_network_demonstration(teacher, net_scale, scale, seed)
                          for seed in (settings.seed, settings.seed + 1)]
    distilled = _distill(
        "neural_net_optimizer", *demonstrations, scale, settings.seed,
        os.path.join(directory, "neural_nets"),
        f"the demonstration ({net_scale.num_train} meta-training nets, {horizon} steps, "
        f"{scale.net_coordinates} parameters of each) and on the same for {net_scale.num_train} "
        "nets on fresh data sets")

    rule = rules.parse(distilled.rule)
    make = lambda learning_rate: lto_vs_rules.rule_optimizer(rule, learning_rate)  # noqa: E731
    with_past_step = _with_momentum(distilled.rule_past, distilled.scale_past,
                                    distilled.momentum_past)
    tasks, tune_keys, eval_keys = nets.held_out_run(net_scale, settings.seed)
    results, rows, ratios = {}, [], []
    with progress.stage("distilled rule on held-out tasks", len(tasks), "tasks") as stage:
        for number, net_task in enumerate(tasks):
            run = lambda opt, t=net_task: jax.jit(  # noqa: E731
                lambda: nets.curves(t, opt, eval_keys, net_scale.eval_every))()
            runs = {LEARNED: run(teacher),
                    DISTILLED: run(optax.with_extra_args_support(make(distilled.scale))),
                    DISTILLED_PAST: run(optax.with_extra_args_support(with_past_step))}
            adam_rate, runs["adam"] = nets.tuned(net_task, optax.adam, net_scale, tune_keys,
                                                 eval_keys)
            tuned_rate, runs[DISTILLED_TUNED] = nets.tuned(net_task, make, net_scale,
                                                           tune_keys, eval_keys)
            results[net_task.name] = {name: np.asarray(values) for name, values in runs.items()}
            areas = {name: np.mean(values, axis=-1) for name, values in
                     results[net_task.name].items()}
            reference = np.mean(areas["adam"])
            cells = [_relative_area(areas[name], reference)
                     for name in (LEARNED, DISTILLED, DISTILLED_TUNED, DISTILLED_PAST)]
            cells[2] += f" (lr {tuned_rate:.3g})"
            rows.append(f"| {net_task.name} | " + " | ".join(cells)
                        + f" | 1 (lr {adam_rate:.3g}) |")
            ratios.append([np.mean(areas[name]) / np.mean(areas[LEARNED])
                           for name in (DISTILLED, DISTILLED_PAST)])
            stage.update(number + 1)
    name = "neural_nets_curves.png"
    plotting.plot_curve_panels(
        {task: {algorithm: np.mean(values, axis=0) for algorithm, values in runs.items()}
         for task, runs in results.items()}, net_scale.eval_every,
        os.path.join(directory, name))
    ratios = np.array(ratios)  # inf where a rule diverged
    better = np.sum(ratios < 1, axis=0)
    median = np.median(ratios, axis=0)
    table = (distilled.table + "\n"
             f"On `lto_nets`'s held-out tasks: area under the full-batch training-loss curve "
             f"relative to tuned Adam's, mean ± standard error over {len(eval_keys)} "
             "evaluation seeds (learning rates tuned on separate seeds).\n\n"
             "| task | predicted step descent | distilled rule (fitted scale) | distilled rule "
             "(tuned) | distilled rule + past step (fitted) | Adam (tuned) |\n"
             + "|---" * 6 + "|\n" + "\n".join(rows) + "\n")
    verdict = (f"The coordinate-wise neural-net optimizer distils into {distilled.clause}. At "
               f"their fitted scales the first rule's area under the training curve is below "
               f"the optimizer's on {better[0]} of {len(tasks)} held-out tasks (median ratio "
               f"{median[0]:.2f}), the second's on {better[1]} (median {median[1]:.2f}). "
               f"Teacher: {origin}.")
    return verdict, table, (name,)


def _relative_area(areas: np.ndarray, reference: float) -> str:
    """Mean ± standard error of `areas` [seeds] over `reference`, or how many seeds diverged."""
    diverged = int(np.sum(~np.isfinite(areas)))
    if diverged:
        return f"diverged ({diverged} of {len(areas)} seeds)"
    return (f"{np.mean(areas) / reference:.3f} ± "
            f"{np.std(areas) / np.sqrt(len(areas)) / reference:.3f}")


def figure(settings: lto.Settings, which: str, command: str) -> Report:
    """Both distillations of the module docstring, one report."""
    scale = SCALES[settings.scale]
    os.makedirs(os.path.join(settings.out, which), exist_ok=True)
    parts = [_logistic_policy(settings, which, command, scale),
             _network_optimizer(settings, which, command, scale)]
    titles = ("#### The logistic-regression policy\n\n", "#### The neural-net optimizer\n\n")
    return Report(which, "Learned optimizers distilled into rules", command,
                  " ".join(verdict for verdict, _, _ in parts),
                  "\n".join(title + table for title, (_, table, _) in zip(titles, parts,
                                                                            strict=True)),
                  tuple(figure for _, _, figures in parts for figure in figures))
