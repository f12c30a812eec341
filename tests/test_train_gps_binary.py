"""The train_gps and evaluate_learned binaries end to end, and their bad-flag errors."""

import json
import os

import jax
import numpy as np
import pytest

from experiments import common
from lopt import gps, objectives

TRAIN = "experiments.train_gps"
EVALUATE = "experiments.evaluate_learned"


RIDGE = "--family=examples.custom_family:Ridge"  # the README's own-family example


@pytest.mark.slow
def test_train_a_users_family_continue_it_in_a_new_process_then_evaluate(run_module, tmp_path):
    trained = tmp_path / "trained"
    result = run_module(TRAIN, RIDGE, "--config=smoke", "--num_train=3", "--num_iterations=1",
                        f"--out={trained}")
    assert result.returncode == 0, result.stderr[-3000:]
    if common.HOST_DEVICE_COUNT not in os.environ.get("XLA_FLAGS", ""):  # one per core
        assert f"GPS over {len(os.sched_getaffinity(0))} CPU devices" in result.stderr
    longer = run_module(TRAIN, RIDGE, "--config=smoke", "--num_train=3", "--num_iterations=2",
                        "--resume", f"--out={trained}")
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert "resumed from" in longer.stderr and "at iteration 1" in longer.stderr
    learned = gps.load(str(trained))
    assert learned.family == "Ridge" and learned.dim == 4 and len(learned.history) == 2
    assert (trained / "training.png").stat().st_size > 0
    again = run_module(TRAIN, RIDGE, "--config=smoke", "--num_train=3", f"--out={trained}")
    assert again.returncode != 0 and "pass --resume" in again.stderr
    reseeded = run_module(TRAIN, RIDGE, "--config=smoke", "--num_train=3", "--num_iterations=2",
                          "--seed=1", "--resume", f"--out={trained}")
    assert reseeded.returncode != 0 and "belongs to a different run: data (" in reseeded.stderr
    assert "now), key ([" in reseeded.stderr  # the seed's key is named too
    assert json.loads((trained / "config.json").read_text())["seed"] == 0  # left as it was

    out = tmp_path / "evaluation"
    result = run_module(EVALUATE, RIDGE, f"--checkpoint={trained}", "--num_problems=3",
                        "--num_train=3", "--num_steps=5", "--baselines=gradient_descent",
                        f"--out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    curves = np.load(out / "curves.npz")
    assert curves["predicted_step_descent"].shape == (3, 6)
    assert sorted(curves.files) == ["gradient_descent", "predicted_step_descent"]
    summary = (out / "summary.md").read_text()
    assert "| predicted_step_descent |" in summary and "learned beats it at" in summary
    assert (out / "margin_of_victory.png").stat().st_size > 0


@pytest.mark.slow
def test_train_the_coordinatewise_optimizer_then_refuse_a_reseeded_resume(run_module, tmp_path):
    out = tmp_path / "nets"
    result = run_module(TRAIN, "--family=neural_nets", "--config=smoke", f"--out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    learned = gps.load(str(out))
    assert isinstance(learned, gps.coordinate_learned.CoordinateLearned)
    assert learned.family == "neural_nets" and len(learned.history) == 1
    assert (out / "training.png").stat().st_size > 0
    reseeded = run_module(TRAIN, "--family=neural_nets", "--config=smoke", "--seed=1",
                          "--resume", f"--out={out}")
    assert reseeded.returncode != 0 and "key ([" in reseeded.stderr
    assert json.loads((out / "config.json").read_text())["seed"] == 0


@pytest.mark.parametrize("module, flags, message", [
    (TRAIN, ["--config=huge"], "flag --config=huge: value should be one of <cpu|paper|smoke>"),
    (TRAIN, ["--family=logistic"], "flag --family=logistic: --family must be one of"),
    (TRAIN, ["--family=nowhere.module:Ridge"], "cannot import module 'nowhere.module'"),
    (EVALUATE, ["--checkpoint=/nonexistent"], "is not a learned-optimizer directory"),
    (EVALUATE, ["--num_steps=0", "--checkpoint=x"], "0 is not a positive integer"),
    (EVALUATE, ["--baselines=adam", "--checkpoint=x"], "--baselines: unknown ['adam']"),
])
def test_bad_flags_give_clear_errors(run_module, tmp_path, module, flags, message):
    result = run_module(module, *flags, f"--out={tmp_path}")
    assert result.returncode != 0
    assert message in result.stderr


def test_evaluating_on_a_family_of_another_dimension_is_refused(run_module, tmp_path):
    family = objectives.logistic_regression()
    policy = gps.policy.init(jax.random.key(0), gps.FeatureConfig().state_size(4) - 4, 4, 50)
    gps.save(gps.Learned(policy, gps.FeatureConfig(), family.dim, family.name), str(tmp_path))
    result = run_module(EVALUATE, f"--checkpoint={tmp_path}", "--family=mlp_classifier",
                        f"--out={tmp_path / 'out'}")
    assert result.returncode != 0
    assert "dimension 4" in result.stderr and "dimension 12" in result.stderr


@pytest.mark.parametrize("given, expected", [
    ("", "--xla_cpu_multi_thread_eigen=false"),
    ("--xla_dump_to=/tmp/dump", "--xla_dump_to=/tmp/dump --xla_cpu_multi_thread_eigen=false"),
    ("--xla_cpu_multi_thread_eigen=true", "--xla_cpu_multi_thread_eigen=true"),
])
def test_gps_binaries_make_eigen_single_threaded_unless_xla_flags_say_otherwise(given,
                                                                                expected):
    assert common.with_xla_flag(given, "--xla_cpu_multi_thread_eigen", "false") == expected


@pytest.mark.parametrize("given, expected", [
    ("", "--xla_force_host_platform_device_count=3"),
    ("--xla_dump_to=/tmp/dump", "--xla_dump_to=/tmp/dump --xla_force_host_platform_device_count=3"),
    ("--xla_force_host_platform_device_count=1", "--xla_force_host_platform_device_count=1"),
])
def test_gps_binaries_add_host_devices_unless_xla_flags_set_a_count(given, expected):
    assert common.with_xla_flag(given, common.HOST_DEVICE_COUNT, 3) == expected
