"""Child tasks on which candidate update rules are scored (Bello et al. 2017, section 4).

Two kinds, one protocol. A task is any hashable object (compiled programs take it as a static
argument) with
  name: str, for reports;
  has_data: bool;
  init(key) -> params, a pytree of float arrays (one child's starting point);
  loss(params, inputs, labels) -> scalar to minimise (data-free tasks: `loss(params)`);
  accuracy(params, inputs, labels) -> scalar, higher is better: the search's reward;
and, when `has_data`, `dataset` (a `lopt.data.Dataset`: train and validation splits of NumPy
inputs and integer labels) and `num_classes` (chance accuracy 1/num_classes is a diverged
candidate's reward). Optionally `reward_over_run: bool` (default False): the evaluator then
scores a run by the mean of `accuracy` over every iterate it visited (iterates 0..T of a run
of T steps, the negated area under the curve) instead of at its last iterate, in the sweep
and in the final run alike. A task that scores rules itself instead of being trained
(`lopt.search.imitation.ImitationTask`) has `score_rules(codes, config, key)` in place of
`loss` and `accuracy`, and may add to its run identity with `identity_extra() -> (fields,
data)`. `check_task` refuses anything else before work starts, naming what is
missing; `SearchConfig(task=...)` takes a task object, a name below, or "module:attribute"
(`lopt.user_code`: a function or class returning the task; the form binaries' `--task` and a
resumed run's config.json can name). The three kinds here:

* `SupervisedTask`: a flax classifier and a `lopt.data.Dataset` held as NumPy arrays (the
  evaluator moves them to the device once and takes minibatches by index).
  `loss(params, inputs, labels)` is the mean softmax cross-entropy of a batch,
  `accuracy(params, inputs, labels)` the fraction classified correctly; for the language
  model both average over every position of every sequence (next-character cross-entropy
  and next-character accuracy).
  Batch norm (in the ConvNets and the Wide ResNet) always normalises with the statistics of
  the batch it sees, in training and in evaluation, so a child's whole state is its
  parameters and every function stays pure.
* `FunctionTask`: one objective of a `lopt.objectives` family from a fixed start, no data
  (the paper's Rosenbrock transfer test). `loss(params)` is the objective; its "accuracy"
  is the negated objective, so higher is better for both kinds.
* `FamilyTask`: a batch of P objectives of a `lopt.objectives` family minimised side by side
  (Li & Malik's families as a search child), rewarded over the whole run: its reward is
  minus the mean objective over problems and iterations 0..T, the criterion
  `lopt.baselines.tune` tunes the hand-designed baselines by ("auc").

The task constructors are memoised: the same arguments give the same task object, so jitted
functions that take a task as a static argument compile once per task, not once per call.

Task names: digits_mlp, digits_convnet (CPU defaults, scikit-learn's bundled digits),
cifar10_convnet (the paper's child: two 3x3 conv layers of 32 filters, ReLU, batch norm;
needs a local CIFAR-10 directory), cifar10_wrn (a Wide ResNet for the paper's transfer test,
section 5.2; needs a local CIFAR-10 directory; meant for a GPU), stdlib_lstm_lm (a character
LSTM language model on the Python standard library's source, a CPU-sized stand-in for the
paper's translation transfer test, section 5.3), rosenbrock, quadratic, and
logistic_regression_family, robust_linear_regression_family, mlp_classifier_family (32 problems
of each `lopt.objectives` family, 100 steps per run: `objective_family`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lopt import cpu_kernels, data, objectives, user_code


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


# Every convolution of the child networks: `cpu_kernels.matmul_conv` on a CPU, where XLA's own
# convolution is slow inside the evaluator's `lax.scan`, and XLA's convolution elsewhere.
_conv = functools.partial(nn.Conv, conv_general_dilated=cpu_kernels.conv_general_dilated)

# Batch norm that always uses the statistics of the batch it sees (see the module docstring).
_batch_norm = functools.partial(nn.BatchNorm, use_running_average=False)


class ConvNet(nn.Module):
    """3x3 conv -> batch norm (batch statistics) -> ReLU, per layer; global mean pool; linear."""

    filters: Sequence[int]
    num_classes: int

    @nn.compact
    def __call__(self, inputs):
        x = inputs
        for width in self.filters:
            x = nn.relu(_batch_norm()(_conv(width, (3, 3))(x)))
        return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))


class PreActivationBlock(nn.Module):
    """Residual block BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus a shortcut.

    The shortcut is the input itself, or a 1x1 conv of the activated input (BN-ReLU applied)
    when the number of filters or the resolution changes (`stride` 2 halves it).
    """

    filters: int
    stride: int

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(_conv, self.filters, use_bias=False,
                                 kernel_init=nn.initializers.he_normal())
        activated = nn.relu(_batch_norm()(x))
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.filters:
            shortcut = conv((1, 1), strides=self.stride)(activated)
        residual = conv((3, 3), strides=self.stride)(activated)
        residual = conv((3, 3))(nn.relu(_batch_norm()(residual)))
        return shortcut + residual


class WideResNet(nn.Module):
    """WRN-depth-width (Zagoruyko & Komodakis 2016), pre-activation blocks, no dropout.

    A 3x3 conv of 16 filters; three groups of (depth - 4) / 6 blocks with 16·width,
    32·width and 64·width filters at 32x32, 16x16 and 8x8 (the first block of the second
    and third group has stride 2); BN-ReLU, global mean pool, linear logits.
    """

    depth: int
    width: int
    num_classes: int

    @nn.compact
    def __call__(self, inputs):
        x = _conv(16, (3, 3), use_bias=False, kernel_init=nn.initializers.he_normal())(inputs)
        for group, filters in enumerate((16, 32, 64)):
            for block in range((self.depth - 4) // 6):
                stride = 2 if group > 0 and block == 0 else 1
                x = PreActivationBlock(filters * self.width, stride)(x)
        x = nn.relu(_batch_norm()(x))
        return nn.Dense(self.num_classes)(x.mean(axis=(1, 2)))


class LSTM(nn.Module):
    """One LSTM layer (Hochreiter & Schmidhuber 1997): [B, L, features] -> [B, L, hidden_size].

    Gates i, f, g, o = [x_t, h_{t-1}] @ kernel + bias;  c_t = σ(f)·c_{t-1} + σ(i)·tanh(g),
    h_t = σ(o)·tanh(c_t), from zero state. The four gates share one kernel and one bias (the
    forget gate's starts at 1), so a layer is two parameter leaves: the population evaluator
    runs its rule interpreter once per leaf, and few leaves keep its compile time short.
    """

    hidden_size: int

    @nn.compact
    def __call__(self, inputs):
        batch, _, features = inputs.shape
        size = self.hidden_size
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (features + size, 4 * size))
        bias = self.param("bias", lambda key, shape: jnp.zeros(shape).at[size:2 * size].set(1.0),
                          (4 * size,))
        input_gates = inputs @ kernel[:features] + bias  # all time steps in one product

        def step(carry, gates_t):
            hidden, cell = carry
            i, f, g, o = jnp.split(gates_t + hidden @ kernel[features:], 4, axis=-1)
            cell = nn.sigmoid(f) * cell + nn.sigmoid(i) * jnp.tanh(g)
            hidden = nn.sigmoid(o) * jnp.tanh(cell)
            return (hidden, cell), hidden

        zeros = jnp.zeros((batch, size), inputs.dtype)
        _, outputs = jax.lax.scan(step, (zeros, zeros), input_gates.swapaxes(0, 1))
        return outputs.swapaxes(0, 1)


class LSTMLanguageModel(nn.Module):
    """Token ids [B, L] -> embedding -> LSTM layers -> next-token logits [B, L, vocabulary]."""

    vocabulary_size: int
    embedding_size: int
    hidden_sizes: Sequence[int]

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(self.vocabulary_size, self.embedding_size)(tokens)
        for size in self.hidden_sizes:
            x = LSTM(size)(x)
        return nn.Dense(self.vocabulary_size)(x)


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
        inputs = self.dataset.train.inputs
        sample = jnp.zeros((1, *inputs.shape[1:]), inputs.dtype)
        variables = self.model.init(key, sample)
        return variables["params"]

    def _logits(self, params, inputs):
        logits, _ = self.model.apply({"params": params}, inputs, mutable=["batch_stats"])
        return logits

    def loss(self, params, inputs, labels):
        """Mean softmax cross-entropy of a batch: inputs [B, ...], labels [B] or [B, L] int."""
        logits = self._logits(params, inputs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def accuracy(self, params, inputs, labels):
        """Fraction of the batch (of all its positions, for sequences) classified correctly."""
        return jnp.mean(jnp.argmax(self._logits(params, inputs), axis=-1) == labels)


@dataclasses.dataclass(frozen=True, eq=False)
class FunctionTask:
    """Minimising one objective of a family from a fixed start; no data."""

    name: str
    family: objectives.Family
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


@dataclasses.dataclass(frozen=True, eq=False)
class FamilyTask:
    """P objectives of one family minimised at once from fixed starts, scored over the run.

    The child's parameters are the P iterates, one leaf `start` of shape [P, dim]. `loss` is
    the *sum* of the P objectives, so each problem's iterate gets exactly its own objective's
    gradient and an elementwise rule acts on each problem as it would on that problem alone;
    `accuracy` is minus their *mean*. With `reward_over_run` the search's reward is the mean
    of `accuracy` over iterates 0..T: minus the mean objective over problems and iterations,
    which is `lopt.evaluation.run`'s curves [P, T + 1] averaged.
    """

    name: str
    family: objectives.Family
    problems: dict
    start: jax.Array
    has_data = False
    num_classes = None
    reward_over_run = True

    def init(self, key: jax.Array):
        del key
        return self.start

    def loss(self, params, inputs=None, labels=None):
        """Sum over problems of the objective at each problem's iterate (params [P, dim])."""
        del inputs, labels
        return jnp.sum(jax.vmap(self.family.loss)(self.problems, params))

    def accuracy(self, params, inputs=None, labels=None):
        """Minus the mean objective over problems."""
        return -self.loss(params) / self.start.shape[0]


@functools.cache
def objective_family(name: str = "logistic_regression", num_problems: int = 32,
                     seed: int = 0) -> FamilyTask:
    """`num_problems` objectives of the `lopt.objectives` family `name` (its default settings),
    drawn with `seed`, each from an initial iterate `family.init` draws with the same seed
    (keys: split(key(seed)) into problems, starts). Pair it with `steps_per_epoch` set to the
    horizon (default 100 for data-free tasks) and one epoch per run."""
    family = objectives.get(name)
    key_problems, key_starts = jax.random.split(jax.random.key(seed))
    return FamilyTask(f"{name}_family", family, family.sample(key_problems, num_problems),
                      family.init(key_starts, num_problems))


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


# Wide ResNet sizes. "paper": WRN-28-10, the CIFAR-10 network of Zagoruyko & Komodakis (2016),
# whose optimizer comparisons Bello et al. (2017, section 5.2, Table 1) transfer to (they do not
# state depth and width); 36.5M parameters. "small": WRN-10-1, the cheapest member of the
# family (one block per group, 78k parameters), for tests and CPU runs.
WIDE_RESNET_SETTINGS = {
    "small": {"depth": 10, "width": 1},
    "paper": {"depth": 28, "width": 10},
}


@functools.cache
def cifar10_wrn(data_dir: str, depth: int = 10, width: int = 1) -> SupervisedTask:
    """A Wide ResNet WRN-depth-width on CIFAR-10 (default: `WIDE_RESNET_SETTINGS["small"]`).

    Example (the paper's size, for a GPU):
      >>> task = cifar10_wrn("/data/cifar-10-batches-py", **WIDE_RESNET_SETTINGS["paper"])
    """
    if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
        raise ValueError(f"Wide ResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), "
                         f"got {depth!r}")
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"Wide ResNet width must be a positive integer, got {width!r}")
    return SupervisedTask("cifar10_wrn", WideResNet(depth, width, 10), data.load_cifar10(data_dir))


