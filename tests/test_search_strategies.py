"""Random search and regularized evolution stay inside the space; the interface is shared."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import token_violations

from lopt import rules
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
    assert changed.any(axis=1).mean() == 1.0
    # Only the mutated position and later ones that it invalidated may change.
    assert all(not changed[row, :first_change[row]].any() for row in range(500))
    # Only tokens the rule reads are mutated, so the child is another rule (rarely the same
    # one by another route, e.g. `g` as an operand for a level that only passes `g` on).
    parents = np.asarray(parents)
    same = [from_tokens(p, SPACE.depth, SPACE.vocabulary) == from_tokens(c, SPACE.depth,
                                                                          SPACE.vocabulary)
            for p, c in zip(parents, children, strict=True)]
    assert np.mean(same) < 0.03


def test_redraw_activated_fills_a_new_node_at_random():
    """From `adam * sign(g)` (its second level passes the first on: op2 and u2 unread), a
    mutation that gives that level a real binary reads op2 and u2: kept, they are the padding
    (the previous output, identity); redrawn, they vary. Either way the child is valid and only
    the mutated position, later ones and (when redrawn) the newly read ones change."""
    parent = jnp.asarray(SPACE.to_tokens(rules.parse("adam * sign(g)")))
    keep_left = SPACE.vocabulary.binaries.index("keep_left")
    assert int(parent[9]) == keep_left
    live = lambda tokens: strategies.live_positions(tokens, SPACE)  # noqa: E731
    keys = jax.random.split(jax.random.key(4), 2000)
    for redraw in (False, True):
        children = jax.vmap(strategies.mutate_tokens, (0, None, None, None))(
            keys, parent, SPACE, redraw)
        _check_valid(children)
        activated = np.asarray(jax.vmap(live)(children) & ~live(parent))
        changed = np.asarray(children != parent) & ~activated
        first_change = np.argmax(changed, axis=1)
        assert all(not changed[row, :first_change[row]].any() for row in range(2000))
        children = np.asarray(children)
        # The binary mutated to a real one (not the level's op1, which also forces a new binary)
        opened = (children[:, 9] != keep_left) & (children[:, 5] == np.asarray(parent)[5])
        assert 50 < opened.sum() < 1000
        padding_kept = (children[opened][:, [6, 8]] == np.asarray(parent)[[6, 8]]).all(axis=1)
        if redraw:
            assert padding_kept.mean() < 0.2
            assert len({tuple(row) for row in children[opened][:, [6, 8]]}) > 10
        else:
            assert padding_kept.all()


def test_live_positions_are_the_tokens_the_rule_reads():
    """Changing a token the rule does not read keeps its tree; changing one it reads changes
    it (checked on the decoded trees, position by position)."""
    parents = np.asarray(strategies.RandomSearch(space=SPACE, batch_size=50).ask(
        jax.random.key(2), {}))
    live = np.asarray(jax.vmap(lambda t: strategies.live_positions(t, SPACE))(parents))
    sizes = SPACE.vocabulary.sizes(SPACE.depth)
    decode = lambda tokens: from_tokens(tokens, SPACE.depth, SPACE.vocabulary)
    changes = {True: [], False: []}
    for tokens, reads in zip(parents, live, strict=True):
        for position in range(SPACE.num_positions):
            other = tokens.copy()
            other[position] = (other[position] + 1) % sizes[position]
            changes[bool(reads[position])].append(decode(other) != decode(tokens))
    assert not any(changes[False]) and len(changes[False]) > 10
    assert np.mean(changes[True]) > 0.95
    adam = SPACE.to_tokens(rules.parse("adam"))  # two keep-left levels: op2 and u2 unread
    np.testing.assert_array_equal(strategies.live_positions(jnp.asarray(adam), SPACE),
                                  [True, False, True, False, True] * 2)


def test_tournament_winners_follow_the_ranks():
    """Size 2 without replacement from 4 members: member of rank r (0 = worst) wins when it
    meets a worse one, with probability r / 6; size 4 always picks the best, size 1 any."""
    rewards = jnp.array([2.0, 0.0, 3.0, 1.0])
    keys = jax.random.split(jax.random.key(0), 20000)
    winners = lambda size: np.asarray(jax.vmap(
        lambda k: strategies.tournament(k, rewards, size))(keys))
    frequency = lambda size: np.bincount(winners(size), minlength=4) / len(keys)
    np.testing.assert_allclose(frequency(2), np.array([2, 0, 3, 1]) / 6, atol=0.015)
    np.testing.assert_array_equal(frequency(4), [0, 0, 1, 0])
    np.testing.assert_allclose(frequency(1), [0.25] * 4, atol=0.015)


def test_aging_removes_the_oldest_even_when_it_is_the_best():
    strategy = strategies.Evolution(space=SPACE, batch_size=2, population_size=4)
    tokens = jnp.asarray(strategy.space.random_tokens(jax.random.key(0), 6))
    full = strategies.EvolutionState(tokens[:4], jnp.array([9.0, 1.0, 2.0, 3.0]),
                                     jnp.int32(0), jnp.int32(4))
    state = strategy.tell(full, tokens[4:], jnp.array([0.0, 0.0]))
    np.testing.assert_array_equal(state.tokens, tokens[jnp.array([4, 5, 2, 3])])
    np.testing.assert_array_equal(state.rewards, [0.0, 0.0, 2.0, 3.0])  # the best (9) is gone
    assert (int(state.next), int(state.size)) == (2, 4)
    state = strategy.tell(state, tokens[:2], jnp.array([5.0, 5.0]))
    np.testing.assert_array_equal(state.rewards, [0.0, 0.0, 5.0, 5.0])


def test_warm_start_opens_the_first_population():
    decode = lambda strategy, batch: [str(strategy.space.to_rule(row)) for row in batch]
    full = strategies.Evolution(space=SearchSpace(depth=3), batch_size=10)
    assert decode(full, full.warm_start_tokens) == [
        str(rules.LIBRARY[name]) for name in ("adam", "powersign", "addsign")]
    small = strategies.Evolution(space=SPACE, batch_size=10, population_size=30)
    assert decode(small, small.warm_start_tokens) == ["adam", "g * exp(sign(g) * sign(m))"]
    given = strategies.Evolution(space=SPACE, batch_size=2, population_size=30,
                                 warm_start=("m", "g * m", "sign(adam)"))
    state = given.init(jax.random.key(0))
    batches = []
    for step in range(2):  # the warm start spans two batches
        batches.append(given.ask(jax.random.key(step), state))
        state = given.tell(state, batches[-1], jnp.zeros(2))
    assert decode(given, np.concatenate(batches))[:3] == ["m", "g * m", "sign(adam)"]
    with pytest.raises(ValueError, match=r"cannot express '\(one \+ sign\(g\)"):
        strategies.Evolution(space=SPACE, warm_start=("adam", "(one + sign(g) * sign(m)) * g"))


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
    with pytest.raises(ValueError, match="at most population_size warm-start rules, got 2 and 1"):
        strategies.Evolution(space=SPACE, batch_size=1, population_size=1, tournament_size=1)
    for kind in strategies.STRATEGIES.values():
        with pytest.raises(ValueError, match=f"{kind.__name__}.batch_size must be a positive"):
            kind(space=SPACE, batch_size=0)
