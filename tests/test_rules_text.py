"""Text and token forms of rules: parse/print round trips, every bad input, token encoding."""

import jax
import numpy as np
import pytest

from lopt import rules
from lopt.rules import (
    LIBRARY,
    TABLE_1,
    Binary,
    Operand,
    RuleSyntaxError,
    Unary,
    Vocabulary,
    from_tokens,
    parse,
    random_tokens,
    to_tokens,
)

RANDOM_RULES_PER_DEPTH = 60  # depths 1..4: 240 random rules
PAPER_TABLE_1 = [
    "(exp(sign(g) * sign(m)) + clip(g, 1e-4)) * g",
    "clip(m, 1e-4) * exp(v)",
    "m * exp(v)",
    "g * exp(sign(g) * sign(m))",
    "drop(g, 0.3) * exp(sign(g) * sign(m))",
    "m * exp(g2)",
    "drop(m, 0.1) / exp(g2)",
    "drop(g, 0.1) * exp(sign(g) * sign(m))",
    "clip(rmsprop, 1e-5) + drop(m, 0.3)",
    "adam * exp(sign(g) * sign(m))",
    "adam * exp(m)",
    "g + drop(m, 0.3)",
    "drop(m, 0.1) * exp(g3)",
    "g - clip(g2, 1e-4)",
    "exp(g) - exp(m)",
    "drop(m, 0.3) * exp(1e-3*w)",
]


def _random_population(depth: int, count: int, seed: int) -> list:
    keys = jax.random.split(jax.random.key(seed), count)
    codes = np.asarray(jax.jit(jax.vmap(lambda key: random_tokens(key, depth)))(keys))
    return [from_tokens(row, depth) for row in codes]


@pytest.fixture(scope="module")
def random_rules():
    return [
        rule
        for depth in (1, 2, 3, 4)
        for rule in _random_population(depth, RANDOM_RULES_PER_DEPTH, seed=depth)
    ]


def test_table_1_parses_in_canonical_form_and_matches_library():
    assert [str(parse(text)) for text in PAPER_TABLE_1] == PAPER_TABLE_1
    assert [LIBRARY[name] for name in TABLE_1] == [parse(text) for text in PAPER_TABLE_1]
    assert len(set(TABLE_1)) == 16


def test_parse_builds_the_expected_tree():
    g, m = Operand("g"), Operand("m")
    powersign = Binary("*", g, Unary("exp", Binary("*", Unary("sign", g), Unary("sign", m))))
    assert parse("g * exp(sign(g) * sign(m))") == powersign
    assert parse("clip(g, 0.0001)") == Unary("clip", g, 1e-4)
    assert parse("1e-3 * w") == Operand("1e-3*w")
    assert parse("-g") == Unary("neg", g)


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("(g - m) - v", "g - m - v"),
        ("g - (m - v)", "g - (m - v)"),
        ("g + (m + v)", "g + (m + v)"),
        ("(g * m) / v", "g * m / v"),
        ("g / (m * v)", "g / (m * v)"),
        ("(-g) * m", "-g * m"),
        ("-(g * m)", "-(g * m)"),
        ("g - (-m)", "g - -m"),
        ("--g", "--g"),
        ("g*(1e-3*w)", "g * (1e-3*w)"),
        ("(1e-3*w)*g", "1e-3*w * g"),
        ("-(0.1*w)", "-(1e-1*w)"),
        ("g + 0.01*w", "g + 1e-2*w"),
        ("exp((g + m))", "exp(g + m)"),
        ("drop(m, .3)", "drop(m, 0.3)"),
        ("  g  ", "g"),
    ],
)
def test_canonical_text_has_minimal_parentheses(text, canonical):
    assert str(parse(text)) == canonical
    assert parse(canonical) == parse(text)


def test_round_trip_library():
    for name, rule in LIBRARY.items():
        assert parse(str(rule)) == rule, name
        assert repr(rule) == f"parse({str(rule)!r})"


def test_round_trip_random_rules(random_rules):
    assert len(random_rules) >= 200
    for rule in random_rules:
        text = str(rule)
        assert parse(text) == rule, text
        assert str(parse(text)) == text


def test_rules_are_hashable_and_compared_by_value():
    assert parse("g*m") == parse("g * m") and hash(parse("g*m")) == hash(parse("(g) * (m)"))
    assert parse("g * m") != parse("m * g")
    assert len({parse("g"), parse("g"), parse("m")}) == 2
    with pytest.raises(AttributeError):
        parse("g").name = "m"


@pytest.mark.parametrize(
    "text, token",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("foo", "'foo'"),
        ("g * bar(m)", "'bar'"),
        ("w", "'w'"),
        ("exp", "'exp'"),
        ("exp(g, m)", "exp takes 1 argument"),
        ("clip(g)", "clip takes 2 argument"),
        ("sign()", "sign takes 1 argument"),
        ("clip(g, 0.5)", "'0.5'"),
        ("drop(m, 0.2)", "'0.2'"),
        ("drop(m, g)", "'g'"),
        ("clip(g, bound=1e-4)", "keyword"),
        ("2 * g", "number 2"),
        ("1e-5*w", "1e-05"),
        ("g ** 2", "'Pow'"),
        ("g % m", "'Mod'"),
        ("+g", "'UAdd'"),
        ("not g", "'Not'"),
        ("g < m", "'Compare'"),
        ("g[0]", "'Subscript'"),
        ("np.exp(g)", "'np.exp'"),
        ("'g'", "'Constant'"),
        ("g if m else v", "'IfExp'"),
        ("lambda: g", "'Lambda'"),
        ("x = g", "not a single expression"),
        ("g; m", "not a single expression"),
        ("g +", "not a single expression"),
    ],
)
def test_bad_text_names_the_token_and_lists_what_is_allowed(text, token):
    with pytest.raises(RuleSyntaxError) as info:
        parse(text)
    message = str(info.value)
    assert token in message
    assert "operands: g, g2" in message and "drop(x, p)" in message
    assert isinstance(info.value, ValueError)


