"""RuleController and PPO: valid samples under every constraint switch, log-probabilities against a
manual recomputation, and a PPO update that favours a high-reward rule."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import token_violations

from lopt.rules import VOCABULARY, Vocabulary, from_tokens
from lopt.rules.tokens import TOKENS_PER_LEVEL
from lopt.search import driver, ppo
from lopt.search.controller import ControllerConfig, RuleController
from lopt.search.space import SearchSpace

SMALL_VOCABULARY = Vocabulary(operands=("g", "m", "v", "one"),
                              unaries=(("identity", None), ("neg", None), ("sign", None)),
                              binaries=("+", "-", "*", "keep_left"))
SWITCHES = list(itertools.product([False, True], repeat=3))


def _switched(vocabulary, switches):
    distinct, no_final_addition, reuse = switches
    return dataclasses.replace(vocabulary, distinct_operands=distinct,
                               no_final_addition=no_final_addition, reuse_previous=reuse)


# Every switch combination on a depth-3 subset space; the full vocabulary with all on and off.
CASES = ([(SMALL_VOCABULARY, 3, switches) for switches in SWITCHES]
         + [(VOCABULARY, 2, (True,) * 3), (VOCABULARY, 2, (False,) * 3)])


@pytest.mark.parametrize(("vocabulary", "depth", "switches"), CASES)
def test_samples_satisfy_every_constraint(vocabulary, depth, switches):
    vocabulary = _switched(vocabulary, switches)
    controller = RuleController(SearchSpace(depth, vocabulary), ControllerConfig(hidden_size=16))
    params = controller.init(jax.random.key(0))
    samples = controller.sample(params, jax.random.key(1), 1000)
    tokens = np.asarray(samples.tokens)
    assert tokens.shape == (1000, TOKENS_PER_LEVEL * depth)
    for row in tokens:
        assert not token_violations(list(row), vocabulary, depth)
    assert np.all(np.isfinite(samples.log_prob)) and np.all(samples.log_prob < 0)
    # Every sample is a rule the interpreter can run: subset ids map onto the full vocabulary.
    codes = np.asarray(vocabulary.full_codes(samples.tokens[:50], depth))
    rules = [from_tokens(row, depth, vocabulary) for row in tokens[:50]]
    assert [from_tokens(row, depth) for row in codes] == rules


def test_log_prob_matches_manual_recomputation():
    space = SearchSpace(depth=2)
    controller = RuleController(space, ControllerConfig(hidden_size=8))
    params = controller.init(jax.random.key(0))
    samples = controller.sample(params, jax.random.key(1), 3)
    step = jax.jit(controller.network.apply)
    for tokens, log_prob, entropy in zip(*samples, strict=True):
        carry = (jnp.zeros(8), jnp.zeros(8))
        total, total_entropy, previous = 0.0, 0.0, 0
        for position, token in enumerate(np.asarray(tokens)):
            carry, logits = step(params, carry, previous, position)
            allowed = np.asarray(space.vocabulary.mask(tokens, position, space.depth))
            logits = np.asarray(logits, np.float64)[allowed]
            probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
            total += np.log(probs[np.flatnonzero(allowed).tolist().index(token)])
            total_entropy -= np.sum(probs * np.log(probs))
            previous = int(token)
        np.testing.assert_allclose(log_prob, total, rtol=1e-5)
        np.testing.assert_allclose(entropy, total_entropy, rtol=1e-5)
    rescored = controller.score(params, samples.tokens)
    np.testing.assert_allclose(rescored.log_prob, samples.log_prob, rtol=1e-6)


def test_parameters_start_uniform_in_init_scale():
    controller = RuleController(SearchSpace(depth=1))
    leaves = jax.tree.leaves(controller.init(jax.random.key(0)))
    values = np.concatenate([np.ravel(leaf) for leaf in leaves])
    assert np.abs(values).max() <= 0.08 and np.abs(values).max() > 0.079


@pytest.mark.parametrize("config", [ppo.PPOConfig(), driver.PRESETS["cpu"].strategy.ppo],
                         ids=["paper", "cpu"])
def test_ppo_update_raises_probability_of_high_reward_rule(config):
    controller = RuleController(SearchSpace(depth=2), ControllerConfig(hidden_size=32))
    state = ppo.init(controller, config, jax.random.key(0))
    tokens = controller.sample(state.params, jax.random.key(1), 16).tokens
    rewards = jnp.zeros(16).at[3].set(1.0)
    before = controller.score(state.params, tokens).log_prob
    new_state, metrics = ppo.update(controller, config, state, tokens, before, rewards)
    after = controller.score(new_state.params, tokens).log_prob
    assert after[3] > before[3]
    assert (after - before)[3] == (after - before).max()
    np.testing.assert_allclose(metrics["baseline"], 1 / 16, rtol=1e-6)
    assert int(new_state.num_updates) == 1


def test_bad_controller_config():
    with pytest.raises(ValueError, match="hidden_size and init_scale must be positive"):
        ControllerConfig(hidden_size=0)
    with pytest.raises(ValueError, match="baseline_decay"):
        ppo.PPOConfig(baseline_decay=1.0)
