"""Random search and regularized evolution stay inside the space; the interface is shared."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import token_violations

from lopt.rules import Vocabulary, from_tokens
from lopt.search import strategies
from lopt.search.controller import ControllerConfig
from lopt.search.space import SearchSpace

SPACE = SearchSpace(depth=2, vocabulary=Vocabulary(
    operands=("g", "m", "v", "one", "adam"),
    unaries=(("identity", None), ("neg", None), ("exp", None), ("sign", None)),
    binaries=("+", "-", "*", "/", "keep_left")))
OWN_SETTINGS = {"ppo": {"network": ControllerConfig(hidden_size=8)}}  # a small, fast controller


def _check_valid(tokens):
    tokens = np.asarray(tokens)
    assert tokens.shape[1] == SPACE.num_positions
    for row in tokens:
        assert not token_violations(list(row), SPACE.vocabulary, SPACE.depth)
        from_tokens(row, SPACE.depth, SPACE.vocabulary)


def _drive(strategy, num_iterations, reward):
    """ask → reward → tell for a few iterations; returns every batch asked for."""
    state = strategy.init(jax.random.key(0))
    batches = []
    for iteration in range(num_iterations):
        tokens = strategy.ask(jax.random.key(iteration + 1), state)
        batches.append(np.asarray(tokens))
        state = strategy.tell(state, tokens, reward(tokens))
    return state, batches


def _reward(tokens):
    """Prefers rules whose first operand is `g` (id 0)."""
    return jnp.where(tokens[:, 0] == 0, 1.0, 0.0)


@pytest.mark.parametrize("name", sorted(strategies.STRATEGIES))
def test_every_strategy_asks_for_valid_rules(name):
    strategy = strategies.STRATEGIES[name](space=SPACE, batch_size=20,
                                           **OWN_SETTINGS.get(name, {}))
    assert strategy.name == name
    _, batches = _drive(strategy, 3, _reward)
    for batch in batches:
        assert batch.shape == (20, SPACE.num_positions)
        _check_valid(batch)


def test_mutation_changes_one_token_and_stays_valid():
    parents = strategies.RandomSearch(space=SPACE, batch_size=500).ask(jax.random.key(0), {})
    mutate = jax.jit(jax.vmap(lambda key, tokens: strategies.mutate_tokens(key, tokens, SPACE)))
    children = np.asarray(mutate(jax.random.split(jax.random.key(1), 500), parents))
    _check_valid(children)
    changed = children != np.asarray(parents)
    first_change = np.argmax(changed, axis=1)
    assert changed.any(axis=1).mean() > 0.9
    # Only the mutated position and later ones that it invalidated may change.
    assert all(not changed[row, :first_change[row]].any() for row in range(500))


def test_evolution_is_random_until_full_then_replaces_the_oldest():
    strategy = strategies.Evolution(space=SPACE, batch_size=10, population_size=30,
                                    tournament_size=5)
    state, batches = _drive(strategy, 6, _reward)
    assert int(state.size) == 30 and int(state.next) == 0
    # The population is the last three batches (the oldest were removed).
    population = sorted(map(tuple, np.asarray(state.tokens)))
    assert population == sorted(map(tuple, np.concatenate(batches[3:])))
    # Tournaments pick good parents: children start with `g` more often than random rules do.
    random_share = np.mean(np.concatenate(batches[:3])[:, 0] == 0)
    evolved_share = np.mean(np.concatenate(batches[3:])[:, 0] == 0)
    assert evolved_share > random_share + 0.3


def test_strategies_reject_bad_sizes():
    with pytest.raises(ValueError, match="tournament_size <= population_size, got 6 and 5"):
        strategies.Evolution(space=SPACE, population_size=5, tournament_size=6)
    with pytest.raises(ValueError, match="batch_size <= population_size, got 10 and 5"):
        strategies.Evolution(space=SPACE, batch_size=10, population_size=5, tournament_size=2)
    for kind in strategies.STRATEGIES.values():
        with pytest.raises(ValueError, match=f"{kind.__name__}.batch_size must be a positive"):
            kind(space=SPACE, batch_size=0)
