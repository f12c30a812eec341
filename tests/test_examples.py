"""The README's "Your own problems": each example quoted there in full, and each one run (a
user's task through the search binary; a user's family through train_gps in
tests/test_train_gps_binary.py)."""

import importlib
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import REPO_ROOT

import lopt

EXAMPLES = ("custom_task", "custom_family", "tune_found_rule")


def _example(name):
    with open(os.path.join(REPO_ROOT, "examples", f"{name}.py"), encoding="utf-8") as file:
        return file.read()


def test_the_readme_quotes_each_example_in_full():
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as file:
        readme = file.read()
    for name in EXAMPLES:
        assert f"```python\n{_example(name)}```" in readme, name


def test_the_injected_sweep_equals_plain_optax_runs():
    example = importlib.import_module("examples.tune_found_rule")
    for rate, swept in zip(example.learning_rates, example.losses, strict=True):
        opt = lopt.rules.to_optax("adam_powersign", float(rate))  # a LIBRARY name, same rule
        weights = jnp.zeros(5)
        state = opt.init(weights)
        for _ in range(100):
            updates, state = opt.update(jax.grad(example.loss)(weights), state, weights)
            weights = optax.apply_updates(weights, updates)
        np.testing.assert_allclose(swept, example.loss(weights), rtol=1e-3, atol=1e-6)
    assert example.losses[-1] < 1e-3 * example.losses[0]


_TASK_IDENTITY = """
import json, jax
from lopt.search import driver
config = driver.SearchConfig.preset("smoke", task="examples.custom_task:breast_cancer")
print(json.dumps(driver.run_identity(config, jax.random.key(0))))
"""


@pytest.mark.slow
def test_a_users_task_is_searched_by_name_and_identified_alike_in_a_new_process(run_module,
                                                                                 tmp_path):
    out = str(tmp_path / "search")
    result = run_module("experiments.search_rules", "--config=smoke", "--budget=10",
                        "--task=examples.custom_task:breast_cancer", f"--out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(out, "results.jsonl")) as file:
        rows = [json.loads(line) for line in file]
    assert len(rows) == 10 and all(0 <= row["score"] <= 1 for row in rows)
    with open(os.path.join(out, "config.json")) as file:
        identity = json.load(file)
    assert identity["task.name"] == "breast_cancer" and identity["data"]
    assert identity["task.class"] == "lopt.search.tasks.SupervisedTask"
    # What a resume checks, computed by another process: the same identity.
    other = subprocess.run([sys.executable, "-c", _TASK_IDENTITY], cwd=REPO_ROOT,
                           env=dict(os.environ, PYTHONPATH=REPO_ROOT, JAX_PLATFORMS="cpu"),
                           capture_output=True, text=True, timeout=300)
    assert other.returncode == 0, other.stderr[-3000:]
    saved = json.loads(other.stdout.strip().splitlines()[-1])
    assert {k: v for k, v in saved.items() if k != "budget"} == {
        k: v for k, v in identity.items() if k != "budget"}
