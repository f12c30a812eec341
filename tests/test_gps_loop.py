"""State features, momentum initialisation, config errors, and the trajectory-only loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt import gps, objectives
from lopt.gps import controllers, features, initialisation, trajectory_opt


def test_state_sizes_match_the_documented_ones():
    default = gps.FeatureConfig()
    assert default.state_size(4) == 129
    assert default.state_size(12) == 337
    assert default.state_size(2) == 77
    assert gps.FeatureConfig(past_steps=True).state_size(4) == 229


@pytest.mark.parametrize("past_steps", [False, True])
def test_momentum_controller_reproduces_momentum(past_steps):
    family = objectives.logistic_regression()
    config = gps.Config.preset("smoke", features=gps.FeatureConfig(history=8,
                                                                   past_steps=past_steps),
                               dynamics={"model": "fitted", "structured": not past_steps})
    with jax.enable_x64():
        problem = jax.tree.map(lambda a: a[0], family.sample(jax.random.key(0), 1))
        x0 = family.init(jax.random.key(1), 1)[0]
        controller = initialisation.momentum_controllers(
            config.features.layout(family.dim), 6, jnp.asarray([0.5]), jnp.asarray([0.8]), 1.0)
        rollout = controllers.rollout(config.features, family.objective(problem), x0,
                                      jax.tree.map(lambda a: a[0], controller),
                                      jnp.zeros((6, family.dim)))
        x, velocity, iterates = x0, jnp.zeros_like(x0), [x0]
        for _ in range(6):
            velocity = 0.8 * velocity - 0.5 * jax.grad(family.objective(problem))(x)
            x = x + velocity
            iterates.append(x)
        layout = config.features.layout(family.dim)
        np.testing.assert_allclose(features.iterate(layout, rollout.states), jnp.stack(iterates),
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(rollout.values,
                                   jax.vmap(family.objective(problem))(jnp.stack(iterates)))


def test_bad_config_values_are_rejected_with_the_name():
    with pytest.raises(ValueError, match="RolloutConfig.num_samples"):
        gps.RolloutConfig(num_samples=1)
    with pytest.raises(ValueError, match="history"):
        gps.FeatureConfig(history=0)
    with pytest.raises(ValueError, match="momentum_decays"):
        gps.Config.preset("paper", rollouts={"momentum_decays": (1.0,)})
    with pytest.raises(ValueError, match="unknown Config preset 'huge'"):
        gps.Config.preset("huge")
    with pytest.raises(ValueError, match="unknown Config part.*horizon"):
        gps.Config.preset("smoke", horizon=3)
    with pytest.raises(ValueError, match="unknown LoopConfig field.*horizon"):
        gps.Config.preset("smoke", loop={"horizon": 3})
    with pytest.raises(ValueError, match="Config.lqg must be a LQGConfig"):
        gps.Config(lqg=gps.PolicyConfig())
    with pytest.raises(ValueError, match="train_policy=False.*sampling='controllers'"):
        gps.LoopConfig(train_policy=False)
    past_steps = gps.FeatureConfig(past_steps=True)
    with pytest.raises(ValueError, match="past_steps=True.*model='fitted'"):
        gps.Config(features=past_steps)
    gps.Config(features=past_steps, dynamics=gps.DynamicsConfig(model="fitted", structured=False))


def test_replacing_parts_keeps_the_other_fields():
    smoke = gps.Config.preset("smoke")
    changed = smoke.replace(loop={"num_iterations": 7}, lqg=gps.LQGConfig(kl_step=0.5))
    assert changed.loop.num_iterations == 7 and changed.loop.sampling == smoke.loop.sampling
    assert changed.lqg == gps.LQGConfig(kl_step=0.5)
    assert (changed.rollouts, changed.policy, changed.features) == (
        smoke.rollouts, smoke.policy, smoke.features)


def test_an_objective_whose_lqg_fails_keeps_its_reference_controller():
    """A non-finite local model (here a NaN cost) must not hand NaN controllers on."""
    family = objectives.logistic_regression()
    config = gps.Config.preset("smoke")
    stage = lambda function, num_static: jax.jit(function,
                                                 static_argnums=tuple(range(num_static)))
    with jax.enable_x64():
        problems = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64),
                                family.sample(jax.random.key(0), 3))
        x0 = family.init(jax.random.key(1), 3).astype(jnp.float64)
        state, _ = stage(trajectory_opt.initial_state, 3)(config.rollouts, config.features,
                                                          family, problems, x0)
        samples = stage(trajectory_opt.sample_stage, 3)(config.rollouts, config.features,
                                                        family, problems, x0, state.controller,
                                                        jax.random.key(2))
        model = stage(trajectory_opt.fit_stage, 4)(config.dynamics, config.lqg, config.features,
                                                   family, problems, samples, jax.random.key(3))
        model = model._replace(cost=model.cost._replace(
            gradient=model.cost.gradient.at[1].set(jnp.nan)))
        new_state, solution, _, failed = stage(trajectory_opt.optimise_stage, 3)(
            config.lqg, config.features, family, model, state)
        np.testing.assert_array_equal(failed, [False, True, False])
        for new, old in zip(new_state.controller, state.controller, strict=True):
            np.testing.assert_array_equal(new[1], old[1])
            assert np.all(np.isfinite(new))
        assert solution.kl[1] == 0 and np.isnan(new_state.eta[1])
        assert np.all(solution.kl[::2] > 0)
        assert not np.allclose(new_state.controller.offset[0], state.controller.offset[0])


def test_trajectory_loop_lowers_the_mean_training_cost():
    family = objectives.logistic_regression()
    config = gps.Config.preset("smoke", loop={"num_iterations": 3})
    problems = family.sample(jax.random.key(0), 4)
    x64_before = jax.config.jax_enable_x64
    result = gps.train_trajectories(family, problems, config, jax.random.key(1))
    assert jax.config.jax_enable_x64 == x64_before  # float64 stayed local to the call
    history = result.history
    assert len(history) == 3
    assert result.state.policy is None and "policy_cost" not in history[-1]
    assert history[-1]["controller_cost"] < result.initial_cost - 1e-3
    assert history[-1]["sample_cost"] < history[0]["sample_cost"]
    for record in history:
        assert np.isfinite(record["kl"]) and record["eta"] > 0
    assert result.state.loop.controller.gain.dtype == jnp.float64
