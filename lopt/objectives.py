"""Families of objective functions, as in Li & Malik (2017), section 6 and appendix 8.1.

A *family* is a small frozen dataclass holding the settings that define a distribution over
objectives (dimension, number of points, regulariser, ...); it subclasses `Family`, the
protocol every family implements. Conventions shared by every family:

* `family.sample(key, num_problems)` returns the problem data of `num_problems` objectives as
  a pytree (a dict of arrays) whose every leaf has the leading axis `num_problems`. It is
  pure, jittable and has no Python loop over problems; the same key gives the same problems.
* `family.loss(problem, x)` is the scalar objective of ONE problem (leaves without the leading
  axis) at the flat iterate `x` of shape `[family.dim]`. Pure, jittable and vmappable:
  `jax.vmap(family.loss)(problems, xs)` evaluates a batch.
* `family.objective(problem)` closes over one problem and returns `x -> loss`, for users who
  want a plain function to hand to an optimizer.
* `family.init(key, num_problems)` returns initial iterates `[num_problems, dim]`, drawn
  i.i.d. from N(0, init_scale^2) (uniform on [-init_scale, init_scale] for Rosenbrock).
* Everything follows the dtype of the iterate and of the sampled data (float32 by default,
  float64 inside `jax.enable_x64()`).

Paper defaults are the dataclass defaults; every setting is a keyword argument, so harder
variants are one call away (`logistic_regression(num_features=10, num_points=500)`).

Your own family: subclass `Family` as a frozen dataclass (hashable: compiled programs take the
family as a static argument) and define `dim`, `sample` and `loss`. `check_family` refuses,
before any work, an object that lacks a part, naming it; `settings` is what identifies the
family in a run's identity (its dataclass fields, or its plain-valued attributes).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from lopt import user_code

Problem = dict[str, jax.Array]


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")


def _check_count(num: int, name: str = "num_problems") -> None:
    if not isinstance(num, int) or isinstance(num, bool) or num <= 0:
        raise ValueError(f"{name} must be a positive integer, got {num!r}")


def _random_covariances(key: jax.Array, shape: tuple[int, ...], dim: int, floor: float):
    """Random symmetric positive-definite matrices `[*shape, dim, dim]`.

    `A A^T / dim + floor * I` with standard-normal `A`: positive definite by construction,
    eigenvalues at least `floor`.
    """
    factors = jax.random.normal(key, (*shape, dim, dim))
    return factors @ jnp.swapaxes(factors, -1, -2) / dim + floor * jnp.eye(dim)


def _gaussian_mixture_points(
    key: jax.Array,
    num_problems: int,
    num_clusters: int,
    points_per_cluster: int,
    dim: int,
    mean_scale: float,
    random_covariance: bool,
    covariance_floor: float,
):
    """Points from `num_clusters` Gaussians per problem, cluster-major order.

    Returns:
      points `[num_problems, num_clusters * points_per_cluster, dim]` and the cluster index of
      every point `[num_clusters * points_per_cluster]` (the same for every problem).
    """
    key_mean, key_cov, key_noise = jax.random.split(key, 3)
    means = mean_scale * jax.random.normal(key_mean, (num_problems, num_clusters, dim))
    standard = jax.random.normal(key_noise, (num_problems, num_clusters, points_per_cluster, dim))
    if random_covariance:
        covariances = _random_covariances(
            key_cov, (num_problems, num_clusters), dim, covariance_floor
        )
        cholesky = jnp.linalg.cholesky(covariances)
        standard = jnp.einsum("pcij,pcnj->pcni", cholesky, standard)
    points = means[:, :, None, :] + standard
    cluster = jnp.repeat(jnp.arange(num_clusters), points_per_cluster)
    return points.reshape(num_problems, num_clusters * points_per_cluster, dim), cluster


@dataclasses.dataclass(frozen=True)
class Family:
    """The protocol a family of objectives implements (conventions: the module docstring).

    A family is a frozen dataclass of settings that subclasses `Family` and defines
      dim: the length of an iterate (a property);
      sample(key, num_problems) -> Problem: the data of `num_problems` objectives, every leaf
        with the leading axis `num_problems`;
      loss(problem, x) -> scalar: the objective of ONE problem at the iterate x [dim].
    It inherits `name` (the class name), `objective(problem)` (x -> loss), `check_iterate(x)`
    and `init(key, num_problems)` -> [num_problems, dim] iterates ~ N(0, init_scale^2), which
    a family with another start distribution overrides.
    """

    init_scale: float = 1.0

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def sample(self, key: jax.Array, num_problems: int) -> Problem:
        raise NotImplementedError

    def loss(self, problem: Problem, x: jax.Array) -> jax.Array:
        raise NotImplementedError

    def objective(self, problem: Problem):
        """Returns the jittable closure `x -> loss(problem, x)` for one problem."""
        return lambda x: self.loss(problem, x)

    def init(self, key: jax.Array, num_problems: int) -> jax.Array:
        """Initial iterates `[num_problems, dim]` ~ N(0, init_scale^2)."""
        _check_count(num_problems)
        return self.init_scale * jax.random.normal(key, (num_problems, self.dim))

    def check_iterate(self, x: Any) -> None:
        """Raises a ValueError naming the problem if `x` is not a `[..., dim]` iterate."""
        shape = getattr(x, "shape", None)
        if shape is None or len(shape) == 0 or shape[-1] != self.dim:
            raise ValueError(
                f"{self.name} iterates must have shape [..., {self.dim}], got {shape}"
            )


@dataclasses.dataclass(frozen=True)
class LogisticRegression(Family):
    """L2-regularised logistic regression on two Gaussian clusters (paper section 6.1).

    loss(w, b) = -1/n sum_i [y_i log s(w.x_i + b) + (1-y_i) log(1 - s(w.x_i + b))]
                 + lam/2 |w|^2,   s = sigmoid.
    Half the points come from each of two Gaussians with random means N(0, mean_scale^2 I)
    and random covariances; label = which Gaussian. Iterate x = (w, b), dim = d + 1.
    """

    num_features: int = 3
    num_points: int = 100
    l2: float = 5e-4
    mean_scale: float = 1.0
    covariance_floor: float = 0.1

    def __post_init__(self):
        _check_count(self.num_features, "num_features")
        _check_count(self.num_points, "num_points")
        if self.num_points % 2:
            raise ValueError(f"num_points must be even (two equal clusters), got {self.num_points}")
        _check_positive(covariance_floor=self.covariance_floor, init_scale=self.init_scale)

    @property
    def dim(self) -> int:
        return self.num_features + 1

    def sample(self, key, num_problems):
        """Returns {"inputs": [P, n, d], "labels": [P, n] in {0, 1}}."""
        _check_count(num_problems)
        inputs, cluster = _gaussian_mixture_points(
            key, num_problems, 2, self.num_points // 2, self.num_features,
            self.mean_scale, True, self.covariance_floor,
        )
        labels = jnp.broadcast_to(cluster.astype(inputs.dtype), inputs.shape[:2])
        return {"inputs": inputs, "labels": labels}

    def loss(self, problem, x):
        weights, bias = x[:-1], x[-1]
        logits = problem["inputs"] @ weights + bias
        # -[y log s(z) + (1-y) log(1-s(z))] = softplus(z) - y z, stable for any z.
        data_term = jnp.mean(jax.nn.softplus(logits) - problem["labels"] * logits)
        return data_term + 0.5 * self.l2 * jnp.sum(weights**2)


@dataclasses.dataclass(frozen=True)
class RobustLinearRegression(Family):
    """Linear regression with the Geman-McClure loss (paper section 6.2).

    loss(w, b) = 1/n sum_i r_i^2 / (c + r_i^2),  r_i = y_i - w.x_i - b.
    Points: `points_per_cluster` from each of `num_clusters` Gaussians with means
    N(0, mean_scale^2 I) and identity covariance; the labels of a cluster are the points
    projected on that cluster's random vector N(0, I), plus its random bias N(0, 1), plus i.i.d.
    noise N(0, noise_scale^2). Iterate x = (w, b), dim = d + 1. Non-convex.
    """

    num_features: int = 3
    num_clusters: int = 4
    points_per_cluster: int = 25
    c: float = 1.0
    mean_scale: float = 1.0
    noise_scale: float = 0.5

    def __post_init__(self):
        _check_count(self.num_features, "num_features")
        _check_count(self.num_clusters, "num_clusters")
        _check_count(self.points_per_cluster, "points_per_cluster")
        _check_positive(c=self.c, init_scale=self.init_scale)

    @property
    def dim(self) -> int:
        return self.num_features + 1

    def sample(self, key, num_problems):
        """Returns {"inputs": [P, n, d], "targets": [P, n]}."""
        _check_count(num_problems)
        key_points, key_vec, key_bias, key_noise = jax.random.split(key, 4)
        inputs, cluster = _gaussian_mixture_points(
            key_points, num_problems, self.num_clusters, self.points_per_cluster,
            self.num_features, self.mean_scale, False, 1.0,
        )
        vectors = jax.random.normal(key_vec, (num_problems, self.num_clusters, self.num_features))
        biases = jax.random.normal(key_bias, (num_problems, self.num_clusters))
        clean = jnp.einsum("pnd,pnd->pn", inputs, vectors[:, cluster]) + biases[:, cluster]
        noise = self.noise_scale * jax.random.normal(key_noise, clean.shape)
        return {"inputs": inputs, "targets": clean + noise}

    def loss(self, problem, x):
        residual = problem["targets"] - problem["inputs"] @ x[:-1] - x[-1]
        return jnp.mean(residual**2 / (self.c + residual**2))


@dataclasses.dataclass(frozen=True)
class MLPClassifier(Family):
    """Two-layer ReLU network with softmax cross-entropy (paper section 6.3, appendix 8.1).

    loss = -1/n sum_i log softmax(U relu(W x_i + b) + c)_{y_i} + lam/2 (|W|_F^2 + |U|_F^2).
    Data: `points_per_cluster` points from each of `num_clusters` Gaussians (random means
    N(0, mean_scale^2 I), random covariances); every cluster gets a random label in
    {0, ..., num_classes-1}; for two classes, never all clusters the same label.
    Flat iterate layout: x = [W (h*d, row-major), b (h), U (p*h, row-major), c (p)].
    """

    num_clusters: int = 4
    points_per_cluster: int = 25
    num_features: int = 2
    num_hidden: int = 2
    num_classes: int = 2
    l2: float = 5e-4
    mean_scale: float = 1.0
    covariance_floor: float = 0.1

    def __post_init__(self):
        for name in ("num_clusters", "points_per_cluster", "num_features", "num_hidden"):
            _check_count(getattr(self, name), name)
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")
        if self.num_clusters < 2:
            raise ValueError(
                f"num_clusters must be at least 2 (two labels are needed), got {self.num_clusters}"
            )
        _check_positive(covariance_floor=self.covariance_floor, init_scale=self.init_scale)

    @property
    def dim(self) -> int:
        h, d, p = self.num_hidden, self.num_features, self.num_classes
        return h * d + h + p * h + p

    def unflatten(self, x: jax.Array) -> dict[str, jax.Array]:
        """Splits a flat iterate `[dim]` into {"W": [h, d], "b": [h], "U": [p, h], "c": [p]}."""
        h, d, p = self.num_hidden, self.num_features, self.num_classes
        w_flat, b, u_flat, c = jnp.split(x, [h * d, h * d + h, h * d + h + p * h])
        return {"W": w_flat.reshape(h, d), "b": b, "U": u_flat.reshape(p, h), "c": c}

    def sample(self, key, num_problems):
        """Returns {"inputs": [P, n, d], "labels": [P, n] int32}."""
        _check_count(num_problems)
        key_points, key_labels = jax.random.split(key)
        inputs, cluster = _gaussian_mixture_points(
            key_points, num_problems, self.num_clusters, self.points_per_cluster,
            self.num_features, self.mean_scale, True, self.covariance_floor,
        )
        cluster_labels = jax.random.randint(
            key_labels, (num_problems, self.num_clusters), 0, self.num_classes
        )
        # All clusters one label: relabel the first cluster, so two labels always occur.
        all_same = jnp.all(cluster_labels == cluster_labels[:, :1], axis=1)
        first = jnp.where(
            all_same, (cluster_labels[:, 0] + 1) % self.num_classes, cluster_labels[:, 0]
        )
        cluster_labels = cluster_labels.at[:, 0].set(first)
        return {"inputs": inputs, "labels": cluster_labels[:, cluster].astype(jnp.int32)}

    def loss(self, problem, x):
        p = self.unflatten(x)
        hidden = jax.nn.relu(problem["inputs"] @ p["W"].T + p["b"])
        logits = hidden @ p["U"].T + p["c"]
        log_probs = jax.nn.log_softmax(logits)
        nll = -jnp.mean(jnp.take_along_axis(log_probs, problem["labels"][:, None], axis=1))
        return nll + 0.5 * self.l2 * (jnp.sum(p["W"] ** 2) + jnp.sum(p["U"] ** 2))


@dataclasses.dataclass(frozen=True)
class Rosenbrock(Family):
    """The 2-D Rosenbrock function, optionally randomly shifted and scaled.

    loss(x) = scale * ((a - u)^2 + b (v - u^2)^2),  (u, v) = x - shift,  a=1, b=100.
    With `randomize=False` every problem is the classic function (minimum 0 at (1, 1)); with
    `randomize=True`, shift ~ U[-shift_range, shift_range]^2 and log(scale) ~ U[-1, 1].
    Initial iterates are uniform on [-init_scale, init_scale]^2 (default 2).
    """

    a: float = 1.0
    b: float = 100.0
    randomize: bool = False
    shift_range: float = 1.0
    init_scale: float = 2.0

    @property
    def dim(self) -> int:
        return 2

    def sample(self, key, num_problems):
        """Returns {"shift": [P, 2], "scale": [P]}."""
        _check_count(num_problems)
        key_shift, key_scale = jax.random.split(key)
        shift = jax.random.uniform(
            key_shift, (num_problems, 2), minval=-self.shift_range, maxval=self.shift_range
        )
        scale = jnp.exp(jax.random.uniform(key_scale, (num_problems,), minval=-1.0, maxval=1.0))
        if not self.randomize:
            shift, scale = jnp.zeros_like(shift), jnp.ones_like(scale)
        return {"shift": shift, "scale": scale}

    def loss(self, problem, x):
        u, v = x - problem["shift"]
        return problem["scale"] * ((self.a - u) ** 2 + self.b * (v - u**2) ** 2)

    def init(self, key, num_problems):
        _check_count(num_problems)
        return jax.random.uniform(
            key, (num_problems, 2), minval=-self.init_scale, maxval=self.init_scale
        )


@dataclasses.dataclass(frozen=True)
class Quadratic(Family):
    """Random convex quadratics: loss(x) = 1/2 x^T A x - b^T x.

    A = Q diag(lambda) Q^T with Q a random orthogonal matrix and eigenvalues log-uniform in
    [1/condition_number, 1]; b ~ N(0, I). The minimiser is A^{-1} b.
    """

    num_dims: int = 10
    condition_number: float = 10.0

    def __post_init__(self):
        _check_count(self.num_dims, "num_dims")
        if not self.condition_number >= 1:
            raise ValueError(f"condition_number must be >= 1, got {self.condition_number}")

    @property
    def dim(self) -> int:
        return self.num_dims

    def sample(self, key, num_problems):
        """Returns {"matrix": [P, dim, dim] symmetric positive definite, "vector": [P, dim]}."""
        _check_count(num_problems)
        key_q, key_eig, key_b = jax.random.split(key, 3)
        q, _ = jnp.linalg.qr(jax.random.normal(key_q, (num_problems, self.dim, self.dim)))
        log_eig = jax.random.uniform(
            key_eig, (num_problems, self.dim), minval=-math.log(self.condition_number), maxval=0.0
        )
        matrix = jnp.einsum("pij,pj,pkj->pik", q, jnp.exp(log_eig), q)
        vector = jax.random.normal(key_b, (num_problems, self.dim))
        return {"matrix": matrix, "vector": vector}

    def loss(self, problem, x):
        return 0.5 * x @ problem["matrix"] @ x - problem["vector"] @ x


def logistic_regression(**settings) -> LogisticRegression:
    """The paper's logistic-regression family (d=3, n=100, lambda=5e-4); keywords override."""
    return LogisticRegression(**settings)


