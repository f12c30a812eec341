"""Coordinate-wise GPS (Li & Malik 2017b): features against NumPy, the tied LQG against the
untied one, the optax export on pytrees of any shape, files, and a smoke meta-training."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt import gps
from lopt.gps import coordinate_features as cf
from lopt.gps import coordinate_groups, coordinate_learned, step_scale
from lopt.gps import coordinate_trainer as ct
from lopt.gps import network_family as nf
from lopt.gps import policy as policy_lib
from lopt.gps.config import LQGConfig
from lopt.gps.controllers import make_controller
from lopt.gps.cost import QuadraticCost
from lopt.gps.dynamics import Dynamics

SMALL = cf.CoordinateFeatureConfig(lags=4, stride=2, average=3, ratios=2, observation_history=2)


def numpy_state(config, values, gradients, iterates, t):
    """[g_t, Phi_t] `[K, state_size]` written from the definitions, for steps 0..t."""
    def averaged(series, tau):
        return np.mean(series[max(tau - config.average + 1, 0):tau + 1], axis=0)

    stride, lags = config.stride, config.lags
    columns = [gradients[t][:, None]]
    value = np.zeros(lags)
    for i in range(lags):
        if t - stride * (i + 1) >= 0:
            earlier = averaged(values, t - stride * (i + 1))
            value[i] = (averaged(values, t - stride * i) - earlier) / (abs(earlier) + cf.TINY)
    columns.append(np.broadcast_to(value, (gradients.shape[1], lags)))
    gradient = np.zeros((gradients.shape[1], lags))
    for i in range(lags):
        if t - stride * i >= 0:
            base = averaged(gradients, max(t - stride * (i + 1), t % stride))
            gradient[:, i] = averaged(gradients, t - stride * i) / (np.abs(base) + 1)
    columns.append(gradient)
    ratio = np.zeros((gradients.shape[1], config.ratios))
    current = (np.abs(averaged(iterates, t) - averaged(iterates, t - stride))
               if t >= stride else 0.0)
    for i in range(1, config.ratios + 1):
        if t - stride * (i + 1) >= 0:
            change = averaged(iterates, t - stride * i) - averaged(iterates, t - stride * (i + 1))
            ratio[:, i - 1] = np.abs(change) / (current + 0.1)
    columns.append(ratio)
    return np.concatenate(columns, axis=1)


def test_state_features_equal_numpy_definitions():
    rng = np.random.default_rng(0)
    steps, coordinates = 16, 3
    values = rng.uniform(0.5, 2.0, steps)
    gradients = rng.normal(size=(steps, coordinates))
    iterates = rng.normal(size=(steps, coordinates))
    history = cf.empty_history(SMALL, coordinates, jnp.float32)
    for t in range(steps):
        history = cf.push(history, values[t], gradients[t], iterates[t])
        got = np.asarray(cf.state(SMALL, history))
        assert got.shape == (coordinates, SMALL.state_size)
        np.testing.assert_allclose(got, numpy_state(SMALL, values, gradients, iterates, t),
                                   rtol=2e-5, atol=1e-6, err_msg=f"step {t}")


def numpy_observations(values, gradients, steps_taken):
    """Psi `[T, K, 3]` from the definitions: steps_taken[t] = x_{t+1} - x_t."""
    rows = []
    for t in range(len(values)):
        relative = (values[t] - values[t - 1]) / abs(values[t - 1]) if t >= 1 else 0.0
        normalised = gradients[t] / (np.abs(gradients[max(t - 1, 0)]) + 1)
        ratio = (np.abs(steps_taken[t - 2]) / (np.abs(steps_taken[t - 1]) + 0.1)
                 if t >= 2 else np.zeros_like(gradients[t]))
        rows.append(np.stack([np.full_like(normalised, relative), normalised, ratio], axis=-1))
    return np.stack(rows)


@functools.cache
def small_policy(hidden=8, seed=0, observation_size=SMALL.observation_size):
    policy = policy_lib.init(jax.random.key(seed), observation_size, 1, hidden)
    return policy._replace(input_scale=jnp.full(observation_size, 0.5),
                           action_scale=jnp.full(1, 0.1))


def numpy_moment_inputs(gradients):
    """(m̂_t / s_t, g_t / s_t) `[T, K, 2]` from gradients `[T, K]`, written from the
    definitions (Adam's bias-corrected moments, decays 0.9 and 0.999)."""
    first, second, rows = 0.0, 0.0, []
    for t, gradient in enumerate(gradients.astype(np.float64)):
        first = 0.9 * first + 0.1 * gradient
        second = 0.999 * second + 0.001 * gradient ** 2
        scale = np.sqrt(second / (1 - 0.999 ** (t + 1))) + 1e-8
        rows.append(np.stack([first / (1 - 0.9 ** (t + 1)) / scale, gradient / scale], -1))
    return np.stack(rows)


def test_first_moment_input_is_optax_adams_direction():
    """m̂/s over a gradient sequence equals `optax.scale_by_adam`'s update, and both inputs
    equal the NumPy definitions."""
    gradients = np.random.default_rng(4).normal(size=(12, 5)).astype(np.float32) * 3.0
    adam = optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)
    adam_state = adam.init(jnp.zeros(5))
    first = second = jnp.zeros(5)
    expected = numpy_moment_inputs(gradients)
    for t, gradient in enumerate(gradients):
        direction, adam_state = adam.update(jnp.asarray(gradient), adam_state)
        first, second, inputs = cf.moment_inputs(first, second, jnp.asarray(gradient), t)
        np.testing.assert_allclose(inputs[0], direction, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(np.stack(inputs, -1), expected[t], rtol=1e-5, atol=1e-7)


def test_imitating_adam_needs_the_moment_inputs():
    with pytest.raises(ValueError, match="initial_optimizer='adam' needs .*moments=True"):
        ct.CoordinateConfig(features=cf.CoordinateFeatureConfig(moments=False))
    with pytest.raises(ValueError, match="initial_optimizer must be one of"):
        ct.CoordinateConfig(initial_optimizer="lbfgs")


@pytest.mark.parametrize("history,moments", [(1, False), (2, False), (3, False), (2, True)])
def test_optax_export_equals_policy_on_numpy_features(history, moments):
    """Eight steps of the export on a 2-leaf pytree against Psi (and the moment inputs)
    written in NumPy and the policy applied to them by hand, reading the last `history` Psi
    vectors."""
    features = dataclasses.replace(SMALL, observation_history=history, moments=moments)
    policy = small_policy(observation_size=features.observation_size)
    opt = coordinate_learned.coordinatewise_step_descent(policy, features)
    target = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.3, -0.7, 2.0])}

    def loss(params):
        return 1.0 + sum(jnp.sum((params[k] - target[k] * 0.1) ** 2 * (1 + target[k] ** 2))
                         for k in params)

    params = jax.tree.map(jnp.zeros_like, target)
    state = opt.init(params)
    values, grads, taken = [], [], []
    for _ in range(8):
        value, grad = jax.value_and_grad(loss)(params)
        updates, state = opt.update(grad, state, params, value=value)
        flat_grad, unravel = jax.flatten_util.ravel_pytree(grad)
        values.append(float(value))
        grads.append(np.asarray(flat_grad))
        taken.append(np.asarray(jax.flatten_util.ravel_pytree(updates)[0]))
        params = optax.apply_updates(params, updates)
    psi = numpy_observations(np.array(values), np.stack(grads), np.stack(taken))
    moment_inputs = numpy_moment_inputs(np.stack(grads))
    for t in range(8):
        inputs = np.concatenate([psi[t - lag] if t >= lag else np.zeros_like(psi[t])
                                 for lag in range(history)]
                                + ([moment_inputs[t]] if moments else []), -1)
        expected = np.asarray(policy_lib.mean(policy, jnp.asarray(inputs, jnp.float32),
                                              "relu"))[:, 0]
        np.testing.assert_allclose(taken[t], expected, rtol=1e-4, atol=1e-7, err_msg=f"step {t}")


