"""Search strategies on one interface, so they can be compared at equal evaluation budgets.

Every strategy is a frozen dataclass holding the `SearchSpace` it searches, the number of rules
it asks for per iteration and its own settings, with pure, jitted methods:

    strategy = Evolution(space=SearchSpace(depth=2), batch_size=50, population_size=100)
    state = strategy.init(key)
    tokens = strategy.ask(key, state)                # int32 [batch_size, space.num_positions]
    state = strategy.tell(state, tokens, rewards)    # rewards [batch_size]

`tokens` are in the token form of `lopt.rules.tokens` for the space's vocabulary (a subset
vocabulary sizes the space); `space.full_codes(tokens)` gives the interpreter's codes and
`space.to_rule(row)` the Rule. Every token sequence a strategy asks for satisfies the space's
constraints. State is a pytree of arrays (checkpointable). `name` (not a constructor argument)
is the strategy's name in `STRATEGIES`, flags and run identities.

* `PPOSearch`: the LSTM controller (`lopt.search.controller`) trained with PPO
  (`lopt.search.ppo`) on the rewards of its own samples (the paper's method).
* `Evolution`: regularized evolution (Real et al., 2019) over rule trees: a tournament among
  `tournament_size` random members of the population picks a parent, one node of its tree is
  mutated (an operand, a unary function or a binary operation: a token that the rule reads),
  the child joins the population and the oldest member leaves (aging). The first population is
  the warm-start rules (adam, powersign and addsign by default, as in Lion's search, Chen et
  al., 2023), then uniform random rules.
* `RandomSearch`: uniform sampling of every position among the ids its mask allows.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lopt import rules as rules_lib
from lopt.rules.tokens import KEEP_LEFT, TOKENS_PER_LEVEL
from lopt.search import ppo as ppo_lib
from lopt.search.controller import ControllerConfig, RuleController
from lopt.search.space import SearchSpace

_jit_method = functools.partial(jax.jit, static_argnums=0)


@dataclasses.dataclass(frozen=True)
class Strategy:
    """What every strategy has: the space it searches and `batch_size`, the rules per `ask`.

    A strategy implements `init(key) -> state`, `ask(key, state) -> tokens int32
    [batch_size, space.num_positions]` and `tell(state, tokens, rewards [batch_size]) -> state`.
    """

    space: SearchSpace = SearchSpace()
    batch_size: int = 50

    def __post_init__(self):
        if not isinstance(self.batch_size, int) or self.batch_size <= 0:
            raise ValueError(f"{type(self).__name__}.batch_size must be a positive integer, "
                             f"got {self.batch_size!r}")

    def init(self, key: jax.Array) -> Any:
        raise NotImplementedError

    def ask(self, key: jax.Array, state: Any) -> jax.Array:
        raise NotImplementedError

    def tell(self, state: Any, tokens: jax.Array, rewards: jax.Array) -> Any:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class RandomSearch(Strategy):
    """Uniform random rules from `space`."""

    name: str = dataclasses.field(default="random", init=False)

    def init(self, key: jax.Array) -> dict:
        del key
        return {}

    @_jit_method
    def ask(self, key: jax.Array, state: dict) -> jax.Array:
        del state
        return self.space.random_tokens(key, self.batch_size)

    def tell(self, state: dict, tokens: jax.Array, rewards: jax.Array) -> dict:
        del tokens, rewards
        return state


@dataclasses.dataclass(frozen=True)
class PPOSearch(Strategy):
    """The controller (network settings `network`) sampling `batch_size` rules per iteration,
    trained with PPO (settings `ppo`)."""

    ppo: ppo_lib.PPOConfig = ppo_lib.PPOConfig()
    network: ControllerConfig = ControllerConfig()
    name: str = dataclasses.field(default="ppo", init=False)

    @property
    def controller(self) -> RuleController:
        return RuleController(self.space, self.network)

    def init(self, key: jax.Array) -> ppo_lib.PPOState:
        return ppo_lib.init(self.controller, self.ppo, key)

    def ask(self, key: jax.Array, state: ppo_lib.PPOState) -> jax.Array:
        return self.controller.sample(state.params, key, self.batch_size).tokens

    def tell(self, state: ppo_lib.PPOState, tokens: jax.Array, rewards: jax.Array
             ) -> ppo_lib.PPOState:
        old_log_prob = self.controller.score(state.params, tokens).log_prob
        state, _ = ppo_lib.update(self.controller, self.ppo, state, tokens, old_log_prob,
                              jnp.asarray(rewards))
        return state


class EvolutionState(NamedTuple):
    """A ring buffer of the population: tokens [N, T], rewards [N]; `next` is the slot of the
    oldest member (overwritten first) and `size` how many slots hold a member."""

    tokens: jax.Array
    rewards: jax.Array
    next: jax.Array
    size: jax.Array


DEFAULT_WARM_START = ("adam", "powersign", "addsign")


@dataclasses.dataclass(frozen=True)
class Evolution(Strategy):
    """Regularized evolution with tournament selection, single-node mutation and a warm start.

    population_size: members alive at once; each child replaces the oldest (aging).
    tournament_size: members drawn (without replacement) per tournament; the best of them is
      the parent (2 in Lion's search; Real et al. use larger ones for larger populations).
    warm_start: rules (names of `lopt.rules.LIBRARY` or rule text) that open the first
      population, before the random ones; None: `DEFAULT_WARM_START`, those that the space can
      express (depth, vocabulary and constraints). Rules given here must all be expressible.
    redraw_activated: a mutation that makes unread positions read redraws them at random
      (`mutate_tokens`), as inserting a node would; False keeps what they held, which in a
      warm-start rule's padding is the previous output and identity (so the first non-keep-left
      binary on a pass-through level makes `x - x`, `x * x`, ...).
    """

    population_size: int = 100
    tournament_size: int = 2
    warm_start: tuple[str, ...] | None = None
    redraw_activated: bool = False
    name: str = dataclasses.field(default="evolution", init=False)

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.tournament_size <= self.population_size:
            raise ValueError(f"Evolution needs 1 <= tournament_size <= population_size, got "
                             f"{self.tournament_size} and {self.population_size}")
        if self.batch_size > self.population_size:
            raise ValueError(f"Evolution needs batch_size <= population_size, got "
                             f"{self.batch_size} and {self.population_size}")
        if self.warm_start is not None:
            object.__setattr__(self, "warm_start", tuple(self.warm_start))  # hashable
            unexpressed = [text for text in self.warm_start
                           if self.space.to_tokens(_rule(text)) is None]
            if unexpressed:
                raise ValueError(f"Evolution.warm_start: the space (depth {self.space.depth}, "
                                 f"its vocabulary and constraints) cannot express "
                                 f"{', '.join(map(repr, unexpressed))}")
        if len(self.warm_start_tokens) > self.population_size:
            raise ValueError(f"Evolution needs at most population_size warm-start rules, got "
                             f"{len(self.warm_start_tokens)} and {self.population_size}")

    @functools.cached_property
    def warm_start_rules(self) -> tuple[rules_lib.Rule, ...]:
        """The warm-start rules as given (`DEFAULT_WARM_START` for None), in order."""
        texts = DEFAULT_WARM_START if self.warm_start is None else self.warm_start
        return tuple(_rule(text) for text in texts)

    @functools.cached_property
    def warm_start_tokens(self) -> np.ndarray:
        """int32 [K, T]: the warm-start rules in this space's tokens, in order."""
        tokens = [self.space.to_tokens(rule) for rule in self.warm_start_rules]
        tokens = [row for row in tokens if row is not None]
        return np.array(tokens, np.int32).reshape(len(tokens), self.space.num_positions)

    def init(self, key: jax.Array) -> EvolutionState:
        del key
        num_positions = self.space.num_positions
        return EvolutionState(jnp.zeros((self.population_size, num_positions), jnp.int32),
                              jnp.full(self.population_size, -jnp.inf, jnp.float32),
                              jnp.int32(0), jnp.int32(0))

    @_jit_method
    def ask(self, key: jax.Array, state: EvolutionState) -> jax.Array:
        random_key, select_key, mutate_key = jax.random.split(key, 3)
        parents = jax.vmap(lambda k: tournament(k, state.rewards, self.tournament_size))(
            jax.random.split(select_key, self.batch_size))
        children = jax.vmap(lambda k, parent: mutate_tokens(k, parent, self.space,
                                                            self.redraw_activated))(
            jax.random.split(mutate_key, self.batch_size), state.tokens[parents])
        fresh = self.space.random_tokens(random_key, self.batch_size)
        warm = jnp.asarray(self.warm_start_tokens)
        if len(warm):  # the first population starts with the warm-start rules
            index = state.size + jnp.arange(self.batch_size)
            fresh = jnp.where((index < len(warm))[:, None],
                              warm[jnp.minimum(index, len(warm) - 1)], fresh)
        return jnp.where(state.size < self.population_size, fresh, children)

    @_jit_method
    def tell(self, state: EvolutionState, tokens: jax.Array, rewards: jax.Array
             ) -> EvolutionState:
        slots = (state.next + jnp.arange(self.batch_size)) % self.population_size
        return EvolutionState(state.tokens.at[slots].set(tokens),
                              state.rewards.at[slots].set(jnp.asarray(rewards, jnp.float32)),
                              (state.next + self.batch_size) % self.population_size,
                              jnp.minimum(state.size + self.batch_size, self.population_size))


