"""Kernels for XLA's CPU backend: faster forms of operations whose specification is plain.

The plain form (`jnp`, `jax.random`, `lax`) is what an operation means and what runs on every
other backend; a kernel here replaces it on a CPU, where it was measured faster
(docs/decisions.md), and is tested against it:

- `exp_or_log(x, is_exp)`: exp(x) or log|x| by Cephes' float32 algorithms, one polynomial for
  both, so that the population interpreter, which computes both, pays for one (a compiled
  rule, which needs one of them, uses the same code, to compute what the interpreter does);
- `hash_draws(key)`: the random draws of the rule language (drop's bits, noise's normal
  values) from one threefry call per step expanded by an integer hash, in place of
  `jax.random` per draw; statistically equivalent to the plain draws, not bitwise equal;
- `matmul_conv`: a convolution as strided slices times kernel taps (matrix products), where
  XLA's CPU convolution inside a `lax.scan` is slow.

Which form runs is decided when the caller is traced, by `chosen(implementation)`:
`implementation` is "cpu" (these kernels), "plain" (the specification) or None (these kernels
exactly when `jax.default_backend()` is the CPU). The entry points that use them
(`lopt.rules.to_optax`, `lopt.rules.interpret`, `conv_general_dilated`) take the same
`implementation` argument, as `jax.nn.dot_product_attention` does.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("cpu", "plain")


def check_implementation(implementation: str | None) -> None:
    """Raises ValueError unless `implementation` is one of `IMPLEMENTATIONS` or None."""
    if implementation is not None and implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS} or None (chosen by "
                         f"the backend), got {implementation!r}")


def chosen(implementation: str | None = None) -> bool:
    """Whether this module's kernels run: for None, whether JAX's default backend is the CPU.

    Example:
      >>> convolve = matmul_conv if chosen() else jax.lax.conv_general_dilated
    """
    check_implementation(implementation)
    if implementation is None:
        return jax.default_backend() == "cpu"
    return implementation == "cpu"


def exp_or_log(x: jax.Array, is_exp: bool | jax.Array) -> jax.Array:
    """exp(x) where `is_exp`, else log|x|; `is_exp` a Python bool or a traced bool scalar.

    For float32 both are Cephes' single-precision algorithms (S. Moshier), within one ulp of
    the exact values: x = k·ln 2 + r with |r| ≤ ln 2 / 2 and exp(x) = 2^k · (1 + r + r²·P(r)),
    or |x| = 2^k · (1 + t) with 1 + t in [√½, √2) and log|x| = k·ln 2 + t + t²·Q(t). The two
    share one polynomial evaluation (P padded with zero leading coefficients, which is exact),
    so a traced `is_exp`, where every member computes both, costs one polynomial instead of
    two. exp is 0 below −104 and ∞ above 89, log|0| = −∞, NaN stays NaN. Other dtypes use
    `jnp.exp` and `jnp.log`.
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


# One leaf's random draws at one step: (bits, normal); bits(site) is uint32, uniform, and
# normal(site) float32, standard normal, both of the leaf's shape (`lopt.rules.semantics`).
LeafDraws = tuple[Callable[[int], jax.Array], Callable[[int], jax.Array]]


def hash_draws(key: jax.Array) -> Callable[[int, tuple[int, ...]], LeafDraws]:
    """The random draws of a step with key `key`, by leaf and site, from a counter-based hash.

    The step takes 64 bits (k0, k1) from its key (one `jax.random.bits` call); draw `site`
    of leaf `leaf` gives element i the bits h(h(i + s0) ^ s1), with s0 = h(k0 ^ tag(leaf, 0))
    and s1 = h(k1 + tag(leaf, site)): s0 depends only on the leaf, so that a leaf's draws
    share the inner hash and each further draw costs one hash per element. h is the
    "lowbias32" integer hash (C. Wellons, hash-prospector), about a dozen integer operations
    per element, where threefry for every element costs more than the rest of a compiled rule
    on a CPU. Sites are 0 to 63.

    Returns:
      leaf_draws(leaf, shape) -> (bits, normal): bits(site) is uint32 [shape], uniform;
      normal(site) float32 [shape], standard normal (`_normal` of bits(site)).

    Example:
      >>> bits, normal = hash_draws(key)(0, (3, 4))
      >>> keep = bits(1) >= threshold
    """
    seed = jax.random.bits(key, (2,), jnp.uint32)

    def leaf_draws(leaf: int, shape: tuple[int, ...]) -> LeafDraws:
        @functools.cache
        def counter_hash():
            counter = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
            return _lowbias32(counter + _lowbias32(seed[0] ^ _tag(leaf, 0)))

        bits = lambda site: _lowbias32(counter_hash() ^ _lowbias32(seed[1] + _tag(leaf, site)))
        return bits, lambda site: _normal(bits(site))

    return leaf_draws


