"""Figures in the style of Li & Malik (2017): margin of victory and objective curves.

Figures are built with matplotlib's object API (`matplotlib.figure.Figure`) and saved through
the Agg canvas, so no display and no global backend switch are needed; every function
returns the Figure and writes a PNG when given a path.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Display names and colours for the paper's five algorithms; other names plot as given.
DISPLAY_NAMES = {
    "gradient_descent": "Gradient Descent",
    "momentum": "Momentum",
    "conjugate_gradient": "Conjugate Gradient",
    "lbfgs": "L-BFGS",
    "fixed_step_conjugate_gradient": "Conjugate Gradient (fixed step)",
    "fixed_step_lbfgs": "L-BFGS (fixed step)",
    "predicted_step_descent": "Predicted Step Descent",
    "adam": "Adam",
    "searched_rule": "Searched rule",
    "distilled_rule": "Distilled rule (fitted scale)",
    "distilled_rule_tuned": "Distilled rule (tuned rate)",
    "distilled_rule_past_step": "Distilled rule + past step (fitted)",
}
_COLOURS = {
    "gradient_descent": "tab:blue",
    "momentum": "tab:green",
    "conjugate_gradient": "tab:red",
    "lbfgs": "tab:cyan",
    "fixed_step_conjugate_gradient": "tab:red",
    "fixed_step_lbfgs": "tab:cyan",
    "predicted_step_descent": "tab:purple",
    "searched_rule": "tab:olive",
    "distilled_rule": "tab:olive",
    "distilled_rule_tuned": "tab:gray",
    "distilled_rule_past_step": "tab:pink",
    # Neural Optimizer Search's Figure 6 (optax names).
    "sgd": "tab:blue",
    "adam": "tab:orange",
    "rmsprop": "tab:brown",
    "powersign": "tab:purple",
    "adagrad": "tab:olive",
}


def _save(figure: Figure, path: str | None) -> Figure:
    if path is not None:
        FigureCanvasAgg(figure)
        figure.savefig(path, dpi=120, bbox_inches="tight")
    return figure


def _style(name: str) -> dict:
    return {"label": DISPLAY_NAMES.get(name, name), "color": _COLOURS.get(name)}


def plot_margin_of_victory(
    per_problem_margins: Mapping[str, np.ndarray], path: str | None = None, title: str = ""
) -> Figure:
    """Mean margin of victory per iteration, one line per algorithm, +-1 standard error band.

    Args:
      per_problem_margins: {name: [num_problems, num_steps + 1]}, as returned by
        `lopt.evaluation.margin_of_victory(curves, per_problem=True)`.
      path: where to write the PNG (optional).
      title: axes title.
    """
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    for name, margins in per_problem_margins.items():
        margins = np.asarray(margins)
        mean = margins.mean(axis=0)
        stderr = margins.std(axis=0) / np.sqrt(margins.shape[0])
        iterations = np.arange(mean.shape[0])
        axes.plot(iterations, mean, **_style(name))
        axes.fill_between(iterations, mean - stderr, mean + stderr, alpha=0.2,
                          color=_COLOURS.get(name))
    axes.axhline(0.0, color="black", linewidth=0.5)
    axes.set(xlabel="Iteration", ylabel="Mean Margin of Victory", title=title)
    axes.legend(fontsize=8)
    return _save(figure, path)


def plot_objective_curves(
    curves: Mapping[str, Sequence[float]], path: str | None = None, title: str = ""
) -> Figure:
    """Objective value per iteration on one problem, one line per algorithm.

    Args:
      curves: {name: objective values [num_steps + 1]} for a single problem.
      path: where to write the PNG (optional).
      title: axes title.
    """
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    for name, values in curves.items():
        axes.plot(np.asarray(values), **_style(name))
    axes.set(xlabel="Iteration", ylabel="Objective Value", title=title)
    axes.legend(fontsize=8)
    return _save(figure, path)


def plot_curve_panels(panels: Mapping[str, Mapping[str, Sequence[float]]], every: int,
                      path: str | None = None) -> Figure:
    """One panel per task (at most 4 per row): its algorithms' curves on a log axis.

    Args:
      panels: {task: {algorithm: values [num_points]}}, value i at step i * `every`.
      every: steps between recorded values.
      path: where to write the PNG (optional).
    """
    columns = min(len(panels), 4)
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(4 * columns, 3.2 * rows))
    for index, (task, curves) in enumerate(panels.items(), start=1):
        axes = figure.add_subplot(rows, columns, index)
        for name, values in curves.items():
            values = np.asarray(values)
            axes.plot(np.arange(len(values)) * every, values, **_style(name))
        axes.set(xlabel="Iteration", ylabel="Training loss", title=task, yscale="log")
    figure.axes[0].legend(fontsize=7)
    figure.tight_layout()
    return _save(figure, path)


def plot_rule_scores(scores: Mapping[str, float], path: str | None = None,
                     title: str = "", errors: Mapping[str, float] | None = None) -> Figure:
    """Horizontal bar chart of one score per rule, in the given order (top to bottom).

    Args:
      scores: {rule name or text: score}.
      path: where to write the PNG (optional).
      title: axes title.
      errors: optional {rule: error-bar half width} (e.g. a standard deviation over seeds).
    """
    names = list(scores)
    figure = Figure(figsize=(7, 0.3 * len(names) + 1.2))
    axes = figure.add_subplot()
    xerr = None if errors is None else [errors[name] for name in names]
    axes.barh(np.arange(len(names)), [scores[name] for name in names], xerr=xerr,
              color="tab:blue")
    axes.set_yticks(np.arange(len(names)), names, fontsize=7)
    axes.invert_yaxis()
    axes.set(xlabel="Score", title=title)
    return _save(figure, path)


def plot_trajectories(panels: Sequence[Mapping], path: str | None = None, title: str = "",
                      log_objective: bool = False) -> Figure:
    """Objective curves (top row) and iterates drawn over the objective's contours (bottom row)
    on a few 2-D problems, one column per problem (Figure 4 of Li & Malik, 2017; Figure 6 of
    Bello et al., 2017).

    Args:
      panels: one mapping per problem with
        "grid": (u [G, G], v [G, G], objective [G, G]) for the contours (drawn at levels of
          log(objective - min + 1e-3), darker = higher);
        "curves": {name: objective values [T + 1]};
        "iterates": {name: iterates [T + 1, 2]}.
      path: where to write the PNG (optional).
      title: figure title.
      log_objective: logarithmic objective axis in the top row.
    """
    figure = Figure(figsize=(4 * len(panels), 7.5))
    for column, panel in enumerate(panels):
        top = figure.add_subplot(2, len(panels), column + 1)
        bottom = figure.add_subplot(2, len(panels), len(panels) + column + 1)
        for name, values in panel["curves"].items():
            top.plot(np.asarray(values), **_style(name))
        top.set(xlabel="Iteration", ylabel="Objective Value",
                yscale="log" if log_objective else "linear")
        u, v, objective = (np.asarray(a) for a in panel["grid"])
        bottom.contourf(u, v, np.log(objective - objective.min() + 1e-3), levels=20,
                        cmap="Greys")
        for name, iterates in panel["iterates"].items():
            iterates = np.asarray(iterates)
            bottom.plot(iterates[:, 0], iterates[:, 1], ".-", markersize=3, linewidth=1,
                        **_style(name))
        bottom.set(xlim=(u.min(), u.max()), ylim=(v.min(), v.max()), aspect="equal")
    figure.axes[0].legend(fontsize=7)
    figure.suptitle(title)
    return _save(figure, path)


def plot_training_costs(costs: Mapping[str, Sequence[float]], path: str | None = None,
                        title: str = "") -> Figure:
    """Mean training cost per GPS iteration, one line per series (e.g. controllers, policy).

    Args:
      costs: {series name: cost after each iteration [num_iterations]}.
      path: where to write the PNG (optional).
      title: axes title.
    """
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    for name, values in costs.items():
        axes.plot(np.arange(1, len(values) + 1), np.asarray(values), marker="o", label=name)
    axes.set(xlabel="GPS iteration", ylabel="Mean training cost", title=title)
    axes.legend(fontsize=8)
    return _save(figure, path)


def plot_reward_curve(rewards: Sequence[float], path: str | None = None,
                      title: str = "") -> Figure:
    """Reward of each sampled rule against the number sampled, with the running maximum and a
    moving mean over 5% of the samples (Figure 4 of Bello et al., 2017).

    Args:
      rewards: [num_sampled] in sampling order.
      path: where to write the PNG (optional).
      title: axes title.
    """
    rewards = np.asarray(rewards, np.float64)
    sampled = np.arange(1, len(rewards) + 1)
    window = max(1, len(rewards) // 20)
    moving_mean = np.convolve(rewards, np.ones(window) / window, mode="valid")
    figure = Figure(figsize=(7, 4))
    axes = figure.add_subplot()
    axes.scatter(sampled, rewards, s=4, alpha=0.3, color="tab:blue", label="sampled rule")
    axes.plot(sampled, np.maximum.accumulate(rewards), color="tab:red", label="running max")
    axes.plot(sampled[window - 1:], moving_mean, color="black",
              label=f"mean of last {window}")
    axes.set(xlabel="Rules sampled", ylabel="Reward", title=title)
    axes.legend(loc="lower right")
    return _save(figure, path)


def plot_search_progress(best_so_far: Mapping[str, np.ndarray], path: str | None = None,
                         title: str = "") -> Figure:
    """Best score reached against rules sampled, one line per strategy (mean over seeds, with
    the seeds' range shaded).

    Args:
      best_so_far: {strategy: [num_seeds, num_sampled]} running maxima (NaN before the first
        score counts).
      path: where to write the PNG (optional).
      title: axes title.
    """
    figure = Figure(figsize=(7, 4))
    axes = figure.add_subplot()
    for name, curves in best_so_far.items():
        curves = np.asarray(curves, np.float64)
        sampled = np.arange(1, curves.shape[1] + 1)
        with warnings.catch_warnings():  # columns before any seed's first score are all NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, low, high = (reduce(curves, axis=0)
                               for reduce in (np.nanmean, np.nanmin, np.nanmax))
        line, = axes.plot(sampled, mean, **_style(name))
        axes.fill_between(sampled, low, high, color=line.get_color(), alpha=0.2)
    axes.set(xlabel="Rules sampled", ylabel="Best score so far", title=title)
    axes.legend(loc="lower right")
    return _save(figure, path)