@pytest.mark.parametrize("activation", ["relu", "softplus"])
def test_elementwise_policy_equals_the_specification(activation):
    """Per-coordinate inputs, and inputs shared by every coordinate passed as scalars (folded
    into the hidden biases), against the policy on the stacked inputs; values reach past the
    whitening's clip."""
    policy = small_policy()._replace(input_mean=jnp.linspace(-1.0, 1.0, SMALL.observation_size))
    inputs = jax.random.normal(jax.random.key(3), (50, SMALL.observation_size)) * 15.0
    shared = inputs.at[:, ::3].set(inputs[:1, ::3])
    for stacked, columns in ((inputs, list(inputs.T)),
                             (shared, [column[0] if i % 3 == 0 else column
                                       for i, column in enumerate(shared.T)])):
        expected = policy_lib.mean(policy, stacked, activation)[:, 0]
        got = coordinate_learned.elementwise_mean(policy, columns, activation)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_compiled_step_evaluates_the_policy_once_whatever_its_action_scale():
    """The jitted step (update, apply, buffers donated) of the same policy with action scale 1
    and 0.0042 (the shipped policy's) compiles to programs of one size: a final multiply by
    the scale made XLA copy the policy's expression into each consumer of the step (six
    copies, 3.4x slower at 1M parameters; docs/decisions.md)."""
    def program_size(action_scale):
        learned = gps.CoordinateLearned(
            small_policy(hidden=16)._replace(action_scale=jnp.full(1, action_scale)),
            cf.CoordinateFeatureConfig(), scale_gain=0.5)
        opt = gps.as_optax(learned)

        def step(params, state, grads):
            updates, state = opt.update(grads, state, params, value=jnp.float32(1.0))
            return optax.apply_updates(params, updates), state

        params = {"w": jnp.ones((64, 512)), "b": jnp.ones(512), "c": jnp.ones((3, 3, 8, 16))}
        compiled = jax.jit(step, donate_argnums=(0, 1)).lower(
            params, opt.init(params), params).compile().as_text()
        return compiled.count(" maximum(")

    assert program_size(0.0042) == program_size(1.0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_optax_export_runs_on_any_pytree_inside_scan(dtype):
    """A 200-leaf pytree of mixed shapes, inside jit and lax.scan: finite steps of the leaves'
    dtype and shapes, and a leaf's steps equal to the same leaf's run alone (elementwise; up
    to rounding: XLA's vectorised and scalar loops may round the moment inputs apart by an ulp,
    which the policy amplifies to about 1e-6 relative in float32)."""
    opt = coordinate_learned.coordinatewise_step_descent(small_policy(), SMALL)
    rng = np.random.default_rng(1)
    shapes = [(), (3,), (2, 5), (4, 1, 2)]
    params = [jnp.asarray(rng.normal(size=shapes[i % 4]), dtype) for i in range(200)]

    def loss(tree):
        return sum(jnp.sum(jnp.asarray(leaf, jnp.float32) ** 2) for leaf in tree) / 200 + 1.0

    def run(tree, value_of):
        def body(carry, _):
            tree, state = carry
            grad = jax.grad(loss)(tree)
            updates, state = opt.update(grad, state, tree, value=value_of(tree))
            return (optax.apply_updates(tree, updates), state), updates
        return jax.lax.scan(body, (tree, opt.init(tree)), None, length=5)

    value = loss(params)
    (_, _), updates = jax.jit(lambda t: run(t, lambda _: value))(params)
    assert [u.shape[1:] for u in updates] == [p.shape for p in params]
    assert all(u.dtype == dtype for u in updates)
    assert all(bool(jnp.all(jnp.isfinite(u.astype(jnp.float32)))) for u in updates)
    (_, _), alone = jax.jit(lambda t: run(t, lambda _: value))(params[1:2])
    np.testing.assert_allclose(np.asarray(alone[0], np.float32),
                               np.asarray(updates[1], np.float32),
                               rtol=max(1e-5, 2 * float(jnp.finfo(dtype).eps)))


def test_groups_one_per_leaf_or_by_function():
    params = {"a": jnp.zeros((2, 3)), "b": jnp.zeros(4), "c": jnp.zeros(1)}
    default = coordinate_groups.groups(params)
    assert default.count == 3 and list(default.sizes) == [6, 4, 1]
    flat_size = 11
    merged = coordinate_groups.groups(params, lambda p: {"a": 0, "b": 1, "c": 1})
    assert list(merged.sizes) == [6, 5]
    assert sorted(merged.positions[1][:5]) == list(range(6, flat_size))
    picked = np.asarray(coordinate_groups.pick(merged, jax.random.key(0), 50))
    assert set(picked[0]) <= set(range(6)) and set(picked[1]) <= set(range(6, flat_size))
    with pytest.raises(ValueError, match="group ids for 3 leaves"):
        coordinate_groups.groups(params, lambda p: [0, 1])


def test_tied_lqg_equals_untied_lqg_on_identical_coordinates():
    """Two identical, independent coordinates: the joint LQG (block-diagonal dynamics, cost
    and reference, KL bound twice the tied one) has the tied solution in each block."""
    size, horizon, copies = 3, 5, 2
    rng = np.random.default_rng(2)
    matrix = 0.4 * rng.normal(size=(horizon, size, size + 1))
    noise = 0.05 * np.eye(size)
    gain = 0.1 * rng.normal(size=(horizon, 1, size))
    hessian = np.zeros((horizon + 1, size + 1, size + 1))
    hessian[:, 0, size] = hessian[:, size, 0] = 1.0
    hessian[:, size, size] = 0.5
    config = LQGConfig()

    def solve(blocks):
        def diagonal(array, states, actions):  # [T, a, b] blocks -> block-diagonal, [s; u]
            out = np.zeros((array.shape[0], blocks * states[0] + blocks * actions[0],
                            blocks * states[1] + blocks * actions[1]))
            for c in range(blocks):
                for (r0, r1, rs), (c0, c1, cs) in [((0, states[0], 0), (0, states[1], 0)),
                                                   ((0, states[0], 0), (states[1], None, 1)),
                                                   ((states[0], None, 1), (0, states[1], 0)),
                                                   ((states[0], None, 1), (states[1], None, 1))]:
                    part = array[:, r0:r1, c0:c1]
                    if part.size == 0:
                        continue
                    rows = blocks * states[0] if rs else 0
                    cols = blocks * states[1] if cs else 0
                    hr, hc = part.shape[1:]
                    out[:, rows + c * hr: rows + (c + 1) * hr,
                        cols + c * hc: cols + (c + 1) * hc] = part
            return out

        layout = ct.CoordinateLayout(size * blocks, blocks)
        dynamics = Dynamics(jnp.asarray(diagonal(matrix, (size, size), (0, 1))),
                            jnp.zeros((horizon, size * blocks)),
                            jnp.asarray(np.kron(np.eye(blocks), noise)[None].repeat(horizon, 0)))
        cost = QuadraticCost(jnp.asarray(diagonal(hessian, (size, size), (1, 1))),
                             jnp.zeros((horizon + 1, (size + 1) * blocks)),
                             jnp.zeros(horizon + 1))
        reference = make_controller(jnp.asarray(diagonal(gain, (0, size), (1, 0))),
                                    jnp.zeros((horizon, blocks)),
                                    jnp.broadcast_to(0.2 * jnp.eye(blocks), (horizon, blocks,
                                                                             blocks)))
        return gps.lqg.optimise(config, layout, dynamics, cost, reference,
                                jnp.ones(size * blocks), jnp.eye(size * blocks),
                                jnp.asarray(0.5 * blocks))

    with jax.enable_x64():
        tied, joint = solve(1), solve(copies)
    np.testing.assert_allclose(joint.eta, tied.eta, rtol=1e-6)
    for c in range(copies):
        np.testing.assert_allclose(joint.controller.gain[:, c, c * size:(c + 1) * size],
                                   tied.controller.gain[:, 0], rtol=1e-6, atol=1e-10)
        np.testing.assert_allclose(joint.controller.covariance[:, c, c],
                                   tied.controller.covariance[:, 0, 0], rtol=1e-6)
    off_block = np.asarray(joint.controller.gain[:, 0, size:])
    np.testing.assert_allclose(off_block, 0.0, atol=1e-10)


def test_step_scale_multiplies_the_policy_steps_as_written_in_numpy():
    """Eight steps on a 2-leaf pytree with a step-scale gain against the same optimizer without
    one: each step is exp(l_t) times the plain step, l_t from the cosine of g_t and the decayed
    sum of the earlier plain steps, clipped to +-log(bound), written in NumPy; the gain is
    large enough for the clip to act."""
    gain, bound, decay = 5.0, 2.0, 0.7
    policy = small_policy()
    plain = coordinate_learned.coordinatewise_step_descent(policy, SMALL)
    scaled = coordinate_learned.coordinatewise_step_descent(policy, SMALL, "relu", gain, bound,
                                                            decay)
    rng = np.random.default_rng(4)
    params = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(4)}
    drift = {k: rng.normal(size=v.shape) for k, v in params.items()}
    grads = [{k: jnp.asarray(drift[k] + 0.3 * rng.normal(size=v.shape), jnp.float32)
              for k, v in params.items()} for _ in range(8)]
    flat = lambda tree: np.asarray(jax.flatten_util.ravel_pytree(tree)[0], np.float64)  # noqa: E731
    plain_state, scaled_state = plain.init(params), scaled.init(params)
    log_scale, displacement, reached_bound = 0.0, np.zeros(10), False
    for t, grad in enumerate(grads):
        value = jnp.float32(2.0 / (t + 1))
        plain_step, plain_state = plain.update(grad, plain_state, params, value=value)
        scaled_step, scaled_state = scaled.update(grad, scaled_state, params, value=value)
        g = flat(grad)
        norms = np.linalg.norm(g) * np.linalg.norm(displacement)
        cosine = -g @ displacement / norms if norms > 0 else 0.0
        log_scale = float(np.clip(log_scale + gain * cosine, -np.log(bound), np.log(bound)))
        reached_bound |= abs(log_scale) == np.log(bound)
        np.testing.assert_allclose(flat(scaled_step), np.exp(log_scale) * flat(plain_step),
                                   rtol=1e-5, atol=1e-8, err_msg=f"step {t}")
        displacement = decay * displacement + flat(plain_step)
    assert reached_bound


