"""Functional fingerprints of update rules, for de-duplicating a search (as AutoML-Zero does),
and the detection of degenerate rules, which a search scores without training.

A rule's direction is a pure function of this step's inputs (g, m̂, v̂, γ̂, w and the step's
random key), so two rules that agree on a fixed set of random probe inputs almost surely
compute the same function: `a * b` and `b * a`, `g` and `-(-g)`, `g / one`-like identities.
The fingerprint is a hash of a rule's outputs on `NUM_PROBES` probe points, rounded to
`SIGNIFICANT_DIGITS` significant digits (non-finite outputs map to fixed markers), computed for
a whole population in one interpreter call, so fingerprinting never compiles per rule.

A rule is degenerate (`DEGENERACIES`) when, on probe inputs like those of training, its
direction is non-finite somewhere, zero everywhere, the same number everywhere, or unchanged
when the gradient history is redrawn with the weights and random draws kept: such a rule
cannot train a child (`1e-3*w`, `noise`, `sign(g2)`, `log(g - g)`). The inputs of those tests
are the moments after `HISTORY_STEPS` steps of random gradients (sizes from 1e-4 to 1, a
per-element drift) through `lopt.rules.advance`, so that m̂, v̂, γ̂ and g are consistent (|m̂|
about √v̂ or less, as in training). The fingerprint's independent draws are not: there
m̂ / √v̂ reaches 10⁴, and `exp(adam)` or `drop(m, 0.1) * exp(g3)` (Table 1 of the paper)
would overflow. `probe` computes the fingerprints and the degeneracies of a population in one
interpreter call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lopt import rules as rules_lib

NUM_PROBES = 64
SIGNIFICANT_DIGITS = 5
DEGENERACIES = ("", "non-finite", "zero", "constant", "gradient-independent")
HISTORY_STEPS = 10
# Populations are padded to a multiple of this many rules, so that a search's batches, its
# baselines and small lists of rules share one compiled probe program.
PROBE_CHUNK = 64
_PROBE_SEED = 20170704
_HISTORY_SEEDS = (_PROBE_SEED + 2, _PROBE_SEED + 3)


class Probes(NamedTuple):
    """fingerprints: P strings (16 hex digits); degeneracy: int32 [P], an index into
    `DEGENERACIES` (0: healthy)."""

    fingerprints: list[str]
    degeneracy: np.ndarray


def _probe_inputs(num_rules: int):
    """Fixed probe moments, params and keys, broadcast to `num_rules` members."""
    keys = jax.random.split(jax.random.key(_PROBE_SEED), 6)
    scale = jnp.exp(jax.random.uniform(keys[0], (NUM_PROBES,), minval=-4.0, maxval=1.0))
    grad = scale * jax.random.normal(keys[1], (NUM_PROBES,))
    m = scale * jax.random.normal(keys[2], (NUM_PROBES,))
    v = (scale * jax.random.normal(keys[3], (NUM_PROBES,))) ** 2
    gamma = (scale * jax.random.normal(keys[4], (NUM_PROBES,))) ** 3
    params = jax.random.normal(keys[5], (NUM_PROBES,))
    broadcast = lambda x: jnp.broadcast_to(x, (num_rules, *x.shape))
    moments = rules_lib.Moments(*map(broadcast, (grad, m, v, gamma)))
    step_keys = jnp.broadcast_to(jax.random.key(_PROBE_SEED + 1), (num_rules,))
    return moments, broadcast(params), step_keys


def _history_inputs(num_rules: int, seed: int):
    """`_probe_inputs` with the moments after `HISTORY_STEPS` steps of gradients drawn from
    `seed`: per element, size e^u (u uniform in [ln 1e-4, 0]) times (drift + N(0, 1)), with
    drift ~ N(0, 1/4) fixed over the steps."""
    _, params, step_keys = _probe_inputs(num_rules)
    keys = jax.random.split(jax.random.key(seed), 3)
    scale = jnp.exp(jax.random.uniform(keys[0], (NUM_PROBES,), minval=jnp.log(1e-4),
                                       maxval=0.0))
    drift = 0.5 * jax.random.normal(keys[1], (NUM_PROBES,))
    grads = scale * (drift + jax.random.normal(keys[2], (HISTORY_STEPS, NUM_PROBES)))
    step = lambda state, grad: (rules_lib.advance(state, grad)[0], None)
    state, _ = jax.lax.scan(step, rules_lib.init_state(grads[0]), grads[:-1])
    _, history, _ = rules_lib.advance(state, grads[-1])
    broadcast = lambda x: jnp.broadcast_to(x, (num_rules, *x.shape))
    return jax.tree.map(broadcast, history), params, step_keys


@jax.jit
def _probe_all(codes: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(fingerprint probe outputs [P, NUM_PROBES], degeneracy int32 [P]) in one interpreter
    call over the three probe sets."""
    num_rules = codes.shape[0]
    sets = [_probe_inputs(num_rules)] + [_history_inputs(num_rules, seed)
                                         for seed in _HISTORY_SEEDS]
    stacked = jax.tree.map(lambda *leaves: jnp.concatenate(leaves), *sets)
    outputs = rules_lib.interpret(jnp.tile(codes, (3, 1)), *stacked).reshape(3, num_rules, -1)
    return outputs[0], degeneracy(outputs[1], outputs[2])


