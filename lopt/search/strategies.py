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
  `tournament_size` random members of the population picks a parent, one of its tokens is mutated
  (an operand, a unary function or a binary node of its tree), the child joins the population and
  the oldest member leaves. Until the population is full, children are uniform random rules.
* `RandomSearch`: uniform sampling of every position among the ids its mask allows.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

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


@dataclasses.dataclass(frozen=True)
class Evolution(Strategy):
    """Regularized evolution with tournament selection and single-token mutation."""

    population_size: int = 100
    tournament_size: int = 10
    name: str = dataclasses.field(default="evolution", init=False)

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.tournament_size <= self.population_size:
            raise ValueError(f"Evolution needs 1 <= tournament_size <= population_size, got "
                             f"{self.tournament_size} and {self.population_size}")
        if self.batch_size > self.population_size:
            raise ValueError(f"Evolution needs batch_size <= population_size, got "
                             f"{self.batch_size} and {self.population_size}")

    def init(self, key: jax.Array) -> EvolutionState:
        del key
        num_positions = self.space.num_positions
        return EvolutionState(jnp.zeros((self.population_size, num_positions), jnp.int32),
                              jnp.full(self.population_size, -jnp.inf, jnp.float32),
                              jnp.int32(0), jnp.int32(0))

    @_jit_method
    def ask(self, key: jax.Array, state: EvolutionState) -> jax.Array:
        random_key, select_key, mutate_key = jax.random.split(key, 3)

        def child(select, mutate):
            contestants = jax.random.choice(select, self.population_size,
                                            (self.tournament_size,), replace=False)
            parent = contestants[jnp.argmax(state.rewards[contestants])]
            return mutate_tokens(mutate, state.tokens[parent], self.space)

        children = jax.vmap(child)(jax.random.split(select_key, self.batch_size),
                                   jax.random.split(mutate_key, self.batch_size))
        fresh = self.space.random_tokens(random_key, self.batch_size)
        return jnp.where(state.size < self.population_size, fresh, children)

    @_jit_method
    def tell(self, state: EvolutionState, tokens: jax.Array, rewards: jax.Array
             ) -> EvolutionState:
        slots = (state.next + jnp.arange(self.batch_size)) % self.population_size
        return EvolutionState(state.tokens.at[slots].set(tokens),
                              state.rewards.at[slots].set(jnp.asarray(rewards, jnp.float32)),
                              (state.next + self.batch_size) % self.population_size,
                              jnp.minimum(state.size + self.batch_size, self.population_size))


def mutate_tokens(key: jax.Array, tokens: jax.Array, space: SearchSpace) -> jax.Array:
    """Mutates one token of a valid sequence, int32 [T] → [T]; jittable.

    A position is chosen uniformly; its token is redrawn among the other ids its mask allows
    (kept when there is none). A later token that the change makes invalid (e.g. an operand
    equal to a new op1) is redrawn uniformly among its allowed ids, so the child stays valid.
    """
    position_key, token_key, repair_key = jax.random.split(key, 3)
    mutated = jax.random.randint(position_key, (), 0, space.num_positions)
    allowed = space.mask(tokens, mutated)
    others = allowed & (jnp.arange(allowed.shape[0]) != tokens[mutated])
    choices = jnp.where(others.any(), others, allowed)
    new_token = jax.random.categorical(token_key, jnp.where(choices, 0.0, -jnp.inf))
    tokens = tokens.at[mutated].set(new_token.astype(jnp.int32))

    def repair(tokens, position_and_key):
        position, position_key = position_and_key
        allowed = space.mask(tokens, position)
        redraw = jax.random.categorical(position_key, jnp.where(allowed, 0.0, -jnp.inf))
        keep = (position <= mutated) | allowed[tokens[position]]
        token = jnp.where(keep, tokens[position], redraw.astype(jnp.int32))
        return tokens.at[position].set(token), None

    positions = jnp.arange(space.num_positions)
    keys = jax.random.split(repair_key, space.num_positions)
    tokens, _ = jax.lax.scan(repair, tokens, (positions, keys))
    return tokens


STRATEGIES = {kind.name: kind for kind in (PPOSearch, Evolution, RandomSearch)}
