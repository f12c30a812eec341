"""The neural policy of predicted step descent and its supervised training (LM sections 3.3, 5).

The policy is pi(u | s) = N(mu(s), diag(variance)) with

    mu(s) = action_scale * (net(w(s)) - net(w(0))),
    w(s) = clip((p(s) - input_mean) / input_scale, -INPUT_CLIP, INPUT_CLIP),

where p(s) is the policy input (the state without the iterate, `features.policy_input`), net is
a flax MLP with one hidden layer of `hidden` softplus units and a linear output (LM section 5),
and the whitening statistics (`input_mean`, `input_scale`) and the action scale are fitted
once, on the first batch of samples, and stored with the policy. Subtracting net(w(0)) makes
the empty state (no gradient, no history) a fixed point: the policy takes no step where the
gradient and every recorded change are zero, which keeps it still at a minimum however many
steps it is run for (LM test for 100 steps after training on 40). Clipping the whitened
input bounds the step on states far outside the training distribution: without it, a policy
run past the states it was trained on can feed growing objective changes back into growing
steps and diverge (measured: mean cost 1e35 on the training objectives after two iterations).
The bound is 20 standard deviations: at 5 the first step, whose gradient lies 6-12 standard
deviations out, was clipped (logistic regression: f after one step 0.546 against gradient
descent's 0.501), and training at 20 reached a lower cost in two GPS iterations than at 5 in
six.

Training (`fit`) minimises the mean of the squared Mahalanobis distance
    (mu(s) - mu_psi(s))^T Sigma_psi^{-1} (mu(s) - mu_psi(s))
over all sampled states, with mu_psi, Sigma_psi the linear-Gaussian controllers' mean and
covariance at that state (LM section 3.3), by Adam on minibatches taken in a fresh random
permutation every epoch, all inside one `lax.scan`. The precisions are divided by their mean
trace so the loss is O(1) whatever the action scale. The variance is the closed-form minimiser
of the KL for a diagonal covariance: 1 / the mean over states of diag(Sigma_psi^{-1}).

`linearise` gives the time-varying linear-Gaussian controller that agrees with the policy to
first order at the mean sampled state of every objective and time step: the reference of the
mirror-descent coupling (`lopt.gps.train`).

Shapes: dX the state size, dP = dX - dU the policy input size, dU the action size (= dim).
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lopt.gps import controllers as ctrl
from lopt.gps import features as feats

INPUT_CLIP = 20.0  # our choice: whitened inputs are clipped to this many standard deviations


class Network(nn.Module):
    """One hidden layer of softplus units, linear output (LM section 5)."""

    hidden: int
    outputs: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, inputs):
        hidden = nn.softplus(nn.Dense(self.hidden, param_dtype=self.dtype)(inputs))
        return nn.Dense(self.outputs, param_dtype=self.dtype)(hidden)


class Policy(NamedTuple):
    """Policy parameters: network (flax params), input_mean `[dP]`, input_scale `[dP]`,
    action_scale `[dU]`, variance `[dU]` (module docstring)."""

    network: dict
    input_mean: jax.Array
    input_scale: jax.Array
    action_scale: jax.Array
    variance: jax.Array


def _network(policy: Policy) -> Network:
    return Network(policy.network["Dense_0"]["kernel"].shape[1], policy.action_scale.shape[0])


def init(key: jax.Array, input_size: int, dim: int, hidden: int, dtype=jnp.float32) -> Policy:
    """A randomly initialised policy with identity whitening and unit scales."""
    network = Network(hidden, dim, dtype).init(key, jnp.zeros(input_size, dtype))["params"]
    return Policy(network, jnp.zeros(input_size, dtype), jnp.ones(input_size, dtype),
                  jnp.ones(dim, dtype), jnp.ones(dim, dtype))


def mean(policy: Policy, inputs: jax.Array) -> jax.Array:
    """mu for policy inputs `[..., dP]` (the state without the iterate): `[..., dU]`."""
    network = _network(policy)
    whitened = jnp.clip((inputs - policy.input_mean) / policy.input_scale, -INPUT_CLIP,
                        INPUT_CLIP)
    origin = jnp.clip(-policy.input_mean / policy.input_scale, -INPUT_CLIP, INPUT_CLIP)
    outputs = network.apply({"params": policy.network}, whitened)
    return policy.action_scale * (outputs - network.apply({"params": policy.network}, origin))


def state_mean(layout: feats.StateLayout, policy: Policy, state: jax.Array) -> jax.Array:
    """mu for full states `[..., dX]`: `[..., dU]`."""
    return mean(policy, feats.policy_input(layout, state))


class Targets(NamedTuple):
    """Supervision for the policy, one row per sampled state (M = N S T): inputs `[M, dP]`,
    actions (controller means) `[M, dU]`, precisions `[M, dU, dU]`."""

    inputs: jax.Array
    actions: jax.Array
    precisions: jax.Array


def targets(layout: feats.StateLayout, controller: ctrl.Controller,
            samples: ctrl.Samples) -> Targets:
    """The controllers' mean actions and precisions at every sampled state (t < T)."""
    states = samples.states[:, :, :-1]  # [N, S, T, dX]
    actions = jnp.einsum("ntuk,nstk->nstu", controller.gain, states) + controller.offset[:, None]
    precisions = jnp.broadcast_to(controller.precision[:, None], (*actions.shape,
                                                                 actions.shape[-1]))
    dim = layout.dim
    return Targets(feats.policy_input(layout, states).reshape(-1, layout.size - dim),
                   actions.reshape(-1, dim), precisions.reshape(-1, dim, dim))


