"""LQG under a KL trust region: Riccati against NumPy, the fast passes against the dense
specification, expected cost and KL against Monte Carlo, eta search, non-PD repair, step size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from lopt import gps
from lopt.gps import controllers, cost, dynamics, features, lqg

LAYOUT = gps.FeatureConfig(history=1).layout(2)  # dX = 5, dU = 2, dZ = 3
DX, DU = LAYOUT.size, LAYOUT.dim
N = DX + DU
HISTORY_LAYOUT = gps.FeatureConfig(history=3).layout(2)  # dX = 11: the history shifts

# Compiled once for the module (the layout is static); each shape compiles once.
_backward = jax.jit(lqg.backward_pass, static_argnums=0)
_forward = jax.jit(lqg.forward_pass, static_argnums=0)
_dense_backward = jax.jit(lqg.dense_backward_pass, static_argnums=0)
_dense_forward = jax.jit(lqg.dense_forward_pass, static_argnums=0)


def _lq_problem(rng, horizon, stable=True):
    """Random full-state LQ problem: A, B, f, state/action costs (NumPy, float64)."""
    a = rng.normal(size=(DX, DX))
    if stable:
        a *= 0.9 / np.max(np.abs(np.linalg.eigvals(a)))
    b = rng.normal(size=(DX, DU))
    f = rng.normal(size=DX)
    q_factor = rng.normal(size=(DX, DX))
    q = q_factor @ q_factor.T / DX + 0.1 * np.eye(DX)
    r = np.diag(rng.uniform(0.5, 2.0, DU))
    qs, rs = rng.normal(size=DX), rng.normal(size=DU)
    return a, b, f, q, r, qs, rs


def _as_model(a, b, f, q, r, qs, rs, horizon):
    hessian = np.zeros((horizon + 1, N, N))
    hessian[:, :DX, :DX] = q
    hessian[:-1, DX:, DX:] = r
    gradient = np.zeros((horizon + 1, N))
    gradient[:, :DX] = qs
    gradient[:-1, DX:] = rs
    quadratic = cost.QuadraticCost(jnp.asarray(hessian), jnp.asarray(gradient),
                                   jnp.zeros(horizon + 1))
    model = dynamics.Dynamics(
        jnp.broadcast_to(jnp.asarray(np.concatenate([a, b], 1)), (horizon, DX, N)),
        jnp.broadcast_to(jnp.asarray(f), (horizon, DX)),
        jnp.broadcast_to(0.01 * jnp.eye(DX), (horizon, DX, DX)),
    )
    return model, quadratic


def _reference(rng, horizon, std=1.0):
    gain = 0.1 * rng.normal(size=(horizon, DU, DX))
    offset = 0.1 * rng.normal(size=(horizon, DU))
    covariance = np.broadcast_to(std**2 * np.eye(DU), (horizon, DU, DU))
    return controllers.make_controller(jnp.asarray(gain), jnp.asarray(offset),
                                       jnp.asarray(covariance))


def _numpy_lqr(a, b, f, q, r, qs, rs, horizon):
    """Finite-horizon affine LQR by the textbook Riccati recursion."""
    p, p_lin = q.copy(), qs.copy()
    gains, offsets = [], []
    for _ in range(horizon):
        q_uu = r + b.T @ p @ b
        q_ux = b.T @ p @ a
        q_u = rs + b.T @ (p @ f + p_lin)
        q_x = qs + a.T @ (p @ f + p_lin)
        gain = -np.linalg.solve(q_uu, q_ux)
        offset = -np.linalg.solve(q_uu, q_u)
        p = q + a.T @ p @ a + q_ux.T @ gain
        p_lin = q_x + q_ux.T @ offset
        gains.append(gain)
        offsets.append(offset)
    return np.array(gains[::-1]), np.array(offsets[::-1])


def test_backward_pass_with_small_eta_is_lqr():
    rng = np.random.default_rng(0)
    horizon = 8
    problem = _lq_problem(rng, horizon)
    with jax.enable_x64():
        model, quadratic = _as_model(*problem, horizon)
        reference = _reference(rng, horizon)
        solution, ok = lqg.backward_pass(LAYOUT, model, quadratic, reference, jnp.asarray(1e-10))
        assert bool(ok)
        gains, offsets = _numpy_lqr(*problem, horizon)
        np.testing.assert_allclose(solution.gain, gains, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(solution.offset, offsets, rtol=1e-6, atol=1e-7)


def test_backward_pass_long_horizon_reaches_the_riccati_fixed_point():
    rng = np.random.default_rng(1)
    horizon = 60
    a, b, f, q, r, _, _ = _lq_problem(rng, horizon)
    problem = (a, b, np.zeros(DX), q, r, np.zeros(DX), np.zeros(DU))
    with jax.enable_x64():
        model, quadratic = _as_model(*problem, horizon)
        solution, _ = lqg.backward_pass(LAYOUT, model, quadratic, _reference(rng, horizon),
                                        jnp.asarray(1e-10))
        riccati = scipy.linalg.solve_discrete_are(a, b, q, r)
        stationary = -np.linalg.solve(r + b.T @ riccati @ b, b.T @ riccati @ a)
        np.testing.assert_allclose(solution.gain[0], stationary, rtol=1e-5, atol=1e-7)


def _structured_model(rng, horizon, layout=LAYOUT):
    dz = layout.observation_size
    covariance = rng.normal(size=(horizon, dz, dz))
    return dynamics.Dynamics(
        jnp.asarray(0.3 * rng.normal(size=(horizon, dz, layout.size + layout.dim))),
        jnp.asarray(rng.normal(size=(horizon, dz))),
        jnp.asarray(covariance @ np.swapaxes(covariance, 1, 2) / dz + 0.01 * np.eye(dz)),
    )


def _dense_model(layout, model):
    """The full-state model `[T, dX, ...]` of a structured one, and a factor `[T, dX, dZ]` of
    its noise: s' = J [s; u] + E z with J and E the Jacobians of `features.next_state` (not
    the index maps the fast passes use)."""
    size, dim = layout.size, layout.dim

    def next_state(joint, observation):
        return features.next_state(layout, joint[:size], joint[size:], observation)

    known, embed = jax.jacobian(next_state, argnums=(0, 1))(
        jnp.zeros(size + dim), jnp.zeros(layout.observation_size))
    factor = embed @ np.linalg.cholesky(np.asarray(model.covariance))
    full = dynamics.Dynamics(known + embed @ model.matrix, model.offset @ embed.T,
                             jnp.asarray(factor @ np.swapaxes(factor, 1, 2)))
    return full, factor


def _random_controller(rng, layout, horizon):
    """Random gains, offsets and full covariances (leaves `[T, ...]`)."""
    dim = layout.dim
    factor = rng.normal(size=(horizon, dim, dim))
    return controllers.make_controller(
        jnp.asarray(0.3 * rng.normal(size=(horizon, dim, layout.size))),
        jnp.asarray(rng.normal(size=(horizon, dim))),
        jnp.asarray(0.2 * factor @ np.swapaxes(factor, 1, 2) + 0.1 * np.eye(dim)))


def _general_problem(rng, layout, horizon):
    """A structured model, a cost coupling all of [s; u], a reference, an initial Gaussian."""
    size = layout.size + layout.dim
    model = _structured_model(rng, horizon, layout)
    factor = rng.normal(size=(horizon + 1, size, size)) / size
    quadratic = cost.QuadraticCost(jnp.asarray(factor @ np.swapaxes(factor, 1, 2)),
                                   jnp.asarray(rng.normal(size=(horizon + 1, size))),
                                   jnp.asarray(rng.normal(size=horizon + 1)))
    factor = rng.normal(size=(layout.size, layout.size))
    return (model, quadratic, _random_controller(rng, layout, horizon),
            jnp.asarray(rng.normal(size=layout.size)),
            jnp.asarray(0.1 * factor @ factor.T / layout.size))


@pytest.mark.parametrize("structured", [True, False])
def test_fast_passes_equal_the_dense_specification(structured):
    """`backward_pass` and `forward_pass` (structured model, or its full form through the
    full-model maps J = 0, E = I) against `dense_backward_pass` and `dense_forward_pass` on the
    full model, on a random problem with a history to shift."""
    rng = np.random.default_rng(2)
    horizon = 4
    with jax.enable_x64():
        model, quadratic, reference, mean, covariance = _general_problem(
            rng, HISTORY_LAYOUT, horizon)
        full, _ = _dense_model(HISTORY_LAYOUT, model)
        fast_model = model if structured else full
        eta = jnp.asarray(0.5)
        got, ok = _backward(HISTORY_LAYOUT, fast_model, quadratic, reference, eta)
        want, want_ok = _dense_backward(HISTORY_LAYOUT, full, quadratic, reference, eta)
        assert bool(ok) and bool(want_ok)
        for got_leaf, want_leaf in zip(got, want, strict=True):
            np.testing.assert_allclose(got_leaf, want_leaf, rtol=1e-9, atol=1e-11)
        got = _forward(HISTORY_LAYOUT, fast_model, want, quadratic, mean, covariance, reference)
        want = _dense_forward(HISTORY_LAYOUT, full, want, quadratic, mean, covariance,
                              reference)
        for got_leaf, want_leaf in zip(got, want, strict=True):
            np.testing.assert_allclose(got_leaf, want_leaf, rtol=1e-9, atol=1e-11)
            assert np.all(np.abs(want_leaf) > 1e-3)


def test_a_cost_over_leading_coordinates_acts_as_its_zero_padded_form():
    """`cost.expand` stores only the iterate block; the fast passes must read it as the full
    cost over [s; u] with zeros elsewhere (padded here by hand, read by the specification)."""
    rng = np.random.default_rng(3)
    horizon, k = 4, 3
    with jax.enable_x64():
        model, _, mean, covariance = _structured_problem(rng, horizon, 1.0)
        factor = rng.normal(size=(horizon + 1, k, k))
        compact = cost.QuadraticCost(jnp.asarray(factor @ np.swapaxes(factor, 1, 2)),
                                     jnp.asarray(rng.normal(size=(horizon + 1, k))),
                                     jnp.asarray(rng.normal(size=horizon + 1)))
        hessian = np.zeros((horizon + 1, N, N))
        hessian[:, :k, :k] = compact.hessian
        gradient = np.zeros((horizon + 1, N))
        gradient[:, :k] = compact.gradient
        padded = cost.QuadraticCost(jnp.asarray(hessian), jnp.asarray(gradient),
                                    compact.constant)
        full, _ = _dense_model(LAYOUT, model)
        reference = _reference(rng, horizon, std=0.3)
        got, ok = _backward(LAYOUT, model, compact, reference, jnp.asarray(0.5))
        want, _ = _dense_backward(LAYOUT, full, padded, reference, jnp.asarray(0.5))
        assert bool(ok)
        for got_leaf, want_leaf in zip(got, want, strict=True):
            np.testing.assert_allclose(got_leaf, want_leaf, rtol=1e-9, atol=1e-11)
        got = _forward(LAYOUT, model, want, compact, mean, covariance)[0]
        np.testing.assert_allclose(
            got, _dense_forward(LAYOUT, full, want, padded, mean, covariance)[0], rtol=1e-9)
        with pytest.raises(ValueError, match="does not fit"):
            cost.embedded(padded, N - 1)


def _monte_carlo(full, noise_factor, controller, reference, quadratic, mean, covariance,
                 num_samples, seed=0):
    """Trajectories of `controller` under the full model, sampled in NumPy (float64).

    Returns, per sample, the cost of each step `[S, T+1]` and log p(u_t|s_t) -
    log p_ref(u_t|s_t) `[S, T]`: their means estimate the expected costs and the KLs to
    `reference`. The model's noise is `noise_factor` `[T, dX, r]` times standard normals.
    """
    rng = np.random.default_rng(seed)
    matrix, offset, noise_factor = (np.asarray(a) for a in (full.matrix, full.offset,
                                                           noise_factor))
    controller, reference, quadratic = (jax.tree.map(np.asarray, tree) for tree in
                                        (controller, reference, quadratic))
    horizon, size = offset.shape
    dim = controller.offset.shape[-1]

    def log_density(actions, means, covariance_t):
        residual = actions - means
        _, log_det = np.linalg.slogdet(2.0 * np.pi * covariance_t)
        return -0.5 * (np.einsum("si,ij,sj->s", residual, np.linalg.inv(covariance_t),
                                 residual) + log_det)

    def step_cost(points, t):
        width = points.shape[1]
        hessian = quadratic.hessian[t, :width, :width]
        return (0.5 * np.einsum("si,ij,sj->s", points, hessian, points)
                + points @ quadratic.gradient[t, :width] + quadratic.constant[t])

    states = mean + rng.standard_normal((num_samples, size)) @ np.linalg.cholesky(covariance).T
    costs, log_ratios = [], []
    for t in range(horizon):
        means = states @ controller.gain[t].T + controller.offset[t]
        actions = means + rng.standard_normal((num_samples, dim)) @ np.linalg.cholesky(
            controller.covariance[t]).T
        joint = np.concatenate([states, actions], axis=1)
        costs.append(step_cost(joint, t))
        reference_means = states @ reference.gain[t].T + reference.offset[t]
        log_ratios.append(log_density(actions, means, controller.covariance[t])
                          - log_density(actions, reference_means, reference.covariance[t]))
        states = (joint @ matrix[t].T + offset[t]
                  + rng.standard_normal((num_samples, noise_factor.shape[-1]))
                  @ noise_factor[t].T)
    costs.append(step_cost(states, horizon))
    return np.stack(costs, axis=1), np.stack(log_ratios, axis=1)


def _assert_within_standard_errors(samples, expected, num_errors=4.0):
    """The mean of `samples` `[S, ...]` is within `num_errors` standard errors of `expected`
    `[...]`, and those errors are below 2% of |expected| (so the check has teeth)."""
    mean = np.mean(samples, axis=0)
    error = np.std(samples, axis=0, ddof=1) / np.sqrt(samples.shape[0])
    np.testing.assert_array_less(np.abs(mean - expected), num_errors * error)
    np.testing.assert_array_less(error, 0.02 * np.abs(expected))


def test_forward_pass_expected_cost_and_kl_match_monte_carlo():
    """The forward pass's E[c_t] and E[KL_t] against sample means of trajectories drawn in
    NumPy from the controller under the full model (the KL as the mean log-density ratio)."""
    rng = np.random.default_rng(9)
    horizon = 4
    with jax.enable_x64():
        model, quadratic, reference, mean, covariance = _general_problem(
            rng, HISTORY_LAYOUT, horizon)
        controller = _random_controller(rng, HISTORY_LAYOUT, horizon)
        full, noise_factor = _dense_model(HISTORY_LAYOUT, model)
        costs, kls = _forward(HISTORY_LAYOUT, model, controller, quadratic, mean, covariance,
                              reference)
        sampled_costs, log_ratios = _monte_carlo(full, noise_factor, controller, reference,
                                                 quadratic, mean, covariance, 40_000)
        _assert_within_standard_errors(sampled_costs, costs)
        _assert_within_standard_errors(log_ratios, kls)


def test_placed_update_equals_the_dense_sum_for_overlapping_and_split_rows():
    rng = np.random.default_rng(8)
    size, num_actions, num_outputs = 7, 2, 3
    # Row 0 takes an action and an observation entry, rows 3-4 one each, row 2 and 6 none.
    maps = dynamics.KnownMaps(shift=np.zeros(0, int), embed=np.asarray([1, 3, 3, 0, 3, 2, 3]),
                              state_source=np.zeros(0, int),
                              action_source=np.asarray([1, 0, 2, 2, 1, 2, 2]))
    matrix, actions, observations = (rng.normal(size=shape) for shape in (
        (size, size), (num_actions, size), (num_outputs, size)))
    placed = np.zeros((size, size))
    for row in range(size):
        if maps.action_source[row] < num_actions:
            placed[row] += actions[maps.action_source[row]]
        if maps.embed[row] < num_outputs:
            placed[row] += observations[maps.embed[row]]
    with jax.enable_x64():
        got = lqg._add_placed(maps, jnp.asarray(matrix), jnp.asarray(actions),
                              jnp.asarray(observations))
    np.testing.assert_allclose(got, matrix + placed + placed.T, rtol=1e-14, atol=1e-14)


def _marginals(rng, horizon):
    means = jnp.asarray(rng.normal(size=(horizon + 1, N)))
    factor = rng.normal(size=(horizon + 1, N, N))
    return means, jnp.asarray(factor @ np.swapaxes(factor, 1, 2))


def test_kl_of_a_controller_to_itself_is_zero_and_positive_to_another():
    rng = np.random.default_rng(3)
    horizon = 5
    with jax.enable_x64():
        controller = _reference(rng, horizon, std=0.3)
        other = _reference(rng, horizon, std=0.5)
        means, covariances = _marginals(rng, horizon)
        np.testing.assert_allclose(
            lqg.kl_divergence(LAYOUT, controller, controller, means, covariances), 0.0,
            atol=1e-12)
        assert np.all(lqg.kl_divergence(LAYOUT, other, controller, means, covariances) > 0)


def _structured_problem(rng, horizon, state_curvature):
    model = _structured_model(rng, horizon)
    hessian = np.zeros((horizon + 1, N, N))
    hessian[:, :DX, :DX] = state_curvature * np.eye(DX)
    quadratic = cost.QuadraticCost(jnp.asarray(hessian),
                                   jnp.asarray(rng.normal(size=(horizon + 1, N))),
                                   jnp.zeros(horizon + 1))
    mean = jnp.asarray(rng.normal(size=DX))
    return model, quadratic, mean, 1e-4 * jnp.eye(DX)


@pytest.fixture(scope="module")
def solve():
    """`lqg.optimise` vmapped over problems (optionally from guesses of eta), compiled once
    for this module."""
    config = gps.LQGConfig(eta_max_iterations=40)
    solver = jax.jit(jax.vmap(
        lambda d, c, r, m, s, b, g: lqg.optimise(config, LAYOUT, d, c, r, m, s, b, g)))

    def run(*args, eta_guess=None):
        guess = jnp.full(args[-1].shape, jnp.nan) if eta_guess is None else eta_guess
        return solver(*args, guess)

    return run


def _stack(*trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def test_eta_search_hits_the_kl_target_identically_under_vmap(solve):
    """The chosen controller's KL to the reference and its expected cost, measured by Monte
    Carlo (not by the pass the search ran), meet the bound within the search's tolerance."""
    rng = np.random.default_rng(4)
    horizon = 6
    config = gps.LQGConfig()
    with jax.enable_x64():
        problems = [_structured_problem(rng, horizon, 1.0) for _ in range(3)]
        references = [_reference(rng, horizon, std=0.1) for _ in range(3)]
        bounds = jnp.asarray([0.5, 2.0, 8.0])
        batch = [_stack(*parts) for parts in zip(*problems, strict=True)]
        solution = solve(batch[0], batch[1], _stack(*references), batch[2], batch[3], bounds)
        assert np.all(np.asarray(solution.num_passes) < 42)
        for index, ((model, quadratic, mean, covariance), reference) in enumerate(
                zip(problems, references, strict=True)):
            full, noise_factor = _dense_model(LAYOUT, model)
            controller = jax.tree.map(lambda x, i=index: x[i], solution.controller)
            costs, log_ratios = _monte_carlo(full, noise_factor, controller, reference,
                                             quadratic, mean, covariance, 20_000, seed=index)
            kl = np.sum(log_ratios, axis=1)
            error = np.std(kl, ddof=1) / np.sqrt(kl.size)
            bound = float(bounds[index])
            assert (bound / (1 + config.kl_tolerance) - 4 * error < np.mean(kl)
                    < bound * (1 + config.kl_tolerance) + 4 * error)
            _assert_within_standard_errors(np.sum(costs, axis=1),
                                           np.asarray(solution.expected_cost[index]))
        # The first problem alone (a batch of one) gives bit-identical results.
        model, quadratic, mean, covariance = jax.tree.map(lambda x: x[:1], batch)
        reference = jax.tree.map(lambda x: x[:1], _stack(*references))
        single = solve(model, quadratic, reference, mean, covariance, bounds[:1])
        np.testing.assert_array_equal(single.eta, solution.eta[:1])
        np.testing.assert_array_equal(single.controller.gain, solution.controller.gain[:1])


