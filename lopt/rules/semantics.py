"""What rules compute: moment estimates, operands, unary and binary functions, randomness.

Conventions (Bello et al., 2017, section 4.2), written once here:
- m̂, v̂, γ̂ are bias-corrected exponential moving averages of g, g², g³ with β1 = 0.9,
  β2 = β3 = 0.999: after t updates m = β1·m + (1 − β1)·g and m̂ = m / (1 − β1^t); the EMAs live
  in the parameters' dtype and the arithmetic happens in the gradients' dtype, as in optax.
- `adam` = m̂ / (√v̂ + ε), `rmsprop` = g / (√v̂ + ε) with the same v̂; ε = 1e-8 (computed as
  m̂ · (1 / (√v̂ + ε)), within two ulps of the quotient: a product, unlike a quotient, XLA fuses
  into the interpreter's loop, which saves three passes over memory per step);
  `x / y` = x / (y + ε); `log(x)` = log|x|; `clip(x, l)` clips to [−l, l].
- `noise` is N(0, 0.01²) per element, drawn afresh each step.
- `drop(x, p)` keeps each element with probability 1 − p and zeroes it otherwise, without
  rescaling (the paper's definition, unlike dropout).
- Random draws: a step takes 64 bits from its key with `jax.random.bits` (`step_seed`); each
  draw mixes them with its site (below) and expands them over the elements with a
  counter-based integer hash (`_site_bits`), because threefry per element would cost more
  than everything else in a step. The inner hash depends only on the leaf, so a leaf's draws
  share it and each further draw costs one hash per element. `drop(x, p)` keeps an element
  when its 32 bits are at least ⌈p·2³²⌉; `noise` inverts the normal CDF (Giles' erf⁻¹) at a
  uniform of 24-bit resolution.
- The parameter update is Δw = −lr · rule: rules give a descent direction.

Evaluation runs a rule's token program (`lopt.rules.tokens`) level by level on each leaf of
the parameter pytree. One function, `evaluate`, serves `to_optax` (token ids are Python ints
and `choose_static` traces one branch) and the population interpreter (token ids are traced
and `choose_selected` computes every branch and selects), so they agree by construction.
Tokens are read as a few numbers each (`_UNARY_ROWS`, `_BINARY_ROWS`): identity, −x, clip and
drop are one formula, where(bits ≥ threshold, clip(sign·x, −bound, bound), 0), so the
interpreter selects among four unary results (that formula, exp, log|x|, sign) and four
binary ones (x ± y, x·y, x / (y + ε), keep-left), and the four scaled weights are one operand.
Random draws are tied to the program, not to the text: a draw's site is the leaf's index and
0 for `noise` or 1 + 2·level + slot for a `drop` in unary slot `slot` (0 for u1, 1 for u2) of
level `level`; `noise` is drawn once per leaf and step.
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

from lopt.rules.expression import OPERANDS, WEIGHT_OPERANDS, WEIGHT_SCALES, Rule, operand_names
from lopt.rules.tokens import BINARY_TOKENS, TOKENS_PER_LEVEL, UNARY_TOKENS

BETA1 = 0.9
BETA2 = 0.999
BETA3 = 0.999
EPSILON = 1e-8
NOISE_SCALE = 0.01
MOMENT_NAMES = ("m", "v", "gamma")
_DECAYS = {"m": BETA1, "v": BETA2, "gamma": BETA3}
_POWERS = {"m": 1, "v": 2, "gamma": 3}
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


def advance(state: RuleState, grads: Any) -> tuple[RuleState, Moments, jax.Array | None]:
    """Folds this step's gradients into the moving averages and splits the key.

    With t = count + 1: m ← β1·m + (1 − β1)·g, m̂ = m / (1 − β1^t), and likewise v̂ from g²
    (β2) and γ̂ from g³ (β3); (key, step_key) = split(key).

    Args:
      state: the `RuleState` before the step.
      grads: gradient pytree.

    Returns:
      (new state, this step's bias-corrected `Moments`, this step's key or None).

    Example:
      >>> state, moments, step_key = advance(state, grads)
      >>> direction = interpret(codes, moments, params, step_key)  # under jax.vmap of advance
    """
    count = None if state.count is None else optax.safe_increment(state.count)
    emas, corrected = {}, {}
    for name in MOMENT_NAMES:
        emas[name], corrected[name] = _moving_average(getattr(state, name), grads, name, count)
    key, step_key = (None, None) if state.key is None else jax.random.split(state.key)
    new_state = RuleState(count, emas["m"], emas["v"], emas["gamma"], key)
    return new_state, Moments(grads, **corrected), step_key


def _moving_average(ema: Any, grads: Any, name: str, count: jax.Array) -> tuple[Any, Any]:
    """(updated EMA, bias-corrected EMA) of g**power for moment `name`; (None, None) if unused."""
    if ema is None:
        return None, None
    decay, power = _DECAYS[name], _POWERS[name]
    ema = jax.tree.map(
        lambda e, g: (decay * e + (1 - decay) * g**power).astype(e.dtype), ema, grads
    )
    correction = 1 - decay**count
    return ema, jax.tree.map(lambda e: e / correction.astype(e.dtype), ema)


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

    Returns:
      A pytree like `moments.grad`.
    """
    seed = None if key is None else step_seed(key)
    leaves, treedef = jax.tree.flatten(moments.grad)
    per_leaf = lambda tree: [None] * len(leaves) if tree is None else treedef.flatten_up_to(tree)
    columns = zip(
        leaves,
        *(per_leaf(tree) for tree in (moments.m, moments.v, moments.gamma, params, noise)),
        strict=True,
    )
    directions = [
        _evaluate_leaf(tokens, grad, m, v, gamma, weight, noise, seed, index, choose)
        for index, (grad, m, v, gamma, weight, noise) in enumerate(columns)
    ]
    return treedef.unflatten(directions)


