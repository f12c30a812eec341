"""Helpers shared by the binaries. Flags are defined only by calling `define_comparison_flags`
from a binary, so binaries can still import each other's parts."""

import os
import sys
import time
import types

import jax
import numpy as np
from absl import app, flags, logging

from lopt import baselines, distributed, evaluation, objectives, plotting, progress, user_code

LEARNED = "predicted_step_descent"
REPORTED_ITERATIONS = (1, 5, 10, 50, 100)


def learned_wins(margins: dict, num_steps: int) -> tuple[dict, float]:
    """How often the learned optimizer leads, from mean margins {name: [num_steps + 1]}.

    Returns:
      ({baseline: fraction of iterations 1..num_steps where the learned optimizer's mean
        margin is higher than the baseline's}, fraction of iterations 1..min(10, num_steps)
        where the learned optimizer's mean margin is the highest of all).
    """
    learned = margins[LEARNED][1:]
    fractions = {name: float(np.mean(learned > values[1:]))
                 for name, values in margins.items() if name != LEARNED}
    first = min(10, num_steps)
    best = np.argmax(np.stack([values[1:first + 1] for values in margins.values()]), axis=0)
    return fractions, float(np.mean(np.asarray(list(margins))[best] == LEARNED))


def comparison_table(margins: dict, num_steps: int) -> str:
    """Mean margins at REPORTED_ITERATIONS, and for each baseline the fraction of iterations
    1..num_steps where the learned optimizer's mean margin is higher (`learned_wins`)."""
    iterations = [t for t in REPORTED_ITERATIONS if t <= num_steps]
    fractions, highest = learned_wins(margins, num_steps)
    lines = ["| algorithm | " + " | ".join(f"margin at {t}" for t in iterations)
             + f" | learned beats it at (of iterations 1-{num_steps}) |",
             "|---|" + "---|" * (len(iterations) + 1)]
    for name, values in margins.items():
        won = f"{fractions[name]:.0%}" if name in fractions else "-"
        lines.append(f"| {name} | " + " | ".join(f"{values[t]:+.2e}" for t in iterations)
                     + f" | {won} |")
    lines.append(f"\nPredicted step descent has the highest mean margin at {highest:.0%} of "
                 f"iterations 1-{min(10, num_steps)}.")
    return "\n".join(lines) + "\n"


def define_family_flag(extra_names: tuple[str, ...] = ()):
    """Defines --family: a name of `lopt.objectives.FAMILIES` or of `extra_names` (families the
    binary handles itself), or "module:attribute" naming the user's own (`lopt.user_code`);
    checked when the flags are parsed."""
    allowed = sorted(objectives.FAMILIES) + list(extra_names)
    names = ", ".join(allowed)
    holder = flags.DEFINE_string(
        "family", "logistic_regression", f"Objective family: one of {names}, or "
        "'module:attribute' naming your own (a lopt.objectives.Family, or a function "
        "returning one).")
    flags.register_validator(
        "family", lambda name: name in allowed or user_code.is_spec(name),
        f"--family must be one of {names} or 'module:attribute'")
    return holder


def family_from_flag(holder) -> objectives.Family:
    """The family --family names; app.UsageError (one line) when it cannot be loaded."""
    try:
        return objectives.get(holder.value)
    except ValueError as error:
        raise app.UsageError(str(error)) from error


def define_comparison_flags() -> types.SimpleNamespace:
    """Defines the flags of the binaries that compare optimizers on test problems.

    Returns:
      A namespace of flag holders: family, num_problems, num_train, num_steps, baselines,
      seed, out.
    """
    return types.SimpleNamespace(
        family=define_family_flag(),
        num_problems=flags.DEFINE_integer("num_problems", 100, "Test problems.", lower_bound=1),
        num_train=flags.DEFINE_integer(
            "num_train", None, "Training problems for tuning the baselines (default: the "
            "paper's size for the family, else 90).", lower_bound=1),
        num_steps=flags.DEFINE_integer("num_steps", 100, "Optimizer steps.", lower_bound=1),
        baselines=flags.DEFINE_list(
            "baselines", list(baselines.LINE_SEARCH_BASELINES),
            f"Baselines to compare, from {list(baselines.BASELINES)}; the paper's Table 1 forms "
            f"are {','.join(baselines.PAPER_BASELINES)}."),
        seed=flags.DEFINE_integer("seed", 0, "Seed for problems and initial iterates."),
        out=flags.DEFINE_string("out", None, "Output directory (created if missing).",
                                required=True),
    )