def robust_linear_regression(**settings) -> RobustLinearRegression:
    """The paper's Geman-McClure regression family (c=1, d=3, 4 x 25 points)."""
    return RobustLinearRegression(**settings)


def mlp_classifier(num_clusters: int = 4, **settings) -> MLPClassifier:
    """The paper's two-layer ReLU classifier family (d=h=p=2, lambda=5e-4, 4 x 25 points).

    `num_clusters` in {5, 6, 8, 12} gives the appendix's transfer families.
    """
    return MLPClassifier(num_clusters=num_clusters, **settings)


def rosenbrock(**settings) -> Rosenbrock:
    """The 2-D Rosenbrock function; `randomize=True` shifts and scales each problem."""
    return Rosenbrock(**settings)


def quadratic(dim: int = 10, **settings) -> Quadratic:
    """Random convex quadratics of dimension `dim`."""
    return Quadratic(num_dims=dim, **settings)


FAMILIES = {
    "logistic_regression": logistic_regression,
    "robust_linear_regression": robust_linear_regression,
    "mlp_classifier": mlp_classifier,
    "rosenbrock": rosenbrock,
    "quadratic": quadratic,
}

# Training-set sizes of the paper's experiments (sections 6.1-6.3); test sets have 100.
PAPER_NUM_TRAIN = {
    "logistic_regression": 90,
    "robust_linear_regression": 120,
    "mlp_classifier": 80,
}