def test_save_load_round_trip(tmp_path):
    learned = coordinate_learned.CoordinateLearned(small_policy(), SMALL, "neural_nets",
                                                   ({"area": 1.5},), "softplus", 0.5, 2.0, 0.8)
    gps.save(learned, str(tmp_path))
    loaded = gps.load(str(tmp_path))
    assert isinstance(loaded, coordinate_learned.CoordinateLearned)
    assert loaded.features == SMALL and loaded.family == "neural_nets"
    assert loaded.history == ({"area": 1.5},) and loaded.activation == "softplus"
    assert (loaded.scale_gain, loaded.scale_bound, loaded.scale_decay) == (0.5, 2.0, 0.8)
    jax.tree.map(np.testing.assert_array_equal, loaded.policy, learned.policy)


TINY_FAMILY = nf.NetworkFamily(hidden_sizes=(8,), input_dim=8, batch_size=32)
TINY = ct.CoordinateConfig(features=cf.CoordinateFeatureConfig(lags=3, ratios=1),
                           horizon=20, num_samples=2, recorded=8, hidden=8, policy_steps=100,
                           imitation_steps=100, num_iterations=2)


@functools.cache
def tiny_problems():
    data = nf.projected_digits(jax.random.key(0), TINY_FAMILY.input_dim)
    return TINY_FAMILY.sample(jax.random.key(1), 2, data)


