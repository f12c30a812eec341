"""SearchSpace: its shapes, valid uniform samples, and decoding through the interpreter's codes."""

import jax
import numpy as np
import pytest
from conftest import token_violations

from lopt.rules import Vocabulary, from_tokens, parse
from lopt.search.space import SearchSpace

SUBSET = Vocabulary(operands=("g", "m", "one"), unaries=(("identity", None), ("exp", None)),
                    binaries=("+", "*", "keep_left"))


@pytest.mark.parametrize(("space", "num_positions", "width"), [
    (SearchSpace(depth=1), 5, 14),  # 14 operands, 11 unaries, 5 binaries
    (SearchSpace(depth=3), 15, 16),  # the last level chooses among 14 + 2 operands
    (SearchSpace(depth=2, vocabulary=SUBSET), 10, 4),  # 3 + 1 operands at level 1
])
def test_shapes(space, num_positions, width):
    assert (space.num_positions, space.width) == (num_positions, width)
    assert space.mask(np.zeros(num_positions, np.int32), 0).shape == (width,)


@pytest.mark.parametrize("vocabulary", [Vocabulary(), SUBSET])
def test_random_tokens_are_valid_and_decode_through_full_codes(vocabulary):
    space = SearchSpace(depth=3, vocabulary=vocabulary)
    tokens = np.asarray(jax.jit(space.random_tokens, static_argnums=1)(jax.random.key(0), 200))
    assert tokens.shape == (200, 15) and tokens.dtype == np.int32
    for row in tokens:
        assert not token_violations(list(row), vocabulary, 3)
    codes = np.asarray(space.full_codes(tokens))
    assert [from_tokens(row, 3) for row in codes] == [space.to_rule(row) for row in tokens]
    assert len({tuple(row) for row in tokens}) > 190  # uniform, not one repeated rule


def test_bad_depth():
    with pytest.raises(ValueError, match="SearchSpace.depth must be 1, 2 or 3, got 4"):
        SearchSpace(depth=4)


@pytest.mark.parametrize(("text", "space", "expressible"), [
    ("g * exp(sign(g) * sign(m))", SearchSpace(depth=2), True),
    ("g * exp(sign(g) * sign(m))", SearchSpace(depth=1), False),  # needs two levels
    ("g * exp(m)", SearchSpace(depth=2, vocabulary=SUBSET), True),
    ("g * sign(m)", SearchSpace(depth=2, vocabulary=SUBSET), False),  # no sign in SUBSET
    ("g * g", SearchSpace(depth=1), False),  # op2 = op1 breaks distinct_operands
])
def test_to_tokens_only_for_rules_the_space_can_sample(text, space, expressible):
    tokens = space.to_tokens(parse(text))
    assert (tokens is not None) == expressible
    if expressible:
        assert not token_violations(list(tokens), space.vocabulary, space.depth)
        assert space.to_rule(tokens) == parse(text)
