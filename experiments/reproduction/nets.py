"""Learning to Optimize Neural Nets (Li & Malik 2017b), Figures 1-5 analogue on CPU-sized tasks.

The coordinate-wise learned optimizer is meta-trained on 48-48-10 MLPs (`lopt.gps.
network_family`) on a small family of data sets (`training_run`): the digits randomly
projected to 48 inputs (the paper uses MNIST, on one objective) alternating with synthetic
10-class Gaussian mixtures projected likewise, so that no single data set's step size can be
memorised (docs/decisions.md has the single-data-set run). It is then run unchanged on
held-out tasks (other projections and draws than the training ones), with the step-scale
gain that meta-training chose on the training nets (`lopt.gps.step_scale`):
  wine, breast_cancer, mixture  the same architecture on other data (scikit-learn's wine and
                                breast-cancer sets, a synthetic Gaussian mixture), projected
                                to 48 inputs (the paper: TFD, CIFAR-10, CIFAR-100)
  larger_net                    an 8x larger net: 100 inputs, 200 hidden units
  minibatch_10                  digits (another projection) with minibatches of 10
  steps_800                     digits (another projection) for twice the horizon
  convnet                       a different architecture: the digits ConvNet child of the rule
                                search (two 3x3 conv layers with batch norm)
Baselines (SGD, momentum 0.9, Adam, AdaGrad, RMSprop) get their learning rate tuned per task
on a grid, by the area under the training-loss curve on tuning seeds; every algorithm is then
run on fresh evaluation seeds (new initial params and minibatches). The table gives each
algorithm's area under the full-batch training-loss curve relative to tuned Adam's (below 1:
better than Adam). L-BFGS and CG are left out: on minibatch gradients their line searches and
conjugacy have no meaning. The table is the first meta-training run's (the one exported); the
verdict also counts `meta_runs - 1` further runs on the same nets from other GPS keys, each
run on the held-out tasks against the same tuned baselines, and needs every run to meet the
bar (their counts differ by more than the bar's margins: docs/decisions.md).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from experiments.reproduction.report import Report
from lopt import data as data_lib
from lopt import gps, plotting, progress
from lopt.gps import coordinate_features as cf
from lopt.gps import coordinate_learned
from lopt.gps import coordinate_trainer as ct
from lopt.gps import network_family as nf
from lopt.search import tasks as search_tasks

BASELINES = {
    "sgd": optax.sgd,
    "momentum": lambda learning_rate: optax.sgd(learning_rate, momentum=0.9),
    "adam": optax.adam,
    "adagrad": optax.adagrad,
    "rmsprop": optax.rmsprop,
}
LEARNED = "predicted_step_descent"
DISPLAY_NAMES = {LEARNED: "Predicted Step Descent", "sgd": "SGD", "momentum": "Momentum",
                 "adam": "Adam", "adagrad": "AdaGrad", "rmsprop": "RMSprop"}


@dataclasses.dataclass(frozen=True)
class NetsScale:
    """config: the coordinate-GPS settings; num_train: training problems (`training_run`);
    rates: the baselines' learning-rate grid; tune_seeds / eval_seeds:
    seeds for tuning and for the reported curves; eval_every: full-batch loss every this many
    steps; horizon_scale: every task's number of steps times this; tasks: the held-out tasks
    run (None: all); meta_runs: meta-training runs (the first, then runs from other GPS keys)
    whose held-out counts the verdict reports, the first one tabled and exported."""

    config: ct.CoordinateConfig
    num_train: int
    rates: tuple[float, ...]
    tune_seeds: int
    eval_seeds: int
    eval_every: int
    horizon_scale: float = 1.0
    tasks: tuple[str, ...] | None = None
    meta_runs: int = 1


SCALES = {
    "smoke": NetsScale(ct.CoordinateConfig(features=cf.CoordinateFeatureConfig(lags=3, ratios=1),
                                           horizon=20, num_samples=2, recorded=8, hidden=8,
                                           policy_steps=100, imitation_steps=100,
                                           num_iterations=1, scale_gains=(0.0, 1.0)),
                       num_train=1, rates=(0.01, 0.1, 1.0), tune_seeds=1, eval_seeds=2,
                       eval_every=5, horizon_scale=0.05, tasks=("steps_800",), meta_runs=2),
    "cpu": NetsScale(ct.CoordinateConfig(), num_train=4,
                     rates=tuple(float(r) for r in 10.0 ** np.arange(-4.0, 1.01, 0.5)),
                     tune_seeds=2, eval_seeds=5, eval_every=10, meta_runs=3),
}
SCALES["paper"] = SCALES["cpu"]


class Task(NamedTuple):
    """A held-out training task: `init(key) -> params`, `minibatch_loss(params, key)`,
    `full_loss(params)`, and its number of steps."""

    name: str
    init: Callable
    minibatch_loss: Callable
    full_loss: Callable
    steps: int


def _mlp_task(name: str, data: nf.Data, hidden: int, batch_size: int, steps: int) -> Task:
    family = nf.NetworkFamily((hidden,), int(data.labels.max()) + 1, batch_size,
                              data.inputs.shape[1], name)
    return Task(name, family.init, lambda p, k: family.minibatch_loss(p, data, k),
                lambda p: family.full_loss(p, data), steps)


def _projected(inputs: np.ndarray, labels: np.ndarray, key: jax.Array, dim: int) -> nf.Data:
    return nf.Data(jnp.asarray(nf.project(np.asarray(inputs, np.float32), key, dim)),
                   jnp.asarray(labels, jnp.int32))


def _gaussian_mixture(key: jax.Array, num_points: int = 1000, num_classes: int = 5,
                      dim: int = 20):
    key_centres, key_labels, key_noise = jax.random.split(key, 3)
    centres = 2.0 * jax.random.normal(key_centres, (num_classes, dim))
    labels = jax.random.randint(key_labels, (num_points,), 0, num_classes)
    points = centres[labels] + jax.random.normal(key_noise, (num_points, dim))
    return np.asarray(points), np.asarray(labels)


def _convnet_task(batch_size: int, steps: int) -> Task:
    child = search_tasks.digits_convnet()
    train = child.dataset.train
    inputs, labels = jnp.asarray(train.inputs), jnp.asarray(train.labels)

    def minibatch_loss(params, key):
        index = jax.random.randint(key, (batch_size,), 0, labels.shape[0])
        return child.loss(params, inputs[index], labels[index])

    return Task("convnet", child.init, minibatch_loss, lambda p: child.loss(p, inputs, labels),
                steps)


def held_out_tasks(scale: NetsScale, key: jax.Array) -> list[Task]:
    """The held-out tasks of the module docstring (projections drawn from `key`)."""
    from sklearn.datasets import load_breast_cancer, load_wine

    keys = jax.random.split(key, 7)
    steps = max(int(round(400 * scale.horizon_scale)), scale.eval_every)
    digits = data_lib.load_digits().train
    digit_inputs = digits.inputs.reshape(len(digits.labels), -1)
    wine, cancer = load_wine(), load_breast_cancer()
    return [
        _mlp_task("wine", _projected(wine.data, wine.target, keys[0], 48), 48, 64, steps),
        _mlp_task("breast_cancer", _projected(cancer.data, cancer.target, keys[1], 48), 48, 64,
                  steps),
        _mlp_task("mixture", _projected(*_gaussian_mixture(keys[2]), keys[3], 48), 48, 64,
                  steps),
        _mlp_task("larger_net", _projected(digit_inputs, digits.labels, keys[4], 100), 200, 64,
                  steps),
        _mlp_task("minibatch_10", _projected(digit_inputs, digits.labels, keys[5], 48), 48, 10,
                  steps),
        _mlp_task("steps_800", _projected(digit_inputs, digits.labels, keys[6], 48), 48, 64,
                  2 * steps),
        _convnet_task(64, steps),
    ]


def held_out_run(scale: NetsScale, seed: int):
    """(the held-out tasks `scale` runs, tuning seed keys, evaluation seed keys) for `seed`."""
    key = jax.random.fold_in(jax.random.key(seed), 29)
    key_tasks, key_tune, key_eval = jax.random.split(key, 3)
    tasks = [task for task in held_out_tasks(scale, key_tasks)
             if scale.tasks is None or task.name in scale.tasks]
    return (tasks, jax.random.split(key_tune, scale.tune_seeds),
            jax.random.split(key_eval, scale.eval_seeds))


def curves(task: Task, opt: optax.GradientTransformationExtraArgs, seeds: jax.Array,
           eval_every: int) -> jax.Array:
    """Full-batch loss every `eval_every` steps, from step 0, for each seed key `[R]`:
    `[R, steps // eval_every + 1]`."""
    def one_seed(key):
        key_init, key_steps = jax.random.split(key)
        losses = nf.training_curve(opt, task.minibatch_loss, task.full_loss,
                                   task.init(key_init), key_steps, task.steps, eval_every)
        return jnp.where(jnp.isfinite(losses), losses, jnp.inf)

    return jax.lax.map(one_seed, seeds)


def tuned(task: Task, optimizer, scale: NetsScale, tune_keys, eval_keys):
    """`optimizer(learning_rate)` (an optax factory, e.g. `BASELINES[name]`) with the rate of
    `scale.rates` of least mean area on `tune_keys`: (that rate, curves `[R, ...]` at it on
    `eval_keys`); one compilation per task and optimizer."""
    rates = jnp.asarray(scale.rates)
    make = optax.inject_hyperparams(optimizer)

    def with_rate(rate, keys):
        opt = optax.with_extra_args_support(make(learning_rate=rate))
        return curves(task, opt, keys, scale.eval_every)

    def tune_and_run():
        tuning = jax.lax.map(lambda rate: jnp.mean(with_rate(rate, tune_keys)), rates)
        best = jnp.argmin(jnp.where(jnp.isfinite(tuning), tuning, jnp.inf))
        return best, with_rate(rates[best], eval_keys)

    best, values = jax.jit(tune_and_run)()
    return scale.rates[int(best)], values


def training_run(num_train: int, seed: int):
    """(family, problems, key) of the meta-training: `num_train` 48-48-10 nets (initial
    params), each on its own data set of the digits' size: even ones the digits projected by a
    key of `seed`, odd ones a 10-class Gaussian mixture (20-D, projected)."""
    family = nf.NetworkFamily()
    key = jax.random.fold_in(jax.random.key(seed), 17)
    key_data, key_problems, key_train = jax.random.split(key, 3)
    num_points = data_lib.load_digits().train.labels.shape[0]
    sets = []
    for index, data_key in enumerate(jax.random.split(key_data, num_train)):
        if index % 2 == 0:
            sets.append(nf.projected_digits(data_key, family.input_dim))
        else:
            key_mixture, key_projection = jax.random.split(data_key)
            sets.append(_projected(*_gaussian_mixture(key_mixture, num_points, 10),
                                   key_projection, family.input_dim))
    data = nf.Data(jnp.stack([d.inputs for d in sets]), jnp.stack([d.labels for d in sets]))
    params = jax.vmap(family.init)(jax.random.split(key_problems, num_train))
    return family, (data, params), key_train


def train_learned(config: ct.CoordinateConfig, num_train: int, seed: int,
                  checkpoint_path: str | None = None, run: int = 0):
    """Meta-trains the coordinate-wise optimizer on `training_run(num_train, seed)`:
    (CoordinateLearned, seconds taken). `run` > 0 trains on the same nets from another key
    (GPS's exploration and sampled rollouts, the gain stage's minibatches)."""
    family, problems, key = training_run(num_train, seed)
    if run:
        key = jax.random.fold_in(key, 1000 + run)
    started = time.time()
    with progress.stage("coordinate GPS"):
        policy, history = ct.train(family, problems, config, key,
                                   checkpoint_path=checkpoint_path)
    learned = ct.to_learned(policy, history, family, problems, config,
                            jax.random.fold_in(key, 1))
    return learned, time.time() - started


def export(learned: coordinate_learned.CoordinateLearned, path: str, command: str, settings,
           seconds: float) -> None:
    """Writes `learned` to `path` (replacing what is there) with `provenance.json`."""
    if os.path.isdir(path):
        shutil.rmtree(path)
    gps.save(learned, path)
    with open(os.path.join(path, gps.learned.PROVENANCE_FILE), "w") as file:
        json.dump({"command": f"{command} --export_pretrained", "seed": settings.seed,
                   "scale": settings.scale, "training_seconds": round(seconds),
                   "date": datetime.date.today().isoformat()}, file, indent=1)


def _trained(directory: str, scale: NetsScale, seed: int, run: int = 0):
    """(CoordinateLearned, seconds) of meta-training run `run`, loaded from `directory` if a
    former call saved it there, else trained (resuming from its checkpoint) and saved."""
    suffix = f"_run{run}" if run else ""
    saved = os.path.join(directory, "learned" + suffix)
    training_file = os.path.join(directory, f"training{suffix}.json")
    if os.path.exists(os.path.join(saved, gps.learned.FILE)):
        with open(training_file) as file:
            return gps.load(saved), json.load(file)["seconds"]
    learned, seconds = train_learned(scale.config, scale.num_train, seed,
                                     os.path.join(directory, f"checkpoint{suffix}.npz"), run)
    gps.save(learned, saved)
    with open(training_file, "w") as file:
        json.dump({"seconds": seconds}, file)
    return learned, seconds


def learned_optimizer(settings, directory: str, scale: NetsScale, command: str):
    """The coordinate-wise learned optimizer (shipped, already trained here, or trained now,
    resuming from `directory/checkpoint.npz`) and a sentence saying where it came from."""
    if settings.use_pretrained:
        return gps.pretrained("neural_nets"), "the optimizer shipped in `lopt/pretrained/`"
    learned, seconds = _trained(directory, scale, settings.seed)
    if settings.export_dir is not None:
        export(learned, os.path.join(settings.export_dir, learned.family), command, settings,
               seconds)
    return learned, (f"coordinate-wise GPS, {len(learned.history)} iterations on "
                     f"{scale.num_train} 48-48-10 nets (projected digits and Gaussian "
                     f"mixtures), step-scale gain {learned.scale_gain:g} chosen on them, "
                     f"{seconds:.0f} s")


def figure(settings, which: str, command: str) -> Report:
    """The reproduction block (module docstring)."""
    scale = SCALES[settings.scale]
    directory = os.path.join(settings.out, which)
    os.makedirs(directory, exist_ok=True)
    learned, provenance = learned_optimizer(settings, directory, scale, command)
    tasks, tune_keys, eval_keys = held_out_run(scale, settings.seed)
    results, rates = {}, {}
    # Units are training runs (the learned optimizer's on the evaluation seeds; a baseline's
    # on the tuning seeds at every rate, then on the evaluation seeds). Each task is a nested
    # stage, so its ETA comes from its own rate: the ConvNet's runs take ten times the MLPs'.
    learned_runs = len(eval_keys)
    baseline_runs = len(scale.rates) * len(tune_keys) + len(eval_keys)
    per_task = learned_runs + len(BASELINES) * baseline_runs
    with progress.stage("held-out tasks", len(tasks) * per_task, "training runs") as stage:
        for number, task in enumerate(tasks):
            started = time.time()
            with progress.stage(task.name, per_task, "training runs") as task_stage:
                runs = {LEARNED: _learned_curves(task, learned, eval_keys, scale.eval_every)}
                task_stage.update(learned_runs)
                for done, name in enumerate(BASELINES, start=1):
                    rates[(task.name, name)], runs[name] = tuned(task, BASELINES[name], scale,
                                                                 tune_keys, eval_keys)
                    task_stage.update(learned_runs + done * baseline_runs)
            stage.update((number + 1) * per_task)
            results[task.name] = {name: np.asarray(values) for name, values in runs.items()}
            logging.info("lto_nets: %s done in %.0f s", task.name, time.time() - started)
    table = _table(results, rates)
    all_wins = [_wins({task: _areas(runs[LEARNED]) for task, runs in results.items()}, results)]
    for run in range(1, scale.meta_runs):
        other, _ = _trained(directory, scale, settings.seed, run)
        areas = {}
        with progress.stage(f"meta-training run {run + 1}/{scale.meta_runs} on held-out tasks",
                            len(tasks), "tasks") as stage:
            for number, task in enumerate(tasks):
                areas[task.name] = _areas(_learned_curves(task, other, eval_keys,
                                                          scale.eval_every))
                stage.update(number + 1)
        all_wins.append(_wins(areas, results))
    figures = _plot(results, directory, scale.eval_every)
    with open(os.path.join(directory, "areas.json"), "w") as file:
        json.dump({task: {name: _areas(values).tolist() for name, values in runs.items()}
                   for task, runs in results.items()}, file, indent=1)
    return Report(which, "Learning to Optimize Neural Nets: held-out tasks (Figures 1-5)",
                  command, _verdict(all_wins, len(tasks), provenance), table, figures)


def _learned_curves(task: Task, learned, eval_keys, eval_every: int) -> np.ndarray:
    """`curves` of the learned optimizer `learned` on `task` (one compilation per task)."""
    return np.asarray(jax.jit(lambda: curves(task, gps.as_optax(learned), eval_keys,
                                             eval_every))())


def _areas(values: np.ndarray) -> np.ndarray:
    """Area under each seed's curve (mean over the recorded points) `[R]`."""
    return np.mean(values, axis=-1)


