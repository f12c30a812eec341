"""Tune a found rule with optax's usual tools: a learning-rate sweep under one jit and vmap."""
import jax
import jax.numpy as jnp
import optax

import lopt

inputs = jax.random.normal(jax.random.key(0), (200, 5))
targets = inputs @ jnp.arange(1.0, 6.0)


def loss(weights):
    return jnp.mean((inputs @ weights - targets) ** 2)


def final_loss(learning_rate, num_steps=100):
    # Any rule text or LIBRARY name; every numeric setting may be injected (and traced).
    opt = optax.inject_hyperparams(lopt.rules.to_optax)(
        rule="adam * exp(sign(g) * sign(m))", learning_rate=learning_rate, b1=0.9)
    weights = jnp.zeros(5)

    def step(carry, _):
        weights, state = carry
        updates, state = opt.update(jax.grad(loss)(weights), state, weights)
        return (optax.apply_updates(weights, updates), state), None

    (weights, _), _ = jax.lax.scan(step, (weights, opt.init(weights)), length=num_steps)
    return loss(weights)


learning_rates = jnp.array([1e-3, 1e-2, 1e-1, 1.0])
losses = jax.jit(jax.vmap(final_loss))(learning_rates)  # one compilation for the whole sweep
if __name__ == "__main__":
    for rate, value in zip(learning_rates, losses, strict=True):
        print(f"learning rate {float(rate):g}: final loss {float(value):.4g}")
