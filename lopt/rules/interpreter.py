"""Evaluating a population of different rules in one compiled program.

A population is an int32 array `codes [P, 5·D]`: row p is member p's token program (the
canonical token form of `lopt.rules.tokens` in the full vocabulary), shorter rules padded to
the common depth D with keep-left levels. `interpret` evaluates every member in one program
whose token ids are data: each token position picks among the small tables of operands, unary
and binary functions, either with `lax.select_n` inside one `jax.vmap` (the default) or with
`lax.switch` inside `lax.map`. The compiled program depends only on (P, D) and the shapes of
the moments, so a new population of the same shape runs without compiling anything.

It shares its evaluation code with `to_optax` (`lopt.rules.semantics.evaluate`), so member p's
direction equals what `to_optax(rule_p, ...)` computes from the same moments, parameters and
step key, random draws included.

Cost: under "select" every member computes every table entry (all operands, all eleven unary
functions including the random draws of `drop` and `noise`), so on a CPU, where elementwise
work is compute-bound, a member costs several times a compiled cheap rule; on accelerators the
step is memory-bound and the extra arithmetic is nearly free. "switch" computes only each
member's own operations but pays a fixed overhead per member and loop iteration.
`benchmarks/interpreter.py` prints both against compiled rules.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lopt.rules.expression import Rule
from lopt.rules.semantics import Moments, choose_selected, choose_switched, evaluate
from lopt.rules.tokens import to_tokens


def encode(rules: Sequence[Rule], depth: int | None = None) -> jax.Array:
    """Encodes rules as one padded int32 array.

    Args:
      rules: the population.
      depth: number of levels; None gives the deepest rule's depth.

    Returns:
      int32 [len(rules), 5·depth].

    Raises:
      ValueError: if a rule needs more than `depth` levels.

    Example:
      >>> encode([parse("adam"), parse("g * exp(sign(g) * sign(m))")]).shape
      (2, 10)
    """
    if depth is None:
        depth = max(len(to_tokens(rule)) for rule in rules) // 5
    return jnp.asarray(np.array([to_tokens(rule, depth) for rule in rules], dtype=np.int32))


@functools.partial(jax.jit, static_argnames="branching")
def interpret(
    codes: jax.Array, moments: Moments, params: Any, key: jax.Array, branching: str = "select"
) -> Any:
    """Every member's rule value d_p (a descent direction: Δw_p = −lr · d_p).

    Args:
      codes: int32 [P, 5·D] from `encode`.
      moments: bias-corrected `Moments` (all four fields) whose leaves have a leading axis P,
        e.g. from `jax.vmap(lopt.rules.advance)` over the members' `RuleState`s.
      params: pytree of member parameters with a leading axis P.
      key: P keys, one per member (this step's keys, e.g. from `advance`).
      branching: "select" (default) evaluates all members in one `jax.vmap`, every member
        computing every table entry and `lax.select_n` picking its own: the right choice on
        accelerators and for small members. "switch" loops over members with `lax.map` and
        `lax.switch`, so each member computes only its own operations: cheaper on CPU when
        members are large (see `benchmarks/interpreter.py`). Both give the same values.

    Returns:
      A pytree like `moments.grad` ([P, ...] leaves).

    Example:
      >>> directions = interpret(encode(rules), moments, params, jax.random.split(key, len(rules)))
    """
    if branching not in _CHOOSERS:
        raise ValueError(f"branching must be one of {tuple(_CHOOSERS)}, got {branching!r}")
    member = lambda args: evaluate(*args, _CHOOSERS[branching])
    members = (codes, moments, params, key)
    return jax.vmap(member)(members) if branching == "select" else jax.lax.map(member, members)


_CHOOSERS = {"select": choose_selected, "switch": choose_switched}
