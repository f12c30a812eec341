"""The population interpreter: equal to to_optax member by member, and no recompilation, with
the CPU kernels (the default on a CPU) and with the plain specification."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.rules import (
    LIBRARY,
    advance,
    encode,
    from_tokens,
    init_state,
    interpret,
    interpreter,
    random_tokens,
    to_optax,
)

POPULATION = 100
DEPTH = 3
NUM_STEPS = 3
LEARNING_RATE = 0.1
SHAPES = {"kernel": (2, 3), "bias": (4,)}
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def _random_rules(count: int, seed: int) -> list:
    """`count` random rules of depths 1 to DEPTH, sampled under the paper's constraints."""
    keys = jax.random.split(jax.random.key(seed), count)
    depths = [1 + index % DEPTH for index in range(count)]
    sample = jax.jit(random_tokens, static_argnums=1)
    return [from_tokens(sample(key, depth), depth) for key, depth in zip(keys, depths, strict=True)]


def _stack(trees):
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


@pytest.fixture(scope="module")
def setting():
    """Rules (the library plus random ones), member params, per-step grads and member keys."""
    rules = list(LIBRARY.values())
    rules += _random_rules(POPULATION - len(rules), seed=0)
    rng = np.random.default_rng(0)

    def member_tree(low, high):  # elements of mixed scales 10**low .. 10**high
        return {
            name: jnp.asarray(
                rng.normal(size=(POPULATION, *shape)) * 10 ** rng.uniform(low, high),
                jnp.float32,
            )
            for name, shape in SHAPES.items()
        }

    params = member_tree(0, 0)
    grads = [member_tree(-2, 0.3) for _ in range(NUM_STEPS)]
    keys = jax.random.split(jax.random.key(1), POPULATION)
    return rules, params, grads, keys


def _member(tree, index):
    return jax.tree.map(lambda leaf: leaf[index], tree)


def _interpreter_inputs(params, grads, keys):
    """This step's moments and keys for every member, all moving averages tracked."""
    state = jax.vmap(lambda p, k: init_state(p, key=k))(params, keys)
    step = jax.jit(jax.vmap(advance))
    for grad in grads:
        state, moments, step_keys = step(state, grad)
    return moments, step_keys


@pytest.mark.parametrize("implementation", [None, "plain"])
def test_interpreter_equals_to_optax_for_every_member(setting, implementation):
    rules, params, grads, keys = setting
    moments, step_keys = _interpreter_inputs(params, grads, keys)
    directions = interpret(encode(rules, DEPTH), moments, params, step_keys,
                           implementation=implementation)
    for index, rule in enumerate(rules):
        optimizer = to_optax(rule, LEARNING_RATE, key=keys[index], implementation=implementation)
        member_params = _member(params, index)
        state = optimizer.init(member_params)
        for grad in grads:
            updates, state = optimizer.update(_member(grad, index), state, member_params)
        for name in SHAPES:
            np.testing.assert_allclose(
                -LEARNING_RATE * directions[name][index],
                updates[name],
                rtol=1e-4,  # eager to_optax vs one fused program: a few ulps, grown by exp
                atol=1e-7,
                err_msg=f"member {index}: {rule}",
            )


def test_noise_drawn_for_its_readers_equals_noise_drawn_inline(setting, monkeypatch):
    """Small populations draw noise only for the members that read it, in a loop before the
    rule; above `BUFFER_BYTES` every member draws it inline. Both give the same values."""
    rules, params, grads, keys = setting
    moments, step_keys = _interpreter_inputs(params, grads, keys)
    codes = encode(rules, DEPTH)
    assert any("noise" in str(rule) for rule in rules)
    run = lambda: jax.jit(lambda *args: interpreter.interpret.__wrapped__(*args))(
        codes, moments, params, step_keys)  # fmt: skip
    in_loop = run()
    monkeypatch.setattr(interpreter, "BUFFER_BYTES", 0)
    inline = run()
    for name in SHAPES:
        np.testing.assert_array_equal(in_loop[name], inline[name])


@pytest.mark.parametrize("implementation", [None, "plain"])
def test_new_population_of_the_same_shape_compiles_nothing(setting, implementation):
    _, params, grads, keys = setting
    moments, step_keys = _interpreter_inputs(params, grads, keys)
    run = lambda codes, eps=1e-8: interpret(codes, moments, params, step_keys, eps,
                                            implementation=implementation)  # fmt: skip
    first = encode(_random_rules(POPULATION, seed=1), DEPTH)
    jax.block_until_ready(run(first))
    cached = interpret._cache_size()
    compiles = []
    listener = lambda event, duration, **kwargs: compiles.append(event == COMPILE_EVENT)
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        second = encode(_random_rules(POPULATION, seed=2), DEPTH)
        assert not np.array_equal(first, second)
        jax.block_until_ready(run(second))
        jax.block_until_ready(run(second, eps=1e-3))  # eps is traced
        new_population_compiles = sum(compiles)
        jax.jit(lambda x: x + 1)(jnp.ones(7))  # the listener does see a compilation
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert new_population_compiles == 0
    assert sum(compiles) >= 1
    assert interpret._cache_size() == cached


def test_encode_pads_and_validates():
    codes = encode([LIBRARY["adam"], LIBRARY["powersign"]])
    assert codes.shape == (2, 10) and codes.dtype == jnp.int32
    assert from_tokens(codes[0], 2) == LIBRARY["adam"]
    with pytest.raises(ValueError, match="more than depth=2"):
        encode([LIBRARY["addsign"]], depth=2)
