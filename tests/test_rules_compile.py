"""Compiled rules and PowerSign/AddSign against NumPy re-implementations and optax."""

import math
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
from lopt import cpu_kernels
from lopt.rules import (
    LIBRARY,
    RuleState,
    cosine_sign_decay,
    is_finite_update,
    linear_sign_decay,
    parse,
    restart_sign_decay,
    to_optax,
)

NUM_STEPS = 30
LEARNING_RATE = 0.01
EPS = 1e-8
SHAPES = {"bias": (5,), "kernel": (3, 4)}


def _sign_agreement(g, m):
    return np.sign(g) * np.sign(m)


# Directions d(g, m̂, v̂, γ̂, w) written independently of the library (update = -lr * d).
REFERENCES = {
    "sgd": lambda g, m, v, gamma, w: g,
    "momentum": lambda g, m, v, gamma, w: m,
    "adam": lambda g, m, v, gamma, w: m / (np.sqrt(v) + EPS),
    "rmsprop": lambda g, m, v, gamma, w: g / (np.sqrt(v) + EPS),
    "powersign": lambda g, m, v, gamma, w: g * np.exp(_sign_agreement(g, m)),
    "addsign": lambda g, m, v, gamma, w: (1 + _sign_agreement(g, m)) * g,
    "powersign_plus_clip": lambda g, m, v, gamma, w: (
        (np.exp(_sign_agreement(g, m)) + np.clip(g, -1e-4, 1e-4)) * g
    ),
    "clip_m_exp_v": lambda g, m, v, gamma, w: np.clip(m, -1e-4, 1e-4) * np.exp(v),
    "m_exp_v": lambda g, m, v, gamma, w: m * np.exp(v),
    "m_exp_g2": lambda g, m, v, gamma, w: m * np.exp(g**2),
    "adam_powersign": lambda g, m, v, gamma, w: (
        m / (np.sqrt(v) + EPS) * np.exp(_sign_agreement(g, m))
    ),
    "adam_exp_m": lambda g, m, v, gamma, w: m / (np.sqrt(v) + EPS) * np.exp(m),
    "g_minus_clip_g2": lambda g, m, v, gamma, w: g - np.clip(g**2, -1e-4, 1e-4),
    "exp_g_minus_exp_m": lambda g, m, v, gamma, w: np.exp(g) - np.exp(m),
    "g + 1e-2*w": lambda g, m, v, gamma, w: g + 1e-2 * w,
    "gamma / (v * g3)": lambda g, m, v, gamma, w: gamma / (v * g**3 + EPS),
    "-log(v) * sign(g)": lambda g, m, v, gamma, w: -np.log(np.abs(v)) * np.sign(g),
}


def _gradients(dtype, seed=0):
    """NUM_STEPS gradient pytrees whose elements span scales from 1e-3 to 3."""
    rng = np.random.default_rng(seed)
    scales = {name: 10 ** rng.uniform(-3, 0.5, shape) for name, shape in SHAPES.items()}
    return [
        {
            name: (rng.normal(size=shape) * scales[name]).astype(dtype)
            for name, shape in SHAPES.items()
        }
        for _ in range(NUM_STEPS)
    ]


def _initial_params(dtype):
    rng = np.random.default_rng(1)
    return {name: rng.normal(size=shape).astype(dtype) for name, shape in SHAPES.items()}


def _numpy_updates(direction, grads, dtype, b1=0.9, b2=0.999, b3=0.999):
    """Reference: EMAs with bias correction, Δw = -lr·d, for NUM_STEPS steps."""
    params = _initial_params(dtype)
    ema = {key: {name: np.zeros(shape, dtype) for name, shape in SHAPES.items()} for key in "mvc"}
    decays, powers = {"m": b1, "v": b2, "c": b3}, {"m": 1, "v": 2, "c": 3}
    updates = []
    for step, grad in enumerate(grads, start=1):
        step_updates = {}
        for name in SHAPES:
            corrected = {}
            for key in "mvc":
                decay = decays[key]  # a Python float, weakly typed like the library's constants
                ema[key][name] = decay * ema[key][name] + (1 - decay) * grad[name] ** powers[key]
                correction = 1 - dtype(decay) ** dtype(step)  # in the working dtype, as optax
                corrected[key] = ema[key][name] / correction
            d = direction(grad[name], corrected["m"], corrected["v"], corrected["c"], params[name])
            step_updates[name] = (-LEARNING_RATE * d).astype(dtype)
            params[name] = params[name] + step_updates[name]
        updates.append(step_updates)
    return updates


