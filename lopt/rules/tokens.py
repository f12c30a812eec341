"""Token form of rules: the controller's encoding (Bello et al., 2017, section 3.1).

A rule of depth D is 5·D integer tokens, 5 per level: (op1, op2, u1, u2, b). Level ℓ
(0-based) computes b(u1(bank[op1]), u2(bank[op2])) and appends it to the operand bank, which
starts as the vocabulary's operands, so level ℓ chooses among len(operands) + ℓ operands and
id len(operands) + ℓ − 1 is the previous level's output. The last level's output is the rule.
Unary ids index `Vocabulary.unaries` (identity first), binary ids `Vocabulary.binaries`;
`keep_left` returns u1(op1) and ignores op2 and u2.

`to_tokens` writes a canonical encoding: levels in post-order (left subtree first), one level
per binary node and per extra unary in a chain (`exp(sign(g))` needs a keep-left level for
`sign(g)`), identical subtrees computed once, and unused slots filled with op2 = the previous
output (or the first operand different from op1), u2 = identity. A shorter rule is padded to
the requested depth with keep-left levels that pass the previous output on unchanged, so
`from_tokens(to_tokens(rule, depth), depth) == rule`. The canonical encoding is valid token
form but need not satisfy the sampling constraints below.

Sampling constraints (section 4.1), as boolean masks over token ids for the controller:
`distinct_operands` (op2 ≠ op1), `no_final_addition` (the last level's binary is not `+`) and
`reuse_previous` (from level 1 on, op1 or op2 is the previous level's output, and the level
is not keep-left when only op2 is, which would discard it). Masks have a
fixed width `max_size(depth)` so that they stack into arrays; ids beyond a position's own
vocabulary size are always masked out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lopt.rules.expression import (
    BINARY_OPS,
    CLIP_BOUNDS,
    DROP_RATES,
    OPERANDS,
    Binary,
    Operand,
    Rule,
    Unary,
)

TOKENS_PER_LEVEL = 5
IDENTITY = ("identity", None)
UNARY_TOKENS = (
    IDENTITY,
    ("neg", None),
    ("exp", None),
    ("log", None),
    *(("clip", bound) for bound in CLIP_BOUNDS),
    *(("drop", rate) for rate in DROP_RATES),
    ("sign", None),
)
KEEP_LEFT = "keep_left"
BINARY_TOKENS = (*BINARY_OPS, KEEP_LEFT)


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Token ids for the controller and the paper's sampling constraints as masks.

    A subset vocabulary (section 4.1 searches subsets of the operands and functions) keeps the
    order of the full one; `identity` must stay in `unaries`.

    Example:
      >>> vocab = Vocabulary()
      >>> vocab.sizes(depth=2)
      (14, 14, 11, 11, 5, 15, 15, 11, 11, 5)
    """

    operands: tuple[str, ...] = OPERANDS
    unaries: tuple[tuple[str, float | None], ...] = UNARY_TOKENS
    binaries: tuple[str, ...] = BINARY_TOKENS
    distinct_operands: bool = True
    no_final_addition: bool = True
    reuse_previous: bool = True

    def __post_init__(self):
        for name, chosen, full in (
            ("operands", self.operands, OPERANDS),
            ("unaries", self.unaries, UNARY_TOKENS),
            ("binaries", self.binaries, BINARY_TOKENS),
        ):
            unknown = [item for item in chosen if item not in full]
            if unknown or len(set(chosen)) != len(chosen):
                raise ValueError(f"{name} must be distinct items of {full}; got {chosen}")
        if IDENTITY not in self.unaries or len(self.operands) < 2:
            raise ValueError("a vocabulary needs the identity unary and at least two operands")

    def bank_size(self, level: int) -> int:
        """Number of operands level `level` (0-based) chooses from."""
        return len(self.operands) + level

    def sizes(self, depth: int) -> tuple[int, ...]:
        """Vocabulary size of each of the 5·depth positions."""
        per_level = lambda level: (
            self.bank_size(level),
            self.bank_size(level),
            len(self.unaries),
            len(self.unaries),
            len(self.binaries),
        )
        return tuple(size for level in range(depth) for size in per_level(level))

    def max_size(self, depth: int) -> int:
        """Width of the masks: the largest vocabulary size over all positions."""
        return max(self.sizes(depth))

    def mask(self, tokens: jax.Array, position: jax.Array | int, depth: int, xp=jnp
             ) -> jax.Array:
        """Allowed token ids at `position` given the tokens before it; jittable.

        Args:
          tokens: int [5·depth]; only entries before `position` are read.
          position: index of the token to choose (may be traced).
          depth: number of levels of the rule being sampled.
          xp: the array module, `jax.numpy` or `numpy` (NumPy inputs and an int position:
            no JAX computation, e.g. for checks that run before `lopt.distributed` starts).

        Returns:
          bool [max_size(depth)], True where the id is allowed.
        """
        ids = xp.arange(self.max_size(depth))
        level, slot = position // TOKENS_PER_LEVEL, position % TOKENS_PER_LEVEL
        bank = self.bank_size(level)
        previous = bank - 1
        first = xp.asarray(tokens)[position - slot]
        operand_ok = ids < bank
        second_ok = operand_ok
        if self.distinct_operands:
            second_ok = second_ok & (ids != first)
        if self.reuse_previous:
            second_ok = second_ok & ((level == 0) | (first == previous) | (ids == previous))
        unary_ok = ids < len(self.unaries)
        binary_ok = ids < len(self.binaries)
        if self.reuse_previous and KEEP_LEFT in self.binaries:
            drops_previous = (level > 0) & (first != previous)  # keep-left would discard it
            binary_ok = binary_ok & ~(drops_previous & (ids == self.binaries.index(KEEP_LEFT)))
        if self.no_final_addition and "+" in self.binaries:
            is_final = level == depth - 1
            binary_ok = binary_ok & ~(is_final & (ids == self.binaries.index("+")))
        return xp.stack([operand_ok, second_ok, unary_ok, unary_ok, binary_ok])[slot]

    def masks(self, tokens: jax.Array, depth: int, xp=jnp) -> jax.Array:
        """Masks of all positions for a full token sequence (for log-probabilities); `xp` as
        in `mask`.

        Returns:
          bool [5·depth, max_size(depth)]; row t is `mask(tokens, t, depth)`.
        """
        if xp is np:
            return np.stack([self.mask(tokens, position, depth, np)
                             for position in range(TOKENS_PER_LEVEL * depth)])
        positions = jnp.arange(TOKENS_PER_LEVEL * depth)
        return jax.vmap(lambda position: self.mask(tokens, position, depth))(positions)


    def full_codes(self, tokens: jax.Array, depth: int) -> jax.Array:
        """Rewrites tokens of this vocabulary as ids of the full one (the interpreter's codes).

        Args:
          tokens: int [..., 5·depth] in this vocabulary's ids.
          depth: number of levels.

        Returns:
          int32 [..., 5·depth]; equal to `to_tokens(from_tokens(t, depth, self), depth)` up to
          the canonical re-encoding, i.e. the same rule. Jittable.
        """
        table = np.zeros((TOKENS_PER_LEVEL * depth, self.max_size(depth)), np.int32)
        operand_ids = [OPERANDS.index(name) for name in self.operands]
        for level in range(depth):
            row = TOKENS_PER_LEVEL * level
            bank = operand_ids + [len(OPERANDS) + k for k in range(level)]
            table[row : row + 2, : len(bank)] = bank
            table[row + 2 : row + 4, : len(self.unaries)] = [
                UNARY_TOKENS.index(token) for token in self.unaries]
            table[row + 4, : len(self.binaries)] = [
                BINARY_TOKENS.index(op) for op in self.binaries]
        positions = jnp.arange(TOKENS_PER_LEVEL * depth)
        return jnp.asarray(table)[positions, jnp.asarray(tokens)]