def _table(results: dict, rates: dict):
    names = [LEARNED, *BASELINES]
    header = ("| task | " + " | ".join(DISPLAY_NAMES[n] for n in names)
              + " |\n|---|" + "---|" * len(names) + "\n")
    rows = []
    for task, runs in results.items():
        areas = {name: _areas(values) for name, values in runs.items()}
        reference = np.mean(areas["adam"])
        cells = []
        for name in names:
            ratio = np.mean(areas[name]) / reference
            spread = np.std(areas[name]) / np.sqrt(len(areas[name])) / reference
            rate = "" if name == LEARNED else f" (lr {rates[(task, name)]:.3g})"
            cells.append(f"{ratio:.3f} ± {spread:.3f}{rate}")
        rows.append(f"| {task} | " + " | ".join(cells) + " |")
    note = ("\nArea under the full-batch training-loss curve relative to tuned Adam's, mean "
            "± standard error over the evaluation seeds; each baseline's learning rate (lr) "
            "tuned on separate seeds.\n")
    return header + "\n".join(rows) + "\n" + note


def _wins(learned_areas: dict, results: dict) -> dict:
    """{task: {baseline: whether the learned areas `[R]` have the lower mean}} against the
    baselines' runs in `results`."""
    return {task: {name: bool(np.mean(areas) < np.mean(_areas(results[task][name])))
                   for name in BASELINES}
            for task, areas in learned_areas.items()}


