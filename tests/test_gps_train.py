"""The GPS outer loop on the smoke preset: it learns, and kill-and-resume changes nothing."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_in_this_process, run_on_devices

from lopt import gps, objectives
from lopt.gps import initialisation, trainer

FAMILY = objectives.logistic_regression()
CONFIG = gps.Config.preset("smoke")
PROBLEMS = FAMILY.sample(jax.random.key(0), 4)
KEY = jax.random.key(1)


class Killed(Exception):
    pass


def _kill_after_first_iteration(index, record):
    del record
    if index == 0:
        raise Killed


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return trainer.train(FAMILY, PROBLEMS, CONFIG, KEY,
                         checkpoint_dir=str(tmp_path_factory.mktemp("uninterrupted")))


def _without_timings(history):
    return [{k: v for k, v in record.items() if "seconds" not in k} for record in history]


def _training_setup(config):
    """What `trainer.train` starts from (call inside `jax.enable_x64()`): the training problems,
    the training starts, the fresh starts its validation runs from, and the initial TrainState
    (built with the trainer's compiled functions, already compiled by the fixture's run)."""
    problems = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), PROBLEMS)
    key_x0, key_state, _ = jax.random.split(KEY, 3)
    x0 = FAMILY.init(key_x0, 4).astype(jnp.float64)
    fresh = FAMILY.init(jax.random.fold_in(key_x0, 1), 4).astype(jnp.float64)
    state = trainer.initial_state(config, FAMILY, problems, x0, key_state)
    return problems, x0, fresh, state


@functools.partial(jax.jit, static_argnums=3)
def _rollout(policy, problems, x0, num_steps):
    """f(x_1), ..., f(x_num_steps) `[N, num_steps]` of the policy exported as an optimizer
    (`gps.as_optax`), from each objective's start: a plain loop over its public `update`,
    independent of the trainer's and `lopt.evaluation`'s rollouts."""
    opt = gps.as_optax(gps.Learned(policy, CONFIG.features, FAMILY.dim))

    def one_objective(problem, x):
        objective = FAMILY.objective(problem)

        def step(carry, _):
            x, state = carry
            value, grad = jax.value_and_grad(objective)(x)
            updates, state = opt.update(grad, state, x, value=value)
            return (x + updates, state), objective(x + updates)

        return jax.lax.scan(step, (x, opt.init(x)), None, length=num_steps)[1]

    return jax.vmap(one_objective)(problems, x0)


def _mean_cost(policy, problems, x0, num_steps):
    """Mean over objectives and t = 1..num_steps of f(x_t) (`_rollout`; call inside
    `jax.enable_x64()`). Every rollout is as long as the validation's, so it compiles once."""
    values = np.asarray(_rollout(policy, problems, x0, CONFIG.loop.validation_steps))[
        :, :num_steps]
    assert np.all(np.isfinite(values))
    return float(np.mean(values))


def test_training_improves_and_returns_the_best_validated_policy(uninterrupted):
    assert not jax.config.jax_enable_x64  # float64 stayed inside train
    history = uninterrupted.history
    assert [record["iteration"] for record in history] == [0, 1, 2]
    with jax.enable_x64():
        problems, x0, fresh, state = _training_setup(CONFIG)
        trained, untrained = (_mean_cost(policy, problems, x0, CONFIG.rollouts.horizon)
                              for policy in (uninterrupted.policy, state.policy))
        validated, initial = (_mean_cost(policy, problems, fresh, CONFIG.loop.validation_steps)
                              for policy in (uninterrupted.policy, state.policy))
    assert trained < untrained - 1e-3
    # The returned policy is the initial one or that of an iteration: the one whose recorded
    # validation cost is lowest; both its recorded costs must be what it does here.
    candidates = [(initial, untrained)] + [(record["validation_cost"], record["policy_cost"])
                                           for record in history]
    best_validation, its_training_cost = min(candidates)
    assert validated == pytest.approx(best_validation, rel=1e-9)
    assert trained == pytest.approx(its_training_cost, rel=1e-9)
    for record in history:
        assert np.isfinite(record["kl"]) and record["eta"] > 0
        assert np.isfinite(record["policy_loss"])


def test_without_validation_the_lowest_training_cost_is_returned():
    config = CONFIG.replace(loop={"validation_steps": 0})
    learned = trainer.train(FAMILY, PROBLEMS, config, KEY)
    assert all("validation_cost" not in record for record in learned.history)
    with jax.enable_x64():
        problems, x0, _, state = _training_setup(config)
        returned, initial = (_mean_cost(policy, problems, x0, CONFIG.rollouts.horizon)
                             for policy in (learned.policy, state.policy))
    best = min([initial] + [record["policy_cost"] for record in learned.history])
    assert returned == pytest.approx(best, rel=1e-9)


