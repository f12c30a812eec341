"""The update-rule language of Neural Optimizer Search (Bello et al., ICML 2017).

    rule = parse("g * exp(sign(g) * sign(m))")      # text -> Rule (RuleSyntaxError if bad)
    opt = to_optax(rule, learning_rate=1e-3)         # Δw = −lr · rule, an optax optimizer
    tokens = to_tokens(rule)                          # the controller's 5-per-level encoding
    directions = interpret(encode(rules), moments, params, keys)   # a population, one program

Modules: `expression` (the Rule tree and the search space), `text` (parse / print),
`tokens` (token form, `Vocabulary` and sampling masks), `semantics` (moments, operands,
functions: the conventions, with b1 = 0.9, b2 = b3 = 0.999, eps = 1e-8 as argument defaults
and noise σ = 0.01), `compile` (`to_optax`), `interpreter` (populations), `library` (named
rules), `named` (PowerSign and AddSign with sign decay), `simplify` (a shorter rule with the
same update), `discovered` (`DISCOVERED`: rules found by lopt's own searches, with their
provenance). On a CPU, exp, log and the random draws run as `lopt.cpu_kernels` (the
`implementation` argument of `to_optax` and `interpret`).
"""

from lopt.rules import discovered
from lopt.rules.compile import is_finite_update, scale_by_rule, to_optax
from lopt.rules.discovered import DISCOVERED
from lopt.rules.expression import Binary, Operand, Rule, Unary
from lopt.rules.interpreter import encode, interpret
from lopt.rules.library import LIBRARY, TABLE_1
from lopt.rules.named import (
    addsign,
    cosine_sign_decay,
    linear_sign_decay,
    powersign,
    restart_sign_decay,
)
from lopt.rules.semantics import Moments, RuleState, advance, init_state
from lopt.rules.simplify import simplify
from lopt.rules.text import RuleSyntaxError, parse
from lopt.rules.tokens import VOCABULARY, Vocabulary, from_tokens, random_tokens, to_tokens

__all__ = [
    "DISCOVERED",
    "LIBRARY",
    "TABLE_1",
    "VOCABULARY",
    "Binary",
    "Moments",
    "Operand",
    "Rule",
    "RuleState",
    "RuleSyntaxError",
    "Unary",
    "Vocabulary",
    "addsign",
    "advance",
    "cosine_sign_decay",
    "encode",
    "from_tokens",
    "init_state",
    "interpret",
    "is_finite_update",
    "linear_sign_decay",
    "parse",
    "powersign",
    "random_tokens",
    "restart_sign_decay",
    "scale_by_rule",
    "simplify",
    "to_optax",
    "to_tokens",
]
