"""A canonical simplifier: a shorter rule that computes the same update.

    simplify(parse("-(-g) * one - -sign(sign(m))"))    # parse("g + sign(m)")

`simplify` rewrites a rule bottom-up with identities that hold exactly in IEEE arithmetic
under the semantics of `lopt.rules.semantics` (round to nearest is symmetric, so negation
commutes exactly with +, −, ·, the numerator of x / (y + ε), sign, clip and drop):

- negations: every negation is moved outwards and cancelled where two meet, so
  −(−x) → x, x − −y → x + y, x + −y → x − y, −x + y → y − x, −x · −y → x · y,
  log(−x) → log(x) (log|x|); one that is left is put where it costs no extra level:
  on the left factor of a product or quotient (−x · y), as −x − y for −(x + y), as y − x for
  −(x − y), and otherwise in front (−exp(x));
- sign: sign(s) → s when s only takes the values −1, 0, 1 (NaN) — a sign, `one`, their
  negations, products and drops, so sign(sign(x)) → sign(x) — and sign(clip(x, l)) → sign(x);
- clip: clip(clip(x, a), b) → clip(x, min(a, b));
- one: x · one and one · x → x;
- constants: a subtree that reads only `one` through −, sign, clip, +, − and · is replaced by
  the smallest such expression with the same value in float32 and float64 (sign(one − one)
  → one − one, clip(one + one, 1e-4) → clip(one, 1e-4)).

Identities that hold only approximately or for finite values are not used: exp(log(x))
(|x| and rounding), x / one (x / (1 + ε) is x only in float32 and for ε = 1e-8), x − x
(∞ − ∞ is NaN), reassociation, sign of a positive-looking product (underflow), and folding
through exp and log (the CPU kernels agree with the specification to a few ulps, not exactly).

"The same update" means equal elementwise as numbers: −0 and +0 may trade places (−(x − y) is
−0 where y − x is +0 when x = y), which changes no parameter that is not itself ±0.

Random draws: a `drop` reads the bits of its position in the token program (site
1 + 2·level + slot, `lopt.rules.semantics`), so a rewrite that moves a drop to another level
or slot, or lets it swap places with another, would change the update. `simplify` therefore
compares each drop's site, rate and (simplified) argument before and after, and if any moved
it simplifies again without reordering operands, and failing that returns the rule unchanged.
`noise` is drawn once per leaf and step, wherever it appears, so it moves freely.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np

from lopt.rules import tokens as tokens_lib
from lopt.rules.expression import CLIP_BOUNDS, Binary, Operand, Rule, Unary, nodes

ONE = Operand("one")
# Constant subtrees up to this many nodes are enumerated for folding (1,305 trees).
_MAX_CONSTANT_NODES = 5


def simplify(rule: Rule) -> Rule:
    """The canonical simplified form of `rule` (see the module docstring).

    Args:
      rule: any rule.

    Returns:
      A rule with the same update and at most as many nodes; `simplify(simplify(r)) ==
      simplify(r)`.

    Example:
      >>> str(simplify(parse("clip(clip(g, 1e-3), 1e-5) - -sign(sign(m))")))
      'clip(g, 1e-5) + sign(m)'
    """
    draws, cost = _drop_draws(rule), _cost(rule)
    for reorder in (True, False):
        simplified = _attach(*_split(rule, reorder), reorder)
        if _drop_draws(simplified) == draws and _cost(simplified) <= cost:
            return simplified
    return rule


def num_nodes(rule: Rule) -> int:
    """Number of nodes (operands, unary and binary functions) of `rule`."""
    return sum(1 for _ in nodes(rule))


def _split(rule: Rule, reorder: bool) -> tuple[bool, Rule]:
    """(negative, core) with rule = −core if negative else core, exactly; `core` is
    simplified and not a negation. `reorder`: whether operands may swap places."""
    negative, core = _split_node(rule, reorder)
    if _constant_value(core, np.float64) is None:
        return negative, core
    best = _smallest_constants().get(_constant_key(_attach(negative, core, reorder)))
    if best is None or num_nodes(best) >= num_nodes(_attach(negative, core, reorder)):
        return negative, core
    return (True, best.arg) if isinstance(best, Unary) and best.fn == "neg" else (False, best)


def _split_node(rule: Rule, reorder: bool) -> tuple[bool, Rule]:
    if isinstance(rule, Operand):
        return False, rule
    if isinstance(rule, Unary):
        negative, arg = _split(rule.arg, reorder)
        if rule.fn == "neg":
            return not negative, arg
        if rule.fn == "log":  # log|−x| = log|x|
            return False, Unary("log", arg)
        if rule.fn == "exp":
            return False, Unary("exp", _attach(negative, arg, reorder))
        if rule.fn == "sign":
            if isinstance(arg, Unary) and arg.fn == "clip":
                arg = arg.arg  # clip keeps the sign
            return negative, arg if _is_sign_valued(arg) else Unary("sign", arg)
        if rule.fn == "clip" and isinstance(arg, Unary) and arg.fn == "clip":
            return negative, Unary("clip", arg.arg, min(rule.const, arg.const))
        return negative, Unary(rule.fn, arg, rule.const)  # clip and drop commute with −
    left_negative, left = _split(rule.left, reorder)
    right_negative, right = _split(rule.right, reorder)
    if rule.op == "*":
        negative = left_negative != right_negative
        if left == ONE or right == ONE:
            return negative, right if left == ONE else left
        return negative, Binary("*", left, right)
    if rule.op == "/":  # x / (y + ε): only the numerator's sign comes out
        return left_negative, Binary("/", left, _attach(right_negative, right, reorder))
    if rule.op == "-":
        right_negative = not right_negative
    if left_negative == right_negative:  # x + y or −x − y = −(x + y)
        return left_negative, Binary("+", left, right)
    if not left_negative:
        return False, Binary("-", left, right)
    if reorder:
        return False, Binary("-", right, left)  # −x + y = y − x
    return False, Binary("+", Unary("neg", left), right)


def _attach(negative: bool, core: Rule, reorder: bool) -> Rule:
    """−core if negative else core, with the negation placed where it costs the fewest token
    levels (then nodes): on a factor of a product, the numerator of a quotient, as −x − y for
    −(x + y), as y − x for −(x − y), or in front; the first of equals in that order."""
    if not negative:
        return core
    options = []
    if isinstance(core, Binary):
        left, right = core.left, core.right
        if core.op in ("*", "/"):
            options.append(Binary(core.op, _attach(True, left, reorder), right))
        if core.op == "*":
            options.append(Binary("*", left, _attach(True, right, reorder)))
        if core.op == "+":
            options.append(Binary("-", _attach(True, left, reorder), right))
        if core.op == "-":
            options.append(Binary("+", _attach(True, left, reorder), right))
            if reorder:
                options.append(Binary("-", right, left))
    options.append(Unary("neg", core))
    return min(options, key=_cost)


def _cost(rule: Rule) -> tuple[int, int]:
    """(token levels, nodes) of `rule`."""
    return len(tokens_lib.to_tokens(rule)) // tokens_lib.TOKENS_PER_LEVEL, num_nodes(rule)


def _is_sign_valued(rule: Rule) -> bool:
    """Whether every value of `rule` is −1, 0, 1 or NaN (so that sign leaves it unchanged)."""
    if isinstance(rule, Operand):
        return rule == ONE
    if isinstance(rule, Unary):
        return rule.fn == "sign" or (rule.fn in ("neg", "drop") and _is_sign_valued(rule.arg))
    return rule.op == "*" and _is_sign_valued(rule.left) and _is_sign_valued(rule.right)


def _constant_value(rule: Rule, dtype) -> float | None:
    """The value of a subtree that reads only `one` through −, sign, clip, +, − and ·, computed
    in `dtype`; None for any other subtree."""
    if isinstance(rule, Operand):
        return dtype(1) if rule == ONE else None
    if isinstance(rule, Unary):
        arg = _constant_value(rule.arg, dtype)
        if arg is None or rule.fn not in ("neg", "sign", "clip"):
            return None
        if rule.fn == "clip":
            return np.clip(arg, -dtype(rule.const), dtype(rule.const))
        return -arg if rule.fn == "neg" else np.sign(arg)
    left, right = _constant_value(rule.left, dtype), _constant_value(rule.right, dtype)
    if left is None or right is None or rule.op == "/":
        return None
    return {"+": left + right, "-": left - right, "*": left * right}[rule.op]


def _constant_key(rule: Rule) -> tuple[float, float]:
    """A constant subtree's value in float32 and float64 (−0 counted as 0)."""
    return tuple(float(_constant_value(rule, dtype)) + 0.0 for dtype in (np.float32, np.float64))


