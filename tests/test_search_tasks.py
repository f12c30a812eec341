"""Child tasks: losses against NumPy forward passes, batch statistics in batch norm, function
tasks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt import cpu_kernels
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


def _convnet_logits_numpy(params, inputs, statistics=None):
    """float64 NumPy forward pass of a one-layer ConvNet child: 3x3 SAME convolution, batch
    norm with `statistics` = (mean, variance) per channel, by default the batch's own over
    (examples, rows, columns), ReLU, global mean pool, dense."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    height, width = inputs.shape[1:3]
    padded = np.pad(np.asarray(inputs, np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    conv = p["Conv_0"]["bias"] + sum(
        padded[:, i:i + height, j:j + width] @ p["Conv_0"]["kernel"][i, j]
        for i in range(3) for j in range(3))
    mean, variance = statistics or (conv.mean(axis=(0, 1, 2)), conv.var(axis=(0, 1, 2)))
    norm = p["BatchNorm_0"]
    normalised = (conv - mean) / np.sqrt(variance + 1e-5) * norm["scale"] + norm["bias"]
    return np.maximum(normalised, 0).mean(axis=(1, 2)) @ p["Dense_0"]["kernel"] + \
        p["Dense_0"]["bias"]


def test_convnet_batch_norm_uses_batch_statistics():
    """The child normalises with the statistics of the batch it sees, in `loss` and `accuracy`
    alike: logits equal a NumPy pass with the batch's mean and variance, an example's logits
    change when the other examples of its batch change, and the batch's order does not matter."""
    task = tasks.digits_convnet(filters=(4,))
    rng = np.random.default_rng(0)
    params = {**task.init(jax.random.key(1)),  # a scale and shift that are not the identity
              "BatchNorm_0": {"scale": rng.uniform(0.5, 2.0, 4).astype(np.float32),
                              "bias": rng.normal(size=4).astype(np.float32)}}
    inputs, labels = task.dataset.train.inputs[:8], task.dataset.train.labels[:8]
    expected = _convnet_logits_numpy(params, inputs)
    logits = np.asarray(task._logits(params, inputs))
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
    # Running averages (flax starts them at mean 0, variance 1) would give other logits.
    assert not np.allclose(logits, _convnet_logits_numpy(params, inputs, (0.0, 1.0)), atol=0.1)
    log_probs = expected - np.log(np.exp(expected).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(task.loss(params, inputs, labels),
                               -log_probs[np.arange(8), labels].mean(), rtol=1e-4)
    np.testing.assert_allclose(task.accuracy(params, inputs, labels),
                               np.mean(expected.argmax(axis=1) == labels))
    others_changed = np.concatenate([inputs[:1], task.dataset.train.inputs[8:15]])
    assert np.abs(task._logits(params, others_changed)[0] - logits[0]).max() > 1e-2
    order = rng.permutation(8)
    np.testing.assert_allclose(task._logits(params, inputs[order]), logits[order], rtol=1e-5,
                               atol=1e-6)


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


def _adam_fit(task, inputs, labels, num_steps, learning_rate):
    """Full-batch adam on (inputs, labels) from a fresh child; returns (initial parameters,
    trained parameters, losses [num_steps + 1], losses[t] the loss after t steps)."""
    opt = optax.adam(learning_rate)

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(task.loss)(params, inputs, labels)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state, loss

    # An "rbg" key: the initialisers compile several times faster than with threefry on CPU.
    params = initial = jax.jit(task.init)(jax.random.key(0, impl="rbg"))
    state, losses = opt.init(params), []
    for _ in range(num_steps + 1):
        trained = params
        params, state, loss = step(params, state)
        losses.append(float(loss))
    return initial, trained, np.array(losses)


def test_wide_resnet_shapes_and_adam_fits_a_batch(cifar_dir):
    task = tasks.get("cifar10_wrn", data_dir=str(cifar_dir))
    assert task is tasks.cifar10_wrn(str(cifar_dir))
    assert {"depth": task.model.depth, "width": task.model.width} == \
        tasks.WIDE_RESNET_SETTINGS["small"]
    params = jax.eval_shape(task.init, jax.random.key(0))
    # WRN-10-1: stem conv 432; blocks 16->16 (identity shortcut) 4,672, 16->32 14,432 and
    # 32->64 57,536 (batch norms, 1x1 shortcut conv, two 3x3 convs); final norm 128; dense 650.
    assert sum(leaf.size for leaf in jax.tree.leaves(params)) == 77_850
    assert params["PreActivationBlock_1"]["Conv_0"]["kernel"].shape == (1, 1, 16, 32)
    batch = task.dataset.train.inputs[:8], task.dataset.train.labels[:8]
    logits = jax.eval_shape(task._logits, params, batch[0])
    assert logits.shape == (8, 10)
    _, _, losses = _adam_fit(task, *batch, num_steps=5, learning_rate=1e-2)
    assert losses[-1] < 0.5 * losses[0]


def test_wide_resnet_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no CIFAR-10 data in"):
        tasks.cifar10_wrn(str(tmp_path))
    with pytest.raises(ValueError, match="cifar10_wrn needs data_dir"):
        tasks.get("cifar10_wrn")
    with pytest.raises(ValueError, match=r"depth must be 6n \+ 4"):
        tasks.cifar10_wrn(str(tmp_path), depth=12)
    with pytest.raises(ValueError, match="width must be a positive integer"):
        tasks.cifar10_wrn(str(tmp_path), width=0)


@pytest.fixture(scope="module")
def lm_task():
    return tasks.stdlib_lstm_lm(hidden_sizes=(32,), embedding_size=8, num_chars=8000)


def test_lstm_lm_shapes_and_adam_lowers_validation_loss(lm_task):
    assert lm_task is tasks.stdlib_lstm_lm(hidden_sizes=(32,), embedding_size=8, num_chars=8000)
    assert tasks.get("stdlib_lstm_lm").num_classes == 97
    validation = lm_task.dataset.validation
    params = jax.eval_shape(lm_task.init, jax.random.key(0))
    logits = jax.eval_shape(lm_task._logits, params, validation.inputs)
    assert logits.shape == (*validation.inputs.shape, 97)
    initial, trained, _ = _adam_fit(lm_task, *lm_task.dataset.train, num_steps=30,
                                    learning_rate=2e-2)
    loss = jax.jit(lm_task.loss)
    before, after = loss(initial, *validation), loss(trained, *validation)
    np.testing.assert_allclose(before, np.log(97), rtol=0.05)  # near uniform at initialisation
    assert after < before - 1.5


def test_lstm_layer_matches_numpy_recurrence():
    layer = tasks.LSTM(hidden_size=3)
    inputs = np.random.default_rng(0).normal(size=(2, 4, 5)).astype(np.float32)
    params = jax.jit(layer.init)(jax.random.key(0, impl="rbg"), inputs)["params"]
    kernel, bias = np.asarray(params["kernel"], np.float64), np.asarray(params["bias"], np.float64)
    np.testing.assert_array_equal(bias, [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0])  # forget gate: 1
    sigmoid = lambda x: 1 / (1 + np.exp(-x))
    hidden, cell, expected = np.zeros((2, 3)), np.zeros((2, 3)), []
    for t in range(4):
        i, f, g, o = np.split(np.concatenate([inputs[:, t], hidden], axis=1) @ kernel + bias, 4,
                              axis=1)
        cell = sigmoid(f) * cell + sigmoid(i) * np.tanh(g)
        hidden = sigmoid(o) * np.tanh(cell)
        expected.append(hidden)
    np.testing.assert_allclose(layer.apply({"params": params}, inputs),
                               np.stack(expected, axis=1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("strides, padding", [((1, 1), "SAME"), ((2, 2), "SAME"),
                                              ((1, 1), "VALID"), ((2, 1), ((1, 0), (2, 1)))])
def test_matmul_conv_equals_xla_convolution_and_its_gradient(strides, padding):
    lhs = jax.random.normal(jax.random.key(0), (3, 9, 8, 4))
    rhs = jax.random.normal(jax.random.key(1), (3, 3, 4, 5))
    numbers = ("NHWC", "HWIO", "NHWC")
    reference = lambda x, w: jax.lax.conv_general_dilated(
        x, w, strides, padding, dimension_numbers=numbers, precision="highest")
    ours = lambda x, w: cpu_kernels.matmul_conv(x, w, strides, padding, precision="highest")
    np.testing.assert_allclose(ours(lhs, rhs), reference(lhs, rhs), rtol=1e-5, atol=1e-5)
    cotangent = lambda f: jax.grad(lambda x, w: jnp.sum(jnp.sin(f(x, w))), argnums=(0, 1))
    for got, want in zip(cotangent(ours)(lhs, rhs), cotangent(reference)(lhs, rhs), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_child_convolutions_are_chosen_by_implementation():
    """The children convolve by `matmul_conv` (matrix products) where the CPU kernels run, by
    default on a CPU, and by XLA's convolution elsewhere."""
    lhs = jax.ShapeDtypeStruct((2, 6, 6, 3), jnp.float32)
    rhs = jax.ShapeDtypeStruct((3, 3, 3, 4), jnp.float32)

    def primitives(implementation):
        convolve = lambda x, w: cpu_kernels.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
            implementation=implementation)  # fmt: skip
        return {equation.primitive.name for equation in jax.make_jaxpr(convolve)(lhs, rhs).eqns}

    assert "conv_general_dilated" not in primitives("cpu") and "dot_general" in primitives("cpu")
    assert "conv_general_dilated" in primitives("plain")
    assert "dot_general" not in primitives("plain")
    default = "cpu" if jax.default_backend() == "cpu" else "plain"
    assert primitives(None) == primitives(default)


class _HalfTask:
    name, has_data = "half", True

    def init(self, key):
        return {"w": jnp.zeros(2)}


def test_a_task_missing_parts_is_refused_naming_them():
    with pytest.raises(ValueError, match="_HalfTask is not a search task: it lacks loss, "
                                         "accuracy"):
        tasks.get(_HalfTask())
    with pytest.raises(ValueError, match="unknown task 'mnist'.*'module:attribute'"):
        tasks.get("mnist")
    with pytest.raises(ValueError, match="task 'no_such_module:task': cannot import module"):
        tasks.get("no_such_module:task")


def test_a_task_object_is_a_search_config_task_and_identified_by_its_data():
    from lopt.search import driver

    quadratic = tasks.quadratic()
    config = driver.SearchConfig.preset("smoke", task=quadratic)
    assert config.task_name == "quadratic"
    same = driver.run_identity(config, jax.random.key(0))
    assert same == driver.run_identity(driver.SearchConfig.preset("smoke"), jax.random.key(0))
    other = driver.run_identity(driver.SearchConfig.preset("smoke", task=tasks.quadratic(seed=1)),
                                jax.random.key(0))
    assert {name for name in same if same[name] != other[name]} == {"data"}


def test_family_child_scores_gradient_descent_as_evaluation_run_and_tune_do():
    """The family child's sweep picks the learning rate `lopt.baselines.tune` picks for
    gradient descent by the mean objective, and rewards it minus `lopt.evaluation.run`'s mean
    curve (the evaluator and evaluation.run are independent loops over the same problems)."""
    from lopt import baselines, evaluation
    from lopt import rules as rules_lib
    from lopt.search import evaluator

    num_problems, num_steps, rates = 8, 30, (0.03, 0.3, 3.0)
    task = tasks.objective_family("logistic_regression", num_problems, seed=5)
    config = evaluator.EvaluatorConfig(learning_rates=rates, steps_per_epoch=num_steps,
                                       final_epochs=1, chunk_size=2)
    scores = evaluator.evaluate([rules_lib.parse("g")], task, config, jax.random.key(0))
    tuned = baselines.tune(baselines.gradient_descent, {"learning_rate": rates}, task.family,
                           task.problems, num_steps,
                           key=jax.random.split(jax.random.key(5))[1])
    assert scores.learning_rate[0] == tuned.best["learning_rate"]
    curves = evaluation.run(baselines.gradient_descent(tuned.best["learning_rate"]),
                            task.family, task.problems, num_steps, x0=task.start)
    np.testing.assert_allclose(scores.reward[0], -np.mean(curves), rtol=1e-5)
    np.testing.assert_allclose(scores.reward[0], -np.min(tuned.scores), rtol=1e-5)
    # A rule that never moves scores the failure reward: minus the initial mean objective.
    np.testing.assert_allclose(evaluator.failure_reward(task, config, jax.random.key(0)),
                               -np.mean(curves[:, 0]), rtol=1e-6)
