"""Objective families: losses against NumPy references, sampling invariants, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt
from lopt import objectives

ALL_FAMILIES = sorted(objectives.FAMILIES)


def _numpy_problem(problems, index):
    return {name: np.asarray(value[index], np.float64) for name, value in problems.items()}


def test_logistic_loss_matches_numpy():
    family = objectives.logistic_regression()
    problems = family.sample(jax.random.key(0), 3)
    x = np.array([0.3, -1.2, 2.0, 0.5], np.float32)
    problem = _numpy_problem(problems, 1)
    z = problem["inputs"] @ x[:3] + x[3]
    probability = 1.0 / (1.0 + np.exp(-z))
    y = problem["labels"]
    expected = -np.mean(y * np.log(probability) + (1 - y) * np.log(1 - probability))
    expected += 0.5 * 5e-4 * np.sum(x[:3].astype(np.float64) ** 2)
    actual = family.loss(jax.tree.map(lambda a: a[1], problems), jnp.asarray(x))
    np.testing.assert_allclose(actual, expected, rtol=1e-5)


def test_geman_mcclure_loss_by_hand():
    family = objectives.robust_linear_regression(num_features=1, c=2.0)
    problem = {"inputs": jnp.array([[1.0], [2.0], [-1.0]]), "targets": jnp.array([1.0, 0.0, 3.0])}
    x = jnp.array([1.0, 1.0])  # w = 1, b = 1: residuals -1, -3, 3
    expected = (1 / (2 + 1) + 9 / (2 + 9) + 9 / (2 + 9)) / 3
    np.testing.assert_allclose(family.loss(problem, x), expected, rtol=1e-6)


def test_mlp_loss_matches_numpy_forward_pass():
    family = objectives.mlp_classifier()
    problems = family.sample(jax.random.key(3), 2)
    x = np.asarray(jax.random.normal(jax.random.key(4), (family.dim,)), np.float64)
    w, b, u, c = x[:4].reshape(2, 2), x[4:6], x[6:10].reshape(2, 2), x[10:12]
    problem = _numpy_problem(problems, 0)
    hidden = np.maximum(problem["inputs"] @ w.T + b, 0)
    logits = hidden @ u.T + c
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    labels = problem["labels"].astype(int)
    expected = -log_probs[np.arange(len(labels)), labels].mean()
    expected += 0.5 * 5e-4 * (np.sum(w**2) + np.sum(u**2))
    actual = family.loss(jax.tree.map(lambda a: a[0], problems), jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(actual, expected, rtol=1e-5)


def test_robust_regression_labels_follow_cluster_projection():
    family = objectives.robust_linear_regression(noise_scale=1e-6)
    problem = jax.tree.map(lambda a: a[0], family.sample(jax.random.key(5), 1))
    inputs, targets = np.asarray(problem["inputs"]), np.asarray(problem["targets"])
    for cluster in range(4):
        rows = slice(25 * cluster, 25 * (cluster + 1))
        design = np.hstack([inputs[rows], np.ones((25, 1))])
        coefficients, residual, *_ = np.linalg.lstsq(design, targets[rows], rcond=None)
        assert residual[0] < 1e-6, "each cluster's labels must be one noiseless affine map"


@pytest.mark.parametrize("name", ALL_FAMILIES)
def test_sampling_deterministic_shapes_and_keys(name):
    family = objectives.get(name)
    assert isinstance(family, objectives.Family)
    first = family.sample(jax.random.key(7), 5)
    again = family.sample(jax.random.key(7), 5)
    other = family.sample(jax.random.key(8), 5)
    for leaf, same in zip(jax.tree.leaves(first), jax.tree.leaves(again), strict=True):
        assert leaf.shape[0] == 5
        np.testing.assert_array_equal(leaf, same)
    leaves = zip(jax.tree.leaves(first), jax.tree.leaves(other), strict=True)
    differs = [not np.array_equal(a, b) for a, b in leaves]
    assert any(differs) != (name == "rosenbrock")  # the plain Rosenbrock family has one member
    x0 = family.init(jax.random.key(1), 5)
    assert x0.shape == (5, family.dim)
    values = jax.vmap(family.loss)(first, x0)
    assert values.shape == (5,) and np.all(np.isfinite(values))
    closure = family.objective(jax.tree.map(lambda a: a[2], first))
    np.testing.assert_allclose(jax.jit(closure)(x0[2]), values[2], rtol=1e-6)


def test_covariances_positive_definite_and_clusters_spread():
    covariances = objectives._random_covariances(jax.random.key(0), (500,), 3, 0.1)
    eigenvalues = np.linalg.eigvalsh(np.asarray(covariances, np.float64))
    assert eigenvalues.min() >= 0.1 - 1e-5
    problems = objectives.logistic_regression().sample(jax.random.key(1), 50)
    assert np.all(np.isfinite(problems["inputs"]))
    np.testing.assert_array_equal(problems["labels"][:, :50], 0)
    np.testing.assert_array_equal(problems["labels"][:, 50:], 1)


def test_mlp_never_single_label():
    family = objectives.mlp_classifier(num_clusters=2, points_per_cluster=3)
    labels = np.asarray(family.sample(jax.random.key(2), 4000)["labels"])
    assert np.all(labels.min(axis=1) == 0) and np.all(labels.max(axis=1) == 1)


@pytest.mark.parametrize("clusters", [5, 6, 8, 12])
def test_mlp_transfer_families(clusters):
    family = objectives.mlp_classifier(num_clusters=clusters)
    assert family.sample(jax.random.key(0), 2)["inputs"].shape == (2, 25 * clusters, 2)


def test_quadratic_minimiser():
    family = objectives.quadratic(dim=6, condition_number=50.0)
    with jax.enable_x64():
        problem = jax.tree.map(lambda a: a[0], family.sample(jax.random.key(0), 1))
        solution = jnp.linalg.solve(problem["matrix"], problem["vector"])
        gradient = jax.grad(family.objective(problem))(solution)
        eigenvalues = np.linalg.eigvalsh(np.asarray(problem["matrix"]))
    np.testing.assert_allclose(gradient, 0.0, atol=1e-10)
    assert eigenvalues.min() >= 1 / 50 - 1e-9 and eigenvalues.max() <= 1 + 1e-9


def test_rosenbrock_minimum_and_randomisation():
    family = objectives.rosenbrock(randomize=True)
    problems = family.sample(jax.random.key(0), 4)
    minima = problems["shift"] + 1.0
    np.testing.assert_allclose(jax.vmap(family.loss)(problems, minima), 0.0, atol=1e-6)
    plain = objectives.rosenbrock()
    problem = jax.tree.map(lambda a: a[0], plain.sample(jax.random.key(0), 1))
    np.testing.assert_allclose(plain.loss(problem, jnp.array([0.0, 0.0])), 1.0)
    np.testing.assert_allclose(plain.loss(problem, jnp.array([-1.0, 1.0])), 4.0)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_counts_raise(bad):
    with pytest.raises(ValueError, match="num_problems must be a positive integer"):
        objectives.logistic_regression().sample(jax.random.key(0), bad)


def test_bad_settings_and_names_raise():
    with pytest.raises(ValueError, match="family 'logistic'; valid: .*logistic_regression"):
        objectives.get("logistic")
    with pytest.raises(ValueError, match="num_points must be even"):
        objectives.logistic_regression(num_points=101)
    with pytest.raises(ValueError, match="num_clusters must be a positive integer"):
        objectives.mlp_classifier(num_clusters=0)
    with pytest.raises(ValueError, match=r"shape \[\.\.\., 4\]"):
        objectives.logistic_regression().check_iterate(jnp.zeros(3))


class _NotAFamily:
    """Has a loss and a dimension, but none of the other parts."""

    dim = 3

    def sample(self, key, num_problems):
        return {}

    def loss(self, problem, x):
        return x.sum()


class _Mutable(_NotAFamily, objectives.Family):
    """Every part, but unhashable (as a dataclass that is not frozen would be)."""

    __hash__ = None


def test_a_family_missing_parts_is_refused_before_training_naming_them():
    with pytest.raises(ValueError, match=r"_NotAFamily is not an objective family: it lacks "
                                         r"name, init, objective"):
        lopt.gps.train(_NotAFamily(), {}, lopt.gps.Config.preset("smoke"), jax.random.key(0))
    with pytest.raises(ValueError, match="_Mutable must be hashable"):
        objectives.check_family(_Mutable())
    with pytest.raises(ValueError, match="unknown objective family 'ridge'.*'module:attribute'"):
        objectives.get("ridge")
    with pytest.raises(ValueError, match="cannot import module 'no_such_module'"):
        objectives.get("no_such_module:Ridge")


def test_settings_identify_a_family_by_value_in_any_process():
    family = objectives.logistic_regression(num_features=5)
    assert objectives.settings(family) == objectives.settings(
        objectives.logistic_regression(num_features=5))
    assert objectives.settings(family)["class"] == "lopt.objectives.LogisticRegression"
    assert objectives.settings(family)["num_features"] == 5
    plain = _NotAFamily()
    plain.scale, plain.sampler = 2.0, lambda key: key  # a function has an address: left out
    assert objectives.settings(plain) == {"class": f"{__name__}._NotAFamily", "scale": 2.0}
