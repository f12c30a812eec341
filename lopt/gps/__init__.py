"""Guided Policy Search (Li & Malik 2017, sections 3-5): learning predicted step descent.

Modules, one per stage: `features` (the state), `controllers` (linear-Gaussian controllers and
rollouts), `initialisation` (tuned momentum), `gmm` (EM), `dynamics` (fit with a GMM prior),
`cost` (quadratic expansion), `lqg` (LQG under a KL trust region), `trajectory_opt` (the
controllers' stages), `policy` (the neural policy and its supervised training), `trainer`
(the one GPS outer loop, with or without a policy), `learned` (the optax export and files),
`config` (the settings, in parts: features, rollouts, dynamics, lqg, policy, loop).

The coordinate-wise kind (Li & Malik 2017b), for networks of any size, shares the LQG, the
policy network and its fitting, and the file format: `coordinate_features` (Phi and Psi per
coordinate), `coordinate_groups` (one group per params leaf by default),
`coordinate_trainer` (convolutional GPS: tied per-group models and LQGs, a policy shared by
all coordinates), `coordinate_learned` (its optax form on any pytree), `step_scale` (the
exported optimizer's per-run step scale and how meta-training chooses its gain),
`network_family` (the meta-training nets on projected digits).

Example (float64 is switched on inside the calls only):

    fam = lopt.objectives.logistic_regression()
    learned = lopt.gps.train(fam, fam.sample(jax.random.key(0), 90),
                             lopt.gps.Config.preset("cpu"), jax.random.key(1))
    opt = lopt.gps.as_optax(learned)      # predicted step descent; update(..., value=f(x))
    lopt.gps.save(learned, "runs/gps"); learned = lopt.gps.load("runs/gps")

Trajectory optimisation only:

    fam = lopt.objectives.logistic_regression()
    problems = fam.sample(jax.random.key(0), 90)
    result = lopt.gps.train_trajectories(fam, problems, lopt.gps.Config(), jax.random.key(1))
    result.history[-1]["controller_cost"], result.initial_cost   # after the loop, momentum

Conventions: the action is the step (x_{t+1} = x_t + u_t); batched arrays carry the leading
axes `[num_objectives, T, ...]` (controllers, dynamics) or `[num_objectives, num_samples, ...]`
(samples); every pytree here is a NamedTuple of arrays.
"""

from lopt.gps import (
    controllers,
    coordinate_features,
    coordinate_groups,
    coordinate_learned,
    coordinate_trainer,
    cost,
    dynamics,
    features,
    gmm,
    initialisation,
    learned,
    lqg,
    network_family,
    policy,
    step_scale,
    trainer,
    trajectory_opt,
)
from lopt.gps.config import (
    PRESETS,
    Config,
    DynamicsConfig,
    LoopConfig,
    LQGConfig,
    PolicyConfig,
    RolloutConfig,
)
from lopt.gps.controllers import Controller, Samples
from lopt.gps.coordinate_learned import CoordinateLearned
from lopt.gps.coordinate_trainer import CoordinateConfig
from lopt.gps.dynamics import Dynamics
from lopt.gps.features import FeatureConfig
from lopt.gps.learned import Learned, as_optax, available_pretrained, load, pretrained, save
from lopt.gps.policy import Policy
from lopt.gps.trainer import Run, run, train, train_trajectories
