"""The search driver and binary: outputs, kill-and-resume equals uninterrupted, bad input."""

import dataclasses
import json
import os
import re

import jax
import pytest

from lopt import rules
from lopt.search import driver, strategies

SMOKE = driver.SearchConfig.preset("smoke", checkpoint_every=2)
KEYS = {"rule", "simplified", "fingerprint", "score", "learning_rate", "diverged", "pruned",
        "cache_hit", "iteration", "stage", "proxy_score", "task_scores", "learning_rates"}


def _read(path):
    with open(path) as file:
        return file.read()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("uninterrupted"))
    return out, driver.run(SMOKE, jax.random.key(0), out=out)


def test_outputs(uninterrupted):
    out, result = uninterrupted
    lines = _read(os.path.join(out, "results.jsonl")).splitlines()
    assert len(lines) == SMOKE.budget == len(result.rows)
    rows = [json.loads(line) for line in lines]
    assert all(set(row) == KEYS for row in rows)
    assert [row["iteration"] for row in rows] == [i // SMOKE.batch_size for i in range(40)]
    assert result.top[0]["score"] == max(row["score"] for row in rows)
    assert len({row["fingerprint"] for row in result.top}) == len(result.top)
    assert set(result.baselines) == {"sgd", "momentum", "adam", "rmsprop"}
    assert set(os.listdir(out)) == {"results.jsonl", "config.json", "checkpoint.npz"}
    for row in result.top:  # every discovered rule is usable as an optimizer at once
        rules.to_optax(rules.parse(row["simplified"]), 1e-3)
    assert all(row["simplified"] == str(rules.simplify(rules.parse(row["rule"]))) for row in rows)
    # A cache hit is a fingerprint sampled before; pruned rows are untrained and at the floor.
    seen = set()
    for row in rows:
        assert row["cache_hit"] == (row["fingerprint"] in seen)
        seen.add(row["fingerprint"])
    pruned = [row for row in rows if row["pruned"]]
    assert pruned and all(row["learning_rate"] is None for row in pruned)
    assert len({row["score"] for row in pruned}) == 1
    summary = driver.sampling_summary(rows)
    assert summary["sampled"] == 40 and summary["cache_hits"] == 40 - len(seen)
    assert summary["trained"] == len({row["fingerprint"] for row in rows if not row["pruned"]})


@pytest.mark.parametrize("strategy", ["ppo", "evolution"])
def test_kill_and_resume_equals_uninterrupted(uninterrupted, tmp_path, strategy):
    if strategy == "ppo":
        config = SMOKE
        reference_out, reference = uninterrupted
    else:
        config = dataclasses.replace(SMOKE, strategy=strategies.Evolution(
            space=SMOKE.space, batch_size=SMOKE.batch_size))
        reference_out = str(tmp_path / "reference")
        reference = driver.run(config, jax.random.key(0), out=reference_out)
    out = str(tmp_path / "split")
    # "Killed" after 3 iterations: the checkpoint is from iteration 2, so iteration 3's rows are
    # on file beyond it, and a half-written line follows them.
    driver.run(config, jax.random.key(0), out=out, max_iterations=3)
    with open(os.path.join(out, "results.jsonl"), "a") as file:
        file.write('{"rule": "g", "finger')
    resumed = driver.run(config, jax.random.key(0), out=out, resume=True)
    name = "results.jsonl"
    assert _read(os.path.join(out, name)) == _read(os.path.join(reference_out, name))
    assert resumed.top == reference.top and resumed.rows == reference.rows
    assert resumed.baselines == reference.baselines


def test_resume_refuses_a_different_config(uninterrupted):
    out, _ = uninterrupted
    changed = dataclasses.replace(SMOKE, strategy=strategies.RandomSearch(batch_size=5))
    with pytest.raises(ValueError, match=r"strategy\.batch_size \(10 there, 5 now\), "
                                         r"strategy\.name \('ppo' there, 'random' now\)"):
        driver.run(changed, jax.random.key(0), out=out, resume=True)
    with pytest.raises(ValueError, match=r"different run: key \(\[0, 0\] there, \[0, 1\] now"):
        driver.run(SMOKE, jax.random.key(1), out=out, resume=True)
    with pytest.raises(ValueError, match="already holds a search"):
        driver.run(SMOKE, jax.random.key(0), out=out)


@pytest.mark.parametrize(("change", "message"), [
    ({"strategy": "ppo"}, "SearchConfig.strategy must be a lopt.search.strategies.Strategy "
                          "(PPOSearch, Evolution, RandomSearch or your own subclass), got 'ppo'"),
    ({"task": "mnist"}, "unknown task 'mnist'"),
    ({"budget": 0}, "budget must be a positive integer"),
])
def test_bad_config(change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        dataclasses.replace(SMOKE, **change)
    with pytest.raises(ValueError, match="unknown preset 'huge'; valid: smoke, cpu, cpu_suite, "
                                         "cpu_suite_depth3, paper"):
        driver.SearchConfig.preset("huge")


def test_binary_smoke_end_to_end(run_module, tmp_path):
    out = str(tmp_path / "run")
    completed = run_module("experiments.search_rules", "--config=smoke", "--strategy=random",
                           f"--out={out}")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Best rule:" in completed.stdout
    assert len(_read(os.path.join(out, "results.jsonl")).splitlines()) == 40
    assert {"top_rules.md", "reward_curve.png", "checkpoint.npz"} <= set(os.listdir(out))
    top_rules = _read(os.path.join(out, "top_rules.md"))
    assert "lopt.rules.to_optax(lopt.rules.parse(" in top_rules and "| adam |" in top_rules
    assert re.search(r"Sampled 40 rules: \d+ cache hits .*, \d+ pruned .*, \d+ trained", top_rules)
    best = completed.stdout.split("Best rule: ")[1].split(" (score")[0]
    assert f"| 1 | `{best}` |" in top_rules
    resumed = run_module("experiments.search_rules", "--config=smoke", "--strategy=ppo",
                         f"--out={out}", "--resume")
    assert resumed.returncode != 0 and "strategy.name ('random' there, 'ppo' now)" in resumed.stderr
    # --strategy=ppo is the preset's PPO search with its own settings (smoke: learning rate 2e-4).
    assert "strategy.ppo.learning_rate (None there, 0.0002 now)" in resumed.stderr
    reseeded = run_module("experiments.search_rules", "--config=smoke", "--strategy=random",
                          f"--out={out}", "--resume", "--seed=1")
    assert reseeded.returncode != 0 and "key ([0, 0] there, [0, 1] now)" in reseeded.stderr


@pytest.mark.parametrize(("flags", "message"), [
    (["--strategy=annealing"], "unknown strategy 'annealing'; valid: ppo, evolution, random"),
    (["--strategy=random", "--clip_epsilon=0.1"], "only --strategy=ppo takes --clip_epsilon"),
    (["--task=mnist"], "unknown task"),
    (["--config=huge"], "unknown preset"),
    (["--budget=0"], "--budget must be positive"),
    (["--out=/proc/lopt_search"], "cannot create output directory"),
    (["--operands=g,q"], "operands must be distinct items of"),
    (["--unaries=neg,exp"], "needs the identity unary"),
    (["--coordinator_address=localhost:1"], "need all of coordinator_address, num_processes"),
])
def test_binary_bad_input(run_module, flags, message):
    completed = run_module("experiments.search_rules", "--config=smoke", "--out=/tmp/unused",
                           *flags)
    assert completed.returncode != 0 and message in completed.stderr
    assert "mean reward" not in completed.stderr  # refused before any work


def test_new_rules_compile_nothing(uninterrupted, tmp_path):
    from lopt.search import controller, evaluator, fingerprint, ppo

    jitted = (evaluator._score_members_sharded, controller.RuleController.sample,
              controller.RuleController.score, ppo.update, fingerprint._probe_all)
    before = [function._cache_size() for function in jitted]
    driver.run(SMOKE, jax.random.key(1), out=str(tmp_path), max_iterations=2)
    assert [function._cache_size() for function in jitted] == before