def degeneracy(outputs: jax.Array, redrawn: jax.Array) -> jax.Array:
    """Why each rule is degenerate, an index into `DEGENERACIES` (0: it is not; the first
    reason that applies).

    Args:
      outputs: [P, K] directions of P rules on K probe points.
      redrawn: [P, K] the same rules' directions with the gradient inputs (g, m̂, v̂, γ̂)
        redrawn and the weights and random draws kept.

    Returns:
      int32 [P].
    """
    reasons = jnp.stack([
        ~(jnp.isfinite(outputs).all(axis=1) & jnp.isfinite(redrawn).all(axis=1)),
        (outputs == 0).all(axis=1),
        (outputs == outputs[:, :1]).all(axis=1),
        (outputs == redrawn).all(axis=1),
    ])
    return jnp.where(reasons.any(axis=0), jnp.argmax(reasons, axis=0) + 1, 0).astype(jnp.int32)


def _digest(outputs: np.ndarray) -> str:
    finite = np.isfinite(outputs)
    rounded = np.where(finite, outputs, 0.0).astype(np.float64)
    rounded = np.array([float(f"{x:.{SIGNIFICANT_DIGITS - 1}e}") for x in rounded]) + 0.0
    markers = np.where(np.isnan(outputs), 1, np.where(np.isposinf(outputs), 2,
                                                      np.where(np.isneginf(outputs), 3, 0)))
    payload = rounded.tobytes() + markers.astype(np.int8).tobytes()
    return hashlib.sha1(payload).hexdigest()[:16]


def probe(codes: jax.Array) -> Probes:
    """Fingerprints and degeneracies of an encoded population, codes [P, 5·D]."""
    num_rules = codes.shape[0]
    padding = -num_rules % PROBE_CHUNK
    codes = jnp.concatenate([codes, jnp.broadcast_to(codes[:1], (padding, codes.shape[1]))])
    outputs, reasons = _probe_all(codes)
    outputs = np.asarray(outputs[:num_rules], np.float32)
    return Probes([_digest(row) for row in outputs], np.asarray(reasons[:num_rules]))


def fingerprints(codes: jax.Array) -> list[str]:
    """Fingerprints (16 hex digits) of an encoded population, codes [P, 5·D]."""
    return probe(codes).fingerprints


def fingerprint_rules(rules: Sequence[rules_lib.Rule]) -> list[str]:
    """Fingerprints of a list of Rules."""
    return fingerprints(rules_lib.encode(list(rules)))