@functools.cache
def tiny_training():
    return ct.train(TINY_FAMILY, tiny_problems(), TINY, jax.random.key(2))


def test_smoke_meta_training_improves_on_its_initialisation():
    _, history = tiny_training()
    with jax.enable_x64():
        problems = jax.tree.map(gps.trajectory_opt.to_float64, tiny_problems())
        key_rates, key_init, _ = jax.random.split(jax.random.key(2), 3)
        config = dataclasses.replace(TINY, num_iterations=0)
        areas = ct._initial_areas(config, TINY_FAMILY, problems, key_rates, None)
        rate = jnp.asarray(TINY.initial_rates)[jnp.argmin(areas)]
        initial = ct._initial_policy(config, TINY_FAMILY, problems, rate, key_init, None)
        initial_area = float(ct._area(config, TINY_FAMILY, problems, initial, key_rates, None))
    assert min(record["area"] for record in history) < initial_area


def test_a_diverging_initial_rate_is_never_imitated():
    """Adam at 1e200 overflows float64 on these nets: its area is inf, not a NaN that argmin
    would pick, and with no rate left meta-training stops with a clear error."""
    with jax.enable_x64():
        problems = jax.tree.map(gps.trajectory_opt.to_float64, tiny_problems())
        config = dataclasses.replace(TINY, num_iterations=0, initial_rates=(0.1, 1e200))
        areas = np.asarray(ct._initial_areas(config, TINY_FAMILY, problems, jax.random.key(0),
                                         None))
    assert np.isfinite(areas[0]) and areas[1] == np.inf
    hopeless = dataclasses.replace(TINY, num_iterations=1, initial_rates=(1e200,))
    with pytest.raises(ValueError, match="diverges .* every initial rate"):
        ct.train(TINY_FAMILY, tiny_problems(), hopeless, jax.random.key(2))


