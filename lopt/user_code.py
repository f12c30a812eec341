"""A user's own task or family, named on a command line or in a config as "module:attribute".

    family = user_code.load("my_project.problems:ridge", "family")

The module is imported (from `sys.path`, which includes the working directory when Python
runs a module with `-m`), the attribute read, and, if it is callable (a function or a class),
called without arguments. A config can then record the spec as text, so a run that uses the
object can be resumed by another process.
"""

from __future__ import annotations

import importlib
from typing import Any


def is_spec(text: str) -> bool:
    """Whether `text` has the form "module:attribute"."""
    module, _, attribute = text.partition(":")
    return bool(module) and attribute.isidentifier()


def load(spec: str, what: str) -> Any:
    """The object `spec` ("module:attribute") names, called if callable; a one-line
    ValueError naming `what` (e.g. "task") when the module or attribute is missing."""
    if not is_spec(spec):
        raise ValueError(f"{what} {spec!r} is neither a known name nor 'module:attribute'")
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"{what} {spec!r}: cannot import module {module_name!r} ({error})") \
            from None
    if not hasattr(module, attribute):
        raise ValueError(f"{what} {spec!r}: module {module_name!r} has no attribute "
                         f"{attribute!r}")
    value = getattr(module, attribute)
    return value() if callable(value) else value