@functools.cache
def _smallest_constants() -> dict[tuple[float, float], Rule]:
    """{value key: the smallest constant subtree with that value}, over every constant subtree
    of up to `_MAX_CONSTANT_NODES` nodes (fewest nodes first, then shortest text)."""
    unaries = [("neg", None), ("sign", None), *(("clip", bound) for bound in CLIP_BOUNDS)]
    by_size: list[list[Rule]] = [[], [ONE]]
    for size in range(2, _MAX_CONSTANT_NODES + 1):
        trees = [Unary(fn, arg, const) for fn, const in unaries for arg in by_size[size - 1]]
        for left_size in range(1, size - 1):
            trees += [Binary(op, left, right) for op in ("+", "-", "*")
                      for left, right in itertools.product(by_size[left_size],
                                                           by_size[size - 1 - left_size])]
        by_size.append(trees)
    smallest: dict[tuple[float, float], Rule] = {}
    for tree in sorted(itertools.chain(*by_size), key=lambda t: (num_nodes(t), len(str(t)))):
        smallest.setdefault(_constant_key(tree), tree)
    return smallest


def _drop_draws(rule: Rule) -> tuple[tuple[int, float, str], ...]:
    """(site, rate, simplified argument up to its sign) of every drop in `rule`'s canonical
    token program, in program order: the random draws that must not move."""
    program = tokens_lib.to_tokens(rule)
    bank: list[Rule] = [Operand(name) for name in tokens_lib.VOCABULARY.operands]
    draws = []
    for level in range(len(program) // tokens_lib.TOKENS_PER_LEVEL):
        first, second, unary1, unary2, binary = program[tokens_lib.TOKENS_PER_LEVEL * level:][:5]
        is_binary = tokens_lib.BINARY_TOKENS[binary] != tokens_lib.KEEP_LEFT
        slots = [(0, first, unary1)] + ([(1, second, unary2)] if is_binary else [])
        for slot, operand, unary in slots:
            fn, rate = tokens_lib.UNARY_TOKENS[unary]
            if fn == "drop":
                _, argument = _split(bank[operand], True)  # drop(−x) = −drop(x), same mask
                draws.append((1 + 2 * level + slot, rate, str(argument)))
        bank.append(tokens_lib.from_tokens(
            program[: tokens_lib.TOKENS_PER_LEVEL * (level + 1)], level + 1))
    return tuple(draws)
