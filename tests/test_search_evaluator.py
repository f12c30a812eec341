"""The population evaluator: accuracy, isolation of diverging members, sweep choice, dedup,
zero recompiles, sharding over 4 CPU devices, and sequence labels (the language model)."""

import dataclasses

import jax
import numpy as np
import pytest
from conftest import run_in_this_process, run_on_devices

from lopt import rules
from lopt.search import evaluator, fingerprint, tasks

DIVERGING = "log(g - g)"  # log|0| = -inf: every learning rate diverges at the first step
POPULATION = ["adam", "g", DIVERGING, "m", "rmsprop"]
DIGITS_CONFIG = evaluator.EvaluatorConfig(chunk_size=len(POPULATION))  # the paper's protocol


@pytest.fixture(scope="module")
def digits_scores():
    population = [rules.parse(text) for text in POPULATION]
    return evaluator.evaluate(population, tasks.digits_mlp(), DIGITS_CONFIG, jax.random.key(0))


@pytest.mark.slow
def test_adam_and_sgd_reach_90_percent_on_digits(digits_scores):
    reward = dict(zip(POPULATION, digits_scores.reward, strict=True))
    assert reward["adam"] > 0.9 and reward["g"] > 0.9, reward
    assert not digits_scores.diverged[[0, 1, 3, 4]].any()
    assert set(digits_scores.learning_rate[[0, 1, 3, 4]]) <= set(evaluator.PAPER_LEARNING_RATES)


@pytest.mark.slow
def test_diverging_member_is_flagged_and_isolated(digits_scores):
    index = POPULATION.index(DIVERGING)
    assert digits_scores.diverged[index]
    assert digits_scores.reward[index] == pytest.approx(0.1)  # chance accuracy, 10 classes
    assert np.isnan(digits_scores.learning_rate[index])
    compiled = evaluator._score_members_sharded._cache_size()
    replaced = [rules.parse(t) for t in POPULATION[:index] + ["sign(m)"] + POPULATION[index + 1:]]
    again = evaluator.evaluate(replaced, tasks.digits_mlp(), DIGITS_CONFIG, jax.random.key(0))
    assert evaluator._score_members_sharded._cache_size() == compiled, "no new compilation"
    others = [i for i in range(len(POPULATION)) if i != index]
    np.testing.assert_array_equal(again.reward[others], digits_scores.reward[others])
    np.testing.assert_array_equal(again.learning_rate[others], digits_scores.learning_rate[others])
    assert not again.diverged[index]


QUADRATIC_CONFIG = evaluator.EvaluatorConfig(
    learning_rates=(1e-3, 1e-2, 1e-1, 1.0, 10.0), steps_per_epoch=20, final_epochs=1)


def _numpy_gradient_descent(task, rate, steps):
    matrix = np.asarray(task.problem["matrix"], np.float64)
    vector = np.asarray(task.problem["vector"], np.float64)
    x = np.asarray(task.start, np.float64)
    with np.errstate(all="ignore"):
        for _ in range(steps):
            x = x - rate * (matrix @ x - vector)
        loss = 0.5 * x @ matrix @ x - vector @ x
    return loss if np.isfinite(loss) else np.inf


def test_sweep_choice_for_sgd_on_quadratic_matches_brute_force():
    task = tasks.quadratic()
    scores = evaluator.evaluate([rules.parse("g")], task, QUADRATIC_CONFIG, jax.random.key(0))
    brute = [_numpy_gradient_descent(task, rate, 20) for rate in QUADRATIC_CONFIG.learning_rates]
    best = QUADRATIC_CONFIG.learning_rates[int(np.argmin(brute))]
    assert scores.learning_rate[0] == pytest.approx(best)
    np.testing.assert_allclose(-scores.reward[0], min(brute), rtol=1e-4)


@pytest.mark.parametrize("first, second", [
    ("g * m", "m * g"), ("g + m", "m + g"), ("g", "-(-g)"), ("exp(log(g2))", "g2"),
])
def test_equivalent_rules_share_a_fingerprint(first, second):
    a, b = fingerprint.fingerprint_rules([rules.parse(first), rules.parse(second)])
    assert a == b


def test_different_rules_have_different_fingerprints():
    texts = ["g", "m", "-g", "sign(g)", "drop(g, 0.1)", "drop(g, 0.3)", "clip(g, 1e-5)",
             "clip(g, 1e-4)", "g * exp(sign(g) * sign(m))", "adam", "rmsprop", "noise"]
    prints = fingerprint.fingerprint_rules([rules.parse(t) for t in texts])
    assert len(set(prints)) == len(texts)


