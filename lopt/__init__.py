"""lopt: learning optimization algorithms in JAX.

Public API (see README.md):
  lopt.objectives  families of objective functions (logistic regression, robust linear
                   regression, a small MLP classifier, Rosenbrock, quadratics)
  lopt.baselines   gradient descent, momentum, conjugate gradient, L-BFGS, grid tuning
  lopt.evaluation  run optimizers over batches of problems; margin of victory
  lopt.gps         Guided Policy Search (trajectory optimisation so far)
  lopt.rules       the update-rule language: parse, print, compile to optax, interpret
  lopt.search      child tasks, the population evaluator, the controller, PPO, evolution,
                   random search and the resumable search driver
  lopt.plotting    matplotlib figures (imported on demand, not here)
"""

from lopt import baselines, evaluation, gps, objectives, rules, search
from lopt.rules import addsign, powersign

__version__ = "0.1.0"