def test_warm_started_search_hits_the_kl_target_in_fewer_passes_identically_under_vmap(solve):
    rng = np.random.default_rng(6)
    horizon = 6
    with jax.enable_x64():
        problems = [_structured_problem(rng, horizon, 1.0) for _ in range(3)]
        references = _stack(*(_reference(rng, horizon, std=0.1) for _ in range(3)))
        batch = [_stack(*parts) for parts in zip(*problems, strict=True)]
        bounds = jnp.asarray([0.5, 2.0, 8.0])
        cold = solve(*batch[:2], references, *batch[2:], bounds)
        # Guesses off by factors 3 to 30 either way, as after the model and bound changed.
        guesses = cold.eta * jnp.asarray([3.0, 1 / 30.0, 30.0])
        warm = solve(*batch[:2], references, *batch[2:], bounds, eta_guess=guesses)
        np.testing.assert_allclose(warm.kl, bounds, rtol=0.1)
        np.testing.assert_allclose(warm.eta, cold.eta, rtol=0.3)
        assert np.all(np.asarray(warm.num_passes) < np.asarray(cold.num_passes))
        # An exact guess needs one pass.
        exact = solve(*batch[:2], references, *batch[2:], bounds, eta_guess=cold.eta)
        np.testing.assert_array_equal(exact.num_passes, 1)
        np.testing.assert_allclose(exact.controller.gain, cold.controller.gain, rtol=1e-12,
                                   atol=1e-14)
        single = solve(*(jax.tree.map(lambda x: x[1:2], part) for part in
                         (*batch[:2], references, *batch[2:], bounds)),
                       eta_guess=guesses[1:2])
        np.testing.assert_array_equal(single.eta, warm.eta[1:2])
        np.testing.assert_array_equal(single.controller.gain, warm.controller.gain[1:2])