def _lookup(table: Sequence[Any], index: int | jax.Array, dtype=jnp.float32) -> Any:
    """table[index]: a Python value for an int index, a traced `dtype` scalar for a traced one."""
    return table[index] if isinstance(index, int) else jnp.asarray(np.array(table, dtype))[index]


def draw_noise(key: jax.Array, grads: Any) -> Any:
    """The `noise` operand of the step with key `key`: a pytree like `grads`."""
    seed = step_seed(key)
    leaves, treedef = jax.tree.flatten(grads)
    return treedef.unflatten([_noise_leaf(seed, leaf, grad.shape, grad.dtype)
                              for leaf, grad in enumerate(leaves)])


def _noise_leaf(seed, leaf, shape, dtype, counter_hash=None):
    site_seed = _site_seed(seed, leaf, 0)
    counter_hash = _counter_hash(site_seed, shape) if counter_hash is None else counter_hash
    return (NOISE_SCALE * _normal(_site_bits(counter_hash, site_seed))).astype(dtype)


def _evaluate_leaf(tokens, grad, m, v, gamma, weight, noise, seed, leaf, choose: Choose):
    counter_hash = functools.cache(lambda: _counter_hash(_site_seed(seed, leaf, 0), grad.shape))
    draws = lambda site: lambda: _site_bits(counter_hash(), _site_seed(seed, leaf, site))
    inverse_denominator = functools.cache(lambda: 1.0 / (jnp.sqrt(v) + EPSILON))
    operands = {
        "g": lambda: grad,
        "g2": lambda: grad * grad,
        "g3": lambda: grad * grad * grad,
        "m": lambda: m,
        "v": lambda: v,
        "gamma": lambda: gamma,
        "one": lambda: jnp.ones_like(grad),
        "noise": lambda: noise if noise is not None else _noise_leaf(
            seed, leaf, grad.shape, grad.dtype, counter_hash()),
        "adam": lambda: m * inverse_denominator(),
        "rmsprop": lambda: grad * inverse_denominator(),
    }
    bank = [functools.cache(operands[name]) for name in _BANK_OPERANDS]  # each at most once
    output = None
    for level in range(len(tokens) // TOKENS_PER_LEVEL):
        first, second, unary1, unary2, binary = tokens[TOKENS_PER_LEVEL * level :][:5]
        slot = lambda operand, unary, slot, level=level: _unary(
            unary, _operand(operand, bank, weight, grad.dtype, choose),
            draws(1 + 2 * level + slot), choose)  # fmt: skip
        x, y = slot(first, unary1, 0), slot(second, unary2, 1)
        output = _binary(binary, x, y, choose)
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


def _unary(index, x: jax.Array, bits: Callable[[], jax.Array], choose: Choose) -> jax.Array:
    """Unary token `index` of x; `bits` gives this slot's random bits (for drop)."""
    parameters = zip(_UNARY_PARAMETERS, _UNARY_DTYPES, strict=True)
    sign, bound, threshold = (_lookup(table, index, dtype) for table, dtype in parameters)
    kind = _lookup(_UNARY_KIND, index, jnp.int32)
    exp_or_log = functools.cache(lambda: _exp_or_log(x, kind == 1))  # one for both branches
    branches = [
        lambda: _signed_clip_drop(x, sign, bound, threshold, bits),
        exp_or_log,
        exp_or_log,
        lambda: jnp.sign(x),
    ]
    return choose(kind, branches)


def _exp_or_log(x: jax.Array, is_exp: bool | jax.Array) -> jax.Array:
    """exp(x) where `is_exp`, else log|x|; `is_exp` a Python bool or a traced scalar.

    For float32 both are Cephes' single-precision algorithms (S. Moshier), within one ulp of
    the exact values (XLA's CPU exp is off by up to 5): x = k·ln 2 + r with |r| ≤ ln 2 / 2 and
    exp(x) = 2^k · (1 + r + r²·P(r)), or |x| = 2^k · (1 + t) with 1 + t in [√½, √2) and
    log|x| = k·ln 2 + t + t²·Q(t). The two share one polynomial evaluation (P padded with
    zero leading coefficients, which is exact), so a traced `is_exp`, where every member
    computes both, costs one polynomial instead of two. exp is 0 below −104 and ∞ above 89,
    log|0| = −∞, NaN stays NaN. Other dtypes use `jnp.exp` and `jnp.log`.
    """
    static = isinstance(is_exp, bool)
    pick = (lambda a, b: a() if is_exp else b()) if static else (
        lambda a, b: jnp.where(is_exp, a(), b()))
    if x.dtype != jnp.float32:
        return pick(lambda: jnp.exp(x), lambda: jnp.log(jnp.abs(x)))

    def exp_reduction():
        clipped = jnp.clip(x, -104.0, 89.0)
        k = jnp.floor(clipped * math.log2(math.e) + 0.5)
        return clipped - k * _LN2_HIGH - k * _LN2_LOW, k

    def log_reduction():
        bits = jax.lax.bitcast_convert_type(jnp.abs(x), jnp.int32) - _SQRT_HALF_BITS
        mantissa = (bits & 0x7FFFFF) + _SQRT_HALF_BITS
        return jax.lax.bitcast_convert_type(mantissa, jnp.float32) - 1.0, (
            bits >> 23).astype(jnp.float32)

    if static:
        z, k = exp_reduction() if is_exp else log_reduction()
        coefficients = _EXP_POLYNOMIAL if is_exp else _LOG_POLYNOMIAL
    else:
        (r, k_exp), (t, k_log) = exp_reduction(), log_reduction()
        z, k = jnp.where(is_exp, r, t), jnp.where(is_exp, k_exp, k_log)
        padded = (0.0,) * (len(_LOG_POLYNOMIAL) - len(_EXP_POLYNOMIAL)) + _EXP_POLYNOMIAL
        pairs = zip(padded, _LOG_POLYNOMIAL, strict=True)
        coefficients = [jnp.where(is_exp, exp_c, log_c) for exp_c, log_c in pairs]
    polynomial = functools.reduce(lambda p, c: p * z + c, coefficients[1:],
                                  jnp.full_like(z, coefficients[0]))
    series = z + z * z * polynomial

    def exp_value():
        k_int = k.astype(jnp.int32)  # 2^k as two factors, so k may reach 128 or go below -126
        half = k_int >> 1
        power = lambda e: jax.lax.bitcast_convert_type((e + 127) << 23, jnp.float32)
        return (1.0 + series) * power(half) * power(k_int - half)

    def log_value():
        magnitude = jnp.abs(x)
        value = series + k * _LN2_LOW + k * _LN2_HIGH
        return jnp.where(magnitude == 0, -jnp.inf,
                         jnp.where(magnitude < jnp.inf, value, magnitude))

    return pick(exp_value, log_value)


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


def _binary(index, x: jax.Array, y: jax.Array, choose: Choose) -> jax.Array:
    """Binary token `index`: x ± y (the sign looked up from the token), x · y, x / (y + ε) or
    x (keep-left)."""
    sign = _lookup(_BINARY_SIGN, index)
    branches = [
        lambda: _plus_minus(x, y, sign),
        lambda: x * y,
        lambda: x / (y + EPSILON),
        lambda: x,
    ]
    return choose(_lookup(_BINARY_KIND, index, jnp.int32), branches)


def _plus_minus(x: jax.Array, y: jax.Array, sign) -> jax.Array:
    """x + sign · y for sign ±1 (x − y when sign is the constant −1)."""
    if isinstance(sign, float):
        return x + y if sign > 0 else x - y
    return x + jnp.asarray(sign, y.dtype) * y


def step_seed(key: jax.Array) -> jax.Array:
    """The 64 bits (uint32 [2]) that all of a step's random draws derive from."""
    return jax.random.bits(key, (2,), jnp.uint32)


def _site_seed(seed: jax.Array, leaf: int, site: int) -> jax.Array:
    """uint32 [2] seed (s0, s1) of draw `site` on leaf `leaf`: the step seed mixed with the
    integer hash h below (cheap integer arithmetic per member, no threefry call); s0 depends
    only on the leaf, so that the draws of a leaf share the inner hash (`_counter_hash`)."""
    leaf_tag = jnp.uint32(((leaf * 64 + 1) * 0x9E3779B9) % 2**32)
    tag = jnp.uint32(((leaf * 64 + site + 1) * 0x9E3779B9) % 2**32)
    return jnp.stack([_lowbias32(seed[0] ^ leaf_tag), _lowbias32(seed[1] + tag)])


def _counter_hash(seed: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """h(i + s0) for the elements i of `shape`, from a uint32 [2] seed (s0, s1): the part of
    `_site_bits` that a leaf's draws share."""
    counter = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
    return _lowbias32(counter + seed[0])


def _site_bits(counter_hash: jax.Array, seed: jax.Array) -> jax.Array:
    """32 random bits per element: bits[i] = h(h(i + s0) ^ s1), given h(i + s0).

    h is the "lowbias32" integer hash (x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15;
    x *= 0x846ca68b; x ^= x >> 16; C. Wellons, hash-prospector): about a dozen integer
    operations per element, where threefry for every element costs 5–10 ns per element on a
    CPU, more than the rest of a compiled rule.
    """
    return _lowbias32(counter_hash ^ seed[1])


def _lowbias32(x: jax.Array) -> jax.Array:
    x = (x ^ (x >> 16)) * jnp.uint32(0x7FEB352D)
    x = (x ^ (x >> 15)) * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _uniform(bits: jax.Array) -> jax.Array:
    """float32 uniform on (0, 1) from random bits: the top 24 bits, centred in their interval."""
    return ((bits >> 8).astype(jnp.float32) + 0.5) * 2.0**-24


def _normal(bits: jax.Array) -> jax.Array:
    """float32 standard normal from random bits by inverting the CDF: √2 · erf⁻¹(2u − 1).

    erf⁻¹ is M. Giles' single-precision approximation ("Approximating the erfinv function",
    GPU Computing Gems, 2011; within 6e-6 relative of `lax.erf_inv` over `_uniform`'s range), with
    w = −log(1 − (2u − 1)²) computed as −log(4u(1 − u)): one log, one square root and two
    short polynomials per element, a fraction of what `lax.erf_inv` costs on a CPU.
    """
    u = _uniform(bits)
    w = -_exp_or_log(4.0 * u * (1.0 - u), False)
    central, tail = w - 2.5, jnp.sqrt(w) - 3.0
    central = functools.reduce(lambda p, c: c + p * central, _ERFINV_CENTRAL[1:],
                               jnp.full_like(u, _ERFINV_CENTRAL[0]))
    tail = functools.reduce(lambda p, c: c + p * tail, _ERFINV_TAIL[1:],
                            jnp.full_like(u, _ERFINV_TAIL[0]))
    return math.sqrt(2.0) * jnp.where(w < 5.0, central, tail) * (2.0 * u - 1.0)


# Cephes expf and logf (S. Moshier): exp(r) = 1 + r + r²·P(r), log(1 + t) = t + t²·Q(t), highest
# power first; ln 2 split in a part exact in products with k and the rest.
_EXP_POLYNOMIAL = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                   1.6666665459e-1, 5.0000001201e-1)
_LOG_POLYNOMIAL = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                   1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                   3.3333331174e-1, -0.5)
_LN2_HIGH, _LN2_LOW = 0.693359375, -2.12194440e-4
_SQRT_HALF_BITS = 0x3F3504F3  # float32 bits of √½

# Giles' coefficients, highest power first, for w < 5 (in w − 2.5) and w ≥ 5 (in √w − 3).
_ERFINV_CENTRAL = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06,
                   0.00021858087, -0.00125372503, -0.00417768164, 0.246640727, 1.50140941)
_ERFINV_TAIL = (-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
                -0.0076224613, 0.00943887047, 1.00167406, 2.83297682)


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