def _index(kind: str, items: tuple, item) -> int:
    if item not in items:
        raise ValueError(f"{kind} {item!r} is not in this vocabulary ({items})")
    return items.index(item)


VOCABULARY = Vocabulary()


def random_tokens(key: jax.Array, depth: int, vocabulary: Vocabulary = VOCABULARY) -> jax.Array:
    """Samples a token sequence that satisfies the vocabulary's constraints; jittable.

    Each position is drawn uniformly among the ids its mask allows (a random-search baseline,
    and the source of random populations in tests and benchmarks).

    Args:
      key: PRNG key.
      depth: number of levels.
      vocabulary: token ids and constraints.

    Returns:
      int32 [5·depth]; `jax.vmap` over keys gives a population.

    Example:
      >>> rule = from_tokens(random_tokens(jax.random.key(0), depth=2), depth=2)
    """
    num_tokens = TOKENS_PER_LEVEL * depth

    def choose_next(tokens, position_and_key):
        position, position_key = position_and_key
        allowed = vocabulary.mask(tokens, position, depth)
        token = jax.random.categorical(position_key, jnp.where(allowed, 0.0, -jnp.inf))
        return tokens.at[position].set(token.astype(jnp.int32)), None

    keys = jax.random.split(key, num_tokens)
    tokens, _ = jax.lax.scan(
        choose_next, jnp.zeros(num_tokens, jnp.int32), (jnp.arange(num_tokens), keys)
    )
    return tokens


