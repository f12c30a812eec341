"""Settings of Guided Policy Search, in the parts each stage reads, with the papers' defaults.

`Config` is six frozen parts:

  features   the state (`FeatureConfig`)
  rollouts   horizon, samples per objective, the initial (tuned momentum) controllers
  dynamics   the local dynamics model: exact derivatives of f, or fitted with a GMM prior
  lqg        the C-step: KL trust region, eta search, cost weighting
  policy     the neural policy and its supervised training (S-step)
  loop       the outer loop: iteration count, sample source, coupling, validation

Each compiled stage takes only the parts it reads (never `loop`), so the iteration count
and the other loop settings never cause a recompilation.

Sources: LM = Li & Malik 2017 (Learning to Optimize); LA = Levine & Abbeel 2014 (GPS under
unknown dynamics) and the default settings of its public reference implementation, which
LM build on; MD = Montgomery & Levine 2016 (GPS via approximate mirror descent). Values the
papers do not state are marked as our choice.

Presets: `paper` (the defaults), `cpu` (the paper's sizes with 8 GPS iterations, for a
2-core machine) and `smoke` (seconds; tests). Our defaults that depart from the papers, each
measured (docs/decisions.md): one shared momentum setting to start from, on-policy sampling
(MD's variant, not LM's), local dynamics from the exact derivatives of f, exploration noise
0.1 and the returned policy chosen on fresh starts over 100 steps (`validation_steps`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lopt.gps.features import FeatureConfig

COUPLINGS = ("mirror_descent", "trajectory")
SAMPLINGS = ("policy", "controllers")
DYNAMICS_MODELS = ("exact", "fitted")


def _check_positive_ints(part: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(part, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{type(part).__name__}.{name} must be a positive integer, got "
                             f"{value!r}")


def _check_positive(part: Any, names: tuple[str, ...]) -> None:
    for name in names:
        if not getattr(part, name) > 0:
            raise ValueError(f"{type(part).__name__}.{name} must be positive, got "
                             f"{getattr(part, name)!r}")


def _check_choice(part: Any, name: str, allowed: tuple[str, ...]) -> None:
    if getattr(part, name) not in allowed:
        raise ValueError(f"{type(part).__name__}.{name} must be one of {allowed}, got "
                         f"{getattr(part, name)!r}")


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
    """The rollouts' sizes and the initial controllers: momentum, grid-searched (LM section 5)."""

    horizon: int = 40  # LM section 5: 40 time steps
    num_samples: int = 20  # LM section 5: 20 trajectories per training objective
    momentum_step_sizes: tuple[float, ...] = tuple(10.0 ** (k / 4) for k in range(-12, 5))
    momentum_decays: tuple[float, ...] = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
    # LM section 5 tune it per objective (True); our default is the one pair best on average,
    # which the policy can imitate before the first iteration (per objective it could not).
    momentum_per_objective: bool = False
    # Our choice: exploration noise on the step. The KL trust region is measured against this
    # spread, so it sets how far a controller may move per iteration.
    initial_action_std: float = 0.1

    def __post_init__(self):
        _check_positive_ints(self, ("horizon", "num_samples"))
        if self.num_samples < 2:
            raise ValueError(f"RolloutConfig.num_samples must be at least 2, got "
                             f"{self.num_samples}")
        _check_positive(self, ("initial_action_std",))
        if not self.momentum_step_sizes or min(self.momentum_step_sizes) <= 0:
            raise ValueError("RolloutConfig.momentum_step_sizes must be a non-empty tuple of "
                             f"positive floats, got {self.momentum_step_sizes!r}")
        if not self.momentum_decays or not all(0 <= d < 1 for d in self.momentum_decays):
            raise ValueError("RolloutConfig.momentum_decays must be a non-empty tuple of values "
                             f"in [0, 1), got {self.momentum_decays!r}")