def normalise(policy: Policy, data: Targets) -> Policy:
    """Sets the whitening statistics and the action scale from `data` (used once)."""
    scale = jnp.std(data.inputs, axis=0)
    action_scale = jnp.std(data.actions, axis=0)
    return policy._replace(
        input_mean=jnp.mean(data.inputs, axis=0),
        input_scale=jnp.where(scale > 0, scale, 1.0),
        action_scale=jnp.where(action_scale > 0, action_scale, 1.0),
    )


def loss(policy: Policy, data: Targets) -> jax.Array:
    """Mean squared Mahalanobis distance between policy and controller means `[]`.

    The precisions should already be normalised (`fit` divides them by their mean trace).
    """
    gap = mean(policy, data.inputs) - data.actions
    return jnp.mean(jnp.einsum("mi,mij,mj->m", gap, data.precisions, gap))


def fit(policy: Policy, data: Targets, key: jax.Array, *, epochs: int, batch_size: int,
        learning_rate: float):
    """Trains the network of `policy` on `data` (module docstring).

    Returns (the policy with the new network and the fitted variance, the loss after each
    epoch `[epochs]`, evaluated on all of `data` with the normalised precisions).
    """
    count, dim = data.actions.shape
    scale = jnp.mean(jnp.trace(data.precisions, axis1=1, axis2=2)) / dim
    data = data._replace(precisions=data.precisions / scale)
    batch_size = min(batch_size, count)
    num_batches = count // batch_size
    optimizer = optax.adam(learning_rate)

    def batch_loss(network, batch):
        return loss(policy._replace(network=network), batch)

    def step(carry, batch):
        network, opt_state = carry
        grads = jax.grad(batch_loss)(network, batch)
        updates, opt_state = optimizer.update(grads, opt_state, network)
        return (optax.apply_updates(network, updates), opt_state), None

    def epoch(carry, epoch_key):
        order = jax.random.permutation(epoch_key, count)[: num_batches * batch_size]
        batches = jax.tree.map(lambda a: a[order].reshape(num_batches, batch_size,
                                                          *a.shape[1:]), data)
        carry, _ = jax.lax.scan(step, carry, batches)
        return carry, batch_loss(carry[0], data)

    start = (policy.network, optimizer.init(policy.network))
    (network, _), losses = jax.lax.scan(epoch, start, jax.random.split(key, epochs))
    diagonal = jnp.diagonal(data.precisions, axis1=1, axis2=2) * scale
    return policy._replace(network=network, variance=1.0 / jnp.mean(diagonal, axis=0)), losses


def linearise(layout: feats.StateLayout, policy: Policy, samples: ctrl.Samples,
              horizon: int) -> ctrl.Controller:
    """The policy as linear-Gaussian controllers `[N, T, ...]`, expanded to first order at the
    mean sampled state of every objective and time step t < T (Samples `[N, S, ...]`)."""
    centres = jnp.mean(samples.states[:, :, :horizon], axis=1)  # [N, T, dX]

    def one_point(state):
        action = state_mean(layout, policy, state)
        gain = jax.jacrev(lambda s: state_mean(layout, policy, s))(state)
        return gain, action - gain @ state

    gains, offsets = jax.vmap(jax.vmap(one_point))(centres)
    covariance = jnp.broadcast_to(jnp.diag(policy.variance), (*offsets.shape, layout.dim))
    return ctrl.make_controller(gains, offsets, covariance)