def with_xla_flag(xla_flags: str, flag: str, value) -> str:
    """`xla_flags` (the value of XLA_FLAGS) with `flag=value` added, unless it already sets
    `flag` either way."""
    if flag in xla_flags:
        return xla_flags
    return f"{xla_flags} {flag}={value}".strip()


def use_single_threaded_eigen() -> None:
    """Makes XLA's CPU backend run its Eigen (matrix) kernels on the calling thread.

    A precaution kept from before the cause of GPS's stalls was found (`lopt.gps.small_linalg`:
    batched LAPACK calls waiting on each other's pool threads, which this flag does not
    prevent); it cost GPS nothing measurable. Call it first thing in a binary's `main`: XLA
    reads XLA_FLAGS once, when its CPU backend starts (at the first computation), and a
    setting of the flag already in XLA_FLAGS is kept.
    """
    os.environ["XLA_FLAGS"] = with_xla_flag(os.environ.get("XLA_FLAGS", ""),
                                            "--xla_cpu_multi_thread_eigen", "false")


HOST_DEVICE_COUNT = "--xla_force_host_platform_device_count"


def use_a_host_device_per_core() -> None:
    """Gives XLA's CPU backend one device per core this process may run on
    (`os.sched_getaffinity`), so GPS's per-objective stages (`lopt.parallel`) run on every core:
    one CPU device runs its LQG loop on one core. Measured fastest on 2 cores
    (docs/decisions.md, benchmarks/distributed.py); results equal one device's to float
    round-off. Call it first thing in `main`, like `use_single_threaded_eigen`; a count already
    in XLA_FLAGS is kept. The rule-search binaries stay at one device, so that a search's
    scores do not depend on the machine."""
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count() or 1)
    os.environ["XLA_FLAGS"] = with_xla_flag(os.environ.get("XLA_FLAGS", ""), HOST_DEVICE_COUNT,
                                            cores)


def define_distributed_flags() -> None:
    """Defines --coordinator_address, --num_processes and --process_id
    (`lopt.distributed.initialize`); `initialize_distributed` reads them."""
    flags.DEFINE_string("coordinator_address", None, "Several processes: host:port of process "
                        "0's coordinator, the same on every process (lopt.distributed).")
    flags.DEFINE_integer("num_processes", None, "Several processes: how many in all.")
    flags.DEFINE_integer("process_id", None, "Several processes: this one's index, 0 to "
                         "num_processes - 1; process 0 writes the files.")


def initialize_distributed() -> None:
    """Joins the processes the flags of `define_distributed_flags` name (or a cluster JAX
    detects), before any JAX computation; app.UsageError for bad values. Processes other
    than 0 log warnings and errors only, so progress lines appear once."""
    values = flags.FLAGS
    try:
        distributed.initialize(values.coordinator_address, values.num_processes,
                               values.process_id)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    if not distributed.is_writer():
        logging.set_verbosity(logging.WARNING)


