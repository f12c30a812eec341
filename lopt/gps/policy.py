"""The neural policy of predicted step descent and its supervised training (LM sections 3.3, 5).

The policy is pi(u | s) = N(mu(s), diag(variance)) with

    mu(s) = action_scale * (net(w(s)) - net(w(0))),
    w(s) = clip((p(s) - input_mean) / input_scale, -INPUT_CLIP, INPUT_CLIP),

where p(s) is the policy input (the state without the iterate, `features.policy_input`), net is
a flax MLP with one hidden layer of `hidden` softplus units (LM section 5; `activation`
chooses another of ACTIVATIONS, e.g. ReLU for the coordinate-wise policy) and a linear output,
and the whitening statistics (`input_mean`, `input_scale`) and the action scale are fitted
once, on the first batch of samples, and stored with the policy. Subtracting net(w(0)) makes
the empty state (no gradient, no history) a fixed point: the policy takes no step where the
gradient and every recorded change are zero, which keeps it still at a minimum however many
steps it is run for (LM test for 100 steps after training on 40). Clipping the whitened
input bounds the step on states far outside the training distribution: without it, a policy
run past the states it was trained on can feed growing objective changes back into growing
steps and diverge. The bound is 20 standard deviations, so that the first step, whose
gradient lies several standard deviations out, is not clipped (docs/decisions.md).

Training (`fit`) minimises the mean of the squared Mahalanobis distance
    (mu(s) - mu_psi(s))^T Sigma_psi^{-1} (mu(s) - mu_psi(s))
over all sampled states, with mu_psi, Sigma_psi the linear-Gaussian controllers' mean and
covariance at that state (LM section 3.3), by a fixed number of Adam steps on minibatches
drawn with replacement, all inside one `lax.scan` (so the S-step's cost does not grow with
the number of training objectives). The precisions are divided by their mean
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

from lopt import parallel, progress
from lopt.gps import controllers as ctrl
from lopt.gps import features as feats

INPUT_CLIP = 20.0  # our choice: whitened inputs are clipped to this many standard deviations


ACTIVATIONS = {"softplus": nn.softplus, "relu": nn.relu}


class Network(nn.Module):
    """One hidden layer of softplus units (LM section 5) or another of ACTIVATIONS, linear
    output."""

    hidden: int
    outputs: int
    dtype: jnp.dtype = jnp.float32
    activation: str = "softplus"

    @nn.compact
    def __call__(self, inputs):
        hidden = ACTIVATIONS[self.activation](
            nn.Dense(self.hidden, param_dtype=self.dtype)(inputs))
        return nn.Dense(self.outputs, param_dtype=self.dtype)(hidden)


class Policy(NamedTuple):
    """Policy parameters: network (flax params), input_mean `[dP]`, input_scale `[dP]`,
    action_scale `[dU]`, variance `[dU]` (module docstring)."""

    network: dict
    input_mean: jax.Array
    input_scale: jax.Array
    action_scale: jax.Array
    variance: jax.Array


def _network(policy: Policy, activation: str) -> Network:
    return Network(policy.network["Dense_0"]["kernel"].shape[1], policy.action_scale.shape[0],
                   activation=activation)


def init(key: jax.Array, input_size: int, dim: int, hidden: int, dtype=jnp.float32) -> Policy:
    """A randomly initialised policy with identity whitening and unit scales."""
    network = Network(hidden, dim, dtype).init(key, jnp.zeros(input_size, dtype))["params"]
    return Policy(network, jnp.zeros(input_size, dtype), jnp.ones(input_size, dtype),
                  jnp.ones(dim, dtype), jnp.ones(dim, dtype))


def mean(policy: Policy, inputs: jax.Array, activation: str = "softplus") -> jax.Array:
    """mu for policy inputs `[..., dP]` (the state without the iterate): `[..., dU]`."""
    network = _network(policy, activation)
    whitened = jnp.clip((inputs - policy.input_mean) / policy.input_scale, -INPUT_CLIP,
                        INPUT_CLIP)
    origin = jnp.clip(-policy.input_mean / policy.input_scale, -INPUT_CLIP, INPUT_CLIP)
    outputs = network.apply({"params": policy.network}, whitened)
    return policy.action_scale * (outputs - network.apply({"params": policy.network}, origin))


def state_mean(layout: feats.StateLayout, policy: Policy, state: jax.Array) -> jax.Array:
    """mu for full states `[..., dX]`: `[..., dU]`."""
    return mean(policy, feats.policy_input(layout, state))


class Targets(NamedTuple):
    """Supervision for the policy: the controllers' mean action and precision at every sampled
    state. Rows are not materialised (`rows` gathers a minibatch), so the S-step holds no
    copy of the `[N S T, dX]` states. Shapes: states `[N, S, T', dX]` with T' >= T (a
    trailing final state is ignored), gain `[N, T, dU, dX]`, offset `[N, T, dU]`, precision
    `[N, T, dU, dU]`; row m = (n, s, t) in row-major order, M = N S T rows."""

    states: jax.Array
    gain: jax.Array
    offset: jax.Array
    precision: jax.Array

    @property
    def num_rows(self) -> int:
        num, samples = self.states.shape[:2]
        return num * samples * self.gain.shape[1]


def targets(controller: ctrl.Controller, samples: ctrl.Samples) -> Targets:
    """The supervision of `controller` `[N, T, ...]` at the states of `samples` `[N, S, ...]`."""
    return Targets(samples.states, controller.gain, controller.offset, controller.precision)


def rows(layout: feats.StateLayout, data: Targets, index: jax.Array):
    """(policy inputs `[B, dP]`, target actions `[B, dU]`, precisions `[B, dU, dU]`) of the
    rows `index` `[B]` (int, in [0, M))."""
    _, samples, _, _ = data.states.shape
    horizon = data.gain.shape[1]
    objective, rest = jnp.divmod(index, samples * horizon)
    sample, time = jnp.divmod(rest, horizon)
    states = data.states[objective, sample, time]
    actions = (jnp.einsum("bux,bx->bu", data.gain[objective, time], states)
               + data.offset[objective, time])
    return feats.policy_input(layout, states), actions, data.precision[objective, time]


def _objective_rows(layout: feats.StateLayout, objective: Targets):
    """All rows of one objective (leaves of `Targets` without the N axis): (policy inputs
    `[S T, dP]`, target actions `[S T, dU]`, precisions `[S T, dU, dU]`)."""
    horizon = objective.gain.shape[0]
    states = objective.states[:, :horizon]
    actions = jnp.einsum("tux,stx->stu", objective.gain, states) + objective.offset
    precisions = jnp.broadcast_to(objective.precision, (*actions.shape, actions.shape[-1]))
    dim = actions.shape[-1]
    return (feats.policy_input(layout, states).reshape(-1, states.shape[-1] - layout.dim),
            actions.reshape(-1, dim), precisions.reshape(-1, dim, dim))


def _row_moments(layout: feats.StateLayout, data: Targets):
    """Mean and standard deviation over all rows of the policy inputs and target actions.

    Two passes over the objectives (`lax.map`): sums, then squared deviations from the mean,
    so no `[N, S, T, dX]` temporary is formed."""

    def rows_of(objective):  # inputs and actions
        return _objective_rows(layout, objective)[:2]

    sums = jax.lax.map(lambda objective: jax.tree.map(lambda a: jnp.sum(a, axis=0),
                                                      rows_of(objective)), data)
    means = jax.tree.map(lambda a: jnp.sum(a, axis=0) / data.num_rows, sums)
    squares = jax.lax.map(lambda objective: jax.tree.map(
        lambda a, m: jnp.sum((a - m) ** 2, axis=0), rows_of(objective), means), data)
    stds = jax.tree.map(lambda a: jnp.sqrt(jnp.sum(a, axis=0) / data.num_rows), squares)
    return means[0], stds[0], stds[1]


def normalise(layout: feats.StateLayout, policy: Policy, data: Targets) -> Policy:
    """Sets the whitening statistics and the action scale from `data` (used once)."""
    input_mean, input_scale, action_scale = _row_moments(layout, data)
    return policy._replace(
        input_mean=input_mean,
        input_scale=jnp.where(input_scale > 0, input_scale, 1.0),
        action_scale=jnp.where(action_scale > 0, action_scale, 1.0),
    )


def _mahalanobis(policy: Policy, inputs, actions, precisions,
                 activation: str = "softplus") -> jax.Array:
    gap = mean(policy, inputs, activation) - actions
    return jnp.einsum("mi,mij,mj->m", gap, precisions, gap)


def precision_scale(data: Targets) -> jax.Array:
    """The mean trace of the precisions over rows, divided by dU `[]` (`loss` divides by it)."""
    dim = data.precision.shape[-1]
    return jnp.mean(jnp.trace(data.precision, axis1=-2, axis2=-1)) / dim


def loss(layout: feats.StateLayout, policy: Policy, data: Targets) -> jax.Array:
    """Mean over all rows of the squared Mahalanobis distance between the policy's and the
    controllers' means, under the precisions divided by `precision_scale` (so the loss is
    O(1) whatever the action scale) `[]`. Objectives are summed one at a time (`lax.map`),
    so memory stays at one objective's rows."""
    scale = precision_scale(data)

    def one_objective(objective):
        return jnp.sum(_mahalanobis(policy, *_objective_rows(layout, objective)))

    return jnp.sum(jax.lax.map(one_objective, data)) / (data.num_rows * scale)