def test_warm_start_at_an_inactive_or_unreachable_bound_stops_at_the_range_end(solve):
    rng = np.random.default_rng(7)
    horizon = 6
    config = gps.LQGConfig()
    with jax.enable_x64():
        model, quadratic, mean, covariance = _structured_problem(rng, horizon, 1.0)
        reference = _reference(rng, horizon, std=0.1)
        batch = [_stack(part, part) for part in (model, quadratic, reference, mean, covariance)]
        # A huge bound is inactive even at eta_min; a tiny one is out of reach even at eta_max.
        bounds = jnp.asarray([1e12, 1e-40])
        for guess in (jnp.asarray([1.0, 1.0]), None):
            solution = solve(*batch, bounds, eta_guess=guess)
            np.testing.assert_allclose(solution.eta, [config.eta_min, config.eta_max],
                                       rtol=1e-12)


def test_non_positive_definite_q_uu_is_repaired_by_a_larger_eta(solve):
    rng = np.random.default_rng(5)
    horizon = 6
    with jax.enable_x64():
        model, quadratic, mean, covariance = _structured_problem(rng, horizon, -50.0)
        reference = _reference(rng, horizon, std=0.1)
        _, ok = lqg.backward_pass(LAYOUT, model, quadratic, reference, jnp.asarray(1e-3))
        assert not bool(ok)  # concave cost, small eta: Q_uu is indefinite
        batch = [_stack(part) for part in (model, quadratic, reference, mean, covariance)]
        solution = solve(*batch, jnp.asarray([1e6]))  # a loose bound asks for a tiny eta
        eta = solution.eta[0]
        assert eta > 1e-3
        controller, ok = lqg.backward_pass(LAYOUT, model, quadratic, reference, eta)
        assert bool(ok)
        assert np.all(np.isfinite(solution.controller.gain))
        assert np.all(np.linalg.eigvalsh(solution.controller.covariance) > 0)


