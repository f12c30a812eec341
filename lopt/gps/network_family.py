"""Objectives for coordinate-wise learned optimizers: small classifiers trained on minibatches.

Li & Malik (2017b) meta-train on one objective, a 48-48-10 MLP on MNIST randomly projected to
48 dimensions and normalised to unit variance, with minibatches of 64. MNIST cannot be
downloaded here, so `projected_digits` does the same to scikit-learn's bundled digits (8x8
images, 64 pixels); different keys give different projections, so a family of such data sets
is available for training and held-out tests alike.

A problem is (Data, initial params): `NetworkFamily.sample` draws `num` of them with a leading
problem axis on every leaf. The loss of params on a minibatch is the mean cross-entropy; the
`full_loss` is the same on the whole data set (what the curves report, `training_curve`).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt import data as data_lib
from lopt.search.tasks import MLP


class Data(NamedTuple):
    """A classification data set: inputs `[n, d]` float, labels `[n]` int32."""

    inputs: jax.Array
    labels: jax.Array


def project(inputs: np.ndarray, key: jax.Array, dim: int) -> np.ndarray:
    """`inputs` `[n, D]` times a standard-normal `[D, dim]` matrix, each output standardised to
    zero mean and unit variance."""
    matrix = np.asarray(jax.random.normal(key, (inputs.shape[1], dim)), np.float32)
    projected = inputs @ matrix
    scale = projected.std(axis=0)
    return (projected - projected.mean(axis=0)) / np.where(scale > 0, scale, 1.0)


def projected_digits(key: jax.Array, dim: int = 48) -> Data:
    """The digits' training split (1,437 images) projected to `dim` inputs (module docstring)."""
    train = data_lib.load_digits().train
    inputs = train.inputs.reshape(len(train.labels), -1)
    return Data(jnp.asarray(project(inputs, key, dim)), jnp.asarray(train.labels))


@dataclasses.dataclass(frozen=True)
class NetworkFamily:
    """MLPs with ReLU hidden layers `hidden_sizes` on `num_classes` classes, trained on
    minibatches of `batch_size` (drawn with replacement). Paper: (48,), 10 classes, 64."""

    hidden_sizes: tuple[int, ...] = (48,)
    num_classes: int = 10
    batch_size: int = 64
    input_dim: int = 48
    name: str = "neural_nets"

    @property
    def model(self) -> MLP:
        return MLP(tuple(self.hidden_sizes), self.num_classes)

    def init(self, key: jax.Array):
        """Initial params (a flax params dict) for inputs of `input_dim` features."""
        return self.model.init(key, jnp.zeros((1, self.input_dim)))["params"]

    def loss(self, params, batch: Data) -> jax.Array:
        logits = self.model.apply({"params": params}, batch.inputs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch.labels).mean()

    def minibatch(self, data: Data, key: jax.Array) -> Data:
        index = jax.random.randint(key, (self.batch_size,), 0, data.labels.shape[0])
        return Data(data.inputs[index], data.labels[index])

    def minibatch_loss(self, params, data: Data, key: jax.Array) -> jax.Array:
        return self.loss(params, self.minibatch(data, key))

    def full_loss(self, params, data: Data) -> jax.Array:
        return self.loss(params, data)

    def sample(self, key: jax.Array, num: int, data: Data):
        """`num` problems on `data`: (Data broadcast to `[num, ...]`, params `[num, ...]`)."""
        params = jax.vmap(self.init)(jax.random.split(key, num))
        stacked = jax.tree.map(lambda a: jnp.broadcast_to(a, (num, *a.shape)), data)
        return stacked, params


def training_curve(opt: optax.GradientTransformationExtraArgs, minibatch_loss, full_loss,
                   params, key: jax.Array, steps: int, eval_every: int) -> jax.Array:
    """Full-batch losses of `opt` training `params` on minibatches, every `eval_every` steps
    from step 0: `[steps // eval_every + 1]` (as computed: non-finite where it diverges).

    `minibatch_loss(params, key)` and `full_loss(params)`; step i of chunk c draws its
    minibatch with `split(split(key, steps // eval_every)[c], eval_every)[i]`; `opt.update`
    gets the minibatch value as `value=`."""

    def step(carry, step_key):
        params, state = carry
        value, grad = jax.value_and_grad(minibatch_loss)(params, step_key)
        updates, state = opt.update(grad, state, params, value=value)
        return (optax.apply_updates(params, updates), state), None

    def chunk(carry, chunk_key):
        carry, _ = jax.lax.scan(step, carry, jax.random.split(chunk_key, eval_every))
        return carry, full_loss(carry[0])

    _, losses = jax.lax.scan(chunk, (params, opt.init(params)),
                             jax.random.split(key, steps // eval_every))
    return jnp.concatenate([full_loss(params)[None], losses])
