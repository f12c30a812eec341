"""The policy: supervised fit, linearisation, predicted step descent as optax, files."""


import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt import checkpoint, evaluation, gps, objectives
from lopt.gps import features, policy

FAMILY = objectives.logistic_regression()
FEATURES = gps.FeatureConfig(history=4)
LAYOUT = FEATURES.layout(FAMILY.dim)
INPUT_SIZE = LAYOUT.size - LAYOUT.dim


def _random_policy(seed=0):
    """A policy with non-trivial whitening, scales and network."""
    keys = jax.random.split(jax.random.key(seed), 4)
    fresh = policy.init(keys[0], INPUT_SIZE, FAMILY.dim, 8)
    return fresh._replace(
        input_mean=0.1 * jax.random.normal(keys[1], (INPUT_SIZE,)),
        input_scale=jnp.exp(0.3 * jax.random.normal(keys[2], (INPUT_SIZE,))),
        action_scale=jnp.full(FAMILY.dim, 0.05),
        variance=jnp.exp(jax.random.normal(keys[3], (FAMILY.dim,))))


@pytest.fixture(scope="module")
def learned():
    return gps.Learned(_random_policy(), FEATURES, FAMILY.dim, FAMILY.name)


def _targets(key, num=64, samples=2, horizon=4):
    """Targets of random controllers at random states, with random positive precisions."""
    keys = jax.random.split(key, 4)
    states = jax.random.normal(keys[0], (num, samples, horizon + 1, LAYOUT.size))
    gain = 0.3 * jax.random.normal(keys[1], (num, horizon, FAMILY.dim, LAYOUT.size))
    offset = jax.random.normal(keys[2], (num, horizon, FAMILY.dim))
    factors = jax.random.normal(keys[3], (num, horizon, FAMILY.dim, FAMILY.dim))
    precision = factors @ jnp.swapaxes(factors, -1, -2) + 0.1 * jnp.eye(FAMILY.dim)
    return policy.Targets(states, gain, offset, precision)


def _rows_by_hand(data):
    """(inputs, actions, precisions) of every row, row m = (n, s, t), with NumPy loops."""
    num, samples, _, _ = data.states.shape
    horizon = data.gain.shape[1]
    inputs, actions, precisions = [], [], []
    for n in range(num):
        for s in range(samples):
            for t in range(horizon):
                state = np.asarray(data.states[n, s, t])
                inputs.append(state[LAYOUT.dim:])
                actions.append(np.asarray(data.gain[n, t]) @ state + np.asarray(data.offset[n, t]))
                precisions.append(np.asarray(data.precision[n, t]))
    return np.stack(inputs), np.stack(actions), np.stack(precisions)