def test_non_string_is_a_syntax_error():
    with pytest.raises(RuleSyntaxError, match="must be a str"):
        parse(3)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Operand("w"),
        lambda: Unary("tanh", Operand("g")),
        lambda: Unary("clip", Operand("g"), 0.2),
        lambda: Unary("exp", Operand("g"), 0.1),
        lambda: Binary("^", Operand("g"), Operand("m")),
        lambda: Binary("+", Operand("g"), "m"),
    ],
)
def test_nodes_validate_their_fields(build):
    with pytest.raises((ValueError, TypeError)):
        build()


# Token form.


def test_token_lengths_and_vocabulary_sizes():
    vocabulary = rules.VOCABULARY
    assert vocabulary.sizes(1) == (14, 14, 11, 11, 5)
    assert len(vocabulary.sizes(3)) == 15 and vocabulary.max_size(3) == 16
    assert len(to_tokens(LIBRARY["adam"], depth=1)) == 5
    assert len(to_tokens(LIBRARY["powersign"])) == 10
    assert len(to_tokens(LIBRARY["powersign_plus_clip"])) == 15


def test_token_round_trip_library_at_depth_3():
    for name, rule in LIBRARY.items():
        tokens = to_tokens(rule, depth=3)
        assert len(tokens) == 15
        assert from_tokens(tokens, 3) == rule, name
        assert from_tokens(np.asarray(tokens), 3) == rule, name


def test_token_round_trip_random(random_rules):
    for rule in random_rules:
        tokens = to_tokens(rule)
        assert from_tokens(tokens, len(tokens) // 5) == rule, str(rule)


def test_random_tokens_satisfy_the_paper_constraints():
    depth = 3
    vocabulary = rules.VOCABULARY
    keys = jax.random.split(jax.random.key(7), 200)
    codes = np.asarray(jax.vmap(lambda key: random_tokens(key, depth))(keys))
    masks = np.asarray(jax.vmap(lambda row: vocabulary.masks(row, depth))(codes))
    assert masks[np.arange(200)[:, None], np.arange(15), codes].all()
    levels = codes.reshape(200, depth, 5)
    assert (levels[:, :, 0] != levels[:, :, 1]).all()
    assert (levels[:, -1, 4] != 0).all()  # no addition as the final binary
    previous = np.arange(depth - 1) + 14
    first_is_previous = levels[:, 1:, 0] == previous
    assert (first_is_previous | (levels[:, 1:, 1] == previous)).all()
    assert (first_is_previous | (levels[:, 1:, 4] != 4)).all()  # keep-left keeps op1 only


def test_masks_at_specific_positions():
    vocabulary = rules.VOCABULARY
    tokens = np.array([3, 0, 0, 0, 0, 2, 0, 0, 0, 0])
    mask = lambda position: np.asarray(vocabulary.mask(tokens, position, 2))
    assert mask(0)[:14].all() and not mask(0)[14:].any()  # level 0 bank: 14 operands
    assert mask(1).sum() == 13 and not mask(1)[3]  # op2 differs from op1
    assert mask(5)[:15].all()  # level 1 bank: 15 operands
    assert np.flatnonzero(mask(6)).tolist() == [14]  # op1 = g2 is not the previous output
    # Final binary: no +, and no keep-left since it would drop op2, the previous output.
    assert mask(9).tolist()[:5] == [False, True, True, True, False]
    reusing_first = np.array([3, 0, 0, 0, 0, 14, 2, 0, 0, 0])
    assert np.asarray(vocabulary.mask(reusing_first, 9, 2)).tolist()[:5] == [False] + [True] * 4
    assert mask(4)[:5].all()  # addition and keep-left allowed at level 0
    relaxed = Vocabulary(distinct_operands=False, no_final_addition=False, reuse_previous=False)
    assert np.asarray(relaxed.mask(tokens, 6, 2))[:15].all()


def test_subset_vocabulary_renumbers_tokens():
    vocabulary = Vocabulary(operands=("g", "m"), unaries=(("identity", None), ("sign", None)))
    rule = parse("sign(g) * sign(m)")
    assert to_tokens(rule, vocabulary=vocabulary) == (0, 1, 1, 1, 2)
    assert from_tokens((0, 1, 1, 1, 2), 1, vocabulary) == rule
    with pytest.raises(ValueError, match="'v' is not in this vocabulary"):
        to_tokens(parse("g * v"), vocabulary=vocabulary)
    with pytest.raises(ValueError, match="distinct items"):
        Vocabulary(operands=("g", "q"))


def test_bad_token_input():
    with pytest.raises(ValueError, match="needs 3 levels, more than depth=2"):
        to_tokens(LIBRARY["addsign"], depth=2)
    with pytest.raises(ValueError, match="needs 10 tokens, got 5"):
        from_tokens([0, 1, 0, 0, 2], 2)
    with pytest.raises(ValueError, match="token 14 at position 0"):
        from_tokens([14, 1, 0, 0, 2], 1)
    with pytest.raises(ValueError, match="token 5 at position 4"):
        from_tokens([0, 1, 0, 0, 5], 1)


def test_shared_subtrees_are_computed_once():
    rule = parse("exp(g + m) * exp(g + m) - (g + m)")
    tokens = to_tokens(rule)
    assert len(tokens) == 3 * 5  # g + m, exp(.) * exp(.), the difference
    assert from_tokens(tokens, 3) == rule