def _optax_updates(optimizer, grads, dtype):
    params = jax.tree.map(jnp.asarray, _initial_params(dtype))
    state = optimizer.init(params)
    update = jax.jit(optimizer.update)
    updates = []
    for grad in grads:
        step_updates, state = update(jax.tree.map(jnp.asarray, grad), state, params)
        params = optax.apply_updates(params, step_updates)
        updates.append(jax.tree.map(np.asarray, step_updates))
    assert update._cache_size() == 1  # the second and later updates reuse the compilation
    return updates


def _assert_updates_close(actual, expected, rtol, atol=1e-9):
    for step, (got, want) in enumerate(zip(actual, expected, strict=True)):
        for name in SHAPES:
            np.testing.assert_allclose(
                got[name], want[name], rtol=rtol, atol=atol, err_msg=f"step {step} {name}"
            )


# atol: lr times a few ulps of the terms, for rules that cancel (exp(g) - exp(m) at step 1).
# float32 runs both implementations of exp and log|x| (lopt.cpu_kernels): the CPU kernels and
# the plain jnp specification.
@pytest.mark.parametrize(
    "dtype, rtol, atol, implementation",
    [(np.float32, 2e-5, 1e-7, "cpu"), (np.float32, 2e-5, 1e-7, "plain"),
     (np.float64, 1e-12, 1e-15, None)],
)
@pytest.mark.parametrize("name", list(REFERENCES))
def test_compiled_rule_matches_numpy(name, dtype, rtol, atol, implementation):
    rule = LIBRARY[name] if name in LIBRARY else parse(name)
    with jax.enable_x64(dtype == np.float64):
        grads = _gradients(dtype)
        optimizer = to_optax(rule, LEARNING_RATE, implementation=implementation)
        actual = _optax_updates(optimizer, grads, dtype)
        assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(actual))
    _assert_updates_close(actual, _numpy_updates(REFERENCES[name], grads, dtype), rtol, atol)


@pytest.mark.parametrize(
    "text, direction, hyperparameters",
    [
        ("adam", lambda g, m, v, gamma, eps: m / (np.sqrt(v) + eps),
         {"b1": 0.5, "b2": 0.9, "eps": 1e-3}),
        ("gamma / (v * g3)", lambda g, m, v, gamma, eps: gamma / (v * g**3 + eps),
         {"b2": 0.8, "b3": 0.6, "eps": 1e-2}),
    ],
    ids=["adam", "gamma_over_v_g3"],
)
def test_decays_and_eps_change_the_update_as_the_closed_form_says(text, direction,
                                                                   hyperparameters):
    grads = _gradients(np.float32, seed=7)
    decays = {name: value for name, value in hyperparameters.items() if name != "eps"}
    eps = hyperparameters["eps"]
    reference = lambda g, m, v, gamma, w: direction(g, m, v, gamma, eps)
    actual = _optax_updates(to_optax(text, LEARNING_RATE, **hyperparameters), grads, np.float32)
    _assert_updates_close(actual, _numpy_updates(reference, grads, np.float32, **decays),
                          rtol=2e-5)
    defaults = _optax_updates(to_optax(text, LEARNING_RATE), grads, np.float32)
    assert not np.allclose(actual[-1]["kernel"], defaults[-1]["kernel"], rtol=1e-2)


def test_adam_equals_optax_adam():
    grads = _gradients(np.float32, seed=3)
    ours = _optax_updates(to_optax(parse("adam"), 1e-3), grads, np.float32)
    theirs = _optax_updates(optax.adam(1e-3, eps=1e-8), grads, np.float32)
    _assert_updates_close(ours, theirs, rtol=1e-6)


