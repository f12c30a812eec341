r"""Searches for update rules (Neural Optimizer Search) with PPO, evolution or random search.

  python -m experiments.search_rules --strategy=ppo --task=digits_mlp --budget=2000 \
      --config=cpu --out=runs/search
  python -m experiments.search_rules --config=cpu --out=runs/search --resume   # after a kill

`--config` picks a preset of `lopt.search.PRESETS` (smoke: seconds on a quadratic; cpu: digits
MLP on a laptop CPU; paper: the CIFAR-10 child at paper scale); the other flags override its
fields when given. Writes results.jsonl, checkpoint.npz, top_rules.md and reward_curve.png into
--out (see `lopt.search.driver`). `--resume` continues the run in --out, which must have been
started with the same settings.
"""

import dataclasses

import jax
from absl import app, flags

from lopt import progress
from lopt.search import driver, tasks

STRATEGY = flags.DEFINE_string("strategy", "ppo", "ppo, evolution or random.")
CONFIG = flags.DEFINE_string("config", "cpu", "Preset: smoke, cpu or paper.")
TASK = flags.DEFINE_string("task", None, "Child task (default: the preset's).")
DATA_DIR = flags.DEFINE_string("data_dir", None, "Local CIFAR-10 directory (cifar10_* tasks).")
BUDGET = flags.DEFINE_integer("budget", None, "Rules to sample (default: the preset's).")
BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Rules per iteration.")
DEPTH = flags.DEFINE_integer("depth", None, "Levels per rule, 1-3.")
OPERANDS = flags.DEFINE_list("operands", None, "Operand subset (default: all), e.g. "
                             "g,m,v,one,adam.")
UNARIES = flags.DEFINE_list("unaries", None, "Unary subset with constants after a colon "
                            "(default: all), e.g. identity,neg,exp,sign,clip:1e-4.")
BINARIES = flags.DEFINE_list("binaries", None, "Binary subset (default: all), e.g. "
                             "+,-,*,keep_left.")
CHECKPOINT_EVERY = flags.DEFINE_integer("checkpoint_every", None, "Iterations per checkpoint.")
LEARNING_RATE = flags.DEFINE_float("learning_rate", None, "Controller Adam learning rate "
                                   "(paper: 1e-5).")
ENTROPY_WEIGHT = flags.DEFINE_float("entropy_weight", None, "Entropy bonus (paper: 0.0015).")
BASELINE_DECAY = flags.DEFINE_float("baseline_decay", None, "Reward baseline EMA decay.")
CLIP_EPSILON = flags.DEFINE_float("clip_epsilon", None, "PPO clip range.")
OUT = flags.DEFINE_string("out", None, "Output directory (created if missing).", required=True)
RESUME = flags.DEFINE_bool("resume", False, "Continue the search in --out.")
SEED = flags.DEFINE_integer("seed", 0, "Seed of the search.")


def _given(**values):
    return {name: value for name, value in values.items() if value is not None}


def _unary(text: str) -> tuple[str, float | None]:
    name, _, constant = text.partition(":")
    return name, float(constant) if constant else None


def make_config() -> driver.SearchConfig:
    """The preset with the given flags applied; ValueError for bad values."""
    if BUDGET.value is not None and BUDGET.value <= 0:
        raise ValueError(f"--budget must be positive, got {BUDGET.value}")
    config = driver.SearchConfig.preset(CONFIG.value)
    vocabulary = dataclasses.replace(config.space.vocabulary, **_given(
        operands=tuple(OPERANDS.value) if OPERANDS.value else None,
        unaries=tuple(map(_unary, UNARIES.value)) if UNARIES.value else None,
        binaries=tuple(BINARIES.value) if BINARIES.value else None))
    space = dataclasses.replace(config.space, vocabulary=vocabulary, **_given(depth=DEPTH.value))
    ppo = dataclasses.replace(config.ppo, **_given(
        learning_rate=LEARNING_RATE.value, entropy_weight=ENTROPY_WEIGHT.value,
        baseline_decay=BASELINE_DECAY.value, clip_epsilon=CLIP_EPSILON.value))
    return dataclasses.replace(config, strategy=STRATEGY.value, space=space, ppo=ppo, **_given(
        task=TASK.value, data_dir=DATA_DIR.value, budget=BUDGET.value,
        batch_size=BATCH_SIZE.value, checkpoint_every=CHECKPOINT_EVERY.value))


def main(argv):
    del argv
    try:
        config = make_config()
        if config.task in tasks.CIFAR10_TASKS and config.data_dir is None:
            raise ValueError(f"task {config.task} needs --data_dir (a local CIFAR-10 directory)")
        driver.check_output(OUT.value, driver.run_identity(config, jax.random.key(SEED.value)),
                            RESUME.value)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    with progress.job("search_rules", driver.plan(config)):
        result = driver.run(config, jax.random.key(SEED.value), out=OUT.value,
                            resume=RESUME.value)
    best = result.top[0]
    print(f"Best rule: {best['rule']} (score {best['score']:.4f}); wrote {OUT.value}/"
          f"results.jsonl, top_rules.md and reward_curve.png in {result.seconds:.0f}s")


if __name__ == "__main__":
    app.run(main)
