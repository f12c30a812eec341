"""The learned optimizers shipped in lopt/pretrained/: they load, say how they were trained,
and beat tuned gradient descent (SGD for the coordinate-wise one) on fresh problems of their
family."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt import baselines, evaluation, gps, objectives
from lopt.gps import network_family as nf

COORDINATEWISE = "neural_nets"
FIXED_DIMENSION = [name for name in gps.available_pretrained() if name != COORDINATEWISE]


def provenance(family_name):
    with open(os.path.join(gps.learned.PRETRAINED_DIR, family_name,
                           gps.learned.PROVENANCE_FILE)) as file:
        return json.load(file)


def test_shipped_optimizers_are_listed_and_unknown_names_are_refused():
    assert "logistic_regression" in gps.available_pretrained()
    with pytest.raises(ValueError, match="no pretrained learned optimizer for 'rosenbrock'"):
        gps.pretrained("rosenbrock")


@pytest.mark.parametrize("family_name", FIXED_DIMENSION)
def test_pretrained_optimizer_beats_tuned_gradient_descent_on_fresh_problems(family_name):
    learned = gps.pretrained(family_name)
    assert provenance(family_name)["command"].startswith("python -m experiments.reproduce")
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


def test_pretrained_coordinatewise_optimizer_beats_tuned_sgd_on_a_fresh_digits_net():
    """On a 48-48-10 net of the training distribution (a fresh projection and initial
    params), 400 steps: a smaller mean full-batch loss than SGD at the best of four rates."""
    learned = gps.pretrained(COORDINATEWISE)
    assert isinstance(learned, gps.CoordinateLearned) and learned.family == COORDINATEWISE
    assert provenance(COORDINATEWISE)["command"].startswith(
        "python -m experiments.reproduce --which=lto_nets")
    family = nf.NetworkFamily()
    data = nf.projected_digits(jax.random.key(2026))
    params = family.init(jax.random.key(2027))
    keys = jax.random.split(jax.random.key(2028), 400)

    def mean_loss(opt):
        def step(carry, key):
            params, state = carry
            value, grad = jax.value_and_grad(family.minibatch_loss)(params, data, key)
            updates, state = opt.update(grad, state, params, value=value)
            return (optax.apply_updates(params, updates), state), family.full_loss(params, data)
        _, losses = jax.lax.scan(step, (params, opt.init(params)), keys)
        return jnp.mean(losses)

    sgd = jax.jit(jax.vmap(lambda rate: mean_loss(optax.with_extra_args_support(
        optax.inject_hyperparams(optax.sgd)(learning_rate=rate)))))
    sgd_losses = sgd(jnp.array([0.1, 0.3, 1.0, 3.0]))
    learned_loss = jax.jit(lambda: mean_loss(gps.as_optax(learned)))()
    assert float(learned_loss) < float(jnp.nanmin(sgd_losses))