def _numpy_sign_rule(scale, beta, decay):
    """Reference PowerSign/AddSign: m is the plain EMA of g; factor scale(d(t)·agreement)."""

    def updates(grads, dtype):
        momentum = {name: np.zeros(shape, dtype) for name, shape in SHAPES.items()}
        result = []
        for t, grad in enumerate(grads):
            step = {}
            for name in SHAPES:
                momentum[name] = beta * momentum[name] + (1 - beta) * grad[name]
                agreement = decay(t) * _sign_agreement(grad[name], momentum[name])
                step[name] = -LEARNING_RATE * scale(agreement) * grad[name]
            result.append(step)
        return result

    return updates


def _linear(t, steps=20):
    return 1 - min(t, steps) / steps


def _cosine(t, steps=20, periods=1.0):
    return 0.5 * (1 + math.cos(2 * math.pi * periods * min(t, steps) / steps))


def _restart(t, steps=20, periods=3):
    return 0.5 * (1 + math.cos(math.pi * ((periods * min(t, steps)) % steps) / steps))


@pytest.mark.parametrize(
    "optimizer, reference",
    [
        (lopt.powersign(LEARNING_RATE), _numpy_sign_rule(np.exp, 0.9, lambda t: 1.0)),
        (
            lopt.powersign(LEARNING_RATE, base=2.0, b1=0.8, sign_decay=linear_sign_decay(20)),
            _numpy_sign_rule(lambda a: 2.0**a, 0.8, _linear),
        ),
        (lopt.addsign(LEARNING_RATE), _numpy_sign_rule(lambda a: 1 + a, 0.9, lambda t: 1.0)),
        (
            lopt.addsign(LEARNING_RATE, alpha=2.0, sign_decay=cosine_sign_decay(20, 1.0)),
            _numpy_sign_rule(lambda a: 2 + a, 0.9, _cosine),
        ),
        (
            lopt.powersign(LEARNING_RATE, sign_decay=restart_sign_decay(20, 3)),
            _numpy_sign_rule(np.exp, 0.9, _restart),
        ),
    ],
    ids=[
        "powersign",
        "powersign_base2_linear",
        "addsign",
        "addsign_alpha2_cosine",
        "powersign_restart",
    ],  # fmt: skip
)
def test_named_sign_rules_match_numpy(optimizer, reference):
    grads = _gradients(np.float32, seed=5)
    actual = _optax_updates(optimizer, grads, np.float32)
    _assert_updates_close(actual, reference(grads, np.float32), rtol=2e-5)


@pytest.mark.parametrize(
    "factory, hyperparams, reference",
    [
        (lopt.powersign, {"base": 2.0, "b1": 0.8},
         _numpy_sign_rule(lambda a: 2.0**a, 0.8, lambda t: 1.0)),
        (lopt.powersign, {"sign_decay": linear_sign_decay(20)},
         _numpy_sign_rule(np.exp, 0.9, _linear)),
        (lopt.addsign, {"alpha": 2.0, "sign_decay": cosine_sign_decay(20, 1.0)},
         _numpy_sign_rule(lambda a: 2 + a, 0.9, _cosine)),
        (lopt.rules.to_optax, {"rule": "powersign", "b1": 0.8},
         _numpy_sign_rule(np.exp, 0.8, lambda t: 1.0)),
    ],
    ids=["powersign_base_b1", "powersign_schedule", "addsign_alpha_schedule", "to_optax_name"],
)
def test_named_optimizers_under_inject_hyperparams_and_jit(factory, hyperparams, reference):
    """Every numeric setting traced (a sign-decay schedule evaluated by inject_hyperparams at
    its own step count and passed on as the step's d) gives the NumPy reference's updates."""
    grads = _gradients(np.float32, seed=7)
    injected = optax.inject_hyperparams(factory)(learning_rate=LEARNING_RATE, **hyperparams)
    _assert_updates_close(_optax_updates(injected, grads, np.float32),
                          reference(grads, np.float32), rtol=2e-5)


def test_library_names_are_accepted_as_rule_text():
    grads = _gradients(np.float32, seed=8)
    by_name = _optax_updates(to_optax("powersign", LEARNING_RATE), grads, np.float32)
    by_text = _optax_updates(to_optax(str(LIBRARY["powersign"]), LEARNING_RATE), grads,
                             np.float32)
    _assert_updates_close(by_name, by_text, rtol=0)