def test_a_diverging_iteration_is_dropped(monkeypatch):
    """An S-step whose policy is NaN gives a NaN area: the best policy and its area stay, the
    next iteration starts from the best, with no eta guess."""
    with jax.enable_x64():
        problems = jax.tree.map(gps.trajectory_opt.to_float64, tiny_problems())
        config = dataclasses.replace(TINY, num_iterations=0)
        state, _ = ct._initial_state(config, TINY_FAMILY, problems, jax.random.key(0),
                                     jax.random.key(1), None)
        monkeypatch.setattr(ct, "s_step", lambda config, policy, *args: jax.tree.map(
            lambda a: a * jnp.nan, policy))
        new_state, scalars = ct.iteration(config, TINY_FAMILY, problems, state,
                                          jax.random.key(2))
    assert np.isnan(float(scalars["area"]))
    assert float(new_state.best_area) == float(state.best_area)
    jax.tree.map(np.testing.assert_array_equal, new_state.policy, state.best)
    jax.tree.map(np.testing.assert_array_equal, new_state.best, state.best)
    assert np.all(np.isnan(np.asarray(new_state.eta)))


def test_kill_and_resume_gives_the_same_policy(tmp_path):
    path = str(tmp_path / "state.npz")
    once = dataclasses.replace(TINY, num_iterations=1)
    ct.train(TINY_FAMILY, tiny_problems(), once, jax.random.key(2), checkpoint_path=path)
    resumed, history = ct.train(TINY_FAMILY, tiny_problems(), TINY, jax.random.key(2),
                                checkpoint_path=path)
    straight, straight_history = tiny_training()
    assert len(history) == 2
    assert [r["area"] for r in history] == [r["area"] for r in straight_history]
    jax.tree.map(np.testing.assert_array_equal, resumed, straight)
    with pytest.raises(ValueError, match="key"):
        ct.train(TINY_FAMILY, tiny_problems(), TINY, jax.random.key(3), checkpoint_path=path)


