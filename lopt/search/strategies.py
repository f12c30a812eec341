"""Search strategies on one interface, so they can be compared at equal evaluation budgets.

Every strategy is a frozen dataclass with pure, jitted methods:

    state = strategy.init(key)
    tokens = strategy.ask(key, state)            # int32 [batch_size, 5·depth]
    state = strategy.tell(state, tokens, rewards)    # rewards [batch_size]

`tokens` are in the token form of `lopt.rules.tokens` for the strategy's `Vocabulary` (a subset
vocabulary sizes the space); `vocabulary.full_codes(tokens, depth)` gives the interpreter's codes
and `lopt.rules.from_tokens(row, depth, vocabulary)` the Rule. Every token sequence a strategy
asks for satisfies the vocabulary's constraints. State is a pytree of arrays (checkpointable).

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
from typing import NamedTuple

import jax
import jax.numpy as jnp

from lopt.rules.tokens import random_tokens
from lopt.search import ppo as ppo_lib
from lopt.search.controller import ControllerConfig, RuleController

_jit_method = functools.partial(jax.jit, static_argnums=0)


def _random_batch(key: jax.Array, space: ControllerConfig, batch_size: int) -> jax.Array:
    """int32 [batch_size, 5·depth] uniform valid token sequences."""
    sample = lambda k: random_tokens(k, space.depth, space.vocabulary)
    return jax.vmap(sample)(jax.random.split(key, batch_size))


@dataclasses.dataclass(frozen=True)
class RandomSearch:
    """Uniform random rules from the space of `space` (its network settings are unused)."""

    space: ControllerConfig = ControllerConfig()
    batch_size: int = 50

    def init(self, key: jax.Array) -> dict:
        del key
        return {}

    @_jit_method
    def ask(self, key: jax.Array, state: dict) -> jax.Array:
        del state
        return _random_batch(key, self.space, self.batch_size)

    def tell(self, state: dict, tokens: jax.Array, rewards: jax.Array) -> dict:
        del tokens, rewards
        return state


@dataclasses.dataclass(frozen=True)
class PPOSearch:
    """The controller sampling `batch_size` rules per iteration, trained with PPO."""

    space: ControllerConfig = ControllerConfig()
    batch_size: int = 50
    ppo: ppo_lib.PPOConfig = ppo_lib.PPOConfig()

    @property
    def controller(self) -> RuleController:
        return RuleController(self.space)

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
class Evolution:
    """Regularized evolution with tournament selection and single-token mutation."""

    space: ControllerConfig = ControllerConfig()
    batch_size: int = 50
    population_size: int = 100
    tournament_size: int = 10

    def __post_init__(self):
        if not 1 <= self.tournament_size <= self.population_size:
            raise ValueError("Evolution needs 1 <= tournament_size <= population_size")
        if self.batch_size > self.population_size:
            raise ValueError("Evolution needs batch_size <= population_size")

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
        fresh = _random_batch(random_key, self.space, self.batch_size)
        return jnp.where(state.size < self.population_size, fresh, children)

    @_jit_method
    def tell(self, state: EvolutionState, tokens: jax.Array, rewards: jax.Array
             ) -> EvolutionState:
        slots = (state.next + jnp.arange(self.batch_size)) % self.population_size
        return EvolutionState(state.tokens.at[slots].set(tokens),
                              state.rewards.at[slots].set(jnp.asarray(rewards, jnp.float32)),
                              (state.next + self.batch_size) % self.population_size,
                              jnp.minimum(state.size + self.batch_size, self.population_size))


def mutate_tokens(key: jax.Array, tokens: jax.Array, space: ControllerConfig) -> jax.Array:
    """Mutates one token of a valid sequence, int32 [T] → [T]; jittable.

    A position is chosen uniformly; its token is redrawn among the other ids its mask allows
    (kept when there is none). A later token that the change makes invalid (e.g. an operand
    equal to a new op1) is redrawn uniformly among its allowed ids, so the child stays valid.
    """
    vocabulary, depth = space.vocabulary, space.depth
    position_key, token_key, repair_key = jax.random.split(key, 3)
    mutated = jax.random.randint(position_key, (), 0, space.num_positions)
    allowed = vocabulary.mask(tokens, mutated, depth)
    others = allowed & (jnp.arange(allowed.shape[0]) != tokens[mutated])
    choices = jnp.where(others.any(), others, allowed)
    new_token = jax.random.categorical(token_key, jnp.where(choices, 0.0, -jnp.inf))
    tokens = tokens.at[mutated].set(new_token.astype(jnp.int32))

    def repair(tokens, position_and_key):
        position, position_key = position_and_key
        allowed = vocabulary.mask(tokens, position, depth)
        redraw = jax.random.categorical(position_key, jnp.where(allowed, 0.0, -jnp.inf))
        keep = (position <= mutated) | allowed[tokens[position]]
        token = jnp.where(keep, tokens[position], redraw.astype(jnp.int32))
        return tokens.at[position].set(token), None

    positions = jnp.arange(space.num_positions)
    keys = jax.random.split(repair_key, space.num_positions)
    tokens, _ = jax.lax.scan(repair, tokens, (positions, keys))
    return tokens


Strategy = RandomSearch | PPOSearch | Evolution
STRATEGIES = {"ppo": PPOSearch, "evolution": Evolution, "random": RandomSearch}
