"""A learned optimizer: the trained policy as "predicted step descent", and its file format.

`Learned` is what `lopt.gps.train` returns. `as_optax(learned)` is an
`optax.GradientTransformationExtraArgs` whose `update(grad, state, params, *, value)` builds
the same state as the training rollouts (`lopt.gps.features`) from the gradients and objective
values it is given, and returns the policy's mean step (updates are *added* to the params).
It works on flat vectors and on pytrees whose total size is the trained dimension. The other
kind, `coordinate_learned.CoordinateLearned` (coordinate-wise GPS), works on any pytree;
`as_optax`, `save` and `load` take either kind.

Files (`save` / `load`): a directory holding `learned.npz`, a `lopt.checkpoint` file of the
policy's arrays whose metadata holds the format name, version, dimension, feature set, family
name and training history; a "kind" entry says which kind of learned optimizer it holds
("fixed_dimension" where absent, as in files written before the coordinate-wise kind).
"""

from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from lopt import checkpoint
from lopt.gps import coordinate_features as cf
from lopt.gps import coordinate_learned
from lopt.gps import features as feats
from lopt.gps import policy as policy_lib

FORMAT = "lopt.gps.learned"
VERSION = 3  # 3: one lopt.checkpoint file; 2: inputs clipped at 20 standard deviations (1: 5)
FILE = "learned.npz"


@dataclasses.dataclass(frozen=True)
class Learned:
    """A trained policy (`lopt.gps.policy.Policy`, whitening included), the feature set it
    reads, the dimension it was trained on, the family's name and the training history (one
    dict of scalars per GPS iteration)."""

    policy: policy_lib.Policy
    features: feats.FeatureConfig
    dim: int
    family: str = ""
    history: tuple = ()


class PredictedStepState(NamedTuple):
    """State of predicted step descent: count `[]` int32, the feature state `[dX]` of the
    last step (its iterate part is unused and kept at zero), the last step `[dU]`, and the
    objective value `[]` and flat gradient `[dU]` it was taken at."""

    count: jax.Array
    state: jax.Array
    action: jax.Array
    value: jax.Array
    gradient: jax.Array


def _flat(tree, dim: int, what: str):
    flat, unravel = ravel_pytree(tree)
    if flat.size != dim:
        raise ValueError(f"predicted step descent was trained on {dim} parameters, but the "
                         f"{what} has {flat.size} in total (shapes "
                         f"{jax.tree.map(jnp.shape, tree)})")
    return flat, unravel


def predicted_step_descent(policy: policy_lib.Policy, features: feats.FeatureConfig,
                           dim: int) -> optax.GradientTransformationExtraArgs:
    """The policy as an optax transformation (module docstring); traceable in `policy`."""
    layout = features.layout(dim)

    def init(params):
        flat, _ = _flat(params, dim, "params pytree")
        dtype = flat.dtype
        return PredictedStepState(jnp.zeros([], jnp.int32), jnp.zeros(layout.size, dtype),
                                  jnp.zeros(dim, dtype), jnp.zeros([], dtype),
                                  jnp.zeros(dim, dtype))

    def update(updates, state, params=None, *, value=None, **extra_args):
        del params, extra_args
        if value is None:
            raise ValueError("predicted step descent needs the objective value: call "
                             "update(grad, state, params, value=f(params))")
        gradient, unravel = _flat(updates, dim, "gradient pytree")
        dtype = gradient.dtype
        value = jnp.asarray(value, dtype)
        slot0 = gradient if features.current_gradient else jnp.zeros_like(gradient)
        first = feats.initial_state(layout, jnp.zeros(dim, dtype), slot0)
        newest = gradient if features.current_gradient else state.gradient
        observation = jnp.concatenate([(value - state.value)[None], newest])
        later = feats.next_state(layout, state.state, state.action, observation)
        later = later.at[:dim].set(0.0)
        current = jnp.where(state.count == 0, first, later)
        cast = jax.tree.map(lambda a: jnp.asarray(a, dtype), policy)
        action = policy_lib.state_mean(layout, cast, current)
        new_state = PredictedStepState(state.count + 1, current, action, value, gradient)
        return unravel(action), new_state

    return optax.GradientTransformationExtraArgs(init, update)