def to_tokens(
    rule: Rule, depth: int | None = None, vocabulary: Vocabulary = VOCABULARY
) -> tuple[int, ...]:
    """Canonical token form of `rule` (see the module docstring).

    Args:
      rule: the rule to encode.
      depth: number of levels; None gives the smallest depth that holds the rule.
      vocabulary: the token ids to use.

    Returns:
      A tuple of 5·depth ints.

    Raises:
      ValueError: if the rule needs more than `depth` levels or uses an operand or function
        outside `vocabulary`.

    Example:
      >>> to_tokens(parse("g * exp(sign(g) * sign(m))"))
      (0, 3, 10, 10, 2, 0, 14, 0, 2, 2)
    """
    levels: list[tuple[int, int, int, int, int]] = []
    computed: dict[Rule, int] = {}
    num_operands = len(vocabulary.operands)
    identity = _index("unary", vocabulary.unaries, IDENTITY)

    def add_level(node: Rule, first: int, second: int, unary1: int, unary2: int, op: str):
        if node not in computed:
            binary = _index("binary", vocabulary.binaries, op)
            levels.append((first, second, unary1, unary2, binary))
            computed[node] = num_operands + len(levels) - 1
        return computed[node]

    def keep(node: Rule, unary: int, operand: int) -> int:
        filler = _filler(operand, num_operands + len(levels), num_operands)
        return add_level(node, operand, filler, unary, identity, KEEP_LEFT)

    def slot(node: Rule) -> tuple[int, int]:
        """(unary id, bank id) with unary(bank[id]) == node, adding levels as needed."""
        if node in computed:
            return identity, computed[node]
        if isinstance(node, Operand):
            return identity, _index("operand", vocabulary.operands, node.name)
        if isinstance(node, Unary):
            unary, operand = slot(node.arg)
            if unary != identity:
                operand = keep(node.arg, unary, operand)
            token = (node.fn, node.const)
            return _index("unary", vocabulary.unaries, token), operand
        unary1, first = slot(node.left)
        unary2, second = slot(node.right)
        return identity, add_level(node, first, second, unary1, unary2, node.op)

    unary, operand = slot(rule)
    if not levels or unary != identity or operand != num_operands + len(levels) - 1:
        keep(rule, unary, operand)
    if depth is None:
        depth = len(levels)
    if len(levels) > depth:
        raise ValueError(f"rule {rule} needs {len(levels)} levels, more than depth={depth}")
    while len(levels) < depth:
        previous = num_operands + len(levels) - 1
        filler = _filler(previous, previous + 1, num_operands)
        levels.append(
            (previous, filler, identity, identity, _index("binary", vocabulary.binaries, KEEP_LEFT))
        )
    return tuple(token for level in levels for token in level)


def _filler(first: int, bank_size: int, num_operands: int) -> int:
    """op2 for a keep-left level: the previous output if op1 is not it, else an id ≠ op1."""
    previous = bank_size - 1
    if bank_size > num_operands and first != previous:
        return previous
    return 0 if first != 0 else 1


def from_tokens(
    tokens: Sequence[int] | jax.Array, depth: int, vocabulary: Vocabulary = VOCABULARY
) -> Rule:
    """Builds the rule that 5·depth tokens encode.

    Args:
      tokens: ints (a list, tuple or array) in the layout of the module docstring.
      depth: number of levels.
      vocabulary: the token ids used.

    Returns:
      The `Rule` of the last level's output.

    Raises:
      ValueError: for a wrong length or an id outside its position's vocabulary.

    Example:
      >>> str(from_tokens([0, 3, 10, 10, 2, 0, 14, 0, 2, 2], depth=2))
      'g * exp(sign(g) * sign(m))'
    """
    tokens = [int(token) for token in np.asarray(tokens).reshape(-1)]
    if len(tokens) != TOKENS_PER_LEVEL * depth:
        expected = TOKENS_PER_LEVEL * depth
        raise ValueError(f"depth {depth} needs {expected} tokens, got {len(tokens)}")
    sizes = vocabulary.sizes(depth)
    for position, (token, size) in enumerate(zip(tokens, sizes, strict=True)):
        if not 0 <= token < size:
            raise ValueError(f"token {token} at position {position} is outside [0, {size})")
    bank: list[Rule] = [Operand(name) for name in vocabulary.operands]
    for level in range(depth):
        first, second, unary1, unary2, op = tokens[TOKENS_PER_LEVEL * level :][:TOKENS_PER_LEVEL]
        left = _apply_unary(vocabulary.unaries[unary1], bank[first])
        if vocabulary.binaries[op] == KEEP_LEFT:
            bank.append(left)
        else:
            right = _apply_unary(vocabulary.unaries[unary2], bank[second])
            bank.append(Binary(vocabulary.binaries[op], left, right))
    return bank[-1]


def _apply_unary(token: tuple[str, float | None], arg: Rule) -> Rule:
    fn, const = token
    return arg if token == IDENTITY else Unary(fn, arg, const)
