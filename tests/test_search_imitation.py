"""Distillation: rules scored by how well they imitate a teacher's steps, against NumPy
replays of the teacher's trajectory, and with teachers a rule reproduces exactly."""

import jax
import numpy as np
import optax
import pytest

from lopt import objectives
from lopt import rules as rules_lib
from lopt.search import driver, evaluator, imitation

NUM_PROBLEMS, NUM_STEPS = 6, 20
RULES = ("g", "m", "adam", "sign(g)", "-g", "g * m")
CONFIG = evaluator.EvaluatorConfig(chunk_size=4)  # 6 rules: two chunks, the last one padded


@pytest.fixture(scope="module")
def family_and_problems():
    family = objectives.logistic_regression()
    return (family, family.sample(jax.random.key(0), NUM_PROBLEMS),
            family.init(jax.random.key(1), NUM_PROBLEMS))


def _scores(teacher, family_and_problems):
    family, problems, x0 = family_and_problems
    task = imitation.imitation_task("teacher", teacher, family, problems, NUM_STEPS, x0)
    return task, evaluator.evaluate([rules_lib.parse(text) for text in RULES], task, CONFIG,
                                    jax.random.key(0))


@pytest.mark.parametrize("teacher, rule, rate", [
    (optax.sgd(0.3), "g", 0.3),
    (rules_lib.to_optax("adam", 0.05), "adam", 0.05),
])
def test_the_rule_a_teacher_runs_imitates_it_exactly_at_its_rate(family_and_problems, teacher,
                                                                 rule, rate):
    task, scores = _scores(teacher, family_and_problems)
    own = RULES.index(rule)
    np.testing.assert_allclose(scores.reward[own], 0.0, atol=1e-5)  # the maximum reward
    np.testing.assert_allclose(scores.learning_rate[own], rate, rtol=1e-4)
    others = np.delete(scores.reward, own)
    assert np.all(others < scores.reward[own] - 1e-3), scores.reward
    # -g points uphill: no positive scale fits it, so it scores as standing still.
    assert scores.reward[RULES.index("-g")] == -1.0
    if rule == "g":  # the demonstration is the teacher's run: its steps are -0.3 g
        np.testing.assert_allclose(task.demonstration.steps,
                                   -0.3 * task.demonstration.gradients, rtol=1e-5, atol=1e-7)


def test_errors_and_scales_match_a_numpy_replay(family_and_problems):
    task, scores = _scores(optax.sgd(0.3), family_and_problems)
    gradients, steps = (np.asarray(array, np.float64) for array in
                        (task.demonstration.gradients, task.demonstration.steps))
    m = v = np.zeros_like(gradients[0])
    directions = {"m": [], "adam": [], "sign(g)": [], "g * m": []}
    for t, g in enumerate(gradients, start=1):
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        m_hat, v_hat = m / (1 - 0.9 ** t), v / (1 - 0.999 ** t)
        directions["m"].append(m_hat)
        directions["adam"].append(m_hat / (np.sqrt(v_hat) + 1e-8))
        directions["sign(g)"].append(np.sign(g))
        directions["g * m"].append(g * m_hat)
    for text, values in directions.items():
        d = np.stack(values)
        alpha = max(0.0, -np.sum(d * steps) / np.sum(d * d))
        error = np.sum((steps + alpha * d) ** 2) / np.sum(steps ** 2)
        index = RULES.index(text)
        np.testing.assert_allclose(-scores.reward[index], error, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(scores.learning_rate[index], alpha, rtol=1e-4)


def test_a_pruned_rule_gets_the_tasks_failure_reward(family_and_problems):
    task, _ = _scores(optax.sgd(0.3), family_and_problems)
    config = evaluator.EvaluatorConfig(chunk_size=4, prune=True)
    scores = evaluator.evaluate([rules_lib.parse("g - g")], task, config, jax.random.key(0))
    assert scores.pruned[0] and scores.reward[0] == imitation.FAILURE_REWARD


def test_a_search_on_another_teacher_is_another_run(family_and_problems):
    """Same problems and starts, another teacher: the run identity differs, so a resume of
    one into the other's directory is refused."""
    family, problems, x0 = family_and_problems
    tasks = [imitation.imitation_task("teacher", teacher, family, problems, NUM_STEPS, x0)
             for teacher in (optax.sgd(0.3), optax.sgd(0.2))]
    identities = [driver.run_identity(driver.SearchConfig.preset("smoke", task=task),
                                      jax.random.key(0)) for task in tasks]
    assert identities[0] != identities[1]
