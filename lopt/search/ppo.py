"""Training the controller with Proximal Policy Optimization (clipped surrogate objective).

The paper (Bello et al., 2017, section 3.3) trains the controller with Trust Region Policy
Optimization; PPO (Schulman et al., 2017) plays the same role here: it keeps each update close to
the policy that sampled the batch (the ratio of new to old sequence probabilities is clipped to
[1 − ε, 1 + ε]) while taking several gradient steps on one batch, with first-order optimisation
only. As in the paper, the advantage of a rule is its reward minus a baseline, an exponential
moving average of past rewards, and an entropy bonus (weight 0.0015) keeps the controller
exploring; Adam with learning rate 1e-5 is the paper's optimiser.

One update is a pure jitted function of (state, tokens, old log-probs, rewards):
`num_epochs` full-batch Adam steps inside a `jax.lax.scan`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt.search.controller import RuleController


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO settings; the defaults are the paper's where it has them (section 3.3).

    learning_rate: Adam's step size (paper: 1e-5).
    entropy_weight: weight of the entropy bonus (paper: 0.0015).
    baseline_decay: the reward baseline is b ← decay·b + (1 − decay)·mean(batch rewards).
    clip_epsilon: PPO's clip range for the probability ratio.
    num_epochs: gradient steps per batch.
    normalize_advantages: divide advantages by the batch's standard deviation (makes the step
      size independent of the reward scale, e.g. accuracies vs negated objectives).
    """

    learning_rate: float = 1e-5
    entropy_weight: float = 0.0015
    baseline_decay: float = 0.95
    clip_epsilon: float = 0.2
    num_epochs: int = 4
    normalize_advantages: bool = False

    def __post_init__(self):
        if self.learning_rate <= 0 or self.clip_epsilon <= 0 or self.num_epochs <= 0:
            raise ValueError("PPOConfig.learning_rate, clip_epsilon and num_epochs must be "
                             "positive")
        if not 0 <= self.baseline_decay < 1:
            raise ValueError(f"PPOConfig.baseline_decay must be in [0, 1), got "
                             f"{self.baseline_decay!r}")


class PPOState(NamedTuple):
    """RuleController parameters, Adam state, the reward baseline and the number of updates."""

    params: Any
    opt_state: Any
    baseline: jax.Array
    num_updates: jax.Array


def _optimizer(config: PPOConfig) -> optax.GradientTransformation:
    return optax.adam(config.learning_rate)


def init(controller: RuleController, config: PPOConfig, key: jax.Array) -> PPOState:
    """Fresh controller parameters and optimiser state; the baseline starts at the first
    batch's mean reward."""
    params = controller.init(key)
    return PPOState(params, _optimizer(config).init(params), jnp.float32(0.0), jnp.int32(0))


def surrogate_loss(params, controller: RuleController, config: PPOConfig, tokens, old_log_prob,
                   advantages):
    """Negated clipped surrogate plus entropy bonus, for tokens int [B, T], old_log_prob [B],
    advantages [B]; returns (loss, mean entropy)."""
    current = controller.score(params, tokens)
    ratio = jnp.exp(current.log_prob - old_log_prob)
    clipped = jnp.clip(ratio, 1 - config.clip_epsilon, 1 + config.clip_epsilon)
    objective = jnp.minimum(ratio * advantages, clipped * advantages).mean()
    entropy = current.entropy.mean()
    return -(objective + config.entropy_weight * entropy), entropy


@functools.partial(jax.jit, static_argnums=(0, 1))
def update(controller: RuleController, config: PPOConfig, state: PPOState, tokens: jax.Array,
           old_log_prob: jax.Array, rewards: jax.Array) -> tuple[PPOState, dict]:
    """One PPO update on a batch of B sampled rules.

    Args:
      controller, config: static.
      state: the current PPOState (its params sampled `tokens`).
      tokens: int32 [B, T]; old_log_prob: [B] their log-probabilities when sampled;
      rewards: [B].

    Returns:
      (new state, metrics {"loss", "entropy", "baseline", "mean_reward"}).
    """
    rewards = rewards.astype(jnp.float32)
    mean_reward = rewards.mean()
    baseline = jnp.where(state.num_updates == 0, mean_reward, state.baseline)
    advantages = rewards - baseline
    if config.normalize_advantages:
        advantages = advantages / (rewards.std() + 1e-8)
    optimizer = _optimizer(config)
    loss_and_grad = jax.value_and_grad(surrogate_loss, has_aux=True)

    def epoch(carry, _):
        params, opt_state = carry
        (loss, entropy), grads = loss_and_grad(params, controller, config, tokens, old_log_prob,
                                               advantages)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), (loss, entropy)

    (params, opt_state), (losses, entropies) = jax.lax.scan(
        epoch, (state.params, state.opt_state), length=config.num_epochs)
    new_baseline = config.baseline_decay * baseline + (1 - config.baseline_decay) * mean_reward
    metrics = {"loss": losses[0], "entropy": entropies[0], "baseline": new_baseline,
               "mean_reward": mean_reward}
    return PPOState(params, opt_state, new_baseline, state.num_updates + 1), metrics