def fit_network(policy: Policy, batch, num_rows: int, scale: jax.Array, key: jax.Array, *,
                steps: int, batch_size: int, learning_rate: float,
                activation: str = "softplus") -> dict:
    """`steps` Adam steps (one `lax.scan`) on the mean squared Mahalanobis distance of
    minibatches of `batch_size` rows drawn uniformly with replacement from `num_rows`;
    `batch(index [B]) -> (inputs [B, dP], target actions [B, dU], precisions [B, dU, dU])`,
    the precisions divided by `scale`. Returns the trained network (flax params)."""
    optimizer = optax.adam(learning_rate)

    def batch_loss(network, index):
        inputs, actions, precisions = batch(index)
        return jnp.mean(_mahalanobis(policy._replace(network=network), inputs, actions,
                                     precisions / scale, activation))

    def step(carry, inputs):
        network, opt_state = carry
        step_key, number = inputs
        index = jax.random.randint(step_key, (batch_size,), 0, num_rows)
        grads = jax.grad(batch_loss)(network, index)
        updates, opt_state = optimizer.update(grads, opt_state, network)
        progress.tick(number + 1)
        return (optax.apply_updates(network, updates), opt_state), None

    start = (policy.network, optimizer.init(policy.network))
    (network, _), _ = jax.lax.scan(step, start, (jax.random.split(key, steps),
                                                 jnp.arange(steps)))
    return network