@dataclasses.dataclass(frozen=True)
class DynamicsConfig:
    """The local dynamics: linear-Gaussian per objective and time step (LM section 5, LA)."""

    model: str = "exact"  # derivatives of f (`exact_dynamics`); or "fitted" (LM, LA)
    structured: bool = True  # fit only the unknown rows (lopt.gps.dynamics)
    gmm_components: int = 10  # LM section 5: mixture of 10 Gaussians
    gmm_max_iterations: int = 50  # LA reference code: EM to convergence, capped
    gmm_tolerance: float = 1e-5  # EM stops when the per-point log-likelihood gains less
    gmm_regularization: float = 1e-6  # inverse-Wishart scale on every component covariance
    gmm_max_points: int = 8192  # our choice: random subset of the pooled transitions
    prior_strength: float = 1.0  # LA: the prior counts as this many samples
    regularization: float = 1e-6  # LA: ridge on the state-action covariance

    def __post_init__(self):
        _check_choice(self, "model", DYNAMICS_MODELS)
        _check_positive_ints(self, ("gmm_components", "gmm_max_iterations", "gmm_max_points"))
        _check_positive(self, ("gmm_tolerance", "gmm_regularization", "prior_strength",
                               "regularization"))


@dataclasses.dataclass(frozen=True)
class LQGConfig:
    """The C-step: LQG under a KL trust region (LA section 3; step-size rule of the reference
    code), and the weighting of the cost it minimises."""

    kl_step: float = 0.2  # LA reference code: KL bound per time step, times step_mult
    min_step_mult: float = 0.01
    max_step_mult: float = 10.0
    eta_min: float = 1e-8  # bracket of the dual variable, searched in log space
    eta_max: float = 1e16
    eta_max_iterations: int = 30  # fixed cap on the bracketing search
    kl_tolerance: float = 0.1  # accept |KL - eps| <= kl_tolerance * eps (LA reference code)
    chunk_size: int = 1  # our choice: objectives per vmapped chunk (1: fastest measured)
    # Our choice: the cost of f(x_t) is weighted 1 + early_cost_weight for t = 1..
    # early_cost_steps (LM: 0, the plain sum over time); the reported costs stay unweighted.
    early_cost_weight: float = 0.0
    early_cost_steps: int = 10

    def __post_init__(self):
        _check_positive_ints(self, ("eta_max_iterations", "chunk_size", "early_cost_steps"))
        _check_positive(self, ("kl_step", "min_step_mult", "eta_min", "kl_tolerance"))
        if not self.early_cost_weight >= 0:
            raise ValueError("LQGConfig.early_cost_weight must be non-negative, got "
                             f"{self.early_cost_weight!r}")
        if not self.min_step_mult <= 1.0 <= self.max_step_mult:
            raise ValueError("LQGConfig needs min_step_mult <= 1 <= max_step_mult, got "
                             f"{self.min_step_mult} and {self.max_step_mult}")
        if not self.eta_min < self.eta_max:
            raise ValueError(f"LQGConfig needs eta_min < eta_max, got {self.eta_min}, "
                             f"{self.eta_max}")


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    """The policy (LM section 5) and its supervised training (LA section 4; our choices)."""

    hidden: int = 50  # LM section 5: one hidden layer of 50 softplus units
    steps: int = 2000  # our choice: Adam steps per policy update (S-step)
    batch_size: int = 1024  # our choice: states per step, drawn with replacement
    learning_rate: float = 1e-3  # our choice (Adam)
    # Our choice: Adam steps fitting the policy to the initial controllers before the first
    # iteration (on-policy sampling only).
    imitation_steps: int = 4000

    def __post_init__(self):
        _check_positive_ints(self, ("hidden", "steps", "batch_size", "imitation_steps"))
        _check_positive(self, ("learning_rate",))


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """The outer loop (`lopt.gps.trainer`); read by Python only, never by a compiled stage."""

    num_iterations: int = 10  # our choice (LM do not state it)
    # Where the samples come from: MD on-policy, the policy plus noise ("policy"); or the
    # controllers ("controllers", LA).
    sampling: str = "policy"
    coupling: str = "mirror_descent"  # KL to the linearised policy (MD); or "trajectory" (none)
    # False: trajectory optimisation only (no policy; needs sampling="controllers" and
    # coupling="trajectory").
    train_policy: bool = True
    # Our choice: initial iterates per training objective; each (objective, start) pair is
    # one GPS condition with its own controller, so the policy sees more than one trajectory
    # per objective and does not memorise the training starts.
    starts_per_objective: int = 1
    # Our choice: which policy `train` returns. 0: the one with the lowest training cost
    # (noiseless runs from the training starts over the horizon); k > 0: the lowest mean
    # objective over k steps from fresh starts (one per objective), which catches policies
    # that memorised the training starts or drift after the training horizon.
    validation_steps: int = 100

    def __post_init__(self):
        if (not isinstance(self.num_iterations, int) or isinstance(self.num_iterations, bool)
                or self.num_iterations < 0):
            raise ValueError("LoopConfig.num_iterations must be a non-negative integer, got "
                             f"{self.num_iterations!r}")
        if (not isinstance(self.validation_steps, int) or isinstance(self.validation_steps, bool)
                or self.validation_steps < 0):
            raise ValueError("LoopConfig.validation_steps must be a non-negative integer, got "
                             f"{self.validation_steps!r}")
        _check_positive_ints(self, ("starts_per_objective",))
        _check_choice(self, "sampling", SAMPLINGS)
        _check_choice(self, "coupling", COUPLINGS)
        if not self.train_policy and (self.sampling, self.coupling) != ("controllers",
                                                                        "trajectory"):
            raise ValueError("LoopConfig(train_policy=False) needs sampling='controllers' and "
                             f"coupling='trajectory', got {self.sampling!r} and "
                             f"{self.coupling!r}")