@pytest.mark.parametrize("name", ["powersign", "addsign"])
def test_named_rules_equal_library_rules(name):
    grads = _gradients(np.float32, seed=6)
    named = _optax_updates(getattr(lopt, name)(LEARNING_RATE), grads, np.float32)
    library = _optax_updates(to_optax(LIBRARY[name], LEARNING_RATE), grads, np.float32)
    _assert_updates_close(named, library, rtol=1e-6)


def test_sign_decay_values():
    assert float(linear_sign_decay(100)(50)) == pytest.approx(0.5)
    assert float(linear_sign_decay(100)(150)) == 0.0
    assert float(cosine_sign_decay(100)(100)) == pytest.approx(0.0, abs=1e-7)
    assert float(cosine_sign_decay(100, num_periods=1.0)(100)) == pytest.approx(1.0)
    assert float(restart_sign_decay(100, num_periods=2)(50)) == pytest.approx(1.0)
    assert float(restart_sign_decay(100, num_periods=2)(25)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="decay_steps"):
        linear_sign_decay(0)


# The optax contract.


def _params(dtype=jnp.float32):
    return {"layer": {"w": jnp.ones((3, 2), dtype)}, "stack": [jnp.array(0.5, dtype)]}


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32, jnp.float64])
def test_any_pytree_and_dtype(dtype):
    rule = parse("adam * exp(sign(g) * sign(m)) + 1e-2*w - drop(gamma, 0.1) + noise")
    with jax.enable_x64(dtype == jnp.float64):
        params = _params(dtype)
        optimizer = to_optax(rule, 1e-2, key=jax.random.key(0))
        state = optimizer.init(params)
        update = jax.jit(optimizer.update)
        for _ in range(2):
            updates, state = update(jax.tree.map(lambda p: p + 0.1, params), state, params)
            params = optax.apply_updates(params, updates)
        assert jax.tree.structure(updates) == jax.tree.structure(params)
        assert all(u.dtype == dtype for u in jax.tree.leaves(updates))
        assert all(m.dtype == dtype for m in jax.tree.leaves(state[0].m))
        assert bool(is_finite_update(updates))


def test_state_holds_only_what_the_rule_needs():
    params = {"w": jnp.ones(3)}
    key = jax.random.key(0)
    state = lambda text: to_optax(parse(text), 0.1, key=key).init(params)[0]
    sgd = state("g")
    assert isinstance(sgd, RuleState)
    assert (sgd.count, sgd.m, sgd.v, sgd.gamma, sgd.key) == (None,) * 5
    powersign = state("g * exp(sign(g) * sign(m))")
    assert powersign.m is not None and (powersign.v, powersign.gamma, powersign.key) == (None,) * 3
    adam = state("adam")
    assert adam.m is not None and adam.v is not None and adam.gamma is None
    noisy = state("gamma * noise")
    assert noisy.gamma is not None and noisy.key is not None and noisy.m is None


def test_random_rule_without_key_fails_at_init():
    optimizer = to_optax(parse("drop(m, 0.3) * exp(1e-3*w)"), 0.1)  # construction is fine
    with pytest.raises(ValueError, match="draws random numbers.*pass a PRNG key"):
        optimizer.init({"w": jnp.ones(3)})


def test_weight_rule_without_params_fails_clearly():
    optimizer = to_optax(parse("g + 1e-2*w"), 0.1)
    state = optimizer.init({"w": jnp.ones(3)})
    with pytest.raises(ValueError, match="reads the weights"):
        optimizer.update({"w": jnp.ones(3)}, state)


