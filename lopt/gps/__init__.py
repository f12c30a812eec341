"""Guided Policy Search (Li & Malik 2017, sections 3-5), part 1: trajectory optimisation.

Modules, one per stage: `features` (the state), `controllers` (linear-Gaussian controllers and
rollouts), `initialisation` (tuned momentum), `gmm` (EM), `dynamics` (fit with a GMM prior),
`cost` (quadratic expansion), `lqg` (LQG under a KL trust region), `trajectory_opt` (the loop).
"""

from lopt.gps import (
    controllers,
    cost,
    dynamics,
    features,
    gmm,
    initialisation,
    lqg,
    trajectory_opt,
)
from lopt.gps.config import PRESETS, Config
from lopt.gps.controllers import Controller, Samples
from lopt.gps.dynamics import Dynamics
from lopt.gps.features import FeatureConfig
from lopt.gps.trajectory_opt import run as train_trajectories