def _rule(text: str) -> rules_lib.Rule:
    """A name of `lopt.rules.LIBRARY` or rule text, as a Rule."""
    return rules_lib.LIBRARY[text] if text in rules_lib.LIBRARY else rules_lib.parse(text)


def tournament(key: jax.Array, rewards: jax.Array, size: int) -> jax.Array:
    """The winner of one tournament: the index of the best of `size` members drawn without
    replacement from rewards [N] (the first of equals); jittable."""
    contestants = jax.random.choice(key, rewards.shape[0], (size,), replace=False)
    return contestants[jnp.argmax(rewards[contestants])]


def live_positions(tokens: jax.Array, space: SearchSpace) -> jax.Array:
    """bool [T]: the positions of tokens int32 [T] that the rule reads (jittable).

    The last level is read; a read level reads its op1, u1 and binary, and its op2 and u2
    unless the binary is keep-left; an operand that is an earlier level's output makes that
    level read.
    """
    levels = tokens.reshape(space.depth, TOKENS_PER_LEVEL)
    num_operands = len(space.vocabulary.operands)
    binaries = space.vocabulary.binaries
    keep_left = binaries.index(KEEP_LEFT) if KEEP_LEFT in binaries else -1

    def mark(read, operand, reads_it):
        """Marks the level whose output `operand` is, if it is one and `reads_it`."""
        level = jnp.maximum(operand - num_operands, 0)
        return read.at[level].set(read[level] | (reads_it & (operand >= num_operands)))

    def level_from_last(read, level):
        first, second, _, _, binary = levels[level]
        live = read[level]
        both = live & (binary != keep_left)
        read = mark(mark(read, first, live), second, both)
        return read, jnp.stack([live, both, live, both, live])

    last = jnp.zeros(space.depth, bool).at[-1].set(True)
    _, live = jax.lax.scan(level_from_last, last, jnp.arange(space.depth), reverse=True)
    return live.reshape(-1)


