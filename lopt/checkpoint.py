"""Run state on disk: atomic, versioned, pickle-free pytree files that know which run wrote them.

    run = checkpoint.identity(config, key, data=train_problems)
    checkpoint.save(path, state, identity=run, metadata={"next_iteration": 3})
    state, metadata = checkpoint.load(path, template, identity=run)

A file is one NumPy `.npz` archive, read with `allow_pickle=False`: the pytree's leaves as
`leaf_0 … leaf_{n-1}` (PRNG key leaves as their key data) and `__header__`, UTF-8 JSON bytes
holding the format name, `VERSION`, the run identity and the caller's JSON metadata. It is written
to a temporary file, flushed to disk and renamed over the old one, so a killed writer leaves the
previous file intact. Loading needs a template pytree (arrays or `jax.ShapeDtypeStruct`s) of the
same structure and shapes; leaves come back as NumPy arrays of the dtypes they were saved with
(PRNG key leaves as keys).

A run identity is a flat {field: JSON value} dict: the config's fields (dotted names for nested
dataclasses and dicts), `key` (the PRNG key data as nested lists) and `data` (a SHA-256
fingerprint of the problems or task data). `load` refuses a file whose identity differs, naming
every differing field.
"""

import dataclasses
import hashlib
import io
import json
import os
import zipfile
from typing import Any

import jax
import numpy as np

FORMAT = "lopt.checkpoint"
VERSION = 1
HEADER = "__header__"


def _json_value(value: Any) -> Any:
    """`value` as plain JSON (tuples become lists; anything else JSON lacks becomes its str)."""
    return json.loads(json.dumps(value, default=str))


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A dataclass or dict (nested) as {dotted field name: JSON value}."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = ((field.name, getattr(value, field.name)) for field in dataclasses.fields(value))
    elif isinstance(value, dict):
        items = value.items()
    else:
        return {prefix[:-1]: _json_value(value)}
    return {key: item for name, child in items
            for key, item in flatten(child, f"{prefix}{name}.").items()}


def _is_key(leaf) -> bool:
    return jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key)


def _as_numpy(leaf) -> np.ndarray:
    return np.asarray(jax.random.key_data(leaf) if _is_key(leaf) else leaf)


def data_fingerprint(tree: Any) -> str:
    """SHA-256 (hex) of a pytree's structure and every leaf's dtype, shape and bytes."""
    digest = hashlib.sha256(str(jax.tree.structure(tree)).encode())
    for leaf in jax.tree.leaves(tree):
        array = np.ascontiguousarray(_as_numpy(leaf))
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def identity(config: Any, key: jax.Array, data: Any = None) -> dict[str, Any]:
    """The identity of a run: `config`'s fields (a dataclass or dict, flattened), the PRNG
    `key`'s data and a fingerprint of `data` (any pytree; None for data-free runs)."""
    fields = flatten(config)
    fields["key"] = _as_numpy(key).tolist()
    fields["data"] = None if data is None else data_fingerprint(data)
    return fields


def differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The fields (sorted) whose values differ between two identities, missing ones included."""
    return sorted(name for name in saved.keys() | current.keys()
                  if saved.get(name) != current.get(name))


def check_identity(saved: dict[str, Any], current: dict[str, Any], where: str) -> None:
    """Raises ValueError naming each differing field if the identities differ."""
    differing = differences(saved, current)
    if not differing:
        return
    shown = lambda value: (repr(value) if len(repr(value)) <= 40
                           else repr(value)[:37] + "...")
    details = ", ".join(f"{name} ({shown(saved.get(name))} there, "
                        f"{shown(current.get(name))} now)" for name in differing)
    raise ValueError(f"{where} belongs to a different run: {details}")


def write_atomically(path: str, payload: bytes) -> None:
    """Writes `payload` to `path` through a temporary file, fsync and rename."""
    temporary = path + ".tmp"
    with open(temporary, "wb") as file:
        file.write(payload)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def save(path: str, tree: Any, *, identity: dict[str, Any] | None = None,
         metadata: dict[str, Any] | None = None) -> None:
    """Writes `tree` with its run `identity` and JSON `metadata` to the file `path`."""
    header = {"format": FORMAT, "version": VERSION, "identity": identity,
              "metadata": metadata or {}}
    arrays = {f"leaf_{i}": _as_numpy(leaf) for i, leaf in enumerate(jax.tree.leaves(tree))}
    arrays[HEADER] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomically(path, buffer.getvalue())


def _read(path: str, with_leaves: bool = True, contents: bytes | None = None
          ) -> tuple[dict[str, Any], list[np.ndarray]]:
    """(header, leaves) of a checkpoint file, or of `contents` (the bytes of the file `path`)
    when given (no leaves read unless `with_leaves`); ValueError for anything that is not
    one."""
    try:
        source = path if contents is None else io.BytesIO(contents)
        with np.load(source, allow_pickle=False) as stored:
            if HEADER not in stored.files:
                raise ValueError("it has no lopt header")
            header = json.loads(stored[HEADER].tobytes().decode())
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                raise ValueError("it has no lopt header")
            if header.get("version") != VERSION:
                raise ValueError(f"version {header.get('version')!r} is not supported (this "
                                 f"lopt reads version {VERSION})")
            count = len(stored.files) - 1 if with_leaves else 0
            leaves = [stored[f"leaf_{i}"] for i in range(count)]
    except (OSError, EOFError, KeyError, ValueError, UnicodeDecodeError,
            zipfile.BadZipFile) as error:
        raise ValueError(f"{path!r} is not a readable lopt checkpoint: {error}") from error
    return header, leaves


def _restore_leaf(stored: np.ndarray, want) -> Any:
    """A stored leaf as saved, or a PRNG key from its key data where `want` is a key."""
    if not _is_key(want):
        return stored
    impl = jax.random.key_impl(want) if isinstance(want, jax.Array) else None
    return jax.random.wrap_key_data(stored, impl=impl)


def metadata(path: str) -> dict[str, Any]:
    """The JSON metadata stored in the checkpoint file `path` (its arrays are not read)."""
    return _read(path, with_leaves=False)[0]["metadata"]


def check(path: str, identity: dict[str, Any], contents: bytes | None = None) -> None:
    """Raises ValueError naming each differing field if the checkpoint file `path` (or its
    `contents`, when given) belongs to another run than `identity` (its arrays are not read):
    for refusing before any work."""
    header, _ = _read(path, with_leaves=False, contents=contents)
    check_identity(header["identity"] or {}, identity, f"the checkpoint {path!r}")


def load(path: str, template: Any, *, identity: dict[str, Any] | None = None,
         contents: bytes | None = None) -> tuple[Any, dict[str, Any]]:
    """(tree, metadata) from the file `path`, shaped like `template`; from `contents`, the
    file's bytes read elsewhere (`lopt.distributed.from_writer`), when given.

    Raises:
      ValueError: a missing, truncated or foreign file, another format version, a file of a
        different run than `identity` (each differing field named), or leaves that do not
        match the template's structure and shapes.
    """
    if contents is None and not os.path.isfile(path):
        raise ValueError(f"no checkpoint at {path!r}")
    if identity is not None:
        check(path, identity, contents)
    header, leaves = _read(path, contents=contents)
    expected = jax.tree.leaves(template)
    shape = lambda leaf: tuple(jax.random.key_data(leaf).shape if _is_key(leaf) else leaf.shape)
    if [leaf.shape for leaf in leaves] != [shape(leaf) for leaf in expected]:
        raise ValueError(f"the checkpoint {path!r} holds arrays of shapes "
                         f"{[leaf.shape for leaf in leaves]}, this run expects "
                         f"{[shape(leaf) for leaf in expected]}")
    restored = [_restore_leaf(stored, want) for stored, want in zip(leaves, expected, strict=True)]
    return jax.tree.unflatten(jax.tree.structure(template), restored), header["metadata"]
