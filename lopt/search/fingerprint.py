"""Functional fingerprints of update rules, for de-duplicating a search (as AutoML-Zero does).

A rule's direction is a pure function of this step's inputs (g, m̂, v̂, γ̂, w and the step's
random key), so two rules that agree on a fixed set of random probe inputs almost surely
compute the same function: `a * b` and `b * a`, `g` and `-(-g)`, `g / one`-like identities.
The fingerprint is a hash of a rule's outputs on `NUM_PROBES` probe points, rounded to
`SIGNIFICANT_DIGITS` significant digits (non-finite outputs map to fixed markers), computed for
a whole population in one interpreter call, so fingerprinting never compiles per rule.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lopt import rules as rules_lib

NUM_PROBES = 64
SIGNIFICANT_DIGITS = 5
_PROBE_SEED = 20170704


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


@jax.jit
def probe_outputs(codes: jax.Array) -> jax.Array:
    """Every rule's direction on the probe inputs: codes [P, 5·D] -> [P, NUM_PROBES]."""
    moments, params, keys = _probe_inputs(codes.shape[0])
    return rules_lib.interpret(codes, moments, params, keys)


def _digest(outputs: np.ndarray) -> str:
    finite = np.isfinite(outputs)
    rounded = np.where(finite, outputs, 0.0).astype(np.float64)
    rounded = np.array([float(f"{x:.{SIGNIFICANT_DIGITS - 1}e}") for x in rounded]) + 0.0
    markers = np.where(np.isnan(outputs), 1, np.where(np.isposinf(outputs), 2,
                                                      np.where(np.isneginf(outputs), 3, 0)))
    payload = rounded.tobytes() + markers.astype(np.int8).tobytes()
    return hashlib.sha1(payload).hexdigest()[:16]


def fingerprints(codes: jax.Array) -> list[str]:
    """Fingerprints (16 hex digits) of an encoded population, codes [P, 5·D]."""
    outputs = np.asarray(probe_outputs(codes), np.float32)
    return [_digest(row) for row in outputs]


def fingerprint_rules(rules: Sequence[rules_lib.Rule]) -> list[str]:
    """Fingerprints of a list of Rules."""
    return fingerprints(rules_lib.encode(list(rules)))