def mutate_tokens(key: jax.Array, tokens: jax.Array, space: SearchSpace,
                  redraw_activated: bool = False) -> jax.Array:
    """Mutates one node of a valid rule, tokens int32 [T] → [T]; jittable.

    A position is chosen uniformly among those the rule reads (`live_positions`) that allow
    another id; its token is redrawn uniformly among those other ids. A later token that the
    change makes invalid (e.g. an operand equal to a new op1) is redrawn uniformly among its
    allowed ids, so the child stays valid. With `redraw_activated`, the positions the child
    reads and the parent did not (op2 and u2 of a level whose keep-left binary changed, the
    levels a new operand refers to) are redrawn the same way, in position order.
    """
    position_key, token_key, repair_key = jax.random.split(key, 3)
    ids = jnp.arange(space.width)
    others = space.vocabulary.masks(tokens, space.depth) & (ids != tokens[:, None])
    live = live_positions(tokens, space)
    mutable = live & others.any(axis=1)
    mutated = jax.random.categorical(position_key, jnp.where(mutable, 0.0, -jnp.inf))
    new_token = jax.random.categorical(token_key, jnp.where(others[mutated], 0.0, -jnp.inf))
    tokens = tokens.at[mutated].set(new_token.astype(jnp.int32))
    activated = (live_positions(tokens, space) & ~live if redraw_activated
                 else jnp.zeros_like(live))

    def repair(tokens, position_and_key):
        position, position_key = position_and_key
        allowed = space.mask(tokens, position)
        redraw = jax.random.categorical(position_key, jnp.where(allowed, 0.0, -jnp.inf))
        keep = ((position <= mutated) | allowed[tokens[position]]) & ~activated[position]
        token = jnp.where(keep, tokens[position], redraw.astype(jnp.int32))
        return tokens.at[position].set(token), None

    positions = jnp.arange(space.num_positions)
    keys = jax.random.split(repair_key, space.num_positions)
    tokens, _ = jax.lax.scan(repair, tokens, (positions, keys))
    return tokens


STRATEGIES = {kind.name: kind for kind in (PPOSearch, Evolution, RandomSearch)}
