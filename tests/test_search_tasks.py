"""Child tasks: losses against NumPy forward passes, batch-norm purity, function tasks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.search import tasks


@pytest.fixture(scope="module")
def mlp_task():
    return tasks.digits_mlp(hidden_sizes=(16,))


def test_mlp_loss_and_accuracy_match_numpy(mlp_task):
    params = mlp_task.init(jax.random.key(0))
    inputs = mlp_task.dataset.train.inputs[:50]
    labels = mlp_task.dataset.train.labels[:50]
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    hidden = np.maximum(inputs.reshape(50, 64) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], 0)
    logits = hidden @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(mlp_task.loss(params, inputs, labels),
                               -log_probs[np.arange(50), labels].mean(), rtol=1e-5)
    np.testing.assert_allclose(mlp_task.accuracy(params, inputs, labels),
                               np.mean(logits.argmax(axis=1) == labels))


def test_convnet_batch_norm_uses_batch_statistics():
    task = tasks.digits_convnet(filters=(4,))
    params = task.init(jax.random.key(1))
    inputs = jnp.asarray(task.dataset.train.inputs[:8])
    labels = jnp.asarray(task.dataset.train.labels[:8])
    loss = task.loss(params, inputs, labels)
    assert np.isfinite(loss) and loss == task.loss(params, inputs, labels)
    grads = jax.grad(task.loss)(params, inputs, labels)
    assert set(grads) == set(params)


def test_function_tasks_and_names():
    rosenbrock = tasks.get("rosenbrock")
    np.testing.assert_allclose(rosenbrock.loss(jnp.array([1.0, 1.0])), 0.0)
    np.testing.assert_allclose(rosenbrock.accuracy(rosenbrock.init(None)), -12.5)
    quadratic = tasks.get("quadratic")
    assert quadratic.loss(quadratic.init(None)) == 0.0
    with pytest.raises(ValueError, match="unknown task 'mnist'; valid: digits_mlp"):
        tasks.get("mnist")
    with pytest.raises(ValueError, match="cifar10_convnet needs data_dir"):
        tasks.get("cifar10_convnet")
