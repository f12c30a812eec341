"""The compare_baselines binary end to end, and its bad-flag errors."""

import os

import numpy as np
import pytest

from experiments.common import summary_table
from lopt import evaluation

MODULE = "experiments.compare_baselines"


@pytest.mark.slow
def test_runs_end_to_end_and_writes_its_files(run_module, tmp_path):
    out = tmp_path / "out"
    result = run_module(MODULE, "--num_problems=3", "--num_train=3", "--num_steps=6",
                        "--baselines=gradient_descent,lbfgs", f"--out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("margin_of_victory.png", "curves.npz", "summary.md"):
        assert (out / name).stat().st_size > 0, name
    curves = np.load(out / "curves.npz")
    assert sorted(curves.files) == ["gradient_descent", "lbfgs"]
    assert curves["lbfgs"].shape == (3, 7)
    summary = (out / "summary.md").read_text()
    assert "| gradient_descent | learning_rate=" in summary and "| lbfgs |" in summary


@pytest.mark.parametrize("flag, message", [
    ("--family=logistic", "flag --family=logistic: --family must be one of logistic_regression, "
                          "mlp_classifier"),
    ("--num_problems=0", "flag --num_problems=0: 0 is not a positive integer"),
    ("--baselines=gradient_descent,adam", "--baselines: unknown ['adam']"),
])
def test_bad_flags_give_clear_errors(run_module, tmp_path, flag, message):
    result = run_module(MODULE, flag, f"--out={tmp_path}")
    assert result.returncode != 0
    assert result.stderr.startswith("compare_baselines.py: error: ")
    assert message in result.stderr and len(result.stderr.splitlines()) == 1  # no help text


def test_unwritable_out_is_refused_before_work(run_module, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = run_module(MODULE, f"--out={os.path.join(blocker, 'sub')}")
    assert result.returncode != 0
    assert "is not a writable directory" in result.stderr
    assert "grid points tuned" not in result.stderr


def test_summary_table_median_gap_is_robust_to_one_failed_problem():
    curves = {"a": np.array([[1.0, 0.5, 0.1], [1.0, 0.5, 0.1], [1.0, 0.9, 5.0]]),
              "b": np.array([[1.0, 0.6, 0.2]] * 3)}
    margins = {name: values.mean(axis=0) for name, values in
               evaluation.margin_of_victory(curves, per_problem=True).items()}
    table = summary_table(curves, {"a": {}, "b": {}}, margins)
    assert "| a | - | 1.733333 | 0.0e+00 |" in table  # worse mean, best on 2 of 3 problems
    assert "| b | - | 0.200000 | 1.0e-01 |" in table