# (step_mult, previous, predicted, actual, new step_mult); min/max step_mult 0.01 / 10.
# Levine & Abbeel (2014, and their reference code) model the improvement as quadratic in the
# KL step, I(KL) = p KL / KL_0 - (p - r) (KL / KL_0)^2, with the predicted gain
# p = previous - predicted and the actual gain r = previous - actual at KL_0; it peaks at
# KL = p / (2 (p - r)) KL_0. That factor is clipped to [0.1, 5], the new step_mult to [0.01, 10].
ADAPT_STEP_CASES = [
    (1.0, 10.0, 9.0, 9.5, 1.0),  # p = 1, r = 0.5: 1 / (2 * 0.5)
    (2.0, 10.0, 9.0, 9.75, 4.0 / 3.0),  # p = 1, r = 0.25: 2 * 1 / 1.5
    (1.0, 10.0, 6.0, 8.0, 1.0),  # p = 4, r = 2
    (0.5, 10.0, 6.0, 7.0, 1.0),  # p = 4, r = 3: 0.5 * 4 / 2
    (1.0, 10.0, 9.0, 11.0, 0.25),  # r = -1: 1 / (2 * 2)
    (1.0, 10.0, 9.0, 13.0, 0.125),  # r = -3: 1 / 8
    (1.0, 10.0, 9.0, 20.0, 0.1),  # 1 / 22 clipped to 0.1
    (1.0, 10.0, 9.0, 9.0, 5.0),  # r = p: 1 / (2 * 1e-4) clipped to 5
    (1.0, 10.0, 9.0, 8.0, 5.0),  # r > p: the denominator's floor 1e-4, then 5
    (3.0, 10.0, 9.0, 9.0, 10.0),  # 3 * 5 clipped to max_step_mult
    (0.05, 10.0, 9.0, 20.0, 0.01),  # 0.05 * 0.1 clipped to min_step_mult
    (1.0, 10.0, 11.0, 12.0, 0.1),  # predicted worse (p = -1): -1 / 2 clipped to 0.1
    (1.0, np.nan, 9.0, 9.5, 0.1),  # no previous cost: NaN counts as 0.1
]


def test_adapt_step_is_levine_abbeel_step_adjustment():
    config = gps.LQGConfig()
    assert (config.min_step_mult, config.max_step_mult) == (0.01, 10.0)
    *arguments, want = (np.asarray(column) for column in zip(*ADAPT_STEP_CASES, strict=True))
    with jax.enable_x64():
        got = lqg.adapt_step(config, *(jnp.asarray(column) for column in arguments))
    np.testing.assert_allclose(got, want, rtol=1e-12)