def get(name: str, **settings) -> Family:
    """Returns the family called `name` (a key of FAMILIES) built with `settings`, or, for
    "module:attribute", the user's family that it names (`lopt.user_code`; no settings)."""
    if name not in FAMILIES:
        if user_code.is_spec(name) and not settings:
            return check_family(user_code.load(name, "objective family"))
        raise ValueError(f"unknown objective family {name!r}; valid: "
                         f"{', '.join(sorted(FAMILIES))} or 'module:attribute'")
    return FAMILIES[name](**settings)


REQUIRED = ("name", "dim", "sample", "loss", "init", "objective")


def check_family(family: Any) -> Any:
    """Returns `family` if it implements the protocol (`Family`), else raises a one-line
    ValueError naming every missing part, or saying why it cannot be used."""
    missing = [part for part in REQUIRED if not hasattr(family, part)]
    if missing:
        raise ValueError(f"{type(family).__name__} is not an objective family: it lacks "
                         f"{', '.join(missing)} (subclass lopt.objectives.Family and define dim, "
                         "sample and loss)")
    for part in ("sample", "loss", "init", "objective"):
        if not callable(getattr(family, part)):
            raise ValueError(f"{type(family).__name__}.{part} must be callable")
    if not isinstance(family.dim, int) or isinstance(family.dim, bool) or family.dim < 1:
        raise ValueError(f"{type(family).__name__}.dim must be a positive integer, got "
                         f"{family.dim!r}")
    try:
        hash(family)
    except TypeError:
        raise ValueError(f"{type(family).__name__} must be hashable (e.g. "
                         "@dataclasses.dataclass(frozen=True)): compiled programs take the family "
                         "as a static argument") from None
    return family


def settings(family: Any) -> dict[str, Any]:
    """What identifies `family` across processes: its class name and its dataclass fields (or,
    for another class, its attributes of plain types: numbers, strings, tuples of them);
    never an object's address."""
    if dataclasses.is_dataclass(family):
        fields = {field.name: getattr(family, field.name) for field in dataclasses.fields(family)}
    else:
        fields = {name: value for name, value in vars(family).items()
                  if _is_plain(value) and not name.startswith("_")}
    return {"class": f"{type(family).__module__}.{type(family).__qualname__}", **fields}


def _is_plain(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_is_plain(item) for item in value)
    return value is None or isinstance(value, (bool, int, float, str))