@functools.cache
def stdlib_lstm_lm(hidden_sizes: tuple[int, ...] = (64,), embedding_size: int = 16,
                   sequence_length: int = 32, num_chars: int = 80_000) -> SupervisedTask:
    """A character LSTM language model on Python standard-library source (`load_stdlib_text`).

    Defaults: 80,000 characters (64,000 train, 16,000 validation), sequences of 32, a
    97-symbol vocabulary, embedding 16, one LSTM layer of 64 (28,593 parameters).
    The evaluator's reward is next-character accuracy on the validation text.
    """
    dataset = data.load_stdlib_text(num_chars, sequence_length)
    model = LSTMLanguageModel(dataset.num_classes, embedding_size, tuple(hidden_sizes))
    return SupervisedTask("stdlib_lstm_lm", model, dataset)


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
    "cifar10_wrn": cifar10_wrn,
    "stdlib_lstm_lm": stdlib_lstm_lm,
    "rosenbrock": rosenbrock,
    "quadratic": quadratic,
    **{f"{family}_family": functools.partial(objective_family, family)
       for family in ("logistic_regression", "robust_linear_regression", "mlp_classifier")},
}
# The tasks whose constructor takes a local CIFAR-10 directory as its first argument.
CIFAR10_TASKS = ("cifar10_convnet", "cifar10_wrn")