PARTS = {"features": FeatureConfig, "rollouts": RolloutConfig, "dynamics": DynamicsConfig,
         "lqg": LQGConfig, "policy": PolicyConfig, "loop": LoopConfig}


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of a GPS run, as the parts of the module docstring."""

    features: FeatureConfig = FeatureConfig()  # LM section 5: H = 25
    rollouts: RolloutConfig = RolloutConfig()
    dynamics: DynamicsConfig = DynamicsConfig()
    lqg: LQGConfig = LQGConfig()
    policy: PolicyConfig = PolicyConfig()
    loop: LoopConfig = LoopConfig()

    def __post_init__(self):
        for name, part_type in PARTS.items():
            if not isinstance(getattr(self, name), part_type):
                raise ValueError(f"Config.{name} must be a {part_type.__name__}, got "
                                 f"{getattr(self, name)!r}")
        if self.features.past_steps and (self.dynamics.model == "exact"
                                         or self.dynamics.structured):
            raise ValueError(
                "FeatureConfig(past_steps=True) needs DynamicsConfig(model='fitted', "
                "structured=False): the step u_t then enters the next state twice (in the "
                "iterate and in the step history), which the structured model's known maps "
                "(used by exact dynamics too) cannot express")

    def replace(self, **parts) -> Config:
        """This config with parts replaced: each value is a part, or a dict of that part's
        fields to change (e.g. `config.replace(loop={"num_iterations": 2})`)."""
        unknown = sorted(set(parts) - set(PARTS))
        if unknown:
            raise ValueError(f"unknown Config part(s) {', '.join(unknown)}; valid: "
                             f"{', '.join(PARTS)}")
        changed = {}
        for name, value in parts.items():
            if isinstance(value, dict):
                part = getattr(self, name)
                fields = {field.name for field in dataclasses.fields(part)}
                if not set(value) <= fields:
                    raise ValueError(f"unknown {type(part).__name__} field(s) "
                                     f"{', '.join(sorted(set(value) - fields))}; valid: "
                                     f"{', '.join(sorted(fields))}")
                value = dataclasses.replace(part, **value)
            changed[name] = value
        return dataclasses.replace(self, **changed)

    @classmethod
    def preset(cls, name: str, **parts) -> Config:
        """Named settings (`paper`, `cpu` or `smoke`; module docstring), parts replaced as in
        `replace`."""
        if name not in PRESETS:
            raise ValueError(f"unknown Config preset {name!r}; valid: {', '.join(PRESETS)}")
        return PRESETS[name].replace(**parts)


PRESETS = {
    "paper": Config(),
    "cpu": Config(loop=LoopConfig(num_iterations=8)),
    "smoke": Config(
        features=FeatureConfig(history=5),
        rollouts=RolloutConfig(horizon=10, num_samples=5,
                               momentum_step_sizes=(0.1, 0.3, 1.0, 3.0),
                               momentum_decays=(0.0, 0.5, 0.9)),
        dynamics=DynamicsConfig(gmm_components=3, gmm_max_iterations=20, gmm_max_points=1024),
        policy=PolicyConfig(hidden=16, steps=60, batch_size=32, imitation_steps=150),
        loop=LoopConfig(num_iterations=3),
    ),
}
