"""The LSTM controller that samples update rules (Bello et al., 2017, sections 3.2 and 4.1).

A single-layer LSTM (hidden size 150, every weight uniform in ±0.08) emits the token form of a
rule of a `SearchSpace` (`lopt.rules.tokens`: 5 tokens per level) one position at a time. Each
position has its own softmax head, because each position has its own vocabulary (the operand bank
grows by one per level), and its own input embedding of the token sampled before it, which is fed
back as the next input. The space's constraints (`Vocabulary.distinct_operands`,
`no_final_addition`, `reuse_previous`, each a switch) are applied by setting the logits of
forbidden ids to −∞ (`SearchSpace.mask`), so a sample is always a valid rule.

Shapes: T = `space.num_positions` (5·depth) positions, W = `space.width` ids per head, H = the
hidden size. Sampling a batch is one jitted `jax.vmap` over keys of a `jax.lax.scan` over
positions.

    controller = RuleController(SearchSpace(depth=2), ControllerConfig())
    params = controller.init(jax.random.key(0))
    batch = controller.sample(params, jax.random.key(1), 64)   # tokens [64, 10], log_prob [64]
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from lopt.search.space import SearchSpace


@dataclasses.dataclass(frozen=True)
class ControllerConfig:
    """The controller network (defaults: section 3.2 of the paper).

    hidden_size: LSTM units (paper: 150).
    init_scale: every parameter starts uniform in [−init_scale, init_scale] (paper: 0.08).
    """

    hidden_size: int = 150
    init_scale: float = 0.08

    def __post_init__(self):
        if self.hidden_size <= 0 or self.init_scale <= 0:
            raise ValueError("ControllerConfig.hidden_size and init_scale must be positive")


class RuleSamples(NamedTuple):
    """A batch of B rules in token form with the controller's statistics.

    tokens: int32 [B, T]; log_prob: [B] log-probability of each sequence under the controller;
    entropy: [B] sum over positions of the entropy of each (masked) softmax.
    """

    tokens: jax.Array
    log_prob: jax.Array
    entropy: jax.Array


def _uniform(scale: float) -> Callable:
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -scale, scale)
    return init


class LSTMPolicy(nn.Module):
    """One step of the controller: (LSTM carry, previous token, position) → (carry, logits [W])."""

    num_positions: int
    width: int
    hidden_size: int
    init_scale: float

    @nn.compact
    def __call__(self, carry, previous_token, position):
        init = _uniform(self.init_scale)
        start = self.param("start", init, (self.hidden_size,))
        embeddings = self.param("embeddings", init,
                                (self.num_positions, self.width, self.hidden_size))
        inputs = jnp.where(position == 0, start,
                           embeddings[jnp.maximum(position - 1, 0), previous_token])
        cell = nn.LSTMCell(self.hidden_size, kernel_init=init, recurrent_kernel_init=init,
                           bias_init=init)
        carry, hidden = cell(carry, inputs)
        head_kernel = self.param("head_kernel", init,
                                 (self.num_positions, self.hidden_size, self.width))
        head_bias = self.param("head_bias", init, (self.num_positions, self.width))
        return carry, hidden @ head_kernel[position] + head_bias[position]


@dataclasses.dataclass(frozen=True)
class RuleController:
    """Pure functions of the controller's parameters for rules of `space`."""

    space: SearchSpace = SearchSpace()
    config: ControllerConfig = ControllerConfig()

    @property
    def network(self) -> LSTMPolicy:
        return LSTMPolicy(self.space.num_positions, self.space.width, self.config.hidden_size,
                          self.config.init_scale)

    def init(self, key: jax.Array):
        """Fresh parameters (a flax variable dict), every entry uniform in ±init_scale."""
        carry = self._zero_carry()
        return self.network.init(key, carry, jnp.int32(0), jnp.int32(0))

    def _zero_carry(self):
        zeros = jnp.zeros(self.config.hidden_size)
        return zeros, zeros

    def _unroll(self, params, choose: Callable, choose_inputs) -> RuleSamples:
        """Runs the LSTM over all positions; `choose(log_probs [W], x) -> token` picks each
        position's token (sampled or given) from the masked log-softmax, x from choose_inputs."""
        space = self.space

        def step(carry, position_and_input):
            lstm_carry, tokens, previous = carry
            position, choose_input = position_and_input
            lstm_carry, logits = self.network.apply(params, lstm_carry, previous, position)
            allowed = space.mask(tokens, position)
            log_probs = jax.nn.log_softmax(jnp.where(allowed, logits, -jnp.inf))
            token = choose(log_probs, choose_input).astype(jnp.int32)
            # Masked ids have probability 0 and log-probability −∞: zero them before the product
            # so that neither the value nor its gradient sees 0·(−∞).
            entropy = -jnp.sum(jnp.exp(log_probs) * jnp.where(allowed, log_probs, 0.0))
            tokens = tokens.at[position].set(token)
            return (lstm_carry, tokens, token), (log_probs[token], entropy)

        positions = jnp.arange(space.num_positions)
        initial = (self._zero_carry(), jnp.zeros(space.num_positions, jnp.int32), jnp.int32(0))
        (_, tokens, _), (log_probs, entropies) = jax.lax.scan(
            step, initial, (positions, choose_inputs))
        return RuleSamples(tokens, log_probs.sum(), entropies.sum())

    @functools.partial(jax.jit, static_argnums=(0, 3))
    def sample(self, params, key: jax.Array, num_rules: int) -> RuleSamples:
        """Samples `num_rules` rules autoregressively: RuleSamples with leading axis num_rules."""
        def one(rule_key):
            keys = jax.random.split(rule_key, self.space.num_positions)
            return self._unroll(params, lambda log_probs, k: jax.random.categorical(k, log_probs),
                                keys)
        return jax.vmap(one)(jax.random.split(key, num_rules))

    @functools.partial(jax.jit, static_argnums=0)
    def score(self, params, tokens: jax.Array) -> RuleSamples:
        """Log-probabilities and entropies of given token sequences, tokens int [B, T]."""
        def one(sequence):
            return self._unroll(params, lambda log_probs, token: token, sequence)
        return jax.vmap(one)(tokens)
