"""Per-step time of compiled rules against their hand-written counterparts (target ≤ 1.05).

    python -m benchmarks.compiled_rule

Compares, on a ~1M-parameter pytree in float32, one jitted optimizer step (update and apply,
buffers donated) of
  - `to_optax(parse("adam"), lr)` against `optax.adam(lr, eps=1e-8)`;
  - `lopt.powersign(lr)` against a hand-written jitted PowerSign (EMA m, p -= lr·g·e^{sg·sm});
  - `to_optax` of rules that use exp, drop and noise with the default implementation (on a
    CPU, `lopt.cpu_kernels`) against the plain specification (`implementation="plain"`): the
    measured benefit that chooses the CPU kernels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

import lopt
from benchmarks.timing import median_seconds

LEARNING_RATE = 1e-3
# Rules whose exp, drop or noise run as CPU kernels by default on a CPU.
KERNEL_RULES = {"powersign": "g * exp(sign(g) * sign(m))",
                "powersign_drop30": "drop(g, 0.3) * exp(sign(g) * sign(m))",
                "m_plus_noise": "m + noise"}
SHAPES = {"conv": (3, 3, 64, 128), "dense": (512, 1024), "head": (1024, 384), "bias": (384,)}


def _tree(key):
    keys = jax.random.split(key, len(SHAPES))
    return {
        name: jax.random.normal(k, shape)
        for (name, shape), k in zip(SHAPES.items(), keys, strict=True)
    }


def optax_step(optimizer):
    """A jitted step (params, state, grads) -> (params, state) for an optax optimizer."""

    def step(params, state, grads):
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1)), optimizer.init


def handwritten_powersign_step(learning_rate, beta=0.9):
    """PowerSign written directly: m ← βm + (1−β)g; p ← p − lr·g·exp(sign(g)·sign(m))."""

    def step(params, momentum, grads):
        momentum = jax.tree.map(lambda m, g: beta * m + (1 - beta) * g, momentum, grads)
        params = jax.tree.map(
            lambda p, g, m: p - learning_rate * g * jnp.exp(jnp.sign(g) * jnp.sign(m)),
            params,
            grads,
            momentum,
        )
        return params, momentum

    return jax.jit(step, donate_argnums=(0, 1)), lambda params: jax.tree.map(jnp.zeros_like, params)


def _runner(step_and_init, grads):
    """A thunk that advances its own (params, state) by one step per call."""
    step, init = step_and_init
    params = _tree(jax.random.key(0))
    carry = [params, init(params)]

    def run():
        carry[0], carry[1] = step(carry[0], carry[1], grads)
        return carry[0]

    return run


def main():
    grads = _tree(jax.random.key(1))
    num_params = sum(leaf.size for leaf in jax.tree.leaves(grads))
    candidates = {
        "lopt adam": optax_step(lopt.rules.to_optax(lopt.rules.parse("adam"), LEARNING_RATE)),
        "optax.adam": optax_step(optax.adam(LEARNING_RATE, eps=1e-8)),
        "lopt.powersign": optax_step(lopt.powersign(LEARNING_RATE)),
        "hand-written PowerSign": handwritten_powersign_step(LEARNING_RATE),
    }
    for name, text in KERNEL_RULES.items():
        for implementation in (None, "plain"):
            optimizer = lopt.rules.to_optax(text, LEARNING_RATE, key=jax.random.key(0),
                                            implementation=implementation)  # fmt: skip
            candidates[f"{name} {implementation or 'default'}"] = optax_step(optimizer)
    times = median_seconds({name: _runner(pair, grads) for name, pair in candidates.items()})
    print(f"{num_params:,} parameters, float32, {jax.devices()[0].device_kind}")
    for name, seconds in times.items():
        print(f"  {name:24s} {seconds * 1e3:8.3f} ms/step")
    adam_ratio = times["lopt adam"] / times["optax.adam"]
    powersign_ratio = times["lopt.powersign"] / times["hand-written PowerSign"]
    print(f"ratio to_optax(parse('adam')) / optax.adam:   {adam_ratio:.3f}  (target <= 1.05)")
    print(f"ratio lopt.powersign / hand-written PowerSign: {powersign_ratio:.3f}  (target <= 1.05)")
    for name in KERNEL_RULES:
        ratio = times[f"{name} plain"] / times[f"{name} default"]
        print(f"ratio plain / default implementation, {name}: {ratio:.3f}")


if __name__ == "__main__":
    main()
