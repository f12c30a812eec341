"""Degenerate rules are found on the probes and scored untrained; healthy ones never are."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from lopt import rules
from lopt.search import evaluator, fingerprint, tasks

HAND_MADE = {
    "g - g": "zero",
    "sign(one)": "constant",
    "sign(g2)": "constant",  # g² > 0, so 1 everywhere
    "1e-3*w": "gradient-independent",
    "noise - 1e-2*w": "gradient-independent",
    "drop(1e-1*w, 0.5)": "gradient-independent",
    "log(g - g)": "non-finite",  # log|0| = -inf
    "exp(exp(g / v))": "non-finite",  # g / v is about 1/g: overflows
    "adam": "",
    "g * exp(sign(g) * sign(m))": "",
    "drop(g, 0.5)": "",
    "1e-3*w + g": "",  # weight decay plus a gradient step
    "clip(g2, 1e-5)": "",  # saturates only for |g| > 3e-3
}
# One learning rate and equal stages: the sweep and the final run share one compiled program.
QUADRATIC = evaluator.EvaluatorConfig(learning_rates=(1e-1,), steps_per_epoch=10,
                                      final_epochs=1, chunk_size=4, prune=True)


def _reasons(texts):
    probes = fingerprint.probe(rules.encode([rules.parse(text) for text in texts], 3))
    return [fingerprint.DEGENERACIES[index] for index in probes.degeneracy]


def test_hand_made_rules():
    assert dict(zip(HAND_MADE, _reasons(HAND_MADE), strict=True)) == HAND_MADE


def test_no_named_rule_is_degenerate():
    """The classic optimizers and all 16 rules of the paper's Table 1 train children."""
    assert set(_reasons([str(rule) for rule in rules.LIBRARY.values()])) == {""}


def test_degeneracy_on_hand_made_outputs():
    outputs = jnp.array([[1.0, 2.0], [0.0, 0.0], [3.0, 3.0], [1.0, 2.0], [1.0, jnp.nan],
                         [0.0, 0.0]])
    redrawn = jnp.array([[2.0, 1.0], [0.0, 1.0], [4.0, 4.0], [1.0, 2.0], [1.0, 2.0],
                         [jnp.inf, 0.0]])
    assert [fingerprint.DEGENERACIES[i] for i in fingerprint.degeneracy(outputs, redrawn)] == [
        "", "zero", "constant", "gradient-independent", "non-finite", "non-finite"]


def test_pruned_rules_get_the_failure_reward_untrained():
    task, cache = tasks.quadratic(), {}
    texts = ["g", "1e-3*w", "g - g", "m"]
    scores = evaluator.evaluate([rules.parse(t) for t in texts], task, QUADRATIC,
                                jax.random.key(0), cache=cache)
    np.testing.assert_array_equal(scores.pruned, [False, True, True, False])
    failure = float(task.accuracy(task.init(jax.random.fold_in(jax.random.key(0), 0))))
    np.testing.assert_array_equal(scores.reward[1:3], [failure] * 2)
    assert np.isnan(scores.learning_rate[1:3]).all() and np.isnan(scores.val_accuracy[1:3]).all()
    assert (scores.reward[[0, 3]] > failure).all()  # trained: descent beats the start
    assert len(cache) == 4
    again = evaluator.evaluate([rules.parse("1e-3*w")], task, QUADRATIC, jax.random.key(0),
                               cache=cache)
    assert again.pruned[0] and again.reward[0] == failure  # from the cache
    unpruned = evaluator.evaluate([rules.parse(t) for t in texts], task,
                                  dataclasses.replace(QUADRATIC, prune=False), jax.random.key(0))
    assert not unpruned.pruned.any()
    np.testing.assert_array_equal(unpruned.reward[[0, 3]], scores.reward[[0, 3]])