def test_cache_skips_known_rules():
    task, cache = tasks.quadratic(), {}
    first = evaluator.evaluate([rules.parse("g * m")], task, QUADRATIC_CONFIG,
                               jax.random.key(1), cache=cache)
    compiled = evaluator._score_members_sharded._cache_size()
    second = evaluator.evaluate([rules.parse("m * g"), rules.parse("g * m")], task,
                                QUADRATIC_CONFIG, jax.random.key(2), cache=cache)
    assert len(cache) == 1
    np.testing.assert_array_equal(second.reward, [first.reward[0]] * 2)
    third = evaluator.evaluate([rules.parse(t) for t in ("g", "m * g", "sign(m)", "-g")], task,
                               QUADRATIC_CONFIG, jax.random.key(3), cache=cache)
    assert len(cache) == 4 and third.reward[1] == first.reward[0]
    assert evaluator._score_members_sharded._cache_size() == compiled, \
        "populations of other sizes, partly cached, compile nothing"


_SHARDING_SCRIPT = """
import json, sys, jax
from lopt import rules
from lopt.search import evaluator, tasks
config = evaluator.EvaluatorConfig(learning_rates=(1e-3, 1e-2, 1e-1, 1.0, 10.0),
                                   steps_per_epoch=20, final_epochs=1, chunk_size=2)
texts = ["g", "m", "adam", "drop(g, 0.3)", "g + noise"]
scores = evaluator.evaluate([rules.parse(t) for t in texts], tasks.quadratic(), config,
                            jax.random.key(3))
print(json.dumps({"devices": jax.device_count(), "reward": scores.reward.tolist(),
                  "lr": scores.learning_rate.tolist()}))
"""


@pytest.mark.slow
def test_four_devices_give_the_single_device_scores():
    single = run_in_this_process(_SHARDING_SCRIPT)
    sharded = run_on_devices(_SHARDING_SCRIPT, 4)
    assert (single["devices"], sharded["devices"]) == (1, 4)
    assert single["lr"] == sharded["lr"]
    # Per-device batch widths differ (members are padded to a multiple of the device count), so
    # XLA may vectorise float32 sums differently: equal up to rounding, not bit for bit.
    np.testing.assert_allclose(sharded["reward"], single["reward"], rtol=1e-5)


@pytest.mark.slow
def test_language_model_reward_is_next_character_accuracy():
    """Labels [N, L] (one per position) through training and batched validation."""
    task = tasks.stdlib_lstm_lm(hidden_sizes=(16,), embedding_size=8, num_chars=4000)
    # One learning rate and equal stage lengths: sweep and final run share one compilation.
    config = evaluator.EvaluatorConfig(learning_rates=(3e-2,), batch_size=16, steps_per_epoch=20,
                                       final_epochs=1, chunk_size=1, depth=1,
                                       eval_batch_size=8)  # 24 validation sequences: 3 batches
    scores = evaluator.evaluate([rules.parse("adam")], task, config, jax.random.key(0))
    assert not scores.diverged[0]
    assert 5 / 97 < scores.reward[0] == scores.val_accuracy[0] < 1


def test_best_validation_over_epochs_is_the_best_epoch_end():
    task = tasks.quadratic()
    base = evaluator.EvaluatorConfig(learning_rates=(1e-3, 1e-2), steps_per_epoch=10,
                                     final_epochs=3, chunk_size=2)
    candidates = [rules.parse("g"), rules.parse("-g")]  # descent improves, ascent worsens
    key = jax.random.key(0)
    once = evaluator.evaluate(candidates, task, base, key)
    every = evaluator.evaluate(candidates, task,
                               dataclasses.replace(base, validate_every_epoch=True), key)
    np.testing.assert_allclose(every.val_accuracy, once.val_accuracy, rtol=1e-6)
    np.testing.assert_array_equal(once.best_val_accuracy, once.val_accuracy)
    # Ascent from the start gets worse every epoch: its best is after the first epoch.
    start = task.family.loss(task.problem, task.start)
    rate = float(every.learning_rate[1])
    x = np.asarray(task.start, np.float64)
    gradient = jax.grad(lambda y: task.family.loss(task.problem, y))
    for _ in range(10):
        x = x + rate * np.asarray(gradient(jax.numpy.asarray(x, np.float32)))
    after_one_epoch = -float(task.family.loss(task.problem, jax.numpy.asarray(x, np.float32)))
    assert after_one_epoch < -float(start)
    np.testing.assert_allclose(every.best_val_accuracy[1], after_one_epoch, rtol=1e-4)
    assert every.best_val_accuracy[1] > every.val_accuracy[1]
    np.testing.assert_allclose(every.best_val_accuracy[0], every.val_accuracy[0], rtol=1e-6)


def test_bad_input_raises_clear_errors():
    task = tasks.quadratic()
    with pytest.raises(ValueError, match="needs a PRNG key"):
        evaluator.evaluate([rules.parse("g")], task)
    with pytest.raises(ValueError, match="non-empty list of Rules"):
        evaluator.evaluate([], task, key=jax.random.key(0))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        evaluator.EvaluatorConfig(batch_size=0)
    with pytest.raises(ValueError, match="learning_rates must be positive"):
        evaluator.EvaluatorConfig(learning_rates=(0.1, -1.0))
