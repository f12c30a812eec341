"""Compiling a rule to an optax `GradientTransformation`.

`scale_by_rule(rule)` turns gradients into the rule's direction; `to_optax(rule, lr)` is
`optax.chain(scale_by_rule(rule), optax.scale_by_learning_rate(lr))`, exactly as `optax.adam`
is `chain(scale_by_adam(), scale_by_learning_rate(lr))`, so the update is Δw = −lr · rule and
the learning rate may be a schedule or an `optax.inject_hyperparams` hyperparameter.

The rule is lowered once, in Python, to its token program; tracing the update emits only the
operations the rule uses, and the state (`RuleState`) holds only the moving averages it reads,
a count if it reads any, and a PRNG key if it draws random numbers (`drop`, `noise`).
Conventions for the operands are in `lopt.rules.semantics`; b1, b2, b3 and eps are the decays
of the moving averages of g, g², g³ and the ε of `adam`, `rmsprop` and `x / y`, with optax's
names and the paper's defaults.
"""

from __future__ import annotations

import jax
import optax

from lopt import cpu_kernels, finite
from lopt.rules.expression import WEIGHT_OPERANDS, Rule, is_random, operand_names
from lopt.rules.library import LIBRARY
from lopt.rules.semantics import advance, choose_static, evaluate, init_state, needed_moments
from lopt.rules.text import parse
from lopt.rules.tokens import to_tokens


def scale_by_rule(
    rule: Rule | str,
    b1: float = 0.9,
    b2: float = 0.999,
    b3: float = 0.999,
    eps: float = 1e-8,
    *,
    key: jax.Array | None = None,
    implementation: str | None = None,
) -> optax.GradientTransformation:
    """Scales gradients to the rule's direction d (the update is −lr · d after `to_optax`).

    Args:
      rule: a `Rule`, its text, or a name of `lopt.rules.LIBRARY` (e.g. "powersign").
      b1, b2, b3: decays of the moving averages m, v, γ of g, g², g³.
      eps: ε of `adam`, `rmsprop` and `x / y`.
      key: PRNG key for rules that use `drop` or `noise`; stored in the state and split on
        every update. Ignored by rules that draw nothing.
      implementation: "plain", "cpu" or None: how exp, log and random draws are computed
        (`lopt.cpu_kernels`; None chooses by the backend when the update is traced).

    Returns:
      A `GradientTransformation` whose state is a `RuleState`.

    Example:
      >>> opt = scale_by_rule("g * exp(sign(g) * sign(m))")
      >>> state = opt.init({"w": jnp.zeros(3)})
    """
    cpu_kernels.check_implementation(implementation)
    if isinstance(rule, str):
        rule = LIBRARY[rule] if rule in LIBRARY else parse(rule)
    tokens = to_tokens(rule)
    moments = needed_moments(rule)
    random = is_random(rule)
    reads_weights = bool(operand_names(rule) & set(WEIGHT_OPERANDS))

    def init_fn(params):
        if random and key is None:
            raise ValueError(
                f"rule '{rule}' draws random numbers (drop or noise): pass a PRNG key, e.g. "
                "to_optax(rule, learning_rate, key=jax.random.key(0))"
            )
        return init_state(params, moments, key if random else None)

    def update_fn(updates, state, params=None):
        if reads_weights and params is None:
            raise ValueError(f"rule '{rule}' reads the weights: call update(grads, state, params)")
        state, step_moments, step_key = advance(state, updates, b1, b2, b3)
        directions = evaluate(tokens, step_moments, params, step_key, choose_static, eps=eps,
                              implementation=implementation)
        return directions, state

    return optax.GradientTransformation(init_fn, update_fn)


def to_optax(
    rule: Rule | str,
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    b3: float = 0.999,
    eps: float = 1e-8,
    *,
    key: jax.Array | None = None,
    implementation: str | None = None,
) -> optax.GradientTransformation:
    """An optax optimizer applying Δw = −learning_rate · rule.

    Works on any params pytree and float dtype, under `jax.jit`, inside `optax.chain`,
    `optax.inject_hyperparams` (learning_rate, b1, b2, b3 and eps traced; pass `rule` by
    keyword, as text or a name, so that it stays static) and `optax.MultiSteps`.

    Args:
      rule: a `Rule`, its text, or a name of `lopt.rules.LIBRARY` (e.g. "powersign").
      learning_rate: a float or an optax schedule. The scale it needs depends on the rule's:
        about SGD's for rules of g's size (e.g. 1.0 for powersign on the digits ConvNet),
        Adam's for normalised ones; `lopt.search.evaluate` sweeps it.
      b1, b2, b3: decays of the moving averages m, v, γ of g, g², g³.
      eps: ε of `adam`, `rmsprop` and `x / y`.
      key: PRNG key, required (at `init`) by rules that use `drop` or `noise`.
      implementation: "plain", "cpu" or None (by the backend); see `scale_by_rule`.

    Returns:
      `optax.chain(scale_by_rule(rule, b1, b2, b3, eps, ...),
      optax.scale_by_learning_rate(learning_rate))`.

    Example:
      >>> opt = to_optax(parse("adam"), learning_rate=1e-3)   # same as optax.adam(1e-3)
      >>> params = {"w": jnp.ones(3)}
      >>> updates, state = opt.update({"w": jnp.ones(3)}, opt.init(params), params)
    """
    return optax.chain(
        scale_by_rule(rule, b1, b2, b3, eps, key=key, implementation=implementation),
        optax.scale_by_learning_rate(learning_rate),
    )


# Whether every element of an update pytree is finite (overflowing rules give inf/NaN): a
# bool `[]`, jittable (`lopt.finite.all_finite`, the check shared with GPS and the harnesses).
is_finite_update = finite.all_finite
