"""Run-state files: round trips, run identity, and clear errors for anything else."""

import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt import checkpoint


class State(NamedTuple):
    weights: dict
    step: jax.Array
    key: jax.Array


def _state(seed=0):
    return State({"w": jnp.arange(6.0).reshape(2, 3) + seed, "b": np.float64([1.5, -2.0])},
                 jnp.int32(7), jax.random.key(seed))


def _identity(**changes):
    config = {"learning_rate": 0.1, "inner": {"steps": 3, "sizes": (1, 2)}, **changes}
    return checkpoint.identity(config, jax.random.key(0), data={"x": np.ones((4, 2))})


def test_round_trip_keeps_values_dtypes_keys_and_metadata(tmp_path):
    path = str(tmp_path / "sub" / "state.npz")
    state = _state(3)
    checkpoint.save(path, state, identity=_identity(), metadata={"iteration": 4, "h": [0.25]})
    restored, metadata = checkpoint.load(path, _state(), identity=_identity())
    assert metadata == {"iteration": 4, "h": [0.25]}
    assert isinstance(restored, State)
    np.testing.assert_array_equal(restored.weights["w"], state.weights["w"])
    assert restored.weights["b"].dtype == np.float64 and restored.step.dtype == np.int32
    # The key comes back as a key with the same stream.
    np.testing.assert_array_equal(jax.random.normal(restored.key, (3,)),
                                  jax.random.normal(state.key, (3,)))
    assert os.listdir(tmp_path / "sub") == ["state.npz"]  # no temporary file left behind
    with np.load(path, allow_pickle=False) as stored:  # readable without pickle
        assert "leaf_0" in stored.files


def test_identity_flattens_nested_config_and_fingerprints_data():
    identity = _identity()
    assert identity["inner.steps"] == 3 and identity["inner.sizes"] == [1, 2]
    assert identity["key"] == [0, 0]
    same = checkpoint.identity({}, jax.random.key(0), data={"x": np.ones((4, 2))})["data"]
    other = checkpoint.identity({}, jax.random.key(0), data={"x": np.ones((2, 4))})["data"]
    changed = np.ones((4, 2))
    changed[3, 1] = 1 + 1e-12
    assert same == identity["data"]
    assert other != same  # same bytes, other shape
    assert checkpoint.identity({}, jax.random.key(0), data={"x": changed})["data"] != same


@pytest.mark.parametrize("changes, named", [
    ({"learning_rate": 0.2}, "learning_rate (0.1 there, 0.2 now)"),
    ({"inner": {"steps": 4, "sizes": (1, 2)}}, "inner.steps (3 there, 4 now)"),
])
def test_a_different_config_is_refused_naming_the_field(tmp_path, changes, named):
    path = str(tmp_path / "state.npz")
    checkpoint.save(path, _state(), identity=_identity())
    with pytest.raises(ValueError, match="belongs to a different run") as error:
        checkpoint.load(path, _state(), identity=_identity(**changes))
    assert named in str(error.value)


def test_another_key_or_other_data_is_refused(tmp_path):
    path = str(tmp_path / "state.npz")
    checkpoint.save(path, _state(), identity=_identity())
    other_key = {**_identity(), "key": checkpoint.identity({}, jax.random.key(1))["key"]}
    with pytest.raises(ValueError, match=r"different run: key \(\[0, 0\] there, \[0, 1\] now\)"):
        checkpoint.load(path, _state(), identity=other_key)
    other_data = checkpoint.identity({"learning_rate": 0.1, "inner": {"steps": 3,
                                                                        "sizes": (1, 2)}},
                                     jax.random.key(0), data={"x": np.zeros((4, 2))})
    with pytest.raises(ValueError, match=r"different run: data \("):
        checkpoint.load(path, _state(), identity=other_data)


def test_truncated_foreign_and_mismatched_files_give_one_line_errors(tmp_path):
    path = str(tmp_path / "state.npz")
    with pytest.raises(ValueError, match="no checkpoint at"):
        checkpoint.load(path, _state())
    checkpoint.save(path, _state(), identity=_identity())
    with open(path, "rb") as file:
        payload = file.read()
    with open(path, "wb") as file:
        file.write(payload[: len(payload) // 2])
    with pytest.raises(ValueError, match="is not a readable lopt checkpoint"):
        checkpoint.load(path, _state())
    np.savez(path, leaf_0=np.zeros(3))  # an npz archive, but not ours
    with pytest.raises(ValueError, match="is not a readable lopt checkpoint: it has no lopt"):
        checkpoint.load(path, _state())
    with open(path, "w") as file:
        file.write("plain text")
    with pytest.raises(ValueError, match="is not a readable lopt checkpoint"):
        checkpoint.load(path, _state())
    checkpoint.save(path, _state())
    smaller = _state()._replace(weights={"w": jnp.zeros((2, 2)), "b": np.zeros(2)})
    with pytest.raises(ValueError, match="holds arrays of shapes"):
        checkpoint.load(path, smaller)
