"""Child tasks on which candidate update rules are scored (Bello et al. 2017, section 4).

Two kinds, one protocol (`init`, `loss`, `accuracy`, `has_data`):

* `SupervisedTask`: a flax classifier and a `lopt.data.Dataset` held as NumPy arrays (the
  evaluator moves them to the device once and takes minibatches by index).
  `loss(params, inputs, labels)` is the mean softmax cross-entropy of a batch,
  `accuracy(params, inputs, labels)` the fraction classified correctly.
  Batch norm (in the ConvNets) always normalises with the statistics of the batch it sees,
  in training and in evaluation, so a child's whole state is its parameters and every
  function stays pure.
* `FunctionTask`: one objective of a `lopt.objectives` family from a fixed start, no data
  (the paper's Rosenbrock transfer test). `loss(params)` is the objective; its "accuracy"
  is the negated objective, so higher is better for both kinds.

The task constructors are memoised: the same arguments give the same task object, so jitted
functions that take a task as a static argument compile once per task, not once per call.

Task names: digits_mlp, digits_convnet (CPU defaults, scikit-learn's bundled digits),
cifar10_convnet (the paper's child: two 3x3 conv layers of 32 filters, ReLU, batch norm;
needs a local CIFAR-10 directory), rosenbrock, quadratic.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lopt import data, objectives


class MLP(nn.Module):
    """Flatten, hidden ReLU layers, linear logits."""

    hidden_sizes: Sequence[int]
    num_classes: int

    @nn.compact
    def __call__(self, inputs):
        x = inputs.reshape(inputs.shape[0], -1)
        for size in self.hidden_sizes:
            x = nn.relu(nn.Dense(size)(x))
        return nn.Dense(self.num_classes)(x)


class ConvNet(nn.Module):
    """3x3 conv -> batch norm (batch statistics) -> ReLU, per layer; global mean pool; linear."""

    filters: Sequence[int]
    num_classes: int

    @nn.compact
    def __call__(self, inputs):
        x = inputs
        for width in self.filters:
            x = nn.Conv(width, (3, 3))(x)
            x = nn.BatchNorm(use_running_average=False, use_bias=True, use_scale=True)(x)
            x = nn.relu(x)
        return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))


@dataclasses.dataclass(frozen=True, eq=False)
class SupervisedTask:
    """A classifier trained on a data set; hashed by identity (safe as a jit static arg)."""

    name: str
    model: nn.Module
    dataset: data.Dataset
    has_data = True

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    def init(self, key: jax.Array):
        """Parameters of one child network (a pytree)."""
        sample = jnp.zeros((1, *self.dataset.train.inputs.shape[1:]), jnp.float32)
        variables = self.model.init(key, sample)
        return variables["params"]

    def _logits(self, params, inputs):
        logits, _ = self.model.apply({"params": params}, inputs, mutable=["batch_stats"])
        return logits

    def loss(self, params, inputs, labels):
        """Mean softmax cross-entropy of a batch: inputs [B, ...], labels [B] int."""
        logits = self._logits(params, inputs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def accuracy(self, params, inputs, labels):
        """Fraction of the batch classified correctly."""
        return jnp.mean(jnp.argmax(self._logits(params, inputs), axis=-1) == labels)


@dataclasses.dataclass(frozen=True, eq=False)
class FunctionTask:
    """Minimising one objective of a family from a fixed start; no data."""

    name: str
    family: objectives._Family
    problem: dict
    start: jax.Array
    has_data = False
    num_classes = None

    def init(self, key: jax.Array):
        del key
        return self.start

    def loss(self, params, inputs=None, labels=None):
        del inputs, labels
        return self.family.loss(self.problem, params)

    def accuracy(self, params, inputs=None, labels=None):
        return -self.loss(params)


@functools.cache
def digits_mlp(hidden_sizes: tuple[int, ...] = (64,)) -> SupervisedTask:
    """An MLP on scikit-learn's 8x8 digits (1,437 train / 360 validation images)."""
    return SupervisedTask("digits_mlp", MLP(tuple(hidden_sizes), 10), data.load_digits())


@functools.cache
def digits_convnet(filters: tuple[int, ...] = (16, 16)) -> SupervisedTask:
    """The paper's child scaled down: two 3x3 conv layers with batch norm on the digits."""
    return SupervisedTask("digits_convnet", ConvNet(tuple(filters), 10), data.load_digits())


@functools.cache
def cifar10_convnet(data_dir: str, filters: tuple[int, ...] = (32, 32)) -> SupervisedTask:
    """The paper's child (two 3x3 conv layers, 32 filters, ReLU, batch norm) on CIFAR-10."""
    return SupervisedTask("cifar10_convnet", ConvNet(tuple(filters), 10),
                          data.load_cifar10(data_dir))


@functools.cache
def rosenbrock(start: tuple[float, ...] = (-1.5, 2.0)) -> FunctionTask:
    """The 2-D Rosenbrock function (minimum 0 at (1, 1)) from `start`."""
    family = objectives.rosenbrock()
    problem = jax.tree.map(lambda a: a[0], family.sample(jax.random.key(0), 1))
    return FunctionTask("rosenbrock", family, problem, jnp.asarray(start, jnp.float32))


@functools.cache
def quadratic(dim: int = 10, seed: int = 0) -> FunctionTask:
    """One random convex quadratic of dimension `dim` (condition number 10), from the origin."""
    family = objectives.quadratic(dim)
    problem = jax.tree.map(lambda a: a[0], family.sample(jax.random.key(seed), 1))
    return FunctionTask("quadratic", family, problem, jnp.zeros(dim, jnp.float32))


TASKS = {
    "digits_mlp": digits_mlp,
    "digits_convnet": digits_convnet,
    "cifar10_convnet": cifar10_convnet,
    "rosenbrock": rosenbrock,
    "quadratic": quadratic,
}


def get(name: str, *, data_dir: str | None = None):
    """Builds the task called `name`; `data_dir` is required for (only) cifar10_convnet."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    if name == "cifar10_convnet":
        if data_dir is None:
            raise ValueError("task cifar10_convnet needs data_dir (a local CIFAR-10 directory)")
        return cifar10_convnet(data_dir)
    return TASKS[name]()
