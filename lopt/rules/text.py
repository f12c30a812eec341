"""Text form of rules: `parse` (Python syntax read with `ast`, never `eval`) and `to_text`.

Grammar (Python expression syntax, elementwise semantics in `lopt.rules.expression`):

    rule    := rule + rule | rule - rule | rule * rule | rule / rule | -rule | call | operand
    call    := exp(rule) | log(rule) | sign(rule) | clip(rule, 1e-5|1e-4|1e-3)
             | drop(rule, 0.1|0.3|0.5)
    operand := g | g2 | g3 | m | v | gamma | one | noise | adam | rmsprop
             | 1e-4*w | 1e-3*w | 1e-2*w | 1e-1*w

The canonical text has spaces around binary operators, none inside a scaled weight
(`1e-3*w`), and only the parentheses that Python's precedence needs to give back the same
tree: `+ -` bind loosest, then `* /` (a scaled weight counts as a product), then unary `-`;
binary operators associate to the left, so `a - (b - c)` keeps its parentheses.
"""

from __future__ import annotations

import ast

from lopt.rules.expression import (
    BINARY_OPS,
    CLIP_BOUNDS,
    DROP_RATES,
    OPERANDS,
    WEIGHT_OPERANDS,
    WEIGHT_SCALES,
    Binary,
    Operand,
    Rule,
    Unary,
)

_FUNCTIONS = {"exp": 1, "log": 1, "sign": 1, "clip": 2, "drop": 2}
_FUNCTION_CONSTANTS = {"clip": CLIP_BOUNDS, "drop": DROP_RATES}
_BINARY_AST = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_NEG_PRECEDENCE = 3
_ATOM_PRECEDENCE = 4
_ALLOWED = (
    f"operands: {', '.join(OPERANDS)}; functions: exp(x), log(x), sign(x), "
    f"clip(x, l) with l in {{1e-5, 1e-4, 1e-3}}, drop(x, p) with p in {{0.1, 0.3, 0.5}}; "
    f"operators: {' '.join(BINARY_OPS)} and unary -"
)


class RuleSyntaxError(ValueError):
    """Rule text outside the language; the message names the offending token."""


def parse(text: str) -> Rule:
    """Reads a rule from its text form.

    Args:
      text: a Python expression in the rule language, e.g. "g * exp(sign(g) * sign(m))".

    Returns:
      The `Rule` tree; `parse(str(rule)) == rule` for every rule.

    Raises:
      RuleSyntaxError: for empty text, anything that is not a single expression, unknown
        names, functions called with the wrong number of arguments and constants outside the
        allowed sets. The message names the offending token and lists what is allowed.

    Example:
      >>> str(parse("(exp(sign(g)*sign(m)) + clip(g, 0.0001)) * g"))
      '(exp(sign(g) * sign(m)) + clip(g, 1e-4)) * g'
    """
    if not isinstance(text, str):
        raise RuleSyntaxError(f"rule text must be a str, got {type(text).__name__}")
    if not text.strip():
        raise RuleSyntaxError(f"empty rule text; write an expression over {_ALLOWED}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        raise RuleSyntaxError(
            f"{text!r} is not a single expression ({error.msg}); write an expression over "
            f"{_ALLOWED}"
        ) from None
    return _from_ast(tree.body)


def _fail(node: ast.AST, problem: str) -> RuleSyntaxError:
    return RuleSyntaxError(f"{problem} in {ast.unparse(node)!r}; allowed are {_ALLOWED}")


def _constant(node: ast.AST) -> float | None:
    """The number in `node` if it is a plain int or float literal, else None."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    return None


def _from_ast(node: ast.AST) -> Rule:
    if isinstance(node, ast.Name):
        if node.id in OPERANDS:
            return Operand(node.id)
        if node.id == "w":
            raise _fail(node, "the weight 'w' appears only scaled, as 1e-4*w ... 1e-1*w")
        if node.id in _FUNCTIONS:
            raise _fail(node, f"function {node.id!r} used without a call")
        raise _fail(node, f"unknown name {node.id!r}")
    if isinstance(node, ast.BinOp):
        scale = _constant(node.left)
        if isinstance(node.op, ast.Mult) and isinstance(node.right, ast.Name):
            if node.right.id == "w" and scale is not None:
                if scale not in WEIGHT_SCALES:
                    raise _fail(node, f"weight scale {scale!r} is not one of {WEIGHT_SCALES}")
                return Operand(WEIGHT_OPERANDS[WEIGHT_SCALES.index(scale)])
        if type(node.op) not in _BINARY_AST:
            raise _fail(node, f"operator {type(node.op).__name__!r} is not supported")
        return Binary(_BINARY_AST[type(node.op)], _from_ast(node.left), _from_ast(node.right))
    if isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, ast.USub):
            raise _fail(node, f"unary operator {type(node.op).__name__!r} is not supported")
        return Unary("neg", _from_ast(node.operand))
    if isinstance(node, ast.Call):
        return _call_from_ast(node)
    if _constant(node) is not None:
        raise _fail(
            node,
            f"number {node.value!r} is not allowed here (numbers appear only as clip bounds, "
            "drop rates and weight scales)",
        )
    raise _fail(node, f"unsupported syntax {type(node).__name__!r}")


def _call_from_ast(node: ast.Call) -> Rule:
    name = ast.unparse(node.func)
    if name not in _FUNCTIONS:
        raise _fail(node, f"unknown function {name!r}")
    if node.keywords:
        raise _fail(node, f"{name} takes no keyword arguments")
    arity = _FUNCTIONS[name]
    if len(node.args) != arity:
        raise _fail(node, f"{name} takes {arity} argument(s), got {len(node.args)}")
    arg = _from_ast(node.args[0])
    if arity == 1:
        return Unary(name, arg)
    allowed = _FUNCTION_CONSTANTS[name]
    const = _constant(node.args[1])
    if const not in allowed:
        raise _fail(node, f"{name} constant {ast.unparse(node.args[1])!r} is not one of {allowed}")
    return Unary(name, arg, allowed[allowed.index(const)])


def to_text(rule: Rule) -> str:
    """Canonical text of `rule` with minimal parentheses (see the module docstring).

    Example:
      >>> to_text(Binary("*", Operand("g"), Operand("1e-3*w")))
      'g * (1e-3*w)'
    """
    return _text_and_precedence(rule)[0]


def _number(value: float) -> str:
    return f"{value:.0e}".replace("e-0", "e-") if value < 0.01 else repr(value)


def _text_and_precedence(rule: Rule) -> tuple[str, int]:
    if isinstance(rule, Operand):
        is_product = rule.name in WEIGHT_OPERANDS
        return rule.name, _PRECEDENCE["*"] if is_product else _ATOM_PRECEDENCE
    if isinstance(rule, Unary):
        arg, arg_precedence = _text_and_precedence(rule.arg)
        if rule.fn == "neg":
            return f"-{_wrap(arg, arg_precedence < _NEG_PRECEDENCE)}", _NEG_PRECEDENCE
        const = "" if rule.const is None else f", {_number(rule.const)}"
        return f"{rule.fn}({arg}{const})", _ATOM_PRECEDENCE
    precedence = _PRECEDENCE[rule.op]
    left, left_precedence = _text_and_precedence(rule.left)
    right, right_precedence = _text_and_precedence(rule.right)
    left = _wrap(left, left_precedence < precedence)
    right = _wrap(right, right_precedence <= precedence)
    return f"{left} {rule.op} {right}", precedence


def _wrap(text: str, needed: bool) -> str:
    return f"({text})" if needed else text
