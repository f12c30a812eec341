"""The learned optimizers shipped in lopt/pretrained/: they load, say how they were trained,
and beat tuned gradient descent on fresh problems of their family."""

import json
import os

import jax
import numpy as np
import pytest

from lopt import baselines, evaluation, gps, objectives


def test_shipped_optimizers_are_listed_and_unknown_names_are_refused():
    assert "logistic_regression" in gps.available_pretrained()
    with pytest.raises(ValueError, match="no pretrained learned optimizer for 'rosenbrock'"):
        gps.pretrained("rosenbrock")


@pytest.mark.parametrize("family_name", gps.available_pretrained())
def test_pretrained_optimizer_beats_tuned_gradient_descent_on_fresh_problems(family_name):
    learned = gps.pretrained(family_name)
    with open(os.path.join(gps.learned.PRETRAINED_DIR, family_name,
                           gps.learned.PROVENANCE_FILE)) as file:
        provenance = json.load(file)
    assert provenance["command"].startswith("python -m experiments.reproduce")
    family = objectives.get(family_name)
    assert learned.dim == family.dim and learned.family == family.name
    key_tune, key_test, key_init = jax.random.split(jax.random.key(2026), 3)
    factory = baselines.get("gradient_descent")
    best = baselines.tune(factory, baselines.DEFAULT_GRIDS["gradient_descent"], family,
                          family.sample(key_tune, 20), 40, key=key_tune).best
    test, x0 = family.sample(key_test, 20), family.init(key_init, 20)
    learned_curves = evaluation.run(gps.as_optax(learned), family, test, 40, x0=x0)
    descent_curves = evaluation.run(factory(**best), family, test, 40, x0=x0)
    assert np.mean(learned_curves[:, 1:]) < np.mean(descent_curves[:, 1:])
