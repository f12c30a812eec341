"""Evaluating a population of different rules in one compiled program.

A population is an int32 array `codes [P, 5·D]`: row p is member p's token program (the
canonical token form of `lopt.rules.tokens` in the full vocabulary), shorter rules padded to
the common depth D with keep-left levels. `interpret` evaluates every member inside one
`jax.vmap`: each token position selects among the operands and the few unary and binary
formulas with `lax.select_n` (their constants read from per-token tables), so the compiled
program depends only on (P, D) and the shapes of the moments, and a new population of the
same shape runs without compiling anything.

It shares its evaluation code with `to_optax` (`lopt.rules.semantics.evaluate`), so member p's
direction equals what `to_optax(rule_p, ...)` computes from the same moments, parameters and
step key, random draws included, given the same `implementation` (`lopt.cpu_kernels`: the
design below was measured on a CPU, where the CPU kernels run by default).

Why every member computes every formula: XLA then fuses the rule, `adam`, `rmsprop` and the
parameter update of the whole population into one elementwise loop (the moving averages are
three more) that it splits over the CPU's threads; its arithmetic makes a member cost a few
times a compiled rule. Designs that run only the formulas a member needs all put a loop or a
conditional in the way of that fusion, and were slower on a CPU at 4,096 and 65,536 parameters
per member (docs/decisions.md):
  - a `lax.map` over members whose body applies `lax.switch` on the member's own (unbatched)
    tokens: every switch writes its result to memory, the loop keeps the bias-corrected moments
    and the directions out of the update's loop, and its kernels run one member at a time
    (`benchmarks/interpreter.py` times it beside `interpret`);
  - a `lax.map` over chunks of members, with or without a conditional per chunk that skips
    exp, log, noise and drop when no member of the chunk needs them;
  - computing exp and log|x| or drop's keep masks beforehand, only for the (member, slot) pairs
    that apply them, and gathering them in the main loop;
  - choosing among formulas by indexing a stack of them, which XLA emits as a branch: LLVM
    cannot unswitch a loop with that many branches, and does not vectorise it.
The one exception is the noise operand, the costliest (a hash, a logarithm, a square root and
two polynomials per element): it is drawn beforehand only for the members that read it
(`_for_members_that_need`: a loop over chunks of `CHUNK` members, as many steps as there are
readers), and the main loop gathers each member's row; a population whose buffer would exceed
`BUFFER_BYTES` draws it inline instead (see there). XLA does not fuse an expensive operation
(a quotient, a square root) into a loop that reads its result more than once, so the formulas
avoid quotients that several slots read.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lopt.rules.expression import OPERANDS, Rule
from lopt.rules.semantics import Moments, choose_selected, draw_noise, evaluate
from lopt.rules.tokens import TOKENS_PER_LEVEL, to_tokens

# Members per step of the loops that compute an expensive value only for the members that
# read it.
CHUNK = 16
# Largest buffer (bytes, all leaves) that such a loop fills. XLA's CPU backend allocates a
# program's temporary buffers afresh for every call, and glibc maps allocations above 32 MiB
# from the kernel each time: at 256 members x 65,536 parameters the 64 MiB noise buffer cost
# 24 ms of page faults per step (system time), more than the draws it saved (28 ms).
# Larger populations draw noise inline, for every member.
BUFFER_BYTES = 16 * 2**20
_NOISE = OPERANDS.index("noise")


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
        depth = max(len(to_tokens(rule)) for rule in rules) // TOKENS_PER_LEVEL
    return jnp.asarray(np.array([to_tokens(rule, depth) for rule in rules], dtype=np.int32))


@functools.partial(jax.jit, static_argnames="implementation")
def interpret(
    codes: jax.Array,
    moments: Moments,
    params: Any,
    key: jax.Array,
    eps: float | jax.Array = 1e-8,
    *,
    implementation: str | None = None,
) -> Any:
    """Every member's rule value d_p (a descent direction: Δw_p = −lr · d_p).

    Args:
      codes: int32 [P, 5·D] from `encode`.
      moments: bias-corrected `Moments` (all four fields) whose leaves have a leading axis P,
        e.g. from `jax.vmap(lopt.rules.advance)` over the members' `RuleState`s.
      params: pytree of member parameters with a leading axis P.
      key: P keys, one per member (this step's keys, e.g. from `advance`).
      eps: ε of `adam`, `rmsprop` and `x / y` (traced: changing it compiles nothing).
      implementation: "plain", "cpu" or None (by the backend); see `lopt.cpu_kernels`.

    Returns:
      A pytree like `moments.grad` ([P, ...] leaves).

    Example:
      >>> directions = interpret(encode(rules), moments, params, jax.random.split(key, len(rules)))
    """
    levels = codes.reshape(codes.shape[0], -1, TOKENS_PER_LEVEL)
    noise = None
    if sum(leaf.nbytes for leaf in jax.tree.leaves(moments.grad)) <= BUFFER_BYTES:
        noise = _for_members_that_need(
            jnp.any(levels[:, :, :2] == _NOISE, axis=(1, 2)),
            lambda rows: jax.vmap(
                functools.partial(draw_noise, implementation=implementation), (0, None)
            )(key[rows], _row_shapes(moments.grad)),
            moments.grad,
        )
    member = lambda *args: evaluate(*args[:4], choose_selected, noise=args[4], eps=eps,
                                    implementation=implementation)
    return jax.vmap(member)(codes, moments, params, key, noise)


def _row_shapes(tree: Any) -> Any:
    return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype), tree)


def _for_members_that_need(need: jax.Array, compute, like: Any) -> Any:
    """compute(rows) for the rows where `need`, in loop steps of `CHUNK` members that run
    only as often as the number of such members requires; a pytree like `like` whose other
    rows hold arbitrary values.

    `compute` maps int32 [CHUNK] row indices to a pytree like `like` with CHUNK rows.
    """
    size = need.shape[0]
    padded = -(-size // CHUNK) * CHUNK
    order = jnp.argsort(~need, stable=True).astype(jnp.int32)  # the members that need it first
    order = jnp.concatenate([order, jnp.zeros([padded - size], jnp.int32)])
    # Rows that are not computed all read row 0, which stays in cache.
    position = jnp.where(need, jnp.argsort(order[:size]), 0).astype(jnp.int32)

    def chunk(index, values):
        rows = jax.lax.dynamic_slice_in_dim(order, index * CHUNK, CHUNK)
        update = lambda buffer, new: jax.lax.dynamic_update_slice_in_dim(
            buffer, new, index * CHUNK, 0)  # fmt: skip
        return jax.tree.map(update, values, compute(rows))

    empty = jax.tree.map(lambda leaf: jnp.zeros((padded, *leaf.shape[1:]), leaf.dtype), like)
    steps = (jnp.sum(need, dtype=jnp.int32) + CHUNK - 1) // CHUNK
    values = jax.lax.fori_loop(0, steps, chunk, empty)
    return jax.tree.map(lambda leaf: leaf[position], values)
