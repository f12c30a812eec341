"""The evaluate_rules binary end to end, rule-list splitting and bad input."""

import csv

import pytest

from experiments.evaluate_rules import split_rules

MODULE = "experiments.evaluate_rules"


def test_split_rules_keeps_commas_inside_parentheses():
    assert split_rules("clip(g, 1e-4) * m,adam, drop(m, 0.3) / exp(g2)") == [
        "clip(g, 1e-4) * m", "adam", "drop(m, 0.3) / exp(g2)"]


@pytest.mark.slow
def test_runs_end_to_end(run_module, tmp_path):
    result = run_module(MODULE, "--rules=g * exp(sign(g) * sign(m)),adam,sgd,log(g - g)",
                        "--task=quadratic", "--steps_per_epoch=5", "--final_epochs=1",
                        "--learning_rates=0.01,0.1", f"--out={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "scores.csv") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["rule", "val_accuracy", "learning_rate", "train_loss", "diverged"]
    by_rule = {row["rule"]: row for row in rows}
    assert set(by_rule) == {"g * exp(sign(g) * sign(m))", "adam", "sgd", "log(g - g)"}
    assert by_rule["log(g - g)"]["diverged"] == "True" and by_rule["adam"]["diverged"] == "False"
    assert (tmp_path / "scores.png").stat().st_size > 0
    assert "| `adam` |" in (tmp_path / "scores.md").read_text()


@pytest.mark.parametrize("flags, message", [
    (["--rules=g * expp(m)"], "--rules: cannot parse 'g * expp(m)'"),
    (["--task=mnist"], "flag --task=mnist: --task must be one of"),
    (["--task=cifar10_convnet", "--data_dir=/nonexistent"], "no CIFAR-10 data in"),
])
def test_bad_input_is_named(run_module, tmp_path, flags, message):
    result = run_module(MODULE, *flags, f"--out={tmp_path}")
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
