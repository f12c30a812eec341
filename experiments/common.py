"""Helpers shared by the binaries (no flags here, so binaries can import each other's parts)."""

import os
import time

import numpy as np
from absl import app, logging

from lopt import baselines, evaluation, plotting


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


def tuned_baseline_curves(names, family, train, test, x0, num_steps, key_tune):
    """Tunes each baseline on `train` and runs it on `test` from `x0`.

    Returns ({name: curves [num_test, num_steps + 1]}, {name: best hyperparameters}).
    """
    curves, tuned = {}, {}
    for index, name in enumerate(names, start=1):
        start = time.time()
        result = baselines.tune(baselines.get(name), baselines.DEFAULT_GRIDS[name], family,
                                train, num_steps, key=key_tune)
        tuned[name] = result.best
        curves[name] = np.asarray(evaluation.run(baselines.get(name)(**result.best), family,
                                                 test, num_steps, x0=x0))
        logging.info("[%d/%d] %s: %d grid points tuned on %d problems, best %s, test mean final "
                     "objective %.6f (%.1fs)", index, len(names), name, len(result.scores),
                     evaluation.num_problems(train), result.best, curves[name][:, -1].mean(),
                     time.time() - start)
    return curves, tuned


def summary_table(curves, tuned, margins) -> str:
    lines = ["| algorithm | tuned hyperparameters | mean final objective | mean objective "
             "(all iterations) | mean margin at last iteration | iterations best |",
             "|---|---|---|---|---|---|"]
    for name, values in curves.items():
        values = np.asarray(values)
        settings = ", ".join(f"{k}={v:.4g}" for k, v in tuned[name].items()) or "-"
        best = int(np.sum(margins[name][1:] > 0))
        lines.append(f"| {name} | {settings} | {values[:, -1].mean():.6f} | "
                     f"{values.mean():.6f} | {margins[name][-1]:+.2e} | {best} |")
    return "\n".join(lines) + "\n"


def write_comparison(out: str, curves, family_name: str) -> dict:
    """Writes margin_of_victory.png, example_problem_{0,1}.png and curves.npz into `out`.

    Args:
      curves: {algorithm: objective values [num_problems, num_steps + 1]}.

    Returns:
      {algorithm: mean margin of victory [num_steps + 1]}.
    """
    per_problem = evaluation.margin_of_victory(curves, per_problem=True)
    num_problems = next(iter(curves.values())).shape[0]
    plotting.plot_margin_of_victory(per_problem, os.path.join(out, "margin_of_victory.png"),
                                    f"{family_name}: {num_problems} test problems")
    for problem in range(min(2, num_problems)):
        plotting.plot_objective_curves(
            {name: values[problem] for name, values in curves.items()},
            os.path.join(out, f"example_problem_{problem}.png"),
            f"{family_name}: test problem {problem}")
    np.savez(os.path.join(out, "curves.npz"), **curves)
    return {name: values.mean(axis=0) for name, values in per_problem.items()}
