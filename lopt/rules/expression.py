"""The update-rule language as an immutable expression tree.

A rule is a tree of three node types, all frozen dataclasses (hashable, compared by value):

- `Operand(name)`: one of `OPERANDS`: `g` the gradient, `g2` g², `g3` g³, `m` m̂, `v` v̂,
  `gamma` γ̂, `one`, `noise`, `adam`, `rmsprop` and the scaled weights `1e-4*w` … `1e-1*w`.
- `Unary(fn, arg, const)`: `fn` one of `UNARY_FUNCTIONS` (`neg` is `-x`); `const` is the clip
  bound for `clip` (one of `CLIP_BOUNDS`), the drop rate for `drop` (one of `DROP_RATES`) and
  None otherwise. The identity is implicit: it has no node.
- `Binary(op, left, right)`: `op` one of `BINARY_OPS` (`+ - * /`). The token form's keep-left
  binary has no node either: it leaves its left argument as it is.

Semantics (Bello et al., 2017, section 4.1; the numbers live in `lopt.rules.semantics`):
m̂, v̂, γ̂ are bias-corrected exponential moving averages of g, g², g³ with β1 = 0.9 and
β2 = β3 = 0.999; `adam` = m̂ / (√v̂ + ε) and `rmsprop` = g / (√v̂ + ε) with the same v̂;
ε = 1e-8; `x / y` is x / (y + ε); `log(x)` is log|x|; `clip(x, l)` clips to [-l, l];
`drop(x, p)` zeroes each element with probability p (no rescaling); `noise` is Gaussian noise
of standard deviation 0.01 drawn afresh each step. Everything is elementwise and the parameter
update is Δw = −lr · rule.

`str(rule)` is the canonical text form (see `lopt.rules.text`); `repr(rule)` is
`parse('<text>')`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

WEIGHT_SCALES = (1e-4, 1e-3, 1e-2, 1e-1)
WEIGHT_OPERANDS = ("1e-4*w", "1e-3*w", "1e-2*w", "1e-1*w")
OPERANDS = (
    "g", "g2", "g3", "m", "v", "gamma", "one", "noise", "adam", "rmsprop", *WEIGHT_OPERANDS
)  # fmt: skip
UNARY_FUNCTIONS = ("neg", "exp", "log", "clip", "drop", "sign")
CLIP_BOUNDS = (1e-5, 1e-4, 1e-3)
DROP_RATES = (0.1, 0.3, 0.5)
BINARY_OPS = ("+", "-", "*", "/")

_CONSTANTS = {"clip": CLIP_BOUNDS, "drop": DROP_RATES}


@dataclasses.dataclass(frozen=True, repr=False)
class Rule:
    """Base class of rule nodes; `str` gives the canonical text, `repr` a `parse` call."""

    def __str__(self) -> str:
        from lopt.rules.text import to_text  # text.py builds on this module

        return to_text(self)

    def __repr__(self) -> str:
        return f"parse({str(self)!r})"


@dataclasses.dataclass(frozen=True, repr=False)
class Operand(Rule):
    """A leaf: one of `OPERANDS`."""

    name: str

    def __post_init__(self):
        if self.name not in OPERANDS:
            raise ValueError(f"unknown operand {self.name!r}; allowed: {', '.join(OPERANDS)}")


@dataclasses.dataclass(frozen=True, repr=False)
class Unary(Rule):
    """`fn(arg)` or `fn(arg, const)` for clip and drop."""

    fn: str
    arg: Rule
    const: float | None = None

    def __post_init__(self):
        if self.fn not in UNARY_FUNCTIONS:
            raise ValueError(f"unknown unary {self.fn!r}; allowed: {', '.join(UNARY_FUNCTIONS)}")
        allowed = _CONSTANTS.get(self.fn, (None,))
        if self.const not in allowed:
            raise ValueError(f"{self.fn} takes a constant in {allowed}, got {self.const!r}")
        if not isinstance(self.arg, Rule):
            raise TypeError(f"argument of {self.fn} must be a Rule, got {self.arg!r}")


@dataclasses.dataclass(frozen=True, repr=False)
class Binary(Rule):
    """`left op right`."""

    op: str
    left: Rule
    right: Rule

    def __post_init__(self):
        if self.op not in BINARY_OPS:
            raise ValueError(f"unknown binary {self.op!r}; allowed: {' '.join(BINARY_OPS)}")
        if not (isinstance(self.left, Rule) and isinstance(self.right, Rule)):
            raise TypeError(f"arguments of {self.op} must be Rules")


def nodes(rule: Rule) -> Iterator[Rule]:
    """Yields every node of `rule`, parents before children, left before right."""
    yield rule
    if isinstance(rule, Unary):
        yield from nodes(rule.arg)
    elif isinstance(rule, Binary):
        yield from nodes(rule.left)
        yield from nodes(rule.right)


def operand_names(rule: Rule) -> frozenset[str]:
    """The set of operand names that `rule` reads, e.g. {'g', 'm'} for PowerSign."""
    return frozenset(node.name for node in nodes(rule) if isinstance(node, Operand))


def is_random(rule: Rule) -> bool:
    """Whether `rule` draws random numbers (it uses `noise` or `drop`)."""
    return any(
        (isinstance(node, Operand) and node.name == "noise")
        or (isinstance(node, Unary) and node.fn == "drop")
        for node in nodes(rule)
    )