def fit(layout: feats.StateLayout, policy: Policy, data: Targets, key: jax.Array, *,
        steps: int, batch_size: int, learning_rate: float):
    """Trains the network of `policy` on `data` (module docstring) with `fit_network`, so the
    cost is set by `steps * batch_size`, not by the number of rows.

    Returns (the policy with the new network and the fitted variance, the loss `[]` on all
    rows after the last step).
    """
    network = fit_network(policy, lambda index: rows(layout, data, index), data.num_rows,
                          precision_scale(data), key, steps=steps, batch_size=batch_size,
                          learning_rate=learning_rate)
    diagonal = jnp.mean(jnp.diagonal(data.precision, axis1=-2, axis2=-1), axis=(0, 1))
    fitted = policy._replace(network=network, variance=1.0 / diagonal)
    return fitted, loss(layout, fitted, data)


def linearise(layout: feats.StateLayout, policy: Policy, samples: ctrl.Samples,
              horizon: int) -> ctrl.Controller:
    """The policy as linear-Gaussian controllers `[N, T, ...]`, expanded to first order at the
    mean sampled state of every objective and time step t < T (Samples `[N, S, ...]`)."""
    # Mean over samples, then the slice: slicing first copies every sampled state.
    centres = jnp.mean(samples.states, axis=1)[:, :horizon]  # [N, T, dX]

    def one_point(state):
        action = state_mean(layout, policy, state)
        gain = jax.jacrev(lambda s: state_mean(layout, policy, s))(state)
        return gain, action - gain @ state

    gains, offsets = parallel.map_over_devices(jax.vmap(one_point), centres, batch_size=64)
    covariance = jnp.broadcast_to(jnp.diag(policy.variance), (*offsets.shape, layout.dim))
    return ctrl.make_controller(gains, offsets, covariance)
