"""Suite scoring and the funnel (`lopt.search.suite`) inside the search driver."""

import dataclasses
import json
import math
import os
import shutil

import jax
import numpy as np
import pytest

from experiments.reproduction import nos, nos_suite
from lopt import rules
from lopt.search import driver, evaluator, fingerprint, suite, tasks

SMOKE = driver.SearchConfig.preset("smoke")
# The smoke search of `experiments.reproduce --which=nos_suite` (the last test reuses its run).
FUNNEL = nos_suite.SCALES["smoke"].search
PROXY = FUNNEL.proxy


def test_promote_takes_the_best_fraction_of_the_eligible():
    scores = np.array([0.5, 2.0, 1.0, 3.0, 1.0, 0.9])
    eligible = np.array([True, True, True, False, True, True])
    np.testing.assert_array_equal(suite.promote(scores, eligible, 0.4),  # ceil(0.4 * 5) = 2
                                  [False, True, True, False, False, False])
    np.testing.assert_array_equal(suite.promote(scores, eligible, 1.0), eligible)
    assert not suite.promote(scores, np.zeros(6, bool), 0.5).any()


def test_normalised_scores_are_one_for_adam_and_zero_at_the_failure_reward():
    caches = {}
    scoring = suite.prepare(("quadratic", "rosenbrock"), SMOKE.evaluator, None,
                            jax.random.key(3), caches, depth=SMOKE.evaluator.depth)
    codes = rules.encode([rules.LIBRARY["adam"], rules.parse("1e-3*w"), rules.parse("g")],
                         SMOKE.evaluator.depth)
    scores = suite.score(codes, scoring, caches)
    np.testing.assert_allclose(scores.task_scores[0], [1.0, 1.0])
    np.testing.assert_array_equal(scores.task_scores[1], [0.0, 0.0])  # pruned: the floor
    assert list(scores.stage) == ["full", "pruned", "full"]
    # By hand: (reward - failure reward) / (adam's reward - failure reward), then the mean.
    expected = []
    for task in ("quadratic", "rosenbrock"):
        task = tasks.get(task)
        raw = evaluator.evaluate([rules.LIBRARY["adam"], rules.parse("g")], task,
                                 SMOKE.evaluator, jax.random.key(3)).reward
        floor = evaluator.failure_reward(task, SMOKE.evaluator, jax.random.key(3))
        expected.append((raw[1] - floor) / (raw[0] - floor))
    np.testing.assert_allclose(scores.task_scores[2], expected)
    np.testing.assert_allclose(scores.reward, [1.0, 0.0, np.mean(expected)])
    # One task without a proxy keeps the paper's raw reward, exactly as the evaluator gives it.
    single = suite.prepare(("quadratic",), SMOKE.evaluator, None, jax.random.key(3), {},
                           depth=SMOKE.evaluator.depth)
    raw = evaluator.evaluate(codes, tasks.get("quadratic"), SMOKE.evaluator, jax.random.key(3))
    np.testing.assert_array_equal(suite.score(codes, single, {}).reward, raw.reward)


def test_several_full_seeds_average_scores_normalised_under_each_key():
    caches = {}
    scoring = suite.prepare(("quadratic", "rosenbrock"), SMOKE.evaluator, None,
                            jax.random.key(3), caches, depth=SMOKE.evaluator.depth, seeds=2)
    # Data-free tasks: only a random rule's training depends on the key.
    codes = rules.encode([rules.LIBRARY["adam"], rules.parse("drop(adam, 0.5)")],
                         SMOKE.evaluator.depth)
    scores = suite.score(codes, scoring, caches)
    np.testing.assert_allclose(scores.task_scores[0], [1.0, 1.0])
    keys = [scoring.full_key(0), scoring.full_key(1)]
    assert jax.random.key_data(keys[0]).tolist() == jax.random.key_data(jax.random.key(3)).tolist()
    assert len({tuple(jax.random.key_data(key).tolist())
                for key in (*keys, scoring.proxy_key())}) == 3
    expected = []
    for task in ("quadratic", "rosenbrock"):
        task = tasks.get(task)
        per_key = []
        for key in keys:  # by hand: normalised under each key, then the mean
            adam, rule = (evaluator.evaluate(codes[row:row + 1], task, SMOKE.evaluator,
                                             key).reward[0] for row in (0, 1))
            floor = evaluator.failure_reward(task, SMOKE.evaluator, key)
            per_key.append((rule - floor) / (adam - floor))
        assert per_key[0] != per_key[1]
        expected.append(np.mean(per_key))
    np.testing.assert_allclose(scores.task_scores[1], expected)
    # One seed is the search as it was: same identity, same cache names.
    assert suite.cache_name("full", "quadratic", 0) == "full:quadratic"
    plain = dataclasses.replace(SMOKE, task=("quadratic", "rosenbrock"))
    assert driver.run_identity(plain, jax.random.key(0)) != driver.run_identity(
        dataclasses.replace(plain, full_seeds=2), jax.random.key(0))
    assert "full_seeds" not in json.dumps(driver.run_identity(plain, jax.random.key(0)),
                                          default=str)