def _verdict(all_wins: list[dict], num_tasks: int, provenance: str) -> str:
    """The verdict on every meta-training run's wins (`_wins`; the first run's are tabled)."""
    def best_everywhere(wins):
        return [task for task, against in wins.items() if all(against.values())]

    def simple(wins):
        return [task for task, against in wins.items()
                if against["sgd"] and against["momentum"]]

    counts = [(len(best_everywhere(wins)), len(simple(wins))) for wins in all_wins]
    if all(best >= min(4, num_tasks) and ahead == num_tasks for best, ahead in counts):
        word = "reproduced"
    elif any(best or ahead for best, ahead in counts):
        word = "partly reproduced"
    else:
        word = "not reproduced"
    first = all_wins[0]
    text = (f"Predicted step descent has the smallest area under the training curve of all six "
            f"optimizers on {counts[0][0]} of {num_tasks} held-out tasks "
            f"({', '.join(best_everywhere(first)) or 'none'}) and beats tuned SGD and momentum "
            f"on {counts[0][1]} of {num_tasks}")
    if len(all_wins) > 1:
        listed = [", ".join(str(count[i]) for count in counts[:-1]) + f" and {counts[-1][i]}"
                  for i in (0, 1)]
        text += (f". Across {len(all_wins)} meta-training runs on the same nets (the tabled one, "
                 f"then {len(all_wins) - 1} from other GPS keys), it is least of all on "
                 f"{listed[0]} of {num_tasks} tasks and ahead of tuned SGD and momentum on "
                 f"{listed[1]}")
    scope = "; the verdict counts every run" if len(all_wins) > 1 else ""
    return (f"{text}: **{word}** (paper: fastest on every test{scope}). "
            f"Learned optimizer: {provenance}.")


def _plot(results: dict, directory: str, eval_every: int) -> tuple[str, ...]:
    name = "curves.png"
    plotting.plot_curve_panels(
        {task: {algorithm: np.mean(values, axis=0) for algorithm, values in runs.items()}
         for task, runs in results.items()}, eval_every, os.path.join(directory, name))
    return (name,)
