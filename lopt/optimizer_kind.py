"""An optax optimizer split into its kind (static, hashable) and its numbers (traceable).

An optax `GradientTransformation` is a pair of closures: `optax.sgd(0.1)` and `optax.sgd(0.2)`,
or two separate calls of `optax.sgd(0.1)`, are different objects, so a `jax.jit` that takes the
optimizer as a static argument compiles again for each. `split(opt)` walks the closures (and
the tuples, lists and dicts they hold) and returns

  kind:    a hashable description: every function's code, every static value (ints, bools,
           strings, None, hashable objects) and where each number sits;
  numbers: the Python floats and arrays found there, in walk order (a list, a pytree);

and `kind.rebuild(numbers)` makes the optimizer again from (possibly traced) numbers. Two
optimizers built by the same factory with different floats have equal kinds, so a jitted
function of `(kind, numbers)` compiles once per kind. Ints and bools stay static, since optax
uses them for shapes and branches. An object that is neither hashable nor a container is
keyed by its identity (one compilation per object, as with a plain static argument).
"""

from __future__ import annotations

import types
from typing import Any

import jax
import numpy as np

_NUMBER = ("number",)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, (float, np.floating, np.ndarray, jax.Array))


def _describe(value: Any, numbers: list, active: set[int]) -> Any:
    """The hashable key of `value`; appends the numbers found to `numbers`."""
    if _is_number(value):
        numbers.append(value)
        return _NUMBER
    if isinstance(value, types.FunctionType):
        if id(value) in active:  # a closure that refers to itself
            return ("recursive", value.__code__)
        active.add(id(value))
        cells = tuple(_describe(_cell_contents(cell), numbers, active)
                      for cell in value.__closure__ or ())
        defaults = _describe(value.__defaults__, numbers, active)
        active.discard(id(value))
        return ("function", value.__code__, id(value.__globals__), defaults, cells)
    if isinstance(value, (tuple, list)):
        return (type(value), tuple(_describe(item, numbers, active) for item in value))
    if isinstance(value, dict):
        return (dict, tuple(value), tuple(_describe(item, numbers, active)
                                          for item in value.values()))
    try:
        hash(value)
    except TypeError:
        return ("object", id(value))
    return ("static", value)


_EMPTY = object()


def _cell_contents(cell) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # a cell not yet filled
        return _EMPTY


def _rebuild(value: Any, numbers, done: dict[int, Any]) -> Any:
    """`value` with its numbers replaced, in `_describe`'s walk order, by `next(numbers)`;
    `done` maps the functions being rebuilt to their copies (for self-referring closures)."""
    if _is_number(value):
        return next(numbers)
    if isinstance(value, types.FunctionType):
        if id(value) in done:
            return done[id(value)]
        if not value.__closure__ and not value.__defaults__:
            return value
        cells = tuple(types.CellType() for _ in value.__closure__ or ())
        rebuilt = types.FunctionType(value.__code__, value.__globals__, value.__name__, None,
                                     cells or None)
        done[id(value)] = rebuilt
        for cell, old in zip(cells, value.__closure__ or (), strict=True):
            if (contents := _cell_contents(old)) is not _EMPTY:
                cell.cell_contents = _rebuild(contents, numbers, done)
        rebuilt.__defaults__ = _rebuild(value.__defaults__, numbers, done)
        rebuilt.__kwdefaults__ = value.__kwdefaults__
        del done[id(value)]
        return rebuilt
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a NamedTuple
        return type(value)(*(_rebuild(item, numbers, done) for item in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_rebuild(item, numbers, done) for item in value)
    if isinstance(value, dict):
        return {key: _rebuild(item, numbers, done) for key, item in value.items()}
    return value


class Kind:
    """The static part of an optimizer (`split`): equal for optimizers that differ only in
    their numbers; `rebuild(numbers)` gives the optimizer with those numbers."""

    def __init__(self, key: Any, template: Any, num_numbers: int):
        self._key, self._template, self.num_numbers = key, template, num_numbers

    def __eq__(self, other) -> bool:
        return isinstance(other, Kind) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def rebuild(self, numbers: list) -> Any:
        """The optimizer of this kind with `numbers` (as `split` returned them, or traced)."""
        if len(numbers) != self.num_numbers:
            raise ValueError(f"this optimizer kind holds {self.num_numbers} numbers, "
                             f"got {len(numbers)}")
        return _rebuild(self._template, iter(numbers), {})


def split(opt: Any) -> tuple[Kind, list]:
    """(kind, numbers) of an optimizer (module docstring); `kind.rebuild(numbers)` gives it
    back."""
    numbers: list = []
    key = _describe(opt, numbers, set())
    return Kind(key, opt, len(numbers)), numbers