def get(task, *, data_dir: str | None = None):
    """The task `task` names: a name of `TASKS` (built with its defaults; `data_dir` is
    required for, and only for, the `CIFAR10_TASKS`), "module:attribute" (`lopt.user_code`),
    or a task object, returned as it is; each checked by `check_task`."""
    if not isinstance(task, str):
        return check_task(task)
    name = task
    if name not in TASKS:
        if user_code.is_spec(name):
            return check_task(user_code.load(name, "task"))
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(TASKS)}, 'module:attribute' "
                         "or a task object")
    if name in CIFAR10_TASKS:
        if data_dir is None:
            raise ValueError(f"task {name} needs data_dir (a local CIFAR-10 directory)")
        return TASKS[name](data_dir)
    return TASKS[name]()


REQUIRED = ("name", "has_data", "init", "loss", "accuracy")
SCORED_REQUIRED = ("name", "has_data", "init", "score_rules")  # scores rules without training


def check_task(task):
    """Returns `task` if it implements the protocol (module docstring; a task that scores
    rules itself, `lopt.search.imitation.ImitationTask`, needs no loss or accuracy), else
    raises a one-line ValueError naming what is missing or wrong."""
    kind = type(task).__name__
    required = SCORED_REQUIRED if hasattr(task, "score_rules") else REQUIRED
    missing = [part for part in required if not hasattr(task, part)]
    if missing:
        raise ValueError(f"{kind} is not a search task: it lacks {', '.join(missing)} (see "
                         f"lopt.search.tasks: {', '.join(required)})")
    for part in required[2:]:
        if not callable(getattr(task, part)):
            raise ValueError(f"{kind}.{part} must be callable")
    if task.has_data:
        splits = getattr(task, "dataset", None)
        if not all(hasattr(getattr(splits, split, None), field) for split in ("train",
                   "validation") for field in ("inputs", "labels")):
            raise ValueError(f"{kind} has data but no dataset with train and validation splits "
                             "of inputs and labels (a lopt.data.Dataset)")
        if not isinstance(getattr(task, "num_classes", None), int):
            raise ValueError(f"{kind} has data but no integer num_classes")
    try:
        hash(task)
    except TypeError:
        raise ValueError(f"{kind} must be hashable (e.g. a dataclass with eq=False): compiled "
                         "programs take the task as a static argument") from None
    return task


def identity(task) -> tuple[dict, object]:
    """What identifies `task` in a search's run identity, stable across processes: (fields:
    name, class, the model's description and the parameters' shapes; data: the dataset, or
    for a data-free task its starting point and problem, or problems; then what the task's
    own `identity_extra()` adds, if it has one)."""
    params = jax.eval_shape(task.init, jax.random.key(0))
    fields = {"name": task.name, "class": f"{type(task).__module__}.{type(task).__qualname__}",
              "model": repr(getattr(task, "model", None)),
              "params": str(jax.tree.map(lambda leaf: (leaf.shape, str(leaf.dtype)), params))}
    if task.has_data:
        return fields, task.dataset
    problems = getattr(task, "problem", getattr(task, "problems", None))
    data = (task.init(jax.random.key(0)), problems)
    if hasattr(task, "identity_extra"):
        extra_fields, extra_data = task.identity_extra()
        fields.update(extra_fields)
        data += extra_data
    return fields, data