@pytest.fixture(scope="module")
def funnel_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("funnel"))
    return out, driver.run(FUNNEL, jax.random.key(0), out=out)


def test_the_funnel_promotes_exactly_the_configured_fraction(funnel_run):
    _, result = funnel_run
    rows = result.rows
    assert {row["stage"] for row in rows} == {"pruned", "proxy", "full"}
    for iteration in range(FUNNEL.num_iterations):
        batch = [row for row in rows if row["iteration"] == iteration]
        first = {}
        for row in batch:
            first.setdefault(row["fingerprint"], row)
        new = [row for row in first.values() if not row["cache_hit"]]
        # Eligible: new, not pruned, above the failure reward on the proxy and not diverged
        # there (a promoted one did not).
        eligible = [row for row in new if not row["pruned"] and row["proxy_score"] > 0
                    and (row["stage"] == "full" or not row["diverged"])]
        promoted = [row for row in eligible if row["stage"] == "full"]
        assert len(promoted) == math.ceil(PROXY.promote_fraction * len(eligible))
        if promoted:
            assert min(row["proxy_score"] for row in promoted) >= max(
                (row["proxy_score"] for row in eligible if row["stage"] == "proxy"),
                default=-np.inf)
    for row in rows:
        if row["stage"] == "full":  # the reward is the suite score
            assert row["score"] == pytest.approx(np.mean(list(row["task_scores"].values())))
        else:
            assert all(value is None for value in row["task_scores"].values())
            assert row["score"] == (0.0 if row["stage"] == "pruned" else row["proxy_score"])
    assert all(row["stage"] == "full" for row in result.top)
    assert result.baselines["adam"]["score"] == pytest.approx(1.0)
    assert result.baselines["adam"]["proxy_score"] == pytest.approx(1.0)


def test_a_funnel_search_is_deterministic_and_resumable(funnel_run, tmp_path):
    reference_out, reference = funnel_run
    out = str(tmp_path / "split")
    config = dataclasses.replace(FUNNEL, checkpoint_every=2)
    driver.run(config, jax.random.key(0), out=out, max_iterations=3)  # checkpoint at 2
    resumed = driver.run(config, jax.random.key(0), out=out, resume=True)
    with open(os.path.join(out, "results.jsonl")) as file, open(
            os.path.join(reference_out, "results.jsonl")) as reference_file:
        assert file.read() == reference_file.read()
    assert resumed.rows == reference.rows and resumed.baselines == reference.baselines
    # The run's time spans both calls: more than this call's iterations took.
    this_call = resumed.iteration_seconds.sum(axis=0)
    assert resumed.run_seconds > this_call[0] and resumed.run_evaluator_seconds > this_call[1]
    assert resumed.run_evaluator_seconds <= resumed.run_seconds
    with open(os.path.join(out, "config.json")) as file:
        identity = json.load(file)
    assert identity["proxy.promote_fraction"] == PROXY.promote_fraction
    changed = dataclasses.replace(config, proxy=dataclasses.replace(PROXY, promote_fraction=0.5))
    with pytest.raises(ValueError, match=r"proxy\.promote_fraction \(0\.3 there, 0\.5 now\)"):
        driver.run(changed, jax.random.key(0), out=out, resume=True)


