"""`lopt.rules.DISCOVERED`: the shipped rules, their provenance, and their use as optimizers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt import rules


def test_the_shipped_rules_and_their_provenance_agree():
    provenance = rules.discovered.provenance()
    entries = provenance["rules"]
    assert entries, "lopt/rules/discovered.json ships no rules"
    assert list(rules.DISCOVERED) == [entry["name"] for entry in entries]
    assert "--which=nos_suite" in provenance["command"] and isinstance(provenance["seed"], int)
    assert len(provenance["suite"]) >= 3 and len(provenance["held_out"]) >= 2
    selection = [entry["scores"]["selection"] for entry in entries]
    assert selection == sorted(selection, reverse=True)  # best first on the selection seeds
    for entry in entries:
        rule = rules.DISCOVERED[entry["name"]]
        assert str(rule) == entry["rule"]


def _train(optimizer, loss, params, steps=200):
    """`steps` of `optimizer` on `loss` from `params`, jitted, in a lax.scan."""
    def step(carry, _):
        params, state = carry
        updates, state = optimizer.update(jax.grad(loss)(params), state, params)
        return (optax.apply_updates(params, updates), state), None
    (params, _), _ = jax.jit(lambda p: jax.lax.scan(step, (p, optimizer.init(p)), None,
                                                    length=steps))(params)
    return params


def test_every_discovered_rule_trains_under_jit_scan_and_chain():
    # A convex quadratic; each rule, clipped like a user's would be, must lower it from the
    # same start inside jit and lax.scan.
    target = jnp.linspace(-1.0, 1.0, 16)
    loss = lambda params: 0.5 * jnp.sum((params - target) ** 2)
    for name, rule in rules.DISCOVERED.items():
        optimizer = optax.chain(optax.clip_by_global_norm(10.0),
                                rules.to_optax(rule, 1e-2, key=jax.random.key(0)))
        final = _train(optimizer, loss, jnp.zeros(16))
        assert np.isfinite(final).all() and loss(final) < 0.5 * loss(jnp.zeros(16)), name