def test_rows_loss_and_normalisation_match_a_numpy_reference():
    data = _targets(jax.random.key(5), num=3, samples=2, horizon=3)
    inputs, actions, precisions = _rows_by_hand(data)
    index = jnp.array([0, 5, 17, 11])
    got = policy.rows(LAYOUT, data, index)
    for value, expected in zip(got, (inputs, actions, precisions), strict=True):
        np.testing.assert_allclose(value, expected[np.asarray(index)], rtol=1e-5, atol=1e-6)
    pol = _random_policy()
    gap = np.asarray(policy.mean(pol, jnp.asarray(inputs))) - actions
    scale = np.mean(np.trace(precisions, axis1=1, axis2=2)) / FAMILY.dim
    expected_loss = np.mean(np.einsum("mi,mij,mj->m", gap, precisions / scale, gap))
    np.testing.assert_allclose(policy.loss(LAYOUT, pol, data), expected_loss, rtol=1e-4)
    normalised = policy.normalise(LAYOUT, pol, data)
    np.testing.assert_allclose(normalised.input_mean, inputs.mean(axis=0), rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(normalised.action_scale, actions.std(axis=0), rtol=1e-4)


def test_fit_drives_the_mahalanobis_loss_down():
    data = _targets(jax.random.key(0))
    # Actions one function of the policy input: one gain, no offset, no weight on the iterate.
    gain = jnp.broadcast_to(data.gain[0, 0].at[:, :LAYOUT.dim].set(0.0), data.gain.shape)
    data = data._replace(offset=jnp.zeros_like(data.offset), gain=gain)
    start = policy.normalise(LAYOUT, policy.init(jax.random.key(1), INPUT_SIZE, FAMILY.dim, 16),
                             data)
    before = policy.loss(LAYOUT, start, data)
    fitted, after = jax.jit(lambda p, d, k: policy.fit(LAYOUT, p, d, k, steps=600, batch_size=64,
                                                       learning_rate=1e-2))(start, data,
                                                                            jax.random.key(2))
    assert after < 0.2 * before
    np.testing.assert_allclose(after, policy.loss(LAYOUT, fitted, data), rtol=1e-6)
    diagonal = np.diagonal(np.asarray(data.precision), axis1=-2, axis2=-1)
    np.testing.assert_allclose(fitted.variance, 1.0 / diagonal.mean(axis=(0, 1)), rtol=1e-5)


def test_the_empty_state_is_a_fixed_point():
    empty = jnp.zeros(LAYOUT.size)
    np.testing.assert_allclose(policy.state_mean(LAYOUT, _random_policy(), empty), 0.0,
                               atol=1e-7)


def test_clipped_inputs_bound_the_step_far_from_the_training_states():
    state = jax.random.normal(jax.random.key(2), (LAYOUT.size,))
    pol = _random_policy()
    far, farther = (policy.state_mean(LAYOUT, pol, scale * state) for scale in (1e3, 1e6))
    np.testing.assert_allclose(far, farther, rtol=1e-6)


def test_linearisation_agrees_with_the_policy_at_the_mean_state():
    states = jax.random.normal(jax.random.key(3), (2, 3, 6, LAYOUT.size))  # [N, S, T+1, dX]
    samples = gps.Samples(states, None, None, None)
    pol = _random_policy()
    controller = policy.linearise(LAYOUT, pol, samples, 5)
    assert controller.gain.shape == (2, 5, FAMILY.dim, LAYOUT.size)
    centre = jnp.mean(states[1, :, 2], axis=0)
    linear = controller.gain[1, 2] @ centre + controller.offset[1, 2]
    np.testing.assert_allclose(linear, policy.state_mean(LAYOUT, pol, centre), atol=1e-6)
    np.testing.assert_allclose(controller.gain[..., : LAYOUT.dim], 0.0)  # iterate not an input
    np.testing.assert_allclose(controller.covariance[0, 0], jnp.diag(pol.variance), rtol=1e-6)


def _by_hand(pol, loss_fn, x0, num_steps):
    """Iterates of the policy applied by hand through the feature code of the rollouts."""
    state, tracker = features.start(FEATURES, loss_fn, x0)
    iterates = [x0]
    for _ in range(num_steps):
        action = policy.state_mean(LAYOUT, pol, state)
        state, tracker, _ = features.step(FEATURES, loss_fn, state, tracker, action)
        iterates.append(features.iterate(LAYOUT, state))
    return jnp.stack(iterates)


def test_as_optax_takes_the_steps_of_the_policy_applied_by_hand(learned):
    problems = FAMILY.sample(jax.random.key(0), 3)
    x0 = FAMILY.init(jax.random.key(1), 3)
    _, iterates = evaluation.run(gps.as_optax(learned), FAMILY, problems, 6, x0=x0,
                                 return_iterates=True)
    for index in range(3):
        problem = jax.tree.map(lambda a, i=index: a[i], problems)
        expected = _by_hand(learned.policy, FAMILY.objective(problem), x0[index], 6)
        np.testing.assert_allclose(iterates[index], expected, rtol=1e-5, atol=1e-6)


def test_as_optax_works_on_pytrees_of_the_trained_size(learned):
    problem = jax.tree.map(lambda a: a[0], FAMILY.sample(jax.random.key(0), 1))
    loss_fn = FAMILY.objective(problem)
    tree_loss = lambda tree: loss_fn(jnp.concatenate([tree["a"], tree["b"].reshape(-1)]))
    opt = gps.as_optax(learned)
    x = FAMILY.init(jax.random.key(1), 1)[0]
    tree = {"a": x[:2], "b": x[2:].reshape(1, 2)}
    flat_state, tree_state = opt.init(x), opt.init(tree)
    for _ in range(3):
        flat_updates, flat_state = opt.update(jax.grad(loss_fn)(x), flat_state, x,
                                              value=loss_fn(x))
        tree_updates, tree_state = opt.update(jax.grad(tree_loss)(tree), tree_state, tree,
                                              value=tree_loss(tree))
        x, tree = optax.apply_updates(x, flat_updates), optax.apply_updates(tree, tree_updates)
        np.testing.assert_allclose(jnp.concatenate([tree["a"], tree["b"].reshape(-1)]), x,
                                   rtol=1e-6)


def test_as_optax_errors_are_clear(learned):
    opt = gps.as_optax(learned)
    with pytest.raises(ValueError, match="trained on 4 parameters, but the params pytree has 5"):
        opt.init(jnp.zeros(5))
    state = opt.init(jnp.zeros(4))
    with pytest.raises(ValueError, match="needs the objective value"):
        opt.update(jnp.zeros(4), state, jnp.zeros(4))


def test_save_load_round_trip_gives_identical_steps(learned, tmp_path):
    gps.save(learned, str(tmp_path))
    loaded = gps.load(str(tmp_path))
    assert loaded.features == learned.features and loaded.dim == learned.dim
    problems = FAMILY.sample(jax.random.key(0), 4)
    original = evaluation.run(gps.as_optax(learned), FAMILY, problems, 8, jax.random.key(1))
    again = evaluation.run(gps.as_optax(loaded), FAMILY, problems, 8, jax.random.key(1))
    np.testing.assert_array_equal(original, again)


def test_loading_foreign_or_corrupt_files_gives_clear_errors(learned, tmp_path):
    with pytest.raises(ValueError, match="is not a learned-optimizer directory"):
        gps.load(str(tmp_path / "missing"))
    gps.save(learned, str(tmp_path))
    path = str(tmp_path / gps.learned.FILE)
    metadata = checkpoint.metadata(path)
    checkpoint.save(path, learned.policy, metadata={**metadata, "format": "something.else"})
    with pytest.raises(ValueError, match="holds 'something.else', not 'lopt.gps.learned'"):
        gps.load(str(tmp_path))
    checkpoint.save(path, learned.policy, metadata={**metadata, "version": 99})
    with pytest.raises(ValueError, match="version 99 is not supported"):
        gps.load(str(tmp_path))
    checkpoint.save(path, learned.policy, metadata={**metadata, "hidden": 3})
    with pytest.raises(ValueError, match="holds arrays of shapes"):
        gps.load(str(tmp_path))
    with open(path, "wb") as file:
        file.write(b"garbage")
    with pytest.raises(ValueError, match="is not a readable lopt checkpoint"):
        gps.load(str(tmp_path))
