"""The search space: rules of a given depth over a vocabulary, in token form (section 4.1).

A `SearchSpace` is what every strategy searches and nothing else: the depth (levels per rule)
and the `lopt.rules.Vocabulary` (operand, unary and binary subsets, the constraint switches).
Its helpers give the token layout's shapes and delegate validity (masks), uniform sampling and
decoding to the vocabulary, so that no strategy or driver passes `depth` and `vocabulary`
around separately.

Shapes: T = `num_positions` = 5·depth tokens per rule; W = `width` = the largest number of ids
any position allows (the width of every mask and of the controller's softmax heads). Tokens are
int32 in this space's vocabulary ids; `full_codes` rewrites them as the interpreter's codes.

    space = SearchSpace(depth=2)
    tokens = space.random_tokens(jax.random.key(0), 64)   # int32 [64, 10], all valid
    rule = space.to_rule(tokens[0])                        # a lopt.rules.Rule
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from lopt.rules import tokens as tokens_lib
from lopt.rules.expression import Rule
from lopt.rules.tokens import TOKENS_PER_LEVEL, VOCABULARY, Vocabulary


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """Rules of `depth` levels over `vocabulary` (defaults: the paper's full vocabulary).

    depth: levels per rule, 1–3 (every rule of the paper's Table 1 fits in 3; section 4.1
      sizes the space at 10^6–10^10 rules with subsets and depths 1–3).
    vocabulary: operand / unary / binary subsets and the constraint switches.
    """

    depth: int = 2
    vocabulary: Vocabulary = VOCABULARY

    def __post_init__(self):
        if self.depth not in (1, 2, 3):
            raise ValueError(f"SearchSpace.depth must be 1, 2 or 3, got {self.depth!r}")

    @property
    def num_positions(self) -> int:
        """T: tokens per rule (5 per level)."""
        return TOKENS_PER_LEVEL * self.depth

    @property
    def width(self) -> int:
        """W: the most ids any position allows (the width of masks and controller heads)."""
        return self.vocabulary.max_size(self.depth)

    def mask(self, tokens: jax.Array, position: jax.Array | int) -> jax.Array:
        """bool [W]: the ids allowed at `position` given tokens int [T] before it; jittable."""
        return self.vocabulary.mask(tokens, position, self.depth)

    def random_tokens(self, key: jax.Array, num_rules: int) -> jax.Array:
        """int32 [num_rules, T] valid rules, each position uniform among the ids its mask
        allows; jittable with `num_rules` static."""
        sample = lambda rule_key: tokens_lib.random_tokens(rule_key, self.depth, self.vocabulary)
        return jax.vmap(sample)(jax.random.split(key, num_rules))

    def full_codes(self, tokens: jax.Array) -> jax.Array:
        """int32 [..., T]: tokens [..., T] as the interpreter's codes (full-vocabulary ids)."""
        return self.vocabulary.full_codes(tokens, self.depth)

    def to_rule(self, tokens) -> Rule:
        """The `Rule` that one token sequence (ints [T]) encodes."""
        return tokens_lib.from_tokens(tokens, self.depth, self.vocabulary)

    def to_tokens(self, rule: Rule) -> np.ndarray | None:
        """int32 [T]: `rule`'s canonical tokens in this space, or None when the space cannot
        express it (too deep, outside the vocabulary, or against the constraints)."""
        try:
            tokens = np.array(tokens_lib.to_tokens(rule, self.depth, self.vocabulary), np.int32)
        except ValueError:
            return None
        masks = self.vocabulary.masks(tokens, self.depth, np)
        return tokens if bool(masks[np.arange(self.num_positions), tokens].all()) else None