def test_choose_gain_areas_equal_plain_runs_and_the_least_criterion_wins():
    """choose_gain's batched areas against runs of the exported optimizer written as a plain
    loop (same minibatch keys), and its choice against the criterion recomputed from them."""
    policy, _ = tiny_training()
    learned = coordinate_learned.CoordinateLearned(
        jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), policy), TINY.features)
    data, params = tiny_problems()
    gains, perturbations, key = (0.0, 1.0), (0.5, 1.0, 2.0), jax.random.key(8)
    choice = step_scale.choose_gain(
        lambda gain: gps.as_optax(dataclasses.replace(learned, scale_gain=gain)), TINY_FAMILY,
        (data, params), gains, perturbations, 20, key, num_seeds=2, eval_every=10)
    assert choice.areas.shape == (2, 3, 2, 2)

    def plain_area(gain, perturbation, problem, seed):
        opt = gps.as_optax(dataclasses.replace(learned, scale_gain=gain))
        one = jax.tree.map(lambda a: a[problem], (data, params))
        x, state = one[1], opt.init(one[1])
        update = jax.jit(opt.update)
        losses = [TINY_FAMILY.full_loss(x, one[0])]
        for chunk_key in jax.random.split(jax.random.split(key, 2)[seed], 2):
            for step_key in jax.random.split(chunk_key, 10):
                value, grad = jax.value_and_grad(TINY_FAMILY.minibatch_loss)(x, one[0],
                                                                             step_key)
                updates, state = update(grad, state, x, value=value)
                x = optax.apply_updates(x, jax.tree.map(lambda u: perturbation * u, updates))
            losses.append(TINY_FAMILY.full_loss(x, one[0]))
        return float(np.mean(losses))

    for (g, p, n, r) in [(0, 1, 0, 0), (1, 0, 1, 1), (1, 2, 0, 1)]:
        np.testing.assert_allclose(choice.areas[g, p, n, r],
                                   plain_area(gains[g], perturbations[p], n, r), rtol=1e-4)
    relative = choice.areas / choice.areas[0, 1]
    criteria = [np.mean(relative[g]) for g in range(2)]
    np.testing.assert_allclose(choice.criteria, criteria, rtol=1e-6)
    assert choice.gain == gains[int(np.argmin(criteria))]