def test_kill_and_resume_equals_uninterrupted(uninterrupted, tmp_path):
    with pytest.raises(Killed):
        trainer.train(FAMILY, PROBLEMS, CONFIG, KEY, checkpoint_dir=str(tmp_path),
                      callback=_kill_after_first_iteration)
    resumed = trainer.train(FAMILY, PROBLEMS, CONFIG, KEY, checkpoint_dir=str(tmp_path))
    assert _without_timings(resumed.history) == _without_timings(uninterrupted.history)
    for got, want in zip(jax.tree.leaves(resumed.policy), jax.tree.leaves(uninterrupted.policy),
                         strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_longer_run_continues_a_finished_shorter_one(uninterrupted, tmp_path):
    one = CONFIG.replace(loop={"num_iterations": 1})
    trainer.train(FAMILY, PROBLEMS, one, KEY, checkpoint_dir=str(tmp_path))
    continued = trainer.train(FAMILY, PROBLEMS, CONFIG, KEY, checkpoint_dir=str(tmp_path))
    assert _without_timings(continued.history) == _without_timings(uninterrupted.history)
    for got, want in zip(jax.tree.leaves(continued.policy),
                         jax.tree.leaves(uninterrupted.policy), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("killed"))
    with pytest.raises(Killed):
        trainer.train(FAMILY, PROBLEMS, CONFIG, KEY, checkpoint_dir=directory,
                      callback=_kill_after_first_iteration)
    return directory


@pytest.mark.parametrize("problems, config, key, named", [
    (PROBLEMS, CONFIG.replace(policy={"learning_rate": 0.5}), KEY, "gps.policy.learning_rate"),
    (PROBLEMS, CONFIG.replace(loop={"validation_steps": 7}), KEY, "gps.loop.validation_steps"),
    (PROBLEMS, CONFIG, jax.random.key(2), "key ([0, 1] there, [0, 2] now)"),
    (FAMILY.sample(jax.random.key(5), 4), CONFIG, KEY, "data ("),
    (FAMILY.sample(jax.random.key(0), 5), CONFIG, KEY, "data ("),
])
def test_resuming_a_different_run_is_refused_naming_the_difference(killed_run, problems, config,
                                                                   key, named):
    with pytest.raises(ValueError, match="belongs to a different run") as error:
        trainer.train(FAMILY, problems, config, key, checkpoint_dir=killed_run)
    assert named in str(error.value)


def test_bad_policy_settings_are_rejected_with_the_name():
    with pytest.raises(ValueError, match="LoopConfig.coupling"):
        gps.LoopConfig(coupling="badmm")
    with pytest.raises(ValueError, match="PolicyConfig.hidden"):
        gps.PolicyConfig(hidden=0)
    assert gps.Config.preset("paper").policy.hidden == 50
    with pytest.raises(ValueError, match="train_policy=True.*train_trajectories"):
        trainer.train(FAMILY, PROBLEMS, CONFIG.replace(loop={
            "sampling": "controllers", "coupling": "trajectory", "train_policy": False}), KEY)


def test_shared_momentum_picks_one_setting_with_the_best_mean():
    with jax.enable_x64():
        problems = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), PROBLEMS)
        x0 = FAMILY.init(jax.random.key(2), 4).astype(jnp.float64)
        per_objective = CONFIG.replace(rollouts={"momentum_per_objective": True})
        each, one = (initialisation.tune_momentum(config.rollouts, config.features, FAMILY,
                                                  problems, x0)
                     for config in (per_objective, CONFIG))
    assert np.unique(np.asarray(one.step_size)).size == 1
    assert np.unique(np.asarray(one.decay)).size == 1
    assert np.all(np.asarray(each.final_value) <= np.asarray(one.final_value) + 1e-12)


_DEVICES_SCRIPT = """
import json, jax
from lopt import gps, objectives
family = objectives.logistic_regression()
learned = gps.train(family, family.sample(jax.random.key(0), 4),
                    gps.Config.preset("smoke", loop={"num_iterations": 2}),
                    jax.random.key(1))
print(json.dumps({"devices": jax.device_count(), "history": [
    {k: v for k, v in record.items() if "seconds" not in k} for record in learned.history]}))
"""


@pytest.mark.slow
def test_training_split_over_three_devices_gives_the_single_device_result():
    # 4 objectives on 3 devices: the last device's share is padded (lopt.parallel.over_devices).
    # The single-device run is this process's (it shares the other tests' compilations).
    single, split = run_in_this_process(_DEVICES_SCRIPT), run_on_devices(_DEVICES_SCRIPT, 3)
    assert (single["devices"], split["devices"]) == (1, 3)
    assert len(split["history"]) == len(single["history"])
    for one, two in zip(single["history"], split["history"], strict=True):
        assert one.keys() == two.keys()
        for name, value in one.items():
            np.testing.assert_allclose(two[name], value, rtol=1e-9, atol=1e-12, err_msg=name)