def run(main) -> None:
    """`absl.app.run(main)`, but a bad flag or an `app.UsageError` raised by `main` prints one
    line (the binary's name and the problem) instead of help text; exit status 1."""

    def fail(error) -> None:
        sys.stderr.write(f"{os.path.basename(sys.argv[0])}: error: {error}\n")
        sys.exit(1)

    def parse_flags(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:
            fail(error)

    def main_with_one_line_errors(argv):
        try:
            with distributed.exit_at_once_on_error(os.path.basename(sys.argv[0])):
                return main(argv)
        except app.UsageError as error:
            fail(error)

    app.run(main_with_one_line_errors, flags_parser=parse_flags)


def check_baseline_names(names) -> None:
    """Raises app.UsageError naming unknown --baselines entries."""
    unknown = [name for name in names if name not in baselines.BASELINES]
    if unknown:
        raise app.UsageError(f"--baselines: unknown {unknown}; valid: {list(baselines.BASELINES)}")


def tuned_comparison(family, settings: types.SimpleNamespace):
    """Samples training and test problems from the flag values in `settings`, tunes the
    baselines on the training problems and runs them on the test problems.

    Returns:
      (num_train, test problems, initial iterates x0 [num_problems, dim],
       {name: curves [num_problems, num_steps + 1]}, {name: best hyperparameters}).
    """
    num_train = settings.num_train.value or objectives.PAPER_NUM_TRAIN.get(
        settings.family.value, 90)
    key_train, key_test, key_tune, key_init = jax.random.split(
        jax.random.key(settings.seed.value), 4)
    train = family.sample(key_train, num_train)
    test = family.sample(key_test, settings.num_problems.value)
    x0 = family.init(key_init, settings.num_problems.value)
    names = settings.baselines.value
    with progress.job("baselines", {baseline_stage(name): 1.0 for name in names}):
        curves, tuned = tuned_baseline_curves(names, family, train, test, x0,
                                              settings.num_steps.value, key_tune)
    return num_train, test, x0, curves, tuned


def prepare_output_dir(path: str) -> str:
    """Creates `path` and checks it is writable, or raises app.UsageError naming the problem."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".write_test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        raise app.UsageError(f"--out={path} is not a writable directory: {error}") from error
    return path


def baseline_stage(name: str) -> str:
    """The progress-stage label (`lopt.progress`) of tuning and running baseline `name`."""
    return f"baseline {name}"


def tuned_baseline_curves(names, family, train, test, x0, num_steps, key_tune,
                          criterion: str = "auc"):
    """Tunes each baseline on `train` by `criterion` (`lopt.baselines.tune`: "auc", the mean
    objective over all iterations, or "final") and runs it on `test` from `x0`, each as the
    progress stage `baseline_stage(name)`.

    Returns ({name: curves [num_test, num_steps + 1]}, {name: best hyperparameters}).
    """
    curves, tuned = {}, {}
    for index, name in enumerate(names, start=1):
        start = time.time()
        with progress.stage(baseline_stage(name)):
            result = baselines.tune(baselines.get(name), baselines.DEFAULT_GRIDS[name], family,
                                    train, num_steps, key=key_tune, criterion=criterion)
            tuned[name] = result.best
            curves[name] = np.asarray(evaluation.run(baselines.get(name)(**result.best), family,
                                                     test, num_steps, x0=x0))
        logging.info("[%d/%d] %s: %d grid points tuned on %d problems by %s, best %s, test "
                     "mean final objective %.6f (%.1fs)", index, len(names), name,
                     len(result.scores), evaluation.num_problems(train), criterion, result.best,
                     curves[name][:, -1].mean(), time.time() - start)
    return curves, tuned


def summary_table(curves, tuned, margins) -> str:
    """One row per algorithm: tuned hyperparameters, mean final objective, median over
    problems of the final gap to the lowest objective any algorithm reached on that problem
    (robust to a few problems on which one algorithm fails), mean objective over all
    iterations, mean margin at the last iteration and the number of iterations it is best."""
    lowest = np.min([np.min(values, axis=1) for values in curves.values()], axis=0)
    lines = ["| algorithm | tuned hyperparameters | mean final objective | median final gap | "
             "mean objective (all iterations) | mean margin at last iteration | iterations best |",
             "|---|---|---|---|---|---|---|"]
    for name, values in curves.items():
        values = np.asarray(values)
        settings = ", ".join(f"{k}={v:.4g}" for k, v in tuned[name].items()) or "-"
        best = int(np.sum(margins[name][1:] > 0))
        gap = np.median(values[:, -1] - lowest)
        lines.append(f"| {name} | {settings} | {values[:, -1].mean():.6f} | {gap:.1e} | "
                     f"{values.mean():.6f} | {margins[name][-1]:+.2e} | {best} |")
    return "\n".join(lines) + "\n"


def write_comparison(out: str, curves, family_name: str, prefix: str = "") -> dict:
    """Writes PREFIXmargin_of_victory.png, PREFIXexample_problem_{0,1}.png and PREFIXcurves.npz
    into `out`.

    Args:
      curves: {algorithm: objective values [num_problems, num_steps + 1]}.

    Returns:
      {algorithm: mean margin of victory [num_steps + 1]}.
    """
    per_problem = evaluation.margin_of_victory(curves, per_problem=True)
    num_problems = next(iter(curves.values())).shape[0]
    plotting.plot_margin_of_victory(per_problem,
                                    os.path.join(out, f"{prefix}margin_of_victory.png"),
                                    f"{family_name}: {num_problems} test problems")
    for problem in range(min(2, num_problems)):
        plotting.plot_objective_curves(
            {name: values[problem] for name, values in curves.items()},
            os.path.join(out, f"{prefix}example_problem_{problem}.png"),
            f"{family_name}: test problem {problem}")
    np.savez(os.path.join(out, f"{prefix}curves.npz"), **curves)
    return {name: values.mean(axis=0) for name, values in per_problem.items()}
