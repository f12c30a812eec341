"""The reproduce binary at --scale=smoke (every --which; nos_suite in test_search_suite.py), its
bad-flag errors, and publishing reports into a README."""

import json
import re

import jax
import numpy as np
import pytest

from experiments.reproduction import lto, report
from lopt import evaluation, gps, objectives

REPRODUCE = "experiments.reproduce"
ALL = ("lto_logistic", "lto_robust", "lto_mlp", "lto_transfer", "lto_trajectories",
       "lto_vs_rules", "distill", "nos_table", "nos_rosenbrock", "nos_search", "nos_transfer")
# nos_suite runs at smoke scale in tests/test_search_suite.py, sharing that module's
# compiled programs; lto_nets is in the run below but not checked here.
WHICH = ",".join(ALL + ("lto_nets",))


@pytest.mark.slow
def test_every_experiment_runs_at_smoke_scale(run_module, tmp_path):
    out = tmp_path / "reproduce"
    result = run_module(REPRODUCE, f"--which={WHICH}", "--scale=smoke", f"--out={out}",
                        timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]
    results = (out / "results.md").read_text()
    for name in ALL:
        text = (out / name / "report.md").read_text()
        assert f"--which={name} --scale=smoke" in text
        for figure in re.findall(r"\]\(\./([^)]+\.png)\)", text):
            assert (out / name / figure).stat().st_size > 1000, (name, figure)
        assert re.search(r"\| ?\S", text), f"{name} has no table"
        assert f"## {name}" in results
    margins = (out / "lto_logistic" / "report.md").read_text()
    assert "| predicted_step_descent |" in margins and "learned beats it at" in margins
    assert "Against the paper's baselines" in margins
    assert "line_search_margin_of_victory.png" in margins
    for name in ("lto_logistic", "lto_robust", "lto_mlp", "lto_transfer"):  # verdict check
        text = (out / name / "report.md").read_text()
        assert "fresh draw 1, final objective" in text, name
        assert text.count("**spread; verdict on the worst**") == 2, name
    assert (out / "lto_mlp" / "learned" / "learned.npz").exists()
    both = (out / "lto_vs_rules" / "report.md").read_text()
    for family in lto.FAMILIES.values():  # reuses the lto_FAMILY policies trained above
        assert f"| {family} | searched_rule | rule=`" in both and f"On {family}, " in both
        assert (out / "lto_vs_rules" / family / "search" / "results.jsonl").exists()
    assert "lto_vs_rules / GPS" not in result.stderr and "distill / GPS" not in result.stderr
    nets_report = (out / "lto_nets" / "report.md").read_text()
    assert "Across 2 meta-training runs on the same nets" in nets_report
    assert (out / "lto_nets" / "learned_run1" / "learned.npz").exists()
    distilled = (out / "distill" / "report.md").read_text()
    assert "| best single operand |" in distilled and "| distilled_rule_tuned |" in distilled
    assert "| distilled, with the past step |" in distilled
    assert "| distilled_rule_past_step | learning_rate=" in distilled
    assert "#### The neural-net optimizer" in distilled and "| steps_800 | " in distilled
    assert "distill / coordinate GPS" not in result.stderr  # reuses lto_nets' optimizer
    search = (out / "nos_search" / "report.md").read_text()
    assert "on selection seeds" in search and "| selection (1 seeds) |" in search
    # Progress: each GPS stage, the job's ETA after it, and the time per stage at the end.
    log = result.stderr
    assert re.search(r"lto_logistic / GPS iteration 1/3: optimise: done in [\d.]+s; "
                     r"job ETA \d+(m\d\ds|s)", log)
    assert "reproduce: time per stage" in log and "XLA compiled" in log
    # Re-scoring rules over seeds is a stage of its own (rate and ETA while it runs).
    assert re.search(r"nos_table / \w+: 20 rules: done in [\d.]+s", log)


def test_a_trained_optimizer_is_reused_and_exported_with_provenance(tmp_path, monkeypatch):
    family = objectives.logistic_regression()
    train = family.sample(jax.random.key(0), 3)
    settings = lto.Settings("smoke", str(tmp_path), export_dir=str(tmp_path / "pretrained"))
    learned, origin = lto.learned_optimizer(settings, str(tmp_path / "lto_logistic"), family,
                                            family.name, train, jax.random.key(1), "CMD")
    assert "GPS, `smoke` preset" in origin and len(learned.history) == 3
    provenance = json.loads((tmp_path / "pretrained" / family.name / "provenance.json")
                            .read_text())
    assert provenance["command"] == "CMD --export_pretrained"
    assert provenance["scale"] == "smoke"
    exported = gps.load(str(tmp_path / "pretrained" / family.name))
    np.testing.assert_array_equal(exported.policy.network["Dense_0"]["kernel"],
                                  learned.policy.network["Dense_0"]["kernel"])

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(gps, "train", no_training)
    (tmp_path / "pretrained").rename(tmp_path / "first_export")
    again, again_origin = lto.learned_optimizer(settings, str(tmp_path / "lto_logistic"),
                                                family, family.name, train,
                                                jax.random.key(1), "CMD")
    assert again.history == learned.history
    assert again_origin == origin, "a reused optimizer is reported like the trained one"
    reexported = json.loads((tmp_path / "pretrained" / family.name / "provenance.json")
                            .read_text())
    assert reexported["training_seconds"] == provenance["training_seconds"]
    (tmp_path / "lto_logistic" / lto.TRAINING_FILE).unlink()  # a directory from before
    _, unknown_time = lto.learned_optimizer(settings, str(tmp_path / "lto_logistic"), family,
                                            family.name, train, jax.random.key(1), "CMD")
    assert unknown_time == origin.rsplit(",", 1)[0]