@pytest.mark.parametrize("make, message", [
    (lambda: suite.Proxy(promote_fraction=0.0), r"promote_fraction must be in \(0, 1\]"),
    (lambda: dataclasses.replace(SMOKE, task=()), "a suite needs at least one task"),
    (lambda: dataclasses.replace(SMOKE, task=("quadratic", "nope")), "unknown task 'nope'"),
    (lambda: dataclasses.replace(SMOKE, proxy="quadratic"), "must be None or a lopt.search"),
    (lambda: suite.Proxy(task="nope"), "unknown proxy task 'nope'"),
    (lambda: dataclasses.replace(SMOKE, task=("quadratic", "quadratic")), "must be distinct"),
])
def test_bad_suites_are_refused_with_one_line(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_nos_suite_reports_and_exports_discovered_rules(funnel_run, tmp_path, monkeypatch):
    shutil.copytree(funnel_run[0], tmp_path / "nos_suite" / "search")  # resumed, not rerun
    settings = nos.Settings("smoke", str(tmp_path), export_dir=str(tmp_path / "rules"))
    result = nos_suite.search(settings, "nos_suite", "CMD")
    assert "| adam | 1.0000 |" in result.table and "(held out)" in result.table
    path = str(tmp_path / "rules" / nos_suite.DISCOVERED_FILE)
    provenance = rules.discovered.provenance(path)
    assert provenance["command"] == "CMD --export_pretrained"
    assert provenance["suite"] == ["quadratic", "rosenbrock"]
    entries = provenance["rules"]
    assert 1 <= len(entries) <= nos_suite.REPORTED_RULES
    selection = [entry["scores"]["selection"] for entry in entries]
    assert selection == sorted(selection, reverse=True)  # best first on the selection seeds
    discovered = rules.discovered.load(path)
    assert list(discovered) == [entry["name"] for entry in entries]
    for name, rule in discovered.items():  # each one an optax optimizer at once
        assert str(rule) == next(e["rule"] for e in entries if e["name"] == name)
        rules.to_optax(rule, 1e-2)
    # The verdict follows from the recorded scores: the first rule beats Adam (= 1) by more
    # than two standard errors on the suite's fresh seeds and on every held-out child's
    # verdict seeds (new ones, not the table's), or not.
    scores = json.loads((tmp_path / "nos_suite" / "scores.json").read_text())
    index = scores["rules"].index(entries[0]["rule"])
    assert not set(scores["verdict_seeds"]) & set(scores["fresh_seeds"])
    assert len(scores["verdict_seeds"]) == nos_suite.SCALES["smoke"].verdict_seeds
    columns = [np.mean(np.asarray(scores["per_task"])[:, index], axis=-1)]
    columns += [np.asarray(values) for values in scores["held_out_verdict"].values()]
    assert [len(c) for c in columns[1:]] == [len(scores["verdict_seeds"])]
    met = all(np.mean(c - 1) > 2 * np.std(c, ddof=1) / np.sqrt(len(c)) for c in columns)
    assert ("**met**" if met else "**not met**") in result.verdict
    # Every re-scoring was kept: run again, the report is the same without training anything.
    def refuse(*args):
        raise AssertionError("re-scoring trained again instead of reading its cache")

    monkeypatch.setattr(evaluator, "evaluate", refuse)
    assert nos_suite.search(settings, "nos_suite", "CMD").verdict == result.verdict


def test_rules_the_search_was_given_are_not_reported_as_found():
    # Rows as a search writes them, with fingerprints computed independently of `new_rules`.
    texts = ["adam * exp(sign(g) * sign(m))", "g + sign(g)", "sign(m) * sign(g)", "m", "adam"]
    fingerprints = fingerprint.fingerprint_rules([rules.parse(text) for text in texts])
    rows = [{"stage": "full", "fingerprint": f, "score": 2.0 - 0.1 * i, "simplified": t}
            for i, (t, f) in enumerate(zip(texts, fingerprints, strict=True))]
    rows.append({"stage": "proxy", "fingerprint": "x", "score": 9.0, "simplified": "g"})
    # Two of the given rules are rows' rules with the product written the other way round:
    # the same updates, so they must be left out by fingerprint, not by text.
    given = [rules.LIBRARY["adam"], rules.parse("sign(g) * sign(m)"),
             rules.parse("adam * exp(sign(m) * sign(g))")]
    found = nos_suite.new_rules(rows, given, count=5)
    assert [row["simplified"] for row in found] == ["g + sign(g)", "m"]
    assert [row["simplified"] for row in nos_suite.new_rules(rows, given, 1)] == ["g + sign(g)"]


def test_rules_are_chosen_by_their_worst_task():
    # [seeds, rules, tasks]: rule 0 has the best mean but loses on task 1; rule 1 never loses.
    scores = np.array([[[1.10, 0.97], [1.02, 1.01]],
                       [[1.06, 0.99], [1.02, 1.03]]])
    np.testing.assert_allclose(nos_suite.worst_task(scores), [0.98, 1.02])