def test_step_scale_settings_are_checked():
    for bad in [dict(scale_gains=(0.1, 1.0)), dict(scale_gains=(0.0, -1.0)),
                dict(scale_perturbations=(0.5, 2.0)), dict(scale_bound=0.5),
                dict(scale_decay=1.0)]:
        with pytest.raises(ValueError, match="scale_gains must"):
            ct.CoordinateConfig(**bad)


def test_trained_policy_exports_and_trains_a_larger_net():
    """The smoke-trained policy, exported, trains a net 4x wider than it was trained on."""
    policy, history = tiny_training()
    learned = coordinate_learned.CoordinateLearned(
        jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), policy), TINY.features,
        TINY_FAMILY.name, history, TINY.activation)
    family = dataclasses.replace(TINY_FAMILY, hidden_sizes=(32,))
    data = nf.projected_digits(jax.random.key(5), family.input_dim)
    params = family.init(jax.random.key(6))
    opt = gps.as_optax(learned)

    def body(carry, key):
        params, state = carry
        value, grad = jax.value_and_grad(family.minibatch_loss)(params, data, key)
        updates, state = opt.update(grad, state, params, value=value)
        return (optax.apply_updates(params, updates), state), None

    (final, _), _ = jax.jit(lambda p: jax.lax.scan(body, (p, opt.init(p)),
                                                   jax.random.split(jax.random.key(7), 40)))(
        params)
    assert float(family.full_loss(final, data)) < 0.8 * float(family.full_loss(params, data))