def as_optax(learned) -> optax.GradientTransformationExtraArgs:
    """Predicted step descent: `learned`'s policy as an optax optimizer (either kind).

    Its `update` needs `value=` (the objective at `params`), as `optax.lbfgs` does.

    Example:
      >>> opt = lopt.gps.as_optax(learned)
      >>> state = opt.init(x)
      >>> updates, state = opt.update(jax.grad(f)(x), state, x, value=f(x))
      >>> x = optax.apply_updates(x, updates)
    """
    if isinstance(learned, coordinate_learned.CoordinateLearned):
        return coordinate_learned.coordinatewise_step_descent(
            learned.policy, learned.features, learned.activation, learned.scale_gain,
            learned.scale_bound, learned.scale_decay)
    return predicted_step_descent(learned.policy, learned.features, learned.dim)


def save(learned, path: str) -> None:
    """Writes `learned` (either kind) into the directory `path` (created if missing; the file
    overwritten)."""
    coordinatewise = isinstance(learned, coordinate_learned.CoordinateLearned)
    metadata = {
        "format": FORMAT,
        "version": VERSION,
        "kind": "coordinatewise" if coordinatewise else "fixed_dimension",
        "family": learned.family,
        "features": dataclasses.asdict(learned.features),
        "hidden": int(learned.policy.network["Dense_0"]["kernel"].shape[1]),
        "history": list(learned.history),
    }
    if coordinatewise:
        metadata.update(activation=learned.activation, scale_gain=learned.scale_gain,
                        scale_bound=learned.scale_bound, scale_decay=learned.scale_decay)
    else:
        metadata["dim"] = learned.dim
    checkpoint.save(os.path.join(path, FILE), learned.policy, metadata=metadata)


def load(path: str):
    """Reads a learned optimizer (either kind) written by `save`; a clear ValueError for
    anything else."""
    file = os.path.join(path, FILE)
    if not os.path.isfile(file):
        raise ValueError(f"{path!r} is not a learned-optimizer directory: it needs {FILE} "
                         "(written by lopt.gps.save)")
    metadata = checkpoint.metadata(file)
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{file!r} holds {metadata.get('format')!r}, not {FORMAT!r}")
    if metadata.get("version") != VERSION:
        raise ValueError(f"{file!r}: version {metadata.get('version')!r} is not supported "
                         f"(this lopt reads version {VERSION})")
    kind = metadata.get("kind", "fixed_dimension")
    if kind == "coordinatewise":
        # files written before `moments` existed hold policies without the moment inputs
        features = cf.CoordinateFeatureConfig(**{"moments": False, **metadata["features"]})
        template = policy_lib.init(jax.random.key(0), features.observation_size, 1,
                                   int(metadata["hidden"]))
        policy, _ = checkpoint.load(file, template)
        # files written before step-scale adaptation hold a policy used alone (gain 0)
        return coordinate_learned.CoordinateLearned(policy, features, metadata.get("family", ""),
                                                    tuple(metadata.get("history", ())),
                                                    metadata["activation"],
                                                    float(metadata.get("scale_gain", 0.0)),
                                                    float(metadata.get("scale_bound", 3.0)),
                                                    float(metadata.get("scale_decay", 0.0)))
    if kind != "fixed_dimension":
        raise ValueError(f"{file!r} holds a learned optimizer of unknown kind {kind!r}")
    features = feats.FeatureConfig(**metadata["features"])
    dim = int(metadata["dim"])
    template = policy_lib.init(jax.random.key(0), features.state_size(dim) - dim, dim,
                               int(metadata["hidden"]))
    policy, _ = checkpoint.load(file, template)
    return Learned(policy, features, dim, metadata.get("family", ""),
                   tuple(metadata.get("history", ())))


PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "pretrained")
PROVENANCE_FILE = "provenance.json"


def available_pretrained() -> list[str]:
    """Names of the families with a learned optimizer shipped in `lopt/pretrained/`."""
    if not os.path.isdir(PRETRAINED_DIR):
        return []
    return sorted(name for name in os.listdir(PRETRAINED_DIR)
                  if os.path.isfile(os.path.join(PRETRAINED_DIR, name, FILE)))


def pretrained(family: str) -> Learned:
    """The learned optimizer shipped with lopt for `family` (e.g. "logistic_regression").

    Each lives in `lopt/pretrained/FAMILY/` next to `provenance.json`, which records the
    command, seed and scale that trained it (`experiments.reproduce --export_pretrained`).
    """
    names = available_pretrained()
    if family not in names:
        raise ValueError(f"no pretrained learned optimizer for {family!r}; available: {names}")
    return load(os.path.join(PRETRAINED_DIR, family))