@pytest.mark.parametrize("implementation", ["cpu", "plain"])
def test_drop_and_noise_statistics_and_keys(implementation):
    """The CPU kernels' draws differ from jax.random's but have the same distribution."""
    params = {"w": jnp.ones(20_000)}
    to_optax_ = lambda text, key: to_optax(text, 1.0, key=key, implementation=implementation)
    drop = to_optax_("drop(one, 0.3)", jax.random.key(0))
    state = drop.init(params)
    first, state = drop.update(params, state)
    second, _ = drop.update(params, state)
    assert float(jnp.mean(first["w"] == 0)) == pytest.approx(0.3, abs=0.015)
    assert not bool(jnp.all((first["w"] == 0) == (second["w"] == 0)))  # fresh mask each step
    again, _ = drop.update(params, drop.init(params))
    np.testing.assert_array_equal(again["w"], first["w"])  # same key, same draws
    both = to_optax_("drop(one, 0.5) * drop(one, 0.5)", jax.random.key(4))
    kept, _ = both.update(params, both.init(params))
    assert float(jnp.mean(kept["w"] != 0)) == pytest.approx(0.25, abs=0.015)  # independent
    noise = to_optax_("noise", jax.random.key(1))
    draws = -np.asarray(noise.update(params, noise.init(params))[0]["w"], np.float64)
    assert draws.mean() == pytest.approx(0.0, abs=3e-4)
    assert draws.std() == pytest.approx(0.01, rel=0.03)
    assert np.mean((draws - draws.mean()) ** 4) / draws.var() ** 2 == pytest.approx(3, abs=0.2)
    assert abs(np.corrcoef(draws[:-1], draws[1:])[0, 1]) < 0.03  # neighbours uncorrelated


def test_overflow_gives_non_finite_updates_without_crashing():
    params = {"w": jnp.full(3, 10.0)}
    for text in ["exp(exp(g))", "log(g - g)"]:
        optimizer = to_optax(parse(text), 0.1)
        updates, _ = jax.jit(optimizer.update)(params, optimizer.init(params), params)
        assert not bool(jax.jit(is_finite_update)(updates)), text
    assert bool(is_finite_update({"w": jnp.ones(2), "b": []}))


def test_chain_schedule_and_string_rule():
    schedule = optax.linear_schedule(0.1, 0.0, 10)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), to_optax("g", schedule))
    params = {"w": jnp.ones(2)}
    state = optimizer.init(params)
    updates, state = optimizer.update({"w": jnp.array([3.0, 4.0])}, state)
    np.testing.assert_allclose(updates["w"], [-0.06, -0.08], rtol=1e-6)
    updates, _ = optimizer.update({"w": jnp.array([0.3, 0.4])}, state)
    np.testing.assert_allclose(updates["w"], [-0.027, -0.036], rtol=1e-6)


def test_inject_hyperparams_learning_rate():
    rule = LIBRARY["powersign_drop30"]
    params = {"w": jnp.ones(4)}
    grads = {"w": jnp.array([1.0, -2.0, 3.0, -4.0])}
    key = jax.random.key(2)
    injected = optax.inject_hyperparams(to_optax, static_args="key")(rule, 0.1, key=key)
    state = injected.init(params)
    state.hyperparams["learning_rate"] = jnp.asarray(0.05)
    updates, state = jax.jit(injected.update)(grads, state, params)
    plain = to_optax(rule, 0.05, key=key)
    expected, _ = plain.update(grads, plain.init(params), params)
    np.testing.assert_allclose(updates["w"], expected["w"], rtol=1e-6)


def test_multi_steps_accumulates_then_applies():
    rule = LIBRARY["drop10_m_over_exp_g2"]
    params = {"w": jnp.ones(3)}
    grads = [{"w": jnp.array([1.0, -2.0, 0.5]) * k} for k in (1.0, 2.0, 3.0)]
    multi = optax.MultiSteps(to_optax(rule, 0.1, key=jax.random.key(3)), every_k_schedule=3)
    state = multi.init(params)
    update = jax.jit(multi.update)
    for grad in grads:
        updates, state = update(grad, state, params)
    single = to_optax(rule, 0.1, key=jax.random.key(3))
    mean_grad = jax.tree.map(lambda *g: sum(g) / 3, *grads)
    expected, _ = single.update(mean_grad, single.init(params), params)
    np.testing.assert_allclose(updates["w"], expected["w"], rtol=1e-6)


def test_every_library_rule_runs():
    params = {"w": jnp.linspace(-1.0, 1.0, 5)}
    for name, rule in LIBRARY.items():
        optimizer = to_optax(rule, 1e-3, key=jax.random.key(0))
        updates, _ = optimizer.update(params, optimizer.init(params), params)
        assert updates["w"].shape == (5,) and bool(is_finite_update(updates)), name


