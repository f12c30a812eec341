"""Distillation: rules scored by how well they imitate a teacher's steps, against NumPy
replays of the teacher's trajectory, and with teachers a rule reproduces exactly."""

import jax
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from lopt import objectives
from lopt import rules as rules_lib
from lopt.gps import network_family
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
    task = imitation.ImitationTask(
        "teacher", imitation.demonstrate(teacher, family, problems, NUM_STEPS, x0))
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


def _numpy_directions(gradients) -> dict[str, np.ndarray]:
    """Directions [T, N, dim] of a few rules replayed on `gradients` in NumPy (float64)."""
    gradients = np.asarray(gradients, np.float64)
    m = v = np.zeros_like(gradients[0])
    directions = {"g": [], "m": [], "adam": [], "sign(g)": [], "g * m": []}
    for t, g in enumerate(gradients, start=1):
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        m_hat, v_hat = m / (1 - 0.9 ** t), v / (1 - 0.999 ** t)
        directions["g"].append(g)
        directions["m"].append(m_hat)
        directions["adam"].append(m_hat / (np.sqrt(v_hat) + 1e-8))
        directions["sign(g)"].append(np.sign(g))
        directions["g * m"].append(g * m_hat)
    return {text: np.stack(values) for text, values in directions.items()}


def test_errors_and_scales_match_a_numpy_replay(family_and_problems):
    task, scores = _scores(optax.sgd(0.3), family_and_problems)
    steps = np.asarray(task.demonstration.steps, np.float64)
    for text, d in _numpy_directions(task.demonstration.gradients).items():
        alpha = max(0.0, -np.sum(d * steps) / np.sum(d * d))
        error = np.sum((steps + alpha * d) ** 2) / np.sum(steps ** 2)
        index = RULES.index(text)
        np.testing.assert_allclose(-scores.reward[index], error, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(scores.learning_rate[index], alpha, rtol=1e-4)


@pytest.mark.parametrize("text", ["g", "m", "adam"])
def test_the_past_step_fit_is_the_least_error_over_its_box(family_and_problems, text):
    """With the past step, the fitted (scale, momentum) of a rule on a momentum teacher's run
    is the minimum of a NumPy scan over momenta in [0, 0.99] (each with its best scale)."""
    family, problems, x0 = family_and_problems
    demo = imitation.demonstrate(optax.sgd(0.2, momentum=0.5), family, problems, NUM_STEPS, x0)
    task = imitation.ImitationTask("teacher", demo, past_step=True)
    codes = rules_lib.encode([rules_lib.parse(text)], 3)
    fit = task.fit(codes, 1, jax.random.key(0))
    d = _numpy_directions(demo.gradients)[text]
    s = np.asarray(demo.steps, np.float64)
    p = np.concatenate([np.zeros_like(s[:1]), s[:-1]])
    betas = np.linspace(0.0, imitation.MAX_MOMENTUM, 9901)
    alphas = np.maximum(0.0, -np.array([np.sum(d * (s - b * p)) for b in betas]) / np.sum(d * d))
    errors = np.array([np.sum((s + a * d - b * p) ** 2) for a, b in zip(alphas, betas,
                                                                         strict=True)])
    errors /= np.sum(s ** 2)
    best = int(np.argmin(errors))
    np.testing.assert_allclose(fit.error[0], errors[best], atol=2e-5)
    np.testing.assert_allclose(fit.momentum[0], betas[best], atol=2e-3)
    np.testing.assert_allclose(fit.scale[0], alphas[best], rtol=2e-3, atol=1e-4)
    fixed = task.fit(codes, 1, jax.random.key(0), (np.array([0.1]), np.array([0.3])))
    np.testing.assert_allclose(fixed.error[0], np.sum((s + 0.1 * d - 0.3 * p) ** 2)
                               / np.sum(s ** 2), rtol=1e-4)
    if text == "g":  # the teacher's own rule: exact, at its rate and momentum
        np.testing.assert_allclose([fit.error[0], fit.scale[0], fit.momentum[0]],
                                   [0.0, 0.2, 0.5], atol=1e-4)


def test_a_pruned_rule_gets_the_tasks_failure_reward(family_and_problems):
    task, _ = _scores(optax.sgd(0.3), family_and_problems)
    config = evaluator.EvaluatorConfig(chunk_size=4, prune=True)
    scores = evaluator.evaluate([rules_lib.parse("g - g")], task, config, jax.random.key(0))
    assert scores.pruned[0] and scores.reward[0] == imitation.FAILURE_REWARD


def test_a_search_on_another_teacher_or_fit_is_another_run(family_and_problems):
    """Same problems and starts, another teacher, or the same one fitted with the past step:
    the run identity differs, so a resume of one into another's directory is refused."""
    family, problems, x0 = family_and_problems
    tasks = [imitation.ImitationTask(
        "teacher", imitation.demonstrate(teacher, family, problems, NUM_STEPS, x0))
        for teacher in (optax.sgd(0.3), optax.sgd(0.2))]
    tasks.append(imitation.ImitationTask("teacher", tasks[0].demonstration, past_step=True))
    identities = [driver.run_identity(driver.SearchConfig.preset("smoke", task=task),
                                      jax.random.key(0)) for task in tasks]
    assert len(set(map(str, identities))) == 3


def test_a_minibatch_demonstration_is_the_teachers_run_replayed_step_by_step():
    """Two small networks trained by SGD on minibatches: the recorded gradients and iterates
    equal a plain Python replay with the documented minibatch keys, the steps are -rate times
    the gradients, a coordinate subset is those columns of the whole, and `g` imitates the
    teacher exactly at its rate."""
    family = network_family.NetworkFamily((4,), num_classes=3, batch_size=5, input_dim=6)
    key_data, key_labels, key_params, key_run = jax.random.split(jax.random.key(3), 4)
    data = network_family.Data(jax.random.normal(key_data, (2, 20, 6)),
                               jax.random.randint(key_labels, (2, 20), 0, 3))
    params = jax.vmap(family.init)(jax.random.split(key_params, 2))
    demo = imitation.demonstrate_minibatches(optax.sgd(0.5), family.minibatch_loss, data,
                                             params, NUM_STEPS, key_run)
    gradient_of = jax.jit(jax.grad(family.minibatch_loss))
    for model, model_key in enumerate(jax.random.split(key_run, 2)):
        flat, unravel = ravel_pytree(jax.tree.map(lambda leaf, m=model: leaf[m], params))
        problem = jax.tree.map(lambda leaf, m=model: leaf[m], data)
        for t in range(NUM_STEPS):
            grads = gradient_of(unravel(flat), problem, jax.random.fold_in(model_key, t))
            gradient = np.asarray(ravel_pytree(grads)[0])
            np.testing.assert_allclose(demo.iterates[t, model], flat, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(demo.gradients[t, model], gradient, rtol=1e-4, atol=1e-6)
            flat = flat - 0.5 * gradient
    np.testing.assert_allclose(demo.steps, -0.5 * demo.gradients, rtol=1e-5, atol=1e-7)
    columns = np.array([0, 7, 30, demo.steps.shape[-1] - 1])
    subset = imitation.demonstrate_minibatches(optax.sgd(0.5), family.minibatch_loss, data,
                                               params, NUM_STEPS, key_run, columns)
    jax.tree.map(lambda part, whole: np.testing.assert_allclose(part, whole[..., columns]),
                 subset, demo)
    with pytest.raises(ValueError, match="indices into the 43 flattened parameters"):
        imitation.demonstrate_minibatches(optax.sgd(0.5), family.minibatch_loss, data, params,
                                          NUM_STEPS, key_run, np.array([0, 43]))
    scores = evaluator.evaluate([rules_lib.parse("g"), rules_lib.parse("m")],
                                imitation.ImitationTask("sgd", demo), CONFIG, jax.random.key(0))
    np.testing.assert_allclose(scores.reward, [0.0, scores.reward[1]], atol=1e-5)
    np.testing.assert_allclose(scores.learning_rate[0], 0.5, rtol=1e-4)
    assert scores.reward[1] < -1e-3
