r"""Tunes the hand-engineered baselines on training objectives and compares them on unseen ones.

  python -m experiments.compare_baselines --family=logistic_regression \
      --num_problems=100 --num_steps=100 --out=runs/compare_baselines

Each baseline's hyperparameters are grid-searched on `--num_train` training problems (by the
mean objective over all iterations), then all baselines run from the same initial iterates
on `--num_problems` test problems drawn with a different key. Writes into --out:
  margin_of_victory.png   mean margin of victory per iteration (paper Figures 1a-3a)
  example_problem_K.png   objective curves on two test problems (paper Figures 1b-c)
  curves.npz              objective values per algorithm, [num_problems, num_steps + 1]
  summary.md              tuned hyperparameters, mean final objective and margins
"""

import os

import jax
from absl import app, flags

from experiments.common import (
    prepare_output_dir,
    summary_table,
    tuned_baseline_curves,
    write_comparison,
)
from lopt import baselines, objectives

FAMILY = flags.DEFINE_enum("family", "logistic_regression", sorted(objectives.FAMILIES),
                           "Objective family.")
NUM_PROBLEMS = flags.DEFINE_integer("num_problems", 100, "Test problems.", lower_bound=1)
NUM_TRAIN = flags.DEFINE_integer(
    "num_train", None, "Training problems for tuning (default: the paper's size for the "
    "family, else 90).", lower_bound=1)
NUM_STEPS = flags.DEFINE_integer("num_steps", 100, "Optimizer steps.", lower_bound=1)
BASELINES = flags.DEFINE_list("baselines", list(baselines.BASELINES),
                              f"Baselines to compare, from {list(baselines.BASELINES)}.")
SEED = flags.DEFINE_integer("seed", 0, "Seed for problems and initial iterates.")
OUT = flags.DEFINE_string("out", None, "Output directory (created if missing).", required=True)


def main(argv):
    del argv
    unknown = [name for name in BASELINES.value if name not in baselines.BASELINES]
    if unknown:
        raise app.UsageError(f"--baselines: unknown {unknown}; valid: {list(baselines.BASELINES)}")
    out = prepare_output_dir(OUT.value)
    family = objectives.get(FAMILY.value)
    num_train = NUM_TRAIN.value or objectives.PAPER_NUM_TRAIN.get(FAMILY.value, 90)
    key_train, key_test, key_tune, key_init = jax.random.split(jax.random.key(SEED.value), 4)
    train = family.sample(key_train, num_train)
    test = family.sample(key_test, NUM_PROBLEMS.value)
    x0 = family.init(key_init, NUM_PROBLEMS.value)

    curves, tuned = tuned_baseline_curves(BASELINES.value, family, train, test, x0,
                                          NUM_STEPS.value, key_tune)

    margins = write_comparison(out, curves, FAMILY.value)
    with open(os.path.join(out, "summary.md"), "w") as file:
        file.write(f"# Baselines on {FAMILY.value}\n\n{NUM_PROBLEMS.value} test problems, "
                   f"{num_train} training problems for tuning, {NUM_STEPS.value} steps, "
                   f"seed {SEED.value}.\n\n" + summary_table(curves, tuned, margins))
    print(f"Wrote {os.path.join(out, 'margin_of_victory.png')}, curves.npz and summary.md")


if __name__ == "__main__":
    app.run(main)