# The CPU kernels against their specification (lopt.cpu_kernels).


def _float32_grid():
    """float32 values over the whole range: every exponent, a few mantissas, both signs,
    zero, subnormals, infinities and NaN."""
    magnitudes = np.ldexp(np.float32(1.0) + np.linspace(0, 1, 37, endpoint=False)[:, None],
                          np.arange(-149, 128)[None, :]).astype(np.float32).ravel()
    special = np.array([0.0, np.inf, np.nan, 1e-45, 88.7, 89.0, -103.9, -104.0], np.float32)
    values = np.concatenate([magnitudes, special])
    return np.concatenate([values, -values])


def _ulps(actual, exact):
    """|actual − exact| in units of float32 spacing at the exact value."""
    exact32 = exact.astype(np.float32)
    return np.abs(actual.astype(np.float64) - exact) / np.spacing(np.abs(exact32))


def test_cpu_exp_and_log_are_within_an_ulp_of_exact_and_agree_with_jnp():
    """Where input and result are normal floats: the kernel within 1 ulp of the exact value
    (chosen statically or traced), `jnp` within 5 (so the two within 6); elsewhere (zero,
    subnormals, which XLA's CPU backend flushes to zero, overflow, infinities, NaN) equal."""
    x = _float32_grid()
    tiny, largest = np.finfo(np.float32).tiny, np.finfo(np.float32).max
    select = jax.jit(lambda x, is_exp: cpu_kernels.exp_or_log(x, is_exp))  # traced choice
    for is_exp in (True, False):
        with np.errstate(all="ignore"):
            wide = x.astype(np.float64)
            exact = np.exp(wide) if is_exp else np.log(np.abs(wide))
        plain = np.asarray(jnp.exp(x) if is_exp else jnp.log(jnp.abs(x)))
        normal = (np.abs(x) >= tiny) & (np.abs(exact) >= tiny) & (np.abs(exact) <= largest)
        assert _ulps(plain[normal], exact[normal]).max() <= 5.0, is_exp
        for kernel in (cpu_kernels.exp_or_log(jnp.asarray(x), is_exp), select(x, is_exp)):
            kernel = np.asarray(kernel)
            assert _ulps(kernel[normal], exact[normal]).max() <= 1.0, is_exp
            np.testing.assert_array_equal(kernel[~normal], plain[~normal])


def test_cpu_draws_have_the_distributions_of_jax_random():
    draws = lambda implementation: to_optax(
        "noise", 1.0, key=jax.random.key(5), implementation=implementation)  # fmt: skip
    params = {"w": jnp.zeros(200_000)}
    probabilities = (1e-3, 0.02, 0.16, 0.5, 0.84, 0.98, 0.999)
    normal_quantiles = [0.01 * statistics.NormalDist().inv_cdf(p) for p in probabilities]
    samples = {}
    for implementation in ("cpu", "plain"):
        optimizer = draws(implementation)
        values = -np.asarray(optimizer.update(params, optimizer.init(params))[0]["w"])
        np.testing.assert_allclose(np.quantile(values, probabilities), normal_quantiles,
                                   rtol=0.03, atol=2e-4, err_msg=implementation)
        samples[implementation] = values
    assert abs(np.corrcoef(samples["cpu"], samples["plain"])[0, 1]) < 0.01  # different draws
    bits, _ = cpu_kernels.hash_draws(jax.random.key(6))(0, (200_000,))
    uniform = np.asarray(bits(1), np.float64) / 2**32
    np.testing.assert_allclose(np.quantile(uniform, [0.1, 0.3, 0.5, 0.9]), [0.1, 0.3, 0.5, 0.9],
                               atol=4e-3)
    assert abs(np.corrcoef(uniform, np.asarray(bits(2), np.float64))[0, 1]) < 0.01  # sites


def test_unknown_implementation_is_rejected_with_the_allowed_values():
    with pytest.raises(ValueError, match="implementation must be one of"):
        to_optax("g", 0.1, implementation="gpu")