def _tag(leaf: int, site: int) -> jax.Array:
    """uint32 constant that tells (leaf, site) apart: Weyl sequence of the golden ratio."""
    if not 0 <= site < 64:
        raise ValueError(f"random draw sites are 0 to 63 (rules of depth up to 31), got {site}")
    return jnp.uint32(((leaf * 64 + site + 1) * 0x9E3779B9) % 2**32)


def _lowbias32(x: jax.Array) -> jax.Array:
    """x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16."""
    x = (x ^ (x >> 16)) * jnp.uint32(0x7FEB352D)
    x = (x ^ (x >> 15)) * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _normal(bits: jax.Array) -> jax.Array:
    """float32 standard normal from random bits by inverting the CDF: √2 · erf⁻¹(2u − 1).

    u is the top 24 bits of `bits`, centred in their interval, on (0, 1). erf⁻¹ is M. Giles'
    single-precision approximation ("Approximating the erfinv function", GPU Computing Gems,
    2011; within 6e-6 relative of `lax.erf_inv` over u's range), with w = −log(1 − (2u − 1)²)
    computed as −log(4u(1 − u)): one log, one square root and two short polynomials per
    element, a fraction of what `lax.erf_inv` costs on a CPU.
    """
    u = ((bits >> 8).astype(jnp.float32) + 0.5) * 2.0**-24
    w = -exp_or_log(4.0 * u * (1.0 - u), False)
    central, tail = w - 2.5, jnp.sqrt(w) - 3.0
    central = functools.reduce(lambda p, c: c + p * central, _ERFINV_CENTRAL[1:],
                               jnp.full_like(u, _ERFINV_CENTRAL[0]))
    tail = functools.reduce(lambda p, c: c + p * tail, _ERFINV_TAIL[1:],
                            jnp.full_like(u, _ERFINV_TAIL[0]))
    return math.sqrt(2.0) * jnp.where(w < 5.0, central, tail) * (2.0 * u - 1.0)


def conv_general_dilated(lhs, rhs, window_strides, padding, *,
                         implementation: str | None = None, **options):
    """`jax.lax.conv_general_dilated`, computed by `matmul_conv` where `chosen(implementation)`.

    For flax: `nn.Conv(..., conv_general_dilated=conv_general_dilated)`.
    """
    convolve = matmul_conv if chosen(implementation) else jax.lax.conv_general_dilated
    return convolve(lhs, rhs, window_strides, padding, **options)


def matmul_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                dimension_numbers=None, feature_group_count=1, precision=None, **unused):
    """A drop-in for `lax.conv_general_dilated` (NHWC inputs, HWIO kernels, no dilation, one
    group) as a sum of strided slices times kernel taps: `kh * kw` matrix products.

    Why: on CPU, XLA runs a convolution inside `lax.scan` (how the evaluator trains) about
    10-20x slower than the same convolution outside a loop (jax-ml/jax#12868); slices and
    matrix products have no such penalty. Results equal the convolution to float round-off.
    """
    del dimension_numbers, unused  # flax passes NHWC/HWIO numbers, the only layout here
    if any(d not in (None, 1) for d in (*(lhs_dilation or ()), *(rhs_dilation or ()))) \
            or feature_group_count != 1:
        raise ValueError("matmul_conv supports neither dilation nor grouped convolutions")
    kernel_h, kernel_w, in_features, _ = rhs.shape
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads(lhs.shape[1:3], (kernel_h, kernel_w), window_strides,
                                          padding)
    padded = jnp.pad(lhs, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    stride_h, stride_w = window_strides
    out_h = (padded.shape[1] - kernel_h) // stride_h + 1
    out_w = (padded.shape[2] - kernel_w) // stride_w + 1
    out = 0.0
    for i in range(kernel_h):
        for j in range(kernel_w):
            tap = jax.lax.slice(padded, (0, i, j, 0),
                                (padded.shape[0], i + (out_h - 1) * stride_h + 1,
                                 j + (out_w - 1) * stride_w + 1, in_features),
                                (1, stride_h, stride_w, 1))
            out = out + jnp.einsum("nhwc,cd->nhwd", tap, rhs[i, j], precision=precision)
    return out


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