@pytest.mark.parametrize("flags, message", [
    (["--which=lto_bogus"], "--which: unknown ['lto_bogus']"),
    (["--scale=huge"], "flag --scale=huge: value should be one of"),
    (["--use_pretrained", "--export_pretrained"], "exclude each other"),
    (["--which=nos_table", "--data_dir=/nonexistent/cifar"], "--data_dir:"),
])
def test_bad_flags_give_clear_errors(run_module, tmp_path, flags, message):
    result = run_module(REPRODUCE, *flags, f"--out={tmp_path}")
    assert result.returncode != 0
    assert message in result.stderr


def _report(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "curve.png").write_bytes(b"png")
    return report.Report("nos_demo", "A demo", "python -m experiments.reproduce --which=nos_demo",
                         "Measured 0.5.", "| a | b |\n|---|---|\n| 1 | 2 |\n", ("curve.png",))


def test_publish_replaces_only_its_block_and_copies_figures(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- reproduce:nos_demo -->\nold numbers\n"
                      "<!-- /reproduce:nos_demo -->\nhand-written explanation\n")
    result = _report(tmp_path)
    report.publish(result, str(tmp_path / "run"), str(readme), str(tmp_path / "docs" / "figures"))
    text = readme.read_text()
    assert "old numbers" not in text and "Measured 0.5." in text and "| 1 | 2 |" in text
    assert text.startswith("intro\n") and text.endswith("hand-written explanation\n")
    assert "![nos_demo: nos_demo_curve.png](docs/figures/nos_demo_curve.png)" in text
    assert (tmp_path / "docs" / "figures" / "nos_demo_curve.png").read_bytes() == b"png"
    report.publish(result, str(tmp_path / "run"), str(readme), str(tmp_path / "docs" / "figures"))
    assert readme.read_text() == text  # publishing twice changes nothing


def test_a_written_report_loads_back_equal(tmp_path):
    result = _report(tmp_path)
    report.write(result, str(tmp_path / "run"))
    assert report.load(str(tmp_path / "run")) == result
    with pytest.raises(ValueError, match="no readable report"):
        report.load(str(tmp_path))


def test_publish_without_a_block_names_the_missing_marker(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no blocks here\n")
    with pytest.raises(ValueError, match="<!-- reproduce:nos_demo -->"):
        report.publish(_report(tmp_path), str(tmp_path / "run"), str(readme),
                       str(tmp_path / "figures"))


def test_cpu_scale_trains_the_4_dimensional_families_on_more_than_the_papers_problems():
    settings = lto.Settings("cpu", "unused")
    sizes = {}
    for name in ("logistic_regression", "robust_linear_regression", "mlp_classifier"):
        # Shapes only (`jax.eval_shape`): drawing 1800 problems op by op takes seconds.
        train, test, x0, _, _ = jax.eval_shape(
            lambda name=name: lto.draw_problems(settings, objectives.get(name), name))
        sizes[name] = (evaluation.num_problems(train), evaluation.num_problems(test), x0.shape[0])
    assert sizes == {"logistic_regression": (1800, 100, 100),
                     "robust_linear_regression": (600, 100, 100),
                     "mlp_classifier": (80, 100, 100)}
    paper = lto.Settings("paper", "unused")
    train = jax.eval_shape(lambda: lto.draw_problems(paper, objectives.get("logistic_regression"),
                                                 "logistic_regression"))[0]
    assert evaluation.num_problems(train) == objectives.PAPER_NUM_TRAIN["logistic_regression"]
    # Logistic regression runs 2 GPS iterations at the cpu scale, everything else the preset's.
    preset = gps.Config.preset("cpu")
    assert settings.sizes.gps_config("logistic_regression") == preset.replace(
        loop={"num_iterations": 2})
    assert settings.sizes.gps_config("mlp_classifier") == preset
    assert paper.sizes.gps_config("logistic_regression") == gps.Config.preset("paper")


def test_the_lto_nets_verdict_counts_every_meta_training_run():
    """Handmade wins: the counts of each run in order, and the verdict word from all runs
    (one run short of the bar makes it 'partly')."""
    from experiments.reproduction import nets

    def wins(best, ahead):  # task i beats all baselines if i < best, SGD and momentum if i < ahead
        return {f"t{i}": {name: i < best or (name in ("sgd", "momentum") and i < ahead)
                          for name in nets.BASELINES} for i in range(6)}

    single = nets._verdict([wins(4, 6)], 6, "P")
    assert "on 4 of 6 held-out tasks (t0, t1, t2, t3)" in single and "**reproduced**" in single
    assert "Across" not in single
    three = nets._verdict([wins(4, 6), wins(5, 6), wins(2, 3)], 6, "P")
    assert "least of all on 4, 5 and 2 of 6 tasks" in three
    assert "ahead of tuned SGD and momentum on 6, 6 and 3" in three
    assert "**partly reproduced**" in three
    assert "**not reproduced**" in nets._verdict([wins(0, 0), wins(0, 0)], 6, "P")
