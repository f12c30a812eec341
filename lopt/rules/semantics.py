"""What rules compute: moment estimates, operands, unary and binary functions, randomness.

This module is the specification, written in plain `jnp`, `jax.random` and optax helpers. On a
CPU, exp, log|x| and the random draws run as the kernels of `lopt.cpu_kernels` instead, which
agree with it to a few ulps (exp, log) or in distribution (the draws); the `implementation`
argument of `evaluate` and `draw_noise` chooses ("plain", "cpu" or None: by the backend).

Conventions (Bello et al., 2017, section 4.2), written once here; b1, b2, b3 and eps are
arguments whose defaults are the paper's:
- m̂, v̂, γ̂ are bias-corrected exponential moving averages of g, g², g³ with decays b1 = 0.9,
  b2 = b3 = 0.999 (`update_moment`, `optax.tree.bias_correction`): after t updates
  m = b1·m + (1 − b1)·g and m̂ = m / (1 − b1^t); the EMAs live in the parameters' dtype and the
  arithmetic happens in the gradients' dtype, as in optax.
- `adam` = m̂ / (√v̂ + ε), `rmsprop` = g / (√v̂ + ε) with the same v̂; ε = eps = 1e-8 (computed
  as m̂ · (1 / (√v̂ + ε)), within two ulps of the quotient: a product, unlike a quotient, XLA
  fuses into the interpreter's loop, which saves three passes over memory per step);
  `x / y` = x / (y + ε); `log(x)` = log|x|; `clip(x, l)` clips to [−l, l].
- `noise` is N(0, 0.01²) per element, drawn afresh each step in float32 and cast to the
  gradients' dtype.
- `drop(x, p)` keeps each element with probability 1 − p and zeroes it otherwise, without
  rescaling (the paper's definition, unlike dropout): it keeps an element when its 32 random
  bits are at least ⌈p·2³²⌉.
- Random draws are tied to the program, not to the text: a draw's site is 0 for `noise`
  (drawn once per leaf and step) or 1 + 2·level + slot for a `drop` in unary slot `slot` (0
  for u1, 1 for u2) of level `level`. Draw `site` on leaf `leaf` (its index among the
  flattened leaves) of the step with key k takes its bits (`jax.random.bits`) or normal values
  (`jax.random.normal`) from the key fold_in(fold_in(k, leaf), site).
- The parameter update is Δw = −lr · rule: rules give a descent direction.

Evaluation runs a rule's token program (`lopt.rules.tokens`) level by level on each leaf of
the parameter pytree. One function, `evaluate`, serves `to_optax` (token ids are Python ints
and `choose_static` traces one branch) and the population interpreter (token ids are traced
and `choose_selected` computes every branch and selects), so they agree by construction.
Tokens are read as a few numbers each (`_UNARY_ROWS`, `_BINARY_ROWS`): identity, −x, clip and
drop are one formula, where(bits ≥ threshold, clip(sign·x, −bound, bound), 0), so the
interpreter selects among four unary results (that formula, exp, log|x|, sign) and four
binary ones (x ± y, x·y, x / (y + ε), keep-left), and the four scaled weights are one operand.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Collection, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt import cpu_kernels
from lopt.cpu_kernels import LeafDraws
from lopt.rules.expression import OPERANDS, WEIGHT_OPERANDS, WEIGHT_SCALES, Rule, operand_names
from lopt.rules.tokens import BINARY_TOKENS, TOKENS_PER_LEVEL, UNARY_TOKENS

NOISE_SCALE = 0.01
NOISE_SITE = 0
MOMENT_NAMES = ("m", "v", "gamma")
_MOMENTS_OF_OPERAND = {"m": {"m"}, "v": {"v"}, "gamma": {"gamma"}, "adam": {"m", "v"},
                       "rmsprop": {"v"}}  # fmt: skip

Choose = Callable[[Any, Sequence[Callable[[], jax.Array]]], jax.Array]


class Moments(NamedTuple):
    """A rule's inputs at one step; each field is a pytree like the params (None if unused).

    `m`, `v`, `gamma` are the bias-corrected m̂, v̂, γ̂.
    """

    grad: Any
    m: Any = None
    v: Any = None
    gamma: Any = None


class RuleState(NamedTuple):
    """Optimizer state of a rule: only what the rule reads is stored, the rest is None.

    Attributes:
      count: int32 number of updates so far (None when the rule uses no moving average).
      m, v, gamma: raw (not bias-corrected) EMAs of g, g², g³, pytrees like the params.
      key: PRNG key, split on every update (None when the rule draws no random numbers).
    """

    count: jax.Array | None
    m: Any
    v: Any
    gamma: Any
    key: jax.Array | None


class Numerics(NamedTuple):
    """How exp / log|x| and the random draws are computed: the specification or CPU kernels.

    Attributes:
      exp_or_log: (x, is_exp) -> exp(x) where `is_exp` (a Python or traced bool), else log|x|.
      draws: step key -> ((leaf, shape) -> `LeafDraws`).
    """

    exp_or_log: Callable[[jax.Array, bool | jax.Array], jax.Array]
    draws: Callable[[jax.Array], Callable[[int, tuple[int, ...]], LeafDraws]]


def _exp_or_log(x: jax.Array, is_exp: bool | jax.Array) -> jax.Array:
    """The specification of `Numerics.exp_or_log`."""
    if isinstance(is_exp, bool):
        return jnp.exp(x) if is_exp else jnp.log(jnp.abs(x))
    return jnp.where(is_exp, jnp.exp(x), jnp.log(jnp.abs(x)))


def _key_draws(key: jax.Array) -> Callable[[int, tuple[int, ...]], LeafDraws]:
    """The specification of `Numerics.draws`: site keys by `fold_in` (the module docstring)."""

    def leaf_draws(leaf: int, shape: tuple[int, ...]) -> LeafDraws:
        site_key = lambda site: jax.random.fold_in(jax.random.fold_in(key, leaf), site)
        return (lambda site: jax.random.bits(site_key(site), shape, jnp.uint32),
                lambda site: jax.random.normal(site_key(site), shape, jnp.float32))

    return leaf_draws


_PLAIN = Numerics(_exp_or_log, _key_draws)
_CPU = Numerics(cpu_kernels.exp_or_log, cpu_kernels.hash_draws)


def _numerics(implementation: str | None) -> Numerics:
    """The CPU kernels where `cpu_kernels.chosen(implementation)`, else the specification."""
    return _CPU if cpu_kernels.chosen(implementation) else _PLAIN


def needed_moments(rule: Rule) -> frozenset[str]:
    """The moving averages ⊆ {"m", "v", "gamma"} that `rule` reads (adam needs m and v)."""
    names = operand_names(rule)
    return frozenset().union(*(_MOMENTS_OF_OPERAND.get(name, set()) for name in names))


def init_state(
    params: Any, moments: Collection[str] = MOMENT_NAMES, key: jax.Array | None = None
) -> RuleState:
    """A fresh `RuleState`: zero moving averages for the names in `moments`, count 0, `key`.

    Args:
      params: pytree the averages take their shapes and dtypes from.
      moments: subset of {"m", "v", "gamma"} to track; all of them (the default) for a
        population whose members read different moments.
      key: PRNG key for rules that draw random numbers, else None.

    Returns:
      A `RuleState`; `count` is None when `moments` is empty.

    Example:
      >>> states = jax.vmap(lambda p, k: init_state(p, key=k))(member_params, member_keys)
    """
    zeros = lambda name: optax.tree.zeros_like(params) if name in moments else None
    count = jnp.zeros([], jnp.int32) if moments else None
    return RuleState(count, zeros("m"), zeros("v"), zeros("gamma"), key)


def advance(
    state: RuleState, grads: Any, b1: float = 0.9, b2: float = 0.999, b3: float = 0.999
) -> tuple[RuleState, Moments, jax.Array | None]:
    """Folds this step's gradients into the moving averages and splits the key.

    With t = count + 1: m ← b1·m + (1 − b1)·g, m̂ = m / (1 − b1^t), and likewise v̂ from g²
    (b2) and γ̂ from g³ (b3); (key, step_key) = split(key).

    Args:
      state: the `RuleState` before the step.
      grads: gradient pytree.
      b1, b2, b3: decays of the moving averages of g, g², g³.

    Returns:
      (new state, this step's bias-corrected `Moments`, this step's key or None).

    Example:
      >>> state, moments, step_key = advance(state, grads)
      >>> direction = interpret(codes, moments, params, step_key)  # under jax.vmap of advance
    """
    count = None if state.count is None else optax.safe_increment(state.count)
    emas, corrected = {}, {}
    for order, (name, decay) in enumerate(zip(MOMENT_NAMES, (b1, b2, b3), strict=True), 1):
        ema = getattr(state, name)
        if ema is not None:
            ema = update_moment(grads, ema, decay, order)
            corrected[name] = optax.tree.bias_correction(ema, decay, count)
        emas[name] = ema
    key, step_key = (None, None) if state.key is None else jax.random.split(state.key)
    new_state = RuleState(count, emas["m"], emas["v"], emas["gamma"], key)
    return new_state, Moments(grads, **corrected), step_key


def update_moment(grads: Any, ema: Any, decay: float | jax.Array, order: int) -> Any:
    """decay · ema + (1 − decay) · g^order, in the dtypes of `ema`'s leaves.

    `optax.tree.update_moment` with its two terms the other way round: XLA's CPU backend fuses
    one of the two products into a multiply-add, which one depending on that order, so
    optax's order changes the last bit of the averages, and through training the published
    search scores (docs/decisions.md, 2026-12-02).
    """
    return jax.tree.map(lambda e, g: (decay * e + (1 - decay) * g**order).astype(e.dtype),
                        ema, grads)  # fmt: skip


def choose_static(index: int, branches: Sequence[Callable[[], jax.Array]]) -> jax.Array:
    """Runs only branch `index` (a Python int): compiles just what the rule uses."""
    return branches[index]()


def choose_selected(index: jax.Array, branches: Sequence[Callable[[], jax.Array]]) -> jax.Array:
    """Runs every branch and selects branch `index` (traced): one program for all rules."""
    return jax.lax.select_n(index, *(branch() for branch in branches))


def evaluate(
    tokens: Sequence[int] | jax.Array,
    moments: Moments,
    params: Any,
    key: jax.Array | None,
    choose: Choose,
    noise: Any = None,
    *,
    eps: float | jax.Array = 1e-8,
    implementation: str | None = None,
) -> Any:
    """The rule's value (a descent direction) for every leaf of the gradient pytree.

    Args:
      tokens: the rule's token program, 5·depth ids in the full vocabulary.
      moments: this step's inputs (fields the program does not read may be None).
      params: the parameters (may be None when the program reads no scaled weight).
      key: this step's key (may be None when the program draws nothing).
      choose: `choose_static` for Python-int tokens, `choose_selected` for traced ones.
      noise: this step's `noise` operand (`draw_noise(key, moments.grad)`) if computed
        beforehand, else None (drawn here when the program reads it).
      eps: ε of `adam`, `rmsprop` and `x / y`.
      implementation: "plain", "cpu" or None (see `lopt.cpu_kernels`).

    Returns:
      A pytree like `moments.grad`.
    """
    numerics = _numerics(implementation)
    leaf_draws = None if key is None else numerics.draws(key)
    leaves, treedef = jax.tree.flatten(moments.grad)
    per_leaf = lambda tree: [None] * len(leaves) if tree is None else treedef.flatten_up_to(tree)
    columns = zip(
        leaves,
        *(per_leaf(tree) for tree in (moments.m, moments.v, moments.gamma, params, noise)),
        strict=True,
    )
    directions = [
        _evaluate_leaf(tokens, grad, m, v, gamma, weight, noise,
                       None if leaf_draws is None else leaf_draws(index, grad.shape),
                       numerics.exp_or_log, eps, choose)
        for index, (grad, m, v, gamma, weight, noise) in enumerate(columns)
    ]  # fmt: skip
    return treedef.unflatten(directions)


def _lookup(table: Sequence[Any], index: int | jax.Array, dtype=jnp.float32) -> Any:
    """table[index]: a Python value for an int index, a traced `dtype` scalar for a traced one."""
    return table[index] if isinstance(index, int) else jnp.asarray(np.array(table, dtype))[index]


def draw_noise(key: jax.Array, grads: Any, implementation: str | None = None) -> Any:
    """The `noise` operand of the step with key `key`: a pytree like `grads`."""
    leaf_draws = _numerics(implementation).draws(key)
    leaves, treedef = jax.tree.flatten(grads)
    return treedef.unflatten([_noise(leaf_draws(leaf, grad.shape)[1], grad.dtype)
                              for leaf, grad in enumerate(leaves)])  # fmt: skip


def _noise(normal: Callable[[int], jax.Array], dtype) -> jax.Array:
    """The `noise` operand of a leaf from its `normal` draws."""
    return (NOISE_SCALE * normal(NOISE_SITE)).astype(dtype)


def _evaluate_leaf(tokens, grad, m, v, gamma, weight, noise, draws: LeafDraws | None,
                   exp_or_log, eps, choose: Choose):
    bits, normal = (None, None) if draws is None else draws
    inverse_denominator = functools.cache(lambda: 1.0 / (jnp.sqrt(v) + eps))
    operands = {
        "g": lambda: grad,
        "g2": lambda: grad * grad,
        "g3": lambda: grad * grad * grad,
        "m": lambda: m,
        "v": lambda: v,
        "gamma": lambda: gamma,
        "one": lambda: jnp.ones_like(grad),
        "noise": lambda: noise if noise is not None else _noise(normal, grad.dtype),
        "adam": lambda: m * inverse_denominator(),
        "rmsprop": lambda: grad * inverse_denominator(),
    }
    bank = [functools.cache(operands[name]) for name in _BANK_OPERANDS]  # each at most once
    output = None
    for level in range(len(tokens) // TOKENS_PER_LEVEL):
        first, second, unary1, unary2, binary = tokens[TOKENS_PER_LEVEL * level :][:5]
        slot = lambda operand, unary, slot, level=level: _unary(
            unary, _operand(operand, bank, weight, grad.dtype, choose),
            lambda: bits(1 + 2 * level + slot), exp_or_log, choose)  # fmt: skip
        x, y = slot(first, unary1, 0), slot(second, unary2, 1)
        output = _binary(binary, x, y, eps, choose)
        bank.append(lambda output=output: output)
    return output


def _operand(index, bank, weight, dtype, choose: Choose) -> jax.Array:
    """Bank entry of operand token `index`; the four scaled weights are one entry, scale · w,
    with the scale looked up from the token."""
    first_weight, after_weights = _NUM_BANK_OPERANDS, len(OPERANDS)
    output = index - len(WEIGHT_OPERANDS) + 1  # bank entry of an earlier level's output
    if isinstance(index, int):
        entry = min(index, first_weight) if index < after_weights else output
        scale = _WEIGHT_SCALE[min(index, after_weights)]
    else:
        entry = jnp.where(index < after_weights, jnp.minimum(index, first_weight), output)
        scale = jnp.asarray(_WEIGHT_SCALE, jnp.float32)[jnp.minimum(index, after_weights)]
    scaled_weight = lambda: (scale * weight).astype(dtype)
    return choose(entry, [*bank[:first_weight], scaled_weight, *bank[first_weight:]])


def _unary(index, x: jax.Array, bits: Callable[[], jax.Array], exp_or_log,
           choose: Choose) -> jax.Array:
    """Unary token `index` of x; `bits` gives this slot's random bits (for drop), `exp_or_log`
    is `Numerics.exp_or_log`."""
    parameters = zip(_UNARY_PARAMETERS, _UNARY_DTYPES, strict=True)
    sign, bound, threshold = (_lookup(table, index, dtype) for table, dtype in parameters)
    kind = _lookup(_UNARY_KIND, index, jnp.int32)
    exp_or_log_x = functools.cache(lambda: exp_or_log(x, kind == 1))  # one for both branches
    branches = [
        lambda: _signed_clip_drop(x, sign, bound, threshold, bits),
        exp_or_log_x,
        exp_or_log_x,
        lambda: jnp.sign(x),
    ]
    return choose(kind, branches)


def _signed_clip_drop(x, sign, bound, threshold, bits: Callable[[], jax.Array]) -> jax.Array:
    """where(bits ≥ threshold, clip(sign · x, −bound, bound), 0): identity, −x, clip(x, l) and
    drop(x, p) in one formula (sign ±1, bound l or ∞, threshold ⌈p · 2³²⌉ or 0); the parts that
    are no-ops for a Python-constant token are skipped."""
    constant = lambda value, neutral: isinstance(value, float | int) and value == neutral
    if not constant(sign, 1.0):
        x = -x if constant(sign, -1.0) else jnp.asarray(sign, x.dtype) * x
    if not constant(bound, math.inf):
        bound = jnp.asarray(bound, x.dtype)
        x = jnp.clip(x, -bound, bound)
    if not constant(threshold, 0):
        x = jnp.where(bits() >= jnp.asarray(threshold, jnp.uint32), x, jnp.zeros_like(x))
    return x


def _binary(index, x: jax.Array, y: jax.Array, eps, choose: Choose) -> jax.Array:
    """Binary token `index`: x ± y (the sign looked up from the token), x · y, x / (y + eps) or
    x (keep-left)."""
    sign = _lookup(_BINARY_SIGN, index)
    branches = [
        lambda: _plus_minus(x, y, sign),
        lambda: x * y,
        lambda: x / (y + eps),
        lambda: x,
    ]
    return choose(_lookup(_BINARY_KIND, index, jnp.int32), branches)


def _plus_minus(x: jax.Array, y: jax.Array, sign) -> jax.Array:
    """x + sign · y for sign ±1 (x − y when sign is the constant −1)."""
    if isinstance(sign, float):
        return x + y if sign > 0 else x - y
    return x + jnp.asarray(sign, y.dtype) * y


def _drop_threshold(rate: float) -> int:
    """uint32 t with P(bits ≥ t) = 1 − rate for uniform 32-bit `bits`."""
    return math.ceil(rate * 2**32)


_NUM_BANK_OPERANDS = len(OPERANDS) - len(WEIGHT_OPERANDS)
_BANK_OPERANDS = OPERANDS[:_NUM_BANK_OPERANDS]
assert OPERANDS[_NUM_BANK_OPERANDS:] == WEIGHT_OPERANDS  # the scaled weights come last
# Operand token (earlier levels' outputs clipped to one past the operands) -> weight scale.
_WEIGHT_SCALE = (*[1.0] * _NUM_BANK_OPERANDS, *WEIGHT_SCALES, 1.0)
# Unary token -> kind (0 signed clip drop, 1 exp, 2 log|x|, 3 sign), sign, clip bound, drop
# threshold.
_UNARY_FORMULAS = {
    "identity": (0, 1.0, math.inf, 0),
    "neg": (0, -1.0, math.inf, 0),
    "exp": (1, 1.0, math.inf, 0),
    "log": (2, 1.0, math.inf, 0),
    "sign": (3, 1.0, math.inf, 0),
}
_UNARY_ROWS = [
    (0, 1.0, const, 0) if fn == "clip" else (0, 1.0, math.inf, _drop_threshold(const))
    if fn == "drop" else _UNARY_FORMULAS[fn]
    for fn, const in UNARY_TOKENS
]
_UNARY_KIND = tuple(row[0] for row in _UNARY_ROWS)
_UNARY_PARAMETERS = tuple(tuple(row[k] for row in _UNARY_ROWS) for k in (1, 2, 3))
_UNARY_DTYPES = (jnp.float32, jnp.float32, jnp.uint32)
# Binary token -> kind (0 x ± y, 1 x · y, 2 x / (y + ε), 3 keep-left) and the sign of y.
_BINARY_ROWS = {"+": (0, 1.0), "-": (0, -1.0), "*": (1, 1.0), "/": (2, 1.0), "keep_left": (3, 1.0)}
_BINARY_KIND = tuple(_BINARY_ROWS[op][0] for op in BINARY_TOKENS)
_BINARY_SIGN = tuple(_BINARY_ROWS[op][1] for op in BINARY_TOKENS)
